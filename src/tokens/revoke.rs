//! RFC 7009 revocation. An access token is revoked by its `jti` (kept until it would have expired); a refresh
//! token ends its whole family (`lifecycle::end_session`), which also makes the family's access tokens inactive
//! (their `sid`). Unknown, expired or already revoked tokens answer success too, so the endpoint is no oracle.
//! A client may revoke only tokens issued to it.
//!
//! Only a change of state is recorded: the first revocation of a `jti` (or of a live family) writes its
//! `token.revoke` entry; a repeat answers success and writes nothing. Each instance remembers the `jti`s it saw
//! revoked (bounded, until they expire), so a client repeating a revocation costs no database work at all; a
//! repeat of one revoked elsewhere costs one statement that changes nothing.

use std::collections::HashMap;
use std::sync::Mutex;

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
        if self.revoked.contains(&claims.jti) {
            return Ok(());
        }
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
        let until = DateTime::from_timestamp(claims.exp + leeway, 0).map_or_else(now, |t| t.naive_utc());
        let first = self.db.write(|c| {
            if !repo::tokens::revoke_jti(c, &claims.jti, until, now())? {
                return Ok::<_, OAuthError>(false);
            }
            let mut entry = crate::audit::Entry::new("token.revoke")
                .detail("kind", "access_token")
                .detail("jti", claims.jti.as_str())
                .detail("client_id", claims.client_id.as_str());
            // Services that verify tokens locally learn it from the fan-out: a `session-revoked` SET whose subject
            // is this one token (`jwt_id`), kept by them until the token's `exp`.
            let (txn, queued) = crate::lifecycle::token_revoked(
                c,
                &claims.sub,
                claims.tgen,
                &claims.jti,
                claims.exp + leeway,
                "access token revoked by the client (RFC 7009)",
            )?;
            entry = match claims.tgen {
                Some(_) => entry.user(&claims.sub, claims.preferred_username.as_deref()),
                None => entry.target("credential", &claims.sub, None),
            };
            crate::audit::record(entry.detail("txn", txn.as_str()).detail("sets_queued", queued));
            Ok(true)
        })?;
        self.revoked.insert(&claims.jti, claims.exp + leeway);
        if first {
            tracing::info!(token.jti = %claims.jti, client.id = %caller.client_id(), "revoked access token {}", claims.jti);
        }
        Ok(())
    }

    fn revoke_refresh(&self, caller: &Caller, token: &str) -> Result<(), OAuthError> {
        let hash = hash_secret(token);
        let client = caller.client_id().to_owned();
        // A repeat (the family was revoked before) changes nothing: answer without taking the writer.
        let known = self
            .db
            .read(|c| repo::tokens::find_token(c, &hash).map_err(OAuthError::from))?;
        match known {
            None => return Ok(()),
            Some((_, family)) if family.revoked_at.is_some() && family.client_id == client => return Ok(()),
            Some(_) => {}
        }
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

/// The `jti`s this instance saw revoked, until they expire: a repeated revocation answers from here. Bounded:
/// when full, expired ones go first, and if none has expired it starts over (a repeat then costs one statement).
pub struct RevokedJtis {
    capacity: usize,
    entries: Mutex<HashMap<String, i64>>,
}

impl RevokedJtis {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn contains(&self, jti: &str) -> bool {
        self.entries.lock().is_ok_and(|e| e.contains_key(jti))
    }

    fn insert(&self, jti: &str, exp: i64) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            let now = chrono::Utc::now().timestamp();
            entries.retain(|_, exp| *exp >= now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(jti.to_owned(), exp);
    }
}
