//! offboard-guard: verifies offboard access tokens inside a service, and refuses revoked ones.
//!
//! A [`Guard`] verifies each access token locally (signature under offboard's JWKS with the algorithm the key
//! names, `typ` `at+jwt`, `iss`, `aud`, `exp`/`nbf` with a stated leeway) and checks it against the revocation
//! state offboard publishes: per user the minimum token generation, ended logins (`sid`), tokens revoked by `jti`,
//! compromised signing keys. [`Guard::start`] reads offboard's revocation snapshot (`GET /ssf/snapshot`) before it
//! returns, so a guard that starts or restarts knows every revocation that can still matter before it accepts a
//! request; a background task then polls the SSF stream (RFC 8936, with acknowledgements) every
//! [`GuardConfig::poll_interval`].
//!
//! **Freshness.** The guard knows when it last confirmed the feed: the moment the last poll whose every SET it
//! applied was sent. Past [`GuardConfig::freshness_bound`] (default: the poll interval + 5 s) [`Guard::check`]
//! fails closed with [`Refusal::Stale`], or, with [`WhenStale::Introspect`], asks offboard's introspection
//! endpoint about each token. It is never silently stale.
//!
//! **Long-lived connections.** [`Guard::watch`] resolves the moment the revocation state kills an accepted token
//! (or the feed goes stale), so a WebSocket or SSE handler can close then instead of at its next request. Every
//! watch waits on one shared notification, sent once per change of the state, not on a timer of its own
//! (`docs/decisions/0037-watching-a-token.md`).
//!
//! One guard per stream: a poll acknowledges SETs for the whole stream, so two processes sharing one stream would
//! each miss what the other acknowledged. Give every service instance its own poll stream.
//!
//! **Push** ([`Delivery::Push`], optional): offboard POSTs each SET to the guard (RFC 8935), which verifies and
//! applies it as a poll would, through [`Guard::receive`] (the actix handler [`actix::receive_push`], or the
//! sidecar's `/ssf/push`). The freshness bound still holds: every poll interval the guard reads the stream's
//! delivery progress (`GET /ssf/status`), and confirms the feed as of a moment only once offboard reports every
//! SET queued before it delivered; a dead-lettered SET makes it read the snapshot again
//! (`docs/decisions/0039-push-guard-freshness.md`).

mod jwks;
mod persist;
mod push;
mod state;

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "actix")]
pub mod sidecar;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::{Value, json};

pub use jwks::KeySet;
pub use push::PushError;
pub use state::{Revocations, Revoked};

/// The largest leeway a guard accepts for `exp` and `nbf`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(30);

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
const ACCOUNT_ENABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
const ACCOUNT_PURGED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-purged";
const KEY_COMPROMISED: &str = "urn:offboard:secevent:key-compromised";

/// How long a compromised `kid` learned from the feed is remembered beyond the token lifetime: longer than any
/// JWKS cache may still list it.
const KEY_MEMORY: i64 = 3600;

/// How often expired revocation entries are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// How often the JWKS is fetched again even when every `kid` is known (retired keys leave it).
const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

/// The most verified tokens remembered (see [`Inner::verified`]); about 400 bytes each.
const VERIFIED_CAP: usize = 100_000;

/// What [`Guard::check`] does when the feed has not been confirmed within the freshness bound.
#[derive(Clone)]
pub enum WhenStale {
    /// Refuse every token ([`Refusal::Stale`]).
    FailClosed,
    /// Ask offboard's introspection endpoint (RFC 7662) about each token, as the credential `client_id` (scope
    /// `introspect`).
    Introspect { client_id: String, secret: String },
}

impl std::fmt::Debug for WhenStale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FailClosed => f.write_str("FailClosed"),
            Self::Introspect { client_id, .. } => f
                .debug_struct("Introspect")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

/// How SETs reach the guard.
#[derive(Clone, Default)]
pub enum Delivery {
    /// The guard polls its stream (RFC 8936; `POST /ssf/streams` without `delivery`). Works behind NAT.
    #[default]
    Poll,
    /// offboard pushes each SET to the guard (RFC 8935; a stream whose `endpoint_url` reaches
    /// [`Guard::receive`]). `authorization`, when set, is the `Authorization` header value every push must carry
    /// (the stream's `authorization_header`); it is compared in constant time.
    Push { authorization: Option<String> },
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Poll => f.write_str("Poll"),
            Self::Push { authorization } => f
                .debug_struct("Push")
                .field("authorization", &authorization.as_ref().map(|_| "…"))
                .finish(),
        }
    }
}

/// How a guard reaches offboard and how strict it is.
#[derive(Clone)]
pub struct GuardConfig {
    /// offboard's issuer URL (`https://`, or `http://` to a loopback address), exactly as in its tokens' `iss`.
    pub issuer: String,
    /// The `aud` this service accepts.
    pub audience: String,
    /// The service's stream, one per guard: a poll stream (`POST /ssf/streams` without `delivery`), or a push
    /// stream with [`Delivery::Push`].
    pub stream_id: String,
    /// The secret of the credential that owns the stream (scope `ssf.manage`).
    pub stream_credential: String,
    /// Poll (default) or push.
    pub delivery: Delivery,
    /// How often the stream is polled (push: how often its delivery progress is read). Default 1 s.
    pub poll_interval: Duration,
    /// How long after the last confirmed poll tokens are still accepted. Default `poll_interval` + 5 s.
    pub freshness_bound: Option<Duration>,
    /// Clock leeway for `exp` and `nbf`, at most [`MAX_LEEWAY`]. Default 5 s (offboard's own).
    pub leeway: Duration,
    /// The shortest time between two JWKS fetches caused by an unknown `kid`. Default 30 s.
    pub jwks_refresh_interval: Duration,
    pub when_stale: WhenStale,
    /// Timeout of each request to offboard. Default 5 s.
    pub request_timeout: Duration,
    /// Entries per page of the snapshot read at start (1–1000). Default 1000.
    pub snapshot_page_size: u32,
    /// Where to keep the revocation state across restarts (see [`Guard::start`]). Default: nowhere.
    pub state_file: Option<PathBuf>,
}

