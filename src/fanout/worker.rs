//! The push delivery worker (RFC 8935), one thread per server. It claims due SETs (only the oldest pending one of
//! each enabled push stream, so a stream's SETs arrive in order; `FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//! several instances share the work without sending a SET twice in the normal case), signs each with the active
//! RS256 key, POSTs it as `application/secevent+jwt`, and settles it: `202` delivered; anything else retried with
//! exponential backoff and jitter (`fanout.backoff_base_ms` doubling up to `fanout.backoff_cap_secs`), and
//! dead-lettered after `fanout.max_attempts`.
//!
//! A claim is a lease: the row's next attempt moves `fanout.lease_secs` ahead before the push. If the process dies before it
//! settles the row, the row is due again when the lease ends, so every SET is delivered at least once; receivers
//! de-duplicate on `jti` (ARCHITECTURE.md invariant 5). The worker sleeps until the earliest due SET, at most
//! `fanout.idle_poll_ms`, and is woken at once by [`wake`] after any commit that queued SETs in this
//! process; on PostgreSQL the same commit sends `NOTIFY offboard_outbox`, which wakes every other instance's
//! worker through its listener thread (and the CLI's writes wake the server's).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use rand::Rng;
use serde_json::Value;

use crate::config::Config;
use crate::db::models::{OutboxRow, StreamRow};
use crate::db::{Db, DbError, now, repo};
use crate::keys::{KeyAlg, KeyStore};

static WAKE: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// Wakes the worker of this process (called after a commit that queued SETs).
pub fn wake() {
    let (lock, cvar) = &WAKE;
    if let Ok(mut n) = lock.lock() {
        *n = n.wrapping_add(1);
    }
    cvar.notify_all();
}

fn wait(seen: u64, timeout: Duration) -> u64 {
    let (lock, cvar) = &WAKE;
    let Ok(guard) = lock.lock() else { return seen };
    match cvar.wait_timeout_while(guard, timeout, |n| *n == seen) {
        Ok((n, _)) => *n,
        Err(_) => seen,
    }
}

/// The PostgreSQL channel that tells every instance's worker new SETs are queued.
pub const CHANNEL: &str = "offboard_outbox";

/// How often the listener checks its connection for notifications (diesel's iterator does not block).
const LISTEN_POLL: Duration = Duration::from_millis(20);

