//! Statements whose SQL text never changes, so diesel keeps each one prepared once per connection
//! (docs/decisions/0041-fewer-statements-per-write.md).
//!
//! diesel never caches an `UPDATE` built with its query builder (whatever its columns), raw SQL (`sql_query`), an
//! `IN` list of bound values, nor, on PostgreSQL, an insert with optional columns: each is parsed and planned
//! again on every call. A [`Fixed`] statement is SQL written once with a `?` for each bound value, in order; it
//! walks to the same text on every call (`?` on SQLite, `$n` on PostgreSQL), so diesel's statement cache keeps
//! it. It runs on the backend's own connection, never through `MultiConnection` (which walks a query twice).
//! Rows come back by column name (`QueryableByName`), so `RETURNING` and joins name their columns.

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamp, Untyped};
use diesel::sqlite::Sqlite;

use crate::db::DbConnection;

/// A value bound to a `?` of a [`Fixed`] statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Bool(bool),
    BigInt(i64),
    Time(NaiveDateTime),
}

/// SQL with one `?` per parameter (and no other `?`), and its parameters in order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fixed<'a> {
    sql: &'a str,
    params: &'a [Param<'a>],
}

impl<'a> Fixed<'a> {
    pub(crate) fn new(sql: &'a str, params: &'a [Param<'a>]) -> Self {
        debug_assert_eq!(sql.matches('?').count(), params.len(), "{sql}");
        Self { sql, params }
    }
}

impl<DB> QueryFragment<DB> for Fixed<'_>
where
    DB: Backend
        + diesel::sql_types::HasSqlType<Text>
        + diesel::sql_types::HasSqlType<Bool>
        + diesel::sql_types::HasSqlType<BigInt>
        + diesel::sql_types::HasSqlType<Timestamp>,
    str: diesel::serialize::ToSql<Text, DB>,
    bool: diesel::serialize::ToSql<Bool, DB>,
    i64: diesel::serialize::ToSql<BigInt, DB>,
    NaiveDateTime: diesel::serialize::ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut pieces = self.sql.split('?');
        out.push_sql(pieces.next().unwrap_or(""));
        for (param, piece) in self.params.iter().zip(pieces) {
            match param {
                Param::Text(v) => out.push_bind_param::<Text, str>(v)?,
                Param::OptText(v) => out.push_bind_param::<Nullable<Text>, Option<&str>>(v)?,
                Param::Bool(v) => out.push_bind_param::<Bool, bool>(v)?,
                Param::BigInt(v) => out.push_bind_param::<BigInt, i64>(v)?,
                Param::Time(v) => out.push_bind_param::<Timestamp, NaiveDateTime>(v)?,
            }
            out.push_sql(piece);
        }
        Ok(())
    }
}

impl QueryId for Fixed<'_> {
    // No type-level id: diesel's cache keys the statement by its SQL text (and bind types), the same every call.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Fixed<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Fixed<'_> {}

/// Runs a statement that returns no rows; returns the rows it changed.
pub(crate) fn execute(conn: &mut DbConnection, sql: &str, params: &[Param<'_>]) -> QueryResult<usize> {
    let q = Fixed::new(sql, params);
    match conn {
        DbConnection::Sqlite(c) => q.execute(c),
        DbConnection::Postgres(c) => q.execute(c),
    }
}

/// Runs a statement and reads its rows by column name.
pub(crate) fn load<T>(conn: &mut DbConnection, sql: &str, params: &[Param<'_>]) -> QueryResult<Vec<T>>
where
    T: QueryableByName<Sqlite> + QueryableByName<Pg> + 'static,
{
    let q = Fixed::new(sql, params);
    match conn {
        DbConnection::Sqlite(c) => q.load(c),
        DbConnection::Postgres(c) => q.load(c),
    }
}
