//! List and search parameters (RFC 7644 §3.4.2, §3.4.3) and the sort order of results (§3.4.2.3). Pure.
//!
//! It owns reading `filter`, `startIndex`, `count`, `sortBy` and `sortOrder` from a query string or from a
//! `SearchRequest` body, and the order itself: the sort key of a full JSON representation and the comparison of
//! two resources. It does not evaluate filters (`filter`), project (`projection`), or know about storage; the
//! SQL side (`db::repo::list`) must order exactly as [`compare`] does, which its tests check on both backends.
//!
//! The order, the same in SQL and here:
//! - by the sort key: strings of `caseExact: false` attributes compare [`fold`]ed, all strings by code point (no
//!   locale: RFC 7644 §3.4.2.3 asks for "no specific locale"); booleans `false` < `true`; numbers by value;
//!   dateTimes as instants;
//! - a resource without a value for the attribute (absent or `null`; "no data" in the RFC) comes last when
//!   ascending and first when descending;
//! - ties by `id`, so every page of a paged list is stable;
//! - `descending` is exactly the reverse of `ascending`, ties included.
//!
//! Without `sortBy`, the order is `meta.created` ascending, then `id` (`sortOrder` alone changes nothing: it says
//! how `sortBy` is applied). A `sortBy` naming no attribute of the resource type, a complex attribute without a
//! `value` sub-attribute (`name`: sort by `name.familyName`), or a `returned: never` one (`password`) is a 400
//! `invalidValue`: the RFC defines no error of its own for sorting, and §3.12 gives `invalidValue` to a value "not
//! compatible with the … resource schema".

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::SEARCH_REQUEST_SCHEMA;
use super::filter::AttrPath;
use super::schema::{
    AttrType, AttributeDef, Resolved, ResourceType, Returned, fold, parse_datetime, split_attr_key,
};
use super::{ScimError, get_ci};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    Ascending,
    Descending,
}

impl SortOrder {
    /// `ascending` / `descending`, in any case.
    pub fn parse(s: &str) -> Result<Self, ScimError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("ascending") {
            Ok(Self::Ascending)
        } else if s.eq_ignore_ascii_case("descending") {
            Ok(Self::Descending)
        } else {
            Err(ScimError::invalid_value(
                "sortOrder must be \"ascending\" or \"descending\"",
            ))
        }
    }

    /// Applies this order to an ascending comparison.
    pub fn apply(self, ascending: Ordering) -> Ordering {
        match self {
            Self::Ascending => ascending,
            Self::Descending => ascending.reverse(),
        }
    }
}

/// `sortBy` and `sortOrder` as the client wrote them (resolved per resource type with [`SortBy::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortBy {
    pub path: AttrPath,
    pub order: SortOrder,
}

impl SortBy {
    /// The order used when the client asks for none: `meta.created` ascending (then `id`).
    pub fn default_order() -> Self {
        Self {
            path: AttrPath {
                urn: None,
                name: "meta".into(),
                sub: Some("created".into()),
            },
            order: SortOrder::Ascending,
        }
    }

    /// Parses `sortBy` (an attribute path, RFC 7644 §3.10); empty means none.
    pub fn parse(sort_by: Option<&str>, sort_order: Option<&str>) -> Result<Option<Self>, ScimError> {
        let order = sort_order
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(SortOrder::parse)
            .transpose()?
            .unwrap_or_default();
        let Some(text) = sort_by.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let path = split_attr_key(text)
            .ok_or_else(|| ScimError::invalid_value(format!("sortBy: '{text}' is not an attribute path")))?;
        Ok(Some(Self { path, order }))
    }

    /// Resolves the attribute against `rt`: `None` when `rt` has no such attribute (a root search sorts those
    /// resources as having no value), an error when the attribute exists but cannot be sorted on.
    pub fn resolve<'a>(&self, rt: &'a ResourceType) -> Result<Option<SortKey<'a>>, ScimError> {
        let Some(resolved) = rt.resolve(&self.path) else {
            return Ok(None);
        };
        let leaf = match resolved.sub {
            Some(sub) => sub,
            None if resolved.attr.kind == AttrType::Complex => {
                resolved.attr.sub("value").ok_or_else(|| {
                    ScimError::invalid_value(format!(
                        "sortBy: '{}' is complex; sort by one of its sub-attributes (e.g. '{}.{}')",
                        self.path,
                        resolved.attr.name,
                        resolved
                            .attr
                            .sub_attributes
                            .first()
                            .map_or("value", |s| s.name.as_str())
                    ))
                })?
            }
            None => resolved.attr,
        };
        let never = resolved.attr.returned == Returned::Never || leaf.returned == Returned::Never;
        if never || leaf.kind == AttrType::Complex {
            return Err(ScimError::invalid_value(format!(
                "sortBy: '{}' cannot be sorted on",
                self.path
            )));
        }
        Ok(Some(SortKey {
            resolved,
            leaf,
            extension: resolved.in_extension(rt).then_some(resolved.schema),
            core: &rt.core,
            order: self.order,
        }))
    }

    /// Like [`resolve`](Self::resolve), for one resource type's own endpoint: an unknown attribute is a 400.
    pub fn resolve_for<'a>(&self, rt: &'a ResourceType) -> Result<SortKey<'a>, ScimError> {
        self.resolve(rt)?.ok_or_else(|| {
            ScimError::invalid_value(format!(
                "sortBy: '{}' is not an attribute of {}",
                self.path, rt.name
            ))
        })
    }
}

