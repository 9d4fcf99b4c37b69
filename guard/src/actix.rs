//! actix-web adoption (feature `actix`): the middleware [`require`], which refuses every request without an
//! accepted token (401 with a Bearer challenge; 503 while the feed is stale and the guard fails closed), and the
//! extractor [`Verified`], which hands the handler the token's [`Claims`]. Both find the [`Guard`] in the app
//! data (`App::app_data(web::Data::new(guard))`).
//!
//! ```no_run
//! use actix_web::{App, HttpServer, middleware::from_fn, web};
//! use offboard_guard::{Guard, GuardConfig, actix::{Verified, require}};
//!
//! async fn hello(user: Verified) -> String {
//!     format!("hello {}", user.preferred_username.as_deref().unwrap_or(&user.sub))
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let guard = Guard::start(GuardConfig::new("https://offboard.example.com", "svc-a", "STREAM", "SECRET"))
//!     .await
//!     .map_err(std::io::Error::other)?;
//! HttpServer::new(move || {
//!     App::new()
//!         .app_data(web::Data::new(guard.clone()))
//!         .wrap(from_fn(require))
//!         .route("/hello", web::get().to(hello))
//! })
//! .bind("127.0.0.1:8081")?
//! .run()
//! .await
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};

use crate::{Claims, Guard, Refusal};

/// A refused request: 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3), or 503 while the feed is stale.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub Refusal);

impl ResponseError for Rejected {
    fn status_code(&self) -> StatusCode {
        match self.0 {
            Refusal::Stale(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match &self.0 {
            Refusal::Missing => {
                res.insert_header(("WWW-Authenticate", "Bearer"));
            }
            Refusal::Stale(_) => {
                res.insert_header(("Retry-After", "1"));
            }
            _ => {
                res.insert_header(("WWW-Authenticate", "Bearer error=\"invalid_token\""));
            }
        }
        let error = match self.0 {
            Refusal::Stale(_) => "temporarily_unavailable",
            Refusal::Missing => "invalid_request",
            _ => "invalid_token",
        };
        res.json(serde_json::json!({"error": error, "error_description": self.0.to_string()}))
    }
}

fn guard_of(req: &HttpRequest) -> Result<web::Data<Guard>, actix_web::Error> {
    req.app_data::<web::Data<Guard>>()
        .cloned()
        .ok_or_else(|| actix_web::error::ErrorInternalServerError("offboard-guard: no Guard in the app data"))
}

async fn check(req: &HttpRequest) -> Result<Claims, actix_web::Error> {
    let guard = guard_of(req)?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    guard.check_header(header).await.map_err(|r| Rejected(r).into())
}

/// Middleware (`App::wrap(actix_web::middleware::from_fn(require))`): lets a request through only with an
/// accepted token, whose [`Claims`] it leaves in the request extensions for [`Verified`].
pub async fn require<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    match check(req.request()).await {
        Ok(claims) => {
            req.extensions_mut().insert(claims);
            next.call(req).await.map(ServiceResponse::map_into_left_body)
        }
        // Answered here, as a response, so nothing behind the middleware runs.
        Err(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
    }
}

/// The claims of the request's accepted token: from [`require`] when it ran, else checked here.
#[derive(Debug, Clone)]
pub struct Verified(pub Claims);

impl std::ops::Deref for Verified {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl FromRequest for Verified {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            if let Some(claims) = req.extensions().get::<Claims>().cloned() {
                return Ok(Self(claims));
            }
            check(&req).await.map(Self)
        })
    }
}

/// The RFC 8935 push endpoint of a guard with [`crate::Delivery::Push`]: route it with
/// `.route("/ssf/push", web::post().to(receive_push))`, outside anything wrapped in [`require`] (offboard's push
/// carries no access token), and give its URL as the push stream's `endpoint_url`. Answers 202 once the SET is
/// applied, else the RFC 8935 error (`{"err", "description"}`; 400, 401 or 403).
pub async fn receive_push(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    match guard_of(&req) {
        Ok(guard) => push_response(&guard, &req, &body).await,
        Err(e) => e.error_response(),
    }
}

/// Hands a pushed SET to `guard` and renders the answer.
pub(crate) async fn push_response(guard: &Guard, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    match guard
        .receive(
            header(actix_web::http::header::CONTENT_TYPE),
            header(actix_web::http::header::AUTHORIZATION),
            body,
        )
        .await
    {
        Ok(()) => HttpResponse::Accepted().finish(),
        Err(e) => HttpResponse::build(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST))
            .json(e.body()),
    }
}
