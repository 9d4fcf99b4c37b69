//! `offboard receiver`: a verifying SET receiver (RFC 8935 push endpoint) for service owners checking their
//! wiring, and for tests as a real peer. It verifies every SET the way a service must (README, "Consuming the
//! feed"): signature under the transmitter's JWKS with RS256 pinned, `typ` = `secevent+jwt`, `iss`, `aud`, no
//! `exp`, exactly one event; it de-duplicates on `jti`, keeps the highest `min_tgen` per subject, prints one line
//! per SET, and answers `202` (or `400` with an RFC 8935 error code).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

/// How the receiver checks what it gets.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// The transmitter's issuer (the SETs' `iss`).
    pub issuer: String,
    /// The JWKS URL (default `{issuer}/.well-known/jwks.json`).
    pub jwks_uri: String,
    /// The `aud` the SETs must carry.
    pub audience: String,
    /// When set, the `Authorization` header every push must carry.
    pub expect_authorization: Option<String>,
}

/// A SET that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub jti: String,
    pub event_type: String,
    pub subject: Value,
    pub min_tgen: Option<i64>,
    pub txn: Option<String>,
    pub claims: Value,
}

/// The receiver's state: the JWKS it knows, what it has seen.
pub struct Receiver {
    config: ReceiverConfig,
    jwks: RwLock<Option<JwkSet>>,
    fetched: Mutex<Option<Instant>>,
    seen: Mutex<HashSet<String>>,
    /// Highest `min_tgen` per subject `sub`.
    pub min_tgen: Mutex<HashMap<String, i64>>,
    /// Every SET accepted, in arrival order (duplicates excluded).
    pub accepted: Mutex<Vec<Verified>>,
    print: bool,
}

/// Why a SET was refused, as an RFC 8935 §2.3 error code and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub err: &'static str,
    pub description: String,
}

fn refuse(err: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        err,
        description: description.into(),
    }
}

impl Receiver {
    /// A receiver that starts with a known JWKS (it still refetches on an unknown `kid`).
    #[must_use]
    pub fn with_jwks(self, jwks: JwkSet) -> Self {
        if let Ok(mut j) = self.jwks.write() {
            *j = Some(jwks);
        }
        self
    }

    pub fn new(config: ReceiverConfig, print: bool) -> Self {
        Self {
            config,
            jwks: RwLock::new(None),
            fetched: Mutex::new(None),
            seen: Mutex::new(HashSet::new()),
            min_tgen: Mutex::new(HashMap::new()),
            accepted: Mutex::new(Vec::new()),
            print,
        }
    }

    fn key(&self, kid: &str) -> Result<DecodingKey, Refusal> {
        let find = |jwks: &Option<JwkSet>| jwks.as_ref().and_then(|s| s.find(kid).cloned());
        let mut jwk = self.jwks.read().ok().and_then(|j| find(&j));
        if jwk.is_none() {
            // Refetch on an unknown kid, at most once every 10 s.
            let due = self.fetched.lock().is_ok_and(|mut t| {
                let due = t.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                if due {
                    *t = Some(Instant::now());
                }
                due
            });
            if due {
                let body = crate::outbound::get(&self.config.jwks_uri, 1024 * 1024)
                    .map_err(|e| refuse("invalid_key", format!("cannot fetch the JWKS: {e}")))?;
                let set: JwkSet = serde_json::from_slice(&body)
                    .map_err(|e| refuse("invalid_key", format!("the JWKS is not valid: {e}")))?;
                jwk = set.find(kid).cloned();
                if let Ok(mut j) = self.jwks.write() {
                    *j = Some(set);
                }
            }
        }
        let jwk =
            jwk.ok_or_else(|| refuse("invalid_key", format!("no key `{kid}` in the transmitter's JWKS")))?;
        DecodingKey::from_jwk(&jwk).map_err(|e| refuse("invalid_key", e.to_string()))
    }

