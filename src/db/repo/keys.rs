//! SQL for `signing_keys`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::models::SigningKeyRow;
use crate::db::schema::signing_keys;

pub fn insert(conn: &mut DbConnection, row: &SigningKeyRow) -> QueryResult<()> {
    diesel::insert_into(signing_keys::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

/// Every key row, newest first.
pub fn all(conn: &mut DbConnection) -> QueryResult<Vec<SigningKeyRow>> {
    signing_keys::table
        .order((signing_keys::created.desc(), signing_keys::kid))
        .select(SigningKeyRow::as_select())
        .load(conn)
}

/// The keys a verifier may still meet: `next`, `active`, and `retired` ones still inside their publish window.
pub fn published(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<Vec<SigningKeyRow>> {
    signing_keys::table
        .filter(
            signing_keys::state
                .eq_any(["next", "active"])
                .or(signing_keys::state
                    .eq("retired")
                    .and(signing_keys::publish_until.gt(now))),
        )
        .order((signing_keys::created.desc(), signing_keys::kid))
        .select(SigningKeyRow::as_select())
        .load(conn)
}

/// The key of `alg` in `state` (`active` or `next`; at most one each, by a unique index).
pub fn in_state(conn: &mut DbConnection, alg: &str, state: &str) -> QueryResult<Option<SigningKeyRow>> {
    signing_keys::table
        .filter(signing_keys::alg.eq(alg))
        .filter(signing_keys::state.eq(state))
        .select(SigningKeyRow::as_select())
        .load(conn)
        .map(super::unique)
}

pub fn exists(conn: &mut DbConnection, kid: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        signing_keys::table.filter(signing_keys::kid.eq(kid)),
    ))
    .get_result(conn)
}

/// Moves the active key of `alg` to `retired`, published until `publish_until`.
pub fn retire_active(
    conn: &mut DbConnection,
    alg: &str,
    now: NaiveDateTime,
    publish_until: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(signing_keys::table)
        .filter(signing_keys::alg.eq(alg))
        .filter(signing_keys::state.eq("active"))
        .set((
            signing_keys::state.eq("retired"),
            signing_keys::retired_at.eq(now),
            signing_keys::publish_until.eq(publish_until),
        ))
        .execute(conn)
}

/// Makes the `next` key `kid` the active one.
pub fn activate(conn: &mut DbConnection, kid: &str, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(signing_keys::table)
        .filter(signing_keys::kid.eq(kid))
        .filter(signing_keys::state.eq("next"))
        .set((
            signing_keys::state.eq("active"),
            signing_keys::activated_at.eq(now),
        ))
        .execute(conn)
}

/// The key `kid`, in any state.
pub fn find(conn: &mut DbConnection, kid: &str) -> QueryResult<Option<SigningKeyRow>> {
    signing_keys::table
        .filter(signing_keys::kid.eq(kid))
        .select(SigningKeyRow::as_select())
        .load(conn)
        .map(super::unique)
}

/// The kids of every compromised key: trusted for nothing, published nowhere.
pub fn compromised(conn: &mut DbConnection) -> QueryResult<Vec<String>> {
    signing_keys::table
        .filter(signing_keys::state.eq(COMPROMISED))
        .select(signing_keys::kid)
        .order(signing_keys::kid)
        .load(conn)
}

/// The state of a key that must no longer be trusted.
pub const COMPROMISED: &str = "compromised";

/// Marks `kid` compromised as of `now`: out of the JWKS and of every verification at once.
pub fn mark_compromised(conn: &mut DbConnection, kid: &str, now: NaiveDateTime) -> QueryResult<usize> {
    let n = diesel::update(signing_keys::table)
        .filter(signing_keys::kid.eq(kid))
        .filter(signing_keys::state.ne(COMPROMISED))
        .set((
            signing_keys::state.eq(COMPROMISED),
            signing_keys::retired_at.eq(now),
            signing_keys::publish_until.eq(now),
        ))
        .execute(conn)?;
    if n > 0 {
        crate::state::changed(conn)?;
    }
    Ok(n)
}
