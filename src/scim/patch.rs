//! The RFC 7644 §3.5.2 PATCH engine: parses a `PatchOp` message and applies its operations, in order and
//! all-or-nothing, to a resource in its stored form, giving the new stored form.
//!
//! It owns PATCH semantics (add / replace / remove on attributes, sub-attributes and value-filtered elements of
//! multi-valued attributes, `primary` uniqueness, mutability) and the Okta / Entra ID dialects that a strict RFC
//! reading would reject (capitalised ops, string booleans, no-path value maps with dotted and URN-qualified keys,
//! create-on-missing for `eq` value filters, a bare string for `manager`, `""` as unassign, remove with a `value`
//! list, removal of a value that is not there, the echoed `id`, `password` sync). Values are coerced by the schema
//! exactly as `ResourceType::normalize` does. It knows nothing of storage: a Group's `members` are patched like
//! any attribute when present; a caller that keeps members in a table splits those operations out first.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value};

use super::filter::{AttrPath, CompValue, CompareOp, Filter};
use super::path::{self, PatchPath};
use super::schema::{
    AttrType, AttributeDef, Mutability, Resolved, ResourceType, eq_fold, fold, is_unassigned, parse_datetime,
    single_primary, split_attr_key,
};
use super::{PATCH_OP_SCHEMA, ScimError, ScimType, get_ci_map};

/// Filters are already bounded by their parser (32 levels of brackets); this bounds the evaluation here
/// independently of it. `and`/`or` chains are walked with a heap stack, so only `not` and brackets recurse.
const MAX_FILTER_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

impl OpKind {
    /// Case-insensitive: Entra sends `Add`, `Replace`, `Remove`.
    fn parse(s: &str) -> Option<Self> {
        [Self::Add, Self::Replace, Self::Remove]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Replace => "replace",
            Self::Remove => "remove",
        }
    }
}

/// One operation of a `PatchOp` message.
#[derive(Debug, Clone)]
pub struct PatchOp {
    pub op: OpKind,
    pub path: Option<PatchPath>,
    /// As sent; `Some(Value::Null)` is an explicit `null`.
    pub value: Option<Value>,
}

/// Parses a `PatchOp` message (RFC 7644 §3.5.2): `op` names case-insensitive, member names of the message and of
/// each operation case-insensitive, unknown members ignored, paths parsed with `scim::path::parse`. More than
/// `max_ops` operations (`limits.max_patch_operations`) is a 400 `tooMany` before any is parsed: a PATCH is
/// applied inside the resource's write transaction, so its size bounds how long that transaction runs.
pub fn parse_request(body: &Value, max_ops: usize) -> Result<Vec<PatchOp>, ScimError> {
    let Value::Object(message) = body else {
        return Err(ScimError::invalid_syntax(
            "a PATCH body must be a PatchOp JSON object",
        ));
    };
    if let Some(schemas) = get_ci_map(message, "schemas") {
        let ok = schemas.as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s.as_str().is_some_and(|s| eq_fold(s, PATCH_OP_SCHEMA)))
        });
        if !ok {
            return Err(ScimError::invalid_syntax(format!(
                "'schemas' must contain {PATCH_OP_SCHEMA}"
            )));
        }
    }
    let Some(Value::Array(operations)) = get_ci_map(message, "Operations") else {
        return Err(ScimError::invalid_syntax(
            "'Operations' must be an array of operations",
        ));
    };
    if operations.len() > max_ops {
        return Err(ScimError::bad_request(
            ScimType::TooMany,
            format!(
                "a PATCH may carry at most {max_ops} operations (limits.max_patch_operations); this one has {}: \
                 send them in several requests",
                operations.len()
            ),
        ));
    }
    operations
        .iter()
        .enumerate()
        .map(|(i, op)| parse_op(i, op))
        .collect()
}

fn parse_op(index: usize, op: &Value) -> Result<PatchOp, ScimError> {
    let Value::Object(op) = op else {
        return Err(ScimError::invalid_syntax(format!(
            "Operations[{index}] must be an object"
        )));
    };
    let kind = get_ci_map(op, "op")
        .and_then(Value::as_str)
        .and_then(OpKind::parse)
        .ok_or_else(|| {
            ScimError::invalid_syntax(format!(
                "Operations[{index}].op must be \"add\", \"replace\" or \"remove\""
            ))
        })?;
    let path = match get_ci_map(op, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(path::parse(s)?),
        Some(_) => {
            return Err(ScimError::invalid_path(format!(
                "Operations[{index}].path must be a string"
            )));
        }
    };
    let op = PatchOp {
        op: kind,
        path,
        value: get_ci_map(op, "value").cloned(),
    };
    check_op(&op)?;
    Ok(op)
}

fn check_op(op: &PatchOp) -> Result<(), ScimError> {
    match (op.op, &op.path, &op.value) {
        (OpKind::Remove, None, _) => Err(ScimError::no_target("a remove operation needs a 'path'")),
        (OpKind::Add | OpKind::Replace, _, None) => Err(ScimError::invalid_value(format!(
            "an {} operation needs a 'value'",
            op.op.as_str()
        ))),
        _ => Ok(()),
    }
}

/// Applies the operations in order to a copy of `resource` (stored form) and returns the new stored form, or the
/// first error (nothing is changed then). The result passes `ResourceType::finish` (required attributes,
/// `schemas`).
///
/// The cost is linear in the operations and the values they carry: `add`s to a multi-valued attribute (Okta and
/// attackers alike send one operation per value) are collected while the operations in between touch other
/// attributes, and merged into the attribute in one pass when something else touches it or at the end; each merge
/// finds duplicates and same-value elements through an index rather than by scanning the list per value.
pub fn apply(rt: &ResourceType, resource: &Value, ops: &[PatchOp]) -> Result<Value, ScimError> {
    let mut doc = resource.as_object().cloned().unwrap_or_default();
    let mut pending: Option<PendingAdds<'_>> = None;
    for op in ops {
        check_op(op)?;
        if let Some((target, value)) = plain_add(rt, op) {
            match &mut pending {
                Some(p) if std::ptr::eq(p.target.attr, target.attr) => p.values.push(value),
                _ => {
                    if let Some(p) = pending.take() {
                        p.merge(rt, &mut doc)?;
                    }
                    pending = Some(PendingAdds {
                        target,
                        values: vec![value],
                    });
                }
            }
            continue;
        }
        if pending.as_ref().is_some_and(|p| !p.untouched_by(rt, op))
            && let Some(p) = pending.take()
        {
            p.merge(rt, &mut doc)?;
        }
        match &op.path {
            None => apply_map(rt, &mut doc, op.op, op.value.as_ref().unwrap_or(&Value::Null))?,
            Some(path) => apply_path(rt, &mut doc, op.op, path, op.value.as_ref(), false)?,
        }
    }
    if let Some(p) = pending {
        p.merge(rt, &mut doc)?;
    }
    rt.finish(&mut doc)?;
    let result = Value::Object(doc);
    super::schema::check_indexed_changes(&result, resource)?;
    Ok(result)
}

/// The target and value of an `add` with a plain path (no filter, no sub-attribute) to a readWrite multi-valued
/// attribute: the operations [`PendingAdds`] collects.
fn plain_add<'r, 'o>(rt: &'r ResourceType, op: &'o PatchOp) -> Option<(Resolved<'r>, &'o Value)> {
    let path = op.path.as_ref()?;
    if op.op != OpKind::Add
        || path.filter.is_some()
        || path.sub.is_some()
        || path.attr.sub.is_some()
        || path.attr.name.eq_ignore_ascii_case("schemas")
    {
        return None;
    }
    let target = rt.resolve(&path.attr)?;
    if !target.attr.multi_valued || target.attr.mutability != Mutability::ReadWrite {
        return None;
    }
    Some((target, op.value.as_ref()?))
}

/// `add`s to one multi-valued attribute not merged yet. Merging them together gives what applying them one by one
/// gives: each value is coerced on its own (so each keeps its own `primary`), then all are added in order, the
/// last `primary: true` winning; the operations between them touched other attributes only.
struct PendingAdds<'a> {
    target: Resolved<'a>,
    values: Vec<&'a Value>,
}

