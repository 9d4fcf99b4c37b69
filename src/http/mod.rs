//! actix-web only: routes, extractors and response shaping. No SQL and no business rules here; each handler
//! extracts, authorises, makes one blocking hop into a domain function and maps the result.
//!
//! - `auth`: the authenticated-client extractor (`Authenticated<S>` for a required scope).
//! - `body`: the SCIM JSON body and query-parameter extractors, with limits.
//! - `error`: the one place where `AppError` becomes an HTTP response.
//! - `scim_users`, `scim_groups`: `/scim/v2/Users`, `/scim/v2/Groups`; `scim_search`: `POST /.search` and the
//!   list helpers they share; `scim_discovery`: `/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas`.
//! - `scim_search`: `POST /scim/v2/.search` (all resource types), and the `SearchRequest`/`ListResponse` shapes.
//! - `oauth`, `gtr`: `/oauth2/token`, `/oauth2/introspect`, `/oauth2/revoke`, `/oauth2/global-token-revocation`;
//!   `wellknown`: the JWKS and the RFC 8414 metadata.
//! - `ssf`: the SSF transmitter API; `audit`: `/audit/events`, `/audit/verify`, the offboarding report.
//! - `ops`: `/healthz`, `/readyz`, `/metrics`.
//! - `console`: the operator console at `/console` (HTML pages, its live feed as Server-Sent Events).
//!
//! Two middlewares wrap every route: `request_context` (request id, tracing span, audit context, metrics, access
//! log) and, inside it, `refuse_nul`, which answers 400 to a `%00` in the path or query string before any handler
//! runs.

pub mod audit;
pub mod auth;
pub mod body;
pub mod console;
pub mod error;
pub mod gtr;
pub mod oauth;
pub mod ops;
pub mod scim_common;
pub mod scim_discovery;
pub mod scim_groups;
pub mod scim_search;
pub mod scim_users;
pub mod ssf;
pub mod wellknown;

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpMessage, web};
use tracing::Instrument;

use crate::config::Config;
use crate::credentials::UsageTracker;
use crate::db::Db;
use crate::error::AppError;
use crate::keys::{Kek, KekSource, KeyStore};
use crate::tokens::Authority;

/// Shared state of one server instance.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub usage: Arc<UsageTracker>,
    /// `{issuer}/scim/v2`, precomputed.
    pub scim_base: Arc<str>,
    pub tokens: Arc<Authority>,
    /// What this instance's fan-out worker measured (for `/metrics`).
    pub fanout: Arc<crate::fanout::metrics::FanoutStats>,
    /// Bounds the refused authentications written to the audit log.
    pub auth_failures: Arc<crate::audit::FailureLimiter>,
    /// This instance's Prometheus registry (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where requests that change state run their database work when writes are batched (see [`WriteLane`]).
    pub write_lane: Option<Arc<WriteLane>>,
}

/// The threads that run the database work of requests that change state (POST, PUT, PATCH, DELETE) when writes
/// are batched (docs/decisions/0029-batch-writer.md), apart from the blocking pool that runs reads.
///
/// A batched write holds its thread while it waits for its batch to commit, so a batch can hold only as many
/// writes as there are threads to wait in. The read pool is kept small on purpose (a few runnable threads per
/// core read fastest, `Config::blocking_threads_per_worker`); sharing it would keep batches at about three writes.
/// With a lane of their own, writes wait in batches of about fifteen and reads keep their few threads and
/// connections (BENCHMARKS.md §10).
pub struct WriteLane {
    /// A runtime used only for its blocking pool; nothing is ever spawned on its scheduler.
    runtime: Option<tokio::runtime::Runtime>,
}

impl WriteLane {
    /// Threads in the lane: the most writes that wait for one batch's commit together. Measured on one core
    /// (create, SQLite, `synchronous=FULL`): 4 threads 4.0 k/s, 8 5.8 k/s, 16 6.2–7.2 k/s, 24 5.1 k/s.
    pub const THREADS: usize = 16;

    fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(Self::THREADS)
            .thread_name("offboard-write")
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, AppError> {
        let Some(runtime) = &self.runtime else {
            unreachable!("taken only on drop")
        };
        runtime.spawn_blocking(f).await.map_err(AppError::internal)
    }
}

