//! Trusted IdPs (`[[trusted_issuers]]`) and what offboard accepts from them: RFC 8693 subject tokens (an Okta or
//! Entra ID token, or any JWT the IdP signs) exchanged for offboard tokens, and the private-key JWTs that
//! authenticate Global Token Revocation. Each is verified fully: signature under the issuer's JWKS with the
//! algorithm of the key (never the header's; symmetric keys refused), `iss` exact, `aud`, `exp` required, `nbf`,
//! 5 s leeway. The claim the issuer's entry names (`sub`, `email`, `oid`, …) maps to a SCIM attribute; the user
//! must exist and be active.
//!
//! Keys come from `jwks_file` (read at start) or `jwks_uri` (fetched over HTTPS on first use, refreshed hourly,
//! and refetched at most every 30 s when a token names a `kid` the cached set lacks; a failed fetch keeps the
//! keys already known).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use super::{Authority, Caller, OAuthError, TokenRequest, TokenResponse, UserKey};
use crate::config::{MappedAttribute, TrustedIssuer};
use crate::keys::LEEWAY_SECS;

pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("trusted issuer {issuer}: {message}")]
    Jwks { issuer: String, message: String },
}

/// A key of a trusted issuer, with the algorithm it verifies.
struct IssuerKey {
    kid: Option<String>,
    alg: Algorithm,
    decoding: DecodingKey,
}

/// A fetched JWKS is refreshed after this long, and at most this often when a token names an unknown `kid`.
const JWKS_REFRESH: Duration = Duration::from_secs(3600);
const JWKS_UNKNOWN_KID_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Largest JWKS document accepted.
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// One trusted issuer: its keys from `jwks_file` (read at start) or `jwks_uri` (fetched on first use).
struct Loaded {
    config: TrustedIssuer,
    keys: RwLock<Arc<Vec<IssuerKey>>>,
    /// When `jwks_uri` was last fetched (successfully or not).
    fetched: Mutex<Option<Instant>>,
}

impl Loaded {
    fn keys(&self) -> Arc<Vec<IssuerKey>> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Fetches `jwks_uri` when never fetched, when the keys are older than [`JWKS_REFRESH`], or when `want`
    /// names a kid we lack and the last fetch is older than [`JWKS_UNKNOWN_KID_MIN_INTERVAL`]. A failed fetch
    /// keeps the keys we had.
    fn refresh_if_due(&self, want: Option<&str>) {
        let Some(uri) = &self.config.jwks_uri else { return };
        let unknown = want.is_some_and(|kid| !self.keys().iter().any(|k| k.kid.as_deref() == Some(kid)));
        {
            // Decide and claim the fetch under the lock, then fetch without it: other callers go on with the
            // cached keys meanwhile instead of queueing behind a slow IdP.
            let Ok(mut fetched) = self.fetched.lock() else {
                return;
            };
            let due = match fetched.map(|t| t.elapsed()) {
                None => true,
                Some(age) => age >= JWKS_REFRESH || (unknown && age >= JWKS_UNKNOWN_KID_MIN_INTERVAL),
            };
            if !due {
                return;
            }
            *fetched = Some(Instant::now());
        }
        let loaded = crate::outbound::get(uri, JWKS_MAX_BYTES)
            .and_then(|body| String::from_utf8(body).map_err(|_| "the JWKS is not UTF-8".to_owned()))
            .and_then(|text| load_jwks(&self.config.issuer, &text).map_err(|e| e.to_string()));
        match loaded {
            Ok(keys) => {
                tracing::info!(issuer = %self.config.issuer, keys = keys.len(), "fetched the JWKS of {}", self.config.issuer);
                match self.keys.write() {
                    Ok(mut k) => *k = Arc::new(keys),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
                }
            }
            Err(e) => tracing::warn!(issuer = %self.config.issuer, "could not fetch the JWKS: {e}"),
        }
    }
}

