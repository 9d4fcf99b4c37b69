//! `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9): which attributes of a full resource
//! representation go into a response.
//!
//! It owns the `returned` characteristic at response time: `always` attributes (`id`, `schemas`, …) survive any
//! projection, `never` ones (`password`) never appear, `request` ones only when named, and `attributes` wins over
//! `excludedAttributes`. Names are case-insensitive; sub-attribute (`name.givenName`, `emails.value`,
//! `meta.lastModified`), URN-qualified (`urn:…:enterprise:2.0:User:employeeNumber`) and whole-schema
//! (`urn:…:enterprise:2.0:User`) paths work. Unknown names are ignored. Pure JSON in, JSON out.

use serde_json::{Map, Value};

use super::ScimError;
use super::filter::AttrPath;
use super::schema::{AttributeDef, Resolved, ResourceType, Returned, split_attr_key};

/// A parsed `attributes` / `excludedAttributes` pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    /// Non-empty: only these (plus `returned: always`); `excluded` is then ignored.
    attributes: Vec<AttrPath>,
    excluded: Vec<AttrPath>,
}

/// A request path resolved against a resource type.
enum Target<'a> {
    /// A whole schema (`urn:…:enterprise:2.0:User`): every attribute of it.
    Schema(&'a str),
    Attr(Resolved<'a>),
}

/// What a list says about one attribute.
#[derive(Debug, PartialEq)]
enum Named<'a> {
    No,
    Whole,
    /// Only these sub-attributes (canonical names).
    Subs(Vec<&'a str>),
}

impl Projection {
    /// Parses the two comma-separated lists (RFC 7644 §3.4.2.5). Empty items are skipped; an item that is not an
    /// attribute path is 400 invalidPath.
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> Result<Self, ScimError> {
        let attributes = parse_list("attributes", attributes)?;
        let excluded = if attributes.is_empty() {
            parse_list("excludedAttributes", excluded)?
        } else {
            Vec::new()
        };
        Ok(Self { attributes, excluded })
    }

    /// No list given: the default set (`returned: default` and `always`).
    pub fn is_default(&self) -> bool {
        self.attributes.is_empty() && self.excluded.is_empty()
    }

    /// Projects a full representation (with `id`, `meta`, …) in place.
    pub fn apply(&self, rt: &ResourceType, resource: &mut Value) {
        let Value::Object(obj) = resource else { return };
        let requested = resolve_all(rt, &self.attributes);
        let excluded = resolve_all(rt, &self.excluded);
        let keys: Vec<String> = obj.keys().cloned().collect();
        for key in keys {
            if key == "schemas" {
                continue;
            }
            if let Some(urn) = rt.extension_urn(&key) {
                let keep = match obj.get_mut(&key) {
                    Some(Value::Object(ext)) => {
                        self.apply_attrs(rt, Some(urn), ext, &requested, &excluded);
                        !ext.is_empty()
                    }
                    _ => false,
                };
                if !keep {
                    obj.remove(&key);
                }
                continue;
            }
            let path = AttrPath {
                urn: Some(rt.core.clone()),
                name: key.clone(),
                sub: None,
            };
            let keep = match (rt.resolve(&path), obj.get_mut(&key)) {
                (Some(resolved), Some(value)) => {
                    self.apply_attr(resolved.schema, resolved.attr, value, &requested, &excluded)
                }
                // Unknown keys (none in a stored form) only survive the default projection.
                _ => self.attributes.is_empty(),
            };
            if !keep {
                obj.remove(&key);
            }
        }
    }

    /// Whether the projection drops the whole top-level attribute `attr` (core or extension, by name or
    /// URN-qualified), so the caller can skip loading it (`excludedAttributes=members`).
    pub fn excludes(&self, rt: &ResourceType, attr: &str) -> bool {
        let Some(resolved) = rt.resolve_key(attr) else {
            return !self.attributes.is_empty();
        };
        let def = resolved.attr;
        match def.returned {
            Returned::Never => return true,
            Returned::Always => return false,
            Returned::Default | Returned::Request => {}
        }
        if !self.attributes.is_empty() {
            let requested = resolve_all(rt, &self.attributes);
            return named(&requested, resolved.schema, def) == Named::No;
        }
        if def.returned == Returned::Request {
            return true;
        }
        let excluded = resolve_all(rt, &self.excluded);
        named(&excluded, resolved.schema, def) == Named::Whole
    }

    fn apply_attrs(
        &self,
        rt: &ResourceType,
        urn: Option<&str>,
        obj: &mut Map<String, Value>,
        requested: &[Target<'_>],
        excluded: &[Target<'_>],
    ) {
        obj.retain(|key, value| {
            let path = AttrPath {
                urn: urn.map(str::to_owned),
                name: key.clone(),
                sub: None,
            };
            match rt.resolve(&path) {
                Some(resolved) => self.apply_attr(resolved.schema, resolved.attr, value, requested, excluded),
                None => self.attributes.is_empty(),
            }
        });
    }

    /// Projects one attribute value in place; `false` when it must go.
    fn apply_attr(
        &self,
        schema: &str,
        def: &AttributeDef,
        value: &mut Value,
        requested: &[Target<'_>],
        excluded: &[Target<'_>],
    ) -> bool {
        match def.returned {
            Returned::Never => return false,
            Returned::Always => {
                keep_subs(def, value, |_| true);
                return true;
            }
            Returned::Default | Returned::Request => {}
        }
        if !self.attributes.is_empty() {
            return match named(requested, schema, def) {
                Named::No => false,
                Named::Whole => keep_subs(def, value, |s| s.returned != Returned::Request),
                Named::Subs(subs) => keep_subs(def, value, |s| {
                    s.returned == Returned::Always || subs.iter().any(|n| *n == s.name)
                }),
            };
        }
        if def.returned == Returned::Request {
            return false;
        }
        match named(excluded, schema, def) {
            Named::Whole => false,
            Named::No => keep_subs(def, value, |s| s.returned != Returned::Request),
            Named::Subs(subs) => keep_subs(def, value, |s| {
                s.returned == Returned::Always
                    || (s.returned != Returned::Request && !subs.iter().any(|n| *n == s.name))
            }),
        }
    }
}

fn parse_list(param: &str, list: Option<&str>) -> Result<Vec<AttrPath>, ScimError> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            split_attr_key(item)
                .ok_or_else(|| ScimError::invalid_path(format!("{param}: '{item}' is not an attribute path")))
        })
        .collect()
}

fn resolve_all<'a>(rt: &'a ResourceType, paths: &[AttrPath]) -> Vec<Target<'a>> {
    paths
        .iter()
        .filter_map(|p| {
            if p.sub.is_none()
                && let Some(urn) = &p.urn
                && let Some(schema) = rt.schema_urn(&format!("{urn}:{}", p.name))
            {
                return Some(Target::Schema(schema));
            }
            rt.resolve(p).map(Target::Attr)
        })
        .collect()
}

