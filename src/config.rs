//! Typed configuration: a TOML file (`--config` / `OFFBOARD_CONFIG`) overlaid with `OFFBOARD_<KEY>` environment
//! variables (nested keys joined by `__`, e.g. `OFFBOARD_LIMITS__MAX_BODY_BYTES`), validated once at start.
//!
//! Every error names the key at fault. Unknown keys are not errors (a newer config on an older binary must still
//! start) but are reported as warnings by the caller once logging is up. Nothing here touches the database.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::db::{Backend, DbUrl};

/// Environment variables that are not configuration keys.
const ENV_PREFIX: &str = "OFFBOARD_";
const ENV_NOT_KEYS: &[&str] = &["OFFBOARD_CONFIG"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("invalid configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl fmt::Display) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.to_string(),
        }
    }
}

/// The whole configuration. Defaults run on a fresh machine with nothing else installed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `postgres://…` / `postgresql://…` for PostgreSQL; `sqlite://PATH`, `file:PATH` or a bare path for SQLite.
    pub database_url: String,
    /// Socket address the HTTP server binds.
    pub listen: String,
    /// Public base URL of this server, no trailing slash (SCIM `meta.location`, token `iss`).
    pub issuer: String,
    /// tracing filter directives (`RUST_LOG` wins when set).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// HTTP worker threads; 0 means one per CPU.
    #[serde(deserialize_with = "lenient")]
    pub workers: usize,
    /// Threads per HTTP worker that run database work; 0 means automatic (see `blocking_threads_per_worker`).
    #[serde(deserialize_with = "lenient")]
    pub blocking_threads: usize,
    pub database: DatabaseConfig,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// Connections in the read pool (and, on PostgreSQL, for writes too). SQLite always writes through one.
    #[serde(deserialize_with = "lenient")]
    pub pool_size: u32,
    /// Seconds to wait for a pooled connection before answering 503.
    #[serde(deserialize_with = "lenient")]
    pub connect_timeout_secs: u64,
    /// SQLite `busy_timeout` in milliseconds (another process, e.g. the CLI, holding the write lock).
    #[serde(deserialize_with = "lenient")]
    pub sqlite_busy_timeout_ms: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest accepted request body in bytes; larger bodies get 413.
    #[serde(deserialize_with = "lenient")]
    pub max_body_bytes: usize,
    /// Largest page a list request returns (`count` above it is capped).
    #[serde(deserialize_with = "lenient")]
    pub max_results: usize,
    /// Most resources a list may evaluate one by one in memory (a filter on an attribute without a column, or
    /// `sortBy` on one); a request that would need more gets 400 `tooMany`.
    #[serde(deserialize_with = "lenient")]
    pub max_scan: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "offboard.db".into(),
            listen: "127.0.0.1:8080".into(),
            issuer: "http://127.0.0.1:8080".into(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            workers: 0,
            blocking_threads: 0,
            database: DatabaseConfig::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout_secs: 5,
            sqlite_busy_timeout_ms: 5000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_results: 1000,
            max_scan: 100_000,
        }
    }
}