/// A sort attribute resolved against one resource type, with its order.
#[derive(Debug, Clone, Copy)]
pub struct SortKey<'a> {
    pub resolved: Resolved<'a>,
    /// The definition the compared values have: the sub-attribute, `value` of a complex attribute, or the
    /// attribute itself.
    pub leaf: &'a AttributeDef,
    /// The URN key the attribute lives under in a representation, for extension attributes.
    extension: Option<&'a str>,
    /// The core schema URN of the resource type (the common attributes `id`, `meta` resolve to it).
    pub core: &'a str,
    pub order: SortOrder,
}

/// A sort key value. Values of different kinds (only possible across resource types in a root search) order by
/// kind: booleans, numbers, dateTimes, strings.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    Bool(bool),
    Number(f64),
    Time(DateTime<Utc>),
    /// Folded already for a case-insensitive attribute.
    Text(String),
}

impl SortValue {
    fn rank(&self) -> u8 {
        match self {
            Self::Bool(_) => 0,
            Self::Number(_) => 1,
            Self::Time(_) => 2,
            Self::Text(_) => 3,
        }
    }

    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a.cmp(b),
            (Self::Number(a), Self::Number(b)) => a.total_cmp(b),
            (Self::Time(a), Self::Time(b)) => a.cmp(b),
            // Rust orders `str` by UTF-8 bytes, which is code point order, as SQLite's binary collation and
            // PostgreSQL's "C" collation do.
            (Self::Text(a), Self::Text(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl SortKey<'_> {
    /// The sort value of a full representation (stored form plus `id` and `meta`): the attribute's value; for a
    /// multi-valued attribute the value of the `primary` element, else of the first element that has one.
    pub fn value_of(&self, resource: &Value) -> Option<SortValue> {
        let container = match self.extension {
            Some(urn) => get_ci(resource, urn)?,
            None => resource,
        };
        let value = get_ci(container, &self.resolved.attr.name)?;
        let complex = self.resolved.attr.kind == AttrType::Complex;
        let leaf_of = |v: &'_ Value| -> Option<Value> {
            let v = if complex { get_ci(v, &self.leaf.name)? } else { v };
            (!v.is_null()).then(|| v.clone())
        };
        let chosen = match value {
            Value::Array(items) => {
                let is_primary = |e: &&Value| e.get("primary").and_then(Value::as_bool) == Some(true);
                items
                    .iter()
                    .filter(is_primary)
                    .find_map(leaf_of)
                    .or_else(|| items.iter().find_map(leaf_of))?
            }
            Value::Null => return None,
            single => leaf_of(single)?,
        };
        leaf_value(self.leaf, &chosen)
    }

    /// The order of two resources given their sort values and ids (see the module doc).
    pub fn compare(&self, a: (Option<&SortValue>, &str), b: (Option<&SortValue>, &str)) -> Ordering {
        compare(a, b, self.order)
    }
}

/// The order of two resources given their sort values and ids: values (none last), then ids, all reversed when
/// descending.
pub fn compare(a: (Option<&SortValue>, &str), b: (Option<&SortValue>, &str), order: SortOrder) -> Ordering {
    let by_value = match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    order.apply(by_value.then_with(|| a.1.cmp(b.1)))
}

/// One JSON value as a sort value of the `leaf` attribute's type; `None` when it does not fit the type.
fn leaf_value(leaf: &AttributeDef, v: &Value) -> Option<SortValue> {
    match (leaf.kind, v) {
        (AttrType::Boolean, Value::Bool(b)) => Some(SortValue::Bool(*b)),
        (AttrType::Boolean, Value::String(s)) => super::schema::parse_bool(s).map(SortValue::Bool),
        (AttrType::Integer | AttrType::Decimal, Value::Number(n)) => n.as_f64().map(SortValue::Number),
        (AttrType::Integer | AttrType::Decimal, Value::String(s)) => {
            s.trim().parse::<f64>().ok().map(SortValue::Number)
        }
        (AttrType::DateTime, Value::String(s)) => parse_datetime(s).map(SortValue::Time),
        (AttrType::String | AttrType::Reference | AttrType::Binary, Value::String(s)) => {
            Some(SortValue::Text(if leaf.case_exact { s.clone() } else { fold(s) }))
        }
        (AttrType::String | AttrType::Reference, Value::Number(_) | Value::Bool(_)) => {
            Some(SortValue::Text(v.to_string()))
        }
        _ => None,
    }
}

/// A list request after parameter parsing, from a query string or a `SearchRequest` body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: Option<String>,
    /// 1-based, already clamped to ≥ 1.
    pub start_index: usize,
    /// Already capped at `maxResults`.
    pub count: usize,
    /// None: the default order ([`SortBy::default_order`]).
    pub sort: Option<SortBy>,
}

