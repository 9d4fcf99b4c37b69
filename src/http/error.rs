//! The one place where an `AppError` becomes an HTTP response (one exhaustive match). Bodies are RFC 7644 §3.12
//! errors; internal causes are logged here, once, and never sent.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::error::AppError;
use crate::scim::ScimError;
use crate::tokens::OAuthError;
use crate::tokens::gtr::GtrError;

pub const SCIM_JSON: &str = "application/scim+json";

impl AppError {
    /// The status and SCIM error this error answers with.
    pub(crate) fn as_scim(&self) -> ScimError {
        match self {
            Self::Scim(e) => e.clone(),
            Self::Unauthorized { .. } => ScimError::new(
                401,
                None,
                "authentication required: present a valid bearer credential",
            ),
            Self::Forbidden(scope) => {
                ScimError::new(403, None, format!("this credential lacks the `{scope}` scope"))
            }
            Self::PreconditionFailed => ScimError::new(
                412,
                None,
                "the resource changed: If-Match does not match its current version",
            ),
            Self::Unavailable(_) => {
                ScimError::new(503, None, "the service is temporarily unavailable; retry")
            }
            Self::Internal(_) => ScimError::new(
                500,
                None,
                "internal error; see the server log for this request id",
            ),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.as_scim().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Internal(cause) => tracing::error!("internal error: {cause}"),
            Self::Unavailable(cause) => tracing::warn!("database unavailable: {cause}"),
            Self::Scim(_) | Self::Unauthorized { .. } | Self::Forbidden(_) | Self::PreconditionFailed => {}
        }
        let scim = self.as_scim();
        let mut res = HttpResponse::build(self.status_code());
        res.content_type(SCIM_JSON);
        if let Self::Unauthorized { presented } = self {
            let challenge = if *presented {
                "Bearer realm=\"offboard\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"offboard\""
            };
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge)));
        }
        if matches!(self, Self::Unavailable(_)) {
            res.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        res.json(scim.to_json())
    }
}

/// An OAuth error body (RFC 6749 §5.2), never cacheable.
fn oauth_body(status: StatusCode, code: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(serde_json::json!({ "error": code, "error_description": description }))
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::Server(AppError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::InvalidRequest(_)
            | Self::InvalidGrant(_)
            | Self::UnauthorizedClient(_)
            | Self::UnsupportedGrantType(_)
            | Self::InvalidScope(_)
            | Self::InvalidTarget(_)
            | Self::UnsupportedTokenType(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let description = match self {
            Self::Server(e) => {
                // Logged once, here; the client learns nothing internal.
                e.error_response();
                match e {
                    AppError::Unavailable(_) => "the service is temporarily unavailable; retry".to_owned(),
                    _ => "internal error; see the server log for this request id".to_owned(),
                }
            }
            other => other.to_string(),
        };
        let mut res = oauth_body(self.status_code(), self.code(), &description);
        if let Self::InvalidClient { .. } = self {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                // RFC 6749 §5.2: a challenge for the scheme the client used; offers both it may use.
                HeaderValue::from_static("Basic realm=\"offboard\", Bearer realm=\"offboard\""),
            );
        }
        if let Self::Server(AppError::Unavailable(_)) = self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

impl ResponseError for GtrError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Server(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (code, description) = match self {
            Self::BadRequest(m) => ("invalid_request", m.clone()),
            Self::Unauthorized(m) => ("invalid_client", m.clone()),
            Self::Forbidden(m) => ("access_denied", m.clone()),
            Self::NotFound => ("not_found", self.to_string()),
            Self::Server(e) => {
                e.error_response();
                (
                    "server_error",
                    "internal error; see the server log for this request id".to_owned(),
                )
            }
        };
        let mut res = oauth_body(self.status_code(), code, &description);
        if let Self::Unauthorized(_) = self {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"offboard\""),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_errors_map_to_rfc_6749_statuses() {
        let cases: Vec<(OAuthError, u16, &str)> = vec![
            (OAuthError::InvalidRequest("x".into()), 400, "invalid_request"),
            (
                OAuthError::InvalidClient { presented: true },
                401,
                "invalid_client",
            ),
            (OAuthError::InvalidGrant("x".into()), 400, "invalid_grant"),
            (
                OAuthError::UnsupportedGrantType("x".into()),
                400,
                "unsupported_grant_type",
            ),
            (
                OAuthError::InsufficientScope("introspect"),
                403,
                "insufficient_scope",
            ),
            (
                OAuthError::Server(AppError::Internal("secret detail".into())),
                500,
                "server_error",
            ),
        ];
        for (err, status, code) in cases {
            let res = err.error_response();
            assert_eq!(res.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code);
            assert_eq!(res.headers().get(header::CACHE_CONTROL).unwrap(), "no-store");
        }
        let gtr = [
            (GtrError::BadRequest("x".into()), 400),
            (GtrError::Unauthorized("x".into()), 401),
            (GtrError::Forbidden("x".into()), 403),
            (GtrError::NotFound, 404),
        ];
        for (err, status) in gtr {
            assert_eq!(err.error_response().status().as_u16(), status);
        }
    }

    #[test]
    fn every_error_maps_to_its_status() {
        let cases: Vec<(AppError, u16)> = vec![
            (ScimError::invalid_filter("x").into(), 400),
            (ScimError::not_found("x").into(), 404),
            (ScimError::conflict("x").into(), 409),
            (ScimError::new(413, None, "big").into(), 413),
            (AppError::Unauthorized { presented: false }, 401),
            (AppError::Forbidden("scim"), 403),
            (AppError::PreconditionFailed, 412),
            (AppError::Internal("secret detail".into()), 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{err:?}");
            let res = err.error_response();
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(res.headers().get(header::CONTENT_TYPE).unwrap(), SCIM_JSON);
        }
    }

    #[test]
    fn internal_causes_stay_out_of_the_body() {
        let body = AppError::Internal("password=hunter2".into())
            .as_scim()
            .to_json()
            .to_string();
        assert!(!body.contains("hunter2"));
    }

    #[test]
    fn unauthorized_carries_a_bearer_challenge() {
        let res = AppError::Unauthorized { presented: true }.error_response();
        let challenge = res
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer"));
        assert!(challenge.contains("invalid_token"));
    }
}
