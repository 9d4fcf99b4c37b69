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

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::db::{Backend, DbUrl, Synchronous};

const ENV_PREFIX: &str = "OFFBOARD_";
/// Environment variables with the prefix that are not configuration keys: the config file's path, what the
/// `streams`/`receiver` commands read (the push endpoint's `Authorization` header), and the build's commit, which
/// `build.rs` hands to the compiler and `cargo run` also puts in the running server's environment.
const ENV_NOT_KEYS: &[&str] = &[
    "OFFBOARD_CONFIG",
    "OFFBOARD_STREAM_AUTH_HEADER",
    "OFFBOARD_GIT_COMMIT",
];
/// Prefixes of other programs' environment variables (the `offboard-guard` sidecar's), never configuration keys.
const ENV_NOT_KEY_PREFIXES: &[&str] = &["OFFBOARD_GUARD_"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {location}{message}")]
    Toml {
        path: PathBuf,
        /// `line L, column C: `, or empty when the parser gave no position.
        location: String,
        message: String,
    },
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
///
/// `Serialize` is for showing it (`offboard config check`): it writes every secret redacted (the database URL's
/// password, the key-encryption key), so its output is never a usable configuration for those keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// `postgres://…` / `postgresql://…` for PostgreSQL; `sqlite://PATH`, `file:PATH` or a bare path for SQLite.
    #[serde(serialize_with = "redacted_db_url")]
    pub database_url: String,
    /// Socket address the HTTP server binds.
    pub listen: String,
    /// Public base URL of this server, no trailing slash (SCIM `meta.location`, token `iss`).
    pub issuer: String,
    /// tracing filter directives (`RUST_LOG` wins when set).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    pub log: LogConfig,
    /// HTTP worker threads; 0 means one per CPU.
    #[serde(deserialize_with = "lenient")]
    pub workers: usize,
    /// Threads per HTTP worker that run database work; 0 means automatic (see `blocking_threads_per_worker`).
    #[serde(deserialize_with = "lenient")]
    pub blocking_threads: usize,
    pub database: DatabaseConfig,
    pub limits: Limits,
    /// The `aud` of tokens minted without an explicit audience; defaults to the issuer
    /// (docs/decisions/0017-cli-client-and-default-audience.md).
    pub default_audience: Option<String>,
    pub tokens: TokenConfig,
    pub keys: KeyConfig,
    /// IdPs whose ID tokens and JWTs offboard accepts in token exchange and Global Token Revocation.
    pub trusted_issuers: Vec<TrustedIssuer>,
    pub fanout: FanoutConfig,
    pub audit: AuditConfig,
    pub console: ConsoleConfig,
}

/// The operator console at `/console`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ConsoleConfig {
    /// Minutes without a request after which a console session ends.
    #[serde(deserialize_with = "lenient")]
    pub idle_minutes: u32,
    /// Hours after sign-in after which a console session ends, however active.
    #[serde(deserialize_with = "lenient")]
    pub absolute_hours: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            idle_minutes: 30,
            absolute_hours: 12,
        }
    }
}

/// Logging beyond the level and format.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LogConfig {
    /// One line per request at info (target `offboard::access`): method, route, status, latency, request id,
    /// client. `false` turns it off.
    #[serde(deserialize_with = "lenient")]
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { access: true }
    }
}

/// The audit log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct AuditConfig {
    /// Days an entry is kept; older entries are archived (when `archive_dir` is set) and deleted. 0 keeps every
    /// entry forever (the default).
    #[serde(deserialize_with = "lenient")]
    pub retention_days: u32,
    /// Where retention writes the entries it removes (NDJSON, one file per run). Unset: removed entries are gone.
    pub archive_dir: Option<std::path::PathBuf>,
    /// Refused authentications recorded per minute per instance; the rest are counted in the next entry.
    #[serde(deserialize_with = "lenient")]
    pub auth_failures_per_minute: u32,
    /// Seconds between signed checkpoints (a JWS over the chain's head, appended as an entry); 0 turns them off.
    #[serde(deserialize_with = "lenient")]
    pub checkpoint_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 0,
            archive_dir: None,
            auth_failures_per_minute: 60,
            checkpoint_secs: 3600,
        }
    }
}