impl ListQuery {
    /// Builds a query from its raw parts: `startIndex` below 1 reads as 1, a negative `count` as 0, a `count`
    /// above `max` (or none) as `max` (docs/decisions/0013-list-paging.md).
    fn new(
        filter: Option<String>,
        start_index: Option<i64>,
        count: Option<i64>,
        sort: Option<SortBy>,
        max: usize,
    ) -> Self {
        let start_index = usize::try_from(start_index.unwrap_or(1).max(1)).unwrap_or(usize::MAX);
        let count = count.map_or(max, |n| usize::try_from(n.max(0)).unwrap_or(max).min(max));
        Self {
            filter: filter.filter(|f| !f.trim().is_empty()),
            start_index,
            count,
            sort,
        }
    }

    /// From query parameters; `get` looks a parameter up by name (case-insensitively).
    pub fn from_params<'p>(get: impl Fn(&str) -> Option<&'p str>, max: usize) -> Result<Self, ScimError> {
        let int = |name: &str| -> Result<Option<i64>, ScimError> {
            get(name)
                .map(|s| {
                    s.trim()
                        .parse::<i64>()
                        .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")))
                })
                .transpose()
        };
        let sort = SortBy::parse(get("sortBy"), get("sortOrder"))?;
        Ok(Self::new(
            get("filter").map(str::to_owned),
            int("startIndex")?,
            int("count")?,
            sort,
            max,
        ))
    }
}

/// A `POST …/.search` body (RFC 7644 §3.4.3) after parsing: the list query and the projection lists, each joined
/// into the comma-separated form the query string uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub query: ListQuery,
    pub attributes: Option<String>,
    pub excluded_attributes: Option<String>,
}