/// The trusted issuers of a configuration, by `iss`.
#[derive(Default)]
pub struct TrustedIssuers {
    by_issuer: HashMap<String, Loaded>,
}

/// The algorithm a public JWK verifies: its `alg`, else the one its key type implies. Symmetric keys have none.
fn jwk_alg(jwk: &Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => implied,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return None,
    };
    (alg.family() == implied.family()).then_some(alg)
}

fn load_jwks(issuer: &str, text: &str) -> Result<Vec<IssuerKey>, IssuerError> {
    let err = |message: String| IssuerError::Jwks {
        issuer: issuer.to_owned(),
        message,
    };
    let set: JwkSet = serde_json::from_str(text).map_err(|e| err(format!("JWKS is not valid: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            continue;
        }
        let Some(alg) = jwk_alg(jwk) else {
            tracing::warn!(
                issuer,
                "ignoring a JWKS key offboard cannot verify with (symmetric or unknown)"
            );
            continue;
        };
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| err(format!("JWKS key is unusable: {e}")))?;
        keys.push(IssuerKey {
            kid: jwk.common.key_id.clone(),
            alg,
            decoding,
        });
    }
    if keys.is_empty() {
        return Err(err("JWKS has no usable public key".into()));
    }
    Ok(keys)
}

impl TrustedIssuers {
    /// Reads every `jwks_file` (a bad one is a start-up error); `jwks_uri` keys are fetched on first use, from
    /// blocking code.
    pub fn load(configs: &[TrustedIssuer]) -> Result<Self, IssuerError> {
        let mut by_issuer = HashMap::new();
        for ti in configs {
            let keys = match &ti.jwks_file {
                Some(path) => {
                    let text = read(path).map_err(|message| IssuerError::Jwks {
                        issuer: ti.issuer.clone(),
                        message,
                    })?;
                    load_jwks(&ti.issuer, &text)?
                }
                None => Vec::new(),
            };
            by_issuer.insert(
                ti.issuer.clone(),
                Loaded {
                    config: ti.clone(),
                    keys: RwLock::new(Arc::new(keys)),
                    fetched: Mutex::new(None),
                },
            );
        }
        Ok(Self { by_issuer })
    }

    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("jwks_file {}: {e}", path.display()))
}

/// Why a token from an IdP was refused (for logs; clients get a generic description).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    UntrustedIssuer,
    UnknownKey,
    Invalid(String),
}

impl Refused {
    pub fn describe(&self) -> String {
        match self {
            Self::Malformed => "not a well-formed JWT".into(),
            Self::UntrustedIssuer => "its issuer is not trusted (see [[trusted_issuers]])".into(),
            Self::UnknownKey => "signed with a key its issuer does not publish".into(),
            Self::Invalid(why) => why.clone(),
        }
    }
}

/// Explicitly typed JWTs (RFC 8725 §3.11) that are never an identity assertion, as [`media_type`] gives them.
const NOT_ASSERTIONS: [&str; 3] = ["at+jwt", "secevent+jwt", "logout+jwt"];

/// A `typ` header as a comparable media type (RFC 8725 §3.11, RFC 7515 §4.1.9): ASCII lower-case, without an
/// `application/` prefix, so `application/AT+JWT` and `at+jwt` are the same type.
pub fn media_type(typ: &str) -> String {
    let t = typ.trim().to_ascii_lowercase();
    match t.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => t,
    }
}

/// Whether an ID token's `typ` is allowed: absent, or `JWT` (after [`media_type`]). Anything explicitly typed
/// as something else (an access token, a SET, a logout token, …) is not an ID token.
pub fn id_token_typ_allowed(typ: Option<&str>) -> bool {
    typ.is_none_or(|t| media_type(t) == "jwt")
}

