//! Global Token Revocation (draft-parecki-oauth-global-token-revocation, what Okta Universal Logout calls): a
//! trusted IdP names a subject (`iss_sub` or `email`, RFC 9493) and offboard ends every session of that user
//! through `lifecycle::users::end_sessions_in` (the account stays active). The caller authenticates with a
//! private-key JWT signed by a trusted issuer: `aud` = this endpoint's URL, `exp` required, `jti` required and
//! refused when seen before, `exp` at most 10 minutes ahead. Only issuers whose entry sets
//! `global_token_revocation = true` may call it; they may name a user by email, by offboard's own `iss_sub`, or
//! by their own `iss_sub`. Answers as the draft says: 204 begun; 400 bad or unsupported subject; 401
//! authentication; 403 a subject of another issuer; 404 no such user.

use serde_json::Value;

use super::exchange::{Refused, map_value};
use super::{Authority, UserKey, resolve_user};
use crate::db::repo;
use crate::error::AppError;

pub const GTR_PATH: &str = "/oauth2/global-token-revocation";

/// The longest lifetime an assertion may claim (the draft suggests about 5 minutes).
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum GtrError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no user matches the subject")]
    NotFound,
    #[error(transparent)]
    Server(#[from] AppError),
}

impl From<diesel::result::Error> for GtrError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Server(e.into())
    }
}

impl From<crate::db::DbError> for GtrError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Server(e.into())
    }
}

impl From<super::OAuthError> for GtrError {
    fn from(e: super::OAuthError) -> Self {
        match e {
            super::OAuthError::Server(e) => Self::Server(e),
            other => Self::Server(AppError::internal(other)),
        }
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str, GtrError> {
    let value = v
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GtrError::BadRequest(format!("sub_id needs a string `{key}`")))?;
    // Subjects are looked up in indexed columns (`iss` only compared): no NUL, bounded like SCIM's attributes.
    let max = if key == "iss" {
        crate::input::MAX_URL
    } else {
        crate::input::MAX_INDEXED
    };
    crate::input::check(&format!("sub_id.{key}"), value, max)?;
    Ok(value)
}

impl From<crate::input::InputError> for GtrError {
    fn from(e: crate::input::InputError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl Authority {
    /// The endpoint URL that assertions must name as `aud`.
    pub fn gtr_endpoint(&self) -> String {
        format!("{}{GTR_PATH}", self.config.issuer)
    }

    /// Verifies the assertion, resolves the subject, and ends the user's sessions. Returns the user id.
    pub fn global_token_revocation(&self, assertion: Option<&str>, body: &Value) -> Result<String, GtrError> {
        let assertion =
            assertion.ok_or_else(|| GtrError::Unauthorized("a private-key JWT bearer is required".into()))?;
        let verified = self
            .trusted_issuers()
            .verify(assertion, Some(&self.gtr_endpoint()))
            .map_err(|r: Refused| GtrError::Unauthorized(format!("assertion refused: {}", r.describe())))?;
        let jti = verified
            .claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| GtrError::Unauthorized("the assertion has no `jti`".into()))?
            .to_owned();
        crate::input::check("the assertion's `jti`", &jti, crate::input::MAX_ID)?;
        let issuer = verified.issuer.clone();
        if !issuer.global_token_revocation {
            return Err(GtrError::Forbidden(format!(
                "{} is not allowed to revoke tokens (set global_token_revocation = true on its [[trusted_issuers]] \
                 entry)",
                issuer.issuer
            )));
        }
        // The replay record must outlive every moment the assertion verifies: an integer `exp`, not far ahead.
        let exp = verified
            .claims
            .get("exp")
            .and_then(Value::as_i64)
            .filter(|exp| *exp <= chrono::Utc::now().timestamp() + MAX_ASSERTION_LIFETIME_SECS)
            .ok_or_else(|| {
                GtrError::Unauthorized(format!(
                    "the assertion's `exp` must be an integer at most {MAX_ASSERTION_LIFETIME_SECS} s ahead"
                ))
            })?;
        let sub_id = body
            .get("sub_id")
            .filter(|v| v.is_object())
            .ok_or_else(|| GtrError::BadRequest("the body needs a `sub_id` object (RFC 9493)".into()))?;
        let key = match sub_id.get("format").and_then(Value::as_str) {
            Some("email") => UserKey::Email(text(sub_id, "email")?.to_owned()),
            Some("iss_sub") => {
                let (iss, sub) = (text(sub_id, "iss")?, text(sub_id, "sub")?);
                if iss == self.config.issuer {
                    UserKey::Id(sub.to_owned())
                } else if iss != issuer.issuer {
                    return Err(GtrError::Forbidden(format!(
                        "{} may revoke only its own subjects, not those of {iss}",
                        issuer.issuer
                    )));
                } else if issuer.claim == "sub" {
                    map_value(issuer.attribute, sub)
                } else {
                    return Err(GtrError::BadRequest(format!(
                        "iss_sub subjects of {iss} cannot be mapped: its users are matched on the `{}` claim",
                        issuer.claim
                    )));
                }
            }
            Some(other) => {
                return Err(GtrError::BadRequest(format!(
                    "subject format `{other}` is not supported"
                )));
            }
            None => return Err(GtrError::BadRequest("sub_id needs a `format`".into())),
        };
        let leeway = i64::try_from(crate::keys::LEEWAY_SECS).unwrap_or(0);
        let until =
            chrono::DateTime::from_timestamp(exp + leeway, 0).map_or_else(crate::db::now, |t| t.naive_utc());
        let reason = format!("global token revocation by {}", issuer.issuer);
        let user_id = self.db.write(|c| {
            if !repo::tokens::remember_assertion(c, &issuer.issuer, &jti, until)? {
                return Err(GtrError::Unauthorized(
                    "the assertion was used before (jti replay)".into(),
                ));
            }
            let user = resolve_user(c, &key)?.ok_or(GtrError::NotFound)?;
            crate::audit::set_actor(&issuer.issuer);
            crate::lifecycle::users::end_sessions_in(c, &user.id, &reason)?;
            Ok(user.id)
        });
        let user_id = match user_id {
            // A refused request leaves no trace, so the IdP may retry it with the same assertion after a fix.
            Err(GtrError::NotFound) => return Err(GtrError::NotFound),
            other => other?,
        };
        tracing::info!(user.id = %user_id, issuer = %issuer.issuer, "global token revocation for user {user_id}");
        Ok(user_id)
    }
}
