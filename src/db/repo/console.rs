//! SQL for the operator console: its sessions (looked up by the hash of the session id, joined with the
//! credential that signed in so a revoked credential ends its sessions at once), the user search of its Users
//! page, and the audit entries of its live feed.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::models::{AuditRow, ConsoleSession, User};
use crate::db::schema::{audit_log, console_sessions, credentials, user_emails, user_holds, users};

pub fn insert_session(conn: &mut DbConnection, row: &ConsoleSession) -> QueryResult<()> {
    diesel::insert_into(console_sessions::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

/// The session with this id hash and the scopes of its credential, when that credential is still live.
pub fn find_session(conn: &mut DbConnection, id_hash: &str) -> QueryResult<Option<(ConsoleSession, String)>> {
    console_sessions::table
        .inner_join(credentials::table)
        .filter(console_sessions::id_hash.eq(id_hash))
        .filter(credentials::revoked_at.is_null())
        .select((ConsoleSession::as_select(), credentials::scopes))
        .load(conn)
        .map(super::unique)
}

/// Moves a session's `last_seen` forward.
pub fn touch_session(conn: &mut DbConnection, id_hash: &str, at: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(console_sessions::table)
        .filter(console_sessions::id_hash.eq(id_hash))
        .set(console_sessions::last_seen.eq(at))
        .execute(conn)
}

/// Deletes one session; returns rows deleted.
pub fn delete_session(conn: &mut DbConnection, id_hash: &str) -> QueryResult<usize> {
    diesel::delete(console_sessions::table.filter(console_sessions::id_hash.eq(id_hash))).execute(conn)
}

/// Deletes every session past its absolute expiry or idle since before `idle_cutoff`.
pub fn delete_expired(
    conn: &mut DbConnection,
    at: NaiveDateTime,
    idle_cutoff: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::delete(
        console_sessions::table.filter(
            console_sessions::expires
                .le(at)
                .or(console_sessions::last_seen.le(idle_cutoff)),
        ),
    )
    .execute(conn)
}

/// What the Users page filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Any,
    Active,
    Inactive,
    Held,
}

/// Live users whose folded userName or one of whose folded emails contains `folded_query` (every user when it is
/// empty), in userName order, at most `limit`.
pub fn search_users(
    conn: &mut DbConnection,
    folded_query: &str,
    status: StatusFilter,
    limit: i64,
) -> QueryResult<Vec<User>> {
    let mut q = users::table
        .filter(users::deleted_at.is_null())
        .into_boxed::<crate::db::MultiBackend>();
    if !folded_query.is_empty() {
        let pattern = format!("%{}%", like_escape(folded_query));
        let by_email = user_emails::table
            .filter(user_emails::value_folded.like(pattern.clone()).escape('\\'))
            .select(user_emails::user_id);
        q = q.filter(
            users::user_name_folded
                .like(pattern)
                .escape('\\')
                .or(users::id.eq_any(by_email)),
        );
    }
    let held = user_holds::table.select(user_holds::user_id);
    q = match status {
        StatusFilter::Any => q,
        StatusFilter::Active => q.filter(users::active.eq(true)),
        StatusFilter::Inactive => q.filter(users::active.eq(false)),
        StatusFilter::Held => q.filter(users::id.eq_any(held)),
    };
    q.order((users::user_name_folded.asc(), users::id.asc()))
        .limit(limit)
        .select(User::as_select())
        .load(conn)
}

/// `s` with the `LIKE` wildcards and the escape character escaped (escape character `\`).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The folded email values of a user.
pub fn emails_of(conn: &mut DbConnection, user_id: &str) -> QueryResult<Vec<String>> {
    user_emails::table
        .filter(user_emails::user_id.eq(user_id))
        .order(user_emails::value_folded.asc())
        .select(user_emails::value_folded)
        .load(conn)
}

/// The feed's entries after `after` with one of `actions`, in `seq` order, at most `limit`.
pub fn feed_after(
    conn: &mut DbConnection,
    after: i64,
    actions: &[&str],
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    audit_log::table
        .filter(audit_log::seq.gt(after))
        .filter(audit_log::action.eq_any(actions))
        .order(audit_log::seq.asc())
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)
}

/// The last `limit` entries with one of `actions`, in `seq` order.
pub fn feed_recent(conn: &mut DbConnection, actions: &[&str], limit: i64) -> QueryResult<Vec<AuditRow>> {
    let mut rows: Vec<AuditRow> = audit_log::table
        .filter(audit_log::action.eq_any(actions))
        .order(audit_log::seq.desc())
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)?;
    rows.reverse();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(super::like_escape(r"a%b_c\d"), r"a\%b\_c\\d");
    }
}
