//! Token activity: when each user's tokens for each client were last minted, refreshed and introspected, kept in
//! memory and written in batches (every flush of the server, and at shutdown), so introspection never writes.
//! `offboard users show` reads it, so operators can tell live access from stale.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::db::repo::tokens::ActivityUpdate;
use crate::db::{Db, DbError, now, repo};

#[derive(Debug, Default)]
pub struct ActivityTracker {
    pending: Mutex<HashMap<(String, String), ActivityUpdate>>,
}

impl ActivityTracker {
    fn note(&self, user: &str, client: &str, f: impl FnOnce(&mut ActivityUpdate)) {
        if let Ok(mut pending) = self.pending.lock() {
            f(pending.entry((user.to_owned(), client.to_owned())).or_default());
        }
    }

    pub fn minted(&self, user: &str, client: &str) {
        self.note(user, client, |u| u.minted = Some(now()));
    }

    pub fn refreshed(&self, user: &str, client: &str) {
        self.note(user, client, |u| u.refreshed = Some(now()));
    }

    pub fn introspected(&self, user: &str, client: &str) {
        self.note(user, client, |u| u.introspected = Some(now()));
    }

    /// Writes what was recorded since the last flush, in one transaction; returns the rows written.
    pub fn flush(&self, db: &Db) -> Result<usize, DbError> {
        let batch: Vec<_> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        db.write(|c| repo::tokens::record_activity(c, &batch).map_err(DbError::from))?;
        Ok(batch.len())
    }
}

/// How long one revoked token (or login) presented again is recorded only once.
const PRESENTED_QUIET: std::time::Duration = std::time::Duration::from_secs(60);
/// Most distinct revoked tokens remembered at once; beyond, the oldest are forgotten.
const PRESENTED_REMEMBERED: usize = 10_000;

/// Throttles the audit record of revoked tokens presented again (`token.revoked_presented`): each token (by `jti`,
/// or login by `sid`) at most once a minute, and at most `per_minute` records a minute in all, so a client
/// hammering introspection with a dead token cannot fill the audit log. The first record after a full window says
/// how many were left out.
#[derive(Debug)]
pub struct RevokedPresented {
    seen: Mutex<HashMap<String, std::time::Instant>>,
    limiter: crate::audit::FailureLimiter,
}

impl RevokedPresented {
    pub fn new(per_minute: u32) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            limiter: crate::audit::FailureLimiter::new(per_minute),
        }
    }

    /// Whether `key` was recorded within the quiet period, so presenting it now would record nothing.
    pub fn quiet(&self, key: &str) -> bool {
        self.seen
            .lock()
            .is_ok_and(|seen| seen.get(key).is_some_and(|t| t.elapsed() < PRESENTED_QUIET))
    }

    /// Whether to record `key` presented now; `Some(n)` carries how many records were left out before.
    pub fn admit(&self, key: &str) -> Option<u64> {
        let mut seen = self.seen.lock().ok()?;
        let at = std::time::Instant::now();
        if seen
            .get(key)
            .is_some_and(|t| at.duration_since(*t) < PRESENTED_QUIET)
        {
            return None;
        }
        if seen.len() >= PRESENTED_REMEMBERED {
            seen.retain(|_, t| at.duration_since(*t) < PRESENTED_QUIET);
            if seen.len() >= PRESENTED_REMEMBERED {
                seen.clear();
            }
        }
        let suppressed = self.limiter.admit()?;
        seen.insert(key.to_owned(), at);
        Some(suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_token_is_recorded_once_a_minute_within_a_budget() {
        let p = RevokedPresented::new(2);
        assert_eq!(p.admit("a"), Some(0));
        assert_eq!(p.admit("a"), None);
        assert_eq!(p.admit("b"), Some(0));
        assert_eq!(p.admit("c"), None, "the budget of the minute is spent");
    }
}