impl std::fmt::Debug for GuardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("stream_id", &self.stream_id)
            .field("delivery", &self.delivery)
            .field("poll_interval", &self.poll_interval)
            .field("freshness_bound", &self.freshness())
            .field("leeway", &self.leeway)
            .field("when_stale", &self.when_stale)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

impl GuardConfig {
    /// The defaults for everything but where offboard is and which stream to read.
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        stream_id: impl Into<String>,
        stream_credential: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into().trim_end_matches('/').to_owned(),
            audience: audience.into(),
            stream_id: stream_id.into(),
            stream_credential: stream_credential.into(),
            delivery: Delivery::Poll,
            poll_interval: Duration::from_secs(1),
            freshness_bound: None,
            leeway: Duration::from_secs(5),
            jwks_refresh_interval: Duration::from_secs(30),
            when_stale: WhenStale::FailClosed,
            request_timeout: Duration::from_secs(5),
            snapshot_page_size: 1000,
            state_file: None,
        }
    }

    /// The freshness bound in force.
    pub fn freshness(&self) -> Duration {
        self.freshness_bound
            .unwrap_or(self.poll_interval + Duration::from_secs(5))
    }

    fn validate(&self) -> Result<(), GuardError> {
        let bad = |m: &str| Err(GuardError::Config(m.to_owned()));
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| {
                self.issuer
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
            });
        if !self.issuer.starts_with("https://") && !loopback {
            return bad("issuer must be an https:// URL (http:// only to a loopback address)");
        }
        if self.audience.is_empty() || self.stream_id.is_empty() || self.stream_credential.is_empty() {
            return bad("audience, stream_id and stream_credential are required");
        }
        if !(1..=1000).contains(&self.snapshot_page_size) {
            return bad("snapshot_page_size must be 1-1000");
        }
        if self.leeway > MAX_LEEWAY {
            return bad("leeway must be at most 30 s");
        }
        if self.poll_interval.is_zero() || self.freshness() < self.poll_interval {
            return bad("poll_interval must be positive and the freshness bound at least the poll interval");
        }
        if self.state_file.is_some() && matches!(self.delivery, Delivery::Push { .. }) {
            // A restart from the file drains the stream by polling; a push stream is not polled.
            return bad("state_file works with poll delivery only");
        }
        Ok(())
    }
}

/// A guard that could not start.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("guard configuration: {0}")]
    Config(String),
    #[error("cannot reach offboard: {0}")]
    Http(String),
    #[error("offboard answered {0}")]
    Answer(String),
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no bearer token")]
    Missing,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token is signed by a key offboard does not publish")]
    UnknownKey,
    #[error("the token is revoked ({0:?})")]
    Revoked(Revoked),
    /// The feed was not confirmed within the freshness bound (fail closed).
    #[error("the revocation feed was last confirmed {0:?} ago, beyond the freshness bound")]
    Stale(Duration),
    #[error("introspection: {0}")]
    Introspection(String),
}

/// The claims of an accepted access token.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The SCIM user id (or, for a service token, the client id).
    pub sub: String,
    pub jti: String,
    pub exp: i64,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// The login (refresh-token family); absent on service tokens.
    #[serde(default)]
    pub sid: Option<String>,
    /// The user's token generation when minted; absent on service tokens.
    #[serde(default)]
    pub tgen: Option<i64>,
    /// The signing key (from the header).
    #[serde(skip)]
    pub kid: String,
}

/// What a guard has seen, for operators and tests.
#[derive(Debug, Clone)]
pub struct Status {
    /// The outbox position of the snapshot the guard started from.
    pub snapshot_position: i64,
    /// How long ago the feed was last confirmed.
    pub confirmed_ago: Duration,
    /// JWKS fetches so far.
    pub jwks_fetches: u64,
    /// SETs applied from the feed so far.
    pub sets_applied: u64,
    /// (subjects, sessions, tokens, keys) held.
    pub entries: (usize, usize, usize, usize),
    /// Whether the guard started from its state file rather than a snapshot.
    pub restored: bool,
}

struct Inner {
    config: GuardConfig,
    http: reqwest::Client,
    /// The stream's `aud` (the SETs' audience).
    stream_audience: String,
    keys: RwLock<KeySet>,
    /// The JWKS document `keys` was parsed from, for the state file.
    jwks_text: RwLock<String>,
    /// When the JWKS was last fetched; the lock also makes concurrent refreshes one.
    jwks_fetched: tokio::sync::Mutex<Instant>,
    revocations: RwLock<Revocations>,
    /// When the feed was last confirmed; `None`: not since the state file was written, as far as this process
    /// can tell.
    confirmed: Mutex<Option<Instant>>,
    /// Told of every change of `revocations` and of the feed going stale or fresh again: what [`Guard::watch`]
    /// waits on.
    news: tokio::sync::watch::Sender<News>,
    /// `tokens.max_access_ttl_secs` + leeway, from the snapshot.
    max_token_lifetime: i64,
    snapshot_position: i64,
    /// The outbox position the revocation state is known complete to without the feed: the snapshot's, or that of
    /// the snapshot read again after a dead letter (push).
    known_position: AtomicI64,
    /// The stream's dead-letter count when the revocation state was last known complete (push).
    dead_baseline: AtomicI64,
    jwks_fetches: AtomicU64,
    sets_applied: AtomicU64,
    restored: bool,
    /// Tokens whose signature, `typ`, `iss`, `aud` and `nbf` were verified, by the SHA-256 of the token: a token
    /// seen again costs a hash and a lookup instead of a signature check. A hit still needs its key published
    /// and the token unexpired (else it is verified afresh); the revocation state is checked on every call.
    verified: RwLock<HashMap<[u8; 32], Claims>>,
}

