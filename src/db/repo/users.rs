//! SQL for `users` and its side table `user_emails` (the folded email values IdPs filter on).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::list::{SortColumn, Table, common_sort_column, text_sort_column};
use crate::db::DbConnection;
use crate::db::models::{NewUser, NewUserEmail, User, UserChange, UserHold};
use crate::db::schema::{user_emails, user_holds, users};
use crate::scim::list::SortKey;

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
        .load(conn)
        .map(super::unique)
}

/// The live user with this folded userName (unique among live users).
pub fn find_live_by_folded_name(conn: &mut DbConnection, folded: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::user_name_folded.eq(folded))
        .filter(users::deleted_at.is_null())
        .select(User::as_select())
        .load(conn)
        .map(super::unique)
}

/// How a live user is looked up with its groups.
#[derive(Debug, Clone, Copy)]
pub enum LiveKey<'a> {
    Id(&'a str),
    /// The folded userName (unique among live users).
    FoldedName(&'a str),
}

/// A live user and its groups (id, displayName).
pub type UserWithGroups = (User, Vec<(String, String)>);

/// The live user with this id or folded userName and its groups, ordered as `groups::groups_of` orders them
/// (folded displayName, then id), in one statement (a row per group): one round trip on PostgreSQL where a user
/// and then its groups took two. Built with the query builder, so each backend keeps it prepared, and run on the
/// backend's own connection, which skips `MultiConnection`'s second walk of the query
/// (docs/decisions/0040-one-statement-reads.md).
pub fn find_live_with_groups(
    conn: &mut DbConnection,
    key: LiveKey<'_>,
) -> QueryResult<Option<UserWithGroups>> {
    use crate::db::schema::{group_members, groups};
    // A macro, not a value: `User::as_select()` is typed by the backend it runs on.
    macro_rules! by {
        ($column:expr, $value:expr) => {
            users::table
                .left_join(group_members::table.on(group_members::user_id.eq(users::id)))
                .left_join(groups::table.on(groups::id.eq(group_members::group_id)))
                .filter($column.eq($value))
                .filter(users::deleted_at.is_null())
                .order((groups::display_name_folded.asc(), groups::id.asc()))
                .select((
                    User::as_select(),
                    groups::id.nullable(),
                    groups::display_name.nullable(),
                ))
        };
    }
    type Row = (User, Option<String>, Option<String>);
    let rows: Vec<Row> = match (conn, key) {
        (DbConnection::Sqlite(c), LiveKey::Id(v)) => by!(users::id, v).load(c)?,
        (DbConnection::Sqlite(c), LiveKey::FoldedName(v)) => by!(users::user_name_folded, v).load(c)?,
        (DbConnection::Postgres(c), LiveKey::Id(v)) => by!(users::id, v).load(c)?,
        (DbConnection::Postgres(c), LiveKey::FoldedName(v)) => by!(users::user_name_folded, v).load(c)?,
    };
    let mut user = None;
    let mut groups = Vec::new();
    for (row, group_id, group_name) in rows {
        if let (Some(id), Some(name)) = (group_id, group_name) {
            groups.push((id, name));
        }
        user.get_or_insert(row);
    }
    Ok(user.map(|u| (u, groups)))
}

/// The user with this id, live or tombstoned.
pub fn find_any(conn: &mut DbConnection, id: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::id.eq(id))
        .select(User::as_select())
        .load(conn)
        .map(super::unique)
}

/// Every user, live or tombstoned, who had this folded userName: the live one first, then the most recently
/// deleted.
pub fn find_any_by_folded_name(conn: &mut DbConnection, folded: &str) -> QueryResult<Vec<User>> {
    let mut rows: Vec<User> = users::table
        .filter(users::user_name_folded.eq(folded))
        .select(User::as_select())
        .load(conn)?;
    rows.sort_by(|a, b| match (a.deleted_at, b.deleted_at) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    });
    Ok(rows)
}

/// Live users with this externalId (exact; not unique by schema).
pub fn find_live_by_external_id(conn: &mut DbConnection, external_id: &str) -> QueryResult<Vec<User>> {
    users::table
        .filter(users::external_id.eq(external_id))
        .filter(users::deleted_at.is_null())
        .select(User::as_select())
        .limit(2)
        .load(conn)
}

/// Up to `limit` live users with an email of this folded value (a limit of 2 tells one from many; a larger one
/// gives candidates for a stricter match in Rust).
pub fn live_with_email(conn: &mut DbConnection, folded: &str, limit: i64) -> QueryResult<Vec<User>> {
    let ids = user_emails::table
        .filter(user_emails::value_folded.eq(folded))
        .select(user_emails::user_id);
    users::table
        .filter(users::id.eq_any(ids))
        .filter(users::deleted_at.is_null())
        .select(User::as_select())
        .order(users::id)
        .limit(limit)
        .load(conn)
}

