//! Persistence: one `DbConnection` over SQLite or PostgreSQL (diesel `MultiConnection`, the variant chosen by the
//! URL), r2d2 pools, SQLite pragmas, embedded migrations, the transaction discipline for writes, and `repo/`, the
//! only code that writes SQL.
//!
//! Writes go through [`Db::write`]: on SQLite a single writer connection that begins with `BEGIN IMMEDIATE`
//! (docs/decisions/0008-sqlite-write-transactions.md: a deferred transaction that upgrades fails with
//! `SQLITE_BUSY_SNAPSHOT`), retried while
//! another process (the CLI) holds the lock; on PostgreSQL a plain transaction from the shared pool. With batching
//! on (the default) concurrent writes share one such transaction, a savepoint each, and are answered after its
//! commit (`batch.rs`, docs/decisions/0029-batch-writer.md). Reads use [`Db::read`]. Both are synchronous: callers
//! run them inside one `web::block` hop.

mod batch;
pub mod filter_sql;
pub mod models;
pub mod repo;
pub mod schema;
pub mod statements;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use batch::{Seal, at_batch_commit};

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection to either backend. Queries written with the diesel DSL run on both.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl DbConnection {
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A parsed `database_url` (docs/decisions/0010-database-url.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub backend: Backend,
    /// What the driver gets: the full URL for PostgreSQL, the file path for SQLite.
    pub target: String,
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("must not be empty".into());
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self {
                backend: Backend::Postgres,
                target: url.to_owned(),
            });
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("file:"))
        {
            if path.is_empty() {
                return Err("names no SQLite file".into());
            }
            return Ok(Self::sqlite(path));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(format!(
                "unsupported scheme `{scheme}://` (use postgres://…, sqlite://PATH or a file path)"
            ));
        }
        Ok(Self::sqlite(url))
    }

    pub fn sqlite(path: &str) -> Self {
        Self {
            backend: Backend::Sqlite,
            target: path.to_owned(),
        }
    }

    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        match self.backend {
            Backend::Sqlite => self.target.clone(),
            Backend::Postgres => redact_password(&self.target),
        }
    }
}

fn redact_password(url: &str) -> String {
    let redacted = redact_userinfo_password(url);
    // libpq also takes the password as a query parameter: `postgres://host/db?password=…`.
    match redacted.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => redacted,
    }
}

fn redact_userinfo_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Why a database cannot be opened at all: retrying would not help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PermanentDbError(String);

/// Errors a PostgreSQL server gives while it (or the network to it) is still coming up; anything else is permanent.
const TRANSIENT_PG_ERRORS: &[&str] = &[
    "connection refused",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many clients",
    "timeout",
    "timed out",
    "could not translate host name",
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "connection reset",
    "server closed the connection unexpectedly",
];

/// The one line of a driver's error that says what is wrong (libpq prefixes `connection to server … failed:
/// FATAL:` and adds hints on further lines).
fn first_line(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(message);
    let line = line.rsplit_once("FATAL:").map_or(line, |(_, rest)| rest);
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The passwords a PostgreSQL URL carries (in its userinfo or a `password=` parameter), to keep them out of
/// messages.
fn url_passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://")
        && let Some((userinfo, _)) = rest.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        found.push(password.to_owned());
    }
    if let Some((_, query)) = url.split_once('?') {
        for param in query.split('&') {
            if let Some((k, v)) = param.split_once('=')
                && k.eq_ignore_ascii_case("password")
            {
                found.push(v.to_owned());
            }
        }
    }
    found.retain(|p| !p.is_empty());
    found
}

