//! RFC 7009 revocation. An access token is revoked by its `jti` (kept until it would have expired); a refresh
//! token ends its whole family (`lifecycle::end_session`), which also makes the family's access tokens inactive
//! (their `sid`). Unknown, expired or already revoked tokens answer success too, so the endpoint is no oracle.
//! A client may revoke only tokens issued to it.

use chrono::DateTime;

use super::{Authority, Caller, OAuthError, REFRESH_PREFIX};
use crate::credentials::hash_secret;
use crate::db::{now, repo};
use crate::keys::LEEWAY_SECS;

impl Authority {
    pub fn revoke(&self, caller: &Caller, token: &str) -> Result<(), OAuthError> {
        if token.starts_with(REFRESH_PREFIX) {
            return self.revoke_refresh(caller, token);
        }
        let Ok(claims) = self.verify_access(token) else {
            // Invalid or expired: nothing left to revoke (RFC 7009 §2.2).
            return Ok(());
        };
        if claims.client_id != caller.client_id() {
            return Err(OAuthError::UnauthorizedClient(
                "this token was not issued to this client".into(),
            ));
        }
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
        let until = DateTime::from_timestamp(claims.exp + leeway, 0).map_or_else(now, |t| t.naive_utc());
        self.db.write(|c| {
            repo::tokens::revoke_jti(c, &claims.jti, until, now())?;
            let mut entry = crate::audit::Entry::new("token.revoke")
                .detail("kind", "access_token")
                .detail("jti", claims.jti.as_str())
                .detail("client_id", claims.client_id.as_str());
            entry = match claims.tgen {
                Some(_) => entry.user(&claims.sub, claims.preferred_username.as_deref()),
                None => entry.target("credential", &claims.sub, None),
            };
            crate::audit::record(entry);
            Ok::<_, OAuthError>(())
        })?;
        tracing::info!(token.jti = %claims.jti, client.id = %caller.client_id(), "revoked access token {}", claims.jti);
        Ok(())
    }

    fn revoke_refresh(&self, caller: &Caller, token: &str) -> Result<(), OAuthError> {
        let hash = hash_secret(token);
        let client = caller.client_id().to_owned();
        let ended = self.db.write(|c| {
            let Some((_, family)) = repo::tokens::find_token(c, &hash)? else {
                return Ok::<_, OAuthError>(None);
            };
            if family.client_id != client {
                return Err(OAuthError::UnauthorizedClient(
                    "this token was not issued to this client".into(),
                ));
            }
            crate::lifecycle::end_session(
                c,
                "token.revoke",
                &family.user_id,
                family.generation,
                &family.sid,
                "revoked by the client (RFC 7009)",
            )?;
            Ok(Some(family.sid))
        })?;
        if let Some(sid) = ended {
            tracing::info!(session.id = %sid, client.id = %client, "revoked refresh-token family {sid}");
        }
        Ok(())
    }
}
