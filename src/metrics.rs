//! The server's Prometheus metrics (`GET /metrics`, `OpenMetrics` text): one [`Metrics`] per `AppState`,
//! holding one registry of counters and histograms that the HTTP layer moves where an outcome is known (a
//! response's status, a token grant's answer, a use case's committed audit entries), plus the figures read at
//! scrape time: the database pools' state (r2d2 `state()`, no query) and the fan-out figures of
//! [`crate::fanout::metrics`] (one row per stream and state). A scrape's cost does not grow with the data.
//!
//! Every label value comes from a fixed set (a route *pattern*, never a raw path; a status code; an OAuth error
//! code), so the number of series stays bounded whatever clients send. The README's "Metrics and logs" section
//! lists every series.

use std::sync::Arc;

use actix_web::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::audit::{Committed, Observer};
use crate::db::{Db, DbError};
use crate::fanout::metrics::FanoutStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScimLabels {
    operation: &'static str,
    resource: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViaLabels {
    via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
    state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latency buckets: 1 ms to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// What a token endpoint was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOp {
    /// `client_credentials`: a service token.
    Minted,
    Refreshed,
    /// RFC 8693 token exchange.
    Exchanged,
    Introspected,
    Revoked,
}

impl TokenOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Minted => "minted",
            Self::Refreshed => "refreshed",
            Self::Exchanged => "exchanged",
            Self::Introspected => "introspected",
            Self::Revoked => "revoked",
        }
    }
}

/// The class of a refused authentication (never who).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header, or a scheme other than Bearer and Basic.
    NoCredential,
    /// A Bearer or Basic header that cannot hold a credential.
    Malformed,
    /// A credential that does not exist or was revoked.
    UnknownCredential,
    /// A valid credential without the scope the endpoint needs.
    MissingScope,
    /// OAuth client authentication failed (`invalid_client`).
    InvalidClient,
}

impl AuthFailure {
    const ALL: [Self; 5] = [
        Self::NoCredential,
        Self::Malformed,
        Self::UnknownCredential,
        Self::MissingScope,
        Self::InvalidClient,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::NoCredential => "no_credential",
            Self::Malformed => "malformed",
            Self::UnknownCredential => "unknown_credential",
            Self::MissingScope => "missing_scope",
            Self::InvalidClient => "invalid_client",
        }
    }
}