/// Looks, once and without retrying, for what would make [`Db::open`] fail however long it waited: a SQLite file
/// whose directory does not exist, a PostgreSQL server that refuses the database, role, password or URL. A
/// transient failure (the server not yet accepting connections) passes, so the pool's connect timeout still waits
/// for it. Creates nothing: SQLite is only checked, PostgreSQL gets one connection that is closed at once.
pub fn preflight(url: &DbUrl) -> Result<(), PermanentDbError> {
    match url.backend {
        Backend::Sqlite => {
            let path = url.target.as_str();
            if path.is_empty() || path.starts_with(':') || path.contains('?') {
                return Ok(());
            }
            let dir = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                return Err(PermanentDbError(format!(
                    "the directory {} of the SQLite file does not exist (create it, or change `database_url`)",
                    dir.display()
                )));
            }
            Ok(())
        }
        Backend::Postgres => match PgConnection::establish(&url.target) {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = e.to_string();
                let lower = message.to_ascii_lowercase();
                if TRANSIENT_PG_ERRORS.iter().any(|t| lower.contains(t)) {
                    return Ok(());
                }
                let mut line = first_line(&message);
                for secret in url_passwords(&url.target) {
                    line = line.replace(&secret, "***");
                }
                Err(PermanentDbError(line))
            }
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time (database down, pool exhausted).
    #[error("database unavailable: {0}")]
    Unavailable(#[from] r2d2::Error),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Opens connections for r2d2 and applies per-connection settings.
#[derive(Debug)]
pub struct Manager {
    url: DbUrl,
    busy_timeout_ms: u32,
    synchronous: Synchronous,
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match self.url.backend {
            Backend::Postgres => {
                let mut conn = PgConnection::establish(&self.url.target)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                conn.set_instrumentation(statements::Counter::default());
                Ok(DbConnection::Postgres(conn))
            }
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.url.target)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                conn.set_instrumentation(statements::Counter::default());
                // Order matters (docs/decisions/0009-sqlite-pragmas-at-connect.md): busy_timeout before WAL, never
                // inside a transaction.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
                     PRAGMA synchronous = {};",
                    self.busy_timeout_ms,
                    self.synchronous.pragma()
                ))
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        // A connection returned while still inside a transaction must not be reused.
        match conn {
            DbConnection::Postgres(c) => AnsiTransactionManager::is_broken_transaction_manager(c),
            DbConnection::Sqlite(c) => AnsiTransactionManager::is_broken_transaction_manager(c),
        }
    }
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConn = r2d2::PooledConnection<Manager>;

/// SQLite's `synchronous` setting in WAL mode: `Full` syncs the WAL at every commit, so a power loss loses no
/// acknowledged commit; `Normal` syncs only at checkpoints, so a power loss can lose the commits since the last
/// one (never corrupting the file). docs/decisions/0029-batch-writer.md says why `Full` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Normal,
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// Options for opening the pools.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub sqlite_busy_timeout_ms: u32,
    pub sqlite_synchronous: Synchronous,
    /// Most write use cases one transaction of the batch writer holds; 0 or 1: every write is its own transaction
    /// (docs/decisions/0029-batch-writer.md).
    pub batch_writes: usize,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            sqlite_busy_timeout_ms: 5000,
            sqlite_synchronous: Synchronous::Full,
            batch_writes: DEFAULT_BATCH,
        }
    }
}

/// The default most members of one batch.
pub const DEFAULT_BATCH: usize = 64;

/// The database handle shared by the server and the CLI: cheap to clone.
#[derive(Clone)]
pub struct Db {
    url: DbUrl,
    read: Pool,
    /// SQLite: a pool of one, so this process never has two writers. PostgreSQL: the read pool.
    write: Pool,
    /// Told how long each checkout waited for a connection (see [`Db::on_checkout`]).
    checkouts: Arc<CheckoutHook>,
    /// The batch writer, when writes are batched.
    batch: Option<Arc<batch::Batcher>>,
}

/// What a pool looks like now (r2d2's `state()`, no query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Connections open, in use or idle.
    pub connections: u32,
    pub idle: u32,
    pub max: u32,
}

type CheckoutFn = Box<dyn Fn(Duration) + Send + Sync>;

/// The r2d2 event handler of both pools: passes each checkout's wait (and each timed-out wait) to the function
/// set by [`Db::on_checkout`], if any.
#[derive(Default)]
struct CheckoutHook(std::sync::OnceLock<CheckoutFn>);