/// Delivery of Security Event Tokens to streams.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct FanoutConfig {
    /// Attempts before a SET is dead-lettered. The default, with the 60 s cap, keeps retrying for about a day.
    #[serde(deserialize_with = "lenient")]
    pub max_attempts: i32,
    /// First retry delay, milliseconds; doubled each attempt (with jitter) up to `backoff_cap_secs`.
    #[serde(deserialize_with = "lenient")]
    pub backoff_base_ms: u64,
    #[serde(deserialize_with = "lenient")]
    pub backoff_cap_secs: u64,
    /// Timeout of one push (connect + answer), seconds.
    #[serde(deserialize_with = "lenient")]
    pub push_timeout_secs: u64,
    /// Pushes in flight at once, across streams (each stream's SETs still go one at a time, in order).
    #[serde(deserialize_with = "lenient")]
    pub concurrency: usize,
    /// The longest the worker sleeps between looks at the outbox when nothing woke it, milliseconds (SETs
    /// queued by this process, or by another instance on PostgreSQL, wake it at once).
    #[serde(deserialize_with = "lenient")]
    pub idle_poll_ms: u64,
    /// How long a SET claimed for a push stays reserved; after a crash it is sent again once this has passed.
    /// At least twice `push_timeout_secs`.
    #[serde(deserialize_with = "lenient")]
    pub lease_secs: u64,
    /// How SETs name the user (RFC 9493): `iss_sub` (offboard's issuer and the SCIM id), `email` (the user's
    /// primary email, falling back to `iss_sub` for a user without one) or `aliases` (both).
    pub subject_format: SubjectFormat,
    /// Most streams one credential may create over the SSF API (the CLI's streams count as credential `cli`).
    #[serde(deserialize_with = "lenient")]
    pub max_streams_per_client: i64,
    /// Most streams in all.
    #[serde(deserialize_with = "lenient")]
    pub max_streams: i64,
    /// Days a delivered or dead-lettered SET stays in the outbox (counted from when it was queued); the worker
    /// removes older ones in batches. 0 keeps them forever.
    #[serde(deserialize_with = "lenient")]
    pub outbox_retention_days: u64,
    /// Non-public addresses push endpoints may reach anyway: addresses, CIDR networks or host names. Empty by
    /// default: `https://` pushes reach only global addresses.
    pub allowed_private_hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectFormat {
    IssSub,
    Email,
    Aliases,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            max_attempts: 1500,
            backoff_base_ms: 500,
            backoff_cap_secs: 60,
            push_timeout_secs: 5,
            concurrency: 32,
            idle_poll_ms: 500,
            lease_secs: 30,
            subject_format: SubjectFormat::IssSub,
            max_streams_per_client: 50,
            max_streams: 1000,
            outbox_retention_days: 7,
            allowed_private_hosts: Vec::new(),
        }
    }
}

/// Access and refresh token lifetimes and claims.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TokenConfig {
    /// Lifetime of an access token, seconds.
    #[serde(deserialize_with = "lenient")]
    pub access_ttl_secs: u64,
    /// Longest lifetime a caller may ask for (`offboard token mint --ttl`), seconds.
    #[serde(deserialize_with = "lenient")]
    pub max_access_ttl_secs: u64,
    /// Absolute lifetime of a refresh-token family (one login), seconds, however often it is used.
    #[serde(deserialize_with = "lenient")]
    pub refresh_absolute_ttl_secs: u64,
    /// A refresh token not used within this many seconds has expired.
    #[serde(deserialize_with = "lenient")]
    pub refresh_idle_ttl_secs: u64,
    /// Audiences offboard issues tokens for besides `default_audience`.
    pub audiences: Vec<String>,
    /// Signing algorithm of access tokens: `RS256` (default) or `EdDSA`. SETs are always RS256.
    pub algorithm: TokenAlgorithm,
    /// Entries in the in-process cache of verified access-token signatures (0 turns it off).
    #[serde(deserialize_with = "lenient")]
    pub verify_cache_entries: usize,
    /// Scopes a user's tokens may carry (`scope` of token exchange and `token mint`); empty: none.
    pub user_scopes: Vec<String>,
    /// Which API credentials may use `client_credentials`, and the scopes each may have, e.g.
    /// `deploy-bot = ["repo:read"]`. A credential not listed gets `unauthorized_client`.
    pub client_credentials: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TokenAlgorithm {
    RS256,
    EdDSA,
}