impl PendingAdds<'_> {
    /// True when `op` certainly leaves the attribute alone: its path names another attribute. Anything else
    /// (no path, an unknown path, a whole schema) merges the pending adds first.
    fn untouched_by(&self, rt: &ResourceType, op: &PatchOp) -> bool {
        op.path.as_ref().is_some_and(|path| {
            let base = AttrPath {
                urn: path.attr.urn.clone(),
                name: path.attr.name.clone(),
                sub: None,
            };
            rt.resolve(&base)
                .is_some_and(|r| !std::ptr::eq(r.attr, self.target.attr))
        })
    }

    fn merge(self, rt: &ResourceType, doc: &mut Map<String, Value>) -> Result<(), ScimError> {
        let attr = self.target.attr;
        let label = rt.label(&self.target);
        let mut new = Vec::new();
        for value in self.values {
            match attr.coerce(value, &label)? {
                Some(Value::Array(items)) => new.extend(items),
                Some(one) => new.push(one),
                None => {}
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let container = rt.container_mut(doc, &self.target);
        let mut items = take_elements(container, attr);
        add_elements(attr, &mut items, Value::Array(new));
        put_elements(container, attr, items);
        Ok(())
    }
}

/// add/replace without a path: every key of the value map is an attribute path (Entra sends `name.givenName`
/// and `urn:…:User:employeeNumber` keys), or a schema URN holding attributes. Unknown keys are ignored, as in a
/// POST body.
fn apply_map(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    kind: OpKind,
    value: &Value,
) -> Result<(), ScimError> {
    let Value::Object(map) = value else {
        return Err(ScimError::invalid_value(format!(
            "an {} operation without a 'path' needs an object 'value'",
            kind.as_str()
        )));
    };
    for (key, v) in map {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(urn) = rt.schema_urn(key) {
            apply_schema_object(rt, doc, kind, urn, Some(v))?;
        } else if let Some(attr) = split_attr_key(key) {
            apply_path(
                rt,
                doc,
                kind,
                &PatchPath {
                    attr,
                    filter: None,
                    sub: None,
                },
                Some(v),
                true,
            )?;
        }
    }
    Ok(())
}

/// An operation on a whole schema (`urn:…:enterprise:2.0:User`): its value holds attributes of that schema.
fn apply_schema_object(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    kind: OpKind,
    urn: &str,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let is_core = urn == rt.core;
    match (kind, value.unwrap_or(&Value::Null)) {
        (OpKind::Remove, _) | (OpKind::Replace, Value::Null) if !is_core => {
            doc.remove(urn);
            Ok(())
        }
        (OpKind::Remove, _) => Err(ScimError::mutability("the core schema cannot be removed")),
        (_, Value::Null) => Ok(()),
        (_, Value::Object(inner)) => {
            for (key, v) in inner {
                if let Some(mut attr) = split_attr_key(key).filter(|p| p.urn.is_none()) {
                    attr.urn = Some(urn.to_owned());
                    apply_path(
                        rt,
                        doc,
                        kind,
                        &PatchPath {
                            attr,
                            filter: None,
                            sub: None,
                        },
                        Some(v),
                        true,
                    )?;
                }
            }
            Ok(())
        }
        _ => Err(ScimError::invalid_value(format!("'{urn}' must be an object"))),
    }
}

fn path_text(path: &PatchPath) -> String {
    let mut s = String::new();
    if let Some(urn) = &path.attr.urn {
        s.push_str(urn);
        s.push(':');
    }
    s.push_str(&path.attr.name);
    if let Some(sub) = path.attr.sub.as_ref().or(path.sub.as_ref()) {
        s.push('.');
        s.push_str(sub);
    }
    s
}

/// One operation with a path. `lenient`: the path came from a key of a value map, where unknown attributes are
/// ignored like in a POST body; an explicit unknown `path` is 400 invalidPath (unknown schema URNs are ignored).
fn apply_path(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    kind: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
    lenient: bool,
) -> Result<(), ScimError> {
    let attr_path = &path.attr;
    let plain = attr_path.sub.is_none() && path.filter.is_none() && path.sub.is_none();
    let core_or_none = attr_path.urn.as_deref().is_none_or(|u| eq_fold(u, &rt.core));
    // `schemas` is the server's to maintain.
    if plain && core_or_none && attr_path.name.eq_ignore_ascii_case("schemas") {
        return Ok(());
    }
    if plain
        && let Some(urn) = &attr_path.urn
        && let Some(schema) = rt.schema_urn(&format!("{urn}:{}", attr_path.name))
    {
        return apply_schema_object(rt, doc, kind, schema, value);
    }
    let unknown = |what: String| {
        let unknown_schema = attr_path
            .urn
            .as_deref()
            .is_some_and(|u| rt.schema_urn(u).is_none());
        if lenient || unknown_schema {
            Ok(())
        } else {
            Err(ScimError::invalid_path(what))
        }
    };
    let base = AttrPath {
        urn: attr_path.urn.clone(),
        name: attr_path.name.clone(),
        sub: None,
    };
    let Some(Resolved { schema, attr, .. }) = rt.resolve(&base) else {
        return unknown(format!("unknown attribute '{}'", path_text(path)));
    };
    let sub = match (&attr_path.sub, &path.sub) {
        (None, None) => None,
        (Some(name), None) | (None, Some(name)) => match attr.sub(name) {
            Some(sub) => Some(sub),
            None => return unknown(format!("unknown sub-attribute '{}'", path_text(path))),
        },
        (Some(_), Some(_)) => {
            return Err(ScimError::invalid_path(format!(
                "invalid path '{}'",
                path_text(path)
            )));
        }
    };
    let target = Resolved { schema, attr, sub };
    let label = rt.label(&target);
    let filter = path.filter.as_ref();
    if filter.is_some() && !attr.is_complex() {
        return Err(ScimError::invalid_path(format!(
            "'{label}' has no sub-attributes to filter on"
        )));
    }
    let mutability = |m: Mutability| attr.mutability == m || sub.is_some_and(|s| s.mutability == m);
    if mutability(Mutability::WriteOnly) {
        // `password`: accepted (Okta password sync) and never stored.
        return Ok(());
    }
    if mutability(Mutability::ReadOnly) {
        return read_only(rt, doc, kind, &target, filter.is_some(), value, &label);
    }
    let container = rt.container_mut(doc, &target);
    let value = value.unwrap_or(&Value::Null);
    match (filter, sub) {
        (None, None) => whole(kind, container, attr, value, &label),
        (None, Some(sub)) => sub_attribute(kind, container, attr, sub, value, &label),
        (Some(filter), sub) => filtered(kind, container, attr, filter, sub, value, &label),
    }
}

/// A readOnly target (`id`, `meta`, `groups`, `manager.displayName`): ignored when it changes nothing (Okta echoes
/// the `id` in a group rename, `"groups": []`), else 400 mutability.
fn read_only(
    rt: &ResourceType,
    doc: &Map<String, Value>,
    kind: OpKind,
    target: &Resolved<'_>,
    filtered: bool,
    value: Option<&Value>,
    label: &str,
) -> Result<(), ScimError> {
    let current = rt
        .container(doc, target)
        .and_then(|c| c.get(&target.attr.name))
        .and_then(|v| match target.sub {
            None => Some(v),
            Some(sub) => v.get(&sub.name),
        })
        .filter(|v| !is_unassigned(v));
    let new = value.filter(|v| kind != OpKind::Remove && !is_unassigned(v));
    if target.sub.is_none() && target.attr.name == "id" {
        // The stored form has no `id`; the caller checks it against the URL if it cares.
        return match (current, new) {
            (Some(c), Some(n)) if c != n => Err(ScimError::mutability("'id' is readOnly")),
            _ => Ok(()),
        };
    }
    let unchanged = match (current, new) {
        (None, None) => true,
        (Some(c), Some(n)) => !filtered && c == n,
        _ => false,
    };
    if unchanged {
        Ok(())
    } else {
        Err(ScimError::mutability(format!("'{label}' is readOnly")))
    }
}

fn check_immutable(
    def: &AttributeDef,
    current: Option<&Value>,
    new: Option<&Value>,
    label: &str,
) -> Result<(), ScimError> {
    let current = current.filter(|v| !is_unassigned(v));
    if def.mutability == Mutability::Immutable && current.is_some() && current != new {
        return Err(ScimError::mutability(format!("'{label}' is immutable")));
    }
    Ok(())
}

/// The elements of a multi-valued attribute, or the value of a single-valued complex one as zero or one element,
/// taken out of the container (put them back with [`put_elements`]).
fn take_elements(container: &mut Map<String, Value>, attr: &AttributeDef) -> Vec<Value> {
    match container.remove(&attr.name) {
        Some(Value::Array(items)) => items,
        Some(v) if !is_unassigned(&v) => vec![v],
        _ => Vec::new(),
    }
}

fn put_elements(container: &mut Map<String, Value>, attr: &AttributeDef, mut items: Vec<Value>) {
    items.retain(|v| !is_unassigned(v));
    if attr.multi_valued {
        if !items.is_empty() {
            container.insert(attr.name.clone(), Value::Array(items));
        }
    } else if let Some(last) = items.pop() {
        container.insert(attr.name.clone(), last);
    }
}

fn is_primary(v: &Value) -> bool {
    v.get("primary").and_then(Value::as_bool) == Some(true)
}

/// An operation on a whole attribute (`emails`, `name`, `urn:…:User:manager`).
fn whole(
    kind: OpKind,
    container: &mut Map<String, Value>,
    attr: &AttributeDef,
    value: &Value,
    label: &str,
) -> Result<(), ScimError> {
    let name = &attr.name;
    if kind == OpKind::Remove {
        if attr.multi_valued && !value.is_null() {
            // Entra (without aadOptscim062020): `Remove members` with the members to remove as the value.
            return remove_values(container, attr, value, label);
        }
        let present = container.get(name).is_some_and(|v| !is_unassigned(v));
        if present && attr.required {
            return Err(ScimError::mutability(format!(
                "'{label}' is required and cannot be removed"
            )));
        }
        check_immutable(attr, container.get(name), None, label)?;
        container.remove(name);
        return Ok(());
    }
    let new = attr.coerce(value, label)?;
    if !(kind == OpKind::Add && attr.multi_valued) {
        check_immutable(attr, container.get(name), new.as_ref(), label)?;
    }
    let Some(new) = new else {
        // null / "" / [] : unassign (replace, or add of a single simple value); adding nothing is a no-op.
        if kind == OpKind::Replace || !(attr.multi_valued || attr.is_complex()) {
            container.remove(name);
        }
        return Ok(());
    };
    if attr.multi_valued && kind == OpKind::Add {
        let mut items = take_elements(container, attr);
        add_elements(attr, &mut items, new);
        put_elements(container, attr, items);
    } else if attr.is_complex() && !attr.multi_valued {
        merge_complex(container, attr, new);
    } else {
        container.insert(name.clone(), new);
    }
    Ok(())
}

/// RFC 7644 §3.5.2.1 add to a multi-valued attribute: exact duplicates are skipped; a value with the same `value`
/// (and compatible `type`) as an existing one is merged into it; `primary: true` on an added value clears it on
/// the others.
///
/// Elements are indexed by [`identity_key`] once per call, so adding k values to n elements costs O(n + k), not
/// O(n·k): an exact duplicate has the same key, and so does every element of the same identity.
fn add_elements(attr: &AttributeDef, items: &mut Vec<Value>, new: Value) {
    let new_items = match new {
        Value::Array(a) => a,
        other => vec![other],
    };
    let value_def = attr.sub("value");
    // Positions by key, ascending (so the first match is the first element, as a scan would find it).
    let mut index: HashMap<IdentityKey, Vec<usize>> = HashMap::new();
    for (i, e) in items.iter().enumerate() {
        index.entry(identity_key(value_def, e)).or_default().push(i);
    }
    let mut keep = None;
    for item in new_items {
        let key = identity_key(value_def, &item);
        let candidates = index.get(&key).map_or(&[][..], Vec::as_slice);
        if candidates.iter().any(|&i| items.get(i) == Some(&item)) {
            continue;
        }
        let primary = is_primary(&item);
        let same = candidates
            .iter()
            .copied()
            .find(|&i| items.get(i).is_some_and(|e| same_identity(attr, e, &item)));
        let position = if let Some(i) = same {
            if let Some(existing) = items.get_mut(i) {
                merge_into(existing, item);
            }
            i
        } else {
            items.push(item);
            let i = items.len() - 1;
            index.entry(key).or_default().push(i);
            i
        };
        if primary {
            keep = Some(position);
        }
    }
    single_primary(items, keep);
}

/// What [`add_elements`] indexes elements by: the `value` as [`same_identity`] compares it (folded unless
/// caseExact), or the whole element when it has no `value` (simple multi-valued attributes). A merge keeps an
/// element's key: it only happens between elements of the same `value`.
#[derive(Debug, PartialEq, Eq, Hash)]
enum IdentityKey {
    Text(String),
    Other(String),
}

fn identity_key(value_def: Option<&AttributeDef>, element: &Value) -> IdentityKey {
    let value = if value_def.is_some() {
        element.get("value").unwrap_or(element)
    } else {
        element
    };
    match value {
        Value::String(s) if value_def.is_some_and(|d| !d.case_exact) => IdentityKey::Text(fold(s)),
        Value::String(s) => IdentityKey::Text(s.clone()),
        other => IdentityKey::Other(other.to_string()),
    }
}

/// Two elements of a multi-valued complex attribute denote the same thing: equal `value` (honouring caseExact)
/// and no conflicting `type`.
fn same_identity(attr: &AttributeDef, a: &Value, b: &Value) -> bool {
    let Some(value_def) = attr.sub("value") else {
        return false;
    };
    let (Some(va), Some(vb)) = (a.get("value"), b.get("value")) else {
        return false;
    };
    let types_compatible = match (
        a.get("type").and_then(Value::as_str),
        b.get("type").and_then(Value::as_str),
    ) {
        (Some(ta), Some(tb)) => eq_fold(ta, tb),
        _ => true,
    };
    types_compatible && values_equal(Some(value_def), va, vb)
}

fn values_equal(def: Option<&AttributeDef>, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if def.is_some_and(|d| !d.case_exact) => eq_fold(x, y),
        _ => a == b,
    }
}

