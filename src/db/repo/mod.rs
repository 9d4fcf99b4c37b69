//! Repository functions: synchronous, `(&mut DbConnection, …) -> QueryResult<…>`, one concern each. No business
//! rules here (those are in `lifecycle`), only SQL. Dialect differences are a small `match` on the connection.

pub mod audit;
pub mod console;
pub mod credentials;
pub mod fanout;
pub(crate) mod fixed;
pub mod groups;
pub mod keys;
pub mod list;
pub mod revocations;
pub mod tokens;
pub mod users;

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Bool, Text, Timestamp};
use diesel::sqlite::Sqlite;

use super::DbConnection;
use super::filter_sql::Bind;

/// The one row a query on a unique key returns, if any. Such queries load without `LIMIT`: diesel's `first()`
/// binds `LIMIT ?`, and SQLite re-plans a cached statement whose `LIMIT` parameter is bound again, on every run
/// (measured on a primary-key lookup: 9.2 µs with `first()`, 4.1 µs without).
pub(crate) fn unique<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// Serialises read-modify-write of one resource until the transaction ends
/// (docs/decisions/0007-write-serialisation.md). On SQLite the
/// single writer already serialises; on PostgreSQL this takes a transaction-scoped advisory lock on `kind:id`.
pub fn advisory_lock(conn: &mut DbConnection, kind: &str, id: &str) -> diesel::QueryResult<()> {
    if let DbConnection::Postgres(_) = conn {
        // A fixed statement, kept prepared (docs/decisions/0041-fewer-statements-per-write.md).
        fixed::execute(
            conn,
            "SELECT pg_advisory_xact_lock(?)",
            &[fixed::Param::BigInt(lock_key(kind, id))],
        )?;
    }
    Ok(())
}

/// A stable 64-bit key for an advisory lock (first 8 bytes of SHA-256 of `kind:id`).
fn lock_key(kind: &str, id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(kind)
        .chain_update(":")
        .chain_update(id)
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    i64::from_be_bytes(bytes)
}

/// Binds dynamic parameters to a raw query, in order.
fn bind_all<'a, DB>(mut q: BoxedSqlQuery<'a, DB, SqlQuery>, binds: &[Bind]) -> BoxedSqlQuery<'a, DB, SqlQuery>
where
    DB: diesel::backend::Backend
        + diesel::sql_types::HasSqlType<Text>
        + diesel::sql_types::HasSqlType<Bool>
        + diesel::sql_types::HasSqlType<BigInt>
        + diesel::sql_types::HasSqlType<Timestamp>,
    String: diesel::serialize::ToSql<Text, DB>,
    bool: diesel::serialize::ToSql<Bool, DB>,
    i64: diesel::serialize::ToSql<BigInt, DB>,
    NaiveDateTime: diesel::serialize::ToSql<Timestamp, DB>,
{
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind::<Text, _>(s.clone()),
            Bind::Bool(v) => q.bind::<Bool, _>(*v),
            Bind::BigInt(v) => q.bind::<BigInt, _>(*v),
            Bind::Timestamp(v) => q.bind::<Timestamp, _>(*v),
        };
    }
    q
}

pub(crate) fn sqlite_query(sql: String, binds: &[Bind]) -> BoxedSqlQuery<'static, Sqlite, SqlQuery> {
    bind_all(diesel::sql_query(sql).into_boxed::<Sqlite>(), binds)
}

pub(crate) fn pg_query(sql: String, binds: &[Bind]) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
    bind_all(diesel::sql_query(sql).into_boxed::<Pg>(), binds)
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("user", "a"), lock_key("user", "a"));
        assert_ne!(lock_key("user", "a"), lock_key("user", "b"));
        assert_ne!(lock_key("user", "a"), lock_key("group", "a"));
    }
}