    /// Verifies one SET; a `jti` seen before verifies again but is not accepted twice (`Ok(None)`).
    pub fn verify(&self, set: &str) -> Result<Option<Verified>, Refusal> {
        let header = jsonwebtoken::decode_header(set).map_err(|_| refuse("invalid_request", "not a JWS"))?;
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("secevent+jwt"))
        {
            return Err(refuse("invalid_request", "typ is not secevent+jwt"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| refuse("invalid_key", "no kid"))?;
        let key = self.key(kid)?;
        // RS256 pinned (the CAEP interop profile); SETs carry no `exp`
        // (docs/decisions/0024-sets-signed-with-rs256.md).
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_exp = false;
        v.set_required_spec_claims(&["iss", "aud"]);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        let claims: Value = jsonwebtoken::decode(set, &key, &v)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidIssuer => refuse("invalid_issuer", "iss is not the transmitter"),
                    ErrorKind::InvalidAudience => refuse("invalid_audience", "aud is not this receiver"),
                    _ => refuse("invalid_key", format!("verification failed: {e}")),
                }
            })?
            .claims;
        let events = claims.get("events").and_then(Value::as_object);
        let Some((event_type, event)) = events.filter(|e| e.len() == 1).and_then(|e| e.iter().next()) else {
            return Err(refuse("invalid_request", "a SET must carry exactly one event"));
        };
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse("invalid_request", "no jti"))?;
        let verified = Verified {
            jti: jti.to_owned(),
            event_type: event_type.clone(),
            subject: claims.get("sub_id").cloned().unwrap_or(Value::Null),
            min_tgen: event.get("min_tgen").and_then(Value::as_i64),
            txn: claims.get("txn").and_then(Value::as_str).map(str::to_owned),
            claims: claims.clone(),
        };
        let fresh = self.seen.lock().is_ok_and(|mut s| s.insert(verified.jti.clone()));
        if !fresh {
            return Ok(None);
        }
        let sub = subject_key(&verified.subject);
        let sub = sub.as_deref();
        if let (Some(sub), Some(tgen)) = (sub, verified.min_tgen)
            && let Ok(mut m) = self.min_tgen.lock()
        {
            // Never lowered.
            let e = m.entry(sub.to_owned()).or_insert(tgen);
            *e = (*e).max(tgen);
        }
        if self.print {
            println!(
                "{} {} sub={} min_tgen={} txn={} jti={}",
                chrono::Utc::now().format("%H:%M:%S%.3f"),
                event_type.rsplit('/').next().unwrap_or(event_type),
                sub.unwrap_or("-"),
                verified
                    .min_tgen
                    .map_or_else(|| "-".to_owned(), |t| t.to_string()),
                verified.txn.as_deref().unwrap_or("-"),
                verified.jti
            );
        }
        if let Ok(mut a) = self.accepted.lock() {
            a.push(verified.clone());
        }
        Ok(Some(verified))
    }
}

/// The key a service keeps `min_tgen` under: the `sub` of an `iss_sub` subject (also inside `complex` and
/// `aliases`), else the email of an `email` subject.
fn subject_key(subject: &Value) -> Option<String> {
    let of = |s: &Value| -> Option<String> {
        match s.get("format").and_then(Value::as_str)? {
            "iss_sub" => s.get("sub").and_then(Value::as_str).map(str::to_owned),
            "email" => s.get("email").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        }
    };
    match subject.get("format").and_then(Value::as_str) {
        Some("complex") => subject.get("user").and_then(of),
        Some("aliases") => {
            let ids = subject.get("identifiers").and_then(Value::as_array)?;
            let iss_sub = ids
                .iter()
                .find(|i| i.get("format").and_then(Value::as_str) == Some("iss_sub"));
            iss_sub.or_else(|| ids.first()).and_then(of)
        }
        _ => of(subject),
    }
}

/// Registers the push endpoint (`POST /` and `POST /events`) for `receiver`.
pub fn configure(receiver: Arc<Receiver>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(receiver))
            .app_data(web::PayloadConfig::new(256 * 1024))
            .route("/", web::post().to(push))
            .route("/events", web::post().to(push));
    }
}

async fn push(req: HttpRequest, body: web::Bytes, receiver: web::Data<Receiver>) -> HttpResponse {
    let fail = |status: actix_web::http::StatusCode, r: Refusal| {
        if receiver.print {
            eprintln!("refused a SET: {} ({})", r.err, r.description);
        }
        HttpResponse::build(status).json(json!({"err": r.err, "description": r.description}))
    };
    if let Some(want) = &receiver.config.expect_authorization {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let ok: bool =
            got.is_some_and(|g| subtle::ConstantTimeEq::ct_eq(g.as_bytes(), want.as_bytes()).into());
        if !ok {
            return fail(
                actix_web::http::StatusCode::UNAUTHORIZED,
                refuse("authentication_failed", "missing or wrong Authorization header"),
            );
        }
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return fail(
            actix_web::http::StatusCode::BAD_REQUEST,
            refuse("invalid_request", "not UTF-8"),
        );
    };
    let set = text.trim().to_owned();
    let r = receiver.clone();
    match web::block(move || r.verify(&set)).await {
        Ok(Ok(_)) => HttpResponse::Accepted().finish(),
        Ok(Err(refusal)) => fail(actix_web::http::StatusCode::BAD_REQUEST, refusal),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}
