//! The one place where an `AppError` becomes an HTTP response (one exhaustive match). Bodies are RFC 7644 §3.12
//! errors; internal causes are logged here, once, and never sent.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::error::AppError;
use crate::scim::ScimError;

pub const SCIM_JSON: &str = "application/scim+json";

impl AppError {
    /// The status and SCIM error this error answers with.
    fn as_scim(&self) -> ScimError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
