//! The forward-auth sidecar (feature `actix`; the `offboard-guard` binary serves it): a small HTTP server that
//! answers "may this request through?" for a reverse proxy in front of a service in any language: nginx
//! `auth_request`, Traefik `forwardAuth`, Envoy `ext_authz` (HTTP service).
//!
//! - `/check` (any method, any path below it, as Envoy appends the original path): reads `Authorization` and
//!   answers 200 with `X-Auth-Subject` (`sub`), `X-Auth-User` (`preferred_username`, empty when the token has
//!   none) and `X-Auth-Groups` (the groups, comma-separated, empty when none); 401 with `WWW-Authenticate: Bearer` (no token) or `Bearer
//!   error="invalid_token"` (a bad or revoked one); 503 with `Retry-After` while the feed is stale (the guard fails
//!   closed) or before the guard has read the revocation snapshot.
//! - `/ssf/push` (POST; with [`crate::Delivery::Push`]): the RFC 8935 push endpoint the guard's push stream
//!   names: 202 once the SET is applied, the RFC 8935 error otherwise, 503 before the guard has started (offboard
//!   retries).
//! - `/healthz`: 200 while the process serves. `/readyz`: 200 once the snapshot is loaded and the feed is fresh,
//!   else 503.
//!
//! [`serve`] listens at once and starts the [`Guard`] in the background (retrying every poll interval while
//! offboard cannot be reached), so a proxy gets 503, never a connection refusal, while the guard starts.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};

use crate::actix::Rejected;
use crate::{Guard, GuardConfig};

/// The guard, once it has started.
type Slot = Arc<tokio::sync::OnceCell<Guard>>;

/// Starts the sidecar on `listener` and the guard behind it; returns the running server (await it, or spawn it
/// and keep its handle to stop it). A configuration the guard refuses is an error here; offboard being unreachable
/// is not (the guard keeps trying). Needs an actix (Tokio) runtime.
pub fn serve(
    config: GuardConfig,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    config.validate().map_err(std::io::Error::other)?;
    let slot: Slot = Arc::default();
    let starter = slot.clone();
    let retry = config.poll_interval.max(Duration::from_secs(1));
    actix_web::rt::spawn(async move {
        loop {
            match Guard::start(config.clone()).await {
                Ok(guard) => {
                    tracing::info!(
                        "offboard-guard: revocation snapshot loaded (position {}); checking tokens",
                        guard.status().snapshot_position
                    );
                    let _ = starter.set(guard);
                    return;
                }
                Err(e) => {
                    tracing::warn!("offboard-guard: cannot start the guard yet ({e}); retrying in {retry:?}");
                    tokio::time::sleep(retry).await;
                }
            }
        }
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(slot.clone()))
            .route("/check", web::route().to(check))
            .route("/check/{tail:.*}", web::route().to(check))
            .route("/ssf/push", web::post().to(push))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .disable_signals()
    .listen(listener)?
    .run())
}

fn not_started() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((RETRY_AFTER, "1"))
        .json(serde_json::json!({
            "error": "temporarily_unavailable",
            "error_description": "the guard has not read the revocation snapshot yet"
        }))
}

async fn check(req: HttpRequest, slot: web::Data<Slot>) -> HttpResponse {
    let Some(guard) = slot.get() else {
        return not_started();
    };
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match guard.check_header(header).await {
        Ok(claims) => {
            let mut res = HttpResponse::Ok();
            // Values a header cannot carry (control characters) are left out rather than mangled.
            let mut put = |name: &str, value: &str| {
                if let Ok(v) = HeaderValue::from_str(value) {
                    res.insert_header((name, v));
                }
            };
            // All three always, empty when the token has no user name or groups: a proxy that copies them onto
            // the request (Traefik `authResponseHeaders`, Envoy `allowed_upstream_headers`) then replaces any a
            // client sent.
            put("X-Auth-Subject", &claims.sub);
            put(
                "X-Auth-User",
                claims.preferred_username.as_deref().unwrap_or_default(),
            );
            put("X-Auth-Groups", &claims.groups.join(","));
            res.finish()
        }
        Err(refusal) => Rejected(refusal).error_response(),
    }
}

async fn push(req: HttpRequest, body: web::Bytes, slot: web::Data<Slot>) -> HttpResponse {
    match slot.get() {
        Some(guard) => crate::actix::push_response(guard, &req, &body).await,
        None => HttpResponse::ServiceUnavailable()
            .insert_header((RETRY_AFTER, "1"))
            .json(serde_json::json!({
                "err": "temporarily_unavailable",
                "description": "the guard has not read the revocation snapshot yet"
            })),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

async fn readyz(slot: web::Data<Slot>) -> HttpResponse {
    let Some(guard) = slot.get() else {
        return not_started();
    };
    let ago = guard.status().confirmed_ago;
    if ago <= guard.config().freshness() {
        HttpResponse::Ok().body("ready")
    } else {
        HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
            .insert_header((RETRY_AFTER, "1"))
            .body(format!(
                "the revocation feed was last confirmed {ago:?} ago, beyond the freshness bound"
            ))
    }
}
