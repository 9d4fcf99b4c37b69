//! `Authenticated<S>`: an API credential presented in `Authorization` (`Bearer SECRET`, or HTTP Basic
//! `name:secret`; scheme case-insensitive) that must hold scope `S`.
//!
//! The extractor only parses the header (a missing or unparsable one is refused at once, 401). The credential is
//! checked against the database by [`Authenticated::run`], inside the same blocking hop as the handler's domain
//! call, so a request costs one hop, not two. The credential row is kept in memory by `crate::state`, which drops it
//! once a change commits anywhere (this process, the CLI, another instance): a credential revoked by the CLI is
//! refused from the next request on. Unknown or revoked → 401 with a `WWW-Authenticate: Bearer` challenge carrying
//! `error="invalid_token"`; no credential at all (no header, or a scheme other than Bearer and Basic) → 401 with
//! a bare challenge (RFC 6750 §3.1); valid without the scope → 403. Last-used times are recorded in memory and written in batches.
//!
//! Every handler that takes an `Authenticated<S>` must do its work through `run`; the test
//! `every_scim_route_requires_a_credential` checks each route.

use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::AppState;
use crate::audit::{self, FailureLimiter};
use crate::credentials::{self, Client, Presented, Scope, UsageTracker};
use crate::db::Db;
use crate::error::AppError;
use crate::metrics::{AuthFailure, Metrics};
use crate::state::StateCache;

/// A scope an endpoint requires, as a type.
pub trait RequiredScope {
    const SCOPE: Scope;

    /// Whether `client` may call the endpoint (by default: it holds [`Self::SCOPE`]).
    fn allows(client: &Client) -> bool {
        client.has(Self::SCOPE)
    }
}

/// Scope `ssf.manage`: services that manage their streams.
#[derive(Debug)]
pub struct SsfManage;

impl RequiredScope for SsfManage {
    const SCOPE: Scope = Scope::SsfManage;
}

/// Scope `ssf.read` (or `ssf.manage`, which includes reading).
#[derive(Debug)]
pub struct SsfRead;

impl RequiredScope for SsfRead {
    const SCOPE: Scope = Scope::SsfRead;

    fn allows(client: &Client) -> bool {
        client.has(Scope::SsfRead) || client.has(Scope::SsfManage)
    }
}

/// Scope `scim`: the IdP's provisioning client.
#[derive(Debug)]
pub struct ScimScope;

impl RequiredScope for ScimScope {
    const SCOPE: Scope = Scope::Scim;
}

/// A presented credential that [`run`](Self::run) checks before doing the handler's work.
pub struct Authenticated<S> {
    presented: Presented,
    db: Db,
    state: Arc<StateCache>,
    usage: Arc<UsageTracker>,
    failures: Arc<FailureLimiter>,
    metrics: Arc<Metrics>,
    path: String,
    scope: PhantomData<S>,
}

/// A copy to check again later (a long poll checks the credential once more before it answers).
impl<S> Clone for Authenticated<S> {
    fn clone(&self) -> Self {
        Self {
            presented: self.presented.clone(),
            db: self.db.clone(),
            state: self.state.clone(),
            usage: self.usage.clone(),
            failures: self.failures.clone(),
            metrics: self.metrics.clone(),
            path: self.path.clone(),
            scope: PhantomData,
        }
    }
}

impl<S: RequiredScope> Authenticated<S> {
    /// Checks the credential and its scope, then runs `f` with the database and the client — one blocking hop.
    pub async fn run<T, F>(self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&Db, &Client) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
        S: Send + 'static,
    {
        self.run_as(f).await
    }

    /// [`run`](Self::run) for handlers with their own error type.
    pub async fn run_as<T, E, F>(self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Db, &Client) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<AppError> + Send + 'static,
        S: Send + 'static,
    {
        let Self {
            presented,
            db,
            state,
            usage,
            failures,
            metrics,
            path,
            ..
        } = self;
        super::blocking_as(move || {
            let client = credentials::authenticate_cached(&state, &db, &presented)
                .map_err(|e| E::from(AppError::from(e)))?;
            let Some(client) = client else {
                tracing::info!("rejected an unknown or revoked credential");
                metrics.auth_failure(AuthFailure::UnknownCredential);
                let name = match &presented {
                    Presented::Basic { name, .. } => Some(truncated(name)),
                    Presented::Bearer(_) => None,
                };
                audit::auth_failure(&db, &failures, name, "unknown or revoked credential", &path);
                return Err(E::from(AppError::Unauthorized { presented: true }));
            };
            usage.record(&client.name);
            crate::audit::set_actor(&client.name);
            if !S::allows(&client) {
                tracing::info!(credential.name = %client.name, "credential {} lacks scope {}", client.name, S::SCOPE.as_str());
                metrics.auth_failure(AuthFailure::MissingScope);
                audit::auth_failure(&db, &failures, Some(&client.name), "missing scope", &path);
                return Err(E::from(AppError::Forbidden(S::SCOPE.as_str())));
            }
            f(&db, &client)
        })
        .await
    }
}

/// A client-supplied name, cut to a length fit for the audit log.
fn truncated(name: &str) -> &str {
    match name.char_indices().nth(64) {
        Some((i, _)) => name.get(..i).unwrap_or(name),
        None => name,
    }
}

/// Records a refusal decided before any database work (no or unparsable header), off the async thread.
fn refused_early(state: &AppState, class: AuthFailure, reason: &'static str, path: &str) {
    state.metrics.auth_failure(class);
    // Admitted here, so a flood of bare requests costs no blocking task once the budget is spent.
    let Some(suppressed) = state.auth_failures.admit() else {
        return;
    };
    let (db, path) = (state.db.clone(), path.to_owned());
    let ctx = super::audit_context();
    drop(actix_web::rt::task::spawn_blocking(move || {
        crate::audit::in_context(ctx, || {
            audit::record_auth_failure(&db, suppressed, None, reason, &path);
        });
    }));
}

impl<S: RequiredScope + 'static> FromRequest for Authenticated<S> {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(AppError::internal("AppState missing")));
        };
        let presented = match req.headers().get(header::AUTHORIZATION) {
            None => {
                refused_early(state, AuthFailure::NoCredential, "no credential", req.path());
                return ready(Err(AppError::Unauthorized { presented: false }));
            }
            Some(v) => v
                .to_str()
                .ok()
                .map(|v| (Presented::is_offered(v), Presented::parse(v))),
        };
        let Some((true, Some(presented))) = presented else {
            // A scheme we do not accept presented no credential (RFC 6750 §3.1: no error code then); a Bearer or
            // Basic one that cannot be a credential (malformed, NUL, too long) is a wrong credential.
            let offered = matches!(presented, Some((true, _)));
            refused_early(
                state,
                AuthFailure::Malformed,
                "unparsable Authorization header",
                req.path(),
            );
            return ready(Err(AppError::Unauthorized { presented: offered }));
        };
        ready(Ok(Self {
            presented,
            db: state.db.clone(),
            state: state.tokens.state.clone(),
            usage: state.usage.clone(),
            failures: state.auth_failures.clone(),
            metrics: state.metrics.clone(),
            path: req.path().to_owned(),
            scope: PhantomData,
        }))
    }
}
