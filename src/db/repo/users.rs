//! SQL for `users` and its side table `user_emails` (the folded email values IdPs filter on).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::fixed::{self, Param};
use super::list::{SortColumn, Table, common_sort_column, text_sort_column};
use crate::db::DbConnection;
use crate::db::models::{NewUser, User, UserChange, UserHold};
use crate::db::schema::{user_emails, user_holds, users};
use crate::scim::list::SortKey;

const USER_COLUMNS: &str = "id, user_name, user_name_folded, external_id, display_name, display_name_folded, \
                            active, resource, token_generation, version, created, last_modified, deleted_at";

/// An email as indexed: folded value and folded type.
pub type EmailKey = (String, Option<String>);

/// The columns of a [`User`], as `RETURNING` and [`find_for_write`] name them.
const RETURNING_USER: &str = " RETURNING id, user_name, user_name_folded, external_id, display_name, \
                              display_name_folded, active, resource, token_generation, version, created, \
                              last_modified, deleted_at";

/// Inserts a new user and its email index rows; returns the row as stored. Fixed statements, kept prepared
/// (docs/decisions/0041-fewer-statements-per-write.md).
pub fn insert(conn: &mut DbConnection, user: &NewUser<'_>, emails: &[EmailKey]) -> QueryResult<User> {
    const INSERT: &str = "INSERT INTO users (id, user_name, user_name_folded, external_id, display_name, \
                          display_name_folded, active, resource, token_generation, version, created, last_modified) \
                          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let sql = format!("{INSERT}{RETURNING_USER}");
    let row = fixed::load::<User>(
        conn,
        &sql,
        &[
            Param::Text(user.id),
            Param::Text(user.user_name),
            Param::Text(user.user_name_folded),
            Param::OptText(user.external_id),
            Param::OptText(user.display_name),
            Param::OptText(user.display_name_folded),
            Param::Bool(user.active),
            Param::Text(user.resource),
            Param::BigInt(user.token_generation),
            Param::BigInt(user.version),
            Param::Time(user.created),
            Param::Time(user.last_modified),
        ],
    )?;
    // A new id has no index rows yet.
    insert_emails(conn, user.id, emails)?;
    super::unique(row).ok_or(diesel::result::Error::NotFound)
}

/// A live user as a write finds it under its lock: the row, the operator hold and the groups (id, displayName,
/// ordered as `groups::groups_of` orders them).
#[derive(Debug, Clone)]
pub struct ForWrite {
    pub user: User,
    pub hold: Option<UserHold>,
    pub groups: Vec<(String, String)>,
}

/// One row of [`find_for_write`]: the user, its hold's columns and one group (a row per group).
#[derive(QueryableByName)]
struct ForWriteRow {
    #[diesel(embed)]
    user: User,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    hold_reason: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    hold_held_at: Option<NaiveDateTime>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bool>)]
    hold_idp_active: Option<bool>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    group_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    group_name: Option<String>,
}

/// The live user with this id, its hold and its groups, in one statement (a row per group), for a write that
/// holds the user's lock ([`lock`]): what a PATCH, PUT or DELETE reads, and what it answers with (a write to a
/// user never changes its groups).
pub fn find_for_write(conn: &mut DbConnection, id: &str) -> QueryResult<Option<ForWrite>> {
    const SQL: &str = "SELECT u.id AS id, u.user_name AS user_name, u.user_name_folded AS user_name_folded, \
                       u.external_id AS external_id, u.display_name AS display_name, \
                       u.display_name_folded AS display_name_folded, u.active AS active, u.resource AS resource, \
                       u.token_generation AS token_generation, u.version AS version, u.created AS created, \
                       u.last_modified AS last_modified, u.deleted_at AS deleted_at, \
                       h.reason AS hold_reason, h.held_at AS hold_held_at, h.idp_active AS hold_idp_active, \
                       g.id AS group_id, g.display_name AS group_name \
                       FROM users u \
                       LEFT JOIN user_holds h ON h.user_id = u.id \
                       LEFT JOIN group_members m ON m.user_id = u.id \
                       LEFT JOIN groups g ON g.id = m.group_id \
                       WHERE u.id = ? AND u.deleted_at IS NULL \
                       ORDER BY g.display_name_folded, g.id";
    let rows = fixed::load::<ForWriteRow>(conn, SQL, &[Param::Text(id)])?;
    let mut found: Option<ForWrite> = None;
    for row in rows {
        let entry = found.get_or_insert_with(|| ForWrite {
            hold: match (row.hold_reason, row.hold_held_at, row.hold_idp_active) {
                (Some(reason), Some(held_at), Some(idp_active)) => Some(UserHold {
                    user_id: row.user.id.clone(),
                    reason,
                    held_at,
                    idp_active,
                }),
                _ => None,
            },
            user: row.user,
            groups: Vec::new(),
        });
        if let (Some(id), Some(name)) = (row.group_id, row.group_name) {
            entry.groups.push((id, name));
        }
    }
    Ok(found)
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

/// The statement of a compare-and-set update of the indexed columns and the stored resource: every column
/// written, `None` as NULL, so its text never changes.
const UPDATE: &str = "UPDATE users SET user_name = ?, user_name_folded = ?, external_id = ?, display_name = ?, \
                      display_name_folded = ?, active = ?, resource = ?, last_modified = ?, version = version + 1";

/// The `WHERE` of a compare-and-set write: the live user `id`, still at `version`.
const WHERE_AT_VERSION: &str = " WHERE id = ? AND version = ? AND deleted_at IS NULL";

/// The parameters of [`UPDATE`], then `rest`.
fn change_params<'a>(change: &'a UserChange<'a>, rest: &[Param<'a>]) -> Vec<Param<'a>> {
    let mut params = vec![
        Param::Text(change.user_name),
        Param::Text(change.user_name_folded),
        Param::OptText(change.external_id.as_deref()),
        Param::OptText(change.display_name.as_deref()),
        Param::OptText(change.display_name_folded.as_deref()),
        Param::Bool(change.active),
        Param::Text(change.resource),
        Param::Time(change.last_modified),
    ];
    params.extend_from_slice(rest);
    params
}

