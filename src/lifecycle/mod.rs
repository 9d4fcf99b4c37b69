//! Use cases for users and groups, one transaction each. This is the **only** place that bumps a user's token
//! generation (`end_sessions`), ends access (`deprovision`) and queues the SETs that report it: a state change
//! that ends access, its generation bump, the revocation of the user's logins and the record of its SETs commit
//! together or not at all (ARCHITECTURE.md invariant 1; docs/decisions/0001-one-path-ends-access.md), with the
//! audit entry that records them.

pub mod groups;
pub mod listing;
pub mod represent;
pub mod users;

use chrono::NaiveDateTime;
use diesel::QueryResult;

use crate::audit::{self, Entry};
use crate::db::models::{User, UserChange};
use crate::db::{DbConnection, now, repo};
use crate::fanout::{self, Event, Initiator};

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

    /// The `reason_admin` of the `session-revoked` SET (non-empty, as the CAEP interop profile requires).
    fn reason_admin(self) -> &'static str {
        match self {
            Self::Deactivate => "account deactivated by the identity provider or an administrator",
            Self::Delete => "account deleted by the identity provider",
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

/// What the caller already knows of a user whose access changes, so it is not read again: its id, its userName
/// (for the audit entry) and its stored resource (for the SETs' `email` subject).
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub id: &'a str,
    pub user_name: &'a str,
    pub resource: &'a str,
}

/// The audit entry of a change to a user's access: `action` on the user, with the generation in force after it.
/// The userName is read when the caller does not know it.
fn access_entry(
    conn: &mut DbConnection,
    action: &'static str,
    user_id: &str,
    user_name: Option<&str>,
    generation: i64,
    txn: &str,
    sets_queued: usize,
) -> QueryResult<Entry> {
    let read;
    let user_name = if let Some(name) = user_name {
        Some(name)
    } else {
        read = repo::users::user_name(conn, user_id)?;
        read.as_deref()
    };
    Ok(Entry::new(action)
        .user(user_id, user_name)
        .detail("generation", generation)
        .detail("txn", txn)
        .detail("sets_queued", sets_queued))
}

/// Records an ending of access: the generation bump, the logins revoked and the SETs queued.
#[expect(clippy::too_many_arguments, reason = "one audit entry's fields, private")]
fn record_ended(
    conn: &mut DbConnection,
    action: &'static str,
    user_id: &str,
    user_name: Option<&str>,
    ended: Ended,
    reason: &str,
    txn: &str,
    sets_queued: usize,
) -> QueryResult<()> {
    let entry = access_entry(
        conn,
        action,
        user_id,
        user_name,
        ended.generation,
        txn,
        sets_queued,
    )?
    .detail("previous_generation", ended.generation - 1)
    .detail("refresh_families_revoked", ended.families_revoked)
    .detail("reason", reason);
    audit::record(entry);
    Ok(())
}

/// The write that ends a user's access as a whole, in the statement that also raises its generation
/// (docs/decisions/0041-fewer-statements-per-write.md).
#[derive(Debug, Clone, Copy)]
pub enum Ending<'a> {
    /// The user at `version` is written with `change`, which deactivates it.
    Deactivate {
        version: i64,
        change: &'a UserChange<'a>,
    },
    /// The user at `version` becomes a tombstone at `at`.
    Delete { version: i64, at: NaiveDateTime },
}

impl Ending<'_> {
    fn how(self) -> Deprovision {
        match self {
            Self::Deactivate { .. } => Deprovision::Deactivate,
            Self::Delete { .. } => Deprovision::Delete,
        }
    }
}

/// Raises the generation and revokes every login of the user, telling no one yet. `ending`: the generation goes
/// up in the statement that deactivates or tombstones the user (`None` returned when that user is not at the
/// version given: its lock was broken); else on its own. Also returns the deactivated row.
fn cut_off(
    conn: &mut DbConnection,
    user_id: &str,
    reason: &str,
    ending: Option<Ending<'_>>,
) -> QueryResult<Option<(Ended, Option<User>)>> {
    let (generation, user) = match ending {
        None => (repo::users::bump_generation(conn, user_id)?, None),
        Some(Ending::Deactivate { version, change }) => {
            match repo::users::update_and_bump_generation(conn, user_id, version, change)? {
                Some(user) => (user.token_generation, Some(user)),
                None => return Ok(None),
            }
        }
        Some(Ending::Delete { version, at }) => {
            match repo::users::tombstone_and_bump_generation(conn, user_id, version, at)? {
                Some(generation) => (generation, None),
                None => return Ok(None),
            }
        }
    };
    let families_revoked = repo::tokens::revoke_user_families(conn, user_id, now(), reason)?;
    tracing::info!(
        user.id = %user_id,
        generation,
        families_revoked,
        reason,
        "ended sessions of user {user_id}"
    );
    Ok(Some((
        Ended {
            generation,
            families_revoked,
        },
        user,
    )))
}

/// Ends every session of a user whose account stays as it is: the token generation goes up by one, so every token
/// minted before stops validating, every refresh-token family of the user is revoked, and a `session-revoked`
/// SET is queued for every stream, all in the caller's transaction (docs/decisions/0001-one-path-ends-access.md).
/// `txn` links the SETs of one change.
pub fn end_sessions(conn: &mut DbConnection, user_id: &str, reason: &str, txn: &str) -> QueryResult<Ended> {
    let (ended, _) = cut_off(conn, user_id, reason, None)?.ok_or(diesel::result::Error::NotFound)?;
    let event = Event::SessionsRevoked {
        reason,
        initiator: Initiator::Admin,
    };
    let queued = fanout::enqueue(conn, user_id, None, txn, ended.generation, &[event])?;
    record_ended(
        conn,
        "user.end_sessions",
        user_id,
        None,
        ended,
        reason,
        txn,
        queued,
    )?;
    Ok(ended)
}

