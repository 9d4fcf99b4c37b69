//! SQL for `users` and its side table `user_emails` (the folded email values IdPs filter on).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::{pg_query, sqlite_query};
use crate::db::DbConnection;
use crate::db::filter_sql::{Bind, Dialect, SqlFilter};
use crate::db::models::{NewUser, NewUserEmail, User, UserChange};
use crate::db::schema::{user_emails, users};

const USER_COLUMNS: &str = "id, user_name, user_name_folded, external_id, display_name, display_name_folded, \
                            active, resource, token_generation, version, created, last_modified, deleted_at";

/// An email as indexed: folded value and folded type.
pub type EmailKey = (String, Option<String>);

pub fn insert(conn: &mut DbConnection, user: &NewUser<'_>, emails: &[EmailKey]) -> QueryResult<()> {
    diesel::insert_into(users::table).values(user).execute(conn)?;
    replace_emails(conn, user.id, emails)
}

/// The live user with this id (tombstones excluded).
pub fn find_live(conn: &mut DbConnection, id: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::id.eq(id))
        .filter(users::deleted_at.is_null())
        .select(User::as_select())
        .first(conn)
        .optional()
}

/// The live user with this userName (compared folded).
pub fn find_live_by_user_name(conn: &mut DbConnection, user_name_folded: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::user_name_folded.eq(user_name_folded))
        .filter(users::deleted_at.is_null())
        .select(User::as_select())
        .first(conn)
        .optional()
}

/// Serialises read-modify-write of one user until the transaction ends (DECISIONS.md §9).
pub fn lock(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
    super::advisory_lock(conn, "user", id)
}

/// Compare-and-set update: changes the row only if it is still at `version`; returns rows changed (0 or 1).
pub fn update(
    conn: &mut DbConnection,
    id: &str,
    version: i64,
    change: &UserChange<'_>,
) -> QueryResult<usize> {
    diesel::update(users::table)
        .filter(users::id.eq(id))
        .filter(users::version.eq(version))
        .filter(users::deleted_at.is_null())
        .set((change, users::version.eq(version + 1)))
        .execute(conn)
}

/// Increments the token generation; returns the new value.
pub fn bump_generation(conn: &mut DbConnection, id: &str) -> QueryResult<i64> {
    diesel::update(users::table)
        .filter(users::id.eq(id))
        .set(users::token_generation.eq(users::token_generation + 1))
        .execute(conn)?;
    users::table
        .filter(users::id.eq(id))
        .select(users::token_generation)
        .first(conn)
}

/// Turns a live user into a tombstone: inactive, out of SCIM results, userName free for a new user.
pub fn tombstone(conn: &mut DbConnection, id: &str, version: i64, now: NaiveDateTime) -> QueryResult<usize> {
    let n = diesel::update(users::table)
        .filter(users::id.eq(id))
        .filter(users::version.eq(version))
        .filter(users::deleted_at.is_null())
        .set((
            users::deleted_at.eq(now),
            users::active.eq(false),
            users::last_modified.eq(now),
            users::version.eq(version + 1),
        ))
        .execute(conn)?;
    diesel::delete(user_emails::table.filter(user_emails::user_id.eq(id))).execute(conn)?;
    Ok(n)
}

pub fn replace_emails(conn: &mut DbConnection, id: &str, emails: &[EmailKey]) -> QueryResult<()> {
    diesel::delete(user_emails::table.filter(user_emails::user_id.eq(id))).execute(conn)?;
    // One statement per email: MultiConnection has no multi-row insert, and users have a handful.
    for (value, kind) in emails {
        let row = NewUserEmail {
            user_id: id,
            value_folded: value.clone(),
            type_folded: kind.clone(),
        };
        diesel::insert_into(user_emails::table)
            .values(&row)
            .execute(conn)?;
    }
    Ok(())
}

/// What a filtered list query returns.
#[derive(Debug)]
pub enum Listing {
    /// The SQL filter was exact: `total` matches, `rows` is the requested page.
    Page { total: usize, rows: Vec<User> },
    /// The SQL filter only narrowed: every candidate, in order, for the caller to filter and page.
    Candidates(Vec<User>),
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Live users matching `filter` (all when None), ordered by creation then id (stable across pages).
pub fn list(
    conn: &mut DbConnection,
    filter: impl Fn(Dialect, usize) -> Option<SqlFilter>,
    offset: usize,
    limit: usize,
) -> QueryResult<Listing> {
    let dialect = match conn {
        DbConnection::Sqlite(_) => Dialect::Sqlite,
        DbConnection::Postgres(_) => Dialect::Postgres,
    };
    let (clause, mut binds, exact) = match filter(dialect, 1) {
        Some(f) => (format!(" AND ({})", f.sql), f.binds, f.exact),
        None => (String::new(), Vec::new(), true),
    };
    let base = format!("FROM users WHERE deleted_at IS NULL{clause}");
    if !exact {
        let sql = format!("SELECT {USER_COLUMNS} {base} ORDER BY created, id");
        return load(conn, sql, &binds).map(Listing::Candidates);
    }
    let count_sql = format!("SELECT COUNT(*) AS n {base}");
    let total = match conn {
        DbConnection::Sqlite(c) => sqlite_query(count_sql, &binds).get_result::<Count>(c)?.n,
        DbConnection::Postgres(c) => pg_query(count_sql, &binds).get_result::<Count>(c)?.n,
    };
    let total = usize::try_from(total).unwrap_or(0);
    if limit == 0 || offset >= total {
        return Ok(Listing::Page {
            total,
            rows: Vec::new(),
        });
    }
    let n = binds.len();
    let page = match dialect {
        Dialect::Sqlite => " LIMIT ? OFFSET ?".to_owned(),
        Dialect::Postgres => format!(" LIMIT ${} OFFSET ${}", n + 1, n + 2),
    };
    binds.push(Bind::BigInt(i64::try_from(limit).unwrap_or(i64::MAX)));
    binds.push(Bind::BigInt(i64::try_from(offset).unwrap_or(i64::MAX)));
    let sql = format!("SELECT {USER_COLUMNS} {base} ORDER BY created, id{page}");
    let rows = load(conn, sql, &binds)?;
    Ok(Listing::Page { total, rows })
}

fn load(conn: &mut DbConnection, sql: String, binds: &[Bind]) -> QueryResult<Vec<User>> {
    match conn {
        DbConnection::Sqlite(c) => sqlite_query(sql, binds).load::<User>(c),
        DbConnection::Postgres(c) => pg_query(sql, binds).load::<User>(c),
    }
}
