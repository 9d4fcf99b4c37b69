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