impl SearchRequest {
    /// Reads a `SearchRequest`: `schemas` must name `urn:ietf:params:scim:api:messages:2.0:SearchRequest` (400
    /// `invalidSyntax` otherwise); member names are case-insensitive (RFC 7643 §2.1) and unknown ones ignored;
    /// `attributes` / `excludedAttributes` are arrays of strings (a comma-separated string is accepted too);
    /// `startIndex` and `count` are integers (numeric strings accepted). A wrongly typed member is a 400
    /// `invalidValue`.
    pub fn parse(body: &Value, max: usize) -> Result<Self, ScimError> {
        let Value::Object(obj) = body else {
            return Err(ScimError::invalid_syntax("a SearchRequest must be a JSON object"));
        };
        let member = |name: &str| get_member(obj, name);
        let schemas_ok = match member("schemas") {
            Some(Value::Array(items)) => items.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(SEARCH_REQUEST_SCHEMA))
            }),
            _ => false,
        };
        if !schemas_ok {
            return Err(ScimError::invalid_syntax(format!(
                "a SearchRequest must have \"schemas\": [\"{SEARCH_REQUEST_SCHEMA}\"]"
            )));
        }
        let text = |name: &str| -> Result<Option<String>, ScimError> {
            match member(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ScimError::invalid_value(format!("{name} must be a string"))),
            }
        };
        let int = |name: &str| -> Result<Option<i64>, ScimError> {
            let wrong = || ScimError::invalid_value(format!("{name} must be an integer"));
            match member(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .or_else(|| n.as_u64().map(|_| i64::MAX))
                    .map(Some)
                    .ok_or_else(wrong),
                Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| wrong()),
                Some(_) => Err(wrong()),
            }
        };
        let list = |name: &str| -> Result<Option<String>, ScimError> {
            match member(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str().ok_or_else(|| {
                            ScimError::invalid_value(format!("{name} must be an array of strings"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|names| Some(names.join(","))),
                Some(_) => Err(ScimError::invalid_value(format!(
                    "{name} must be an array of strings"
                ))),
            }
        };
        let sort = SortBy::parse(text("sortBy")?.as_deref(), text("sortOrder")?.as_deref())?;
        Ok(Self {
            query: ListQuery::new(text("filter")?, int("startIndex")?, int("count")?, sort, max),
            attributes: list("attributes")?,
            excluded_attributes: list("excludedAttributes")?,
        })
    }
}

/// A member of a JSON object, by exact name or else ASCII case-insensitively.
fn get_member<'v>(obj: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::registry;
    use crate::scim::{ENTERPRISE_USER_SCHEMA, ScimType};
    use serde_json::json;

    fn params<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn query_parameters_follow_decisions_14() {
        let q = ListQuery::from_params(params(&[]), 100).unwrap();
        assert_eq!((q.start_index, q.count, q.sort), (1, 100, None));
        let q = ListQuery::from_params(params(&[("startIndex", "-4"), ("count", "1000")]), 100).unwrap();
        assert_eq!((q.start_index, q.count), (1, 100));
        let q = ListQuery::from_params(params(&[("startIndex", " 7 "), ("count", "-1")]), 100).unwrap();
        assert_eq!((q.start_index, q.count), (7, 0));
        let q = ListQuery::from_params(params(&[("filter", "  ")]), 100).unwrap();
        assert_eq!(q.filter, None);
        for bad in [
            ("count", "x"),
            ("startIndex", "1.5"),
            ("sortOrder", "up"),
            ("sortBy", "a b"),
        ] {
            let err = ListQuery::from_params(params(&[bad]), 100).unwrap_err();
            assert_eq!(err.scim_type, Some(ScimType::InvalidValue), "{bad:?}");
        }
        let q = ListQuery::from_params(
            params(&[("sortBy", "name.familyName"), ("sortOrder", "DESCENDING")]),
            9,
        )
        .unwrap();
        assert_eq!(
            q.sort,
            Some(SortBy {
                path: AttrPath {
                    urn: None,
                    name: "name".into(),
                    sub: Some("familyName".into())
                },
                order: SortOrder::Descending
            })
        );
        // sortOrder alone changes nothing.
        let q = ListQuery::from_params(params(&[("sortOrder", "descending")]), 9).unwrap();
        assert_eq!(q.sort, None);
    }

    #[test]
    fn search_request_bodies() {
        let body = json!({
            "schemas": [SEARCH_REQUEST_SCHEMA],
            "attributes": ["userName", "name.givenName"],
            "excludedattributes": "emails",
            "Filter": "userName sw \"a\"",
            "sortBy": "userName",
            "sortOrder": "descending",
            "startIndex": 0,
            "count": 5000,
            "unknown": {"x": 1}
        });
        let r = SearchRequest::parse(&body, 1000).unwrap();
        assert_eq!(r.attributes.as_deref(), Some("userName,name.givenName"));
        assert_eq!(r.excluded_attributes.as_deref(), Some("emails"));
        assert_eq!(r.query.filter.as_deref(), Some("userName sw \"a\""));
        assert_eq!((r.query.start_index, r.query.count), (1, 1000));
        assert_eq!(r.query.sort.unwrap().order, SortOrder::Descending);

        let minimal = SearchRequest::parse(&json!({"schemas": [SEARCH_REQUEST_SCHEMA]}), 10).unwrap();
        assert_eq!(minimal.query, ListQuery::from_params(params(&[]), 10).unwrap());

        for (body, kind) in [
            (json!([]), ScimType::InvalidSyntax),
            (json!({}), ScimType::InvalidSyntax),
            (
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [SEARCH_REQUEST_SCHEMA], "count": "many"}),
                ScimType::InvalidValue,
            ),
            (
                json!({"schemas": [SEARCH_REQUEST_SCHEMA], "count": 1.5}),
                ScimType::InvalidValue,
            ),
            (
                json!({"schemas": [SEARCH_REQUEST_SCHEMA], "filter": 3}),
                ScimType::InvalidValue,
            ),
            (
                json!({"schemas": [SEARCH_REQUEST_SCHEMA], "attributes": [1]}),
                ScimType::InvalidValue,
            ),
            (
                json!({"schemas": [SEARCH_REQUEST_SCHEMA], "sortOrder": "sideways"}),
                ScimType::InvalidValue,
            ),
        ] {
            assert_eq!(
                SearchRequest::parse(&body, 10).unwrap_err().scim_type,
                Some(kind),
                "{body}"
            );
        }
    }

    fn key(path: &str) -> SortKey<'static> {
        SortBy::parse(Some(path), None)
            .unwrap()
            .unwrap()
            .resolve_for(registry().user())
            .unwrap()
    }

    #[test]
    fn sort_by_resolution() {
        let rt = registry().user();
        let err = |path: &str| {
            SortBy::parse(Some(path), None)
                .unwrap()
                .unwrap()
                .resolve_for(rt)
                .unwrap_err()
        };
        assert_eq!(err("nope").scim_type, Some(ScimType::InvalidValue));
        assert!(
            err("name").detail.contains("sub-attributes"),
            "{}",
            err("name").detail
        );
        assert_eq!(err("password").scim_type, Some(ScimType::InvalidValue));
        assert_eq!(err("name.nope").scim_type, Some(ScimType::InvalidValue));
        assert!(
            SortBy::parse(Some("userName"), None)
                .unwrap()
                .unwrap()
                .resolve(registry().group())
                .unwrap()
                .is_none()
        );
        assert_eq!(key("USERNAME").leaf.name, "userName");
        assert_eq!(key("emails").leaf.name, "value");
        assert_eq!(key("meta.lastModified").leaf.kind, AttrType::DateTime);
        assert_eq!(
            key(&format!("{ENTERPRISE_USER_SCHEMA}:employeeNumber")).leaf.name,
            "employeeNumber"
        );
    }

    #[test]
    fn sort_values_follow_the_rfc() {
        let user = json!({
            "id": "u1",
            "userName": "Élodie",
            "externalId": "Ext",
            "active": "False",
            "name": {"familyName": "Zed"},
            "emails": [{"value": "B@x"}, {"value": "A@x", "primary": true}, {"type": "home"}],
            "phoneNumbers": [{"type": "work"}, {"value": "+1"}],
            "meta": {"created": "2024-01-02T03:04:05.678+01:00"},
            ENTERPRISE_USER_SCHEMA: {"employeeNumber": "42", "manager": {"value": "m"}}
        });
        let text = |s: &str| Some(SortValue::Text(s.into()));
        assert_eq!(key("userName").value_of(&user), text("élodie"));
        assert_eq!(key("externalId").value_of(&user), text("Ext"), "caseExact");
        assert_eq!(key("active").value_of(&user), Some(SortValue::Bool(false)));
        assert_eq!(key("name.familyName").value_of(&user), text("zed"));
        assert_eq!(key("name.givenName").value_of(&user), None);
        assert_eq!(key("emails").value_of(&user), text("a@x"), "the primary one");
        assert_eq!(key("emails.value").value_of(&user), text("a@x"));
        assert_eq!(
            key("phoneNumbers.value").value_of(&user),
            text("+1"),
            "first with a value"
        );
        assert_eq!(key("employeeNumber").value_of(&user), text("42"));
        assert_eq!(key("manager.value").value_of(&user), text("m"));
        assert_eq!(
            key("meta.created").value_of(&user),
            Some(SortValue::Time(
                parse_datetime("2024-01-02T02:04:05.678Z").unwrap()
            ))
        );
        assert_eq!(key("title").value_of(&user), None);
        assert_eq!(key("title").value_of(&json!({"title": null})), None);
    }

    #[test]
    fn missing_values_last_ascending_first_descending_ties_by_id() {
        let b = SortValue::Text("b".into());
        let a = SortValue::Text("a".into());
        let mut rows = [
            (None, "1"),
            (Some(&b), "2"),
            (Some(&a), "4"),
            (Some(&a), "3"),
            (None, "0"),
        ];
        rows.sort_by(|x, y| compare(*x, *y, SortOrder::Ascending));
        let ids: Vec<&str> = rows.iter().map(|r| r.1).collect();
        assert_eq!(ids, ["3", "4", "2", "0", "1"]);
        rows.sort_by(|x, y| compare(*x, *y, SortOrder::Descending));
        let ids: Vec<&str> = rows.iter().map(|r| r.1).collect();
        assert_eq!(ids, ["1", "0", "2", "4", "3"]);
        // Code point order of folded strings, no locale: "z" < "é" < "ö".
        let mut names = ["Öz", "éa", "Zed", "ÉB"].map(|s| SortValue::Text(fold(s)));
        names.sort_by(SortValue::cmp);
        assert_eq!(
            names.map(|v| format!("{v:?}")).join(" "),
            r#"Text("zed") Text("éa") Text("éb") Text("öz")"#
        );
    }
}