/// Whether the list names the attribute `def` of `schema` as a whole, by some of its sub-attributes, or not.
fn named<'a>(targets: &[Target<'a>], schema: &str, def: &AttributeDef) -> Named<'a> {
    let mut subs = Vec::new();
    for target in targets {
        match target {
            Target::Schema(urn) if *urn == schema => return Named::Whole,
            Target::Attr(r) if r.schema == schema && r.attr.name == def.name => match r.sub {
                None => return Named::Whole,
                Some(sub) => subs.push(sub.name.as_str()),
            },
            Target::Schema(_) | Target::Attr(_) => {}
        }
    }
    if subs.is_empty() {
        Named::No
    } else {
        Named::Subs(subs)
    }
}

/// Keeps the sub-attributes of a complex value (each element of a multi-valued one) that `keep` accepts, and
/// never the `returned: never` ones; drops elements left empty. `false` when nothing is left.
fn keep_subs(def: &AttributeDef, value: &mut Value, keep: impl Fn(&AttributeDef) -> bool) -> bool {
    if !def.is_complex() {
        return true;
    }
    let filter = |obj: &mut Map<String, Value>| {
        obj.retain(|k, _| {
            def.sub(k)
                .is_some_and(|s| s.returned != Returned::Never && keep(s))
        });
        !obj.is_empty()
    };
    match value {
        Value::Object(obj) => filter(obj),
        Value::Array(items) => {
            items.retain_mut(|item| match item {
                Value::Object(obj) => filter(obj),
                _ => true,
            });
            !items.is_empty()
        }
        _ => true,
    }
}

