//! `/scim/v2/Users` (RFC 7644 §3): every handler requires a credential with scope `scim`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::auth::{Authenticated, ScimScope};
use super::body::{Params, ScimJson};
use super::error::SCIM_JSON;
use super::{AppState, blocking};
use crate::db::models::User;
use crate::error::AppError;
use crate::lifecycle::users::{self, ListQuery};
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

fn projection(params: &Params) -> Result<Projection, AppError> {
    Ok(Projection::parse(
        params.get("attributes"),
        params.get("excludedAttributes"),
    )?)
}

fn if_match(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A single-resource response: projected body, `ETag`, and `Location` on 201.
fn resource_response(status: StatusCode, state: &AppState, user: &User, proj: &Projection) -> HttpResponse {
    let mut body = users::to_scim(user, &state.scim_base);
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

/// GET /Users — filter, paging (`startIndex`, `count`), projection.
async fn list(_auth: Auth, state: web::Data<AppState>, params: Params) -> Result<HttpResponse, AppError> {
    let proj = projection(&params)?;
    let max = state.config.limits.max_results;
    let start_index = match params.get("startIndex") {
        None => 1,
        Some(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| ScimError::invalid_value("startIndex must be an integer"))?
            .max(1),
    };
    let count = match params.get("count") {
        None => max,
        Some(s) => {
            let n = s
                .trim()
                .parse::<i64>()
                .map_err(|_| ScimError::invalid_value("count must be an integer"))?;
            usize::try_from(n.max(0)).unwrap_or(max).min(max)
        }
    };
    let q = ListQuery {
        filter: params.get("filter").map(str::to_owned),
        start_index: usize::try_from(start_index).unwrap_or(usize::MAX),
        count,
    };
    let db = state.db.clone();
    let base = state.scim_base.clone();
    let page = blocking(move || users::list(&db, &q, &base)).await?;
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
    _auth: Auth,
    state: web::Data<AppState>,
    params: Params,
    body: ScimJson,
) -> Result<HttpResponse, AppError> {
    let proj = projection(&params)?;
    let db = state.db.clone();
    let user = blocking(move || users::create(&db, &body.0)).await?;
    Ok(resource_response(StatusCode::CREATED, &state, &user, &proj))
}

/// GET /Users/{id}.
async fn get(
    _auth: Auth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: Params,
) -> Result<HttpResponse, AppError> {
    valid_id(&id)?;
    let proj = projection(&params)?;
    let db = state.db.clone();
    let user = blocking(move || users::get(&db, &id)).await?;
    Ok(resource_response(StatusCode::OK, &state, &user, &proj))
}

/// PUT /Users/{id} — replace; honours `If-Match`.
async fn replace(
    _auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: Params,
    body: ScimJson,
) -> Result<HttpResponse, AppError> {
    valid_id(&id)?;
    let proj = projection(&params)?;
    let (db, if_match) = (state.db.clone(), if_match(&req));
    let user = blocking(move || users::replace(&db, &id, &body.0, if_match.as_deref())).await?;
    Ok(resource_response(StatusCode::OK, &state, &user, &proj))
}

/// PATCH /Users/{id} — answers 200 with the resource (DECISIONS.md §13); honours `If-Match`.
async fn patch(
    _auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: Params,
    body: ScimJson,
) -> Result<HttpResponse, AppError> {
    valid_id(&id)?;
    let proj = projection(&params)?;
    let (db, if_match) = (state.db.clone(), if_match(&req));
    let user = blocking(move || users::patch(&db, &id, &body.0, if_match.as_deref())).await?;
    Ok(resource_response(StatusCode::OK, &state, &user, &proj))
}

/// DELETE /Users/{id} — 204; the user becomes a tombstone and loses access.
async fn delete(
    _auth: Auth,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    valid_id(&id)?;
    let (db, if_match) = (state.db.clone(), if_match(&req));
    blocking(move || users::delete(&db, &id, if_match.as_deref())).await?;
    Ok(HttpResponse::NoContent().finish())
}
