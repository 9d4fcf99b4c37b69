//! `AppError`: what a request can fail with, once the protocol layers have spoken. Rendered to HTTP in exactly one
//! place (`http::error`). Internal causes are kept for the log and never reach the client.

use crate::db::DbError;
use crate::scim::ScimError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A client mistake with a SCIM error body (RFC 7644 §3.12).
    #[error(transparent)]
    Scim(#[from] ScimError),
    /// No credential, or one that is unknown or revoked.
    #[error("unauthorized")]
    Unauthorized {
        /// A credential was presented (and was wrong): the challenge carries `error="invalid_token"`.
        presented: bool,
    },
    /// A valid credential without the scope this endpoint needs.
    #[error("credential lacks scope {0}")]
    Forbidden(&'static str),
    /// `If-Match` did not match the resource's current version.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The database could not be reached in time.
    #[error("database unavailable")]
    Unavailable(#[source] r2d2::Error),
    /// A bug or an infrastructure fault; the message goes to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => Self::Scim(ScimError::not_found("resource not found")),
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Self::Scim(ScimError::conflict(
                "a resource with this unique attribute already exists",
            )),
            other => Self::Internal(format!("database: {other}")),
        }
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(e) => Self::Unavailable(e),
            DbError::Query(e) => e.into(),
        }
    }
}
