//! The OAuth endpoints: `POST /oauth2/token` (`refresh_token`, `client_credentials`, RFC 8693 token exchange),
//! `POST /oauth2/introspect` (RFC 7662, scope `introspect`), `POST /oauth2/revoke` (RFC 7009) and
//! `POST /oauth2/global-token-revocation` (draft-parecki-oauth-global-token-revocation). Requests are
//! `application/x-www-form-urlencoded` (GTR: JSON); a parameter given twice is `invalid_request` (RFC 6749 §3.1).
//! Every error is an RFC 6749 §5.2 JSON body, rendered by [`OAuthError`]'s `ResponseError` in `http::error`.

use std::collections::HashMap;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use super::{AppState, blocking_as};
use crate::credentials::Presented;
use crate::metrics::{AuthFailure, Metrics, TokenOp};
use crate::tokens::exchange::TOKEN_TYPE_ID_TOKEN;
use crate::tokens::introspect::Introspection;
use crate::tokens::{OAuthError, TokenRequest, authenticate_client};

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post_only("/oauth2/token").route(web::post().to(token)))
        .service(post_only("/oauth2/introspect").route(web::post().to(introspect)))
        .service(post_only("/oauth2/revoke").route(web::post().to(revoke)))
        .service(
            post_only("/oauth2/global-token-revocation")
                .route(web::post().to(super::gtr::global_token_revocation)),
        );
}

/// A resource answering anything but POST with 405, `Allow: POST` and an OAuth error body.
fn post_only(path: &str) -> actix_web::Resource {
    web::resource(path)
        .app_data(web::PayloadConfig::new(MAX_FORM_BYTES))
        .app_data(super::RouteLabel::default())
        .default_service(web::to(|| async {
            HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, "POST"))
                .json(serde_json::json!({"error": "invalid_request", "error_description": "use POST"}))
        }))
}

/// The parameters of a form body, each at most once. `Debug` shows the names only: values include secrets and
/// tokens.
#[derive(Default)]
pub struct Form(HashMap<String, String>);

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_tuple("Form").field(&names).finish()
    }
}

impl Form {
    pub fn parse(req: &HttpRequest, body: &[u8]) -> Result<Self, OAuthError> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(OAuthError::InvalidRequest(
                "the body must be application/x-www-form-urlencoded".into(),
            ));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| OAuthError::InvalidRequest("the form body is not valid".into()))?;
        let mut map = HashMap::new();
        for (k, v) in pairs {
            crate::input::check("a parameter name", &k, crate::input::MAX_ID)?;
            crate::input::check(&format!("parameter `{k}`"), &v, max_len(&k))?;
            if map.insert(k.clone(), v).is_some() {
                return Err(OAuthError::InvalidRequest(format!(
                    "parameter `{k}` is given more than once"
                )));
            }
        }
        Ok(Self(map))
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn required(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::InvalidRequest(format!("parameter `{key}` is required")))
    }
}

/// The longest value a form parameter may have: tokens (JWTs and refresh tokens) up to 16 KiB, like the
/// verifiers accept; any other parameter (client ids and secrets, grant and token types, scope, audience) up to
/// `input::MAX_URL`.
fn max_len(name: &str) -> usize {
    match name {
        "token" | "subject_token" | "actor_token" | "refresh_token" | "assertion" => MAX_TOKEN_CHARS,
        _ => crate::input::MAX_URL,
    }
}

/// Longest token value accepted in a form.
const MAX_TOKEN_CHARS: usize = 16 * 1024;

/// The `Authorization` header as a credential: `None` when absent; an unparsable one, or one no credential can
/// have (a NUL, an oversized name or secret: `Presented::parse` refuses it), is `invalid_client`.
pub fn presented(req: &HttpRequest) -> Result<Option<Presented>, OAuthError> {
    match req.headers().get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(Presented::parse)
            .map(Some)
            .ok_or(OAuthError::InvalidClient { presented: true }),
    }
}

/// A JSON answer that no cache may keep (RFC 6749 §5.1).
fn no_store(body: &impl serde::Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((header::PRAGMA, HeaderValue::from_static("no-cache")))
        .json(body)
}

fn token_request(form: &Form) -> Result<TokenRequest, OAuthError> {
    let audience = match (form.get("audience"), form.get("resource")) {
        (Some(a), Some(r)) if a != r => {
            return Err(OAuthError::InvalidTarget(
                "audience and resource name different targets".into(),
            ));
        }
        (a, r) => a.or(r).map(str::to_owned),
    };
    Ok(TokenRequest {
        scope: form.get("scope").map(str::to_owned),
        audience,
        ttl: None,
    })
}

/// POST /oauth2/token. Client authentication: `client_secret_basic`, Bearer secret, `client_secret_post`, or the
/// public client `offboard-cli` (refresh and token exchange only).
async fn token(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let mut op = None;
    let res = grant(&req, &body, &state, &mut op).await;
    count(&state.metrics, op, res.as_ref().map(|_| "ok"));
    res
}

