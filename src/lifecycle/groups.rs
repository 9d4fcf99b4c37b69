//! SCIM Group use cases: create, read, list, replace (PUT), patch, delete. Group membership is the RBAC input of
//! the tokens (`groups` claim), so the rules of docs/decisions/0003-group-changes-and-sessions.md apply here:
//! adding a member or renaming a group ends nobody's sessions; a member who leaves (by PATCH, PUT or group delete)
//! has their sessions ended through [`super::end_sessions`] in the same transaction, so a removed role never
//! survives in an old token.
//!
//! Members live in `group_members`: a PATCH touches only the rows that change, and the group document is stored
//! without them. Removing members removes exactly the members named: Entra's
//! `{"op":"Remove","path":"members","value":[…]}` removes the listed members, never the whole group. A member
//! id that is no live user is skipped (and named in the audit entry), never an error: a removal in the same
//! request must not be blocked by an add the IdP got wrong.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::listing::{Page, Purpose, Source};
use crate::audit::{self, Entry};
use crate::db::filter_sql::{Dialect, SqlFilter, users_where};
use crate::db::models::{Group, GroupChange, NewGroup};
use crate::db::repo::groups::Member;
use crate::db::repo::list::{SortColumn, Table};
use crate::db::{Db, DbConnection, format_time, now, repo};
use crate::error::AppError;
use crate::lifecycle::users::{etag, if_match_allows};
use crate::scim::filter::{self, AttrPath, CompValue, CompareOp, Filter};
use crate::scim::list::{ListQuery, SortKey};
use crate::scim::patch::{self, OpKind, PatchOp};
use crate::scim::schema::{ResourceType, fold, registry};
use crate::scim::{GROUP_SCHEMA, ScimError};

fn rt() -> &'static ResourceType {
    registry().group()
}

/// The reason recorded when a member leaves a group by PATCH or PUT (their sessions end).
pub const REMOVED_FROM_GROUP: &str = "removed from group";
/// The reason recorded when a group is deleted with members (their sessions end).
pub const GROUP_DELETED: &str = "group deleted";

/// A group with its members, when they were asked for.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub group: Group,
    /// None when the response excludes `members` (cheap for big groups).
    pub members: Option<Vec<Member>>,
}

/// The full SCIM representation of a group.
pub fn to_scim(view: &GroupView, base_url: &str) -> Value {
    let group = &view.group;
    let mut obj = if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&group.resource) {
        m
    } else {
        tracing::error!(group.id = %group.id, "stored resource of group {} is not a JSON object", group.id);
        Map::new()
    };
    obj.insert("id".into(), Value::String(group.id.clone()));
    obj.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": format_time(group.created),
            "lastModified": format_time(group.last_modified),
            "location": format!("{base_url}/Groups/{}", group.id),
            "version": etag(group.version),
        }),
    );
    if let Some(members) = view.members.as_ref().filter(|m| !m.is_empty()) {
        let list = members
            .iter()
            .map(|m| {
                json!({
                    "value": m.user_id,
                    "$ref": format!("{base_url}/Users/{}", m.user_id),
                    "display": m.display,
                    "type": "User",
                })
            })
            .collect();
        obj.insert("members".into(), Value::Array(list));
    }
    Value::Object(obj)
}

/// The indexed columns of a stored group document, and the document without `members`.
struct Indexed {
    display_name: String,
    external_id: Option<String>,
    resource: String,
}

fn indexed(mut stored: Value) -> Result<Indexed, AppError> {
    if let Value::Object(m) = &mut stored {
        m.remove("members");
    }
    let display_name = stored
        .get("displayName")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ScimError::invalid_value("displayName is required"))?
        .to_owned();
    Ok(Indexed {
        display_name,
        external_id: stored
            .get("externalId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        resource: serde_json::to_string(&stored).map_err(AppError::internal)?,
    })
}

