//! SCIM User use cases: create, read, list, replace (PUT), patch, delete. Each write is one transaction that
//! serialises on the user (docs/decisions/0007-write-serialisation.md), and any transition that ends access goes
//! through [`super::deprovision`] in that same transaction. Only real transitions count: IdPs re-send `active:
//! true` and unchanged values on every sync cycle, and a PUT without `active` keeps the current value.

use serde_json::{Map, Value, json};

use super::listing::{Purpose, Resource, Source};
use crate::audit::{self, Entry};
use crate::db::filter_sql::{Dialect, SqlFilter, users_where};
use crate::db::models::{NewUser, User, UserChange, UserHold};
use crate::db::repo::groups::GroupRef;
use crate::db::repo::list::{SortColumn, Table};
use crate::db::repo::users::{EmailKey, ForWrite, LiveKey};
use crate::db::{Db, DbConnection, format_time, now, repo};
use crate::error::AppError;
use crate::scim::filter::Filter;
use crate::scim::list::SortKey;
use crate::scim::schema::{ResourceType, fold, registry};
use crate::scim::{ScimError, patch};

fn rt() -> &'static ResourceType {
    registry().user()
}

/// The weak ETag of a version, also `meta.version`.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// True when an `If-Match` header value allows a change to a resource at `version` (RFC 7232 §3.1, weak
/// comparison: SCIM versions are weak validators).
pub fn if_match_allows(header: &str, version: i64) -> bool {
    let current = version.to_string();
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == current)
}

fn check_if_match(if_match: Option<&str>, user: &User) -> Result<(), AppError> {
    match if_match {
        Some(h) if !if_match_allows(h, user.version) => Err(AppError::PreconditionFailed),
        _ => Ok(()),
    }
}

/// A user with the groups it belongs to (the computed, read-only `groups` attribute).
#[derive(Debug, Clone)]
pub struct UserView {
    pub user: User,
    pub groups: Vec<GroupRef>,
}

impl UserView {
    /// Loads the groups of many users in one query.
    fn load_many(c: &mut DbConnection, users: Vec<User>) -> Result<Vec<Self>, AppError> {
        let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
        let mut groups = repo::groups::groups_of(c, &ids)?;
        Ok(users
            .into_iter()
            .map(|user| {
                let groups = groups.remove(&user.id).unwrap_or_default();
                Self { user, groups }
            })
            .collect())
    }
}

/// The full SCIM representation of a user: the stored resource plus `id`, `meta` and `groups`.
pub fn to_scim(view: &UserView, base_url: &str) -> Value {
    let user = &view.user;
    let mut obj = if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&user.resource) {
        m
    } else {
        tracing::error!(user.id = %user.id, "stored resource of user {} is not a JSON object", user.id);
        Map::new()
    };
    obj.insert("id".into(), Value::String(user.id.clone()));
    obj.insert("active".into(), Value::Bool(user.active));
    obj.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": format_time(user.created),
            "lastModified": format_time(user.last_modified),
            "location": format!("{base_url}/Users/{}", user.id),
            "version": etag(user.version),
        }),
    );
    if !view.groups.is_empty() {
        let groups = view
            .groups
            .iter()
            .map(|(id, name)| {
                json!({"value": id, "$ref": format!("{base_url}/Groups/{id}"), "display": name, "type": "direct"})
            })
            .collect();
        obj.insert("groups".into(), Value::Array(groups));
    }
    Value::Object(obj)
}

/// The indexed columns of a stored (normalised) resource.
struct Indexed {
    user_name: String,
    user_name_folded: String,
    external_id: Option<String>,
    display_name: Option<String>,
    display_name_folded: Option<String>,
    active: bool,
    emails: Vec<EmailKey>,
    resource: String,
}

