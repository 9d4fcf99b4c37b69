//! `/scim/v2/Users` (RFC 7644 §3): every handler requires a credential with scope `scim`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Authenticated, ScimScope};
use super::body::{Params, ScimJson};
use super::error::SCIM_JSON;
use crate::error::AppError;
use crate::lifecycle::users::{self, ListQuery, UserView};
use crate::scim::projection::Projection;
use crate::scim::schema::registry;
use crate::scim::{LIST_RESPONSE_SCHEMA, ScimError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/Users")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/Users/{id}")
            .route(web::get().to(get))
            .route(web::put().to(replace))
            .route(web::patch().to(patch))
            .route(web::delete().to(delete)),
    );
}

type Auth = Authenticated<ScimScope>;

/// A resource id that cannot be one of ours answers 404 without a query (DECISIONS.md §8).
fn valid_id(id: &str) -> Result<(), AppError> {
    if uuid::Uuid::try_parse(id).is_ok() {
        Ok(())
    } else {
        Err(ScimError::not_found("no such user").into())
    }
}

pub(super) fn projection(params: &Params) -> Result<Projection, AppError> {
    Ok(Projection::parse(
        params.get("attributes"),
        params.get("excludedAttributes"),
    )?)
}

pub(super) fn if_match(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A single-resource response: projected body, `ETag`, and `Location` on 201.
fn resource_response(
    status: StatusCode,
    state: &AppState,
    view: &UserView,
    proj: &Projection,
) -> HttpResponse {
    let user = &view.user;
    let mut body = users::to_scim(view, &state.scim_base);
    proj.apply(registry().user(), &mut body);
    let mut res = HttpResponse::build(status);
    res.content_type(SCIM_JSON);
    if let Ok(v) = HeaderValue::from_str(&users::etag(user.version)) {
        res.insert_header((header::ETAG, v));
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&format!("{}/Users/{}", state.scim_base, user.id))
    {
        res.insert_header((header::LOCATION, v));
    }
    res.json(body)
}

/// Reads the list parameters: `startIndex` below 1 reads as 1, `count` is capped at `max` (negative → 0).
pub(super) fn list_query(params: &Params, max: usize) -> Result<ListQuery, AppError> {
    let int = |name: &str| -> Result<Option<i64>, AppError> {
        params
            .get(name)
            .map(|s| {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")))
            })
            .transpose()
            .map_err(AppError::from)
    };
    let start_index = int("startIndex")?.unwrap_or(1).max(1);
    let count = int("count")?.map_or(max, |n| usize::try_from(n.max(0)).unwrap_or(max).min(max));
    Ok(ListQuery {
        filter: params.get("filter").map(str::to_owned),
        start_index: usize::try_from(start_index).unwrap_or(usize::MAX),
        count,
    })
}

/// GET /Users — filter, paging (`startIndex`, `count`), projection.
async fn list(auth: Auth, state: web::Data<AppState>, params: Params) -> Result<HttpResponse, AppError> {
    let max = state.config.limits.max_results;
    let base = state.scim_base.clone();
    let (page, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            let q = list_query(&params, max)?;
            Ok((users::list(db, &q, &base)?, proj))
        })
        .await?;
    let rt = registry().user();
    let resources: Vec<Value> = page
        .resources
        .into_iter()
        .map(|mut r| {
            proj.apply(rt, &mut r);
            r
        })
        .collect();
    Ok(HttpResponse::Ok().content_type(SCIM_JSON).json(json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": page.total,
        "startIndex": page.start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })))
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

/// GET /Users/{id}.
async fn get(
    auth: Auth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: Params,
) -> Result<HttpResponse, AppError> {
    let (user, proj) = auth
        .run(move |db, _| {
            let proj = projection(&params)?;
            valid_id(&id)?;
            Ok((users::get(db, &id)?, proj))
        })
        .await?;
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
            valid_id(&id)?;
            Ok((users::replace(db, &id, &body.0, if_match.as_deref())?, proj))
        })
        .await?;
    Ok(resource_response(StatusCode::OK, &state, &user, &proj))
}

/// PATCH /Users/{id} — answers 200 with the resource (DECISIONS.md §13); honours `If-Match`.
async fn patch(
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
            valid_id(&id)?;
            Ok((users::patch(db, &id, &body.0, if_match.as_deref())?, proj))
        })
        .await?;
    Ok(resource_response(StatusCode::OK, &state, &user, &proj))
}

/// DELETE /Users/{id} — 204; the user becomes a tombstone and loses access.
async fn delete(auth: Auth, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let if_match = if_match(&req);
    auth.run(move |db, _| {
        valid_id(&id)?;
        users::delete(db, &id, if_match.as_deref())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