/// The user ids of a `members` value: an array of `{"value": id, …}` (or one such object).
fn member_ids(value: &Value) -> Result<Vec<String>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    };
    let mut ids = Vec::with_capacity(items.len());
    let mut seen = HashSet::with_capacity(items.len());
    for item in items {
        let id = match item {
            Value::Object(m) => m
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .and_then(|(_, v)| v.as_str()),
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
        .ok_or_else(|| ScimError::invalid_value("each member needs a \"value\" with the user's id"))?;
        if seen.insert(id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// Splits the ids a client asks to make members into the live users among them (with their display strings) and
/// the rest, which are skipped: an IdP may assign people offboard was never sent (or has deleted), and refusing
/// the whole request would also refuse the removals it carries, leaving a leaver with the role.
fn live_and_skipped(
    c: &mut DbConnection,
    ids: &[String],
) -> Result<(HashMap<String, String>, Vec<String>), AppError> {
    if ids.is_empty() {
        return Ok((HashMap::new(), Vec::new()));
    }
    let live: HashMap<String, String> = repo::groups::live_users_among(c, ids)?
        .into_iter()
        .map(|m| (m.user_id, m.display))
        .collect();
    let skipped = ids.iter().filter(|id| !live.contains_key(*id)).cloned().collect();
    Ok((live, skipped))
}

/// Logs the member ids a write skipped (they are in its audit entry too).
fn log_skipped(group: &str, skipped: &[String]) {
    if !skipped.is_empty() {
        tracing::info!(group.id = %group, count = skipped.len(), "skipped {} members of group {group} that are no users of this service", skipped.len());
    }
}

/// The user id of `members[value eq "…"]` filters (also `or`-ed), the form Okta and Entra send.
fn value_eq_ids(f: &Filter, out: &mut Vec<String>) -> bool {
    match f {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: CompValue::String(id),
        } if path.urn.is_none() && path.sub.is_none() && path.name.eq_ignore_ascii_case("value") => {
            out.push(id.clone());
            true
        }
        Filter::Or(a, b) => value_eq_ids(a, out) && value_eq_ids(b, out),
        _ => false,
    }
}

/// A change to the member list, in request order.
#[derive(Debug, Clone)]
enum MemberChange {
    Add(Vec<String>),
    Remove(Vec<String>),
    RemoveAll,
    RemoveWhere(Filter),
    Replace(Vec<String>),
}

fn is_members(path: &AttrPath) -> bool {
    path.name.eq_ignore_ascii_case("members")
        && path
            .urn
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(GROUP_SCHEMA))
}

/// Splits a PATCH into member changes and operations on the group document. Needs no stored state, so it runs
/// before the write transaction begins.
fn split_ops(ops: Vec<PatchOp>) -> Result<(Vec<MemberChange>, Vec<PatchOp>), ScimError> {
    let mut members = Vec::new();
    let mut rest = Vec::new();
    for op in ops {
        match &op.path {
            Some(p) if is_members(&p.attr) => {
                if p.attr.sub.is_some() || p.sub.is_some() {
                    return Err(ScimError::mutability(
                        "member sub-attributes are computed; add or remove members by value",
                    ));
                }
                let change = match (op.op, &p.filter, op.value.as_ref()) {
                    (OpKind::Remove, Some(f), _) => {
                        let mut ids = Vec::new();
                        if value_eq_ids(f, &mut ids) {
                            MemberChange::Remove(ids)
                        } else {
                            MemberChange::RemoveWhere(f.clone())
                        }
                    }
                    (_, Some(_), _) => {
                        return Err(ScimError::invalid_path(
                            "members are added or replaced by value, not by filter",
                        ));
                    }
                    (OpKind::Remove, None, None | Some(Value::Null)) => MemberChange::RemoveAll,
                    // Entra: remove only the listed members (read literally it would empty the group).
                    (OpKind::Remove, None, Some(v)) => MemberChange::Remove(member_ids(v)?),
                    (OpKind::Add, None, Some(v)) => MemberChange::Add(member_ids(v)?),
                    (OpKind::Replace, None, Some(v)) => MemberChange::Replace(member_ids(v)?),
                    (OpKind::Add | OpKind::Replace, None, None) => {
                        return Err(ScimError::invalid_value("a members operation needs a value"));
                    }
                };
                members.push(change);
            }
            None if op.op != OpKind::Remove && op.value.as_ref().is_some_and(Value::is_object) => {
                // A no-path value map may carry `members` beside other attributes (Okta re-sends the group).
                let mut map = op
                    .value
                    .as_ref()
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let key = map.keys().find(|k| k.eq_ignore_ascii_case("members")).cloned();
                if let Some(v) = key.and_then(|k| map.remove(&k)) {
                    let ids = member_ids(&v)?;
                    members.push(if op.op == OpKind::Add {
                        MemberChange::Add(ids)
                    } else {
                        MemberChange::Replace(ids)
                    });
                }
                if !map.is_empty() {
                    rest.push(PatchOp {
                        op: op.op,
                        path: None,
                        value: Some(Value::Object(map)),
                    });
                }
            }
            _ => rest.push(op),
        }
    }
    Ok((members, rest))
}

/// The net effect of a PATCH or PUT on the member list.
#[derive(Debug, Default)]
struct MemberDelta {
    /// Members before the change who are not members after it: their sessions end.
    left: Vec<String>,
    /// Users who are members after the change and were not before.
    joined: Vec<String>,
    /// Ids an `add` or `replace` named that are no live user: skipped, never members.
    skipped: Vec<String>,
}

impl MemberDelta {
    fn changed(&self) -> bool {
        !self.left.is_empty() || !self.joined.is_empty()
    }
}

/// Records a replace or patch of `before` that leads to `stored`, with its member delta.
fn record_update(action: &'static str, before: &Group, stored: &Value, delta: &MemberDelta) {
    let name = stored
        .get("displayName")
        .and_then(Value::as_str)
        .unwrap_or(&before.display_name);
    let entry = group_entry(
        action,
        &before.id,
        name,
        Some(&before.resource),
        Some(stored),
        &delta.joined,
        &delta.left,
    );
    audit::record(with_skipped(entry, &delta.skipped));
}

/// `members_skipped` on a group write's audit entry, when the write skipped any.
fn with_skipped(entry: Entry, skipped: &[String]) -> Entry {
    if skipped.is_empty() {
        entry
    } else {
        entry.detail("members_skipped", skipped.to_vec())
    }
}

/// The audit entry of a SCIM write to a group: attribute changes, and the members who joined and left.
fn group_entry(
    action: &'static str,
    id: &str,
    display_name: &str,
    before: Option<&str>,
    after: Option<&Value>,
    joined: &[String],
    left: &[String],
) -> Entry {
    let before: Option<Value> = before.and_then(|r| serde_json::from_str(r).ok());
    Entry::new(action)
        .target("group", id, Some(display_name))
        .detail("changes", audit::changes(before.as_ref(), after))
        .detail("members_added", joined.to_vec())
        .detail("members_removed", left.to_vec())
        .received_now()
}

/// Applies member changes in order and returns their net effect, in a constant number of statements whatever
/// the number of operations: the membership the changes need is read once (the named ids, or the whole list when
/// an operation replaces, empties or filters it), the changes run in memory, and the difference is written with
/// one insert and one delete (chunked). Ids an `add` or `replace` names that are no live user are skipped and
/// reported; removals always apply.
fn apply_member_changes(
    c: &mut DbConnection,
    group_id: &str,
    changes: &[MemberChange],
) -> Result<MemberDelta, AppError> {
    if changes.is_empty() {
        return Ok(MemberDelta::default());
    }
    let mut wanted = Vec::new();
    let mut named = Vec::new();
    let mut seen_wanted = HashSet::new();
    let mut seen_named = HashSet::new();
    let mut whole = false;
    let mut by_filter = false;
    for change in changes {
        match change {
            MemberChange::Add(ids) | MemberChange::Replace(ids) => {
                whole |= matches!(change, MemberChange::Replace(_));
                for id in ids {
                    if seen_wanted.insert(id.as_str()) {
                        wanted.push(id.clone());
                    }
                    if seen_named.insert(id.as_str()) {
                        named.push(id.clone());
                    }
                }
            }
            MemberChange::Remove(ids) => {
                for id in ids {
                    if seen_named.insert(id.as_str()) {
                        named.push(id.clone());
                    }
                }
            }
            MemberChange::RemoveAll => whole = true,
            MemberChange::RemoveWhere(_) => {
                whole = true;
                by_filter = true;
            }
        }
    }
    let (live, skipped) = live_and_skipped(c, &wanted)?;
    // Display strings, for `remove` by a filter that may name `display`.
    let mut displays: HashMap<String, String> = HashMap::new();
    let before: HashSet<String> = if by_filter {
        let current = repo::groups::members(c, group_id)?;
        let ids = current.iter().map(|m| m.user_id.clone()).collect();
        displays.extend(current.into_iter().map(|m| (m.user_id, m.display)));
        displays.extend(live.iter().map(|(k, v)| (k.clone(), v.clone())));
        ids
    } else if whole {
        repo::groups::member_ids(c, group_id)?.into_iter().collect()
    } else {
        repo::groups::members_among(c, group_id, &named)?
            .into_iter()
            .collect()
    };
    let mut after = before.clone();
    for change in changes {
        match change {
            MemberChange::Add(ids) => {
                after.extend(ids.iter().filter(|id| live.contains_key(*id)).cloned());
            }
            MemberChange::Remove(ids) => {
                for id in ids {
                    after.remove(id);
                }
            }
            MemberChange::RemoveAll => after.clear(),
            MemberChange::RemoveWhere(f) => {
                let value_path = Filter::ValuePath {
                    path: AttrPath {
                        urn: None,
                        name: "members".into(),
                        sub: None,
                    },
                    filter: Box::new(f.clone()),
                };
                after.retain(|id| {
                    let display = displays.get(id).map_or("", String::as_str);
                    let one = json!({"members": [{"value": id, "display": display, "type": "User"}]});
                    !filter::matches(&value_path, &one, rt())
                });
            }
            MemberChange::Replace(ids) => {
                after = ids.iter().filter(|id| live.contains_key(*id)).cloned().collect();
            }
        }
    }
    let mut joined: Vec<String> = after.difference(&before).cloned().collect();
    let mut left: Vec<String> = before.difference(&after).cloned().collect();
    joined.sort();
    left.sort();
    repo::groups::remove_members(c, group_id, &left)?;
    repo::groups::add_members(c, group_id, &joined)?;
    Ok(MemberDelta {
        left,
        joined,
        skipped,
    })
}

/// Ends the sessions of users who left a group.
fn end_sessions_of_leavers(
    c: &mut DbConnection,
    group: &str,
    leavers: &[String],
    why: &str,
) -> Result<(), AppError> {
    let txn = crate::fanout::new_txn();
    for user_id in leavers {
        super::end_sessions(c, user_id, why, &txn)?;
    }
    if !leavers.is_empty() {
        tracing::info!(group.id = %group, count = leavers.len(), "ended sessions of {} users who left group {group}", leavers.len());
    }
    Ok(())
}

fn load_view(c: &mut DbConnection, id: &str, with_members: bool) -> Result<GroupView, AppError> {
    let group = repo::groups::find(c, id)?.ok_or_else(not_found)?;
    let members = if with_members {
        Some(repo::groups::members(c, id)?)
    } else {
        None
    };
    Ok(GroupView { group, members })
}

fn not_found() -> AppError {
    ScimError::not_found("no such group").into()
}

fn load_for_update(c: &mut DbConnection, id: &str, if_match: Option<&str>) -> Result<Group, AppError> {
    repo::groups::lock(c, id)?;
    let group = repo::groups::find(c, id)?.ok_or_else(not_found)?;
    if let Some(h) = if_match
        && !if_match_allows(h, group.version)
    {
        return Err(AppError::PreconditionFailed);
    }
    Ok(group)
}

/// POST /Groups.
pub fn create(db: &Db, input: &Value, with_members: bool) -> Result<GroupView, AppError> {
    let stored = rt().normalize(input)?;
    let ids = stored
        .get("members")
        .map(member_ids)
        .transpose()?
        .unwrap_or_default();
    let ix = indexed(stored)?;
    let id = uuid::Uuid::now_v7().to_string();
    let at = now();
    let mut skipped = Vec::new();
    let view = db.write(|c| {
        let (live, unknown) = live_and_skipped(c, &ids)?;
        let mut joined: Vec<String> = ids.iter().filter(|id| live.contains_key(*id)).cloned().collect();
        joined.sort();
        joined.dedup();
        skipped = unknown;
        let folded = fold(&ix.display_name);
        repo::groups::insert(
            c,
            &NewGroup {
                id: &id,
                display_name: &ix.display_name,
                display_name_folded: &folded,
                external_id: ix.external_id.as_deref(),
                resource: &ix.resource,
                version: 1,
                created: at,
                last_modified: at,
            },
        )?;
        repo::groups::add_members(c, &id, &joined)?;
        let entry = group_entry(
            "scim.group.create",
            &id,
            &ix.display_name,
            None,
            serde_json::from_str::<Value>(&ix.resource).ok().as_ref(),
            &joined,
            &[],
        );
        audit::record(with_skipped(entry, &skipped));
        load_view(c, &id, with_members)
    })?;
    log_skipped(&id, &skipped);
    tracing::info!(group.id = %id, "created group {id} with {} members", ids.len().saturating_sub(skipped.len()));
    Ok(view)
}

/// GET /Groups/{id}.
pub fn get(db: &Db, id: &str, with_members: bool) -> Result<GroupView, AppError> {
    db.read(|c| load_view(c, id, with_members))
}

/// Writes a new group document (if it changed) or only a new version (members changed).
fn store(c: &mut DbConnection, before: &Group, stored: Value, members_changed: bool) -> Result<(), AppError> {
    let ix = indexed(stored)?;
    let n = if ix.resource == before.resource {
        if !members_changed {
            return Ok(());
        }
        repo::groups::touch(c, &before.id, before.version, now())?
    } else {
        let folded = fold(&ix.display_name);
        let change = GroupChange {
            display_name: &ix.display_name,
            display_name_folded: &folded,
            external_id: ix.external_id.clone(),
            resource: &ix.resource,
            last_modified: now(),
        };
        repo::groups::update(c, &before.id, before.version, &change)?
    };
    if n == 1 {
        Ok(())
    } else {
        Err(AppError::internal(format!(
            "group {} changed under its lock",
            before.id
        )))
    }
}

/// PUT /Groups/{id}. `members` left out keeps the members (RFC 7644 §3.5.1 lets the provider treat an omitted
/// attribute as not asserted); `"members": []` removes them all.
pub fn replace(
    db: &Db,
    id: &str,
    input: &Value,
    if_match: Option<&str>,
    with_members: bool,
) -> Result<GroupView, AppError> {
    let stored = rt().normalize_replacement(input)?;
    let asserted = input
        .as_object()
        .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case("members")));
    let changes = if asserted {
        vec![MemberChange::Replace(
            stored
                .get("members")
                .map(member_ids)
                .transpose()?
                .unwrap_or_default(),
        )]
    } else {
        Vec::new()
    };
    let mut skipped = Vec::new();
    let view = db.write(|c| {
        let before = load_for_update(c, id, if_match)?;
        let current: Value = serde_json::from_str(&before.resource).map_err(AppError::internal)?;
        crate::scim::schema::check_indexed_changes(&stored, &current)?;
        let delta = apply_member_changes(c, id, &changes)?;
        record_update("scim.group.replace", &before, &stored, &delta);
        store(c, &before, stored.clone(), delta.changed())?;
        end_sessions_of_leavers(c, id, &delta.left, REMOVED_FROM_GROUP)?;
        skipped = delta.skipped;
        load_view(c, id, with_members)
    })?;
    log_skipped(id, &skipped);
    Ok(view)
}

