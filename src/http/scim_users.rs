//! `/scim/v2/Users` (RFC 7644 §3): every handler requires a credential with scope `scim`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::auth::{Authenticated, ScimScope};
use super::body::{Params, ScimBody, ScimJson};
use super::scim_common::{self, if_match, if_none_match, list_query, not_modified, projection, valid_id};
use super::scim_search::{list_response, search_request};
use crate::error::AppError;
use crate::lifecycle::represent;
use crate::lifecycle::users::{self, UserView};
use crate::scim::projection::Projection;
use crate::scim::schema::registry;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::scim_resource("/Users", "GET, POST")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    // Before `/Users/{id}`: actix tries resources in registration order.
    .service(super::scim_resource("/Users/.search", "POST").route(web::post().to(search)))
    .service(
        super::scim_resource("/Users/{id}", "GET, PUT, PATCH, DELETE")
            .route(web::get().to(get))
            .route(web::put().to(replace))
            .route(web::patch().to(patch))
            .route(web::delete().to(delete)),
    );
}

type Auth = Authenticated<ScimScope>;

/// A single-resource response for a user: with the default projection, written from the stored text when
/// `lifecycle::represent` can (the same bytes; docs/decisions/0043-serving-the-stored-text.md).
fn resource_response(
    status: StatusCode,
    state: &AppState,
    view: &UserView,
    proj: &Projection,
) -> HttpResponse {
    let location = format!("{}/Users/{}", state.scim_base, view.user.id);
    if proj.is_default() {
        let mut text = Vec::with_capacity(view.user.resource.len() + 256);
        if represent::write_user(view, &state.scim_base, &mut text) {
            return scim_common::text_response(status, text, view.user.version, &location);
        }
    }
    let body = users::to_scim(view, &state.scim_base);
    scim_common::resource_response(
        status,
        registry().user(),
        body,
        view.user.version,
        &location,
        proj,
    )
}

/// GET /Users — filter, sort, paging (`startIndex`, `count`), projection.
async fn list(auth: Auth, state: web::Data<AppState>, params: Params) -> Result<HttpResponse, AppError> {
    let limits = state.config.limits.clone();
    let base = state.scim_base.clone();
    let (page, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            let q = list_query(&params, limits.max_results)?;
            let page = users::list(db, &q, (&limits).into(), &base, proj.is_default())?;
            Ok((page, proj))
        })
        .await?;
    Ok(list_response(page, &proj))
}

/// POST /Users/.search — the same list, asked with a `SearchRequest` body (RFC 7644 §3.4.3).
async fn search(auth: Auth, state: web::Data<AppState>, body: ScimBody) -> Result<HttpResponse, AppError> {
    let limits = state.config.limits.clone();
    let base = state.scim_base.clone();
    let (page, proj) = auth
        .run(move |db, _| {
            let (q, proj) = search_request(&body, limits.max_results)?;
            let page = users::list(db, &q, (&limits).into(), &base, proj.is_default())?;
            Ok((page, proj))
        })
        .await?;
    Ok(list_response(page, &proj))
}

/// POST /Users — 201 with the created user.
async fn create(
    auth: Auth,
    state: web::Data<AppState>,
    params: Params,
    body: ScimJson,
) -> Result<HttpResponse, AppError> {
    let (user, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            Ok((users::create(db, &body.0)?, proj))
        })
        .await?;
    Ok(resource_response(StatusCode::CREATED, &state, &user, &proj))
}

/// GET /Users/{id}; 304 when `If-None-Match` matches.
async fn get(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: Params,
) -> Result<HttpResponse, AppError> {
    let if_none_match = if_none_match(&req);
    let (user, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            valid_id(&id, "user")?;
            Ok((users::get(db, &id)?, proj))
        })
        .await?;
    if let Some(res) = not_modified(if_none_match.as_deref(), user.user.version) {
        return Ok(res);
    }
    Ok(resource_response(StatusCode::OK, &state, &user, &proj))
}

/// PUT /Users/{id} — replace; honours `If-Match`.
async fn replace(
    auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: Params,
    body: ScimJson,
) -> Result<HttpResponse, AppError> {
    let if_match = if_match(&req);
    let (user, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            valid_id(&id, "user")?;
            Ok((users::replace(db, &id, &body.0, if_match.as_deref())?, proj))
        })
        .await?;
    Ok(resource_response(StatusCode::OK, &state, &user, &proj))
}

/// PATCH /Users/{id} — answers 200 with the resource (docs/decisions/0012-patch-answers-with-the-resource.md);
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
    let (user, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            valid_id(&id, "user")?;
            Ok((
                users::patch(db, &id, &body.0, if_match.as_deref(), max_ops)?,
                proj,
            ))
        })
        .await?;
    Ok(resource_response(StatusCode::OK, &state, &user, &proj))
}

/// DELETE /Users/{id} — 204; the user becomes a tombstone and loses access.
async fn delete(auth: Auth, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let if_match = if_match(&req);
    auth.run(move |db, _| {
        valid_id(&id, "user")?;
        users::delete(db, &id, if_match.as_deref())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
