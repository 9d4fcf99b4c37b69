//! SQL for `credentials` (API clients). Lookups are by name or by secret hash; secrets never reach this module.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::models::{Credential, NewCredential};
use crate::db::schema::credentials;

pub fn insert(conn: &mut DbConnection, new: &NewCredential<'_>) -> QueryResult<()> {
    diesel::insert_into(credentials::table)
        .values(new)
        .execute(conn)?;
    // A token's client may come into being (service tokens name theirs).
    crate::state::changed(conn)
}

pub fn find_by_hash(conn: &mut DbConnection, secret_hash: &str) -> QueryResult<Option<Credential>> {
    credentials::table
        .filter(credentials::secret_hash.eq(secret_hash))
        .select(Credential::as_select())
        .load(conn)
        .map(super::unique)
}

pub fn find_by_name(conn: &mut DbConnection, name: &str) -> QueryResult<Option<Credential>> {
    credentials::table
        .filter(credentials::name.eq(name))
        .select(Credential::as_select())
        .load(conn)
        .map(super::unique)
}

pub fn list(conn: &mut DbConnection) -> QueryResult<Vec<Credential>> {
    credentials::table
        .order(credentials::created.asc())
        .select(Credential::as_select())
        .load(conn)
}

/// Marks a live credential revoked; returns rows changed (0 when absent or already revoked).
pub fn revoke(conn: &mut DbConnection, name: &str, now: NaiveDateTime) -> QueryResult<usize> {
    let n = diesel::update(credentials::table)
        .filter(credentials::name.eq(name))
        .filter(credentials::revoked_at.is_null())
        .set(credentials::revoked_at.eq(now))
        .execute(conn)?;
    if n > 0 {
        crate::state::changed(conn)?;
    }
    Ok(n)
}

/// Records when credentials were last used (batched by the caller).
pub fn touch(conn: &mut DbConnection, used: &[(String, NaiveDateTime)]) -> QueryResult<()> {
    for (name, at) in used {
        diesel::update(credentials::table)
            .filter(credentials::name.eq(name))
            .set(credentials::last_used_at.eq(*at))
            .execute(conn)?;
    }
    Ok(())
}