/// The counters and histograms of one server instance, and its registry.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpLabels>,
    scim: Family<ScimLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    revoked_presented: Family<ViaLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    deprovisions: Family<CauseLabels, Counter>,
    pool_wait: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let scim = Family::<ScimLabels, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        let revoked_presented = Family::<ViaLabels, Counter>::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let deprovisions = Family::<CauseLabels, Counter>::default();
        // 0.1 ms to about 6.5 s.
        let pool_wait = Histogram::new(exponential_buckets(0.0001, 4.0, 9));
        registry.register(
            "offboard_http_requests",
            "HTTP requests answered, by method, route pattern and status",
            http_requests.clone(),
        );
        registry.register(
            "offboard_http_request_duration_seconds",
            "Time from receiving a request to its response, by method, route pattern and status",
            http_duration.clone(),
        );
        registry.register(
            "offboard_scim_operations",
            "SCIM operations by operation (create, replace, patch, delete, get, list, search), resource \
             (Users, Groups, all) and result",
            scim.clone(),
        );
        registry.register(
            "offboard_tokens",
            "Token endpoint calls by operation (minted, refreshed, exchanged, introspected, revoked) and result \
             (ok, active, inactive or the OAuth error code)",
            tokens.clone(),
        );
        registry.register(
            "offboard_revoked_tokens_presented",
            "Tokens presented after they were revoked, by how: introspect, refresh_revoked, refresh_reuse",
            revoked_presented.clone(),
        );
        registry.register(
            "offboard_auth_failures",
            "Refused authentications by reason class",
            auth_failures.clone(),
        );
        registry.register(
            "offboard_deprovisions",
            "Access ended by this instance, by cause: deactivate, delete, group_removal, operator, reuse",
            deprovisions.clone(),
        );
        registry.register(
            "offboard_db_pool_wait_seconds",
            "Time spent waiting for a database connection from the pool (a timed-out wait counts its timeout)",
            pool_wait.clone(),
        );
        registry.register(
            "offboard_build",
            "The running build: version and git commit",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", option_env!("OFFBOARD_GIT_COMMIT").unwrap_or("unknown")),
            ]),
        );
        // The fixed label sets start at 0, so a first event is a rise Prometheus sees (`rate`, `increase`).
        for cause in DEPROVISION_CAUSES {
            drop(deprovisions.get_or_create(&CauseLabels { cause }));
        }
        for via in ["introspect", "refresh_revoked", "refresh_reuse"] {
            drop(revoked_presented.get_or_create(&ViaLabels { via }));
        }
        for reason in AuthFailure::ALL {
            drop(auth_failures.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }));
        }
        Self {
            registry,
            http_requests,
            http_duration,
            scim,
            tokens,
            revoked_presented,
            auth_failures,
            deprovisions,
            pool_wait,
        }
    }

    /// Counts a response: `route` is the matched route pattern (`None`: no route matched).
    pub fn request(&self, method: &Method, route: Option<&str>, status: u16, seconds: f64) {
        let labels = HttpLabels {
            method: method_label(method),
            route: route.unwrap_or("unmatched").to_owned(),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&labels).observe(seconds);
        if let Some((operation, resource)) = route.and_then(|r| scim_operation(method, r)) {
            self.scim
                .get_or_create(&ScimLabels {
                    operation,
                    resource,
                    result: scim_result(status),
                })
                .inc();
        }
    }

    /// Counts a token endpoint call and its result.
    pub fn token(&self, op: TokenOp, result: &'static str) {
        self.tokens
            .get_or_create(&TokenLabels {
                operation: op.as_str(),
                result,
            })
            .inc();
    }

    /// Counts a token presented after it was revoked (`via`: `introspect`, `refresh_revoked`, `refresh_reuse`).
    pub fn revoked_presented(&self, via: &'static str) {
        self.revoked_presented.get_or_create(&ViaLabels { via }).inc();
    }

    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Records how long a checkout waited for a database connection.
    pub fn pool_waited(&self, seconds: f64) {
        self.pool_wait.observe(seconds);
    }

    /// The metrics document: this registry, then the pools' state and the fan-out figures read now.
    pub fn render(&self, db: &Db, fanout: &FanoutStats) -> Result<String, DbError> {
        let mut now = Registry::default();
        let pools = Family::<PoolLabels, Gauge>::default();
        let max = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        now.register(
            "offboard_db_pool_connections",
            "Database connections by pool (read; on SQLite also write, the single writer) and state: in_use, idle",
            pools.clone(),
        );
        now.register(
            "offboard_db_pool_max_connections",
            "The most connections a pool opens",
            max.clone(),
        );
        let (read, write) = db.pool_state();
        for (pool, s) in std::iter::once(("read", read)).chain(write.map(|w| ("write", w))) {
            let in_use = s.connections.saturating_sub(s.idle);
            pools
                .get_or_create(&PoolLabels {
                    pool,
                    state: "in_use",
                })
                .set(i64::from(in_use));
            pools
                .get_or_create(&PoolLabels { pool, state: "idle" })
                .set(i64::from(s.idle));
            max.get_or_create(&vec![("pool", pool)]).set(i64::from(s.max));
        }
        let statements = Counter::<u64>::default();
        statements.inc_by(crate::db::statements::sent());
        now.register(
            "offboard_db_statements",
            "Statements this process has sent to the database, on every pooled connection, transaction control included",
            statements,
        );
        if let Some((batches, writes)) = db.batch_stats() {
            let (b, w) = (Counter::<u64>::default(), Counter::<u64>::default());
            b.inc_by(batches);
            w.inc_by(writes);
            now.register(
                "offboard_db_write_batches",
                "Transactions the batch writer committed (docs/decisions/0029-batch-writer.md)",
                b,
            );
            now.register(
                "offboard_db_batched_writes",
                "Write use cases those transactions held: divided by the batches, the mean batch size",
                w,
            );
        }
        if let Some(n) = db.writes_waiting() {
            let waiting = Gauge::<i64>::default();
            waiting.set(i64::try_from(n).unwrap_or(i64::MAX));
            now.register(
                "offboard_db_writes_waiting",
                "Writes waiting now for their turn in the batch writer's open transaction",
                waiting,
            );
        }
        crate::fanout::metrics::register(db, fanout, &mut now)?;
        let mut out = String::new();
        let failed =
            |e: std::fmt::Error| DbError::Query(diesel::result::Error::SerializationError(Box::new(e)));
        encode(&mut out, &self.registry).map_err(failed)?;
        // Both documents end with `# EOF`; the first one's goes.
        if let Some(head) = out.strip_suffix("# EOF\n") {
            out.truncate(head.len());
        }
        encode(&mut out, &now).map_err(failed)?;
        Ok(out)
    }
}

