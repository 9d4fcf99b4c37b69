//! What the SCIM resource endpoints share: the id check, the list and precondition parameters, and the shape of a
//! single-resource response (projected body, `ETag`, `Location` on 201, 304 on a matching `If-None-Match`).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::Value;

use super::body::Params;
use super::error::SCIM_JSON;
use crate::error::AppError;
use crate::lifecycle::users::{etag, if_match_allows};
use crate::scim::ScimError;
use crate::scim::list::ListQuery;
use crate::scim::projection::Projection;
use crate::scim::schema::ResourceType;

/// A resource id that cannot be one of ours answers 404 without a query
/// (docs/decisions/0011-nul-and-foreign-ids.md).
pub(super) fn valid_id(id: &str, what: &str) -> Result<(), AppError> {
    if uuid::Uuid::try_parse(id).is_ok() {
        Ok(())
    } else {
        Err(ScimError::not_found(format!("no such {what}")).into())
    }
}

pub(super) fn projection(params: &Params) -> Result<Projection, AppError> {
    Ok(Projection::parse(
        params.get("attributes"),
        params.get("excludedAttributes"),
    )?)
}

fn header_value(req: &HttpRequest, name: header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(super) fn if_match(req: &HttpRequest) -> Option<String> {
    header_value(req, header::IF_MATCH)
}

pub(super) fn if_none_match(req: &HttpRequest) -> Option<String> {
    header_value(req, header::IF_NONE_MATCH)
}

/// 304 Not Modified, with the `ETag` and no body, when `If-None-Match` matches the resource's version (RFC 7232
/// §3.2: weak comparison, `*` matches any current representation).
pub(super) fn not_modified(if_none_match: Option<&str>, version: i64) -> Option<HttpResponse> {
    let tags = if_none_match?;
    if !if_match_allows(tags, version) {
        return None;
    }
    let mut res = HttpResponse::NotModified();
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        res.insert_header((header::ETAG, v));
    }
    Some(res.finish())
}

/// Reads the list parameters (`filter`, `startIndex`, `count`, `sortBy`, `sortOrder`): `startIndex` below 1 reads
/// as 1, `count` is capped at `max` (negative → 0).
pub(super) fn list_query(params: &Params, max: usize) -> Result<ListQuery, AppError> {
    Ok(ListQuery::from_params(|name| params.get(name), max)?)
}

/// A single-resource response: the full representation projected for `rt`, `ETag`, and `Location` on 201.
pub(super) fn resource_response(
    status: StatusCode,
    rt: &ResourceType,
    mut body: Value,
    version: i64,
    location: &str,
    proj: &Projection,
) -> HttpResponse {
    proj.apply(rt, &mut body);
    match serde_json::to_vec(&body) {
        Ok(text) => text_response(status, text, version, location),
        Err(e) => AppError::internal(e).error_response(),
    }
}

/// [`resource_response`] for a body that is response text already (projected).
pub(super) fn text_response(status: StatusCode, text: Vec<u8>, version: i64, location: &str) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    res.content_type(SCIM_JSON);
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        res.insert_header((header::ETAG, v));
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(location)
    {
        res.insert_header((header::LOCATION, v));
    }
    res.body(text)
}