/// Serialises read-modify-write of one user until the transaction ends
/// (docs/decisions/0007-write-serialisation.md).
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
    let n = diesel::update(users::table)
        .filter(users::id.eq(id))
        .filter(users::version.eq(version))
        .filter(users::deleted_at.is_null())
        .set((change, users::version.eq(version + 1)))
        .execute(conn)?;
    // An inactive user's tokens are inactive: cached state that saw it active is stale.
    if n > 0 && !change.active {
        crate::state::changed(conn)?;
    }
    Ok(n)
}

/// Increments the token generation and records when (`generation_at`, for the revocation snapshot); returns the
/// new value.
pub fn bump_generation(conn: &mut DbConnection, id: &str) -> QueryResult<i64> {
    diesel::update(users::table)
        .filter(users::id.eq(id))
        .set((
            users::token_generation.eq(users::token_generation + 1),
            users::generation_at.eq(crate::db::now()),
        ))
        .execute(conn)?;
    crate::state::changed(conn)?;
    users::table
        .filter(users::id.eq(id))
        .select(users::token_generation)
        .load(conn)
        .and_then(|rows| super::unique(rows).ok_or(diesel::result::Error::NotFound))
}

/// Turns a live user into a tombstone: inactive, out of SCIM results, userName free for a new user.
/// The userName of a user, live or tombstoned.
pub fn user_name(conn: &mut DbConnection, id: &str) -> QueryResult<Option<String>> {
    users::table
        .filter(users::id.eq(id))
        .select(users::user_name)
        .load(conn)
        .map(super::unique)
}

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
    if n > 0 {
        crate::state::changed(conn)?;
    }
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

/// Every live user, by userName.
pub fn all_live(conn: &mut DbConnection) -> QueryResult<Vec<User>> {
    users::table
        .filter(users::deleted_at.is_null())
        .order(users::user_name_folded.asc())
        .select(User::as_select())
        .load(conn)
}

/// Every operator hold.
pub fn all_holds(conn: &mut DbConnection) -> QueryResult<Vec<UserHold>> {
    user_holds::table.select(UserHold::as_select()).load(conn)
}

/// The operator hold on a user, if any.
pub fn hold(conn: &mut DbConnection, user_id: &str) -> QueryResult<Option<UserHold>> {
    user_holds::table
        .filter(user_holds::user_id.eq(user_id))
        .select(UserHold::as_select())
        .load(conn)
        .map(super::unique)
}

pub fn insert_hold(conn: &mut DbConnection, hold: &UserHold) -> QueryResult<()> {
    diesel::insert_into(user_holds::table)
        .values(hold)
        .execute(conn)
        .map(drop)
}

/// Records what the identity provider asked `active` to be while the user is held.
pub fn set_hold_wish(conn: &mut DbConnection, user_id: &str, idp_active: bool) -> QueryResult<usize> {
    diesel::update(user_holds::table)
        .filter(user_holds::user_id.eq(user_id))
        .set(user_holds::idp_active.eq(idp_active))
        .execute(conn)
}

/// Lifts a hold; returns rows deleted (0 or 1).
pub fn delete_hold(conn: &mut DbConnection, user_id: &str) -> QueryResult<usize> {
    diesel::delete(user_holds::table.filter(user_holds::user_id.eq(user_id))).execute(conn)
}

/// The `users` table as list statements see it: live users only.
pub const TABLE: Table = Table {
    name: "users",
    columns: USER_COLUMNS,
    live: "deleted_at IS NULL",
};

const USER_NAME: SortColumn = SortColumn {
    name: "user_name_folded",
    text: true,
    nullable: false,
};
const DISPLAY_NAME: SortColumn = SortColumn {
    name: "display_name_folded",
    text: true,
    nullable: true,
};
const EXTERNAL_ID: SortColumn = SortColumn {
    name: "external_id",
    text: true,
    nullable: true,
};

/// The column a `sortBy` orders by in SQL, when the attribute has one: `userName` and `displayName` (folded),
/// `externalId`, `id`, `meta.created`, `meta.lastModified`. Anything else is sorted in Rust.
pub fn sort_column(key: &SortKey<'_>) -> Option<SortColumn> {
    text_sort_column(key, "userName", USER_NAME, true)
        .or_else(|| text_sort_column(key, "displayName", DISPLAY_NAME, true))
        .or_else(|| text_sort_column(key, "externalId", EXTERNAL_ID, false))
        .or_else(|| common_sort_column(key))
}
