//! `POST /scim/v2/.search` (RFC 7644 §3.4.3 on the server root: every resource type at once), and what every list
//! and `.search` endpoint shares: reading a `SearchRequest` body and rendering a `ListResponse`. Requires a
//! credential with scope `scim`.
//!
//! A resource type's own `POST /{Type}/.search` is registered in its file, before `/{Type}/{id}` (actix matches
//! resources in registration order, and `.search` must not be read as an id).

use actix_web::{HttpResponse, ResponseError, web};
use serde_json::json;

use super::AppState;
use super::auth::{Authenticated, ScimScope};
use super::body::ScimBody;
use super::error::SCIM_JSON;
use crate::error::AppError;
use crate::lifecycle::listing::{self, Page, Resource, Searchable};
use crate::lifecycle::{groups, users};
use crate::scim::LIST_RESPONSE_SCHEMA;
use crate::scim::list::{ListQuery, SearchRequest};
use crate::scim::projection::Projection;
use crate::scim::schema::registry;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::scim_resource("/.search", "POST").route(web::post().to(search_root)));
}

/// Reads a `SearchRequest` body into a list query and a projection. Call it inside `Authenticated::run`, so an
/// unauthenticated body is never interpreted.
pub(super) fn search_request(
    body: &ScimBody,
    max_results: usize,
) -> Result<(ListQuery, Projection), AppError> {
    let request = SearchRequest::parse(&body.json()?, max_results)?;
    let proj = Projection::parse(
        request.attributes.as_deref(),
        request.excluded_attributes.as_deref(),
    )?;
    Ok((request.query, proj))
}

/// A `ListResponse` of `page`, each resource value projected against its own resource type
/// (`meta.resourceType`); a resource given as text is projected already. Written as `serde_json` writes the
/// object: keys in byte order (`Resources` first).
pub(super) fn list_response(page: Page, proj: &Projection) -> HttpResponse {
    let n = page.resources.len();
    let mut body = Vec::with_capacity(256 + n * 1024);
    body.extend_from_slice(b"{\"Resources\":[");
    for (i, resource) in page.resources.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match resource {
            Resource::Text(text) => body.extend_from_slice(&text),
            Resource::Value(mut r) => {
                let rt = r
                    .pointer("/meta/resourceType")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|name| registry().resource_type(name));
                if let Some(rt) = rt {
                    proj.apply(rt, &mut r);
                }
                if let Err(e) = serde_json::to_writer(&mut body, &r) {
                    return AppError::internal(e).error_response();
                }
            }
        }
    }
    let tail = json!({
        "itemsPerPage": n,
        "schemas": [LIST_RESPONSE_SCHEMA],
        "startIndex": page.start_index,
        "totalResults": page.total,
    });
    // `tail` is an object: its text without the opening brace continues this one.
    let tail = tail.to_string();
    body.extend_from_slice(b"],");
    body.extend_from_slice(tail.get(1..).unwrap_or("}").as_bytes());
    HttpResponse::Ok().content_type(SCIM_JSON).body(body)
}

/// The resource types a root search covers; results are merged in the requested order, so the order here does
/// not matter. Group members are loaded only when the response includes them.
fn root_sources(proj: &Projection) -> Vec<Box<dyn Searchable>> {
    let with_members = !proj.excludes(registry().group(), "members");
    vec![Box::new(users::Users), Box::new(groups::Groups { with_members })]
}

/// POST /.search — a `SearchRequest` over every resource type (scope `scim`).
async fn search_root(
    auth: Authenticated<ScimScope>,
    state: web::Data<AppState>,
    body: ScimBody,
) -> Result<HttpResponse, AppError> {
    let limits = state.config.limits.clone();
    let base = state.scim_base.clone();
    let (page, proj) = auth
        .run(move |db, _| {
            let (q, proj) = search_request(&body, limits.max_results)?;
            let sources = root_sources(&proj);
            let sources: Vec<&dyn Searchable> = sources.iter().map(AsRef::as_ref).collect();
            Ok((
                listing::search_root(db, &sources, &q, (&limits).into(), &base)?,
                proj,
            ))
        })
        .await?;
    Ok(list_response(page, &proj))
}
