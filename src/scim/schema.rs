//! The SCIM schema registry (RFC 7643 §2, §6, §7): the User, `EnterpriseUser` and Group schemas and the User and
//! Group resource types, parsed once from the JSON documents in `scim-schemas/` (embedded with `include_str!`, so
//! `/Schemas` and `/ResourceTypes` serve exactly what the server enforces), plus the common attributes of §3.1
//! (`id`, `externalId`, `meta`, and `schemas`) that every resource type resolves although no document lists them.
//!
//! It owns attribute resolution (case-insensitive names, URN-qualified paths), value coercion against the
//! attribute characteristics (types, Entra's string booleans, a bare string for a complex attribute with a `value`
//! sub-attribute, `null`/`""`/`[]` as "unassigned", NUL rejected, every string at most `input::MAX_STRING`
//! characters and the indexed ones at most `input::MAX_INDEXED`) and `normalize`, which turns a POST/PUT body
//! into the stored form. `fold` is the project's one case-folding function. Pure: no I/O, no clock, no panics on
//! client input.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::filter::AttrPath;
use super::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, ScimError, USER_SCHEMA};

/// The one case-folding function of the project (Unicode lower-case): folded DB columns and filter evaluation of
/// `caseExact: false` attributes both use it, so SQL and Rust agree (docs/decisions/0005-case-folding-in-rust.md).
pub fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Case-insensitive equality the way `fold` defines it. Two ASCII strings are compared in place (Unicode
/// lower-casing is ASCII lower-casing there): attribute names and URNs are compared this way many times a request,
/// and folding both into new strings was 8 % of a list page (BENCHMARKS.md §10). Anything else is folded, since
/// a non-ASCII character can fold to an ASCII one (the Kelvin sign to `k`).
pub fn eq_fold(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a == b || fold(a) == fold(b)
}

/// The `schemas` URN of RFC 7643 §7 schema documents.
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
/// The `schemas` URN of RFC 7643 §6 resource type documents.
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";

/// Longest attribute key (or path) we look at; longer ones are treated as unknown.
const MAX_KEY_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Reference,
    Complex,
    Binary,
}

impl AttrType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "boolean" => Self::Boolean,
            "decimal" => Self::Decimal,
            "integer" => Self::Integer,
            "dateTime" => Self::DateTime,
            "reference" => Self::Reference,
            "complex" => Self::Complex,
            "binary" => Self::Binary,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Boolean => "boolean",
            Self::Decimal => "decimal",
            Self::Integer => "integer",
            Self::DateTime => "dateTime",
            Self::Reference => "reference",
            Self::Complex => "complex",
            Self::Binary => "binary",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "readOnly" => Self::ReadOnly,
            "readWrite" => Self::ReadWrite,
            "immutable" => Self::Immutable,
            "writeOnly" => Self::WriteOnly,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "always" => Self::Always,
            "never" => Self::Never,
            "default" => Self::Default,
            "request" => Self::Request,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "server" => Self::Server,
            "global" => Self::Global,
            _ => return None,
        })
    }
}

/// One attribute (or sub-attribute) definition of a schema, RFC 7643 §7.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeDef {
    pub name: String,
    pub kind: AttrType,
    pub multi_valued: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: Vec<String>,
    pub sub_attributes: Vec<AttributeDef>,
}

/// A schema (RFC 7643 §7): its URN, its attributes, and the document served at `/Schemas/{id}`.
#[derive(Debug)]
pub struct Schema {
    pub id: String,
    pub name: String,
    pub attributes: Vec<AttributeDef>,
    /// The RFC 7643 §8.7.1 document; `meta.location` is added by the HTTP layer.
    pub document: Value,
}

/// A resource type (RFC 7643 §6) with the attribute tables it resolves against.
#[derive(Debug)]
pub struct ResourceType {
    /// `User` or `Group` (also the `id` of its document and `meta.resourceType` of its resources).
    pub name: String,
    /// `/Users` or `/Groups`.
    pub endpoint: String,
    /// URN of the core schema.
    pub core: String,
    /// Extension URNs and whether each is required.
    pub extensions: Vec<(String, bool)>,
    /// The RFC 7643 §8.6 document; `meta.location` is added by the HTTP layer.
    pub document: Value,
    core_attributes: Vec<AttributeDef>,
    /// Parallel to `extensions`.
    extension_attributes: Vec<Vec<AttributeDef>>,
    common: Vec<AttributeDef>,
}

/// What an attribute path resolves to.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    /// Canonical URN of the schema owning the attribute (the core URN for the common attributes).
    pub schema: &'a str,
    pub attr: &'a AttributeDef,
    pub sub: Option<&'a AttributeDef>,
}

impl Resolved<'_> {
    /// Whether the attribute lives under its extension URN key in a resource (not at the top level).
    pub fn in_extension(&self, rt: &ResourceType) -> bool {
        self.schema != rt.core
    }

    /// The definition the path ends at (the sub-attribute if there is one).
    pub fn target(&self) -> &AttributeDef {
        self.sub.unwrap_or(self.attr)
    }
}

/// All schemas and resource types of the server.
#[derive(Debug)]
pub struct Registry {
    schemas: Vec<Schema>,
    /// `[User, Group]`.
    resource_types: [ResourceType; 2],
    /// The RFC 7643 §5 document of `/ServiceProviderConfig`; `filter.maxResults` and `meta.location` are filled in
    /// by the HTTP layer.
    service_provider_config: Value,
    /// The RFC 7643 §8.7.2 schemas of the discovery resources themselves (`ServiceProviderConfig`,
    /// `ResourceType`, `Schema`): served at `/Schemas`, never used to resolve attributes.
    discovery_schemas: Vec<Value>,
}

impl Registry {
    pub fn schemas(&self) -> &[Schema] {
        &self.schemas
    }

    /// The schema with this id, compared case-insensitively.
    pub fn schema(&self, urn: &str) -> Option<&Schema> {
        self.schemas.iter().find(|s| eq_fold(&s.id, urn))
    }

    pub fn resource_types(&self) -> &[ResourceType] {
        &self.resource_types
    }

    /// The resource type with this name (`User`, `Group`), compared case-insensitively.
    pub fn resource_type(&self, name: &str) -> Option<&ResourceType> {
        self.resource_types.iter().find(|rt| eq_fold(&rt.name, name))
    }

    pub fn user(&self) -> &ResourceType {
        let [user, _] = &self.resource_types;
        user
    }

    pub fn group(&self) -> &ResourceType {
        let [_, group] = &self.resource_types;
        group
    }

    /// The `/ServiceProviderConfig` document as embedded (`filter.maxResults` is the default, not the config's).
    pub fn service_provider_config(&self) -> &Value {
        &self.service_provider_config
    }