/// Counts a call of an OAuth endpoint: its operation (once known) and result (`ok`, `active`, `inactive`, or the
/// error code), a failed client authentication, a refresh token presented after it was revoked.
fn count(metrics: &Metrics, op: Option<TokenOp>, res: Result<&'static str, &OAuthError>) {
    let result = match res {
        Ok(result) => result,
        Err(e) => {
            match e {
                OAuthError::InvalidClient { .. } => metrics.auth_failure(AuthFailure::InvalidClient),
                OAuthError::InsufficientScope(_) => metrics.auth_failure(AuthFailure::MissingScope),
                _ => {}
            }
            if let Some(via) = e.revoked_refresh() {
                metrics.revoked_presented(via);
            }
            e.code()
        }
    };
    if let Some(op) = op {
        metrics.token(op, result);
    }
}

/// The grants of POST /oauth2/token; `op` is set once the grant type is known.
async fn grant(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
    op: &mut Option<TokenOp>,
) -> Result<HttpResponse, OAuthError> {
    let form = Form::parse(req, body)?;
    let header = presented(req)?;
    let grant = form.required("grant_type")?.to_owned();
    *op = Some(match grant.as_str() {
        "refresh_token" => TokenOp::Refreshed,
        "client_credentials" => TokenOp::Minted,
        TOKEN_EXCHANGE => TokenOp::Exchanged,
        _ => return Err(OAuthError::UnsupportedGrantType(grant)),
    });
    let auth = state.tokens.clone();
    let usage = state.usage.clone();
    let res = blocking_as::<_, OAuthError, _>(move || {
        let caller = auth
            .db
            .read(|c| authenticate_client(c, header, form.get("client_id"), form.get("client_secret")))?;
        if let crate::tokens::Caller::Credential(client) = &caller {
            usage.record(&client.name);
        }
        crate::audit::set_actor(caller.client_id());
        let treq = token_request(&form)?;
        match grant.as_str() {
            "refresh_token" => auth.refresh(&caller, form.required("refresh_token")?, treq.scope.as_deref()),
            "client_credentials" => auth.client_credentials(&caller, &treq),
            _ => {
                if form.get("actor_token").is_some() {
                    return Err(OAuthError::InvalidRequest(
                        "actor_token (delegation) is not supported".into(),
                    ));
                }
                auth.exchange(
                    &caller,
                    form.required("subject_token")?,
                    form.get("subject_token_type").unwrap_or(TOKEN_TYPE_ID_TOKEN),
                    form.get("requested_token_type"),
                    &treq,
                )
            }
        }
    })
    .await?;
    Ok(no_store(&res))
}

/// POST /oauth2/introspect — the caller needs a credential with scope `introspect` (Basic or Bearer).
async fn introspect(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let res = introspection(&req, &body, &state).await;
    let result = res.as_ref().map(|i| {
        if i.revoked {
            state.metrics.revoked_presented("introspect");
        }
        if i.answer.get("active") == Some(&serde_json::Value::Bool(true)) {
            "active"
        } else {
            "inactive"
        }
    });
    count(&state.metrics, Some(TokenOp::Introspected), result);
    let i = res?;
    super::note_client(&i.caller);
    Ok(no_store(&i.answer))
}

async fn introspection(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
) -> Result<Introspection, OAuthError> {
    let Some(caller) = presented(req)? else {
        return Err(OAuthError::InvalidClient { presented: false });
    };
    let form = Form::parse(req, body)?;
    let token = form.required("token")?.to_owned();
    let auth = state.tokens.clone();
    let usage = state.usage.clone();
    // Answered from memory when it can be, without the blocking hop.
    if let Some(answer) = auth.introspect_from_memory(&caller, &token) {
        usage.record(&answer.caller);
        return Ok(answer);
    }
    blocking_as::<_, OAuthError, _>(move || {
        let answer = auth.introspect(&caller, &token)?;
        usage.record(&answer.caller);
        Ok(answer)
    })
    .await
}

/// POST /oauth2/revoke — 200 for every token, known or not (RFC 7009 §2.2).
async fn revoke(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let res = revocation(&req, &body, &state).await;
    count(
        &state.metrics,
        Some(TokenOp::Revoked),
        res.as_ref().map(|()| "ok"),
    );
    res?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .finish())
}

async fn revocation(req: &HttpRequest, body: &[u8], state: &AppState) -> Result<(), OAuthError> {
    let form = Form::parse(req, body)?;
    let header = presented(req)?;
    let token = form.required("token")?.to_owned();
    // `token_type_hint` only speeds a lookup up; offboard tells the types apart by their form, so an unknown
    // hint is ignored (RFC 7009 §2.1: the search extends to every supported type).
    let auth = state.tokens.clone();
    blocking_as::<_, OAuthError, _>(move || {
        let caller = auth
            .db
            .read(|c| authenticate_client(c, header, form.get("client_id"), form.get("client_secret")))?;
        crate::audit::set_actor(caller.client_id());
        auth.revoke(&caller, &token)
    })
    .await
}