/// PATCH /Groups/{id}: member operations touch only the member rows that change; all or nothing. The body is
/// parsed (at most `max_ops` operations) and split before the write transaction begins.
pub fn patch(
    db: &Db,
    id: &str,
    body: &Value,
    if_match: Option<&str>,
    with_members: bool,
    max_ops: usize,
) -> Result<GroupView, AppError> {
    let ops = patch::parse_request(body, max_ops)?;
    let (member_changes, doc_ops) = split_ops(ops)?;
    let mut skipped = Vec::new();
    let view = db.write(|c| {
        let before = load_for_update(c, id, if_match)?;
        let current: Value = serde_json::from_str(&before.resource).map_err(AppError::internal)?;
        let stored = if doc_ops.is_empty() {
            current
        } else {
            patch::apply(rt(), &current, &doc_ops)?
        };
        let delta = apply_member_changes(c, id, &member_changes)?;
        record_update("scim.group.patch", &before, &stored, &delta);
        store(c, &before, stored, delta.changed())?;
        end_sessions_of_leavers(c, id, &delta.left, REMOVED_FROM_GROUP)?;
        skipped = delta.skipped;
        load_view(c, id, with_members)
    })?;
    log_skipped(id, &skipped);
    Ok(view)
}

/// DELETE /Groups/{id}: every member loses the group, so every member's sessions end.
pub fn delete(db: &Db, id: &str, if_match: Option<&str>) -> Result<(), AppError> {
    db.write(|c| {
        let before = load_for_update(c, id, if_match)?;
        let members = repo::groups::member_ids(c, id)?;
        audit::record(group_entry(
            "scim.group.delete",
            id,
            &before.display_name,
            None,
            None,
            &[],
            &members,
        ));
        repo::groups::delete(c, id)?;
        end_sessions_of_leavers(c, id, &members, GROUP_DELETED)
    })?;
    tracing::info!(group.id = %id, "deleted group {id}");
    Ok(())
}

