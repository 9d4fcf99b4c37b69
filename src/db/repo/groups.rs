//! SQL for `groups` and `group_members`. Members are rows, so a 10 000-member group is patched by inserting and
//! deleting the rows that change, never by rewriting the group.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::list::{SortColumn, Table, common_sort_column, text_sort_column};
use crate::db::DbConnection;
use crate::db::models::{Group, GroupChange, NewGroup, NewMember};
use crate::db::schema::{group_members, groups, users};
use crate::scim::list::SortKey;

/// Rows per multi-row statement (SQLite allows 32 766 parameters; two per member).
const CHUNK: usize = 1000;

pub fn insert(conn: &mut DbConnection, group: &NewGroup<'_>) -> QueryResult<()> {
    diesel::insert_into(groups::table)
        .values(group)
        .execute(conn)
        .map(drop)
}

pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Group>> {
    groups::table
        .find(id)
        .select(Group::as_select())
        .load(conn)
        .map(super::unique)
}

/// Serialises read-modify-write of one group until the transaction ends.
pub fn lock(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
    super::advisory_lock(conn, "group", id)
}

/// Compare-and-set update of the group row; returns rows changed (0 or 1).
pub fn update(
    conn: &mut DbConnection,
    id: &str,
    version: i64,
    change: &GroupChange<'_>,
) -> QueryResult<usize> {
    diesel::update(groups::table)
        .filter(groups::id.eq(id))
        .filter(groups::version.eq(version))
        .set((change, groups::version.eq(version + 1)))
        .execute(conn)
}

/// Marks a change of members only: new version and modification time.
pub fn touch(conn: &mut DbConnection, id: &str, version: i64, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(groups::table)
        .filter(groups::id.eq(id))
        .filter(groups::version.eq(version))
        .set((groups::version.eq(version + 1), groups::last_modified.eq(now)))
        .execute(conn)
}

/// Deletes a group; its member rows go with it (ON DELETE CASCADE, and explicitly for SQLite files opened
/// without foreign keys).
pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<usize> {
    diesel::delete(group_members::table.filter(group_members::group_id.eq(id))).execute(conn)?;
    diesel::delete(groups::table.find(id)).execute(conn)
}

/// A member as shown in the group: user id and a display string (displayName, else userName).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub display: String,
}

/// Every member of a group, ordered by user id.
pub fn members(conn: &mut DbConnection, group_id: &str) -> QueryResult<Vec<Member>> {
    let rows: Vec<(String, Option<String>, String)> = group_members::table
        .inner_join(users::table)
        .filter(group_members::group_id.eq(group_id))
        .order(group_members::user_id.asc())
        .select((group_members::user_id, users::display_name, users::user_name))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(user_id, display, user_name)| Member {
            user_id,
            display: display.unwrap_or(user_name),
        })
        .collect())
}

/// The ids of every member of a group.
pub fn member_ids(conn: &mut DbConnection, group_id: &str) -> QueryResult<Vec<String>> {
    group_members::table
        .filter(group_members::group_id.eq(group_id))
        .order(group_members::user_id.asc())
        .select(group_members::user_id)
        .load(conn)
}

/// Which of `ids` are members of the group.
pub fn members_among(conn: &mut DbConnection, group_id: &str, ids: &[String]) -> QueryResult<Vec<String>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        found.extend(
            group_members::table
                .filter(group_members::group_id.eq(group_id))
                .filter(group_members::user_id.eq_any(chunk))
                .select(group_members::user_id)
                .load::<String>(conn)?,
        );
    }
    Ok(found)
}

/// The live users among `ids`, as they would show as members (id and display string).
pub fn live_users_among(conn: &mut DbConnection, ids: &[String]) -> QueryResult<Vec<Member>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let rows: Vec<(String, Option<String>, String)> = users::table
            .filter(users::id.eq_any(chunk))
            .filter(users::deleted_at.is_null())
            .select((users::id, users::display_name, users::user_name))
            .load(conn)?;
        found.extend(rows.into_iter().map(|(user_id, display, user_name)| Member {
            user_id,
            display: display.unwrap_or(user_name),
        }));
    }
    Ok(found)
}