/// The default projection (no `attributes`, no `excludedAttributes`) of a stored resource with the server's
/// members put in, written as JSON text without building a `Value`: `stored` is the JSON text of a stored
/// resource (an object), `computed` the members the server adds (`id`, `active`, `meta`, `groups`), each as JSON
/// text, replacing a stored member of the same key. Appends to `out` exactly what serialising
/// [`Projection::apply`]'s result of the parsed object would give (`serde_json`'s compact form, keys in byte order),
/// and answers `true`; answers `false` (and leaves `out` as it was) when that cannot be shown from the text: the
/// default projection would drop something (a `returned: never` or `request` attribute, an unknown or `never`
/// sub-attribute, an empty complex value), `stored` is not an object, or an object's keys are not in ascending
/// order (text `serde_json` did not write from a parsed value). Then the caller takes the general path
/// (docs/decisions/0043-serving-the-stored-text.md).
pub fn write_default(rt: &ResourceType, stored: &str, computed: &[(&str, &str)], out: &mut Vec<u8>) -> bool {
    let mark = out.len();
    let ok = splice(rt, stored, computed, out).is_some();
    if !ok {
        out.truncate(mark);
    }
    ok
}

fn splice(rt: &ResourceType, stored: &str, computed: &[(&str, &str)], out: &mut Vec<u8>) -> Option<()> {
    let stored = raw::members(stored)?;
    let mut merged: Vec<(&str, &str)> = Vec::with_capacity(stored.len() + computed.len());
    for (key, value) in &stored {
        if !computed.iter().any(|(k, _)| k == key) {
            merged.push((key.as_ref(), value.get()));
        }
    }
    merged.extend_from_slice(computed);
    merged.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, value)) in merged.iter().enumerate() {
        if !kept_whole(rt, key, value) {
            return None;
        }
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).ok()?;
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'}');
    Some(())
}

/// Whether the default projection keeps the top-level member `key` (JSON text `value`) exactly as it is, and the
/// text is what serialising its parsed value gives back.
fn kept_whole(rt: &ResourceType, key: &str, value: &str) -> bool {
    if key == "schemas" {
        return raw::canonical(value);
    }
    if let Some(urn) = rt.extension_urn(key) {
        // An extension object is kept when something is left of it.
        let Some(members) = raw::members(value) else {
            return false;
        };
        return !members.is_empty()
            && members.iter().all(|(name, v)| {
                let path = AttrPath {
                    urn: Some(urn.to_owned()),
                    name: name.to_string(),
                    sub: None,
                };
                match rt.resolve(&path) {
                    Some(resolved) => attr_kept_whole(resolved.attr, v.get()),
                    None => raw::canonical(v.get()),
                }
            });
    }
    let path = AttrPath {
        urn: Some(rt.core.clone()),
        name: key.to_owned(),
        sub: None,
    };
    match rt.resolve(&path) {
        Some(resolved) => attr_kept_whole(resolved.attr, value),
        // Unknown keys survive the default projection.
        None => raw::canonical(value),
    }
}

/// [`Projection::apply_attr`] with no lists, as a check that it changes nothing.
fn attr_kept_whole(def: &AttributeDef, value: &str) -> bool {
    let allowed = match def.returned {
        Returned::Never | Returned::Request => return false,
        Returned::Always => |s: &AttributeDef| s.returned != Returned::Never,
        Returned::Default => {
            |s: &AttributeDef| s.returned != Returned::Never && s.returned != Returned::Request
        }
    };
    if def.is_complex() {
        raw::complex_kept_whole(value, &|name| def.sub(name).is_some_and(allowed))
    } else {
        raw::canonical(value)
    }
}