/// A loaded configuration and what was ignored while loading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Keys present in the file or environment that no setting reads.
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// Loads from an optional TOML file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Loads from an optional TOML file and the given environment (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Toml {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?
            }
            None => toml::Table::new(),
        };
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (name, value) in &env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if ENV_NOT_KEYS.contains(&name.as_str()) || key.is_empty() {
                continue;
            }
            overlay(&mut table, &key.to_ascii_lowercase(), value);
        }
        let mut unknown_keys = Vec::new();
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown_keys.push(path.to_string());
        let de = serde_ignored::Deserializer::new(toml::Value::Table(table), &mut on_unknown);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::invalid(&key, e.into_inner())
        })?;
        let config = config.validated()?;
        Ok(Loaded { config, unknown_keys })
    }

    fn validated(mut self) -> Result<Self, ConfigError> {
        self.listen_addr()?;
        DbUrl::parse(&self.database_url).map_err(|m| ConfigError::invalid("database_url", m))?;
        let issuer = self.issuer.trim_end_matches('/').to_owned();
        if !(issuer.starts_with("http://") || issuer.starts_with("https://"))
            || issuer.len() <= "https://".len()
            || issuer.contains(['?', '#', ' '])
        {
            return Err(ConfigError::invalid(
                "issuer",
                "must be an absolute http(s) URL, e.g. https://offboard.example.com",
            ));
        }
        self.issuer = issuer;
        if self.database.pool_size == 0 {
            return Err(ConfigError::invalid("database.pool_size", "must be at least 1"));
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "limits.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.limits.max_results == 0 {
            return Err(ConfigError::invalid("limits.max_results", "must be at least 1"));
        }
        if self.limits.max_scan == 0 {
            return Err(ConfigError::invalid("limits.max_scan", "must be at least 1"));
        }
        Ok(self)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|e| ConfigError::invalid("listen", format_args!("{e} (expected HOST:PORT)")))
    }

    /// Threads per HTTP worker for database work. SQLite work is CPU-bound and serial for writes, so a few threads
    /// avoid the context switching of many runnable ones (measured: 512 threads ran GET at 40 % of what 2–4 did);
    /// PostgreSQL work waits on the network, so it gets one thread per pooled connection.
    pub fn blocking_threads_per_worker(&self, backend: Backend) -> usize {
        match (self.blocking_threads, backend) {
            (0, Backend::Sqlite) => 4,
            (0, Backend::Postgres) => usize::try_from(self.database.pool_size).unwrap_or(16),
            (n, _) => n,
        }
    }

    pub fn db_url(&self) -> DbUrl {
        // Checked in `validated`; a Config built by hand in tests goes through the same parser.
        DbUrl::parse(&self.database_url).unwrap_or_else(|_| DbUrl::sqlite(&self.database_url))
    }

    /// Base URL of the SCIM service, e.g. `https://offboard.example.com/scim/v2`.
    pub fn scim_base(&self) -> String {
        format!("{}/scim/v2", self.issuer)
    }
}

/// Sets `a__b__c` in the table to a string value, creating tables on the way.
fn overlay(table: &mut toml::Table, key: &str, value: &str) {
    let mut parts = key.split("__").peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), toml::Value::String(value.to_owned()));
            return;
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else { return };
        current = next;
    }
}

/// Accepts a number from TOML or a numeric string from the environment.
fn lenient<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + Deserialize<'de>,
    T::Err: fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Value(T),
        Text(String),
    }
    match Either::<T>::deserialize(de)? {
        Either::Value(v) => Ok(v),
        Either::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_run_on_a_fresh_machine() {
        let loaded = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(loaded.config.listen, "127.0.0.1:8080");
        assert_eq!(loaded.config.database_url, "offboard.db");
        assert_eq!(loaded.config.issuer, "http://127.0.0.1:8080");
        assert!(loaded.unknown_keys.is_empty());
    }

    #[test]
    fn env_overrides_file_and_nested_keys_use_double_underscore() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offboard.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nissuer = \"https://a.example/\"\n[limits]\nmax_results = 50\n",
        )
        .unwrap();
        let loaded = Config::load_from(
            Some(&path),
            env(&[
                ("OFFBOARD_LISTEN", "0.0.0.0:8181"),
                ("OFFBOARD_LIMITS__MAX_BODY_BYTES", "4096"),
                ("HOME", "/x"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.config.listen, "0.0.0.0:8181");
        assert_eq!(loaded.config.issuer, "https://a.example");
        assert_eq!(loaded.config.limits.max_results, 50);
        assert_eq!(loaded.config.limits.max_body_bytes, 4096);
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::load_from(None, env(&[("OFFBOARD_LISTEN", "nope")])).unwrap_err();
        assert!(err.to_string().contains("`listen`"), "{err}");
        let err = Config::load_from(None, env(&[("OFFBOARD_LIMITS__MAX_RESULTS", "many")])).unwrap_err();
        assert!(err.to_string().contains("limits.max_results"), "{err}");
        let err = Config::load_from(None, env(&[("OFFBOARD_DATABASE_URL", "mysql://x/y")])).unwrap_err();
        assert!(err.to_string().contains("database_url"), "{err}");
        let err = Config::load_from(None, env(&[("OFFBOARD_ISSUER", "ftp://x")])).unwrap_err();
        assert!(err.to_string().contains("issuer"), "{err}");
        let err = Config::load_from(None, env(&[("OFFBOARD_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("log_format"), "{err}");
    }

    #[test]
    fn unknown_keys_are_reported_not_fatal() {
        let loaded = Config::load_from(
            None,
            env(&[("OFFBOARD_LISTNE", "x"), ("OFFBOARD_CONFIG", "/nope")]),
        )
        .unwrap();
        assert_eq!(loaded.unknown_keys, vec!["listne".to_owned()]);
    }
}
