//! axum adoption (feature `axum`): the tower layer [`GuardLayer`], which refuses every request without an
//! accepted token (401 with a Bearer challenge; 503 while the feed is stale and the guard fails closed) and leaves
//! the token's [`Claims`] in the request extensions, and the extractor [`Verified`], which hands them to the
//! handler. The same answers as the actix middleware (`offboard_guard::actix`).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use offboard_guard::{Guard, GuardConfig, axum::{GuardLayer, Verified}};
//!
//! async fn hello(user: Verified) -> String {
//!     format!("hello {}", user.preferred_username.as_deref().unwrap_or(&user.sub))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = Guard::start(GuardConfig::new("https://offboard.example.com", "svc-a", "STREAM", "SECRET")).await?;
//! let app: Router = Router::new().route("/hello", get(hello)).layer(GuardLayer::new(guard));
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::http::{HeaderValue, Request, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};

use crate::{Claims, Guard, Refusal};

/// A refused request: 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3), or 503 with `Retry-After` while the feed
/// is stale; the body is an OAuth error object.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub Refusal);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        let (status, error, name, value) = match &self.0 {
            Refusal::Stale(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                header::RETRY_AFTER,
                "1",
            ),
            Refusal::Missing => (
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                header::WWW_AUTHENTICATE,
                "Bearer",
            ),
            _ => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                header::WWW_AUTHENTICATE,
                "Bearer error=\"invalid_token\"",
            ),
        };
        let body = serde_json::json!({"error": error, "error_description": self.0.to_string()});
        let mut res = (status, body.to_string()).into_response();
        res.headers_mut().insert(name, HeaderValue::from_static(value));
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    }
}

/// A tower layer (`Router::layer(GuardLayer::new(guard))`): lets a request through only with an accepted token.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    guard: Guard,
}

impl GuardLayer {
    pub fn new(guard: Guard) -> Self {
        Self { guard }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service [`GuardLayer`] wraps around the inner one.
#[derive(Debug, Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Guard,
}

impl<S, B> tower_service::Service<Request<B>> for GuardService<S>
where
    S: tower_service::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was driven to readiness serves this request; a fresh clone stays for the next
        // (tower's documented pattern for services that call their inner service from a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let authorization = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match guard.check_header(authorization).await {
                Ok(claims) => {
                    req.extensions_mut().insert(claims);
                    inner.call(req).await
                }
                // Answered here, so nothing behind the layer runs.
                Err(refusal) => Ok(Rejected(refusal).into_response()),
            }
        })
    }
}

/// The claims of the request's accepted token, left by [`GuardLayer`]. A handler behind the layer always has
/// them; one that is not (a route added after `.layer`) answers 401 rather than serve without a check.
#[derive(Debug, Clone)]
pub struct Verified(pub Claims);

impl std::ops::Deref for Verified {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl<St: Send + Sync> FromRequestParts<St> for Verified {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Rejected> {
        parts
            .extensions
            .get::<Claims>()
            .cloned()
            .map(Self)
            .ok_or(Rejected(Refusal::Missing))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn answer(refusal: Refusal) -> (StatusCode, Option<String>, Option<String>) {
        let res = Rejected(refusal).into_response();
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (
            res.status(),
            header(header::WWW_AUTHENTICATE),
            header(header::RETRY_AFTER),
        )
    }

    #[test]
    fn refusals_answer_as_the_actix_middleware_does() {
        assert_eq!(
            answer(Refusal::Missing),
            (StatusCode::UNAUTHORIZED, Some("Bearer".into()), None)
        );
        assert_eq!(
            answer(Refusal::Revoked(crate::Revoked::Session)),
            (
                StatusCode::UNAUTHORIZED,
                Some("Bearer error=\"invalid_token\"".into()),
                None
            )
        );
        assert_eq!(
            answer(Refusal::Stale(Duration::from_secs(7))),
            (StatusCode::SERVICE_UNAVAILABLE, None, Some("1".into()))
        );
    }

    #[tokio::test]
    async fn verified_outside_the_layer_is_refused() {
        let (mut parts, ()) = Request::new(()).into_parts();
        let refused = Verified::from_request_parts(&mut parts, &()).await;
        assert!(
            matches!(refused, Err(Rejected(Refusal::Missing))),
            "no claims in the extensions: {refused:?}"
        );
    }
}