/// On PostgreSQL, a thread with its own connection that `LISTEN`s on [`CHANNEL`] and wakes this process's
/// worker, so a SET committed by another instance (or the CLI) goes out within [`LISTEN_POLL`], not
/// `fanout.idle_poll_ms`. It reconnects after an error.
fn listen(url: &str, stop: &AtomicBool) {
    use diesel::{Connection, RunQueryDsl};
    while !stop.load(Ordering::SeqCst) {
        let mut conn = match diesel::pg::PgConnection::establish(url) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("fan-out listener cannot connect, retrying: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = diesel::sql_query(format!("LISTEN {CHANNEL}")).execute(&mut conn) {
            tracing::warn!("fan-out listener cannot LISTEN, retrying: {e}");
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        while !stop.load(Ordering::SeqCst) {
            let mut woke = false;
            let mut failed = false;
            for n in conn.notifications_iter() {
                match n {
                    Ok(_) => woke = true,
                    Err(e) => {
                        tracing::warn!("fan-out listener lost its connection: {e}");
                        failed = true;
                        break;
                    }
                }
            }
            if woke {
                wake();
            }
            if failed {
                break;
            }
            std::thread::sleep(LISTEN_POLL);
        }
    }
}

/// How many times the worker has been woken (for tests).
pub fn wakes() -> u64 {
    wake_count()
}

fn wake_count() -> u64 {
    WAKE.0.lock().map_or(0, |n| *n)
}

/// How often the worker applies the outbox retention.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Most bytes of a receiver's answer the worker reads (an RFC 8935 error is a few hundred).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Most settled SETs one retention transaction removes.
pub const PRUNE_BATCH: i64 = 1000;

/// Most settled SETs one call of [`Worker::prune`] removes (20 transactions).
pub const PRUNE_ROUND: usize = 20_000;

/// The outcome of one push.
#[derive(Debug)]
enum Pushed {
    Delivered,
    /// Worth retrying (the receiver is down, or answered with a transient error).
    Failed(String),
    /// The receiver says this SET is invalid for it (RFC 8935 §2.3 `invalid_request`, `invalid_issuer`,
    /// `invalid_audience`): the same SET would fail again, so it is dead-lettered at once and the stream moves on.
    Rejected(String),
}

/// RFC 8935 error codes that retrying the same SET cannot fix (`invalid_key` can: the receiver may not have
/// fetched a new key yet; `authentication_failed` and `access_denied` are the receiver's configuration).
const PERMANENT_ERRORS: [&str; 3] = ["invalid_request", "invalid_issuer", "invalid_audience"];

/// Delivers SETs for one server.
pub struct Worker {
    db: Db,
    config: Arc<Config>,
    keys: Arc<KeyStore>,
    stats: Arc<super::metrics::FanoutStats>,
    /// What push endpoints may reach, and the client for `https://` pushes that enforces it at connect time.
    network: crate::outbound::AddressPolicy,
    client: std::sync::OnceLock<Result<reqwest::blocking::Client, String>>,
}

/// A running worker thread; stops when dropped or on [`stop`](Self::stop).
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    listener: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Worker {
    pub fn new(
        db: Db,
        config: Arc<Config>,
        keys: Arc<KeyStore>,
        stats: Arc<super::metrics::FanoutStats>,
    ) -> Self {
        let network = super::streams::StreamCaps::from(&config.fanout).network;
        Self {
            db,
            config,
            keys,
            stats,
            network,
            client: std::sync::OnceLock::new(),
        }
    }

    /// Starts the delivery thread.
    pub fn spawn(self) -> std::io::Result<Running> {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = match self.db.backend() {
            crate::db::Backend::Postgres => {
                let (url, flag) = (self.db.url().target.clone(), stop.clone());
                Some(
                    std::thread::Builder::new()
                        .name("offboard-fanout-listen".into())
                        .spawn(move || listen(&url, &flag))?,
                )
            }
            crate::db::Backend::Sqlite => None,
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("offboard-fanout".into())
            .spawn(move || self.run(&flag))?;
        Ok(Running {
            stop,
            thread: Some(thread),
            listener,
        })
    }

    fn run(&self, stop: &AtomicBool) {
        tracing::debug!("fan-out worker started");
        let mut pruned_at: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(Instant::now());
                match self.prune() {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(
                            removed = n,
                            "fan-out: removed {n} settled SETs past the retention"
                        );
                        // A round's budget spent: more may be due, so prune again after the next deliveries.
                        if n >= PRUNE_ROUND {
                            pruned_at = None;
                        }
                    }
                    Err(e) => tracing::warn!("fan-out retention: {e}"),
                }
            }
            let seen = wake_count();
            match self.run_once() {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!("fan-out: {e}"),
            }
            let idle = Duration::from_millis(self.config.fanout.idle_poll_ms.max(1));
            let sleep = self.until_next_due().unwrap_or(idle).min(idle);
            wait(seen, sleep);
        }
        tracing::debug!("fan-out worker stopped");
    }

    /// Removes delivered and dead-lettered SETs queued more than `fanout.outbox_retention_days` ago (none when
    /// 0), stream by stream, [`PRUNE_BATCH`] rows per transaction, so no transaction holds the writer long and the
    /// outbox stays bounded by what the retention window holds; at most about [`PRUNE_ROUND`] rows per call, so a
    /// large backlog (after an upgrade, or a raised retention) never holds up deliveries for long: the worker
    /// calls it again after its next round. Returns how many rows it removed.
    pub fn prune(&self) -> Result<usize, DbError> {
        let days = self.config.fanout.outbox_retention_days;
        if days == 0 {
            return Ok(0);
        }
        let before =
            now() - TimeDelta::days(i64::try_from(days).unwrap_or(i64::MAX / 86_400_000).min(36_500));
        let streams = self
            .db
            .read(|c| repo::fanout::streams(c).map_err(DbError::from))?;
        let mut removed = 0;
        for stream in &streams {
            while removed < PRUNE_ROUND {
                let n = self.db.write(|c| {
                    repo::fanout::prune_settled(c, &stream.id, before, PRUNE_BATCH).map_err(DbError::from)
                })?;
                removed += n;
                if i64::try_from(n).unwrap_or(0) < PRUNE_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    fn until_next_due(&self) -> Option<Duration> {
        let due = self
            .db
            .read(|c| repo::fanout::next_due(c).map_err(DbError::from))
            .ok()
            .flatten()?;
        Some((due - now()).to_std().unwrap_or(Duration::ZERO))
    }

    /// Writes waiting changes to the outbox ([`super::pending::expand`]), then claims what is due, pushes it (up
    /// to `fanout.concurrency` at once) and settles it. Returns the SETs settled (delivered, retried or
    /// dead-lettered).
    pub fn run_once(&self) -> Result<usize, DbError> {
        // Changes committed since the last round (or before a restart) become outbox rows first.
        super::pending::expand(&self.db)?;
        let at = now();
        let lease = at + TimeDelta::seconds(i64::try_from(self.config.fanout.lease_secs).unwrap_or(30));
        // At most one SET per thread per round.
        let limit = i64::try_from(self.config.fanout.concurrency).unwrap_or(32);
        let claimed = self
            .db
            .write(|c| repo::fanout::claim_due(c, at, lease, limit).map_err(DbError::from))?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let streams = self
            .db
            .read(|c| repo::fanout::streams(c).map_err(DbError::from))?;
        // Each claimed SET gets its own thread (at most `concurrency`), so none waits behind another push; the
        // round is settled in one transaction when its last push has ended, within one push timeout of the claim,
        // well inside the lease (`fanout.lease_secs` must be at least twice `push_timeout_secs`).
        let results = Mutex::new(Vec::with_capacity(claimed.len()));
        std::thread::scope(|scope| {
            for row in &claimed {
                let (streams, results) = (&streams, &results);
                scope.spawn(move || {
                    let started = Instant::now();
                    let outcome = match streams.iter().find(|s| s.id == row.stream_id) {
                        Some(stream) => self.push(stream, row),
                        None => Pushed::Failed("the stream was removed".into()),
                    };
                    if let Ok(mut r) = results.lock() {
                        r.push((row, outcome, started.elapsed()));
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_default();
        // Settle in stream order: on PostgreSQL the outbox counters are then locked in the order every other
        // writer locks them, so settling cannot deadlock with an enqueue.
        results.sort_by(|a, b| a.0.stream_id.cmp(&b.0.stream_id));
        self.db.write(|c| {
            for (row, outcome, took) in &results {
                self.settle(c, row, outcome, *took)?;
            }
            Ok::<_, DbError>(())
        })?;
        Ok(results.len())
    }

    /// Records one push's outcome: delivered; retried later; or dead-lettered (the retry cap reached, or an
    /// error the receiver says retrying cannot fix).
    fn settle(
        &self,
        c: &mut crate::db::DbConnection,
        row: &OutboxRow,
        outcome: &Pushed,
        took: Duration,
    ) -> Result<(), DbError> {
        let at = now();
        match outcome {
            Pushed::Delivered => {
                // 0 rows: another claimant settled it first (after a lost lease) and recorded it then.
                if repo::fanout::mark_delivered(c, row.id, at)? == 1 {
                    crate::audit::record(super::delivery_entry(row, "delivered", "push", at, None));
                }
                let latency = (at - row.created).num_milliseconds();
                #[expect(clippy::cast_precision_loss, reason = "milliseconds far below 2^52")]
                self.stats.delivered(&row.stream_id, latency as f64 / 1000.0);
                tracing::info!(stream.id = %row.stream_id, set.jti = %row.jti, took_ms = took.as_millis(), "delivered SET {} to stream {}", row.jti, row.stream_id);
            }
            Pushed::Failed(why) | Pushed::Rejected(why) => {
                let dead =
                    matches!(outcome, Pushed::Rejected(_)) || row.attempts >= self.config.fanout.max_attempts;
                let next = at + self.backoff(row.attempts);
                if repo::fanout::mark_failed(c, row.id, next, why, dead)? == 1 {
                    let outcome = if dead { "dead_lettered" } else { "retrying" };
                    crate::audit::record(super::delivery_entry(row, outcome, "push", at, Some(why)));
                }
                if dead {
                    tracing::error!(stream.id = %row.stream_id, set.jti = %row.jti, attempts = row.attempts, "dead-lettered SET {} for stream {}: {why}", row.jti, row.stream_id);
                } else {
                    tracing::warn!(stream.id = %row.stream_id, set.jti = %row.jti, attempts = row.attempts, "SET {} to stream {} failed, retrying: {why}", row.jti, row.stream_id);
                }
            }
        }
        Ok(())
    }

    /// Delay before the next attempt after `attempts` failures: base · 2^(attempts−1), capped, with jitter (a
    /// random point in the upper half), so receivers that come back are not hit by every transmitter at once.
    fn backoff(&self, attempts: i32) -> TimeDelta {
        let f = &self.config.fanout;
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let cap_ms = f.backoff_cap_secs.saturating_mul(1000);
        let delay = f.backoff_base_ms.saturating_mul(1u64 << exp).min(cap_ms).max(1);
        let jittered = rand::rng().random_range(delay / 2..=delay);
        TimeDelta::milliseconds(i64::try_from(jittered).unwrap_or(60_000))
    }

    /// The SET for a row and a stream ([`super::set_claims`] with this server's issuer).
    pub fn claims(&self, stream: &StreamRow, row: &OutboxRow) -> Value {
        super::set_claims(
            &self.config.issuer,
            self.config.fanout.subject_format,
            stream,
            row,
        )
    }

    fn push(&self, stream: &StreamRow, row: &OutboxRow) -> Pushed {
        let Some(url) = stream.endpoint_url.as_deref() else {
            return Pushed::Failed("the stream has no push endpoint".into());
        };
        let set = match self
            .keys
            .signer(KeyAlg::RS256)
            .and_then(|k| k.sign("secevent+jwt", &self.claims(stream, row)))
        {
            Ok(set) => set,
            Err(e) => return Pushed::Failed(format!("signing: {e}")),
        };
        // Checked again at every push (the stream may predate the rules, or been written by hand): userinfo and
        // refused IP literals fail here, before any connection; host names are checked when the push client
        // resolves them.
        if let Err(why) = self.network.check_endpoint(url) {
            return Pushed::Failed(format!("endpoint refused: {why}"));
        }
        let client = if url.starts_with("https://") {
            match self
                .client
                .get_or_init(|| crate::outbound::push_client(self.network.clone()))
            {
                Ok(c) => c,
                Err(e) => return Pushed::Failed(e.clone()),
            }
        } else {
            // `http://` to a loopback address (development, tests): nothing else passes the check above.
            match crate::outbound::client() {
                Ok(c) => c,
                Err(e) => return Pushed::Failed(e),
            }
        };
        let mut req = client
            .post(url)
            .timeout(Duration::from_secs(self.config.fanout.push_timeout_secs))
            .header("Content-Type", "application/secevent+jwt")
            .header("Accept", "application/json")
            .body(set);
        if let Some(sealed) = &stream.authorization_header {
            match self
                .keys
                .open_secret(&super::streams::stream_aad(&stream.id), sealed)
            {
                Ok(h) => req = req.header("Authorization", String::from_utf8_lossy(&h).into_owned()),
                Err(e) => return Pushed::Failed(format!("the stream's authorization header: {e}")),
            }
        }
        match req.send() {
            Ok(res) if res.status().as_u16() == 202 || res.status().is_success() => Pushed::Delivered,
            Ok(res) => {
                let status = res.status().as_u16();
                // RFC 8935 §2.3: a 400 carries {"err": …, "description": …}. At most MAX_ANSWER_BYTES of it are
                // read: a longer answer is no RFC 8935 error, and reading it whole would let a receiver fill
                // the server's memory on every retry.
                let (body, too_large) = match crate::outbound::read_capped(res, MAX_ANSWER_BYTES) {
                    Ok(crate::outbound::Capped::Whole(b)) => {
                        (serde_json::from_slice(&b).unwrap_or(Value::Null), false)
                    }
                    Ok(crate::outbound::Capped::TooLarge) => (Value::Null, true),
                    Err(_) => (Value::Null, false),
                };
                let err = body.get("err").and_then(Value::as_str).unwrap_or("");
                let description = body.get("description").and_then(Value::as_str).unwrap_or("");
                let detail: String = format!("{err} {description}").trim().chars().take(200).collect();
                let what = if too_large {
                    format!("HTTP {status}: answer longer than {MAX_ANSWER_BYTES} bytes, not read")
                } else if detail.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {detail}")
                };
                if status == 400 && PERMANENT_ERRORS.contains(&err) {
                    Pushed::Rejected(what)
                } else {
                    Pushed::Failed(what)
                }
            }
            Err(e) => Pushed::Failed(format!("no answer: {}", without_url(&e))),
        }
    }
}

/// A reqwest error without the URL (which may carry credentials in its userinfo or query); a connection the
/// address policy refused says why.
fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<crate::outbound::Refused>() {
            return format!("endpoint refused: {refused}");
        }
        source = s.source();
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}
