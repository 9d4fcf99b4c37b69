//! `POST /scim/v2/.search` (RFC 7644 §3.4.3 on the server root: every resource type at once), and what every list
//! and `.search` endpoint shares: reading a `SearchRequest` body and rendering a `ListResponse`. Requires a
//! credential with scope `scim`.
//!
//! A resource type's own `POST /{Type}/.search` is registered in its file, before `/{Type}/{id}` (actix matches
//! resources in registration order, and `.search` must not be read as an id).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use super::auth::{Authenticated, ScimScope};
use super::body::ScimBody;
use super::error::SCIM_JSON;
use crate::error::AppError;
use crate::lifecycle::listing::{self, Page, Searchable};
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

/// A `ListResponse` of `page`, each resource projected against its own resource type (`meta.resourceType`).
pub(super) fn list_response(page: Page, proj: &Projection) -> HttpResponse {
    let resources: Vec<serde_json::Value> = page
        .resources
        .into_iter()
        .map(|mut r| {
            let rt = r
                .pointer("/meta/resourceType")
                .and_then(serde_json::Value::as_str)
                .and_then(|name| registry().resource_type(name));
            if let Some(rt) = rt {
                proj.apply(rt, &mut r);
            }
            r
        })
        .collect();
    HttpResponse::Ok().content_type(SCIM_JSON).json(json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": page.total,
        "startIndex": page.start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    }))
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
