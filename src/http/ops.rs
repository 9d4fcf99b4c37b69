//! Operator endpoints: `/healthz` (the process answers) and `/readyz` (the database answers).

use actix_web::{HttpResponse, web};

use super::{AppState, blocking};
use crate::error::AppError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// GET /healthz — no authentication.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// GET /metrics — no authentication (bind `listen` to a network Prometheus reaches, or put it behind a proxy).
async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let (db, measured, metrics) = (state.db.clone(), state.fanout.clone(), state.metrics.clone());
    let text = blocking(move || metrics.render(&db, &measured).map_err(AppError::from)).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

/// GET /readyz — no authentication. 503 when the database cannot be reached.
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let db = state.db.clone();
    blocking(move || db.read(|c| crate::db::ping(c).map_err(AppError::from))).await?;
    Ok(HttpResponse::Ok().content_type("text/plain").body("ready\n"))
}