fn indexed(stored: &Value) -> Result<Indexed, AppError> {
    let text = |key: &str| stored.get(key).and_then(Value::as_str).map(str::to_owned);
    let user_name = text("userName")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ScimError::invalid_value("userName is required"))?;
    let display_name = text("displayName");
    let emails = email_keys(stored);
    Ok(Indexed {
        user_name_folded: fold(&user_name),
        user_name,
        external_id: text("externalId"),
        display_name_folded: display_name.as_deref().map(fold),
        display_name,
        active: stored.get("active").and_then(Value::as_bool).unwrap_or(true),
        emails,
        resource: serde_json::to_string(stored).map_err(AppError::internal)?,
    })
}

/// The email index rows of a stored resource: folded value and folded type of each email with a value.
fn email_keys(stored: &Value) -> Vec<EmailKey> {
    stored
        .get("emails")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|e| {
                    let value = e.get("value")?.as_str()?;
                    Some((fold(value), e.get("type").and_then(Value::as_str).map(fold)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `active` in a stored resource.
fn set_active(stored: &mut Value, active: bool) {
    if let Value::Object(m) = stored {
        m.insert("active".into(), Value::Bool(active));
    }
}

/// POST /Users.
pub fn create(db: &Db, input: &Value) -> Result<UserView, AppError> {
    let mut stored = rt().normalize(input)?;
    let active = stored.get("active").and_then(Value::as_bool).unwrap_or(true);
    set_active(&mut stored, active);
    let ix = indexed(&stored)?;
    let id = uuid::Uuid::now_v7().to_string();
    let at = now();
    let user = db.write(|c| {
        let new = NewUser {
            id: &id,
            user_name: &ix.user_name,
            user_name_folded: &ix.user_name_folded,
            external_id: ix.external_id.as_deref(),
            display_name: ix.display_name.as_deref(),
            display_name_folded: ix.display_name_folded.as_deref(),
            active: ix.active,
            resource: &ix.resource,
            token_generation: 0,
            version: 1,
            created: at,
            last_modified: at,
        };
        let user = repo::users::insert(c, &new, &ix.emails).map_err(user_name_conflict)?;
        audit::record(
            write_entry("scim.user.create", &id, &ix.user_name)
                .detail("changes", audit::changes(None, Some(&stored))),
        );
        // A new user belongs to no group yet.
        Ok::<_, AppError>(UserView {
            user,
            groups: Vec::new(),
        })
    })?;
    tracing::info!(user.id = %user.user.id, user.name = %user.user.user_name, "created user {}", user.user.id);
    Ok(user)
}

fn user_name_conflict(e: diesel::result::Error) -> AppError {
    match e {
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _) => {
            ScimError::conflict("userName is already taken by another user").into()
        }
        other => other.into(),
    }
}

/// GET /Users/{id}: live users only (tombstones answer 404).
pub fn get(db: &Db, id: &str) -> Result<UserView, AppError> {
    db.read(|c| find_live_view(c, LiveKey::Id(id)))?
        .ok_or_else(not_found)
}

/// The live user and its groups, in one statement.
fn find_live_view(c: &mut DbConnection, key: LiveKey<'_>) -> Result<Option<UserView>, AppError> {
    Ok(repo::users::find_live_with_groups(c, key)?.map(|(user, groups)| UserView { user, groups }))
}

fn not_found() -> AppError {
    ScimError::not_found("no such user").into()
}

/// Loads the user for a read-modify-write, with its hold and groups (one statement), holding its lock until the
/// transaction ends.
fn load_for_update(c: &mut DbConnection, id: &str, if_match: Option<&str>) -> Result<ForWrite, AppError> {
    repo::users::lock(c, id)?;
    let found = repo::users::find_for_write(c, id)?.ok_or_else(not_found)?;
    check_if_match(if_match, &found.user)?;
    Ok(found)
}

/// The error of a compare-and-set write that found its user changed: the lock makes it impossible; the version
/// guard catches a bug that breaks the lock.
fn changed_under_lock(id: &str) -> AppError {
    AppError::internal(format!("user {id} changed under its lock"))
}

/// The audit entry of a write to user `id` (SCIM or CLI), with when the request arrived.
fn write_entry(action: &'static str, id: &str, user_name: &str) -> Entry {
    Entry::new(action).user(id, Some(user_name)).received_now()
}

/// The stored resource of `user` with its `active` flag, as SCIM shows it.
fn current_resource(user: &User) -> Result<Value, AppError> {
    let mut current: Value = serde_json::from_str(&user.resource).map_err(AppError::internal)?;
    set_active(&mut current, user.active);
    Ok(current)
}

/// Records a write that changed nothing.
fn record_unchanged(action: &'static str, user: &User, held_wish: Option<bool>) {
    audit::record(with_hold(
        write_entry(action, &user.id, &user.user_name).detail("changes", Value::Object(Map::new())),
        held_wish,
    ));
}

/// Notes on a write to a held user what the identity provider asked `active` to be (stored, not applied).
fn with_hold(entry: Entry, held_wish: Option<bool>) -> Entry {
    match held_wish {
        Some(wish) => entry.detail("held", true).detail("idp_active", wish),
        None => entry,
    }
}

/// Applies an operator hold to a write of the identity provider: `wish` is the `active` it asked for (`None`:
/// it did not say, its earlier wish stands). The wish is remembered for the release; the stored resource stays
/// inactive. Returns the wish in force, or `None` when the user is not held.
fn hold_write(
    c: &mut DbConnection,
    hold: Option<&UserHold>,
    wish: Option<bool>,
    stored: &mut Value,
) -> Result<Option<bool>, AppError> {
    let Some(hold) = hold else { return Ok(None) };
    let wish = wish.unwrap_or(hold.idp_active);
    if wish != hold.idp_active {
        repo::users::set_hold_wish(c, &hold.user_id, wish)?;
    }
    set_active(stored, false);
    Ok(Some(wish))
}

/// Writes a new stored resource for `before` (whose groups are `groups`), records the write as `action` and runs
/// the transition it implies. Returns the new row with its groups (a write to a user never changes them).
fn store(
    c: &mut DbConnection,
    action: &'static str,
    reason: Option<&str>,
    before: &User,
    groups: Vec<GroupRef>,
    stored: &Value,
    held_wish: Option<bool>,
) -> Result<UserView, AppError> {
    let ix = indexed(stored)?;
    let old = current_resource(before)?;
    let mut entry = write_entry(action, &before.id, &ix.user_name)
        .detail("changes", audit::changes(Some(&old), Some(stored)));
    if let Some(reason) = reason {
        entry = entry.detail("reason", reason);
    }
    audit::record(with_hold(entry, held_wish));
    let change = UserChange {
        user_name: &ix.user_name,
        user_name_folded: &ix.user_name_folded,
        external_id: ix.external_id.clone(),
        display_name: ix.display_name.clone(),
        display_name_folded: ix.display_name_folded.clone(),
        active: ix.active,
        resource: &ix.resource,
        last_modified: now(),
    };
    let known = super::Known {
        id: &before.id,
        user_name: &ix.user_name,
        resource: &ix.resource,
    };
    let user = if before.active && !ix.active {
        // The row is written in the statement that raises the generation (docs/decisions/0041-fewer-statements-per-write.md).
        let ending = super::Ending::Deactivate {
            version: before.version,
            change: &change,
        };
        super::deprovision(c, known, ending)
            .map_err(user_name_conflict)?
            .and_then(|(_, user)| user)
    } else {
        repo::users::update(c, &before.id, before.version, &change).map_err(user_name_conflict)?
    }
    .ok_or_else(|| changed_under_lock(&before.id))?;
    // Most changes (deactivation above all) leave the emails alone: rewrite their index rows only when they moved.
    let old_emails = serde_json::from_str::<Value>(&before.resource)
        .map(|v| email_keys(&v))
        .unwrap_or_default();
    if old_emails != ix.emails {
        repo::users::replace_emails(c, &before.id, &ix.emails)?;
    }
    if !before.active && ix.active {
        // Reactivation never lowers the generation: tokens from before the deactivation stay dead.
        super::reactivated(c, known, before.token_generation)?;
    }
    Ok(UserView { user, groups })
}

/// PUT /Users/{id}: replaces every writable attribute. `active` left out keeps its current value.
pub fn replace(db: &Db, id: &str, input: &Value, if_match: Option<&str>) -> Result<UserView, AppError> {
    let mut stored = rt().normalize_replacement(input)?;
    db.write(|c| {
        let ForWrite {
            user: before,
            hold,
            groups,
        } = load_for_update(c, id, if_match)?;
        crate::scim::schema::check_indexed_changes(&stored, &current_resource(&before)?)?;
        let asked = stored.get("active").and_then(Value::as_bool);
        let held_wish = hold_write(c, hold.as_ref(), asked, &mut stored)?;
        if asked.is_none() && held_wish.is_none() {
            set_active(&mut stored, before.active);
        }
        if same_resource(&before, &stored) {
            record_unchanged("scim.user.replace", &before, held_wish);
            return Ok(UserView { user: before, groups });
        }
        store(c, "scim.user.replace", None, &before, groups, &stored, held_wish)
    })
}

/// PATCH /Users/{id}: all operations or none. The body is parsed (at most `max_ops` operations) before the
/// write transaction begins.
pub fn patch(
    db: &Db,
    id: &str,
    body: &Value,
    if_match: Option<&str>,
    max_ops: usize,
) -> Result<UserView, AppError> {
    let ops = patch::parse_request(body, max_ops)?;
    db.write(|c| {
        let ForWrite {
            user: before,
            hold,
            groups,
        } = load_for_update(c, id, if_match)?;
        let current = current_resource(&before)?;
        // A held user's operations apply to what the identity provider believes (its own `active`), so an
        // operation on `active` is told from one that leaves it alone.
        let mut seen = current.clone();
        if let Some(h) = &hold {
            set_active(&mut seen, h.idp_active);
        }
        let mut stored = patch::apply(rt(), &seen, &ops)?;
        if stored.get("active").and_then(Value::as_bool).is_none() {
            // `remove active` leaves the flag unassigned (RFC 7644 §3.5.2.2). Access is what an unassigned flag
            // must not grant: it reads as inactive, and ends the user's sessions like any deactivation.
            set_active(&mut stored, false);
        }
        let asked = stored.get("active").and_then(Value::as_bool);
        let held_wish = hold_write(c, hold.as_ref(), asked, &mut stored)?;
        if stored == current {
            record_unchanged("scim.user.patch", &before, held_wish);
            return Ok(UserView { user: before, groups });
        }
        store(c, "scim.user.patch", None, &before, groups, &stored, held_wish)
    })
}

fn same_resource(before: &User, stored: &Value) -> bool {
    serde_json::from_str::<Value>(&before.resource).is_ok_and(|mut v| {
        set_active(&mut v, before.active);
        &v == stored
    })
}

/// DELETE /Users/{id}: tombstones the user and ends its access in one transaction.
pub fn delete(db: &Db, id: &str, if_match: Option<&str>) -> Result<(), AppError> {
    db.write(|c| {
        let ForWrite {
            user: before,
            hold,
            groups,
        } = load_for_update(c, id, if_match)?;
        // The groups were read with the user, under its lock.
        if !groups.is_empty() {
            repo::groups::remove_user_everywhere(c, id)?;
            tracing::info!(user.id = %id, "removed deleted user {id} from {} groups", groups.len());
        }
        audit::record(
            write_entry("scim.user.delete", id, &before.user_name).detail("groups_left", groups.len()),
        );
        if hold.is_some() {
            repo::users::delete_hold(c, id)?;
        }
        let known = super::Known {
            id,
            user_name: &before.user_name,
            resource: &before.resource,
        };
        let ending = super::Ending::Delete {
            version: before.version,
            at: now(),
        };
        super::deprovision(c, known, ending)?.ok_or_else(|| changed_under_lock(id))?;
        Ok::<_, AppError>(())
    })?;
    tracing::info!(user.id = %id, "deleted user {id}");
    Ok(())
}

/// Ends every session of a live user inside the caller's transaction; the account stays active (Global Token
/// Revocation, `offboard users revoke-tokens`).
pub fn end_sessions_in(c: &mut DbConnection, id: &str, reason: &str) -> Result<super::Ended, AppError> {
    repo::users::lock(c, id)?;
    repo::users::find_live(c, id)?.ok_or_else(not_found)?;
    Ok(super::end_sessions(c, id, reason, &crate::fanout::new_txn())?)
}

/// Ends every session of a live user in its own transaction.
pub fn revoke_tokens(db: &Db, id: &str, reason: &str) -> Result<super::Ended, AppError> {
    db.write(|c| end_sessions_in(c, id, reason))
}

/// What the break-glass deactivation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The user was active: deactivated now (this generation in force) and held.
    Deactivated(i64),
    /// The user was inactive already: held, so the identity provider cannot reactivate it.
    HeldInactive,
    /// A hold was in place already; nothing changed.
    AlreadyHeld,
}

/// The break-glass deactivation (`offboard users deactivate`): the same transition as a SCIM PATCH of
/// `active:false`, plus an operator hold. While held the user stays inactive whatever the identity provider sends
/// (its other changes still apply; its `active` is remembered for the release), SCIM shows `active: false` and no
/// token is minted, refreshed or exchanged for it. Recorded as `user.hold` with the reason.
pub fn deactivate(db: &Db, id: &str, reason: &str) -> Result<Held, AppError> {
    db.write(|c| {
        let ForWrite {
            user: before,
            hold,
            groups,
        } = load_for_update(c, id, None)?;
        if hold.is_some() {
            return Ok(Held::AlreadyHeld);
        }
        let hold = UserHold {
            user_id: id.to_owned(),
            reason: reason.to_owned(),
            held_at: now(),
            // Not held until now, so the flag is what the identity provider last asked for.
            idp_active: before.active,
        };
        repo::users::insert_hold(c, &hold)?;
        audit::record(
            Entry::new("user.hold")
                .user(id, Some(&before.user_name))
                .detail("reason", reason)
                .detail("idp_active", before.active),
        );
        tracing::info!(user.id = %id, reason, "held user {id} inactive by an administrator");
        if !before.active {
            return Ok(Held::HeldInactive);
        }
        let mut stored = current_resource(&before)?;
        set_active(&mut stored, false);
        let view = store(
            c,
            "admin.user.deactivate",
            Some(reason),
            &before,
            groups,
            &stored,
            None,
        )?;
        tracing::info!(user.id = %id, reason, "deactivated user {id} by an administrator");
        Ok(Held::Deactivated(view.user.token_generation))
    })
}

/// What lifting a hold did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The identity provider last asked for `active: true`: the user is active again (`account-enabled` queued;
    /// the generation stays, so tokens from before the hold stay dead).
    Reactivated,
    /// The identity provider last asked for `active: false` (or nothing since): the user stays inactive.
    StaysInactive,
    /// The user was not held.
    NotHeld,
}

/// Lifts an operator hold (`offboard users release`), restoring the `active` the identity provider last asked
/// for. Recorded as `user.release` with the reason.
pub fn release(db: &Db, id: &str, reason: &str) -> Result<Released, AppError> {
    db.write(|c| {
        let ForWrite {
            user: before,
            hold,
            groups,
        } = load_for_update(c, id, None)?;
        let Some(hold) = hold else {
            return Ok(Released::NotHeld);
        };
        repo::users::delete_hold(c, id)?;
        audit::record(
            Entry::new("user.release")
                .user(id, Some(&before.user_name))
                .detail("reason", reason)
                .detail("idp_active", hold.idp_active)
                .detail("held_since", format_time(hold.held_at)),
        );
        tracing::info!(user.id = %id, reason, "released the hold on user {id}");
        if !hold.idp_active || before.active {
            return Ok(Released::StaysInactive);
        }
        let mut stored = current_resource(&before)?;
        set_active(&mut stored, true);
        store(
            c,
            "admin.user.release",
            Some(reason),
            &before,
            groups,
            &stored,
            None,
        )?;
        Ok(Released::Reactivated)
    })
}

/// The live user with this userName (case-insensitive), for CLI commands.
pub fn find_by_user_name(db: &Db, user_name: &str) -> Result<Option<UserView>, AppError> {
    db.read(|c| find_live_view(c, LiveKey::FoldedName(&fold(user_name))))
}

/// What access a user holds: live logins and token activity per client (`offboard users show`).
#[derive(Debug, Clone)]
pub struct Access {
    /// The operator hold, if any.
    pub hold: Option<UserHold>,
    pub live_logins: Vec<crate::db::models::RefreshFamily>,
    pub activity: Vec<crate::db::models::TokenActivity>,
}

pub fn access_of(db: &Db, id: &str) -> Result<Access, AppError> {
    db.read(|c| {
        Ok(Access {
            hold: repo::users::hold(c, id)?,
            live_logins: repo::tokens::live_families(c, id, now())?,
            activity: repo::tokens::activity_of(c, id)?,
        })
    })
}

pub use super::listing::Page;
pub use crate::scim::list::ListQuery;

/// Users as the list engine sees them (`super::listing`): live rows of `users`, filters through
/// `db::filter_sql::users_where`, SQL sort columns from `repo::users::sort_column`.
#[derive(Debug, Clone, Copy)]
pub struct Users;

impl Source for Users {
    type Row = User;

    fn rt(&self) -> &'static ResourceType {
        rt()
    }

    fn table(&self) -> &'static Table {
        &repo::users::TABLE
    }

    fn filter_sql(&self, f: &Filter, dialect: Dialect, first: usize) -> SqlFilter {
        users_where(f, rt(), dialect, first)
    }

    fn sort_column(&self, key: &SortKey<'_>) -> Option<SortColumn> {
        repo::users::sort_column(key)
    }

    fn id<'r>(&self, row: &'r User) -> &'r str {
        &row.id
    }

    fn represent(
        &self,
        conn: &mut DbConnection,
        rows: Vec<User>,
        _: Purpose,
        base_url: &str,
    ) -> Result<Vec<Value>, AppError> {
        Ok(UserView::load_many(conn, rows)?
            .iter()
            .map(|u| to_scim(u, base_url))
            .collect())
    }

    fn represent_default(
        &self,
        conn: &mut DbConnection,
        rows: Vec<User>,
        base_url: &str,
    ) -> Result<Vec<Resource>, AppError> {
        Ok(UserView::load_many(conn, rows)?
            .iter()
            .map(|u| default_resource(u, base_url))
            .collect())
    }
}

