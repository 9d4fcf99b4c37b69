//! Use cases for users (and, later, groups), one transaction each. This is the **only** place that bumps a user's
//! token generation (`end_sessions`) and ends access (`deprovision`): a state change that ends access and its
//! generation bump commit together or not at all (DESIGN.md invariant 1; DECISIONS.md §1–2).

pub mod groups;
pub mod listing;
pub mod users;

use diesel::QueryResult;

use crate::db::{DbConnection, repo};

/// How a user loses access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deprovision {
    /// `active` set to false (SCIM PATCH or PUT, break-glass CLI). The account can come back.
    Deactivate,
    /// SCIM DELETE: the user becomes a tombstone.
    Delete,
}

impl Deprovision {
    fn reason(self) -> &'static str {
        match self {
            Self::Deactivate => "deactivated",
            Self::Delete => "deleted",
        }
    }
}

/// Ends every session of a user whose account stays as it is: the token generation goes up by one, so every token
/// minted before stops validating. Returns the new generation. Call inside the transaction of the change.
pub fn end_sessions(conn: &mut DbConnection, user_id: &str, reason: &str) -> QueryResult<i64> {
    let generation = repo::users::bump_generation(conn, user_id)?;
    tracing::info!(user.id = %user_id, generation, reason, "ended sessions of user {user_id}");
    Ok(generation)
}

/// Ends access for a user whose row this transaction has just marked inactive (`Deactivate`) or tombstoned
/// (`Delete`). Returns the new generation.
pub fn deprovision(conn: &mut DbConnection, user_id: &str, how: Deprovision) -> QueryResult<i64> {
    end_sessions(conn, user_id, how.reason())
}