/// Whether `user` has an email equal to `address` (already ASCII lower-case) after ASCII lower-casing, among the
/// emails `select` names: `primary` (the one marked `primary: true`, or the user's only email) or an email type
/// (`work`, `home`, …, compared ignoring ASCII case). No Unicode folding: the Kelvin sign `K` (U+212A) is not
/// `k`.
pub fn email_matches(user: &crate::db::models::User, address: &str, select: &[String]) -> bool {
    let Ok(resource) = serde_json::from_str::<Value>(&user.resource) else {
        return false;
    };
    let Some(emails) = resource.get("emails").and_then(Value::as_array) else {
        return false;
    };
    let sole = emails.len() == 1;
    emails.iter().any(|e| {
        let equal = e
            .get("value")
            .and_then(Value::as_str)
            .is_some_and(|v| v.to_ascii_lowercase() == address);
        equal
            && select.iter().any(|s| {
                if s.eq_ignore_ascii_case("primary") {
                    sole || e.get("primary").and_then(Value::as_bool) == Some(true)
                } else {
                    e.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.eq_ignore_ascii_case(s))
                }
            })
    })
}

/// A verified token of a trusted issuer.
pub struct Verified<'a> {
    pub issuer: &'a TrustedIssuer,
    pub claims: serde_json::Map<String, Value>,
}

impl TrustedIssuers {
    /// Verifies a JWT of a trusted issuer for `audience` (the issuer's configured one when `None`).
    pub fn verify(&self, token: &str, audience: Option<&str>) -> Result<Verified<'_>, Refused> {
        if token.len() > 16 * 1024 {
            return Err(Refused::Malformed);
        }
        let header = decode_header(token).map_err(|_| Refused::Malformed)?;
        if header
            .typ
            .as_deref()
            .map(media_type)
            .is_some_and(|t| NOT_ASSERTIONS.contains(&t.as_str()))
        {
            return Err(Refused::Invalid(
                "an access token, SET or logout token is not an identity assertion".into(),
            ));
        }
        let unverified: serde_json::Map<String, Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| Refused::Malformed)?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .filter(|iss| crate::input::check("iss", iss, crate::input::MAX_URL).is_ok())
            .ok_or(Refused::Malformed)?;
        let loaded = self.by_issuer.get(iss).ok_or(Refused::UntrustedIssuer)?;
        loaded.refresh_if_due(header.kid.as_deref());
        let keys = loaded.keys();
        let key = match header.kid.as_deref() {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if keys.len() == 1 => keys.first(),
            None => None,
        }
        .ok_or(Refused::UnknownKey)?;
        let mut v = Validation::new(key.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.set_issuer(&[&loaded.config.issuer]);
        v.set_audience(&[audience.unwrap_or(&loaded.config.audience)]);
        let data = decode::<serde_json::Map<String, Value>>(token, &key.decoding, &v)
            .map_err(|e| Refused::Invalid(format!("{e}")))?;
        Ok(Verified {
            issuer: &loaded.config,
            claims: data.claims,
        })
    }
}

/// The user a verified ID token names, through its issuer's mapping.
pub fn user_key(v: &Verified<'_>) -> Result<UserKey, Refused> {
    if let Some(tenant) = &v.issuer.tenant_id
        && v.claims.get("tid").and_then(Value::as_str) != Some(tenant.as_str())
    {
        return Err(Refused::Invalid(
            "the token's `tid` is not the configured tenant".into(),
        ));
    }
    let value = v
        .claims
        .get(&v.issuer.claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Refused::Invalid(format!("the token has no `{}` claim", v.issuer.claim)))?;
    crate::input::check(&v.issuer.claim, value, crate::input::MAX_INDEXED)
        .map_err(|e| Refused::Invalid(e.to_string()))?;
    if v.issuer.attribute != MappedAttribute::Email {
        return Ok(map_value(v.issuer.attribute, value));
    }
    let verified = match v.claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    if v.issuer.require_email_verified && !verified {
        return Err(Refused::Invalid(
            "the token's email is not verified (`email_verified` is not true)".into(),
        ));
    }
    Ok(UserKey::IssuerEmail {
        address: value.to_ascii_lowercase(),
        select: v.issuer.match_emails.clone(),
    })
}