    /// The schema documents of `ServiceProviderConfig`, `ResourceType` and `Schema` (listed after
    /// [`Self::schemas`] at `/Schemas`).
    pub fn discovery_schemas(&self) -> &[Value] {
        &self.discovery_schemas
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(load);

/// The registry, built on first use from the embedded documents.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

const USER_DOC: &str = include_str!("../../scim-schemas/User.json");
const ENTERPRISE_USER_DOC: &str = include_str!("../../scim-schemas/EnterpriseUser.json");
const GROUP_DOC: &str = include_str!("../../scim-schemas/Group.json");
const USER_RT_DOC: &str = include_str!("../../scim-schemas/ResourceType-User.json");
const GROUP_RT_DOC: &str = include_str!("../../scim-schemas/ResourceType-Group.json");
const SERVICE_PROVIDER_CONFIG_DOC: &str = include_str!("../../scim-schemas/ServiceProviderConfig.json");
const DISCOVERY_SCHEMA_DOCS: [&str; 3] = [
    include_str!("../../scim-schemas/Schema-ServiceProviderConfig.json"),
    include_str!("../../scim-schemas/Schema-ResourceType.json"),
    include_str!("../../scim-schemas/Schema-Schema.json"),
];

#[expect(
    clippy::expect_used,
    reason = "the documents are embedded at build time; a unit test loads them"
)]
fn load() -> Registry {
    build().expect("embedded SCIM schema documents are valid")
}

fn build() -> Result<Registry, String> {
    let schemas = vec![
        parse_schema(USER_DOC)?,
        parse_schema(ENTERPRISE_USER_DOC)?,
        parse_schema(GROUP_DOC)?,
    ];
    let user = parse_resource_type(USER_RT_DOC, &schemas)?;
    let group = parse_resource_type(GROUP_RT_DOC, &schemas)?;
    if user.core != USER_SCHEMA || group.core != GROUP_SCHEMA {
        return Err("resource type documents name unexpected core schemas".into());
    }
    if !user
        .extensions
        .iter()
        .any(|(urn, _)| urn == ENTERPRISE_USER_SCHEMA)
    {
        return Err("the User resource type must list the enterprise extension".into());
    }
    let service_provider_config: Value = serde_json::from_str(SERVICE_PROVIDER_CONFIG_DOC)
        .map_err(|e| format!("ServiceProviderConfig document: {e}"))?;
    let discovery_schemas = DISCOVERY_SCHEMA_DOCS
        .iter()
        .map(|doc| serde_json::from_str(doc).map_err(|e| format!("discovery schema document: {e}")))
        .collect::<Result<Vec<Value>, _>>()?;
    if discovery_schemas
        .iter()
        .any(|d| d.get("id").and_then(Value::as_str).is_none())
    {
        return Err("a discovery schema document has no id".into());
    }
    Ok(Registry {
        schemas,
        resource_types: [user, group],
        service_provider_config,
        discovery_schemas,
    })
}

fn parse_schema(doc: &str) -> Result<Schema, String> {
    let document: Value = serde_json::from_str(doc).map_err(|e| format!("schema document: {e}"))?;
    let id = str_field(&document, "id")?.to_owned();
    let name = str_field(&document, "name")?.to_owned();
    let attributes = document
        .get("attributes")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{id}: attributes missing"))?
        .iter()
        .map(|a| parse_attribute(a, 0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Schema {
        id,
        name,
        attributes,
        document,
    })
}

fn parse_resource_type(doc: &str, schemas: &[Schema]) -> Result<ResourceType, String> {
    let document: Value = serde_json::from_str(doc).map_err(|e| format!("resource type document: {e}"))?;
    let name = str_field(&document, "name")?.to_owned();
    let endpoint = str_field(&document, "endpoint")?.to_owned();
    let core = str_field(&document, "schema")?.to_owned();
    let find = |urn: &str| {
        schemas
            .iter()
            .find(|s| s.id == urn)
            .ok_or_else(|| format!("{name}: unknown schema {urn}"))
    };
    let core_attributes = find(&core)?.attributes.clone();
    let mut extensions = Vec::new();
    let mut extension_attributes = Vec::new();
    for ext in document
        .get("schemaExtensions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let urn = str_field(ext, "schema")?;
        let required = ext.get("required").and_then(Value::as_bool).unwrap_or(false);
        extension_attributes.push(find(urn)?.attributes.clone());
        extensions.push((urn.to_owned(), required));
    }
    Ok(ResourceType {
        name,
        endpoint,
        core,
        extensions,
        document,
        core_attributes,
        extension_attributes,
        common: common_attributes(),
    })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("field {key} missing"))
}