fn merge_into(existing: &mut Value, new: Value) {
    match (existing, new) {
        (Value::Object(cur), Value::Object(new)) => cur.extend(new),
        (existing, new) => *existing = new,
    }
}

/// add/replace of a single-valued complex attribute: sub-attributes are merged (RFC 7644 §3.5.2.3), except that a
/// new `value` (the manager's id) replaces the whole value, so no stale `$ref`/`displayName` of the previous one
/// survives.
fn merge_complex(container: &mut Map<String, Value>, attr: &AttributeDef, new: Value) {
    match (container.get_mut(&attr.name), new) {
        (Some(Value::Object(cur)), Value::Object(new)) => {
            let identity_changed = attr.sub("value").is_some()
                && new
                    .get("value")
                    .is_some_and(|nv| cur.get("value").is_some_and(|cv| cv != nv));
            if identity_changed {
                *cur = new;
            } else {
                cur.extend(new);
            }
        }
        (_, new) => {
            container.insert(attr.name.clone(), new);
        }
    }
}

/// remove with a value list on a multi-valued attribute: removes the elements matching a listed one (every
/// sub-attribute the listed one gives is equal). Listed values that are not there are ignored.
fn remove_values(
    container: &mut Map<String, Value>,
    attr: &AttributeDef,
    value: &Value,
    label: &str,
) -> Result<(), ScimError> {
    let Some(Value::Array(listed)) = attr.coerce(value, label)? else {
        return Ok(());
    };
    let mut items = take_elements(container, attr);
    items.retain(|e| !listed.iter().any(|l| element_matches(attr, e, l)));
    put_elements(container, attr, items);
    Ok(())
}

fn element_matches(attr: &AttributeDef, element: &Value, listed: &Value) -> bool {
    match (element, listed) {
        (Value::Object(e), Value::Object(l)) => l
            .iter()
            .all(|(k, lv)| e.get(k).is_some_and(|ev| values_equal(attr.sub(k), ev, lv))),
        _ => values_equal(Some(attr), element, listed),
    }
}

/// An operation on `attr.sub` without a filter: the sub-attribute of a single-valued complex attribute, or of
/// every element of a multi-valued one (a first element is created when there is none).
fn sub_attribute(
    kind: OpKind,
    container: &mut Map<String, Value>,
    attr: &AttributeDef,
    sub: &AttributeDef,
    value: &Value,
    label: &str,
) -> Result<(), ScimError> {
    let new = match kind {
        OpKind::Remove => None,
        OpKind::Add | OpKind::Replace => sub.coerce(value, label)?,
    };
    let mut items = take_elements(container, attr);
    if items.is_empty() {
        if let Some(v) = new {
            items.push(Value::Object(Map::from_iter([(sub.name.clone(), v)])));
        }
    } else {
        for item in &mut items {
            set_sub(item, sub, new.clone(), label)?;
        }
    }
    single_primary(&mut items, None);
    put_elements(container, attr, items);
    Ok(())
}

/// Sets (`Some`) or removes (`None`) a sub-attribute of one element, honouring `immutable`.
fn set_sub(item: &mut Value, sub: &AttributeDef, new: Option<Value>, label: &str) -> Result<(), ScimError> {
    check_immutable(sub, item.get(&sub.name), new.as_ref(), label)?;
    if !item.is_object() {
        *item = Value::Object(Map::new());
    }
    if let Value::Object(obj) = item {
        match new {
            Some(v) => obj.insert(sub.name.clone(), v),
            None => obj.remove(&sub.name),
        };
    }
    Ok(())
}