/// Groups as the list engine sees them (`super::listing`): rows of `groups`, filters through the shared
/// column translation (groups have `id`, `externalId`, `displayName`, `meta.*` columns like users), SQL sort
/// columns from `repo::groups::sort_column`. Members are loaded to evaluate a filter (it may name them) and for
/// a response only when it includes them.
#[derive(Debug, Clone, Copy)]
pub struct Groups {
    pub with_members: bool,
}

impl Source for Groups {
    type Row = Group;

    fn rt(&self) -> &'static ResourceType {
        rt()
    }

    fn table(&self) -> &'static Table {
        &repo::groups::TABLE
    }

    fn filter_sql(&self, f: &Filter, dialect: Dialect, first: usize) -> SqlFilter {
        users_where(f, rt(), dialect, first)
    }

    fn sort_column(&self, key: &SortKey<'_>) -> Option<SortColumn> {
        repo::groups::sort_column(key)
    }

    fn id<'r>(&self, row: &'r Group) -> &'r str {
        &row.id
    }

    fn represent(
        &self,
        conn: &mut DbConnection,
        rows: Vec<Group>,
        purpose: Purpose,
        base_url: &str,
    ) -> Result<Vec<Value>, AppError> {
        let load = match purpose {
            Purpose::Evaluate => true,
            Purpose::Respond => self.with_members,
        };
        rows.into_iter()
            .map(|group| {
                let members = if load {
                    Some(repo::groups::members(conn, &group.id)?)
                } else {
                    None
                };
                Ok(to_scim(&GroupView { group, members }, base_url))
            })
            .collect()
    }
}

/// GET /Groups and POST /Groups/.search: filtered, sorted, paged like users (`super::listing`).
pub fn list(
    db: &Db,
    q: &ListQuery,
    with_members: bool,
    bounds: super::listing::Bounds,
    base_url: &str,
) -> Result<Page, AppError> {
    super::listing::list(db, &Groups { with_members }, q, bounds, base_url)
}