/// A user for a response with the default projection: its text from the stored JSON when
/// `super::represent::write_user` can write it, else the full value.
fn default_resource(view: &UserView, base_url: &str) -> Resource {
    let mut text = Vec::with_capacity(view.user.resource.len() + 256);
    if super::represent::write_user(view, base_url, &mut text) {
        Resource::Text(text)
    } else {
        Resource::Value(to_scim(view, base_url))
    }
}

/// GET /Users and POST /Users/.search: filtered, sorted (`sortBy`, default creation time), paged; ties by id so
/// paging is stable. `bounds` limits the filter's size and a filter or sort evaluated in Rust (`limits.*`).
///
/// `userName eq "…"` (every IdP's lookup before a create) takes a fast path: the same filter translation decides
/// it, and then one indexed statement reads the user with its groups instead of the list engine's page and groups
/// statements (and, on PostgreSQL, its snapshot and statement-timeout round trips: an equality on a unique index
/// cannot run long). The answer is the general path's, byte for byte (tests/api/users.rs compares them;
/// docs/decisions/0040-one-statement-reads.md).
///
/// With `default_projection` (no `attributes`/`excludedAttributes` asked for) the resources come as response text
/// where `super::represent` can write it (docs/decisions/0043-serving-the-stored-text.md).
pub fn list(
    db: &Db,
    q: &ListQuery,
    bounds: super::listing::Bounds,
    base_url: &str,
    default_projection: bool,
) -> Result<Page, AppError> {
    let filter = super::listing::parse_filter(q.filter.as_deref(), rt(), &bounds)?;
    if let Some(folded) = filter.as_ref().and_then(user_name_eq) {
        // The general path's checks of the other parameters, with the same errors.
        q.sort
            .clone()
            .unwrap_or_else(crate::scim::list::SortBy::default_order)
            .resolve_for(rt())?;
        let found = db.read(|c| find_live_view(c, LiveKey::FoldedName(&folded)))?;
        let total = usize::from(found.is_some());
        // At most one live user has a userName: any order gives the same page; only the window matters.
        let resources = match found {
            Some(view) if q.start_index <= 1 && q.count > 0 => vec![if default_projection {
                default_resource(&view, base_url)
            } else {
                Resource::Value(to_scim(&view, base_url))
            }],
            _ => Vec::new(),
        };
        return Ok(Page {
            total,
            start_index: q.start_index,
            resources,
        });
    }
    super::listing::list_parsed(
        db,
        &Users,
        filter.as_ref(),
        q,
        bounds,
        base_url,
        default_projection,
    )
}