/// An operation on `attr[filter]` or `attr[filter].sub`. Matching nothing: remove is a no-op (Okta removes
/// members that are not there; Entra removes a manager by filter); add/replace with a filter made of `eq`
/// comparisons creates the element from them (Entra's `emails[type eq "work"].value`,
/// `roles[primary eq "True"].value`), any other filter is 400 noTarget. A single-valued complex attribute
/// (`manager[value eq "…"]`) is treated as a list of at most one.
fn filtered(
    kind: OpKind,
    container: &mut Map<String, Value>,
    attr: &AttributeDef,
    filter: &Filter,
    sub: Option<&AttributeDef>,
    value: &Value,
    label: &str,
) -> Result<(), ScimError> {
    let mut items = take_elements(container, attr);
    let matched: Vec<bool> = items.iter().map(|e| eval(filter, e, attr)).collect();
    let any_match = matched.contains(&true);
    let mut keep = None;
    match (kind, sub) {
        (OpKind::Remove, None) => {
            let mut flags = matched.iter();
            items.retain(|_| !flags.next().copied().unwrap_or(false));
        }
        (OpKind::Remove, Some(sub)) => {
            for (item, _) in items.iter_mut().zip(&matched).filter(|(_, m)| **m) {
                set_sub(item, sub, None, label)?;
            }
        }
        (OpKind::Add | OpKind::Replace, Some(sub)) => {
            let new = sub.coerce(value, label)?;
            if any_match {
                for (i, (item, _)) in items
                    .iter_mut()
                    .zip(&matched)
                    .enumerate()
                    .filter(|(_, (_, m))| **m)
                {
                    set_sub(item, sub, new.clone(), label)?;
                    keep = Some(i);
                }
            } else if let Some(v) = new {
                let mut element = create_seed(filter, attr, label)?;
                element.insert(sub.name.clone(), v);
                items.push(Value::Object(element));
                keep = Some(items.len() - 1);
            }
        }
        (OpKind::Add | OpKind::Replace, None) => {
            // Lenient: the element sent as a one-element array.
            let value = match value {
                Value::Array(items) if items.len() == 1 => items.first().unwrap_or(value),
                _ => value,
            };
            let new = match attr.coerce_element(value, label)? {
                Some(Value::Object(obj)) => Some(obj),
                Some(_) => return Err(ScimError::invalid_value(format!("'{label}' values are objects"))),
                None => None,
            };
            match (new, any_match) {
                (None, true) if kind == OpKind::Replace => {
                    let mut flags = matched.iter();
                    items.retain(|_| !flags.next().copied().unwrap_or(false));
                }
                (None, _) => {}
                (Some(new), true) => {
                    for (i, (item, _)) in items
                        .iter_mut()
                        .zip(&matched)
                        .enumerate()
                        .filter(|(_, (_, m))| **m)
                    {
                        if kind == OpKind::Add {
                            merge_into(item, Value::Object(new.clone()));
                        } else {
                            let mut fresh = eq_seed(filter, attr, 0).unwrap_or_default();
                            fresh.extend(new.clone());
                            *item = Value::Object(fresh);
                        }
                        keep = Some(i);
                    }
                }
                (Some(new), false) => {
                    let mut element = create_seed(filter, attr, label)?;
                    element.extend(new);
                    items.push(Value::Object(element));
                    keep = Some(items.len() - 1);
                }
            }
        }
    }
    if !attr.multi_valued && items.len() > 1 {
        // A single-valued attribute whose value did not match: the created one replaces it.
        items.drain(..items.len() - 1);
        keep = keep.map(|_| 0);
    }
    single_primary(&mut items, keep);
    put_elements(container, attr, items);
    Ok(())
}

/// The element to create when add/replace with a value filter matches nothing, or 400 noTarget.
fn create_seed(filter: &Filter, attr: &AttributeDef, label: &str) -> Result<Map<String, Value>, ScimError> {
    eq_seed(filter, attr, 0)
        .ok_or_else(|| ScimError::no_target(format!("no value of '{label}' matches the filter")))
}

/// The sub-attributes a filter made only of `eq` comparisons joined by `and` pins down (`type eq "work"` →
/// `{"type": "work"}`, `primary eq "True"` → `{"primary": true}`), or `None`.
fn eq_seed(filter: &Filter, attr: &AttributeDef, depth: usize) -> Option<Map<String, Value>> {
    if depth > MAX_FILTER_DEPTH {
        return None;
    }
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } => {
            let sub = element_sub(attr, path)?;
            let raw = match sub.kind {
                AttrType::Boolean => Value::Bool(value.as_bool()?),
                AttrType::Integer | AttrType::Decimal => Value::Number(value.as_number()?),
                AttrType::Complex => return None,
                _ => Value::String(value.as_text()?.into_owned()),
            };
            let v = sub.coerce(&raw, &sub.name).ok()??;
            Some(Map::from_iter([(sub.name.clone(), v)]))
        }
        Filter::And(..) => {
            let mut seed = Map::new();
            for term in operands(filter, true) {
                for (k, v) in eq_seed(term, attr, depth + 1)? {
                    if seed.get(&k).is_some_and(|existing| existing != &v) {
                        return None;
                    }
                    seed.insert(k, v);
                }
            }
            Some(seed)
        }
        _ => None,
    }
}

/// The sub-attribute a path inside a value filter names (`type`, or `emails.type` inside `emails[…]`).
fn element_sub<'a>(attr: &'a AttributeDef, path: &AttrPath) -> Option<&'a AttributeDef> {
    match &path.sub {
        None => attr.sub(&path.name),
        Some(sub) if path.name.eq_ignore_ascii_case(&attr.name) => attr.sub(sub),
        Some(_) => None,
    }
}

/// Evaluates a value filter against one element of `attr` (RFC 7644 §3.4.2.2 semantics, the element's
/// sub-attribute definitions for caseExact and types). A filter nested too deeply matches nothing.
fn eval(filter: &Filter, element: &Value, attr: &AttributeDef) -> bool {
    eval_at(filter, element, attr, 0).unwrap_or(false)
}

/// `None`: nested deeper than `MAX_FILTER_DEPTH`.
fn eval_at(filter: &Filter, element: &Value, attr: &AttributeDef, depth: usize) -> Option<bool> {
    if depth > MAX_FILTER_DEPTH {
        return None;
    }
    let next = |f: &Filter| eval_at(f, element, attr, depth + 1);
    Some(match filter {
        Filter::Compare { path, op, value } => {
            element_sub(attr, path).is_some_and(|sub| compare(sub, element.get(&sub.name), *op, value))
        }
        Filter::Present(path) => element_sub(attr, path)
            .and_then(|sub| element.get(&sub.name))
            .is_some_and(|v| !is_unassigned(v)),
        Filter::And(..) => {
            let mut all = true;
            for term in operands(filter, true) {
                all &= next(term)?;
            }
            all
        }
        Filter::Or(..) => {
            let mut any = false;
            for term in operands(filter, false) {
                any |= next(term)?;
            }
            any
        }
        Filter::Not(a) => !next(a)?,
        Filter::ValuePath { .. } => false,
    })
}

/// The operands of a chain of `and` (or `or`) nodes, however the chain is nested, without recursion.
fn operands(filter: &Filter, and: bool) -> Vec<&Filter> {
    let mut out = Vec::new();
    let mut stack = vec![filter];
    while let Some(node) = stack.pop() {
        match (node, and) {
            (Filter::And(l, r), true) | (Filter::Or(l, r), false) => {
                stack.push(r);
                stack.push(l);
            }
            _ => out.push(node),
        }
    }
    out
}

fn ordered(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn compare(def: &AttributeDef, actual: Option<&Value>, op: CompareOp, expected: &CompValue) -> bool {
    let actual = actual.filter(|v| !v.is_null());
    let (actual, expected) = match (actual, expected) {
        (None, CompValue::Null) => return op == CompareOp::Eq,
        (None, _) | (Some(_), CompValue::Null) => return op == CompareOp::Ne,
        (Some(a), e) => (a, e),
    };
    match def.kind {
        AttrType::Boolean => match (actual.as_bool(), expected.as_bool()) {
            (Some(a), Some(e)) => matches!(op, CompareOp::Eq | CompareOp::Ne) && ordered(op, a.cmp(&e)),
            _ => false,
        },
        AttrType::Integer | AttrType::Decimal => {
            match (actual.as_f64(), expected.as_number().and_then(|n| n.as_f64())) {
                (Some(a), Some(e)) => a.partial_cmp(&e).is_some_and(|ord| ordered(op, ord)),
                _ => false,
            }
        }
        AttrType::DateTime => match (actual.as_str(), expected.as_text()) {
            (Some(a), Some(e)) if matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) => {
                compare_strings(def.case_exact, a, &e, op)
            }
            (Some(a), Some(e)) => match (parse_datetime(a), parse_datetime(&e)) {
                (Some(a), Some(e)) => ordered(op, a.cmp(&e)),
                _ => false,
            },
            _ => false,
        },
        AttrType::String | AttrType::Reference | AttrType::Binary => {
            match (actual.as_str(), expected.as_text()) {
                (Some(a), Some(e)) => compare_strings(def.case_exact, a, &e, op),
                _ => false,
            }
        }
        AttrType::Complex => false,
    }
}