/// Checks on JSON text, without building values: objects' members in order, whether text is what `serde_json`
/// writes back for its parsed value, and [`keep_subs`] as a check.
mod raw {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    /// An object key as the text holds it: borrowed unless it has an escape.
    struct Key<'a>(Cow<'a, str>);

    impl<'de> de::Deserialize<'de> for Key<'de> {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }

    fn parse<'a, S: DeserializeSeed<'a>>(text: &'a str, seed: S) -> Option<S::Value> {
        let mut de = serde_json::Deserializer::from_str(text);
        let v = seed.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(v)
    }

    /// The members of an object's text, in text order, when its keys are strictly ascending (as `serde_json` writes
    /// a parsed object back: no duplicate, byte order).
    pub(super) fn members(text: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
                while let Some(Key(k)) = map.next_key()? {
                    if out.last().is_some_and(|(last, _)| *last >= k) {
                        return Err(de::Error::custom("keys out of order"));
                    }
                    let v: &RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(out)
            }
        }
        struct Seed;
        impl<'de> DeserializeSeed<'de> for Seed {
            type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(V)
            }
        }
        parse(text, Seed)
    }

    /// Whether every object in the text has its keys strictly ascending.
    pub(super) fn canonical(text: &str) -> bool {
        parse(text, Canon).is_some()
    }

    /// [`super::keep_subs`] keeps a complex value whole: each object (the value, or each element of an array) is
    /// non-empty and has only sub-attributes `allowed` accepts, an array is non-empty; and the text is canonical.
    pub(super) fn complex_kept_whole(text: &str, allowed: &dyn Fn(&str) -> bool) -> bool {
        parse(text, Complex { allowed, top: true }).is_some()
    }

    /// Walks any value, failing on an object whose keys are not strictly ascending.
    #[derive(Clone, Copy)]
    struct Canon;

    impl<'de> DeserializeSeed<'de> for Canon {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Canon {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Canon)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut last: Option<Cow<'de, str>> = None;
            while let Some(Key(k)) = map.next_key()? {
                if last.as_ref().is_some_and(|l| *l >= k) {
                    return Err(de::Error::custom("keys out of order"));
                }
                map.next_value_seed(Canon)?;
                last = Some(k);
            }
            Ok(())
        }
    }

    /// A complex value (`top`) or one element of a multi-valued one.
    #[derive(Clone, Copy)]
    struct Complex<'f> {
        allowed: &'f dyn Fn(&str) -> bool,
        top: bool,
    }

    impl<'de> DeserializeSeed<'de> for Complex<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Complex<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a complex value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            if !self.top {
                // An array in an element: kept as it is.
                while seq.next_element_seed(Canon)?.is_some() {}
                return Ok(());
            }
            let element = Complex { top: false, ..self };
            let mut n = 0usize;
            while seq.next_element_seed(element)?.is_some() {
                n += 1;
            }
            if n == 0 {
                return Err(de::Error::custom("an empty complex value"));
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut last: Option<Cow<'de, str>> = None;
            while let Some(Key(k)) = map.next_key()? {
                if !(self.allowed)(&k) {
                    return Err(de::Error::custom("a sub-attribute the projection drops"));
                }
                if last.as_ref().is_some_and(|l| *l >= k) {
                    return Err(de::Error::custom("keys out of order"));
                }
                map.next_value_seed(Canon)?;
                last = Some(k);
            }
            if last.is_none() {
                return Err(de::Error::custom("an empty complex value"));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::registry;
    use crate::scim::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "2819c223",
            "externalId": "701984",
            "userName": "bjensen@example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true},
                       {"value": "babs@jensen.org", "type": "home"}],
            "active": true,
            "password": "leaked?",
            "groups": [{"value": "g1", "display": "Eng"}],
            ENTERPRISE_USER_SCHEMA: {"employeeNumber": "701984", "manager": {"value": "m1"}},
            "meta": {"resourceType": "User", "created": "2010-01-23T04:56:22Z",
                     "lastModified": "2011-05-13T04:42:34Z", "version": "W/\"a330bc54f0671c9\""}
        })
    }

    fn project(attributes: Option<&str>, excluded: Option<&str>) -> Value {
        let mut v = user();
        Projection::parse(attributes, excluded)
            .unwrap()
            .apply(registry().user(), &mut v);
        v
    }

    #[test]
    fn default_drops_never_only() {
        let mut expected = user();
        expected.as_object_mut().unwrap().remove("password");
        assert_eq!(project(None, None), expected);
        assert!(Projection::parse(None, Some(" , ")).unwrap().is_default());
    }

    #[test]
    fn attributes_keep_always_and_named() {
        assert_eq!(
            project(Some("userName,emails"), None),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223",
                   "userName": "bjensen@example.com",
                   "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true},
                              {"value": "babs@jensen.org", "type": "home"}]})
        );
    }

    #[test]
    fn attributes_sub_paths_case_insensitive() {
        assert_eq!(
            project(Some("NAME.GIVENNAME, emails.value,meta.lastModified"), None),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223",
                   "name": {"givenName": "Barbara"},
                   "emails": [{"value": "bjensen@example.com"}, {"value": "babs@jensen.org"}],
                   "meta": {"lastModified": "2011-05-13T04:42:34Z"}})
        );
    }

    #[test]
    fn attributes_urn_qualified_and_whole_extension() {
        assert_eq!(
            project(
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
                None
            ),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223",
                   ENTERPRISE_USER_SCHEMA: {"manager": {"value": "m1"}}})
        );
        let whole = project(Some(ENTERPRISE_USER_SCHEMA), None);
        assert_eq!(whole[ENTERPRISE_USER_SCHEMA], user()[ENTERPRISE_USER_SCHEMA]);
        assert!(whole.get("userName").is_none());
        let core = project(
            Some("urn:ietf:params:scim:schemas:core:2.0:User:userName,employeeNumber"),
            None,
        );
        assert_eq!(core["userName"], "bjensen@example.com");
        assert_eq!(core[ENTERPRISE_USER_SCHEMA], json!({"employeeNumber": "701984"}));
    }

    #[test]
    fn password_never_even_when_requested() {
        let v = project(Some("password,id"), None);
        assert_eq!(
            v,
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223"})
        );
    }

    #[test]
    fn excluded_attributes() {
        let v = project(
            None,
            Some(
                "emails,name.familyName,id,schemas,meta.version,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            ),
        );
        let obj = v.as_object().unwrap();
        assert!(!obj.contains_key("emails") && !obj.contains_key("password"));
        assert_eq!(v["id"], "2819c223");
        assert_eq!(v["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
        assert_eq!(v["name"], json!({"givenName": "Barbara"}));
        assert!(v["meta"].get("version").is_none() && v["meta"].get("created").is_some());
        assert_eq!(v[ENTERPRISE_USER_SCHEMA], json!({"employeeNumber": "701984"}));
        let no_ext = project(None, Some(ENTERPRISE_USER_SCHEMA));
        assert!(no_ext.get(ENTERPRISE_USER_SCHEMA).is_none());
    }

    #[test]
    fn attributes_win_over_excluded() {
        assert_eq!(
            project(Some("userName"), Some("userName"))["userName"],
            "bjensen@example.com"
        );
    }

    #[test]
    fn unknown_names_are_ignored_bad_ones_rejected() {
        assert_eq!(project(None, Some("nope")), project(None, None));
        assert_eq!(
            project(Some("nope"), None),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223"})
        );
        let err = Projection::parse(Some("emails[type eq \"work\"]"), None).unwrap_err();
        assert_eq!(err.scim_type, Some(crate::scim::ScimType::InvalidPath));
    }

    #[test]
    fn excludes_for_the_caller() {
        let group = registry().group();
        let p = Projection::parse(None, Some("members")).unwrap();
        assert!(p.excludes(group, "members"));
        assert!(p.excludes(group, "MEMBERS"));
        assert!(!p.excludes(group, "displayName"));
        assert!(!p.excludes(group, "id"));
        let p = Projection::parse(Some("displayName"), None).unwrap();
        assert!(p.excludes(group, "members"));
        assert!(!p.excludes(group, "id"));
        let p = Projection::parse(Some("members.value"), None).unwrap();
        assert!(!p.excludes(group, "members"));
        let p = Projection::default();
        assert!(!p.excludes(group, "members"));
        assert!(p.excludes(registry().user(), "password"));
        let p = Projection::parse(Some(ENTERPRISE_USER_SCHEMA), None).unwrap();
        assert!(!p.excludes(registry().user(), "manager"));
        assert!(p.excludes(registry().user(), "groups"));
    }

    #[test]
    fn group_excluded_members() {
        let mut g = json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "Eng",
                           "members": [{"value": "u1"}], "meta": {"resourceType": "Group"}});
        Projection::parse(None, Some("members"))
            .unwrap()
            .apply(registry().group(), &mut g);
        assert_eq!(
            g,
            json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "Eng", "meta": {"resourceType": "Group"}})
        );
    }
}