/// Adds members that are not yet members (the caller passes only new ones).
pub fn add_members(conn: &mut DbConnection, group_id: &str, user_ids: &[String]) -> QueryResult<()> {
    for chunk in user_ids.chunks(CHUNK) {
        let rows: Vec<NewMember<'_>> = chunk.iter().map(|u| NewMember { group_id, user_id: u }).collect();
        // Multi-row insert needs the concrete connection: diesel's MultiConnection has none.
        match conn {
            DbConnection::Sqlite(c) => diesel::insert_into(group_members::table)
                .values(&rows)
                .execute(c)?,
            DbConnection::Postgres(c) => diesel::insert_into(group_members::table)
                .values(&rows)
                .execute(c)?,
        };
    }
    Ok(())
}

pub fn remove_members(conn: &mut DbConnection, group_id: &str, user_ids: &[String]) -> QueryResult<()> {
    for chunk in user_ids.chunks(CHUNK) {
        diesel::delete(
            group_members::table
                .filter(group_members::group_id.eq(group_id))
                .filter(group_members::user_id.eq_any(chunk)),
        )
        .execute(conn)?;
    }
    Ok(())
}

/// Removes a user from every group (SCIM DELETE of the user, which read its groups with it); returns how many
/// memberships went.
pub fn remove_user_everywhere(conn: &mut DbConnection, user_id: &str) -> QueryResult<usize> {
    diesel::delete(group_members::table.filter(group_members::user_id.eq(user_id))).execute(conn)
}

/// A group a user belongs to: group id and displayName.
pub type GroupRef = (String, String);

/// The groups of each of `user_ids` (absent key: none), ordered by displayName.
pub fn groups_of(conn: &mut DbConnection, user_ids: &[&str]) -> QueryResult<HashMap<String, Vec<GroupRef>>> {
    let mut out: HashMap<String, Vec<GroupRef>> = HashMap::new();
    let base = group_members::table
        .inner_join(groups::table)
        .order((groups::display_name_folded.asc(), groups::id.asc()))
        .select((group_members::user_id, groups::id, groups::display_name));
    for chunk in user_ids.chunks(CHUNK) {
        // One user (every PUT, PATCH) with `=`: diesel caches that statement. Many (a list page) on the backend's
        // own connection: PostgreSQL binds them as one array (`= ANY($1)`), a statement it keeps prepared, where
        // `MultiConnection` renders an `IN (…)` list prepared again on every call (as SQLite still does).
        let rows: Vec<(String, String, String)> = match (chunk, &mut *conn) {
            ([one], conn) => base.filter(group_members::user_id.eq(*one)).load(conn)?,
            (many, DbConnection::Postgres(c)) => base.filter(group_members::user_id.eq_any(many)).load(c)?,
            (many, DbConnection::Sqlite(c)) => base.filter(group_members::user_id.eq_any(many)).load(c)?,
        };
        for (user_id, group_id, name) in rows {
            out.entry(user_id).or_default().push((group_id, name));
        }
    }
    Ok(out)
}

const GROUP_COLUMNS: &str =
    "id, display_name, display_name_folded, external_id, resource, version, created, last_modified";

/// The `groups` table as list statements see it (no tombstones: a deleted group is gone).
pub const TABLE: Table = Table {
    name: "groups",
    columns: GROUP_COLUMNS,
    live: "1=1",
};

const DISPLAY_NAME: SortColumn = SortColumn {
    name: "display_name_folded",
    text: true,
    nullable: false,
};
const EXTERNAL_ID: SortColumn = SortColumn {
    name: "external_id",
    text: true,
    nullable: true,
};

/// The column a `sortBy` orders groups by in SQL: `displayName` (folded), `externalId`, `id`, `meta.created`,
/// `meta.lastModified`. Anything else (e.g. `members`) is sorted in Rust.
pub fn sort_column(key: &SortKey<'_>) -> Option<SortColumn> {
    text_sort_column(key, "displayName", DISPLAY_NAME, true)
        .or_else(|| text_sort_column(key, "externalId", EXTERNAL_ID, false))
        .or_else(|| common_sort_column(key))
}
