//! The SCIM 2.0 protocol (RFC 7643 / RFC 7644), pure: no database, no HTTP, no clock.
//!
//! - `schema`: the schema registry built from the JSON documents in `scim-schemas/` (attribute characteristics:
//!   type, multiValued, caseExact, mutability, returned, uniqueness), input normalisation against it.
//! - `filter`: the RFC 7644 §3.4.2.2 filter grammar → AST, and its evaluation over a JSON resource.
//! - `path`: PATCH paths (`attrPath`, `valuePath[.subAttr]`).
//! - `patch`: the RFC 7644 §3.5.2 PATCH engine over a JSON resource, all-or-nothing.
//! - `projection`: `attributes` / `excludedAttributes`.
//! - `list`: list and search parameters (`filter`, paging, `sortBy`/`sortOrder`, `SearchRequest`) and the sort order.
//! - `error`: the §3.12 error type every part reports with.
//!
//! Callers (`lifecycle`, `http`) hand JSON in and get JSON or a `ScimError` out; this module never touches storage.

pub mod error;
pub mod filter;
pub mod list;
pub mod patch;
pub mod path;
pub mod projection;
pub mod schema;

pub use error::{ScimError, ScimType};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// A member of a JSON object by exact name, else ASCII case-insensitively (SCIM names are case-insensitive; IdPs
/// send `Operations`, `Value`, `UserName`).
pub(crate) fn get_ci_map<'v>(
    object: &'v serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'v serde_json::Value> {
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// [`get_ci_map`] on a value; None when it is not an object.
pub(crate) fn get_ci<'v>(value: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
    get_ci_map(value.as_object()?, key)
}