impl Drop for WriteLane {
    fn drop(&mut self) {
        // The last `AppState` may go on an async thread, where dropping a runtime the usual way (waiting for its
        // threads) panics; a running write keeps its thread and finishes.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl AppState {
    /// Loads the key-encryption key and the signing keys (creating any that are missing) and the trusted
    /// issuers: what `offboard serve`, the CLI's token commands and the tests all start from.
    pub fn open(db: Db, config: Config) -> anyhow::Result<Self> {
        let (kek, source) = Kek::load(&config)?;
        match &source {
            KekSource::DevFile { .. } => tracing::warn!(
                "DEV MODE: signing keys are sealed with a key-encryption key {}. Do not use this in production: \
                 set `keys.kek` (OFFBOARD_KEYS__KEK) and an https:// issuer",
                crate::keys::describe_source(&source)
            ),
            other => tracing::debug!("key-encryption key {}", crate::keys::describe_source(other)),
        }
        let keys = Arc::new(KeyStore::open(&db, &config, kek)?);
        let config = Arc::new(config);
        let state = crate::state::StateCache::watching(&db, config.tokens.verify_cache_entries)?;
        let tokens = Arc::new(Authority::new(db.clone(), config.clone(), keys)?.with_state(Arc::new(state)));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let waits = metrics.clone();
        db.on_checkout(move |d| waits.pool_waited(d.as_secs_f64()));
        let write_lane = match db.batch_stats() {
            Some(_) => Some(Arc::new(WriteLane::new()?)),
            None => None,
        };
        Ok(Self {
            write_lane,
            db,
            auth_failures: Arc::new(crate::audit::FailureLimiter::new(
                config.audit.auth_failures_per_minute,
            )),
            scim_base: config.scim_base().into(),
            config,
            usage: Arc::new(UsageTracker::default()),
            tokens,
            fanout: Arc::default(),
            metrics,
        })
    }
}

/// Registers every route, shared by `offboard serve` and the tests.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .app_data(body::query_config())
            .service(
                web::scope("")
                    .wrap(from_fn(refuse_nul))
                    .wrap(from_fn(request_context))
                    .configure(ops::routes)
                    .configure(wellknown::routes)
                    .configure(oauth::routes)
                    .configure(ssf::routes)
                    .configure(audit::routes)
                    .configure(console::routes)
                    .service(
                        web::scope("/scim/v2")
                            .configure(scim_users::routes)
                            .configure(scim_discovery::routes)
                            .configure(scim_groups::routes)
                            .configure(scim_search::routes)
                            .default_service(web::to(scim_not_found)),
                    ),
            );
    }
}

async fn scim_not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(crate::scim::ScimError::not_found("no such SCIM endpoint").into())
}

/// A resource whose other methods answer 405 with `Allow` and a SCIM error body (RFC 9110 §15.5.6, RFC 7644
/// §3.12), instead of actix's empty default.
pub(crate) fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    answer_405(web::resource(path), allow)
}

/// [`resource`] for a SCIM endpoint, also at `path/`: Microsoft's SCIM validator and some clients send
/// `GET /Users/?filter=…`, and a trailing slash names the same resource.
pub(crate) fn scim_resource(path: &str, allow: &'static str) -> actix_web::Resource {
    answer_405(web::resource(vec![path.to_owned(), format!("{path}/")]), allow)
}

fn answer_405(resource: actix_web::Resource, allow: &'static str) -> actix_web::Resource {
    resource
        .app_data(RouteLabel::default())
        .default_service(web::to(move || async move {
            actix_web::HttpResponse::MethodNotAllowed()
                .insert_header((actix_web::http::header::ALLOW, allow))
                .content_type(error::SCIM_JSON)
                .json(
                    crate::scim::ScimError::new(405, None, format!("this endpoint answers {allow} only"))
                        .to_json(),
                )
        }))
}

/// The request id of the current request (from `X-Request-Id` when the caller sent a sane one).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn incoming_request_id(req: &ServiceRequest) -> Option<String> {
    let v = req.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let sane = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    sane.then(|| v.to_owned())
}

tokio::task_local! {
    /// The audit context of the request this task serves; [`blocking_as`] carries it to the blocking thread.
    static REQUEST: crate::audit::Context;
    /// The credential name the request authenticated as, once known (the access log's `client`); [`blocking_as`]
    /// brings it back from the blocking thread.
    static CLIENT: std::cell::RefCell<Option<String>>;
    /// The write lane, for a request that changes state when writes are batched; [`blocking_as`] runs there.
    static LANE: Arc<WriteLane>;
}

/// The audit context of the request being served (empty outside one).
pub(crate) fn audit_context() -> crate::audit::Context {
    REQUEST.try_with(Clone::clone).unwrap_or_default()
}

/// Names the credential the current request authenticated as, for the access log (for handlers that learn it
/// outside the audit context's actor).
pub(crate) fn note_client(name: &str) {
    let _ = CLIENT.try_with(|c| *c.borrow_mut() = Some(name.to_owned()));
}

/// Gives each request an id and a tracing span, echoes the id in `X-Request-Id`, counts the response in the
/// metrics and writes the access log line.
async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = incoming_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let ctx = crate::audit::Context {
        actor: None,
        request_id: Some(id.clone()),
        received_at: Some(crate::db::now()),
        observer: state.as_ref().map(|s| crate::metrics::observer(&s.metrics)),
    };
    let method = req.method().clone();
    let serve = REQUEST.scope(ctx, async {
        let res = next.call(req).instrument(span.clone()).await;
        (res, CLIENT.with(|c| c.borrow_mut().take()))
    });
    let serve = CLIENT.scope(std::cell::RefCell::new(None), serve);
    let lane = match &state {
        Some(state) if changes_state(&method) => state.write_lane.clone(),
        _ => None,
    };
    let (res, client) = match lane {
        Some(lane) => LANE.scope(lane, serve).await,
        None => serve.await,
    };
    let mut res = res?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    let route = route_label(res.request());
    if let Some(state) = &state {
        state
            .metrics
            .request(&method, route.as_deref(), status, elapsed.as_secs_f64());
        if state.config.log.access {
            access_log(&method, route.as_deref(), status, elapsed, &id, client.as_deref());
        }
    }
    Ok(res)
}

