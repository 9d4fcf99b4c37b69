//! Use cases for users (and, later, groups), one transaction each. This is the **only** place that bumps a user's
//! token generation (`end_sessions`) and ends access (`deprovision`): a state change that ends access and its
//! generation bump commit together or not at all (DESIGN.md invariant 1; DECISIONS.md §1–2).

pub mod groups;
pub mod listing;
pub mod users;

use diesel::QueryResult;

use crate::db::{DbConnection, now, repo};

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

/// What ending a user's sessions did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The generation now in force: every token carrying a lower `tgen` is dead.
    pub generation: i64,
    /// Refresh-token families (logins) revoked by this change.
    pub families_revoked: usize,
}

/// Ends every session of a user whose account stays as it is: the token generation goes up by one, so every token
/// minted before stops validating, and every refresh-token family of the user is revoked. Call inside the
/// transaction of the change (DECISIONS.md §1).
pub fn end_sessions(conn: &mut DbConnection, user_id: &str, reason: &str) -> QueryResult<Ended> {
    let generation = repo::users::bump_generation(conn, user_id)?;
    let families_revoked = repo::tokens::revoke_user_families(conn, user_id, now(), reason)?;
    tracing::info!(
        user.id = %user_id,
        generation,
        families_revoked,
        reason,
        "ended sessions of user {user_id}"
    );
    Ok(Ended {
        generation,
        families_revoked,
    })
}

/// Ends one session (a refresh-token family, the `sid` of its access tokens) and nothing else of the user:
/// refresh-token reuse, RFC 7009 revocation of a refresh token (DECISIONS.md §3). Returns whether it was live.
pub fn end_session(conn: &mut DbConnection, sid: &str, reason: &str) -> QueryResult<bool> {
    let revoked = repo::tokens::revoke_family(conn, sid, now(), reason)? == 1;
    if revoked {
        tracing::info!(session.id = %sid, reason, "ended session {sid}");
    }
    Ok(revoked)
}

/// Ends access for a user whose row this transaction has just marked inactive (`Deactivate`) or tombstoned
/// (`Delete`).
pub fn deprovision(conn: &mut DbConnection, user_id: &str, how: Deprovision) -> QueryResult<Ended> {
    end_sessions(conn, user_id, how.reason())
}