fn parse_attribute(v: &Value, depth: usize) -> Result<AttributeDef, String> {
    if depth > 1 {
        return Err("attributes nest at most one level".into());
    }
    let name = str_field(v, "name")?.to_owned();
    let enum_field = |key: &str, default: &str| -> String {
        v.get(key).and_then(Value::as_str).unwrap_or(default).to_owned()
    };
    let kind = AttrType::parse(&enum_field("type", "string")).ok_or_else(|| format!("{name}: bad type"))?;
    let mutability = Mutability::parse(&enum_field("mutability", "readWrite"))
        .ok_or_else(|| format!("{name}: bad mutability"))?;
    let returned =
        Returned::parse(&enum_field("returned", "default")).ok_or_else(|| format!("{name}: bad returned"))?;
    let uniqueness = Uniqueness::parse(&enum_field("uniqueness", "none"))
        .ok_or_else(|| format!("{name}: bad uniqueness"))?;
    let canonical_values = v
        .get("canonicalValues")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let sub_attributes = v
        .get("subAttributes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| parse_attribute(s, depth + 1))
        .collect::<Result<Vec<_>, _>>()?;
    if (kind == AttrType::Complex) == sub_attributes.is_empty() {
        return Err(format!(
            "{name}: complex attributes and only they have sub-attributes"
        ));
    }
    Ok(AttributeDef {
        name,
        kind,
        multi_valued: v.get("multiValued").and_then(Value::as_bool).unwrap_or(false),
        required: v.get("required").and_then(Value::as_bool).unwrap_or(false),
        case_exact: v.get("caseExact").and_then(Value::as_bool).unwrap_or(false),
        mutability,
        returned,
        uniqueness,
        canonical_values,
        sub_attributes,
    })
}

fn simple(name: &str, kind: AttrType, case_exact: bool, mutability: Mutability) -> AttributeDef {
    AttributeDef {
        name: name.to_owned(),
        kind,
        multi_valued: false,
        required: false,
        case_exact,
        mutability,
        returned: Returned::Default,
        uniqueness: Uniqueness::None,
        canonical_values: Vec::new(),
        sub_attributes: Vec::new(),
    }
}

/// RFC 7643 §3.1 common attributes, plus `schemas` (§3: returned always, maintained by the server).
fn common_attributes() -> Vec<AttributeDef> {
    use AttrType::{DateTime, Reference, String as Str};
    use Mutability::{ReadOnly, ReadWrite};
    let id = AttributeDef {
        returned: Returned::Always,
        uniqueness: Uniqueness::Server,
        ..simple("id", Str, true, ReadOnly)
    };
    let external_id = simple("externalId", Str, true, ReadWrite);
    let meta = AttributeDef {
        kind: AttrType::Complex,
        sub_attributes: vec![
            simple("resourceType", Str, true, ReadOnly),
            simple("created", DateTime, false, ReadOnly),
            simple("lastModified", DateTime, false, ReadOnly),
            simple("location", Reference, true, ReadOnly),
            simple("version", Str, true, ReadOnly),
        ],
        ..simple("meta", Str, false, ReadOnly)
    };
    let schemas = AttributeDef {
        multi_valued: true,
        returned: Returned::Always,
        ..simple("schemas", Reference, true, ReadOnly)
    };
    vec![id, external_id, meta, schemas]
}

/// Splits an attribute key as written by a client (`userName`, `name.givenName`,
/// `urn:…:enterprise:2.0:User:manager.value`) into an [`AttrPath`]. The URN is everything before the last `:`.
/// A bare schema URN splits into `urn = "urn:…:2.0"`, `name = "User"`; check [`ResourceType::schema_urn`] first.
pub fn split_attr_key(key: &str) -> Option<AttrPath> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return None;
    }
    let (urn, rest) = if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
        let (urn, rest) = key.rsplit_once(':')?;
        (Some(urn.to_owned()), rest)
    } else {
        (None, key)
    };
    let (name, sub) = match rest.split_once('.') {
        Some((name, sub)) => (name, Some(sub)),
        None => (rest, None),
    };
    let valid = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !valid(name) || sub.is_some_and(|s| !valid(s)) {
        return None;
    }
    Some(AttrPath {
        urn,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

impl AttributeDef {
    /// The sub-attribute with this name, compared case-insensitively.
    pub fn sub(&self, name: &str) -> Option<&AttributeDef> {
        self.sub_attributes.iter().find(|s| eq_fold(&s.name, name))
    }

    pub fn is_complex(&self) -> bool {
        self.kind == AttrType::Complex
    }

    /// Whether a client may write it at all (not readOnly; writeOnly counts as writable but is never stored).
    pub fn is_read_only(&self) -> bool {
        self.mutability == Mutability::ReadOnly
    }

    /// Coerces a whole attribute value as a client sent it into its stored form. `Ok(None)` means "unassigned"
    /// (`null`, `""`, `[]`, an object with nothing we keep). Multi-valued attributes always come out as arrays
    /// (a single value becomes a one-element array) with at most one `primary: true`. `label` names the
    /// attribute in errors.
    pub fn coerce(&self, value: &Value, label: &str) -> Result<Option<Value>, ScimError> {
        if !self.multi_valued {
            return self.coerce_one(value, label, true);
        }
        let items: &[Value] = match value {
            Value::Array(items) => items,
            other => std::slice::from_ref(other),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if item.is_array() {
                return Err(ScimError::invalid_value(format!(
                    "'{label}' holds a nested array"
                )));
            }
            if let Some(v) = self.coerce_one(item, label, false)? {
                out.push(v);
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        single_primary(&mut out, None);
        Ok(Some(Value::Array(out)))
    }

    /// Coerces one value of the attribute: the value of a single-valued attribute, or one element of a
    /// multi-valued one.
    pub fn coerce_element(&self, value: &Value, label: &str) -> Result<Option<Value>, ScimError> {
        if value.is_array() {
            return Err(ScimError::invalid_value(format!(
                "'{label}' expects a single value, not an array"
            )));
        }
        self.coerce_one(value, label, false)
    }

    fn coerce_one(&self, value: &Value, label: &str, unwrap: bool) -> Result<Option<Value>, ScimError> {
        match value {
            Value::Null => Ok(None),
            // Lenient: a single value sent as a one-element array (Entra's old `manager` sample).
            Value::Array(items) if unwrap => match items.as_slice() {
                [] => Ok(None),
                [one] => self.coerce_one(one, label, false),
                _ => Err(ScimError::invalid_value(format!("'{label}' is single-valued"))),
            },
            _ if self.is_complex() => self.coerce_complex(value, label),
            _ => coerce_scalar(self.kind, value, label),
        }
    }

    fn coerce_complex(&self, value: &Value, label: &str) -> Result<Option<Value>, ScimError> {
        match value {
            Value::Object(obj) => {
                let mut out = Map::new();
                for (key, v) in obj {
                    let Some(sub) = self.sub(key) else { continue };
                    if matches!(sub.mutability, Mutability::ReadOnly | Mutability::WriteOnly) {
                        continue;
                    }
                    let sub_label = format!("{label}.{}", sub.name);
                    if sub.is_complex() {
                        return Err(ScimError::invalid_value(format!(
                            "'{sub_label}' cannot be complex"
                        )));
                    }
                    match coerce_scalar(sub.kind, v, &sub_label)? {
                        Some(v) => out.insert(sub.name.clone(), v),
                        None => out.remove(&sub.name),
                    };
                }
                Ok((!out.is_empty()).then_some(Value::Object(out)))
            }
            // Entra: `"manager": "id"`, a member as a bare id: the `value` sub-attribute.
            Value::String(_) | Value::Number(_) | Value::Bool(_) => match self.sub("value") {
                Some(sub) => Ok(coerce_scalar(sub.kind, value, &format!("{label}.value"))?
                    .map(|v| Value::Object(Map::from_iter([(sub.name.clone(), v)])))),
                None => Err(ScimError::invalid_value(format!("'{label}' must be an object"))),
            },
            Value::Null => Ok(None),
            Value::Array(_) => Err(ScimError::invalid_value(format!("'{label}' must be an object"))),
        }
    }
}

/// Coerces a value of a simple type. `Ok(None)`: unassigned (`null`, `""`).
fn coerce_scalar(kind: AttrType, value: &Value, label: &str) -> Result<Option<Value>, ScimError> {
    let mismatch = || ScimError::invalid_value(format!("'{label}' must be of type {}", kind.as_str()));
    if let Value::String(s) = value {
        crate::input::check(&format!("'{label}'"), s, crate::input::MAX_STRING)?;
        if s.is_empty() {
            return Ok(None);
        }
    }
    match (kind, value) {
        (_, Value::Null) => Ok(None),
        (AttrType::String | AttrType::Reference | AttrType::Binary, Value::String(_))
        | (AttrType::Boolean, Value::Bool(_))
        | (AttrType::Decimal, Value::Number(_)) => Ok(Some(value.clone())),
        (AttrType::Boolean, Value::String(s)) => {
            parse_bool(s).map(|b| Some(Value::Bool(b))).ok_or_else(mismatch)
        }
        (AttrType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(value.clone())),
        (AttrType::DateTime, Value::String(s)) if parse_datetime(s).is_some() => Ok(Some(value.clone())),
        _ => Err(mismatch()),
    }
}

/// `"true"`/`"false"` in any case (Entra sends `"True"`, `"False"`, `"false"`). Nothing else is a boolean.
pub fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// An xsd:dateTime as an instant: RFC 3339, or without an offset (read as UTC).
pub fn parse_datetime(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    // RFC 3339 allows lower-case `t` and `z`; xsd:dateTime allows no zone, which we read as UTC (we store UTC).
    let s = s.trim().to_ascii_uppercase();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&s) {
        return Some(t.to_utc());
    }
    chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// Keeps at most one `primary: true` in a multi-valued complex value: the element at `keep` if it is primary,
/// else the first primary one; the others get `primary: false`.
pub fn single_primary(items: &mut [Value], keep: Option<usize>) {
    let is_primary = |v: &Value| v.get("primary").and_then(Value::as_bool) == Some(true);
    let winner = keep
        .filter(|&i| items.get(i).is_some_and(is_primary))
        .or_else(|| items.iter().position(is_primary));
    let Some(winner) = winner else { return };
    for (i, item) in items.iter_mut().enumerate() {
        if i != winner
            && is_primary(item)
            && let Some(obj) = item.as_object_mut()
        {
            obj.insert("primary".into(), Value::Bool(false));
        }
    }
}

impl ResourceType {
    /// Canonical URN of the core schema or an extension of this resource type, matched case-insensitively.
    pub fn schema_urn(&self, urn: &str) -> Option<&str> {
        if eq_fold(&self.core, urn) {
            return Some(&self.core);
        }
        self.extension_urn(urn)
    }

    /// Canonical URN of an extension of this resource type, matched case-insensitively.
    pub fn extension_urn(&self, urn: &str) -> Option<&str> {
        self.extensions
            .iter()
            .map(|(u, _)| u.as_str())
            .find(|u| eq_fold(u, urn))
    }

    /// The attributes of the core schema (without the common ones).
    pub fn core_attributes(&self) -> &[AttributeDef] {
        &self.core_attributes
    }

    /// `id`, `externalId`, `meta`, `schemas`.
    pub fn common_attributes(&self) -> &[AttributeDef] {
        &self.common
    }

    /// The attributes of an extension (URN matched case-insensitively) and its canonical URN.
    pub fn extension_attributes(&self, urn: &str) -> Option<(&str, &[AttributeDef])> {
        self.extensions
            .iter()
            .zip(&self.extension_attributes)
            .find(|((u, _), _)| eq_fold(u, urn))
            .map(|((u, _), attrs)| (u.as_str(), attrs.as_slice()))
    }

    /// Every top-level attribute with the URN of the schema owning it (core, common, then extensions).
    pub fn all_attributes(&self) -> impl Iterator<Item = (&str, &AttributeDef)> {
        let core = self.core.as_str();
        self.core_attributes
            .iter()
            .chain(&self.common)
            .map(move |a| (core, a))
            .chain(
                self.extensions
                    .iter()
                    .zip(&self.extension_attributes)
                    .flat_map(|((urn, _), attrs)| attrs.iter().map(move |a| (urn.as_str(), a))),
            )
    }

    /// Resolves an attribute path: names case-insensitively; without a URN the core schema (and the common
    /// attributes) first, then the extensions in order. `None` when the attribute or sub-attribute is unknown.
    pub fn resolve(&self, path: &AttrPath) -> Option<Resolved<'_>> {
        let find = |attrs: &'_ [AttributeDef]| -> Option<usize> {
            attrs.iter().position(|a| eq_fold(&a.name, &path.name))
        };
        let core_hit = || {
            find(&self.core_attributes)
                .and_then(|i| self.core_attributes.get(i))
                .or_else(|| find(&self.common).and_then(|i| self.common.get(i)))
                .map(|a| (self.core.as_str(), a))
        };
        let ext_hit = |urn: &str| {
            self.extension_attributes(urn)
                .and_then(|(u, attrs)| find(attrs).and_then(|i| attrs.get(i)).map(|a| (u, a)))
        };
        let (schema, attr) = match &path.urn {
            Some(urn) if eq_fold(urn, &self.core) => core_hit()?,
            Some(urn) => ext_hit(urn)?,
            None => core_hit().or_else(|| self.extensions.iter().find_map(|(urn, _)| ext_hit(urn)))?,
        };
        let sub = match &path.sub {
            None => None,
            Some(name) => Some(attr.sub(name)?),
        };
        Some(Resolved { schema, attr, sub })
    }

    /// Resolves an attribute key as written in a JSON body or a value map (`userName`, `name.givenName`,
    /// `urn:…:User:employeeNumber`).
    pub fn resolve_key(&self, key: &str) -> Option<Resolved<'_>> {
        self.resolve(&split_attr_key(key)?)
    }

    /// Turns a POST/PUT body into the stored form (see the module doc and `scratch/SCIM_API.md`): canonical names,
    /// extension attributes under their URN key, readOnly/writeOnly/unknown attributes dropped, values coerced,
    /// `schemas` rewritten, required attributes checked.
    pub fn normalize(&self, input: &Value) -> Result<Value, ScimError> {
        let mut out = self.normalize_body(input)?;
        self.finish(&mut out)?;
        check_indexed(&out, None)?;
        Ok(Value::Object(out))
    }

    /// The attributes of a POST/PUT body in stored form, before [`Self::finish`].
    fn normalize_body(&self, input: &Value) -> Result<Map<String, Value>, ScimError> {
        let Value::Object(body) = input else {
            return Err(ScimError::invalid_syntax("the resource must be a JSON object"));
        };
        let mut out = Map::new();
        for (key, value) in body {
            if key.eq_ignore_ascii_case("schemas") {
                continue;
            }
            if let Some(urn) = self.schema_urn(key) {
                match value {
                    Value::Null => {}
                    Value::Object(inner) => {
                        for (k, v) in inner {
                            if let Some(mut path) = split_attr_key(k).filter(|p| p.urn.is_none()) {
                                path.urn = Some(urn.to_owned());
                                self.put_normalized(&mut out, &path, v)?;
                            }
                        }
                    }
                    _ => return Err(ScimError::invalid_value(format!("'{urn}' must be an object"))),
                }
                continue;
            }
            if let Some(path) = split_attr_key(key) {
                self.put_normalized(&mut out, &path, value)?;
            }
        }
        Ok(out)
    }

    /// [`Self::normalize`] without the length bound of indexed attributes, for a replacement (PUT) whose stored
    /// resource is not read yet: the caller applies [`check_indexed_changes`] against it, so a value stored before
    /// the bound existed never blocks a write that ends access.
    pub fn normalize_replacement(&self, input: &Value) -> Result<Value, ScimError> {
        let mut out = self.normalize_body(input)?;
        self.finish(&mut out)?;
        Ok(Value::Object(out))
    }

    /// Stores one body attribute into `out`; unknown, readOnly and writeOnly ones are dropped.
    fn put_normalized(
        &self,
        out: &mut Map<String, Value>,
        path: &AttrPath,
        value: &Value,
    ) -> Result<(), ScimError> {
        let Some(resolved) = self.resolve(path) else {
            return Ok(());
        };
        let attr = resolved.attr;
        if matches!(attr.mutability, Mutability::ReadOnly | Mutability::WriteOnly)
            || resolved
                .sub
                .is_some_and(|s| matches!(s.mutability, Mutability::ReadOnly | Mutability::WriteOnly))
        {
            return Ok(());
        }
        let label = self.label(&resolved);
        let container = self.container_mut(out, &resolved);
        match resolved.sub {
            None => match attr.coerce(value, &label)? {
                Some(v) => container.insert(attr.name.clone(), v),
                None => container.remove(&attr.name),
            },
            Some(sub) => {
                if attr.multi_valued {
                    return Err(ScimError::invalid_value(format!(
                        "'{label}' is a sub-attribute of a multi-valued attribute: send '{}' as an array",
                        attr.name
                    )));
                }
                let coerced = sub.coerce(value, &label)?;
                let entry = container
                    .entry(attr.name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Some(obj) = entry.as_object_mut() {
                    match coerced {
                        Some(v) => obj.insert(sub.name.clone(), v),
                        None => obj.remove(&sub.name),
                    };
                }
                None
            }
        };
        Ok(())
    }

    /// The attribute's name for error messages (`userName`, `name.givenName`, `urn:…:User:manager`).
    pub fn label(&self, resolved: &Resolved<'_>) -> String {
        let mut label = if resolved.schema == self.core {
            resolved.attr.name.clone()
        } else {
            format!("{}:{}", resolved.schema, resolved.attr.name)
        };
        if let Some(sub) = resolved.sub {
            label.push('.');
            label.push_str(&sub.name);
        }
        label
    }

    /// The object holding the resolved attribute in a stored resource: the resource itself, or its extension
    /// object (created when missing).
    pub fn container_mut<'m>(
        &self,
        resource: &'m mut Map<String, Value>,
        resolved: &Resolved<'_>,
    ) -> &'m mut Map<String, Value> {
        if resolved.schema == self.core {
            return resource;
        }
        let entry = resource
            .entry(resolved.schema.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(obj) => obj,
            _ => unreachable_object(),
        }
    }

    /// The object holding the resolved attribute in a resource, if there is one.
    pub fn container<'m>(
        &self,
        resource: &'m Map<String, Value>,
        resolved: &Resolved<'_>,
    ) -> Option<&'m Map<String, Value>> {
        if resolved.schema == self.core {
            Some(resource)
        } else {
            resource.get(resolved.schema).and_then(Value::as_object)
        }
    }

    /// Final pass over a stored form (after `normalize` or a PATCH): drops empty values and empty extension
    /// objects, rewrites `schemas` (core URN + extensions present) and checks required attributes (400
    /// invalidValue naming the first missing one).
    pub fn finish(&self, resource: &mut Map<String, Value>) -> Result<(), ScimError> {
        resource.retain(|_, v| !is_unassigned(v));
        let mut schemas = vec![Value::String(self.core.clone())];
        for ((urn, required), attrs) in self.extensions.iter().zip(&self.extension_attributes) {
            if let Some(Value::Object(ext)) = resource.get_mut(urn) {
                ext.retain(|_, v| !is_unassigned(v));
            }
            let present = resource
                .get(urn)
                .is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty()));
            if present {
                schemas.push(Value::String(urn.clone()));
                let ext = resource.get(urn).and_then(Value::as_object);
                if let Some(missing) = attrs
                    .iter()
                    .find(|a| a.required && ext.is_none_or(|e| !e.contains_key(&a.name)))
                {
                    return Err(ScimError::invalid_value(format!(
                        "attribute '{urn}:{}' is required",
                        missing.name
                    )));
                }
            } else {
                resource.remove(urn);
                if *required {
                    return Err(ScimError::invalid_value(format!("extension '{urn}' is required")));
                }
            }
        }
        if let Some(missing) = self
            .core_attributes
            .iter()
            .find(|a| a.required && !resource.contains_key(&a.name))
        {
            return Err(ScimError::invalid_value(format!(
                "attribute '{}' is required",
                missing.name
            )));
        }
        resource.insert("schemas".into(), Value::Array(schemas));
        Ok(())
    }
}