/// The route pattern of a resource, as the metrics and the access log name it, found once per resource (and worker)
/// instead of once per request: `HttpRequest::match_pattern` matches the path against the routes again, and for a
/// route with an `{id}` that is a regex run as long as the router's own (BENCHMARKS.md §10). A resource with two
/// patterns (`scim_resource`: with and without a trailing slash) is named by its first, as actix names it.
#[derive(Default)]
pub(crate) struct RouteLabel(std::cell::OnceCell<Option<String>>);

/// The route pattern `req` was routed to (`/scim/v2/Users/{id}`), never its path: bounded, and no ids or secrets in
/// it. `None` when no route matched.
fn route_label(req: &actix_web::HttpRequest) -> Option<std::borrow::Cow<'_, str>> {
    match req.app_data::<RouteLabel>() {
        Some(label) => label
            .0
            .get_or_init(|| req.match_pattern())
            .as_deref()
            .map(std::borrow::Cow::Borrowed),
        None => req.match_pattern().map(std::borrow::Cow::Owned),
    }
}

/// Whether a request with this method is meant to change state (RFC 9110 §9.2.1: not a safe method). A POST that
/// only reads (`/.search`, introspection) takes the write lane too, which costs it nothing but the other pool.
fn changes_state(method: &actix_web::http::Method) -> bool {
    !matches!(
        *method,
        actix_web::http::Method::GET | actix_web::http::Method::HEAD | actix_web::http::Method::OPTIONS
    )
}

/// The access log line of one request (target `offboard::access`, level info). It names the route pattern, not
/// the path, and never the query string or a header: nothing secret can be in it.
fn access_log(
    method: &actix_web::http::Method,
    route: Option<&str>,
    status: u16,
    elapsed: std::time::Duration,
    request_id: &str,
    client: Option<&str>,
) {
    // Microsecond precision, a number in JSON logs.
    let latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    tracing::info!(
        target: "offboard::access",
        method = %method,
        route = route.unwrap_or("-"),
        status,
        latency_ms,
        request_id,
        client = client.unwrap_or("-"),
        "{method} {} {status} {latency_ms:.3}ms",
        route.unwrap_or("-"),
    );
}

/// Whether a request target holds a NUL character once percent-decoded (only `%00` decodes to one: a raw NUL
/// never gets past the HTTP parser).
fn has_nul(target: &str) -> bool {
    target
        .as_bytes()
        .windows(3)
        .any(|w| w.first() == Some(&b'%') && w.get(1..) == Some(b"00".as_slice()))
}

/// Refuses a NUL character in the path or query string of every route before any handler sees it, so no path
/// id or query value can carry one to the database (PostgreSQL refuses it in `text`): a SCIM error on the SCIM
/// and audit APIs, an OAuth-style `invalid_request` everywhere else.
async fn refuse_nul(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if !has_nul(req.path()) && !has_nul(req.query_string()) {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    }
    let detail = "the request path or query string contains a NUL character";
    tracing::info!("refused a request target with a NUL character");
    let scim_surface = ["/scim/", "/audit/"].iter().any(|p| req.path().starts_with(p));
    let res = if scim_surface {
        actix_web::ResponseError::error_response(&AppError::from(crate::scim::ScimError::invalid_value(
            detail,
        )))
    } else {
        actix_web::HttpResponse::BadRequest()
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({"error": "invalid_request", "error_description": detail}))
    };
    Ok(req.into_response(res).map_into_right_body())
}

/// Runs a blocking domain call on actix's blocking pool, inside the current tracing span.
pub async fn blocking<T, F>(f: F) -> Result<T, AppError>
where
    F: FnOnce() -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    blocking_as(f).await
}

/// [`blocking`] for handlers with their own error type (OAuth, SSF, Global Token Revocation).
pub async fn blocking_as<T, E, F>(f: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<AppError> + Send + 'static,
{
    let span = tracing::Span::current();
    let ctx = audit_context();
    let job =
        move || span.in_scope(|| crate::audit::in_context(ctx, || (f(), crate::audit::context_actor())));
    let (result, actor) = match LANE.try_with(Clone::clone) {
        Ok(lane) => lane.run(job).await.map_err(E::from)?,
        Err(_not_a_write) => web::block(job)
            .await
            .map_err(|e| E::from(AppError::internal(e)))?,
    };
    if let Some(actor) = actor {
        let _ = CLIENT.try_with(|c| *c.borrow_mut() = Some(actor));
    }
    result
}