/// The folded userName when `f` is exactly a `userName eq` comparison as the list's SQL translation sees it (the
/// translation is `user_name_folded = ?` with its one bind, exact), so the fast path matches what the general
/// one would.
fn user_name_eq(f: &Filter) -> Option<String> {
    let sql = users_where(f, rt(), Dialect::Sqlite, 1);
    match (sql.exact, sql.sql.as_str(), sql.binds.as_slice()) {
        (true, "user_name_folded = ?", [crate::db::filter_sql::Bind::Text(folded)]) => Some(folded.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_uses_weak_comparison() {
        assert!(if_match_allows("W/\"3\"", 3));
        assert!(if_match_allows("\"3\"", 3));
        assert!(if_match_allows("*", 9));
        assert!(if_match_allows("W/\"1\", W/\"3\"", 3));
        assert!(!if_match_allows("W/\"2\"", 3));
    }

    #[test]
    fn only_a_user_name_equality_takes_the_fast_path() {
        let fast = |text: &str| user_name_eq(&crate::scim::filter::parse(text).unwrap());
        assert_eq!(
            fast(r#"userName eq "Bob@Example.com""#).as_deref(),
            Some("bob@example.com")
        );
        assert_eq!(fast(r#"USERNAME eq "bob""#).as_deref(), Some("bob"));
        assert_eq!(
            fast(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bob""#).as_deref(),
            Some("bob")
        );
        for slow in [
            r#"userName eq "bob" and userName pr"#,
            r#"userName ne "bob""#,
            r#"userName sw "bob""#,
            "userName eq null",
            r#"displayName eq "bob""#,
            r#"not (userName eq "bob")"#,
            r#"emails[value eq "bob"]"#,
        ] {
            assert_eq!(fast(slow), None, "{slow}");
        }
    }

    #[test]
    fn times_render_as_rfc3339_utc() {
        let t = chrono::DateTime::from_timestamp_millis(1_700_000_000_123)
            .unwrap()
            .naive_utc();
        assert_eq!(format_time(t), "2023-11-14T22:13:20.123Z");
    }
}