/// A value of an issuer's identifying claim as a user key.
pub fn map_value(attribute: MappedAttribute, value: &str) -> UserKey {
    match attribute {
        MappedAttribute::UserName => UserKey::UserName(value.to_owned()),
        MappedAttribute::ExternalId => UserKey::ExternalId(value.to_owned()),
        MappedAttribute::Email => UserKey::Email(value.to_owned()),
    }
}

impl Authority {
    pub fn trusted_issuers(&self) -> &TrustedIssuers {
        &self.issuers
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693). Every problem with the subject
    /// token, its issuer or its user is `invalid_request` (§2.2.2).
    pub fn exchange(
        &self,
        caller: &Caller,
        subject_token: &str,
        subject_token_type: &str,
        requested_token_type: Option<&str>,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        if ![TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT].contains(&subject_token_type) {
            return Err(OAuthError::InvalidRequest(format!(
                "subject_token_type must be {TOKEN_TYPE_ID_TOKEN} or {TOKEN_TYPE_JWT}"
            )));
        }
        if requested_token_type.is_some_and(|t| t != TOKEN_TYPE_ACCESS_TOKEN) {
            return Err(OAuthError::InvalidRequest(format!(
                "requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}"
            )));
        }
        let refused = |r: Refused| {
            tracing::info!(client.id = %caller.client_id(), "token exchange refused: {}", r.describe());
            OAuthError::InvalidRequest(format!("subject_token refused: {}", r.describe()))
        };
        let header = decode_header(subject_token).ok();
        // A token signed by one of offboard's own keys that was declared compromised is worth nothing, whoever
        // claims to have issued it.
        self.keys.sync()?;
        if header
            .as_ref()
            .and_then(|h| h.kid.as_deref())
            .is_some_and(|kid| self.keys.is_compromised(kid))
        {
            return Err(refused(Refused::Invalid(
                "signed with a key offboard declared compromised".into(),
            )));
        }
        let typ = header.and_then(|h| h.typ);
        if !id_token_typ_allowed(typ.as_deref()) {
            return Err(refused(Refused::Invalid(
                "an ID token's `typ` must be `JWT` or absent".into(),
            )));
        }
        let verified = self.issuers.verify(subject_token, None).map_err(refused)?;
        let key = user_key(&verified).map_err(refused)?;
        let issuer = verified.issuer.issuer.clone();
        let mut res = self
            .login_as("token.exchange", Some(&issuer), &key, caller.client_id(), req)
            .map_err(|e| match e {
            OAuthError::InvalidGrant(_) => {
                tracing::info!(issuer = %issuer, "token exchange refused: no active user matches the subject");
                OAuthError::InvalidRequest("subject_token refused: no active user matches its subject".into())
            }
            other => other,
        })?;
        res.issued_token_type = Some(TOKEN_TYPE_ACCESS_TOKEN.into());
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_normalised() {
        assert_eq!(media_type("application/AT+JWT"), "at+jwt");
        assert_eq!(media_type("Application/secevent+jwt"), "secevent+jwt");
        assert!(id_token_typ_allowed(None));
        assert!(id_token_typ_allowed(Some("JWT")));
        assert!(id_token_typ_allowed(Some("application/jwt")));
        assert!(!id_token_typ_allowed(Some("application/at+jwt")));
        assert!(!id_token_typ_allowed(Some("application/secevent+jwt")));
        assert!(!id_token_typ_allowed(Some("dpop+jwt")));
    }

    #[test]
    fn symmetric_and_mismatched_keys_are_refused() {
        let oct: Jwk =
            serde_json::from_value(serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}))
                .unwrap();
        assert_eq!(jwk_alg(&oct), None);
        let rsa_claims_es: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA", "alg": "ES256", "n": "AQAB", "e": "AQAB"
        }))
        .unwrap();
        assert_eq!(jwk_alg(&rsa_claims_es), None);
        assert!(load_jwks("x", r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
    }
}