impl TokenAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// Signing keys and the key-encryption key that seals them at rest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct KeyConfig {
    /// The key-encryption key: 32 random bytes, base64 (e.g. `openssl rand -base64 32`). Prefer the env var
    /// `OFFBOARD_KEYS__KEK` or `kek_file` to writing it into the TOML file.
    pub kek: Option<SecretString>,
    /// A file holding the key-encryption key (base64). In dev mode offboard creates `offboard.kek` when neither
    /// this nor `kek` is set.
    pub kek_file: Option<PathBuf>,
    /// `Cache-Control: max-age` of the JWKS, seconds; also how long a key is pre-published before it signs.
    #[serde(deserialize_with = "lenient")]
    pub jwks_max_age_secs: u64,
    /// How often a running server re-reads the keys (to follow `offboard keys rotate` from another process).
    #[serde(deserialize_with = "lenient")]
    pub reload_secs: u64,
    /// A PEM file of PKCS#8 private keys that new keys are taken from, in order, before any is generated
    /// (importing existing keys; tests use it to skip RSA key generation).
    pub import_pem_file: Option<PathBuf>,
}

/// A string whose `Debug` and `Display` print nothing of it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What is shown in place of a secret.
pub const REDACTED: &str = "[redacted]";

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

fn redacted_db_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    match DbUrl::parse(url) {
        Ok(parsed) => s.serialize_str(&parsed.redacted()),
        Err(_) => s.serialize_str(REDACTED),
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(…)")
    }
}

/// An IdP whose signed tokens offboard trusts (RFC 8693 subject tokens, Global Token Revocation assertions).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TrustedIssuer {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// The `aud` its ID tokens carry for offboard (offboard's client id at that IdP).
    pub audience: String,
    /// A local JWKS file with its public keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Its JWKS URL, fetched at start and again (at most every 30 s) when a token names an unknown `kid`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The claim that identifies the user (`sub`, `email`, `oid`, …).
    #[serde(default = "default_claim")]
    pub claim: String,
    /// The SCIM attribute that claim is matched against: `userName`, `externalId` or `email`.
    #[serde(default = "default_attribute")]
    pub attribute: MappedAttribute,
    /// When set, the token's `tid` claim must equal it (Entra ID: the tenant id).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Whether this issuer may call Global Token Revocation (Okta Universal Logout) for any user.
    #[serde(default)]
    pub global_token_revocation: bool,
    /// With `attribute = "email"`: the token must say `email_verified: true` (default), else it maps no user.
    #[serde(default = "default_true")]
    pub require_email_verified: bool,
    /// With `attribute = "email"`: which of a user's SCIM emails the claim may match: `primary` (the one marked
    /// primary, or a user's only email) and/or email types (`work`, `home`, `other`). Default `["primary"]`.
    #[serde(default = "default_match_emails")]
    pub match_emails: Vec<String>,
}

fn default_claim() -> String {
    "sub".into()
}

fn default_true() -> bool {
    true
}

fn default_match_emails() -> Vec<String> {
    vec!["primary".into()]
}