impl std::fmt::Debug for CheckoutHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckoutHook").finish_non_exhaustive()
    }
}

impl CheckoutHook {
    fn waited(&self, d: Duration) {
        if let Some(f) = self.0.get() {
            f(d);
        }
    }
}

/// Shares one [`CheckoutHook`] between the pools (r2d2 wants a `Box` per pool).
#[derive(Debug)]
struct SharedHook(Arc<CheckoutHook>);

impl r2d2::HandleEvent for SharedHook {
    fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
        self.0.waited(event.duration());
    }

    fn handle_timeout(&self, event: r2d2::event::TimeoutEvent) {
        self.0.waited(event.timeout());
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("url", &self.url.redacted())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Work to run once the current write transaction of this thread has committed (see [`after_commit`]).
    static AFTER_COMMIT: std::cell::RefCell<Vec<Box<dyn FnOnce()>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` after the write transaction this thread is in commits; drops it if the transaction rolls back. For
/// side effects that must not run before the data is visible, such as waking the fan-out worker.
pub fn after_commit(f: impl FnOnce() + 'static) {
    AFTER_COMMIT.with(|hooks| hooks.borrow_mut().push(Box::new(f)));
}

fn take_after_commit() -> Vec<Box<dyn FnOnce()>> {
    AFTER_COMMIT.with(|hooks| std::mem::take(&mut *hooks.borrow_mut()))
}

type BeforeCommit = Box<dyn FnOnce(&mut DbConnection) -> QueryResult<()>>;

thread_local! {
    /// Work to run inside the current write transaction of this thread, after its body and before its commit.
    static BEFORE_COMMIT: std::cell::RefCell<Vec<BeforeCommit>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The serial of the write transaction this thread is in (None outside one).
    static TX_SERIAL: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    static NEXT_SERIAL: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
    /// How many write transactions this thread is inside (more than one only when writes nest).
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many write transactions this thread is inside: 0 outside one, 1 in a transaction, more when a write
/// was started inside another (on another connection).
pub fn transaction_depth() -> usize {
    DEPTH.with(std::cell::Cell::get)
}

/// Runs `f` inside the write transaction this thread is in, after the transaction's body, just before it commits
/// (a failure rolls the whole transaction back). For appends that should hold their locks as briefly as possible:
/// the audit chain.
pub fn before_commit(f: impl FnOnce(&mut DbConnection) -> QueryResult<()> + 'static) {
    BEFORE_COMMIT.with(|hooks| hooks.borrow_mut().push(Box::new(f)));
}

/// A number that identifies the write transaction (attempt) this thread is in, if any: state kept for "the
/// current transaction" is stale when the serial moved on.
pub fn transaction_serial() -> Option<u64> {
    TX_SERIAL.with(std::cell::Cell::get)
}

fn run_before_commit(conn: &mut DbConnection) -> QueryResult<()> {
    loop {
        let hooks = BEFORE_COMMIT.with(|h| std::mem::take(&mut *h.borrow_mut()));
        if hooks.is_empty() {
            return Ok(());
        }
        for hook in hooks {
            hook(conn)?;
        }
    }
}

/// Marks this thread as inside a fresh write transaction until dropped; a write nested in another (on another
/// connection) gets its own serial and hooks, and the outer transaction's are put back after it.
struct InTransaction {
    outer: Option<(u64, Vec<BeforeCommit>)>,
}

impl InTransaction {
    fn begin() -> Self {
        let serial = NEXT_SERIAL.with(|n| {
            let s = n.get();
            n.set(s + 1);
            s
        });
        let outer_serial = TX_SERIAL.with(|t| t.replace(Some(serial)));
        let outer_hooks = BEFORE_COMMIT.with(|h| std::mem::take(&mut *h.borrow_mut()));
        DEPTH.with(|d| d.set(d.get() + 1));
        Self {
            outer: outer_serial.map(|s| (s, outer_hooks)),
        }
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        let (serial, hooks) = self
            .outer
            .take()
            .map_or((None, Vec::new()), |(s, h)| (Some(s), h));
        TX_SERIAL.with(|t| t.set(serial));
        BEFORE_COMMIT.with(|h| *h.borrow_mut() = hooks);
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Creates a missing SQLite database file readable by its owner only (0600, whatever the umask), as the KEK file
/// is: it holds every user, token family and the audit log. SQLite gives the `-wal` and `-shm` files it creates
/// later the mode of the database file, so they are private too. An existing file keeps the mode its operator
/// chose; an in-memory database or a URI has no file to create. A failure here is left for SQLite to report.
fn create_private(path: &str) {
    if path.is_empty() || path.starts_with(':') || path.contains('?') {
        return;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => tracing::debug!("created the SQLite database file {path} (mode 0600)"),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => tracing::debug!("could not create {path} ahead of SQLite: {e}"),
    }
}

/// How often `write` retries when SQLite reports another process holds the write lock beyond `busy_timeout`.
const SQLITE_BUSY_RETRIES: u32 = 5;

impl Db {
    /// Opens the pools (connecting eagerly, so a wrong URL fails here, not at the first request).
    pub fn open(url: &DbUrl, opts: &DbOptions) -> Result<Self, r2d2::Error> {
        if url.backend == Backend::Sqlite {
            create_private(&url.target);
        }
        let checkouts = Arc::new(CheckoutHook::default());
        let build = |size: u32| {
            r2d2::Pool::builder()
                .max_size(size)
                .event_handler(Box::new(SharedHook(checkouts.clone())))
                // No connection is opened in the background: r2d2 keeps `min_idle` by opening connections on its
                // own threads, and a process that exits while one of them is inside libpq's TLS setup crashes in
                // OpenSSL's exit handler (seen: `offboard users list` on PostgreSQL, 6 % of runs). The first
                // connection is opened below, in the caller's thread, instead.
                .min_idle(Some(0))
                .connection_timeout(opts.connect_timeout)
                // diesel's broken-connection check stays; the per-checkout ping halves read throughput (§37).
                .test_on_check_out(false)
                .build(Manager {
                    url: url.clone(),
                    busy_timeout_ms: opts.sqlite_busy_timeout_ms,
                    synchronous: opts.sqlite_synchronous,
                })
        };
        let read = build(opts.pool_size)?;
        drop(read.get()?);
        let write = match url.backend {
            Backend::Sqlite => {
                let write = build(1)?;
                drop(write.get()?);
                write
            }
            Backend::Postgres => read.clone(),
        };
        let batch = (opts.batch_writes > 1).then(|| Arc::new(batch::Batcher::new(opts.batch_writes)));
        Ok(Self {
            url: url.clone(),
            read,
            write,
            checkouts,
            batch,
        })
    }

    /// Calls `f` with how long each later checkout of a connection waited (a timed-out one: the timeout). The
    /// first call wins; later ones are ignored. `f` runs on the thread that waited, so it must be cheap.
    pub fn on_checkout(&self, f: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.checkouts.0.set(Box::new(f));
    }

    /// The read pool's state and, on SQLite, the writer's (`None` on PostgreSQL, where they are one pool).
    pub fn pool_state(&self) -> (PoolState, Option<PoolState>) {
        let state = |p: &Pool| {
            let s = p.state();
            PoolState {
                connections: s.connections,
                idle: s.idle_connections,
                max: p.max_size(),
            }
        };
        let write = match self.url.backend {
            Backend::Sqlite => Some(state(&self.write)),
            Backend::Postgres => None,
        };
        (state(&self.read), write)
    }

    pub fn backend(&self) -> Backend {
        self.url.backend
    }

    /// With the batch writer on: how many writes wait now for their turn in the open transaction.
    pub fn writes_waiting(&self) -> Option<usize> {
        self.batch.as_ref().map(|b| b.waiting())
    }

    /// With the batch writer on: how many batches committed so far and how many write use cases they held.
    pub fn batch_stats(&self) -> Option<(u64, u64)> {
        self.batch.as_ref().map(|b| b.stats())
    }

    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    /// Applies pending migrations; returns the names of those applied.
    pub fn migrate(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.write.get()?;
        let applied = match &mut *conn {
            DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
            DbConnection::Postgres(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS),
        }
        .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
        Ok(applied.into_iter().map(|v| v.to_string()).collect())
    }

    /// Runs `f` on a read connection (no explicit transaction: each statement sees a consistent snapshot).
    pub fn read<T, E>(&self, f: impl FnOnce(&mut DbConnection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        let mut conn = self.read.get().map_err(DbError::from)?;
        f(&mut conn)
    }

    /// Runs `f` on a read connection inside one read-only snapshot (PostgreSQL `REPEATABLE READ READ ONLY`; SQLite
    /// a deferred transaction, whose first read fixes the snapshot in WAL mode): every statement of `f` sees the
    /// database as of the same moment, whatever commits meanwhile. Always rolled back.
    pub fn snapshot<T, E>(&self, f: impl FnOnce(&mut DbConnection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        self.snapshot_with("", f)
    }

    /// [`snapshot`](Self::snapshot), running `pg_setup` (statements such as `SET LOCAL …`, trusted text) right
    /// after PostgreSQL's `BEGIN`, in the same round trip.
    pub fn snapshot_with<T, E>(
        &self,
        pg_setup: &str,
        f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        const PG_BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
        let mut conn = self.read.get().map_err(DbError::from)?;
        let begun = match &mut *conn {
            DbConnection::Postgres(c) if pg_setup.is_empty() => {
                AnsiTransactionManager::begin_transaction_sql(c, PG_BEGIN)
            }
            DbConnection::Postgres(c) => {
                AnsiTransactionManager::begin_transaction_sql(c, &format!("{PG_BEGIN}; {pg_setup}"))
            }
            DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN DEFERRED"),
        };
        begun.map_err(|e| E::from(DbError::from(e)))?;
        let result = f(&mut conn);
        let ended = match &mut *conn {
            DbConnection::Postgres(c) => {
                <AnsiTransactionManager as TransactionManager<PgConnection>>::rollback_transaction(c)
            }
            DbConnection::Sqlite(c) => {
                <AnsiTransactionManager as TransactionManager<SqliteConnection>>::rollback_transaction(c)
            }
        };
        if let Err(e) = ended {
            tracing::error!("ending a read snapshot failed: {e}");
        }
        result
    }

    /// Runs `f` in one write transaction (see the module doc), committing on `Ok` and rolling back on `Err`.
    pub fn write<T, E>(&self, mut f: impl FnMut(&mut DbConnection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError> + From<diesel::result::Error>,
    {
        // A write started inside a batch member (on another connection) goes its own way.
        if let Some(batch) = &self.batch
            && !batch::in_member()
        {
            return batch.write(&self.write, &mut f);
        }
        let _outside = batch::Outside::enter();
        let mut conn = self.write.get().map_err(DbError::from)?;
        let mut attempt = 0;
        drop(take_after_commit());
        loop {
            let outcome = {
                let _tx = InTransaction::begin();
                write_transaction(&mut conn, &mut f)
            };
            let hooks = take_after_commit();
            match outcome {
                Err(TxError::Busy(e)) if attempt < SQLITE_BUSY_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, "SQLite busy, retrying the write transaction: {e}");
                    std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
                }
                Err(TxError::Busy(e)) => return Err(E::from(e)),
                Err(TxError::Inner(e)) => return Err(e),
                Ok(v) => {
                    for hook in hooks {
                        hook();
                    }
                    return Ok(v);
                }
            }
        }
    }
}

enum TxError<E> {
    /// SQLite could not take the write lock; nothing ran, safe to retry.
    Busy(diesel::result::Error),
    Inner(E),
}

fn is_sqlite_busy(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info)
        if info.message().contains("database is locked") || info.message().contains("database is busy"))
}

fn write_transaction<T, E>(
    conn: &mut DbConnection,
    f: &mut impl FnMut(&mut DbConnection) -> Result<T, E>,
) -> Result<T, TxError<E>>
where
    E: From<diesel::result::Error>,
{
    match conn {
        DbConnection::Postgres(_) => conn
            .transaction(|c| {
                let v = f(c)?;
                run_before_commit(c)?;
                Ok(v)
            })
            .map_err(TxError::Inner),
        DbConnection::Sqlite(c) => {
            // Through diesel's transaction manager, so its depth stays right
            // (docs/decisions/0008-sqlite-write-transactions.md).
            if let Err(e) = AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE") {
                return Err(if is_sqlite_busy(&e) {
                    TxError::Busy(e)
                } else {
                    TxError::Inner(e.into())
                });
            }
            let result = f(conn).and_then(|v| run_before_commit(conn).map(|()| v).map_err(E::from));
            let DbConnection::Sqlite(c) = conn else {
                unreachable!("variant checked above")
            };
            match result {
                Ok(v) => {
                    match <AnsiTransactionManager as TransactionManager<SqliteConnection>>::commit_transaction(
                        c,
                    ) {
                        Ok(()) => Ok(v),
                        Err(e) => {
                            let _ = <AnsiTransactionManager as TransactionManager<SqliteConnection>>::rollback_transaction(c);
                            Err(TxError::Inner(e.into()))
                        }
                    }
                }
                Err(e) => {
                    if let Err(rb) =
                        <AnsiTransactionManager as TransactionManager<SqliteConnection>>::rollback_transaction(
                            c,
                        )
                    {
                        tracing::error!("rollback failed: {rb}");
                    }
                    Err(TxError::Inner(e))
                }
            }
        }
    }
}

/// The current UTC time at millisecond precision: what both backends store and give back unchanged.
pub fn now() -> chrono::NaiveDateTime {
    let t = chrono::Utc::now().naive_utc();
    chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::milliseconds(1)).unwrap_or(t)
}

/// The format of [`format_time`], for `chrono`'s strftime.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// A stored time as offboard writes it everywhere (SCIM `meta`, audit entries): RFC 3339, UTC, milliseconds.
///
/// Written digit by digit: a list page formats two per user, and going through strftime (which parses its format
/// string on every call) was 7 % of a page (BENCHMARKS.md §10). Years outside 0–9999 and leap seconds, which
/// offboard never stores, take strftime's way, so the text is the same for every input.
pub fn format_time(t: chrono::NaiveDateTime) -> String {
    use chrono::{Datelike, Timelike};
    let nanos = t.nanosecond();
    let year = match u32::try_from(t.year()) {
        Ok(year) if year <= 9999 && nanos < 1_000_000_000 => year,
        _ => return t.format(TIME_FORMAT).to_string(),
    };
    let mut out = String::with_capacity(24);
    let mut push = |value: u32, width: u32, then: char| {
        let mut unit = 10u32.pow(width.saturating_sub(1));
        while unit > 0 {
            out.push(char::from_digit(value / unit % 10, 10).unwrap_or('0'));
            unit /= 10;
        }
        out.push(then);
    };
    push(year, 4, '-');
    push(t.month(), 2, '-');
    push(t.day(), 2, 'T');
    push(t.hour(), 2, ':');
    push(t.minute(), 2, ':');
    push(t.second(), 2, '.');
    push(nanos / 1_000_000, 3, 'Z');
    out
}

/// A round trip to the database.
pub fn ping(conn: &mut DbConnection) -> QueryResult<()> {
    conn.batch_execute("SELECT 1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_strftime_writes_them() {
        use chrono::{NaiveDate, TimeDelta};
        let start = NaiveDate::from_ymd_opt(1969, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 58, 999_999_999)
            .unwrap();
        // Every millisecond around midnight, then steps that reach every field's digits, then the edges.
        let mut times: Vec<_> = (0..3000)
            .map(|i| start + TimeDelta::microseconds(i * 997))
            .collect();
        times.extend(
            (0..5000)
                .map(|i| start + TimeDelta::seconds(i * 7_919_311) + TimeDelta::nanoseconds(i * 123_457)),
        );
        for (y, mo, d, h, mi, se, ns) in [
            (0, 1, 1, 0, 0, 0, 0),
            (9999, 12, 31, 23, 59, 59, 999_999_999),
            (10_000, 1, 1, 0, 0, 0, 0),
            (-1, 6, 15, 12, 30, 30, 5_000_000),
            (2026, 6, 30, 23, 59, 59, 1_500_000_000), // a leap second
        ] {
            times.push(
                NaiveDate::from_ymd_opt(y, mo, d)
                    .unwrap()
                    .and_hms_nano_opt(h, mi, se, ns)
                    .unwrap(),
            );
        }
        for t in times {
            assert_eq!(format_time(t), t.format(TIME_FORMAT).to_string(), "{t:?}");
        }
        assert_eq!(
            format_time(
                NaiveDate::from_ymd_opt(2026, 12, 6)
                    .unwrap()
                    .and_hms_milli_opt(3, 4, 5, 67)
                    .unwrap()
            ),
            "2026-12-06T03:04:05.067Z"
        );
    }

    #[test]
    fn url_schemes_select_the_backend() {
        assert_eq!(
            DbUrl::parse("postgres://u@h/db").unwrap().backend,
            Backend::Postgres
        );
        assert_eq!(
            DbUrl::parse("postgresql://u@h/db").unwrap().backend,
            Backend::Postgres
        );
        assert_eq!(DbUrl::parse("sqlite:///tmp/x.db").unwrap().target, "/tmp/x.db");
        assert_eq!(DbUrl::parse("file:x.db").unwrap().target, "x.db");
        assert_eq!(DbUrl::parse("offboard.db").unwrap(), DbUrl::sqlite("offboard.db"));
        assert!(DbUrl::parse("mysql://h/db").unwrap_err().contains("mysql://"));
        assert!(DbUrl::parse("").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        let url = DbUrl::parse("postgres://app:s3cret@db:5432/offboard").unwrap();
        assert_eq!(url.redacted(), "postgres://app:***@db:5432/offboard");
        assert!(!url.redacted().contains("s3cret"));
        let url = DbUrl::parse("postgres://app:p@ss@db/offboard?sslmode=require&Password=s3cret").unwrap();
        assert_eq!(
            url.redacted(),
            "postgres://app:***@db/offboard?sslmode=require&Password=***"
        );
        assert_eq!(
            url_passwords(&url.target),
            vec!["p@ss".to_owned(), "s3cret".to_owned()]
        );
    }

    #[test]
    fn a_driver_error_becomes_one_line() {
        assert_eq!(
            first_line(
                "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  database \"x\" does not exist\n\tHINT: …"
            ),
            "database \"x\" does not exist"
        );
        assert_eq!(first_line("\n  invalid port   number\n"), "invalid port number");
    }

    #[test]
    fn preflight_refuses_a_missing_sqlite_directory_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = preflight(&DbUrl::sqlite(missing.join("x.db").to_str().unwrap())).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!missing.exists());
        preflight(&DbUrl::sqlite(dir.path().join("x.db").to_str().unwrap())).unwrap();
        preflight(&DbUrl::sqlite("relative.db")).unwrap();
        preflight(&DbUrl::sqlite(":memory:")).unwrap();
        assert!(!dir.path().join("x.db").exists());
    }

    #[test]
    fn preflight_lets_a_refused_connection_through_to_the_pool_s_retries() {
        // Nothing listens on port 1: transient (a server still starting), so the pool's timeout applies.
        preflight(&DbUrl::parse("postgres://postgres@127.0.0.1:1/test").unwrap()).unwrap();
    }
}