/// Core attributes stored in an indexed column, by resource: `userName`, `displayName`, `externalId` and each
/// `emails.value` of a User, `displayName` and `externalId` of a Group.
const INDEXED: [&str; 3] = ["userName", "displayName", "externalId"];

/// Refuses an indexed attribute longer than [`crate::input::MAX_INDEXED`] characters (400 `invalidValue`): a
/// longer one would exceed PostgreSQL's index row limit. Checked on the stored form, so a POST, a PUT and the
/// result of a PATCH are bound alike. With `before` (the stored resource a PUT or PATCH changes), a value it
/// holds already is let through: a resource stored before the bound existed (SQLite accepted longer values) can
/// still be deactivated or lose a member.
fn check_indexed(
    resource: &Map<String, Value>,
    before: Option<&Map<String, Value>>,
) -> Result<(), ScimError> {
    use crate::input::{MAX_INDEXED, check};
    for name in INDEXED {
        if let Some(Value::String(v)) = resource.get(name)
            && before.and_then(|b| b.get(name)).and_then(Value::as_str) != Some(v.as_str())
        {
            check(&format!("'{name}'"), v, MAX_INDEXED)?;
        }
    }
    let emails = |r: &Map<String, Value>| -> Vec<String> {
        r.get("emails")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("value").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let known = before.map(emails).unwrap_or_default();
    for v in emails(resource) {
        if !known.contains(&v) {
            check("'emails.value'", &v, MAX_INDEXED)?;
        }
    }
    Ok(())
}

/// The indexed-attribute bound of a replacement or a PATCH result against the resource it changes: only values
/// that are new are checked (see [`ResourceType::normalize_replacement`]).
pub fn check_indexed_changes(resource: &Value, before: &Value) -> Result<(), ScimError> {
    match resource.as_object() {
        Some(r) => check_indexed(r, before.as_object()),
        None => Ok(()),
    }
}

/// `null`, `""`, `[]`, `{}`: unassigned (RFC 7643 §2.5, and Entra's `""`).
pub fn is_unassigned(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cold]
fn unreachable_object() -> ! {
    unreachable!("the entry was made an object just before")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eq_fold_agrees_with_fold() {
        let words = [
            "",
            "userName",
            "USERNAME",
            "username",
            "userNam",
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER",
            "k",
            "K",
            "\u{212A}",
            "Straße",
            "STRASSE",
            "straße",
            "ΣΑΣ",
            "σας",
            "σασ",
            "İ",
            "i\u{307}",
            "i",
            "name.givenName",
            "NAME.GIVENNAME",
            "a\u{0}b",
            "A\u{0}B",
        ];
        for a in words {
            for b in words {
                assert_eq!(eq_fold(a, b), fold(a) == fold(b), "{a:?} {b:?}");
            }
        }
        assert!(eq_fold("\u{212A}", "k"), "the Kelvin sign folds to an ASCII k");
    }

    fn path(urn: Option<&str>, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            urn: urn.map(str::to_owned),
            name: name.to_owned(),
            sub: sub.map(str::to_owned),
        }
    }

    #[test]
    fn registry_loads_all_documents() {
        let r = registry();
        assert_eq!(r.schemas().len(), 3);
        assert_eq!(r.resource_types().len(), 2);
        assert_eq!(r.user().name, "User");
        assert_eq!(r.user().endpoint, "/Users");
        assert_eq!(r.group().endpoint, "/Groups");
        assert_eq!(
            r.user().extensions,
            vec![(ENTERPRISE_USER_SCHEMA.to_owned(), false)]
        );
        assert!(r.group().extensions.is_empty());
        assert!(r.schema("URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER").is_some());
        assert!(r.schema("urn:nope").is_none());
        assert_eq!(
            r.resource_type("group").map(|rt| rt.core.as_str()),
            Some(GROUP_SCHEMA)
        );
        for s in r.schemas() {
            assert_eq!(s.document["schemas"][0], SCHEMA_SCHEMA);
            assert_eq!(s.document["meta"]["resourceType"], "Schema");
            assert_eq!(s.document["id"], s.id.as_str());
        }
        for rt in r.resource_types() {
            assert_eq!(rt.document["schemas"][0], RESOURCE_TYPE_SCHEMA);
            assert_eq!(rt.document["meta"]["resourceType"], "ResourceType");
        }
        let rt = &r.user().document;
        assert_eq!(rt["schemaExtensions"][0]["required"], false);
    }

    #[test]
    fn documents_have_no_nulls_and_camel_case_values() {
        fn walk(v: &Value) {
            match v {
                Value::Null => panic!("null in a schema document"),
                Value::Array(a) => a.iter().for_each(walk),
                Value::Object(o) => o.values().for_each(walk),
                _ => {}
            }
        }
        for s in registry().schemas() {
            walk(&s.document);
        }
    }

    #[test]
    fn characteristics_follow_rfc_7643() {
        let user = registry().user();
        let user_name = user.resolve(&path(None, "USERNAME", None)).unwrap();
        assert_eq!(user_name.attr.name, "userName");
        assert!(user_name.attr.required);
        assert!(!user_name.attr.case_exact);
        assert_eq!(user_name.attr.uniqueness, Uniqueness::Server);
        let password = user.resolve(&path(None, "password", None)).unwrap().attr;
        assert_eq!(
            (password.mutability, password.returned),
            (Mutability::WriteOnly, Returned::Never)
        );
        let groups = user.resolve(&path(None, "groups", None)).unwrap().attr;
        assert_eq!(groups.mutability, Mutability::ReadOnly);
        assert!(groups.multi_valued);
        let emails = user.resolve(&path(None, "emails", Some("TYPE"))).unwrap();
        assert_eq!(emails.sub.unwrap().canonical_values, ["work", "home", "other"]);
        let active = user.resolve(&path(None, "active", None)).unwrap().attr;
        assert_eq!(active.kind, AttrType::Boolean);
        let members = registry()
            .group()
            .resolve(&path(None, "members", Some("value")))
            .unwrap();
        assert_eq!(members.sub.unwrap().mutability, Mutability::Immutable);
        assert!(
            registry()
                .group()
                .resolve(&path(None, "displayName", None))
                .unwrap()
                .attr
                .required
        );
    }

    #[test]
    fn resolve_common_core_extension_and_urn_paths() {
        let user = registry().user();
        let id = user.resolve(&path(None, "ID", None)).unwrap();
        assert_eq!((id.schema, id.attr.name.as_str()), (USER_SCHEMA, "id"));
        assert_eq!(id.attr.returned, Returned::Always);
        assert!(id.attr.case_exact);
        let ext_id = user.resolve(&path(None, "externalid", None)).unwrap().attr;
        assert!(ext_id.case_exact);
        assert_eq!(ext_id.mutability, Mutability::ReadWrite);
        let created = user.resolve(&path(None, "meta", Some("Created"))).unwrap();
        assert_eq!(created.sub.unwrap().kind, AttrType::DateTime);
        let employee = user.resolve(&path(None, "employeeNumber", None)).unwrap();
        assert_eq!(employee.schema, ENTERPRISE_USER_SCHEMA);
        assert!(employee.in_extension(user));
        let manager = user
            .resolve(&path(
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user"),
                "Manager",
                Some("value"),
            ))
            .unwrap();
        assert_eq!(manager.sub.unwrap().name, "value");
        assert_eq!(
            user.label(&manager),
            format!("{ENTERPRISE_USER_SCHEMA}:manager.value")
        );
        let core_qualified = user.resolve(&path(Some(USER_SCHEMA), "userName", None)).unwrap();
        assert_eq!(core_qualified.attr.name, "userName");
        assert!(
            user.resolve(&path(Some(USER_SCHEMA), "employeeNumber", None))
                .is_none()
        );
        assert!(
            user.resolve(&path(Some(ENTERPRISE_USER_SCHEMA), "userName", None))
                .is_none()
        );
        assert!(user.resolve(&path(None, "nope", None)).is_none());
        assert!(user.resolve(&path(None, "name", Some("nope"))).is_none());
        assert!(user.resolve(&path(None, "userName", Some("x"))).is_none());
        assert!(
            user.resolve(&path(Some("urn:unknown"), "userName", None))
                .is_none()
        );
        let group = registry().group();
        assert!(group.resolve(&path(None, "employeeNumber", None)).is_none());
        assert_eq!(
            group.resolve(&path(None, "externalId", None)).unwrap().schema,
            GROUP_SCHEMA
        );
    }

    #[test]
    fn split_keys() {
        assert_eq!(
            split_attr_key("name.givenName"),
            Some(path(None, "name", Some("givenName")))
        );
        assert_eq!(
            split_attr_key("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
            Some(path(Some(ENTERPRISE_USER_SCHEMA), "manager", Some("value")))
        );
        assert_eq!(
            split_attr_key(ENTERPRISE_USER_SCHEMA),
            Some(path(
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0"),
                "User",
                None
            ))
        );
        assert_eq!(
            split_attr_key("members.$ref"),
            Some(path(None, "members", Some("$ref")))
        );
        for bad in [
            "",
            "a.b.c",
            ".x",
            "x.",
            "a b",
            "urn:",
            "9a",
            "emails[type eq \"work\"]",
        ] {
            assert_eq!(split_attr_key(bad), None, "{bad}");
        }
        assert_eq!(split_attr_key(&"a".repeat(MAX_KEY_LEN + 1)), None);
    }

    #[test]
    fn fold_is_unicode_lower_case() {
        assert_eq!(fold("ÀBC@Example.COM"), "àbc@example.com");
        assert!(eq_fold("ÉCOLE", "école"));
    }

    #[test]
    fn normalize_okta_create() {
        let body = json!({
          "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
          "userName": "test.user@okta.local",
          "name": {"givenName": "Test", "familyName": "User"},
          "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
          "displayName": "Test User",
          "locale": "en-US",
          "externalId": "00ujl29u0le5T6Aj10h7",
          "groups": [],
          "password": "1mz050nq",
          "active": true
        });
        let stored = registry().user().normalize(&body).unwrap();
        assert_eq!(
            stored,
            json!({
              "schemas": [USER_SCHEMA],
              "userName": "test.user@okta.local",
              "name": {"givenName": "Test", "familyName": "User"},
              "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
              "displayName": "Test User",
              "locale": "en-US",
              "externalId": "00ujl29u0le5T6Aj10h7",
              "active": true
            })
        );
    }

    #[test]
    fn normalize_okta_put_echo_drops_read_only() {
        let body = json!({
          "schemas": [USER_SCHEMA],
          "id": "23a35c27",
          "userName": "test.user@okta.local",
          "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
          "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work", "display": "test.user@okta.local"}],
          "active": false,
          "groups": [{"value": "g1", "display": "G"}],
          "meta": {"resourceType": "User"}
        });
        let stored = registry().user().normalize(&body).unwrap();
        let obj = stored.as_object().unwrap();
        assert!(!obj.contains_key("id") && !obj.contains_key("meta") && !obj.contains_key("groups"));
        assert_eq!(stored["active"], false);
        assert_eq!(stored["emails"][0]["display"], "test.user@okta.local");
    }

    #[test]
    fn normalize_entra_pascal_case_and_extension() {
        let body = json!({
          "UserName": "UserName222", "Active": "True", "DisplayName": "lennay",
          "schemas": [ENTERPRISE_USER_SCHEMA, USER_SCHEMA, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/User"],
          "externalId": "3f2a",
          "name": {"formatted": "Adrew Ryan", "familyName": "Ryan", "givenName": "Andrew"},
          "emails": [{"Primary": true, "type": "work", "value": "testing@bob2.com"},
                     {"Primary": false, "type": "home", "value": "testinghome@bob3.com"}],
          "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"Department": "bob", "Manager": {"Value": "SuzzyQ", "displayName": "ro"}},
          "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "701984",
          "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/User": {"x": 1},
          "roles": []
        });
        let stored = registry().user().normalize(&body).unwrap();
        assert_eq!(
            stored,
            json!({
              "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
              "userName": "UserName222", "active": true, "displayName": "lennay", "externalId": "3f2a",
              "name": {"formatted": "Adrew Ryan", "familyName": "Ryan", "givenName": "Andrew"},
              "emails": [{"primary": true, "type": "work", "value": "testing@bob2.com"},
                         {"primary": false, "type": "home", "value": "testinghome@bob3.com"}],
              ENTERPRISE_USER_SCHEMA: {"department": "bob", "manager": {"value": "SuzzyQ"}, "employeeNumber": "701984"}
            })
        );
    }

    #[test]
    fn normalize_entra_doc_example_with_nulls() {
        let body = json!({
          "schemas": [USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0User"],
          "externalId": "jyoung", "userName": "jyoung@testuser.com", "active": true, "addresses": null,
          "displayName": "Joy Young",
          "emails": [{"type": "work", "value": "jyoung@Contoso.com", "primary": true}],
          "meta": {"resourceType": "User"}, "name": {"familyName": "Young", "givenName": "Joy"},
          "phoneNumbers": null, "preferredLanguage": null, "title": null, "department": null, "manager": null
        });
        let stored = registry().user().normalize(&body).unwrap();
        assert_eq!(stored["schemas"], json!([USER_SCHEMA]));
        assert!(stored.get("addresses").is_none() && stored.get("title").is_none());
        assert!(stored.get(ENTERPRISE_USER_SCHEMA).is_none());
        assert_eq!(stored["emails"][0]["value"], "jyoung@Contoso.com");
    }

    #[test]
    fn normalize_coercions() {
        let user = registry().user();
        let stored = user
            .normalize(&json!({
                "userName": "u", "emails": {"value": "a@b.c"}, "active": "false",
                "manager": "boss", "name.givenName": "G", "nickName": "", "title": null
            }))
            .unwrap();
        assert_eq!(stored["emails"], json!([{"value": "a@b.c"}]));
        assert_eq!(stored["active"], false);
        assert_eq!(
            stored[ENTERPRISE_USER_SCHEMA]["manager"],
            json!({"value": "boss"})
        );
        assert_eq!(stored["name"], json!({"givenName": "G"}));
        assert!(stored.get("nickName").is_none());
        assert_eq!(stored["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
        let two_primaries = user
            .normalize(&json!({"userName": "u", "emails": [
                {"value": "a", "primary": true}, {"value": "b", "primary": "True"}]}))
            .unwrap();
        assert_eq!(two_primaries["emails"][1]["primary"], false);
        let manager_array = user
            .normalize(&json!({"userName": "u", "manager": [{"value": "m", "$ref": "https://x/Users/m"}]}))
            .unwrap();
        assert_eq!(manager_array[ENTERPRISE_USER_SCHEMA]["manager"]["value"], "m");
    }

    #[test]
    fn normalize_rejections() {
        let user = registry().user();
        let cases = [
            (json!({"emails": [{"value": "a"}]}), "userName"),
            (json!({"userName": ""}), "userName"),
            (json!({"userName": null}), "userName"),
            (json!({"userName": 5}), "userName"),
            (json!({"userName": "a\u{0}b"}), "NUL"),
            (json!({"userName": "u", "active": "yes"}), "active"),
            (json!({"userName": "u", "active": 1}), "active"),
            (json!({"userName": "u", "name": "Bob"}), "name"),
            (
                json!({"userName": "u", "name": {"givenName": 3}}),
                "name.givenName",
            ),
            (json!({"userName": "u", "emails": [[{"value": "a"}]]}), "emails"),
            (json!({"userName": "u", "displayName": ["a", "b"]}), "displayName"),
            (json!({"userName": "u", "emails.value": "a"}), "emails"),
            (
                json!({"userName": "u", ENTERPRISE_USER_SCHEMA: "x"}),
                ENTERPRISE_USER_SCHEMA,
            ),
            (
                json!({"userName": "u", ENTERPRISE_USER_SCHEMA: {"department": "a\u{0}"}}),
                "department",
            ),
        ];
        for (body, needle) in cases {
            let err = user.normalize(&body).unwrap_err();
            assert_eq!(err.status, 400);
            assert_eq!(
                err.scim_type,
                Some(super::super::ScimType::InvalidValue),
                "{body}"
            );
            assert!(err.detail.contains(needle), "{body}: {}", err.detail);
        }
        assert_eq!(
            user.normalize(&json!([1])).unwrap_err().scim_type,
            Some(super::super::ScimType::InvalidSyntax)
        );
    }

    #[test]
    fn normalize_group() {
        let group = registry().group();
        let stored = group
            .normalize(&json!({
                "schemas": [GROUP_SCHEMA, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                "externalId": "8aa1", "displayName": "displayName", "meta": {"resourceType": "Group"},
                "members": [{"$ref": null, "value": "u1"}, "u2", {"value": "u3", "display": "U3", "type": "User"}]
            }))
            .unwrap();
        assert_eq!(
            stored,
            json!({"schemas": [GROUP_SCHEMA], "externalId": "8aa1", "displayName": "displayName",
                   "members": [{"value": "u1"}, {"value": "u2"}, {"value": "u3", "type": "User"}]})
        );
        let okta = group
            .normalize(&json!({"schemas": [GROUP_SCHEMA], "displayName": "Test SCIMv2", "members": []}))
            .unwrap();
        assert_eq!(
            okta,
            json!({"schemas": [GROUP_SCHEMA], "displayName": "Test SCIMv2"})
        );
        assert!(
            group
                .normalize(&json!({"members": []}))
                .unwrap_err()
                .detail
                .contains("displayName")
        );
    }

    #[test]
    fn every_fixture_create_and_put_body_normalizes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/idp");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let file = entry.unwrap().path();
            if file.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            if !matches!(fixture["method"].as_str(), Some("POST" | "PUT")) {
                continue;
            }
            seen += 1;
            let rt = if fixture["path"].as_str().unwrap().starts_with("/Groups") {
                registry().group()
            } else {
                registry().user()
            };
            let stored = rt
                .normalize(&fixture["body"])
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let obj = stored.as_object().unwrap();
            for absent in ["id", "meta", "groups", "password"] {
                assert!(!obj.contains_key(absent), "{}: {absent}", file.display());
            }
            assert_eq!(stored["schemas"][0], rt.core.as_str());
        }
        assert!(seen >= 10, "only {seen} POST/PUT fixtures");
    }

    #[test]
    fn scalar_types() {
        let int = simple("n", AttrType::Integer, false, Mutability::ReadWrite);
        assert_eq!(int.coerce(&json!(3), "n").unwrap(), Some(json!(3)));
        assert!(int.coerce(&json!(3.5), "n").is_err());
        assert!(int.coerce(&json!("3"), "n").is_err());
        let dec = simple("d", AttrType::Decimal, false, Mutability::ReadWrite);
        assert_eq!(dec.coerce(&json!(3.5), "d").unwrap(), Some(json!(3.5)));
        let dt = simple("t", AttrType::DateTime, false, Mutability::ReadWrite);
        assert!(
            dt.coerce(&json!("2015-10-10T14:38:21.8617979-07:00"), "t")
                .unwrap()
                .is_some()
        );
        assert!(dt.coerce(&json!("2015-10-10T14:38:21"), "t").unwrap().is_some());
        assert!(dt.coerce(&json!("yesterday"), "t").is_err());
        assert_eq!(
            parse_datetime("2011-05-13T04:42:34Z"),
            parse_datetime("2011-05-13T06:42:34+02:00")
        );
        for (s, b) in [
            ("True", Some(true)),
            ("FALSE", Some(false)),
            ("false", Some(false)),
            ("1", None),
            ("", None),
        ] {
            assert_eq!(parse_bool(s), b);
        }
    }

    #[test]
    fn finish_rewrites_schemas_and_drops_empty_extension() {
        let user = registry().user();
        let mut doc = json!({"userName": "u", "schemas": ["x"], ENTERPRISE_USER_SCHEMA: {"department": ""}, "emails": []});
        let obj = doc.as_object_mut().unwrap();
        user.finish(obj).unwrap();
        assert_eq!(doc, json!({"userName": "u", "schemas": [USER_SCHEMA]}));
    }

    #[test]
    fn datetimes_parse_as_rfc3339_with_xsd_leniency() {
        let t = |s: &str| parse_datetime(s).map(|d| (d.timestamp(), d.timestamp_subsec_nanos()));
        assert_eq!(t("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(t("1970-01-01T01:00:00+01:00"), Some((0, 0)));
        assert_eq!(t("1969-12-31T23:59:59.5Z"), Some((-1, 500_000_000)));
        assert_eq!(
            t("2015-10-10T14:38:21.8617979-07:00"),
            Some((1_444_513_101, 861_797_900))
        );
        assert_eq!(t("2011-05-13t04:42:34z"), t("2011-05-13T04:42:34Z"));
        assert_eq!(
            t("2011-05-13T04:42:34"),
            t("2011-05-13T04:42:34Z"),
            "no zone reads as UTC"
        );
        assert!(t("2012-02-29T00:00:00Z").is_some());
        for bad in [
            "",
            "2011-05-13",
            "2011-13-01T00:00:00Z",
            "2011-02-29T00:00:00Z",
            "2011-05-13T24:00:00Z",
            "2011-05-13T04:42:34Zx",
            "２011-05-13T04:42:34Z",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