fn default_attribute() -> MappedAttribute {
    MappedAttribute::ExternalId
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum MappedAttribute {
    #[serde(rename = "userName")]
    UserName,
    #[serde(rename = "externalId")]
    ExternalId,
    #[serde(rename = "email", alias = "emails")]
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Commit many concurrent writes in one transaction, a savepoint each, each answered after the commit
    /// (docs/decisions/0029-batch-writer.md). `auto` (default): on for SQLite, off for PostgreSQL; `true`/`false`
    /// for both. Off: every write is its own transaction.
    #[serde(deserialize_with = "lenient")]
    pub batch_writes: BatchWrites,
    /// SQLite `synchronous`: `full` (default: a power loss loses no acknowledged write) or `normal` (a power loss
    /// can lose the writes acknowledged since the last checkpoint; the file stays consistent).
    pub sqlite_synchronous: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Most operations one SCIM PATCH may carry; more is a 400 `tooMany` before the write begins.
    #[serde(deserialize_with = "lenient")]
    pub max_patch_operations: usize,
    /// Most comparisons in one SCIM filter; more is a 400 `tooMany` before any query runs.
    #[serde(deserialize_with = "lenient")]
    pub max_filter_terms: usize,
    /// Most substring comparisons (`co`, `sw`, `ew`: each a scan no index serves) in one SCIM filter; more is a
    /// 400 `tooMany` before any query runs.
    #[serde(deserialize_with = "lenient")]
    pub max_filter_substring_terms: usize,
    /// PostgreSQL: longest a SCIM list or search statement may run (`statement_timeout`, milliseconds; 0: no
    /// bound); beyond, the request gets 400 `tooMany`.
    #[serde(deserialize_with = "lenient")]
    pub list_statement_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "offboard.db".into(),
            listen: "127.0.0.1:8080".into(),
            issuer: "http://127.0.0.1:8080".into(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            log: LogConfig::default(),
            workers: 0,
            blocking_threads: 0,
            database: DatabaseConfig::default(),
            limits: Limits::default(),
            default_audience: None,
            tokens: TokenConfig::default(),
            keys: KeyConfig::default(),
            trusted_issuers: Vec::new(),
            fanout: FanoutConfig::default(),
            audit: AuditConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            access_ttl_secs: 300,
            max_access_ttl_secs: 3600,
            refresh_absolute_ttl_secs: 7 * 24 * 3600,
            refresh_idle_ttl_secs: 24 * 3600,
            audiences: Vec::new(),
            algorithm: TokenAlgorithm::RS256,
            verify_cache_entries: 100_000,
            user_scopes: Vec::new(),
            client_credentials: BTreeMap::new(),
        }
    }
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            kek: None,
            kek_file: None,
            jwks_max_age_secs: 300,
            reload_secs: 5,
            import_pem_file: None,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout_secs: 5,
            sqlite_busy_timeout_ms: 5000,
            batch_writes: BatchWrites::Auto,
            sqlite_synchronous: "full".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_results: 1000,
            max_scan: 100_000,
            max_patch_operations: 1000,
            max_filter_terms: 50,
            max_filter_substring_terms: 10,
            list_statement_timeout_ms: 10_000,
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
                    location: e
                        .span()
                        .map(|span| {
                            let (line, column) = line_and_column(&text, span.start);
                            format!("line {line}, column {column}: ")
                        })
                        .unwrap_or_default(),
                    message: e.message().trim_end().to_owned(),
                })?
            }
            None => toml::Table::new(),
        };
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (name, value) in &env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if ENV_NOT_KEYS.contains(&name.as_str())
                || ENV_NOT_KEY_PREFIXES.iter().any(|p| name.starts_with(p))
                || key.is_empty()
            {
                continue;
            }
            overlay(&mut table, &key.to_ascii_lowercase(), value);
        }
        let mut unknown_keys = Vec::new();
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown_keys.push(path.to_string());
        let de = serde_ignored::Deserializer::new(toml::Value::Table(table), &mut on_unknown);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            // The TOML value's own error ends with "in `key`"; the key is named once, by `Invalid`.
            ConfigError::invalid(&key, e.into_inner().message().trim_end())
        })?;
        let config = config.validated()?;
        Ok(Loaded { config, unknown_keys })
    }

    fn validated(mut self) -> Result<Self, ConfigError> {
        self.listen_addrs()?;
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
        self.sqlite_synchronous()?;
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
        if self.limits.max_filter_terms == 0 {
            return Err(ConfigError::invalid(
                "limits.max_filter_terms",
                "must be at least 1",
            ));
        }
        if self.limits.max_patch_operations == 0 {
            return Err(ConfigError::invalid(
                "limits.max_patch_operations",
                "must be at least 1",
            ));
        }
        self.validate_tokens()?;
        Ok(self)
    }

    fn validate_tokens(&self) -> Result<(), ConfigError> {
        let t = &self.tokens;
        if !(10..=86_400).contains(&t.access_ttl_secs) {
            return Err(ConfigError::invalid(
                "tokens.access_ttl_secs",
                "must be between 10 and 86400 seconds",
            ));
        }
        if t.max_access_ttl_secs < t.access_ttl_secs || t.max_access_ttl_secs > 86_400 {
            return Err(ConfigError::invalid(
                "tokens.max_access_ttl_secs",
                "must be at least tokens.access_ttl_secs and at most 86400",
            ));
        }
        if self.keys.reload_secs > self.keys.jwks_max_age_secs.max(1) {
            return Err(ConfigError::invalid(
                "keys.reload_secs",
                "must not exceed keys.jwks_max_age_secs (instances must follow a rotation before verifiers do)",
            ));
        }
        if t.refresh_idle_ttl_secs == 0 || t.refresh_absolute_ttl_secs < t.refresh_idle_ttl_secs {
            return Err(ConfigError::invalid(
                "tokens.refresh_idle_ttl_secs",
                "must be at least 1 and at most tokens.refresh_absolute_ttl_secs",
            ));
        }
        if self.console.idle_minutes == 0
            || u64::from(self.console.idle_minutes) > 60 * u64::from(self.console.absolute_hours)
        {
            return Err(ConfigError::invalid(
                "console.idle_minutes",
                "must be at least 1 and at most console.absolute_hours (in minutes)",
            ));
        }
        if self.fanout.lease_secs < 2 * self.fanout.push_timeout_secs {
            return Err(ConfigError::invalid(
                "fanout.lease_secs",
                "must be at least twice fanout.push_timeout_secs, or a slow push could be sent twice at once",
            ));
        }
        if self.fanout.max_attempts < 1 || self.fanout.concurrency == 0 || self.fanout.push_timeout_secs == 0
        {
            return Err(ConfigError::invalid(
                "fanout",
                "max_attempts, concurrency and push_timeout_secs must be at least 1",
            ));
        }
        if self.fanout.max_streams < 1 || self.fanout.max_streams_per_client < 1 {
            return Err(ConfigError::invalid(
                "fanout",
                "max_streams and max_streams_per_client must be at least 1",
            ));
        }
        if let Err(e) = crate::outbound::AddressPolicy::new(&self.fanout.allowed_private_hosts) {
            return Err(ConfigError::invalid("fanout.allowed_private_hosts", e));
        }
        if self.keys.reload_secs == 0 {
            return Err(ConfigError::invalid("keys.reload_secs", "must be at least 1"));
        }
        for (i, ti) in self.trusted_issuers.iter().enumerate() {
            let key = format!("trusted_issuers[{i}]");
            if ti.issuer.trim().is_empty() || ti.audience.trim().is_empty() {
                return Err(ConfigError::invalid(&key, "needs `issuer` and `audience`"));
            }
            if ti.jwks_file.is_some() == ti.jwks_uri.is_some() {
                return Err(ConfigError::invalid(
                    &key,
                    "needs exactly one of `jwks_file` and `jwks_uri`",
                ));
            }
            if let Some(uri) = &ti.jwks_uri
                && !(uri.starts_with("https://") || is_loopback_http(uri))
            {
                return Err(ConfigError::invalid(
                    &format!("{key}.jwks_uri"),
                    "must be an https:// URL (http:// only to a loopback address)",
                ));
            }
            if ti.claim.trim().is_empty() {
                return Err(ConfigError::invalid(&format!("{key}.claim"), "must not be empty"));
            }
        }
        Ok(())
    }

    /// Dev mode (docs/decisions/0021-dev-mode-key-encryption-key.md): the issuer is an `http://` loopback URL. Only
    /// then may offboard create its own key-encryption key.
    pub fn dev_mode(&self) -> bool {
        is_loopback_http(&self.issuer)
    }

    /// The `aud` of tokens minted without an explicit audience.
    pub fn default_audience(&self) -> &str {
        self.default_audience.as_deref().unwrap_or(&self.issuer)
    }

    /// Whether offboard issues tokens for this audience.
    pub fn issues_for(&self, audience: &str) -> bool {
        audience == self.default_audience() || self.tokens.audiences.iter().any(|a| a == audience)
    }

    /// Every audience offboard issues tokens for.
    pub fn audiences(&self) -> Vec<String> {
        let mut v = vec![self.default_audience().to_owned()];
        v.extend(
            self.tokens
                .audiences
                .iter()
                .filter(|a| *a != self.default_audience())
                .cloned(),
        );
        v
    }

    /// The addresses `listen` names: an IP address and port, or a host name and port resolved here
    /// (`localhost:8080` may give both `127.0.0.1:8080` and `[::1]:8080`).
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let listen = self.listen.trim();
        if let Ok(addr) = listen.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        let Some((host, port)) = listen.rsplit_once(':') else {
            return Err(ConfigError::invalid(
                "listen",
                "expected HOST:PORT, e.g. 127.0.0.1:8080",
            ));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(ConfigError::invalid(
                "listen",
                format_args!("`{listen}` is not HOST:PORT with a port from 0 to 65535"),
            ));
        }
        let mut addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(listen)
            .map_err(|e| ConfigError::invalid("listen", format_args!("cannot resolve host `{host}`: {e}")))?
            .collect();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(ConfigError::invalid(
                "listen",
                format_args!("host `{host}` resolves to no address"),
            ));
        }
        Ok(addrs)
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

    /// `database.sqlite_synchronous` as the storage layer takes it.
    pub fn sqlite_synchronous(&self) -> Result<Synchronous, ConfigError> {
        match self
            .database
            .sqlite_synchronous
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            _ => Err(ConfigError::invalid(
                "database.sqlite_synchronous",
                "must be `full` or `normal`",
            )),
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

/// Whether `url` is `http://` to `localhost` or a loopback address.
pub fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // `http://localhost:x@elsewhere/` names the host after the userinfo: refuse any userinfo.
    if host.contains(['@', '\\']) {
        return false;
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h));
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// Sets `a__b__c` in the table to the value, creating tables on the way: a TOML array when the value is written
/// as one (`["svc-a", "svc-b"]`, for list keys such as `tokens.audiences`), else a string (an IPv6 `listen` such
/// as `[::1]:8080` is no TOML array and stays a string).
fn overlay(table: &mut toml::Table, key: &str, value: &str) {
    let mut parts = key.split("__").peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            let array = value
                .trim_start()
                .starts_with('[')
                .then(|| toml::from_str::<toml::Table>(&format!("v = {value}")).ok())
                .flatten()
                .and_then(|mut t| t.remove("v"))
                .filter(toml::Value::is_array);
            current.insert(
                part.to_owned(),
                array.unwrap_or_else(|| toml::Value::String(value.to_owned())),
            );
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
/// `database.batch_writes`: whether concurrent writes share one transaction (docs/decisions/0029-batch-writer.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchWrites {
    /// On for SQLite, where it pays for `synchronous = FULL`; off for PostgreSQL, where it measured within noise
    /// and would hold per-user locks across a batch, letting two instances deadlock.
    Auto,
    #[serde(rename = "true")]
    On,
    #[serde(rename = "false")]
    Off,
}

