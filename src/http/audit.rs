//! The audit API, for auditors (scope `audit:read`, or `admin`):
//!
//! - `GET /audit/events?since=&until=&after_seq=&action=&target=&subject=&limit=&format=ndjson|csv`: the entries in
//!   `seq` order, streamed one keyset batch per blocking hop (constant memory, no connection held between
//!   batches). With `limit`, a full page carries `Link: <…after_seq=N…>; rel="next"`.
//! - `GET /audit/verify`: recomputes the chain (`{"ok", "entries", "first_bad_seq", …}`).
//! - `GET /audit/users/{id}/offboarding[?format=text]`: the offboarding report of one user.
//!
//! Errors are JSON bodies in the SCIM error shape (`status`, `detail`, `scimType`).

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

use super::auth::{Authenticated, RequiredScope};
use super::{AppState, blocking};
use crate::audit::export::{Cursor, Format, parse_time};
use crate::audit::report::{self, ReportError};
use crate::audit::verify;
use crate::credentials::{Client, Scope};
use crate::db::repo::audit::Selection;
use crate::error::AppError;
use crate::scim::ScimError;

/// Largest `limit` of one page.
pub const MAX_LIMIT: u64 = 1_000_000;

/// Scope `audit:read` (or `admin`).
#[derive(Debug)]
pub struct AuditRead;

impl RequiredScope for AuditRead {
    const SCOPE: Scope = Scope::AuditRead;

    fn allows(client: &Client) -> bool {
        client.has(Scope::AuditRead) || client.has(Scope::Admin)
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/audit/events", "GET").route(web::get().to(events)))
        .service(super::resource("/audit/verify", "GET").route(web::get().to(verify_chain)))
        .service(super::resource("/audit/users/{id}/offboarding", "GET").route(web::get().to(offboarding)));
}

fn bad(detail: impl Into<String>) -> AppError {
    ScimError::invalid_value(detail).into()
}

/// The query string as single-valued parameters; unknown names and repeats are refused (a NUL never gets here:
/// `http::refuse_nul` answers it for every route).
fn params(query: &str, allowed: &[&str]) -> Result<HashMap<String, String>, AppError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|_| bad("the query string is malformed"))?;
    let mut map = HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown parameter `{k}` (known: {})",
                allowed.join(", ")
            )));
        }
        if map.insert(k.clone(), v).is_some() {
            return Err(bad(format!("parameter `{k}` is given more than once")));
        }
    }
    Ok(map)
}

/// The selection, limit and format of an events query.
fn selection(p: &HashMap<String, String>) -> Result<(Selection, Option<u64>, Format), AppError> {
    let opt = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let time = |k: &str| opt(k).map(|v| parse_time(k, v).map_err(bad)).transpose();
    let after_seq = opt("after_seq")
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad("`after_seq` must be a non-negative integer"))
        })
        .transpose()?;
    let limit = opt("limit")
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| bad(format!("`limit` must be an integer from 1 to {MAX_LIMIT}")))
        })
        .transpose()?;
    let format = opt("format").map_or(Ok(Format::Ndjson), |f| f.parse().map_err(bad))?;
    let actions = opt("action")
        .map(|a| {
            a.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let selection = Selection {
        since: time("since")?,
        until: time("until")?,
        after_seq,
        actions,
        target: opt("target").map(str::to_owned),
        subject: opt("subject").map(str::to_owned),
    };
    Ok((selection, limit, format))
}

/// GET /audit/events — scope `audit:read`.
async fn events(
    req: HttpRequest,
    auth: Authenticated<AuditRead>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let query = req.query_string().to_owned();
    // Parameters are checked after the credential, so a refused credential is recorded whatever it asked.
    let (cursor, first, next, p, format) = auth
        .run(move |db, _| {
            let p = params(
                &query,
                &[
                    "since",
                    "until",
                    "after_seq",
                    "action",
                    "target",
                    "subject",
                    "limit",
                    "format",
                ],
            )?;
            let (sel, limit, format) = selection(&p)?;
            // The first batch in the authenticating hop; with a limit, also where the page ends (for `Link`).
            let next = match limit {
                Some(l) => crate::audit::export::page_end(db, &sel, l)?,
                None => None,
            };
            let mut cursor = Cursor::new(sel, limit);
            let first = cursor.next_batch(db)?;
            Ok((cursor, first, next, p, format))
        })
        .await?;
    let db = state.db.clone();
    let head = format.header();
    let first = format.encode(&first);
    let rest = futures_util::stream::unfold(Some(cursor), move |cursor| {
        let db = db.clone();
        async move {
            let mut cursor = cursor?;
            if cursor.is_done() {
                return None;
            }
            let batch = blocking(move || {
                let rows = cursor.next_batch(&db)?;
                Ok((cursor, rows))
            })
            .await;
            match batch {
                Ok((_, rows)) if rows.is_empty() => None,
                Ok((cursor, rows)) => Some((Ok(web::Bytes::from(format.encode(&rows))), Some(cursor))),
                Err(e) => {
                    // Headers are sent: all that is left is to cut the body short, which the client sees.
                    tracing::error!("audit export failed mid-stream: {e}");
                    Some((
                        Err(actix_web::error::ErrorInternalServerError("export failed")),
                        None,
                    ))
                }
            }
        }
    });
    let body = futures_util::stream::iter([
        Ok::<_, actix_web::Error>(web::Bytes::from(head)),
        Ok(web::Bytes::from(first)),
    ])
    .chain(rest);
    let mut res = HttpResponse::Ok();
    res.content_type(format.content_type())
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(next) = next {
        res.insert_header((header::LINK, next_link(&req, &p, next)));
    }
    Ok(res.streaming(body))
}

/// `<…?…&after_seq=N>; rel="next"`: the same query, resumed after entry `next`.
fn next_link(req: &HttpRequest, p: &HashMap<String, String>, next: i64) -> String {
    let mut pairs: Vec<(&str, String)> = p
        .iter()
        .filter(|(k, _)| k.as_str() != "after_seq")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    pairs.sort();
    pairs.push(("after_seq", next.to_string()));
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("<{}?{query}>; rel=\"next\"", req.path())
}

/// GET /audit/verify — scope `audit:read`.
async fn verify_chain(req: HttpRequest, auth: Authenticated<AuditRead>) -> Result<HttpResponse, AppError> {
    let query = req.query_string().to_owned();
    let v = auth
        .run(move |db, _| {
            params(&query, &[])?;
            let check = crate::keys::audit_signature_checker(db).map_err(AppError::internal)?;
            Ok(verify::run(db, &check)?)
        })
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(v))
}

/// GET /audit/users/{id}/offboarding — scope `audit:read`.
async fn offboarding(
    req: HttpRequest,
    auth: Authenticated<AuditRead>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let query = req.query_string().to_owned();
    let id = path.into_inner();
    let (r, text) = auth
        .run(move |db, _| {
            let p = params(&query, &["format"])?;
            let text = match p.get("format").map(String::as_str) {
                None | Some("json") => false,
                Some("text") => true,
                Some(other) => return Err(bad(format!("unknown format `{other}` (use json or text)"))),
            };
            crate::fanout::pending::expand(db)?;
            match report::for_user_id(db, &id) {
                Ok(r) => Ok((r, text)),
                Err(ReportError::NotFound) => Err(ScimError::not_found("no such user").into()),
                Err(ReportError::Db(e)) => Err(e.into()),
            }
        })
        .await?;
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CACHE_CONTROL, "no-store"));
    Ok(if text {
        res.content_type("text/plain; charset=utf-8")
            .body(report::to_text(&r))
    } else {
        res.json(r)
    })
}