/// What the feed tells the watches: a counter of revocation-state changes and whether the feed is stale.
#[derive(Debug, Clone, Copy, Default)]
struct News {
    changes: u64,
    stale: bool,
}

/// Aborts the guard's tasks (the feed and the freshness watchdog) when the last clone of the guard goes.
struct Task(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Task {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A running guard. Cheap to clone; the feed task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
    _task: Arc<Task>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The member `key` of a JSON object, or `null`.
fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// RFC 8725 §3.11: media types compare ignoring ASCII case, `application/` optional.
fn typ_is(typ: Option<&str>, expected: &str) -> bool {
    typ.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/").unwrap_or(&t) == expected
    })
}

/// The first `rel="next"` target of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

async fn fetch_text(
    req: reqwest::RequestBuilder,
) -> Result<(reqwest::header::HeaderMap, String), GuardError> {
    let res = req.send().await.map_err(|e| GuardError::Http(e.to_string()))?;
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.map_err(|e| GuardError::Http(e.to_string()))?;
    if !status.is_success() {
        return Err(GuardError::Answer(format!(
            "{status}: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    Ok((headers, text))
}

impl Guard {
    /// Starts a guard: reads the stream (for its audience), the JWKS and the whole revocation snapshot, then
    /// starts polling. Returns only once the guard knows every revocation that can still matter, so the first
    /// request it checks is already judged against them. Needs a Tokio runtime.
    ///
    /// With [`GuardConfig::state_file`], the state is written to that file (atomically) after every poll that
    /// changed it, before the poll that acknowledges those SETs; and a guard that starts with a usable file
    /// (same issuer, audience and stream, written within the access-token lifetime) loads it instead of reading
    /// a snapshot, then polls once, draining what the stream queued meanwhile, before it returns. offboard
    /// unreachable, it still starts, complete as of the file: tokens the file revokes are refused as revoked,
    /// and the feed counts as confirmed when the file says it last was, so past the freshness bound every
    /// other token is refused as stale (or introspected) until a poll succeeds. An unusable file is ignored (with
    /// a warning) and the guard reads a snapshot.
    pub async fn start(config: GuardConfig) -> Result<Self, GuardError> {
        config.validate()?;
        // reqwest's rustls needs a process-wide provider; another part of the process may have installed one.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .no_proxy()
            .build()
            .map_err(|e| GuardError::Http(e.to_string()))?;
        if let Some(path) = config.state_file.clone() {
            match persist::load(&path, &config)
                .map_err(|e| e.to_string())
                .and_then(|saved| KeySet::parse(&saved.jwks).map(|keys| (saved, keys)))
            {
                Ok((saved, keys)) => return Ok(Self::resume(config, http, saved, keys).await),
                Err(e) => tracing::warn!(
                    "offboard-guard: state file {} not used ({e}); reading the snapshot",
                    path.display()
                ),
            }
        }
        let iss = config.issuer.clone();
        let bearer = format!("Bearer {}", config.stream_credential);
        let (_, stream) = fetch_text(
            http.get(format!("{iss}/ssf/streams"))
                .query(&[("stream_id", &config.stream_id)])
                .header(reqwest::header::AUTHORIZATION, &bearer),
        )
        .await?;
        let stream: Value =
            serde_json::from_str(&stream).map_err(|e| GuardError::Answer(format!("the stream: {e}")))?;
        let stream_audience = match &at(&stream, "aud") {
            Value::String(a) => a.clone(),
            Value::Array(a) => a.first().and_then(Value::as_str).unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        let (method, kind) = match config.delivery {
            Delivery::Poll => ("urn:ietf:rfc:8936", "poll"),
            Delivery::Push { .. } => ("urn:ietf:rfc:8935", "push"),
        };
        if at(at(&stream, "delivery"), "method") != method {
            return Err(GuardError::Config(format!(
                "stream {} is not a {kind} stream",
                config.stream_id
            )));
        }
        let (_, jwks_text) = fetch_text(http.get(format!("{iss}/.well-known/jwks.json"))).await?;
        let mut keys = KeySet::parse(&jwks_text).map_err(GuardError::Answer)?;
        // Push: dead letters counted before the snapshot, so one given up on after it is noticed.
        let dead_baseline = match config.delivery {
            Delivery::Poll => 0,
            Delivery::Push { .. } => push::dead_letters(&http, &config).await?,
        };
        // The snapshot: every page, following `Link: rel="next"`.
        let started = Instant::now();
        let (revocations, snapshot_position, max_token_lifetime) = read_snapshot(&http, &config).await?;
        for kid in revocations.compromised_kids() {
            keys.remove(&kid);
        }
        let inner = Arc::new(Inner {
            config,
            http,
            stream_audience,
            keys: RwLock::new(keys),
            jwks_text: RwLock::new(jwks_text),
            jwks_fetched: tokio::sync::Mutex::new(Instant::now()),
            revocations: RwLock::new(revocations),
            confirmed: Mutex::new(Some(started)),
            news: tokio::sync::watch::Sender::new(News::default()),
            max_token_lifetime,
            snapshot_position,
            known_position: AtomicI64::new(snapshot_position),
            dead_baseline: AtomicI64::new(dead_baseline),
            jwks_fetches: AtomicU64::new(1),
            sets_applied: AtomicU64::new(0),
            restored: false,
            verified: RwLock::default(),
        });
        persist(&inner).await;
        Ok(Self::spawn(inner, Vec::new()))
    }

    fn spawn(inner: Arc<Inner>, ack: Vec<String>) -> Self {
        let tasks = vec![
            tokio::spawn(feed(inner.clone(), ack)),
            tokio::spawn(watchdog(inner.clone())),
        ];
        Self {
            inner,
            _task: Arc::new(Task(tasks)),
        }
    }

    /// Starts from the state file, then drains what the stream queued since (if offboard answers).
    async fn resume(
        config: GuardConfig,
        http: reqwest::Client,
        saved: persist::Saved<Revocations>,
        mut keys: KeySet,
    ) -> Self {
        let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(0);
        let mut revocations = saved.revocations;
        revocations.prune(epoch_now() - leeway);
        for kid in revocations.compromised_kids() {
            keys.remove(&kid);
        }
        // The file's confirmation, on this process's clock; one from the future (the clock went back) is none.
        let confirmed = saved.confirmed_at_ms.and_then(|at| {
            let ago = u64::try_from(epoch_ms() - at).ok()?;
            Instant::now().checked_sub(Duration::from_millis(ago))
        });
        let inner = Arc::new(Inner {
            config,
            http,
            stream_audience: saved.stream_audience,
            keys: RwLock::new(keys),
            jwks_text: RwLock::new(saved.jwks),
            // The JWKS of the file may be old: the feed fetches it again at once.
            jwks_fetched: tokio::sync::Mutex::new(
                Instant::now()
                    .checked_sub(JWKS_MAX_AGE)
                    .unwrap_or_else(Instant::now),
            ),
            revocations: RwLock::new(revocations),
            confirmed: Mutex::new(confirmed),
            news: tokio::sync::watch::Sender::new(News::default()),
            known_position: AtomicI64::new(saved.snapshot_position),
            dead_baseline: AtomicI64::new(0),
            max_token_lifetime: saved.max_token_lifetime,
            snapshot_position: saved.snapshot_position,
            jwks_fetches: AtomicU64::new(0),
            sets_applied: AtomicU64::new(0),
            restored: true,
            verified: RwLock::default(),
        });
        tracing::info!(
            "offboard-guard: revocation state loaded from {:?} (snapshot position {}, {:?} entries)",
            inner.config.state_file,
            inner.snapshot_position,
            inner.revocations.read().map_or((0, 0, 0, 0), |r| r.len())
        );
        // offboard keeps every SET of the stream until it is acknowledged: what happened since the file was
        // written is queued there. Drain it before the first check.
        let mut ack = Vec::new();
        let mut complete = true;
        loop {
            let sent = Instant::now();
            match poll_once(&inner, &ack).await {
                Ok(batch) => {
                    complete &= batch.complete;
                    if complete
                        && !batch.more
                        && let Ok(mut c) = inner.confirmed.lock()
                    {
                        *c = Some(sent);
                    }
                    ack = if batch.applied.is_empty() || persist(&inner).await {
                        batch.applied
                    } else {
                        Vec::new()
                    };
                    if !batch.more {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "offboard-guard: cannot poll stream {} ({e}); checking tokens against the state file, \
                         stale until a poll succeeds",
                        inner.config.stream_id
                    );
                    break;
                }
            }
        }
        Self::spawn(inner, ack)
    }

    pub fn config(&self) -> &GuardConfig {
        &self.inner.config
    }

    pub fn status(&self) -> Status {
        Status {
            snapshot_position: self.inner.snapshot_position,
            confirmed_ago: self.confirmed_ago(),
            jwks_fetches: self.inner.jwks_fetches.load(Ordering::Relaxed),
            sets_applied: self.inner.sets_applied.load(Ordering::Relaxed),
            entries: self.inner.revocations.read().map_or((0, 0, 0, 0), |r| r.len()),
            restored: self.inner.restored,
        }
    }

    fn confirmed_ago(&self) -> Duration {
        confirmed_ago(&self.inner)
    }

    /// Resolves the moment the guard would refuse the token these claims came from: its user's generation was
    /// raised, its login (`sid`) ended, its `jti` revoked or its signing key declared compromised
    /// ([`Refusal::Revoked`]), or the feed went unconfirmed past the freshness bound ([`Refusal::Stale`], in
    /// either [`WhenStale`] mode: a long-lived connection cannot be asked about again, so it ends and its client
    /// reconnects through [`Guard::check`]). It does not resolve at the token's `exp`.
    ///
    /// Cheap: every watch waits on one notification the feed sends once per change of the revocation state (and
    /// once when the feed goes stale), then looks its token up; no watch polls or holds a timer. The future owns
    /// a clone of the guard (so the feed runs while it waits) and may be dropped at any time.
    pub fn watch(&self, claims: &Claims) -> impl Future<Output = Refusal> + Send + 'static {
        let guard = self.clone();
        let claims = claims.clone();
        let mut news = self.inner.news.subscribe();
        async move {
            loop {
                // Seen before the state is read: a change made after this read is announced after it, so
                // `changed` below sees it.
                news.borrow_and_update();
                if let Some(refusal) = guard.refusal_of(&claims) {
                    return refusal;
                }
                if news.changed().await.is_err() {
                    // The sender lives as long as the guard this future holds: not reached.
                    return Refusal::Stale(guard.confirmed_ago());
                }
            }
        }
    }

    /// Why the state (or the feed's age) refuses a token with these claims now, if it does.
    fn refusal_of(&self, claims: &Claims) -> Option<Refusal> {
        let revoked = self.inner.revocations.read().ok().and_then(|r| {
            r.refuses(
                &claims.kid,
                &claims.jti,
                claims.sid.as_deref(),
                &claims.sub,
                claims.tgen,
            )
        });
        if let Some(why) = revoked {
            return Some(Refusal::Revoked(why));
        }
        let ago = self.confirmed_ago();
        (ago > self.inner.config.freshness()).then_some(Refusal::Stale(ago))
    }

    /// Checks an `Authorization` header value (`Bearer TOKEN`).
    pub async fn check_header(&self, authorization: Option<&str>) -> Result<Claims, Refusal> {
        let token = authorization
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Missing)?;
        self.check(token).await
    }

    /// Verifies an access token and checks it against the revocation state; refuses it when the feed is stale
    /// (or asks introspection, as configured).
    pub async fn check(&self, token: &str) -> Result<Claims, Refusal> {
        let claims = self.verify(token).await?;
        let refused = self.inner.revocations.read().ok().and_then(|r| {
            r.refuses(
                &claims.kid,
                &claims.jti,
                claims.sid.as_deref(),
                &claims.sub,
                claims.tgen,
            )
        });
        if let Some(why) = refused {
            return Err(Refusal::Revoked(why));
        }
        let ago = self.confirmed_ago();
        if ago > self.inner.config.freshness() {
            return match &self.inner.config.when_stale {
                WhenStale::FailClosed => Err(Refusal::Stale(ago)),
                WhenStale::Introspect { client_id, secret } => {
                    self.introspect(token, client_id, secret).await.map(|()| claims)
                }
            };
        }
        Ok(claims)
    }

    /// Signature, `typ`, `iss`, `aud`, `exp`, `nbf`: everything that needs no revocation state.
    async fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let digest = token_digest(token);
        if let Some(claims) = self.cached(&digest) {
            return Ok(claims);
        }
        let claims = self.verify_afresh(token).await?;
        if let Ok(mut verified) = self.inner.verified.write() {
            if verified.len() >= VERIFIED_CAP {
                let now = epoch_now();
                verified.retain(|_, c| c.exp >= now);
                if verified.len() >= VERIFIED_CAP {
                    verified.clear();
                }
            }
            verified.insert(digest, claims.clone());
        }
        Ok(claims)
    }

    /// The claims of a token verified before, if verifying it again now would accept it: its key is still
    /// published (a compromised key is removed from the set) and it is not expired, with a margin of a second
    /// so the boundary is decided by a full verification.
    fn cached(&self, digest: &[u8; 32]) -> Option<Claims> {
        let verified = self.inner.verified.read().ok()?;
        let claims = verified.get(digest)?;
        let leeway = i64::try_from(self.inner.config.leeway.as_secs()).unwrap_or(0);
        if claims.exp <= epoch_now() - leeway {
            return None;
        }
        self.inner.keys.read().ok()?.get(&claims.kid)?;
        Some(claims.clone())
    }

    async fn verify_afresh(&self, token: &str) -> Result<Claims, Refusal> {
        let header = decode_header(token).map_err(|e| Refusal::Invalid(e.to_string()))?;
        if !typ_is(header.typ.as_deref(), "at+jwt") {
            return Err(Refusal::Invalid("typ is not at+jwt".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| Refusal::Invalid("the token names no kid".into()))?;
        if self
            .inner
            .revocations
            .read()
            .is_ok_and(|r| r.key_compromised(&kid))
        {
            return Err(Refusal::Revoked(Revoked::Key));
        }
        let (alg, key) = self.key(&kid).await.ok_or(Refusal::UnknownKey)?;
        let mut validation = Validation::new(alg);
        validation.leeway = self.inner.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.inner.config.issuer]);
        validation.set_audience(&[&self.inner.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let mut claims = decode::<Claims>(token, &key, &validation)
            .map_err(|e| Refusal::Invalid(e.to_string()))?
            .claims;
        claims.kid = kid;
        Ok(claims)
    }

    /// The key `kid`, fetching the JWKS again when it is unknown, at most once per `jwks_refresh_interval`.
    async fn key(&self, kid: &str) -> Option<(jsonwebtoken::Algorithm, jsonwebtoken::DecodingKey)> {
        key(&self.inner, kid).await
    }

    async fn introspect(&self, token: &str, client_id: &str, secret: &str) -> Result<(), Refusal> {
        let iss = &self.inner.config.issuer;
        let res = self
            .inner
            .http
            .post(format!("{iss}/oauth2/introspect"))
            .basic_auth(client_id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .map_err(|e| Refusal::Introspection(e.to_string()))?;
        let body: Value = res
            .json()
            .await
            .map_err(|e| Refusal::Introspection(e.to_string()))?;
        if at(&body, "active").as_bool() == Some(true) {
            Ok(())
        } else {
            Err(Refusal::Introspection("the token is not active".into()))
        }
    }
}

/// Reads the whole revocation snapshot, following `Link: rel="next"`: (the state, the first page's position, the
/// longest access-token lifetime).
async fn read_snapshot(
    http: &reqwest::Client,
    config: &GuardConfig,
) -> Result<(Revocations, i64, i64), GuardError> {
    let bearer = format!("Bearer {}", config.stream_credential);
    let mut revocations = Revocations::default();
    let mut url = format!("{}/ssf/snapshot", config.issuer);
    let mut query = vec![
        ("stream_id", config.stream_id.clone()),
        ("limit", config.snapshot_page_size.to_string()),
    ];
    let mut first: Option<(i64, i64)> = None;
    loop {
        let (headers, text) = fetch_text(
            http.get(&url)
                .query(&query)
                .header(reqwest::header::AUTHORIZATION, &bearer),
        )
        .await?;
        let page: Value =
            serde_json::from_str(&text).map_err(|e| GuardError::Answer(format!("the snapshot: {e}")))?;
        // The first page's position: every later page is at least as new.
        first.get_or_insert((
            at(&page, "position").as_i64().unwrap_or_default(),
            at(&page, "max_token_lifetime").as_i64().unwrap_or(3600),
        ));
        apply_snapshot(&mut revocations, &page);
        match next_link(&headers) {
            Some(next) => {
                url = next;
                query.clear();
            }
            None => break,
        }
    }
    let (position, lifetime) = first.unwrap_or((0, 3600));
    Ok((revocations, position, lifetime))
}

async fn key(inner: &Inner, kid: &str) -> Option<(jsonwebtoken::Algorithm, jsonwebtoken::DecodingKey)> {
    if let Some(k) = inner.keys.read().ok()?.get(kid) {
        return Some(k.clone());
    }
    {
        let mut fetched = inner.jwks_fetched.lock().await;
        // Another task may have fetched it while this one waited.
        if let Some(k) = inner.keys.read().ok()?.get(kid) {
            return Some(k.clone());
        }
        if fetched.elapsed() < inner.config.jwks_refresh_interval {
            return None;
        }
        *fetched = Instant::now();
        refresh_jwks(inner).await;
    }
    inner.keys.read().ok()?.get(kid).cloned()
}

/// Fetches the JWKS and replaces the cached set, leaving out compromised keys. Keeps the old set on failure.
async fn refresh_jwks(inner: &Inner) {
    inner.jwks_fetches.fetch_add(1, Ordering::Relaxed);
    let url = format!("{}/.well-known/jwks.json", inner.config.issuer);
    match fetch_text(inner.http.get(url))
        .await
        .map(|(_, body)| KeySet::parse(&body).map(|set| (set, body)))
    {
        Ok(Ok((mut set, body))) => {
            if let Ok(mut text) = inner.jwks_text.write() {
                *text = body;
            }
            if let Ok(r) = inner.revocations.read() {
                for kid in r.compromised_kids() {
                    set.remove(&kid);
                }
            }
            if let Ok(mut keys) = inner.keys.write() {
                *keys = set;
            }
        }
        Ok(Err(e)) => tracing::warn!("offboard-guard: {e}"),
        Err(e) => tracing::warn!("offboard-guard: fetching the JWKS failed: {e}"),
    }
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn token_digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Writes the state file, if one is configured. Returns whether what the guard is about to acknowledge may be:
/// the file was written, or (it could not be) removed, so a restart reads a snapshot instead of missing it.
async fn persist(inner: &Arc<Inner>) -> bool {
    let Some(path) = inner.config.state_file.clone() else {
        return true;
    };
    let from = inner.clone();
    let target = path.clone();
    let written = tokio::task::spawn_blocking(move || {
        let revocations = from
            .revocations
            .read()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let confirmed_at_ms = from
            .confirmed
            .lock()
            .ok()
            .and_then(|c| *c)
            .map(|t| epoch_ms() - i64::try_from(t.elapsed().as_millis()).unwrap_or(i64::MAX));
        let jwks = from.jwks_text.read().map(|t| t.clone()).unwrap_or_default();
        persist::write(
            &target,
            &persist::Saved {
                version: persist::VERSION,
                issuer: from.config.issuer.clone(),
                audience: from.config.audience.clone(),
                stream_id: from.config.stream_id.clone(),
                stream_audience: from.stream_audience.clone(),
                written_at: epoch_now(),
                confirmed_at_ms,
                snapshot_position: from.snapshot_position,
                max_token_lifetime: from.max_token_lifetime,
                jwks,
                revocations: &*revocations,
            },
        )
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let Err(e) = written else {
        return true;
    };
    tracing::warn!(
        "offboard-guard: cannot write the state file {}: {e}",
        path.display()
    );
    match std::fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(
                "offboard-guard: cannot remove the outdated state file {} either ({e}): holding back \
                 acknowledgements until it can be written",
                path.display()
            );
            false
        }
    }
}

fn apply_snapshot(r: &mut Revocations, page: &Value) {
    let list = |name: &str| page[name].as_array().cloned().unwrap_or_default();
    let until = |e: &Value| at(e, "until").as_i64().unwrap_or(i64::MAX);
    for e in list("keys") {
        if let Some(kid) = at(&e, "kid").as_str() {
            r.compromise_key(kid, until(&e));
        }
    }
    for e in list("subjects") {
        if let (Some(sub), Some(g)) = (at(&e, "sub").as_str(), at(&e, "min_tgen").as_i64()) {
            r.raise(sub, g, until(&e));
        }
    }
    for e in list("sessions") {
        if let Some(sid) = at(&e, "sid").as_str() {
            r.end_session(sid, until(&e));
        }
    }
    for e in list("tokens") {
        if let Some(jti) = at(&e, "jti").as_str() {
            r.revoke_token(jti, until(&e));
        }
    }
}

/// The feed task: polls the stream, applies each SET, acknowledges what it applied with the next poll, and
/// marks the feed confirmed when a poll's every SET was applied.
async fn feed(inner: Arc<Inner>, mut ack: Vec<String>) {
    let mut progress = push::Heartbeats::default();
    let mut pruned = Instant::now();
    loop {
        let sent = Instant::now();
        let polled = match inner.config.delivery {
            Delivery::Poll => Some(poll_once(&inner, &ack).await),
            Delivery::Push { .. } => {
                push::heartbeat(&inner, &mut progress).await;
                None
            }
        };
        let more = match polled {
            None => false,
            Some(Ok(batch)) => {
                if !batch.applied.is_empty() {
                    inner.news.send_modify(|n| n.changes += 1);
                }
                if batch.complete
                    && let Ok(mut confirmed) = inner.confirmed.lock()
                {
                    *confirmed = Some(sent);
                    drop(confirmed);
                    inner.news.send_if_modified(|n| std::mem::take(&mut n.stale));
                }
                // The state file first: a SET is acknowledged only once a restart would find it.
                ack = if batch.applied.is_empty() || persist(&inner).await {
                    batch.applied
                } else {
                    Vec::new()
                };
                batch.more
            }
            Some(Err(e)) => {
                tracing::warn!(
                    "offboard-guard: polling stream {} failed: {e}",
                    inner.config.stream_id
                );
                false
            }
        };
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = Instant::now();
            if let Ok(mut r) = inner.revocations.write() {
                r.prune(epoch_now() - i64::try_from(inner.config.leeway.as_secs()).unwrap_or(0));
            }
        }
        {
            let mut fetched = inner.jwks_fetched.lock().await;
            if fetched.elapsed() >= JWKS_MAX_AGE {
                *fetched = Instant::now();
                refresh_jwks(&inner).await;
            }
        }
        if !more {
            tokio::time::sleep(inner.config.poll_interval).await;
        }
    }
}

fn confirmed_ago(inner: &Inner) -> Duration {
    inner
        .confirmed
        .lock()
        .ok()
        .and_then(|c| *c)
        .map_or(Duration::MAX, |t| t.elapsed())
}

/// The freshness watchdog: tells the watches the moment the feed goes unconfirmed past the freshness bound. It
/// sleeps until the bound would pass (once per bound while the feed is fresh) and, while the feed is stale, until
/// the feed confirms again.
async fn watchdog(inner: Arc<Inner>) {
    let bound = inner.config.freshness();
    let mut news = inner.news.subscribe();
    loop {
        if news.borrow_and_update().stale {
            if news.changed().await.is_err() {
                return;
            }
            continue;
        }
        let ago = confirmed_ago(&inner);
        if ago > bound {
            inner.news.send_modify(|n| n.stale = true);
        } else {
            // Just past the bound, so `check` already refuses when the watches look.
            tokio::time::sleep(bound.saturating_sub(ago) + Duration::from_millis(1)).await;
        }
    }
}

struct Batch {
    /// The `jti`s applied, to acknowledge.
    applied: Vec<String>,
    /// Whether every SET of the answer was applied.
    complete: bool,
    more: bool,
}

async fn poll_once(inner: &Inner, ack: &[String]) -> Result<Batch, GuardError> {
    let url = format!("{}/ssf/poll/{}", inner.config.issuer, inner.config.stream_id);
    let body = json!({"maxEvents": 1000, "returnImmediately": true, "ack": ack});
    let (_, text) = fetch_text(
        inner
            .http
            .post(url)
            .bearer_auth(&inner.config.stream_credential)
            .json(&body),
    )
    .await?;
    let answer: Value =
        serde_json::from_str(&text).map_err(|e| GuardError::Answer(format!("a poll: {e}")))?;
    let mut applied = Vec::new();
    let mut complete = true;
    if let Some(sets) = at(&answer, "sets").as_object() {
        for (jti, set) in sets {
            match apply_set(inner, set.as_str().unwrap_or_default()).await {
                Ok(()) => {
                    inner.sets_applied.fetch_add(1, Ordering::Relaxed);
                    applied.push(jti.clone());
                }
                Err(e) => {
                    // Not acknowledged: served again (and signed again) by the next poll. Until then the feed is
                    // not confirmed, so the guard fails closed once the freshness bound passes.
                    tracing::warn!("offboard-guard: SET {jti} not applied: {e}");
                    complete = false;
                }
            }
        }
    }
    // A paused or disabled stream answers every poll with nothing: an empty answer confirms the feed only while
    // the stream is enabled (a poll that served SETs was served by an enabled stream).
    if applied.is_empty() && complete {
        let url = format!("{}/ssf/status", inner.config.issuer);
        let (_, text) = fetch_text(
            inner
                .http
                .get(url)
                .query(&[("stream_id", &inner.config.stream_id)])
                .bearer_auth(&inner.config.stream_credential),
        )
        .await?;
        let status: Value =
            serde_json::from_str(&text).map_err(|e| GuardError::Answer(format!("the stream status: {e}")))?;
        if at(&status, "status").as_str() != Some("enabled") {
            tracing::warn!(
                "offboard-guard: stream {} is {}: the feed is not confirmed",
                inner.config.stream_id,
                at(&status, "status")
            );
            complete = false;
        }
    }
    Ok(Batch {
        applied,
        complete,
        more: at(&answer, "moreAvailable").as_bool() == Some(true),
    })
}

/// The SCIM user id of a subject: `iss_sub` with offboard's issuer, or the `iss_sub` inside `aliases`.
fn user_of(subject: &Value, issuer: &str) -> Option<String> {
    match at(subject, "format").as_str()? {
        "iss_sub" if at(subject, "iss") == issuer => at(subject, "sub").as_str().map(str::to_owned),
        "aliases" => at(subject, "identifiers")
            .as_array()?
            .iter()
            .find_map(|s| user_of(s, issuer)),
        _ => None,
    }
}

/// Verifies one SET (RFC 8417: `typ` `secevent+jwt`, the key's algorithm, `iss`, the stream's `aud`, no `exp`)
/// and applies it to the revocation state.
async fn apply_set(inner: &Inner, set: &str) -> Result<(), PushError> {
    use jsonwebtoken::errors::ErrorKind;
    let request = |m: &str| PushError::bad("invalid_request", m);
    let header = decode_header(set).map_err(|e| request(&e.to_string()))?;
    if !typ_is(header.typ.as_deref(), "secevent+jwt") {
        return Err(request("typ is not secevent+jwt"));
    }
    let kid = header.kid.ok_or_else(|| request("the SET names no kid"))?;
    let (alg, key) = key(inner, &kid)
        .await
        .ok_or_else(|| PushError::bad("invalid_key", &format!("unknown kid {kid}")))?;
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.set_issuer(&[&inner.config.issuer]);
    validation.set_audience(&[&inner.stream_audience]);
    validation.set_required_spec_claims(&["iss", "aud"]);
    let claims: Value = decode::<Value>(set, &key, &validation)
        .map_err(|e| {
            let err = match e.kind() {
                ErrorKind::InvalidIssuer => "invalid_issuer",
                ErrorKind::InvalidAudience => "invalid_audience",
                ErrorKind::InvalidSignature => "invalid_key",
                _ => "invalid_request",
            };
            PushError::bad(err, &e.to_string())
        })?
        .claims;
    let iat = at(&claims, "iat").as_i64().unwrap_or_else(epoch_now);
    let until = iat + inner.max_token_lifetime + i64::try_from(inner.config.leeway.as_secs()).unwrap_or(0);
    let subject = &at(&claims, "sub_id");
    let issuer = inner.config.issuer.as_str();
    let events = at(&claims, "events")
        .as_object()
        .ok_or_else(|| request("the SET has no events"))?;
    let mut r = inner
        .revocations
        .write()
        .map_err(|_| PushError::unavailable("the revocation state is unusable"))?;
    for (event, body) in events {
        match event.as_str() {
            KEY_COMPROMISED => {
                let kid = at(body, "kid")
                    .as_str()
                    .ok_or_else(|| request("key-compromised without a kid"))?;
                r.compromise_key(kid, until + KEY_MEMORY);
                if let Ok(mut keys) = inner.keys.write() {
                    keys.remove(kid);
                }
            }
            SESSION_REVOKED if at(subject, "format") == "jwt_id" => {
                if at(subject, "iss") != issuer {
                    return Err(request("a jwt_id subject of another issuer"));
                }
                let jti = at(subject, "jti")
                    .as_str()
                    .ok_or_else(|| request("jwt_id without a jti"))?;
                let exp = at(body, "exp").as_i64().unwrap_or(until);
                r.revoke_token(
                    jti,
                    exp + i64::try_from(inner.config.leeway.as_secs()).unwrap_or(0),
                );
            }
            SESSION_REVOKED | ACCOUNT_DISABLED | ACCOUNT_ENABLED | ACCOUNT_PURGED => {
                let (user, session) = if at(subject, "format") == "complex" {
                    (&at(subject, "user"), at(at(subject, "session"), "id").as_str())
                } else {
                    (subject, None)
                };
                let sub = user_of(user, issuer).ok_or_else(|| {
                    request(&format!("a subject the guard cannot map to a user id: {subject} (use the iss_sub or aliases subject format)"))
                })?;
                if let Some(sid) = session {
                    r.end_session(sid, until);
                }
                if let Some(g) = at(body, "min_tgen").as_i64() {
                    r.raise(&sub, g, until);
                }
            }
            // Verification and event types the guard does not act on.
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(issuer: &str) -> GuardConfig {
        GuardConfig::new(issuer, "svc", "stream", "secret")
    }

    #[test]
    fn configuration_is_checked() {
        assert!(config("https://offboard.example.com").validate().is_ok());
        assert!(config("http://127.0.0.1:8080").validate().is_ok());
        assert!(config("http://localhost").validate().is_ok());
        for bad in [
            "http://offboard.example.com",
            "http://127.0.0.1.evil.example",
            "ftp://x",
        ] {
            assert!(config(bad).validate().is_err(), "{bad}");
        }
        let mut c = config("https://o.example");
        assert_eq!(c.freshness(), Duration::from_secs(6), "poll interval + 5 s");
        c.leeway = Duration::from_secs(31);
        assert!(c.validate().is_err(), "leeway above 30 s");
        let mut c = config("https://o.example");
        c.freshness_bound = Some(Duration::from_millis(500));
        assert!(c.validate().is_err(), "a bound shorter than the poll interval");
        let mut c = config("https://o.example");
        c.snapshot_page_size = 0;
        assert!(c.validate().is_err());
        assert!(
            !format!("{c:?}").contains("secret"),
            "Debug leaves the credential out"
        );
    }

    #[test]
    fn media_types_and_links() {
        assert!(typ_is(Some("at+jwt"), "at+jwt"));
        assert!(typ_is(Some("application/AT+JWT"), "at+jwt"));
        assert!(!typ_is(Some("JWT"), "at+jwt"));
        assert!(!typ_is(None, "at+jwt"));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            reqwest::header::HeaderValue::from_static(
                "<https://o.example/ssf/snapshot?after=x>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://o.example/ssf/snapshot?after=x")
        );
        assert_eq!(next_link(&reqwest::header::HeaderMap::new()), None);
    }
}