fn compare_strings(case_exact: bool, a: &str, e: &str, op: CompareOp) -> bool {
    let (a, e): (Cow<'_, str>, Cow<'_, str>) = if case_exact {
        (Cow::Borrowed(a), Cow::Borrowed(e))
    } else {
        (Cow::Owned(fold(a)), Cow::Owned(fold(e)))
    };
    match op {
        CompareOp::Co => a.contains(e.as_ref()),
        CompareOp::Sw => a.starts_with(e.as_ref()),
        CompareOp::Ew => a.ends_with(e.as_ref()),
        _ => ordered(op, a.cmp(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::ScimType;
    use crate::scim::schema::registry;
    use crate::scim::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
    use serde_json::json;

    fn ops(body: &Value) -> Vec<PatchOp> {
        parse_request(body, 1000).unwrap()
    }

    fn patch(rt: &ResourceType, resource: &Value, operations: Value) -> Result<Value, ScimError> {
        let mut body = json!({"schemas": [PATCH_OP_SCHEMA]});
        body["Operations"] = operations;
        apply(rt, resource, &parse_request(&body, usize::MAX)?)
    }

    fn user_patch(resource: &Value, operations: Value) -> Result<Value, ScimError> {
        patch(registry().user(), resource, operations)
    }

    fn group_patch(resource: &Value, operations: Value) -> Result<Value, ScimError> {
        patch(registry().group(), resource, operations)
    }

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA],
            "userName": "test.user@okta.local",
            "name": {"givenName": "Test", "familyName": "User"},
            "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
            "displayName": "Test User",
            "externalId": "00ujl29u0le5T6Aj10h7",
            "active": true
        })
    }

    fn group() -> Value {
        json!({"schemas": [GROUP_SCHEMA], "displayName": "Eng",
               "members": [{"value": "u1", "display": "one"}, {"value": "u2"}]})
    }

    fn err_type(r: Result<Value, ScimError>) -> Option<ScimType> {
        r.unwrap_err().scim_type
    }

    // --- parsing ---

    #[test]
    fn parse_ops_case_insensitive() {
        let parsed = ops(&json!({"schemas": [PATCH_OP_SCHEMA], "operations": [
            {"op": "Add", "path": "nickName", "value": "Babs"},
            {"OP": "REPLACE", "Path": "active", "Value": false},
            {"op": "Remove", "path": "title", "name": "ignored"},
        ]}));
        let kinds: Vec<_> = parsed.iter().map(|o| o.op).collect();
        assert_eq!(kinds, [OpKind::Add, OpKind::Replace, OpKind::Remove]);
        assert_eq!(parsed[1].value, Some(json!(false)));
        assert!(parsed[2].value.is_none());
        assert!(ops(&json!({"Operations": []})).is_empty());
    }

    #[test]
    fn parse_errors() {
        let bad = |body: Value| parse_request(&body, 1000).unwrap_err();
        assert_eq!(bad(json!([])).scim_type, Some(ScimType::InvalidSyntax));
        assert_eq!(
            bad(json!({"schemas": [PATCH_OP_SCHEMA]})).scim_type,
            Some(ScimType::InvalidSyntax)
        );
        assert_eq!(
            bad(json!({"schemas": ["urn:x"], "Operations": []})).scim_type,
            Some(ScimType::InvalidSyntax)
        );
        assert_eq!(
            bad(json!({"Operations": [{"op": "move"}]})).scim_type,
            Some(ScimType::InvalidSyntax)
        );
        assert_eq!(
            bad(json!({"Operations": ["add"]})).scim_type,
            Some(ScimType::InvalidSyntax)
        );
        assert_eq!(
            bad(json!({"Operations": [{"op": "remove"}]})).scim_type,
            Some(ScimType::NoTarget)
        );
        assert_eq!(
            bad(json!({"Operations": [{"op": "remove", "path": ""}]})).scim_type,
            Some(ScimType::NoTarget)
        );
        assert_eq!(
            bad(json!({"Operations": [{"op": "add", "path": "x"}]})).scim_type,
            Some(ScimType::InvalidValue)
        );
        assert_eq!(
            bad(json!({"Operations": [{"op": "add", "path": 3, "value": 1}]})).scim_type,
            Some(ScimType::InvalidPath)
        );
        assert_eq!(
            bad(json!({"Operations": [{"op": "add", "path": "emails[", "value": 1}]})).scim_type,
            Some(ScimType::InvalidPath)
        );
    }

    // --- simple paths, RFC semantics ---

    #[test]
    fn entra_capitalised_add_single_valued() {
        let out = user_patch(
            &user(),
            json!([{"op": "Add", "path": "nickName", "value": "Babs"}]),
        )
        .unwrap();
        assert_eq!(out["nickName"], "Babs");
        let out = user_patch(
            &out,
            json!([{"op": "Replace", "path": "userName", "value": "5b50642d@testuser.com"}]),
        )
        .unwrap();
        assert_eq!(out["userName"], "5b50642d@testuser.com");
    }

    #[test]
    fn entra_string_booleans() {
        for (value, expected) in [("False", false), ("false", false), ("True", true), ("TRUE", true)] {
            let out = user_patch(
                &user(),
                json!([{"op": "Replace", "path": "active", "value": value}]),
            )
            .unwrap();
            assert_eq!(out["active"], expected, "{value}");
        }
        let out = user_patch(
            &user(),
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .unwrap();
        assert_eq!(out["active"], false);
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "active", "value": "no"}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidValue));
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "active", "value": "x"}]),
        );
        assert!(r.unwrap_err().detail.contains("active"));
    }

    #[test]
    fn okta_no_path_active_and_password() {
        let out = user_patch(&user(), json!([{"op": "replace", "value": {"active": false}}])).unwrap();
        assert_eq!(out["active"], false);
        let out = user_patch(&out, json!([{"op": "replace", "value": {"active": true}}])).unwrap();
        assert_eq!(out, user());
        let out = user_patch(
            &user(),
            json!([{"op": "replace", "value": {"password": "N3w-P4ssw0rd!"}}]),
        )
        .unwrap();
        assert_eq!(out, user());
        let out = user_patch(
            &user(),
            json!([{"op": "replace", "path": "password", "value": "x"}]),
        )
        .unwrap();
        assert_eq!(out, user());
        let r = user_patch(&user(), json!([{"op": "replace", "value": "active"}]));
        assert_eq!(err_type(r), Some(ScimType::InvalidValue));
    }

    #[test]
    fn entra_no_path_dotted_and_urn_keys() {
        let out = user_patch(&user(), json!([
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "TestMhvaes@test.microsoft.com"},
            {"op": "replace", "value": {
                "displayName": "Bjfe", "name.givenName": "Kkom", "name.familyName": "Unua",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Aklq",
                "unknownThing": 1, "schemas": ["x"]
            }}
        ]))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
                "userName": "test.user@okta.local",
                "name": {"givenName": "Kkom", "familyName": "Unua"},
                "emails": [{"primary": true, "value": "TestMhvaes@test.microsoft.com", "type": "work"}],
                "displayName": "Bjfe",
                "externalId": "00ujl29u0le5T6Aj10h7",
                "active": true,
                ENTERPRISE_USER_SCHEMA: {"employeeNumber": "Aklq"}
            })
        );
        // pond/scimitar#123: the same map with "add"; and a nested extension object.
        let out = user_patch(
            &user(),
            json!([{"op": "add", "value": {
            "name.middleName": "J", ENTERPRISE_USER_SCHEMA: {"department": "Eng"}}}]),
        )
        .unwrap();
        assert_eq!(out["name"]["middleName"], "J");
        assert_eq!(out[ENTERPRISE_USER_SCHEMA]["department"], "Eng");
        assert!(out.get("name.middleName").is_none());
    }

    #[test]
    fn entra_replace_multiple_legacy() {
        let out = user_patch(&user(), json!([
            {"op": "Replace", "path": "displayName", "value": "Pvlo"},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "TestBcwqnm@test.microsoft.com"},
            {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
            {"op": "Replace", "path": "name.familyName", "value": "Pkqf"},
            {"op": "Replace", "path": "externalId", "value": "Eqpj"},
            {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "Eqpj"}
        ]))
        .unwrap();
        assert_eq!(out["displayName"], "Pvlo");
        assert_eq!(
            out["emails"],
            json!([{"primary": true, "value": "TestBcwqnm@test.microsoft.com", "type": "work"}])
        );
        assert_eq!(out["name"], json!({"givenName": "Gtfd", "familyName": "Pkqf"}));
        assert_eq!(out["externalId"], "Eqpj");
        assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({"employeeNumber": "Eqpj"}));
        assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
    }

    #[test]
    fn names_are_case_insensitive_and_canonical() {
        let out = user_patch(
            &user(),
            json!([
                {"op": "replace", "path": "NAME.GIVENNAME", "value": "G"},
                {"op": "add", "path": "Emails", "value": [{"Value": "b@x", "Type": "home"}]}
            ]),
        )
        .unwrap();
        assert_eq!(out["name"]["givenName"], "G");
        assert_eq!(out["emails"][1], json!({"value": "b@x", "type": "home"}));
    }

    #[test]
    fn complex_replace_merges_and_add_creates() {
        let out = user_patch(
            &user(),
            json!([{"op": "replace", "path": "name", "value": {"middleName": "M"}}]),
        )
        .unwrap();
        assert_eq!(
            out["name"],
            json!({"givenName": "Test", "familyName": "User", "middleName": "M"})
        );
        let mut bare = user();
        bare.as_object_mut().unwrap().remove("name");
        let out = user_patch(
            &bare,
            json!([{"op": "add", "path": "name.familyName", "value": "F"}]),
        )
        .unwrap();
        assert_eq!(out["name"], json!({"familyName": "F"}));
    }

    #[test]
    fn multi_valued_add_replace_remove() {
        let out = user_patch(
            &user(),
            json!([{"op": "add", "path": "emails", "value": {"value": "h@x", "type": "home"}}]),
        )
        .unwrap();
        assert_eq!(out["emails"].as_array().unwrap().len(), 2);
        let out = user_patch(
            &out,
            json!([{"op": "replace", "path": "emails", "value": [{"value": "only@x"}]}]),
        )
        .unwrap();
        assert_eq!(out["emails"], json!([{"value": "only@x"}]));
        let out = user_patch(&out, json!([{"op": "remove", "path": "emails"}])).unwrap();
        assert!(out.get("emails").is_none());
        let out = user_patch(&user(), json!([{"op": "replace", "path": "emails", "value": []}])).unwrap();
        assert!(out.get("emails").is_none());
    }

    #[test]
    fn add_skips_duplicates_and_merges_same_value() {
        let body = json!([{"op": "add", "path": "emails", "value": [
            {"primary": true, "value": "test.user@okta.local", "type": "work"},
            {"value": "TEST.USER@okta.local", "type": "work", "display": "Work"}]}]);
        let out = user_patch(&user(), body).unwrap();
        assert_eq!(
            out["emails"],
            json!([{"primary": true, "value": "TEST.USER@okta.local", "type": "work", "display": "Work"}])
        );
        let out = group_patch(
            &group(),
            json!([{"op": "Add", "path": "members", "value": [
            {"$ref": null, "value": "u1"}, {"$ref": null, "value": "u3"}]}]),
        )
        .unwrap();
        assert_eq!(
            out["members"],
            json!([{"value": "u1", "display": "one"}, {"value": "u2"}, {"value": "u3"}])
        );
        // case-exact member ids: "U1" is another member
        let out = group_patch(
            &group(),
            json!([{"op": "add", "path": "members", "value": [{"value": "U1"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn primary_true_clears_the_others() {
        let out = user_patch(
            &user(),
            json!([{"op": "add", "path": "emails",
            "value": [{"value": "h@x", "type": "home", "primary": true}]}]),
        )
        .unwrap();
        assert_eq!(out["emails"][0]["primary"], false);
        assert_eq!(out["emails"][1]["primary"], true);
        let out = user_patch(
            &out,
            json!([{"op": "replace", "path": "emails[type eq \"work\"].primary", "value": "True"}]),
        )
        .unwrap();
        assert_eq!(out["emails"][0]["primary"], true);
        assert_eq!(out["emails"][1]["primary"], false);
        let out = user_patch(
            &out,
            json!([{"op": "replace", "path": "emails[type eq \"home\"]",
            "value": {"value": "h2@x", "primary": true}}]),
        )
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([
            {"primary": false, "value": "test.user@okta.local", "type": "work"},
            {"type": "home", "value": "h2@x", "primary": true}])
        );
    }

    // --- value filters ---

    #[test]
    fn entra_create_on_missing_value_path() {
        let out = user_patch(
            &user(),
            json!([
            {"op": "add", "path": "emails[type eq \"other\"].value", "value": "other-email@example.com"}]),
        )
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([
            {"primary": true, "value": "test.user@okta.local", "type": "work"},
            {"type": "other", "value": "other-email@example.com"}])
        );
        // Again: the element now exists and is updated, not duplicated.
        let out = user_patch(
            &out,
            json!([
            {"op": "add", "path": "emails[type eq \"other\"].value", "value": "o2@example.com"}]),
        )
        .unwrap();
        assert_eq!(out["emails"].as_array().unwrap().len(), 2);
        assert_eq!(out["emails"][1]["value"], "o2@example.com");
        let out = user_patch(
            &user(),
            json!([
            {"op": "Replace", "path": "phoneNumbers[type eq \"work\"].value", "value": "+1-555-0100"},
            {"op": "Replace", "path": "addresses[type eq \"work\"].postalCode", "value": "94105"},
            {"op": "Replace", "path": "addresses[type eq \"work\"].locality", "value": "SF"}]),
        )
        .unwrap();
        assert_eq!(
            out["phoneNumbers"],
            json!([{"type": "work", "value": "+1-555-0100"}])
        );
        assert_eq!(
            out["addresses"],
            json!([{"type": "work", "postalCode": "94105", "locality": "SF"}])
        );
        let mut no_emails = user();
        no_emails.as_object_mut().unwrap().remove("emails");
        let out = user_patch(&no_emails, json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"}]))
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([{"type": "work", "value": "updatedEmail@microsoft.com"}])
        );
    }

    #[test]
    fn entra_roles_primary_string_boolean_filter() {
        let out = user_patch(
            &user(),
            json!([{"op": "replace", "path": "roles[primary eq \"True\"].value", "value": "Admin"}]),
        )
        .unwrap();
        assert_eq!(out["roles"], json!([{"primary": true, "value": "Admin"}]));
        let out = user_patch(
            &out,
            json!([{"op": "replace", "path": "roles[primary eq \"true\"].value", "value": "Owner"}]),
        )
        .unwrap();
        assert_eq!(out["roles"], json!([{"primary": true, "value": "Owner"}]));
        let out = user_patch(
            &out,
            json!([{"op": "add", "path": "roles", "value": [{"value": "Dev", "primary": "True"}]}]),
        )
        .unwrap();
        assert_eq!(
            out["roles"],
            json!([{"primary": false, "value": "Owner"}, {"value": "Dev", "primary": true}])
        );
    }

    #[test]
    fn entra_roles_json_string_stored_verbatim() {
        let role =
            "{\"id\":\"827f0d2e\",\"value\":\"DocumentMgmt-Admin\",\"displayName\":\"DocumentMgmt Admin\"}";
        let out = user_patch(
            &user(),
            json!([{"op": "Add", "path": "roles", "value": [{"value": role}]}]),
        )
        .unwrap();
        assert_eq!(out["roles"], json!([{"value": role}]));
    }

    #[test]
    fn filter_matching_nothing() {
        // replace/add with a non-eq filter: RFC noTarget.
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "emails[value co \"nope\"].value", "value": "x"}]),
        );
        assert_eq!(err_type(r), Some(ScimType::NoTarget));
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "emails[type ne \"work\"]", "value": {"value": "x"}}]),
        );
        assert_eq!(err_type(r), Some(ScimType::NoTarget));
        // remove: a no-op (Okta removes members that are not there).
        let out = group_patch(
            &group(),
            json!([{"op": "remove", "path": "members[value eq \"89bb1940\"]"}]),
        )
        .unwrap();
        assert_eq!(out, group());
        let out = user_patch(
            &user(),
            json!([{"op": "remove", "path": "emails[type eq \"home\"].value"}]),
        )
        .unwrap();
        assert_eq!(out, user());
    }

    #[test]
    fn remove_with_filter_and_sub_attribute() {
        let out = group_patch(
            &group(),
            json!([{"op": "remove", "path": "members[value eq \"u2\"]"}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u1", "display": "one"}]));
        let out = group_patch(
            &out,
            json!([{"op": "remove", "path": "members[value eq \"u1\"]"}]),
        )
        .unwrap();
        assert_eq!(out, json!({"schemas": [GROUP_SCHEMA], "displayName": "Eng"}));
        let out = user_patch(
            &user(),
            json!([{"op": "remove", "path": "emails[type eq \"work\"].primary"}]),
        )
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([{"value": "test.user@okta.local", "type": "work"}])
        );
        let out = user_patch(
            &user(),
            json!([{"op": "remove", "path": "emails[type eq \"WORK\" and value sw \"TEST\"]"}]),
        )
        .unwrap();
        assert!(out.get("emails").is_none());
    }

    #[test]
    fn replace_filtered_element() {
        let out = user_patch(
            &user(),
            json!([{"op": "replace", "path": "emails[type eq \"work\"]",
            "value": {"value": "new@x"}}]),
        )
        .unwrap();
        assert_eq!(out["emails"], json!([{"type": "work", "value": "new@x"}]));
        let out = user_patch(
            &user(),
            json!([{"op": "add", "path": "emails[type eq \"work\"]",
            "value": [{"display": "W"}]}]),
        )
        .unwrap();
        assert_eq!(out["emails"][0]["display"], "W");
        assert_eq!(out["emails"][0]["primary"], true);
    }

    // --- Group members ---

    #[test]
    fn okta_group_membership() {
        let out = group_patch(
            &group(),
            json!([{"op": "replace", "path": "members",
            "value": [{"value": "u9", "display": "second.user@okta.local"}]}]),
        )
        .unwrap();
        // `display` is computed by the server (readOnly): what a client sends is dropped.
        assert_eq!(out["members"], json!([{"value": "u9"}]));
        let out = group_patch(
            &group(),
            json!([
            {"op": "remove", "path": "members[value eq \"u2\"]"},
            {"op": "add", "path": "members", "value": [{"value": "u3", "display": "test.user@okta.local"}]}]),
        )
        .unwrap();
        assert_eq!(
            out["members"],
            json!([{"value": "u1", "display": "one"}, {"value": "u3"}])
        );
        let out = group_patch(
            &group(),
            json!([{"op": "replace", "value": {"id": "abf4dd94", "displayName": "Renamed"}}]),
        )
        .unwrap();
        assert_eq!(out["displayName"], "Renamed");
        assert!(out.get("id").is_none());
    }

    #[test]
    fn entra_remove_members_with_value_list() {
        let out = group_patch(
            &group(),
            json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "u1"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u2"}]));
        let out = group_patch(
            &group(),
            json!([{"op": "Remove", "path": "members", "value": [{"value": "nobody"}]}]),
        )
        .unwrap();
        assert_eq!(out, group());
        // Without a value list: all members go (RFC).
        let out = group_patch(&group(), json!([{"op": "remove", "path": "members"}])).unwrap();
        assert!(out.get("members").is_none());
    }

    #[test]
    fn members_value_is_immutable() {
        let r = group_patch(
            &group(),
            json!([{"op": "replace", "path": "members[value eq \"u1\"].value", "value": "u7"}]),
        );
        assert_eq!(err_type(r), Some(ScimType::Mutability));
        let out = group_patch(
            &group(),
            json!([{"op": "replace", "path": "members[value eq \"u1\"].value", "value": "u1"}]),
        )
        .unwrap();
        assert_eq!(out, group());
        let out = group_patch(
            &group(),
            json!([{"op": "add", "path": "members[value eq \"u5\"].value", "value": "u5"}]),
        )
        .unwrap();
        assert_eq!(out["members"][2], json!({"value": "u5"}));
    }

    // --- enterprise manager ---

    #[test]
    fn entra_manager_string_empty_and_filter() {
        let urn_manager = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
        let out = user_patch(
            &user(),
            json!([{"op": "add", "path": urn_manager, "value": "mgr-1"}]),
        )
        .unwrap();
        assert_eq!(
            out[ENTERPRISE_USER_SCHEMA],
            json!({"manager": {"value": "mgr-1"}})
        );
        assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
        let with_ref = user_patch(
            &out,
            json!([{"op": "Add", "path": "manager",
            "value": [{"$ref": "https://x/Users/mgr-1", "value": "mgr-1"}]}]),
        )
        .unwrap();
        assert_eq!(
            with_ref[ENTERPRISE_USER_SCHEMA]["manager"],
            json!({"value": "mgr-1", "$ref": "https://x/Users/mgr-1"})
        );
        let changed = user_patch(
            &with_ref,
            json!([{"op": "replace", "path": urn_manager, "value": "mgr-2"}]),
        )
        .unwrap();
        assert_eq!(
            changed[ENTERPRISE_USER_SCHEMA]["manager"],
            json!({"value": "mgr-2"})
        );
        let removed = user_patch(&out, json!([{"op": "Replace", "path": urn_manager, "value": ""}])).unwrap();
        assert_eq!(removed, user());
        let removed = user_patch(
            &out,
            json!([{"op": "remove", "path": "manager[value eq \"mgr-1\"]"}]),
        )
        .unwrap();
        assert_eq!(removed, user());
        let kept = user_patch(
            &out,
            json!([{"op": "remove", "path": "manager[value eq \"other\"]"}]),
        )
        .unwrap();
        assert_eq!(kept, out);
        let gone = user_patch(
            &user(),
            json!([{"op": "remove", "path": "manager[value eq \"mgr-1\"]"}]),
        )
        .unwrap();
        assert_eq!(gone, user());
        // `manager.displayName` is not offered (offboard does not compute it), so naming it is an invalid path.
        let r = user_patch(
            &out,
            json!([{"op": "replace", "path": "manager.displayName", "value": "Boss"}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidPath));
    }

    #[test]
    fn whole_extension_paths() {
        let out = user_patch(
            &user(),
            json!([{"op": "add", "path": ENTERPRISE_USER_SCHEMA,
            "value": {"department": "Eng", "Manager": "m"}}]),
        )
        .unwrap();
        assert_eq!(
            out[ENTERPRISE_USER_SCHEMA],
            json!({"department": "Eng", "manager": {"value": "m"}})
        );
        let out = user_patch(&out, json!([{"op": "remove", "path": ENTERPRISE_USER_SCHEMA}])).unwrap();
        assert_eq!(out, user());
    }

    // --- mutability, required, values ---

    #[test]
    fn read_only_targets() {
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "meta.lastModified", "value": "2020-01-01T00:00:00Z"}]),
        );
        assert_eq!(err_type(r), Some(ScimType::Mutability));
        let r = user_patch(
            &user(),
            json!([{"op": "add", "path": "groups", "value": [{"value": "g1"}]}]),
        );
        assert_eq!(err_type(r), Some(ScimType::Mutability));
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "value": {"groups": [{"value": "g1"}]}}]),
        );
        assert_eq!(err_type(r), Some(ScimType::Mutability));
        for ops in [
            json!([{"op": "replace", "value": {"groups": [], "id": "23a35c27"}}]),
            json!([{"op": "replace", "path": "id", "value": "23a35c27"}]),
            json!([{"op": "remove", "path": "groups"}]),
            json!([{"op": "replace", "path": "schemas", "value": [USER_SCHEMA]}]),
        ] {
            assert_eq!(user_patch(&user(), ops).unwrap(), user());
        }
        // With an id in the resource, a different one is refused.
        let mut with_id = user();
        with_id["id"] = json!("23a35c27");
        let r = user_patch(&with_id, json!([{"op": "replace", "value": {"id": "other"}}]));
        assert_eq!(err_type(r), Some(ScimType::Mutability));
    }

    #[test]
    fn required_user_name() {
        let r = user_patch(&user(), json!([{"op": "remove", "path": "userName"}]));
        assert_eq!(err_type(r), Some(ScimType::Mutability));
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "userName", "value": ""}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidValue));
        let r = group_patch(
            &group(),
            json!([{"op": "replace", "value": {"displayName": null}}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidValue));
    }

    #[test]
    fn remove_absent_is_noop_and_empty_unassigns() {
        assert_eq!(
            user_patch(&user(), json!([{"op": "remove", "path": "title"}])).unwrap(),
            user()
        );
        assert_eq!(
            user_patch(&user(), json!([{"op": "remove", "path": "name.middleName"}])).unwrap(),
            user()
        );
        let out = user_patch(
            &user(),
            json!([{"op": "replace", "path": "displayName", "value": ""}]),
        )
        .unwrap();
        assert!(out.get("displayName").is_none());
        let out = user_patch(
            &user(),
            json!([{"op": "replace", "path": "displayName", "value": null}]),
        )
        .unwrap();
        assert!(out.get("displayName").is_none());
        let out = user_patch(
            &user(),
            json!([{"op": "remove", "path": "name.givenName"},
                                            {"op": "remove", "path": "name.familyName"}]),
        )
        .unwrap();
        assert!(out.get("name").is_none());
    }

    #[test]
    fn values_are_validated() {
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "displayName", "value": "a\u{0}b"}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidValue));
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "value": {"name.givenName": "a\u{0}"}}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidValue));
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "displayName", "value": {"x": 1}}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidValue));
        let r = user_patch(
            &user(),
            json!([{"op": "add", "path": "emails", "value": [{"value": 5}]}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidValue));
    }

    #[test]
    fn unknown_paths() {
        let r = user_patch(&user(), json!([{"op": "replace", "path": "nope", "value": "x"}]));
        assert_eq!(err_type(r), Some(ScimType::InvalidPath));
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "name.nope", "value": "x"}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidPath));
        let r = user_patch(
            &user(),
            json!([{"op": "replace", "path": "userName[value eq \"x\"]", "value": "x"}]),
        );
        assert_eq!(err_type(r), Some(ScimType::InvalidPath));
        // An extension schema we do not know: ignored, as in a POST body.
        let out = user_patch(
            &user(),
            json!([{"op": "replace", "path": "urn:example:custom:1.0:User:badge", "value": "x"}]),
        )
        .unwrap();
        assert_eq!(out, user());
    }

    #[test]
    fn all_or_nothing() {
        let r = user_patch(
            &user(),
            json!([
            {"op": "replace", "path": "displayName", "value": "Changed"},
            {"op": "remove", "path": "userName"}]),
        );
        assert!(r.is_err());
        let ops = ops(&json!({"Operations": [{"op": "replace", "path": "displayName", "value": "Changed"}]}));
        let before = user();
        let after = apply(registry().user(), &before, &ops).unwrap();
        assert_eq!(before["displayName"], "Test User");
        assert_eq!(after["displayName"], "Changed");
    }

    #[test]
    fn op_built_by_hand_is_checked() {
        let op = PatchOp {
            op: OpKind::Remove,
            path: None,
            value: None,
        };
        assert_eq!(
            apply(registry().user(), &user(), &[op]).unwrap_err().scim_type,
            Some(ScimType::NoTarget)
        );
    }

    #[test]
    fn deep_filter_does_not_overflow() {
        let mut f = Filter::Present(AttrPath {
            urn: None,
            name: "value".into(),
            sub: None,
        });
        for _ in 0..10_000 {
            f = Filter::Not(Box::new(f));
        }
        let attr = registry().user().resolve_key("emails").unwrap().attr;
        assert!(!eval(&f, &json!({"value": "x"}), attr));
        let f = Filter::Not(Box::new(f));
        assert!(!eval(&f, &json!({"value": "x"}), attr));
        assert!(eq_seed(&f, attr, 0).is_none());
        // Long and/or chains (built in any shape) are not "too deep".
        let present = |n: &str| Filter::Present(AttrPath::simple(n));
        let mut chain = present("value");
        for _ in 0..5_000 {
            chain = Filter::Or(Box::new(present("display")), Box::new(chain));
        }
        assert!(eval(&chain, &json!({"value": "x"}), attr));
        let mut chain = Filter::Compare {
            path: AttrPath::simple("type"),
            op: CompareOp::Eq,
            value: CompValue::String("work".into()),
        };
        for _ in 0..5_000 {
            chain = Filter::And(Box::new(chain), Box::new(present("value")));
        }
        assert!(!eval(&chain, &json!({"type": "work"}), attr));
        assert_eq!(eq_seed(&chain, attr, 0), None);
        // Dropping a 10 000-deep Box chain recursively is fine at this depth; leak to keep the test cheap.
        std::mem::forget(f);
    }

    /// The IdP fixtures shipped with the repository.
    fn fixtures_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/idp")
    }

    fn substitute(text: &str) -> String {
        [
            ("{{userId}}", "2819c223-7f76-453a-919d-413861904646"),
            ("{{userId2}}", "89bb1940-b905-4575-9e7f-6f887cfb368e"),
            ("{{managerId}}", "7a1e0c55-0000-4000-8000-00000000abcd"),
            ("{{groupId}}", "abf4dd94-a4c0-4f67-89c9-76b03340cb9b"),
            ("{{pascalUserId}}", "3f2a1b0c-9d8e-4f7a-6b5c-4d3e2f1a0b9c"),
        ]
        .iter()
        .fold(text.to_owned(), |t, (k, v)| t.replace(k, v))
    }

    /// The fixtures README's rule: object keys case-insensitively and recursively, every listed array element
    /// matches some element. `id` is the HTTP layer's, not the stored form's.
    fn contains_subset(actual: &Value, expected: &Value) -> bool {
        match (actual, expected) {
            (Value::Object(a), Value::Object(e)) => {
                e.iter().filter(|(k, _)| k.as_str() != "id").all(|(k, ev)| {
                    a.iter()
                        .any(|(ak, av)| ak.eq_ignore_ascii_case(k) && contains_subset(av, ev))
                })
            }
            (Value::Array(a), Value::Array(e)) => {
                e.iter().all(|ev| a.iter().any(|av| contains_subset(av, ev)))
            }
            _ => actual == expected,
        }
    }

    #[test]
    fn every_fixture_patch_body_is_accepted() {
        let dir = fixtures_dir();
        let base_user = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "active": true,
            "emails": [{"primary": true, "type": "work", "value": "Test_User_11bb11bb@testuser.com"}],
            "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
            ENTERPRISE_USER_SCHEMA: {"department": "Eng"}
        });
        let base_group = json!({"schemas": [GROUP_SCHEMA], "displayName": "Test SCIMv2", "members": [
            {"value": substitute("{{userId}}")}, {"value": substitute("{{userId2}}")}]});
        let mut seen = 0;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for file in entries
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let fixture: Value =
                serde_json::from_str(&substitute(&std::fs::read_to_string(file).unwrap())).unwrap();
            if fixture["method"] != "PATCH" {
                continue;
            }
            seen += 1;
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let (rt, base) = if fixture["path"].as_str().unwrap().starts_with("/Groups") {
                (registry().group(), &base_group)
            } else {
                (registry().user(), &base_user)
            };
            let ops = parse_request(&fixture["body"], 1000).unwrap_or_else(|e| panic!("{name}: {e}"));
            let out = apply(rt, base, &ops).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected = &fixture["expected_body_subset"];
            assert!(
                expected.is_null() || contains_subset(&out, expected),
                "{name}: {out} lacks {expected}"
            );
        }
        assert!(seen >= 28, "only {seen} PATCH fixtures");
    }

    #[test]
    fn compare_semantics() {
        let emails = registry().user().resolve_key("emails").unwrap().attr;
        let value = emails.sub("value").unwrap();
        let s = |x: &str| CompValue::String(x.into());
        assert!(compare(
            value,
            Some(&json!("A@X.com")),
            CompareOp::Eq,
            &s("a@x.COM")
        ));
        assert!(compare(value, Some(&json!("A@X.com")), CompareOp::Ew, &s(".com")));
        assert!(compare(value, None, CompareOp::Ne, &s("x")));
        assert!(compare(value, None, CompareOp::Eq, &CompValue::Null));
        assert!(!compare(
            value,
            Some(&json!("a")),
            CompareOp::Eq,
            &CompValue::Null
        ));
        let primary = emails.sub("primary").unwrap();
        assert!(compare(primary, Some(&json!(true)), CompareOp::Eq, &s("True")));
        assert!(!compare(
            primary,
            Some(&json!(true)),
            CompareOp::Gt,
            &CompValue::Bool(false)
        ));
        let members_value = registry()
            .group()
            .resolve_key("members.value")
            .unwrap()
            .sub
            .unwrap();
        assert!(!compare(
            members_value,
            Some(&json!("U1")),
            CompareOp::Eq,
            &s("u1")
        ));
        let created = registry()
            .user()
            .resolve_key("meta.created")
            .unwrap()
            .sub
            .unwrap();
        assert!(compare(
            created,
            Some(&json!("2011-05-13T04:42:34Z")),
            CompareOp::Gt,
            &s("2011-05-13T05:42:34+02:00")
        ));
    }

    /// 10 000 operations apply (one add run, then alternating kinds), and a run of adds gives what applying the
    /// adds one at a time gives. Timing is in `benches/filter.rs`, not here.
    #[test]
    fn ten_thousand_operations_apply_and_runs_match_one_by_one() {
        let user =
            json!({"schemas": [USER_SCHEMA], "userName": "a", "emails": [{"value": "a@x", "primary": true}]});
        let adds: Vec<Value> = (0..10_000)
            .map(|i| json!({"op": "add", "path": "emails", "value": [{"value": format!("e{i}@x"), "type": "work"}]}))
            .collect();
        let out = user_patch(&user, Value::Array(adds)).unwrap();
        assert_eq!(out["emails"].as_array().unwrap().len(), 10_001);
        let mixed: Vec<Value> = (0..10_000)
            .map(|i| {
                if i % 2 == 0 {
                    json!({"op": "replace", "path": "displayName", "value": format!("n{i}")})
                } else {
                    json!({"op": "add", "path": "phoneNumbers", "value": [{"value": format!("+{i}")}]})
                }
            })
            .collect();
        let out = user_patch(&user, Value::Array(mixed)).unwrap();
        assert_eq!(out["phoneNumbers"].as_array().unwrap().len(), 5_000);
        assert_eq!(out["displayName"], "n9998");
        let group = json!({"schemas": [GROUP_SCHEMA], "displayName": "g"});
        let renames: Vec<Value> = (0..10_000)
            .map(|i| json!({"op": "replace", "value": {"displayName": format!("g{i}")}}))
            .collect();
        assert_eq!(
            group_patch(&group, Value::Array(renames)).unwrap()["displayName"],
            "g9999"
        );

        let run = json!([
            {"op": "add", "path": "emails", "value": [{"value": "B@x", "primary": true}, {"value": "c@x", "primary": true}]},
            {"op": "add", "path": "emails", "value": {"value": "a@X", "type": "work"}},
            {"op": "replace", "path": "displayName", "value": "between"},
            {"op": "add", "path": "emails", "value": [{"value": "a@x", "type": "work"}]},
            {"op": "add", "path": "phoneNumbers", "value": [{"value": "+1", "primary": true}]},
            {"op": "add", "path": "emails", "value": [{"value": "d@x", "type": "home", "primary": true}]},
            {"op": "add", "path": "emails", "value": [{"value": "b@x", "primary": false}, {"value": "e@x"}]},
            {"op": "replace", "path": "emails[value eq \"e@x\"].type", "value": "other"},
            {"op": "add", "path": "emails", "value": [{"value": "E@x", "type": "other", "primary": true}]}
        ]);
        let together = user_patch(&user, run.clone()).unwrap();
        let mut one_by_one = user.clone();
        for op in run.as_array().unwrap() {
            one_by_one = user_patch(&one_by_one, json!([op])).unwrap();
        }
        assert_eq!(together, one_by_one);
        assert_eq!(together["emails"].as_array().unwrap().len(), 5, "{together}");
    }
}
