//! The command groups of the `offboard` binary, one file each; `main.rs` parses the arguments and dispatches here.
//! What the groups share: loading the configuration, opening (and migrating) the database, formatting times.

use std::time::Duration;

use anyhow::Context;
use offboard::config::{Config, Loaded};
use offboard::db::{Db, DbOptions};
use offboard::telemetry;

pub mod audit;
pub mod config;
pub mod credentials;
pub mod keys;
pub mod migrate;
pub mod receiver;
pub mod serve;
pub mod streams;
pub mod token;
pub mod users;

pub fn load_config(path: Option<&std::path::Path>, serving: bool) -> anyhow::Result<Config> {
    let Loaded { config, unknown_keys } = Config::load(path)?;
    // The server logs at the configured level; one-shot commands print their own output and log only problems.
    telemetry::init(
        if serving { &config.log_level } else { "warn" },
        config.log_format,
    );
    for key in unknown_keys {
        tracing::warn!("ignoring unknown configuration key `{key}`");
    }
    Ok(config)
}

fn open_db(config: &Config, pool_size: u32) -> anyhow::Result<Db> {
    let db = open_db_unmigrated(config, pool_size)?;
    let applied = db.migrate()?;
    for name in &applied {
        tracing::info!("applied migration {name}");
    }
    Ok(db)
}

/// Opens the database without applying pending migrations (`offboard migrate` applies and reports them).
fn open_db_unmigrated(config: &Config, pool_size: u32) -> anyhow::Result<Db> {
    let url = config.db_url();
    // A permanent error (unknown database or role, bad URL, missing directory) fails here, at once, in one line;
    // the pool below waits out transient ones (a server still starting) up to the connect timeout
    // (docs/decisions/0038-fail-before-creating.md).
    if let Err(e) = offboard::db::preflight(&url) {
        anyhow::bail!("cannot open database {}: {e}", url.redacted());
    }
    let opts = DbOptions {
        pool_size,
        connect_timeout: Duration::from_secs(config.database.connect_timeout_secs),
        sqlite_busy_timeout_ms: config.database.sqlite_busy_timeout_ms,
        sqlite_synchronous: config.sqlite_synchronous()?,
        batch_writes: if config.database.batch_writes.enabled(url.backend) {
            offboard::db::DEFAULT_BATCH
        } else {
            0
        },
    };
    Db::open(&url, &opts).with_context(|| format!("cannot open database {}", url.redacted()))
}

fn fmt_time(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A time in `--json` output: RFC 3339, UTC.
fn json_time(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An optional time in `--json` output: RFC 3339, or `null`.
fn json_time_opt(t: Option<chrono::NaiveDateTime>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| json_time(t).into())
}

/// Prints `--json` output: one pretty-printed document on stdout.
fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
