//! SQL of the revocation snapshot (`GET /ssf/snapshot`): the revocations that can still kill an unexpired access
//! token, each kind in key order after a cursor, by index.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::{outbox, refresh_families, revoked_jtis, signing_keys, users};

/// The newest outbox id (0 when the outbox is empty): every SET queued later has a larger one. Reads the
/// primary key's end.
pub fn outbox_position(conn: &mut DbConnection) -> QueryResult<i64> {
    outbox::table
        .select(diesel::dsl::max(outbox::id))
        .get_result::<Option<i64>>(conn)
        .map(Option::unwrap_or_default)
}

/// `(user id, generation, when it went up)` of users whose generation went up after `since`, in id order after
/// `after`.
pub fn raised_generations(
    conn: &mut DbConnection,
    since: NaiveDateTime,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<(String, i64, Option<NaiveDateTime>)>> {
    users::table
        .filter(users::generation_at.gt(since))
        .filter(users::id.gt(after))
        .order(users::id.asc())
        .limit(limit)
        .select((users::id, users::token_generation, users::generation_at))
        .load(conn)
}

/// `(sid, when it was revoked)` of logins revoked after `since`, in sid order after `after`.
pub fn ended_sessions(
    conn: &mut DbConnection,
    since: NaiveDateTime,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<(String, Option<NaiveDateTime>)>> {
    refresh_families::table
        .filter(refresh_families::revoked_at.gt(since))
        .filter(refresh_families::sid.gt(after))
        .order(refresh_families::sid.asc())
        .limit(limit)
        .select((refresh_families::sid, refresh_families::revoked_at))
        .load(conn)
}

/// `(jti, until when)` of access tokens revoked by `jti` that expire after `at`, in `jti` order after `after`.
pub fn revoked_tokens(
    conn: &mut DbConnection,
    at: NaiveDateTime,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<(String, NaiveDateTime)>> {
    revoked_jtis::table
        .filter(revoked_jtis::expires_at.gt(at))
        .filter(revoked_jtis::jti.gt(after))
        .order(revoked_jtis::jti.asc())
        .limit(limit)
        .select((revoked_jtis::jti, revoked_jtis::expires_at))
        .load(conn)
}

/// `(kid, when it was declared compromised)` of keys compromised after `since`, in kid order after `after`.
pub fn compromised_keys(
    conn: &mut DbConnection,
    since: NaiveDateTime,
    after: &str,
    limit: i64,
) -> QueryResult<Vec<(String, Option<NaiveDateTime>)>> {
    signing_keys::table
        .filter(signing_keys::state.eq(super::keys::COMPROMISED))
        .filter(signing_keys::retired_at.gt(since))
        .filter(signing_keys::kid.gt(after))
        .order(signing_keys::kid.asc())
        .limit(limit)
        .select((signing_keys::kid, signing_keys::retired_at))
        .load(conn)
}