impl BatchWrites {
    /// Whether writes to this backend are batched.
    pub fn enabled(self, backend: Backend) -> bool {
        match self {
            Self::Auto => backend == Backend::Sqlite,
            Self::On => true,
            Self::Off => false,
        }
    }
}

impl FromStr for BatchWrites {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "true" | "on" => Ok(Self::On),
            "false" | "off" => Ok(Self::Off),
            _ => Err("must be `auto`, `true` or `false`".into()),
        }
    }
}

impl<'de> Deserialize<'de> for BatchWrites {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Flag(bool),
            Text(String),
        }
        match Either::deserialize(de)? {
            Either::Flag(true) => Ok(Self::On),
            Either::Flag(false) => Ok(Self::Off),
            Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

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
    fn console_expiry_is_bounded() {
        let c = Config::load_from(None, env(&[])).unwrap().config;
        assert_eq!((c.console.idle_minutes, c.console.absolute_hours), (30, 12));
        let err = Config::load_from(None, env(&[("OFFBOARD_CONSOLE__IDLE_MINUTES", "0")])).unwrap_err();
        assert!(err.to_string().contains("console.idle_minutes"), "{err}");
        let err = Config::load_from(
            None,
            env(&[
                ("OFFBOARD_CONSOLE__IDLE_MINUTES", "61"),
                ("OFFBOARD_CONSOLE__ABSOLUTE_HOURS", "1"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("console.idle_minutes"), "{err}");
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
    fn lists_can_be_set_from_the_environment() {
        let c = Config::load_from(
            None,
            env(&[("OFFBOARD_TOKENS__AUDIENCES", r#"["svc-a", "svc-b"]"#)]),
        )
        .unwrap()
        .config;
        assert_eq!(c.tokens.audiences, ["svc-a", "svc-b"]);
        // Not an array: still a string, and a list key refuses it by name.
        let err = Config::load_from(None, env(&[("OFFBOARD_TOKENS__AUDIENCES", "svc-a")])).unwrap_err();
        assert!(err.to_string().contains("tokens.audiences"), "{err}");
        // An IPv6 listen address looks like an array's start but stays a string.
        let c = Config::load_from(None, env(&[("OFFBOARD_LISTEN", "[::1]:8181")]))
            .unwrap()
            .config;
        assert!(c.listen.contains("::1"), "{:?}", c.listen);
    }

    #[test]
    fn storage_durability_and_batching_are_configurable() {
        let c = Config::load_from(None, env(&[])).unwrap().config;
        assert_eq!(c.database.batch_writes, BatchWrites::Auto);
        assert!(c.database.batch_writes.enabled(Backend::Sqlite));
        assert!(!c.database.batch_writes.enabled(Backend::Postgres));
        assert_eq!(c.sqlite_synchronous().unwrap(), Synchronous::Full);
        let c = Config::load_from(
            None,
            env(&[
                ("OFFBOARD_DATABASE__BATCH_WRITES", "false"),
                ("OFFBOARD_DATABASE__SQLITE_SYNCHRONOUS", "NORMAL"),
            ]),
        )
        .unwrap()
        .config;
        assert_eq!(c.database.batch_writes, BatchWrites::Off);
        assert!(!c.database.batch_writes.enabled(Backend::Sqlite));
        assert_eq!(c.sqlite_synchronous().unwrap(), Synchronous::Normal);
        for (text, want) in [
            ("true", BatchWrites::On),
            ("on", BatchWrites::On),
            ("auto", BatchWrites::Auto),
        ] {
            let c = Config::load_from(None, env(&[("OFFBOARD_DATABASE__BATCH_WRITES", text)]))
                .unwrap()
                .config;
            assert_eq!(c.database.batch_writes, want, "{text}");
        }
        let err =
            Config::load_from(None, env(&[("OFFBOARD_DATABASE__BATCH_WRITES", "sometimes")])).unwrap_err();
        assert!(err.to_string().contains("database.batch_writes"), "{err}");
        let err =
            Config::load_from(None, env(&[("OFFBOARD_DATABASE__SQLITE_SYNCHRONOUS", "off")])).unwrap_err();
        assert!(err.to_string().contains("database.sqlite_synchronous"), "{err}");
    }

    #[test]
    fn dev_mode_is_a_loopback_http_issuer() {
        let with = |issuer: &str| Config {
            issuer: issuer.into(),
            ..Config::default()
        };
        assert!(with("http://127.0.0.1:8080").dev_mode());
        assert!(with("http://localhost").dev_mode());
        assert!(with("http://[::1]:9000").dev_mode());
        assert!(!with("https://127.0.0.1:8080").dev_mode());
        assert!(!with("http://offboard.example.com").dev_mode());
        assert!(!with("http://10.0.0.1:8080").dev_mode());
    }

    #[test]
    fn token_settings_are_checked_and_secrets_hidden() {
        let err = Config::load_from(None, env(&[("OFFBOARD_TOKENS__ACCESS_TTL_SECS", "1")])).unwrap_err();
        assert!(err.to_string().contains("tokens.access_ttl_secs"), "{err}");
        let loaded =
            Config::load_from(None, env(&[("OFFBOARD_KEYS__KEK", "c2VjcmV0LWtlay12YWx1ZQ==")])).unwrap();
        assert!(!format!("{:?}", loaded.config).contains("c2VjcmV0"));
        assert_eq!(loaded.config.default_audience(), "http://127.0.0.1:8080");
    }

    #[test]
    fn trusted_issuers_come_from_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offboard.toml");
        std::fs::write(
            &path,
            "[[trusted_issuers]]\nissuer = \"https://acme.okta.com\"\naudience = \"0oa1\"\njwks_file = \"okta.json\"\n\
             [[trusted_issuers]]\nissuer = \"https://login.microsoftonline.com/t/v2.0\"\naudience = \"app\"\n\
             jwks_uri = \"https://login.microsoftonline.com/t/discovery/v2.0/keys\"\nclaim = \"oid\"\ntenant_id = \"t\"\n",
        )
        .unwrap();
        let loaded = Config::load_from(Some(&path), env(&[])).unwrap();
        let [okta, entra] = loaded.config.trusted_issuers.as_slice() else {
            panic!("two issuers")
        };
        assert_eq!(okta.claim, "sub");
        assert_eq!(okta.attribute, MappedAttribute::ExternalId);
        assert_eq!(entra.claim, "oid");
        assert_eq!(entra.tenant_id.as_deref(), Some("t"));
        std::fs::write(&path, "[[trusted_issuers]]\nissuer = \"x\"\naudience = \"y\"\n").unwrap();
        let err = Config::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("trusted_issuers[0]"), "{err}");
    }

    #[test]
    fn the_access_log_is_on_by_default_and_switched_by_file_or_env() {
        assert!(Config::load_from(None, env(&[])).unwrap().config.log.access);
        let loaded = Config::load_from(None, env(&[("OFFBOARD_LOG__ACCESS", "false")])).unwrap();
        assert!(!loaded.config.log.access);
        assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offboard.toml");
        std::fs::write(&path, "[log]\naccess = false\n").unwrap();
        let loaded = Config::load_from(Some(&path), env(&[])).unwrap();
        assert!(!loaded.config.log.access);
        assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
        let err = Config::load_from(None, env(&[("OFFBOARD_LOG__ACCESS", "sometimes")])).unwrap_err();
        assert!(err.to_string().contains("log.access"), "{err}");
    }

    #[test]
    fn errors_name_the_key_once() {
        for (name, value, key) in [
            ("OFFBOARD_LOG_FORMAT", "xml", "log_format"),
            ("OFFBOARD_FANOUT__SUBJECT_FORMAT", "sub", "subject_format"),
            ("OFFBOARD_LIMITS__MAX_RESULTS", "many", "max_results"),
        ] {
            let err = Config::load_from(None, env(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert_eq!(err.matches(key).count(), 1, "{err}");
            assert!(!err.contains('\n'), "{err:?}");
        }
    }

    #[test]
    fn toml_syntax_errors_give_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offboard.toml");
        std::fs::write(&path, "# comment\n[limits]\nmax_results = = 5\n").unwrap();
        let err = Config::load_from(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 3, column 15"), "{err}");
        assert_eq!(line_and_column("ab\nçd", 5), (2, 2));
        assert_eq!(line_and_column("ab\nçd", 4), (2, 1));
        assert_eq!(line_and_column("ab", 99), (1, 3));
    }

    #[test]
    fn other_commands_variables_are_not_unknown_keys() {
        let loaded = Config::load_from(
            None,
            env(&[
                ("OFFBOARD_STREAM_AUTH_HEADER", "Bearer x"),
                ("OFFBOARD_GIT_COMMIT", "0123abc"),
                ("OFFBOARD_GUARD_ISSUER", "https://offboard.example.com"),
                ("OFFBOARD_GUARD_STREAM_CREDENTIAL", "id:secret"),
            ]),
        )
        .unwrap();
        assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    }

    #[test]
    fn listen_takes_an_address_or_a_host_name() {
        let c = Config::load_from(None, env(&[("OFFBOARD_LISTEN", "localhost:18080")]))
            .unwrap()
            .config;
        let addrs = c.listen_addrs().unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 18080),
            "{addrs:?}"
        );
        let c = Config::load_from(None, env(&[("OFFBOARD_LISTEN", "[::1]:9000")]))
            .unwrap()
            .config;
        assert_eq!(c.listen_addrs().unwrap(), vec!["[::1]:9000".parse().unwrap()]);
        for bad in [
            "localhost",
            "localhost:99999",
            ":8080",
            "no-such-host.invalid:8080",
        ] {
            let err = Config::load_from(None, env(&[("OFFBOARD_LISTEN", bad)])).unwrap_err();
            assert!(err.to_string().contains("`listen`"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_shown_configuration_has_every_secret_redacted() {
        let loaded = Config::load_from(
            None,
            env(&[
                ("OFFBOARD_KEYS__KEK", "c2VjcmV0LWtlay12YWx1ZQ=="),
                (
                    "OFFBOARD_DATABASE_URL",
                    "postgres://app:pa55word@db/offboard?sslmode=require&password=pa55word",
                ),
            ]),
        )
        .unwrap();
        let shown = toml::to_string_pretty(&loaded.config).unwrap();
        let json = serde_json::to_string(&loaded.config).unwrap();
        for text in [&shown, &json] {
            assert!(!text.contains("c2VjcmV0") && !text.contains("pa55word"), "{text}");
            assert!(text.contains(REDACTED), "{text}");
            assert!(
                text.contains("postgres://app:***@db/offboard?sslmode=require&password=***"),
                "{text}"
            );
        }
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