/// Queues the news that one access token was revoked by its `jti` (RFC 7009), inside the caller's transaction
/// (which recorded the revocation): a `session-revoked` SET whose subject is that token, kept by services that
/// verify locally until `exp`. `sub` and `tgen` are the token's user and generation; a service token (no `tgen`)
/// concerns no user. Returns the change's `txn` and the SETs queued.
pub fn token_revoked(
    conn: &mut DbConnection,
    sub: &str,
    tgen: Option<i64>,
    jti: &str,
    exp: i64,
    reason: &str,
) -> QueryResult<(String, usize)> {
    let event = Event::TokenRevoked {
        jti,
        exp,
        reason,
        initiator: Initiator::Policy,
    };
    let txn = fanout::new_txn();
    let queued = match tgen {
        Some(tgen) => fanout::enqueue(conn, sub, None, &txn, tgen, &[event])?,
        None => fanout::enqueue_unattributed(conn, &txn, &[event])?,
    };
    Ok((txn, queued))
}

/// Declares signing key `kid` compromised (`keys::compromise_with`) and, in the same transaction, queues the SET
/// that tells services caching the JWKS. Returns what changed.
pub fn compromise_key(
    db: &crate::db::Db,
    kek: &crate::keys::kek::Kek,
    config: &crate::config::Config,
    kid: &str,
    reason: &str,
) -> Result<crate::keys::Compromise, crate::keys::KeyError> {
    crate::keys::compromise_with(db, kek, config, kid, reason, |c| {
        let txn = fanout::new_txn();
        let queued = fanout::enqueue_unattributed(c, &txn, &[Event::KeyCompromised { kid, reason }])?;
        Ok((txn, queued))
    })
}

/// Ends one session (a refresh-token family, the `sid` of its access tokens) and nothing else of the user:
/// refresh-token reuse, RFC 7009 revocation of a refresh token
/// (docs/decisions/0002-refresh-token-reuse-ends-one-session.md). Queues a `session-revoked` SET
/// for that session, and records it as `action` (`token.reuse_detected`, `token.revoke`). Returns whether it was
/// live.
pub fn end_session(
    conn: &mut DbConnection,
    action: &'static str,
    user_id: &str,
    generation: i64,
    sid: &str,
    reason: &str,
) -> QueryResult<bool> {
    let revoked = repo::tokens::revoke_family(conn, sid, now(), reason)? == 1;
    if revoked {
        tracing::info!(session.id = %sid, user.id = %user_id, reason, "ended session {sid}");
        let event = Event::SessionRevoked {
            sid,
            reason,
            initiator: Initiator::Policy,
        };
        let txn = fanout::new_txn();
        let queued = fanout::enqueue(conn, user_id, None, &txn, generation, &[event])?;
        let entry = access_entry(conn, action, user_id, None, generation, &txn, queued)?
            .detail("kind", "refresh_token")
            .detail("sid", sid)
            .detail("reason", reason);
        audit::record(entry);
    }
    Ok(revoked)
}

/// Ends access for a user as this transaction deactivates it or makes it a tombstone (`ending`, written in the
/// statement that raises the generation): new generation, logins revoked, and `account-disabled` (or
/// `account-purged`) plus `session-revoked` queued for every stream under one `txn`. Returns `None` when the
/// user was not at the version `ending` names (its lock was broken), else what ended and the deactivated row.
pub fn deprovision(
    conn: &mut DbConnection,
    user: Known<'_>,
    ending: Ending<'_>,
) -> QueryResult<Option<(Ended, Option<User>)>> {
    let how = ending.how();
    let Some((ended, row)) = cut_off(conn, user.id, how.reason(), Some(ending))? else {
        return Ok(None);
    };
    let account = match how {
        Deprovision::Deactivate => Event::AccountDisabled,
        Deprovision::Delete => Event::AccountPurged,
    };
    let sessions = Event::SessionsRevoked {
        reason: how.reason_admin(),
        initiator: Initiator::Admin,
    };
    let txn = fanout::new_txn();
    let queued = fanout::enqueue(
        conn,
        user.id,
        Some(user.resource),
        &txn,
        ended.generation,
        &[account, sessions],
    )?;
    let action = match how {
        Deprovision::Deactivate => "user.deactivate",
        Deprovision::Delete => "user.delete",
    };
    record_ended(
        conn,
        action,
        user.id,
        Some(user.user_name),
        ended,
        how.reason(),
        &txn,
        queued,
    )?;
    Ok(Some((ended, row)))
}

/// Records a reactivation: the generation stays (old tokens stay dead); `account-enabled` is queued.
pub fn reactivated(conn: &mut DbConnection, user: Known<'_>, generation: i64) -> QueryResult<()> {
    let user_id = user.id;
    tracing::info!(user.id = %user_id, "reactivated user {user_id}");
    let txn = fanout::new_txn();
    let queued = fanout::enqueue(
        conn,
        user_id,
        Some(user.resource),
        &txn,
        generation,
        &[Event::AccountEnabled],
    )?;
    audit::record(access_entry(
        conn,
        "user.reactivate",
        user_id,
        Some(user.user_name),
        generation,
        &txn,
        queued,
    )?);
    Ok(())
}
