//! `offboard serve`: the HTTP server, the fan-out worker and the periodic jobs (usage and activity flushes, key
//! reloads, pruning, audit retention and checkpoints).

use std::time::Duration;

use anyhow::Context;
use offboard::config::Config;
use offboard::keys;
use offboard::{AppState, configure};

use super::audit::checkpoint;

/// How often credential last-used times are written.
const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(30);
/// How often token activity (last minted, refreshed, introspected) is written.
const ACTIVITY_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// How often expired revocation records, assertion ids and refresh-token families are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Runs `job` on the blocking pool every `period` (the first run one period from now), logging failures.
fn every<E: std::fmt::Display + Send + 'static>(
    period: Duration,
    what: &'static str,
    job: impl Fn() -> Result<(), E> + Send + Sync + Clone + 'static,
) -> actix_web::rt::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            let job = job.clone();
            match actix_web::web::block(job).await {
                Ok(Err(e)) => tracing::warn!("could not {what}: {e}"),
                Err(e) => tracing::warn!("could not {what}: {e}"),
                Ok(Ok(())) => {}
            }
        }
    })
}

/// The audit log's periodic work in `serve`: retention and signed checkpoints.
fn audit_tasks(state: &AppState) -> [actix_web::rt::task::JoinHandle<()>; 2] {
    let retention = {
        let state = state.clone();
        let (days, archive) = (
            state.config.audit.retention_days,
            state.config.audit.archive_dir.clone(),
        );
        every(PRUNE_INTERVAL, "apply audit retention", move || {
            if days == 0 {
                return Ok(());
            }
            let sign = keys::audit_signer(&state.tokens.keys);
            offboard::audit::retention::run(&state.db, days, archive.as_deref(), &sign).map(drop)
        })
    };
    let checkpoints = {
        let state = state.clone();
        let period = Duration::from_secs(state.config.audit.checkpoint_secs.max(1));
        let enabled = state.config.audit.checkpoint_secs > 0;
        every(period, "append a signed audit checkpoint", move || {
            if enabled {
                checkpoint(&state).map(drop)
            } else {
                Ok(())
            }
        })
    };
    [retention, checkpoints]
}

/// Binds every address `listen` names, before anything is created: a port in use fails `serve` with nothing left
/// behind. An address of a family this machine lacks (`::1` without IPv6) is skipped if another one binds.
fn bind(config: &Config) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::new();
    let mut unavailable = None;
    for addr in config.listen_addrs()? {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => listeners.push(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => unavailable = Some((addr, e)),
            Err(e) => anyhow::bail!("cannot listen on {addr} (key `listen`): {e}"),
        }
    }
    match (listeners.is_empty(), unavailable) {
        (true, Some((addr, e))) => anyhow::bail!("cannot listen on {addr} (key `listen`): {e}"),
        _ => Ok(listeners),
    }
}

pub fn run(config: Config) -> anyhow::Result<()> {
    // The configuration was validated when it was loaded; the port is checked here. Only then are the database
    // file, the key-encryption key and the signing keys created (docs/decisions/0038-fail-before-creating.md).
    let listeners = bind(&config)?;
    let addrs: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    let addr = addrs.join(", ");
    keys::Kek::check(&config)?;
    let db = super::open_db(&config, config.database.pool_size)?;
    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, usize::from)
    } else {
        config.workers
    };
    let blocking_threads = config.blocking_threads_per_worker(db.backend());
    let reload = Duration::from_secs(config.keys.reload_secs);
    let state = AppState::open(db.clone(), config)?;
    tracing::info!(
        listen = %addr,
        issuer = %state.config.issuer,
        database = %db.url().redacted(),
        "offboard {} serving SCIM at {}/scim/v2",
        env!("CARGO_PKG_VERSION"),
        state.config.issuer
    );
    let usage = state.usage.clone();
    let tokens = state.tokens.clone();
    let fanout = offboard::fanout::worker::Worker::new(
        db.clone(),
        state.config.clone(),
        tokens.keys.clone(),
        state.fanout.clone(),
    )
    .spawn()
    .context("cannot start the fan-out worker")?;
    actix_web::rt::System::new().block_on(async move {
        let flusher = {
            let (usage, db) = (usage.clone(), db.clone());
            every(USAGE_FLUSH_INTERVAL, "record credential usage", move || {
                usage.flush(&db).map(drop)
            })
        };
        let activity = {
            let (tokens, db) = (tokens.clone(), db.clone());
            every(ACTIVITY_FLUSH_INTERVAL, "record token activity", move || {
                tokens.activity.flush(&db).map(drop)
            })
        };
        let reloader = {
            let tokens = tokens.clone();
            every(reload, "reload signing keys", move || {
                tokens.keys.reload_if_stale();
                Ok::<_, std::convert::Infallible>(())
            })
        };
        let pruner = {
            let db = db.clone();
            let max_ttl = tokens.config.tokens.max_access_ttl_secs;
            every(PRUNE_INTERVAL, "prune expired token records", move || {
                offboard::tokens::prune(&db, max_ttl).map(|n| {
                    if n > 0 {
                        tracing::info!("pruned {n} expired token records");
                    }
                })
            })
        };
        let [retention, checkpoints] = audit_tasks(&state);
        let mut server =
            actix_web::HttpServer::new(move || actix_web::App::new().configure(configure(state.clone())))
                .workers(workers)
                .worker_max_blocking_threads(blocking_threads);
        for listener in listeners {
            server = server
                .listen(listener)
                .with_context(|| format!("cannot listen on {addr} (key `listen`)"))?;
        }
        let server = server.run();
        server.await.context("HTTP server failed")?;
        for task in [flusher, activity, reloader, pruner, retention, checkpoints] {
            task.abort();
        }
        if let Err(e) = usage.flush(&db) {
            tracing::warn!("could not record credential usage at shutdown: {e}");
        }
        if let Err(e) = tokens.activity.flush(&db) {
            tracing::warn!("could not record token activity at shutdown: {e}");
        }
        fanout.stop();
        tracing::info!("offboard stopped");
        Ok(())
    })
}
