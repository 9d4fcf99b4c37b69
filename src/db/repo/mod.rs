//! Repository functions: synchronous, `(&mut DbConnection, …) -> QueryResult<…>`, one concern each. No business
//! rules here (those are in `lifecycle`), only SQL. Dialect differences are a small `match` on the connection.

pub mod credentials;
pub mod users;

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Bool, Text, Timestamp};
use diesel::sqlite::Sqlite;

use super::filter_sql::Bind;

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