/// Counts access ended by committed use cases, from their audit entries.
impl Observer for Metrics {
    fn committed(&self, entries: &[Committed]) {
        for e in entries {
            if let Some(cause) = deprovision_cause(e) {
                self.deprovisions.get_or_create(&CauseLabels { cause }).inc();
            }
        }
    }
}

/// Makes `metrics` the audit observer of a request context.
pub fn observer(metrics: &Arc<Metrics>) -> Arc<dyn Observer> {
    metrics.clone()
}

/// Every `cause` of `offboard_deprovisions_total`.
const DEPROVISION_CAUSES: [&str; 5] = ["deactivate", "delete", "group_removal", "operator", "reuse"];

/// The cause of an ending of access recorded by `entry`, if it records one.
fn deprovision_cause(entry: &Committed) -> Option<&'static str> {
    use crate::lifecycle::groups::{GROUP_DELETED, REMOVED_FROM_GROUP};
    match entry.action {
        "user.deactivate" => Some("deactivate"),
        "user.delete" => Some("delete"),
        "token.reuse_detected" => Some("reuse"),
        "user.end_sessions" => match entry.reason.as_deref() {
            Some(r) if r == REMOVED_FROM_GROUP || r == GROUP_DELETED => Some("group_removal"),
            // An operator's `users revoke-tokens` or the IdP's Global Token Revocation.
            _ => Some("operator"),
        },
        _ => None,
    }
}

/// A method as a label: the standard ones by name, any other as `other` (an extension method is a client's
/// choice and must not add series).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("other")
}

/// The SCIM operation a request to route pattern `route` is: (operation, resource).
fn scim_operation(method: &Method, route: &str) -> Option<(&'static str, &'static str)> {
    let path = route.strip_prefix("/scim/v2")?;
    let path = path.strip_suffix('/').unwrap_or(path);
    let (resource, rest) = if let Some(rest) = path.strip_prefix("/Users") {
        ("Users", rest)
    } else if let Some(rest) = path.strip_prefix("/Groups") {
        ("Groups", rest)
    } else if path == "/.search" {
        return (method == Method::POST).then_some(("search", "all"));
    } else {
        return None;
    };
    let operation = match (rest, method.as_str()) {
        ("", "GET") => "list",
        ("", "POST") => "create",
        ("/.search", "POST") => "search",
        ("/{id}", "GET") => "get",
        ("/{id}", "PUT") => "replace",
        ("/{id}", "PATCH") => "patch",
        ("/{id}", "DELETE") => "delete",
        _ => return None,
    };
    Some((operation, resource))
}

/// A SCIM response's status as a result class.
fn scim_result(status: u16) -> &'static str {
    match status {
        200..=299 => "success",
        400 => "invalid",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        412 => "precondition_failed",
        413 => "too_large",
        429 => "throttled",
        s if (400..500).contains(&s) => "rejected",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scim_operations_come_from_the_route_pattern() {
        let cases = [
            (Method::GET, "/scim/v2/Users", Some(("list", "Users"))),
            (Method::POST, "/scim/v2/Users/", Some(("create", "Users"))),
            (
                Method::POST,
                "/scim/v2/Groups/.search",
                Some(("search", "Groups")),
            ),
            (Method::PATCH, "/scim/v2/Users/{id}", Some(("patch", "Users"))),
            (
                Method::DELETE,
                "/scim/v2/Groups/{id}/",
                Some(("delete", "Groups")),
            ),
            (Method::POST, "/scim/v2/.search", Some(("search", "all"))),
            (Method::GET, "/scim/v2/Schemas/{id}", None),
            (Method::PUT, "/scim/v2/Users", None),
            (Method::GET, "/oauth2/token", None),
        ];
        for (method, route, want) in cases {
            assert_eq!(scim_operation(&method, route), want, "{method} {route}");
        }
    }

    #[test]
    fn extension_methods_share_one_label() {
        let m = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&m), "other");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }

    #[test]
    fn causes_of_ended_access() {
        let c = |action, reason: Option<&str>| Committed {
            action,
            reason: reason.map(str::to_owned),
        };
        assert_eq!(deprovision_cause(&c("user.deactivate", None)), Some("deactivate"));
        assert_eq!(
            deprovision_cause(&c("user.end_sessions", Some("removed from group"))),
            Some("group_removal")
        );
        assert_eq!(
            deprovision_cause(&c("user.end_sessions", Some("left the company"))),
            Some("operator")
        );
        assert_eq!(deprovision_cause(&c("token.reuse_detected", None)), Some("reuse"));
        assert_eq!(deprovision_cause(&c("scim.user.create", None)), None);
    }
}