/// Compare-and-set update: changes the row only if it is still at `version`; returns the new row (`None`: not
/// at that version, or not live).
pub fn update(
    conn: &mut DbConnection,
    id: &str,
    version: i64,
    change: &UserChange<'_>,
) -> QueryResult<Option<User>> {
    let sql = format!("{UPDATE}{WHERE_AT_VERSION}{RETURNING_USER}");
    let params = change_params(change, &[Param::Text(id), Param::BigInt(version)]);
    let row = fixed::load::<User>(conn, &sql, &params).map(super::unique)?;
    // An inactive user's tokens are inactive: cached state that saw it active is stale.
    if row.is_some() && !change.active {
        crate::state::changed(conn)?;
    }
    Ok(row)
}

/// [`update`] of a user being deactivated, raising its token generation in the same statement (and recording
/// when, `generation_at`, for the revocation snapshot); returns the new row. Called only by `lifecycle`
/// (ARCHITECTURE.md invariant 1).
pub fn update_and_bump_generation(
    conn: &mut DbConnection,
    id: &str,
    version: i64,
    change: &UserChange<'_>,
) -> QueryResult<Option<User>> {
    let sql = format!(
        "{UPDATE}, token_generation = token_generation + 1, generation_at = ?{WHERE_AT_VERSION}{RETURNING_USER}"
    );
    let params = change_params(
        change,
        &[
            Param::Time(change.last_modified),
            Param::Text(id),
            Param::BigInt(version),
        ],
    );
    let row = fixed::load::<User>(conn, &sql, &params).map(super::unique)?;
    if row.is_some() {
        crate::state::changed(conn)?;
    }
    Ok(row)
}

/// The token generation of a row, as `RETURNING` gives it.
#[derive(QueryableByName)]
struct Generation {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    token_generation: i64,
}

/// Increments the token generation and records when (`generation_at`, for the revocation snapshot); returns the
/// new value.
pub fn bump_generation(conn: &mut DbConnection, id: &str) -> QueryResult<i64> {
    const SQL: &str = "UPDATE users SET token_generation = token_generation + 1, generation_at = ? WHERE id = ? \
                       RETURNING token_generation";
    let rows = fixed::load::<Generation>(conn, SQL, &[Param::Time(crate::db::now()), Param::Text(id)])?;
    crate::state::changed(conn)?;
    super::unique(rows)
        .map(|g| g.token_generation)
        .ok_or(diesel::result::Error::NotFound)
}

/// Turns the live user `id` at `version` into a tombstone (inactive, out of SCIM results, its userName free
/// for a new user, its email index rows gone) and raises its token generation
/// in the same statement; returns the new generation (`None`: not at that version, or not live). Called only by
/// `lifecycle` (ARCHITECTURE.md invariant 1).
pub fn tombstone_and_bump_generation(
    conn: &mut DbConnection,
    id: &str,
    version: i64,
    now: NaiveDateTime,
) -> QueryResult<Option<i64>> {
    const SQL: &str = "UPDATE users SET deleted_at = ?, active = ?, last_modified = ?, version = version + 1, \
                       token_generation = token_generation + 1, generation_at = ? \
                       WHERE id = ? AND version = ? AND deleted_at IS NULL RETURNING token_generation";
    let params = [
        Param::Time(now),
        Param::Bool(false),
        Param::Time(now),
        Param::Time(now),
        Param::Text(id),
        Param::BigInt(version),
    ];
    let generation = fixed::load::<Generation>(conn, SQL, &params)
        .map(super::unique)?
        .map(|g| g.token_generation);
    delete_emails(conn, id)?;
    if generation.is_some() {
        crate::state::changed(conn)?;
    }
    Ok(generation)
}

/// The userName of a user, live or tombstoned.
pub fn user_name(conn: &mut DbConnection, id: &str) -> QueryResult<Option<String>> {
    users::table
        .filter(users::id.eq(id))
        .select(users::user_name)
        .load(conn)
        .map(super::unique)
}

/// Replaces the email index rows of a user.
pub fn replace_emails(conn: &mut DbConnection, id: &str, emails: &[EmailKey]) -> QueryResult<()> {
    delete_emails(conn, id)?;
    insert_emails(conn, id, emails)
}

fn delete_emails(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
    diesel::delete(user_emails::table.filter(user_emails::user_id.eq(id)))
        .execute(conn)
        .map(drop)
}

/// One fixed statement per email (users have a handful): each stays prepared, where a multi-row insert's text
/// would change with the count.
fn insert_emails(conn: &mut DbConnection, id: &str, emails: &[EmailKey]) -> QueryResult<()> {
    const SQL: &str = "INSERT INTO user_emails (user_id, value_folded, type_folded) VALUES (?, ?, ?)";
    for (value, kind) in emails {
        fixed::execute(
            conn,
            SQL,
            &[
                Param::Text(id),
                Param::Text(value),
                Param::OptText(kind.as_deref()),
            ],
        )?;
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
