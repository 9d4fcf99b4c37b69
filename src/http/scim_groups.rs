//! `/scim/v2/Groups` (RFC 7644 §3): every handler requires a credential with scope `scim`. Members are loaded
//! only when the response includes them (`excludedAttributes=members` keeps big groups cheap).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::auth::{Authenticated, ScimScope};
use super::body::{Params, ScimBody, ScimJson};
use super::scim_common::{self, if_match, if_none_match, list_query, not_modified, projection, valid_id};
use super::scim_search::{list_response, search_request};
use crate::error::AppError;
use crate::lifecycle::groups::{self, GroupView};
use crate::scim::projection::Projection;
use crate::scim::schema::registry;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::scim_resource("/Groups", "GET, POST")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    // Before `/Groups/{id}`: actix tries resources in registration order.
    .service(super::scim_resource("/Groups/.search", "POST").route(web::post().to(search)))
    .service(
        super::scim_resource("/Groups/{id}", "GET, PUT, PATCH, DELETE")
            .route(web::get().to(get))
            .route(web::put().to(replace))
            .route(web::patch().to(patch))
            .route(web::delete().to(delete)),
    );
}

type Auth = Authenticated<ScimScope>;

/// Whether the response needs the members.
fn with_members(proj: &Projection) -> bool {
    !proj.excludes(registry().group(), "members")
}

fn resource_response(
    status: StatusCode,
    state: &AppState,
    view: &GroupView,
    proj: &Projection,
) -> HttpResponse {
    let body = groups::to_scim(view, &state.scim_base);
    let location = format!("{}/Groups/{}", state.scim_base, view.group.id);
    scim_common::resource_response(
        status,
        registry().group(),
        body,
        view.group.version,
        &location,
        proj,
    )
}

/// GET /Groups — filter, sort, paging, projection.
async fn list(auth: Auth, state: web::Data<AppState>, params: Params) -> Result<HttpResponse, AppError> {
    let limits = state.config.limits.clone();
    let base = state.scim_base.clone();
    let (page, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            let q = list_query(&params, limits.max_results)?;
            Ok((
                groups::list(db, &q, with_members(&proj), (&limits).into(), &base)?,
                proj,
            ))
        })
        .await?;
    Ok(list_response(page, &proj))
}

/// POST /Groups/.search — the same list, asked with a `SearchRequest` body (RFC 7644 §3.4.3).
async fn search(auth: Auth, state: web::Data<AppState>, body: ScimBody) -> Result<HttpResponse, AppError> {
    let limits = state.config.limits.clone();
    let base = state.scim_base.clone();
    let (page, proj) = auth
        .run(move |db, _| {
            let (q, proj) = search_request(&body, limits.max_results)?;
            Ok((
                groups::list(db, &q, with_members(&proj), (&limits).into(), &base)?,
                proj,
            ))
        })
        .await?;
    Ok(list_response(page, &proj))
}

/// POST /Groups — 201 with the created group.
async fn create(
    auth: Auth,
    state: web::Data<AppState>,
    params: Params,
    body: ScimJson,
) -> Result<HttpResponse, AppError> {
    let (view, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            Ok((groups::create(db, &body.0, with_members(&proj))?, proj))
        })
        .await?;
    Ok(resource_response(StatusCode::CREATED, &state, &view, &proj))
}

/// GET /Groups/{id}; 304 when `If-None-Match` matches.
async fn get(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: Params,
) -> Result<HttpResponse, AppError> {
    let if_none_match = if_none_match(&req);
    let (view, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            valid_id(&id, "group")?;
            Ok((groups::get(db, &id, with_members(&proj))?, proj))
        })
        .await?;
    if let Some(res) = not_modified(if_none_match.as_deref(), view.group.version) {
        return Ok(res);
    }
    Ok(resource_response(StatusCode::OK, &state, &view, &proj))
}

/// PUT /Groups/{id} — replace; `members` left out keeps them; honours `If-Match`.
async fn replace(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: Params,
    body: ScimJson,
) -> Result<HttpResponse, AppError> {
    let if_match = if_match(&req);
    let (view, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            valid_id(&id, "group")?;
            Ok((
                groups::replace(db, &id, &body.0, if_match.as_deref(), with_members(&proj))?,
                proj,
            ))
        })
        .await?;
    Ok(resource_response(StatusCode::OK, &state, &view, &proj))
}

/// PATCH /Groups/{id} — answers 200 with the group (docs/decisions/0012-patch-answers-with-the-resource.md);
/// honours `If-Match`.
async fn patch(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: Params,
    body: ScimJson,
) -> Result<HttpResponse, AppError> {
    let if_match = if_match(&req);
    let max_ops = state.config.limits.max_patch_operations;
    let (view, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            valid_id(&id, "group")?;
            Ok((
                groups::patch(
                    db,
                    &id,
                    &body.0,
                    if_match.as_deref(),
                    with_members(&proj),
                    max_ops,
                )?,
                proj,
            ))
        })
        .await?;
    Ok(resource_response(StatusCode::OK, &state, &view, &proj))
}

/// DELETE /Groups/{id} — 204; every member's sessions end.
async fn delete(auth: Auth, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let if_match = if_match(&req);
    auth.run(move |db, _| {
        valid_id(&id, "group")?;
        groups::delete(db, &id, if_match.as_deref())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
