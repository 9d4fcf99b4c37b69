//! Revocation and credential state in memory, never stale.
//!
//! What introspection and credential authentication read on every request (the caller's credential, the
//! token's user generation and status, revoked `jti`s and `sid`s, compromised keys) is kept in memory, and the
//! promise is that nothing revoked is accepted once the transaction that revoked it has committed, whoever
//! committed it:
//!
//! - **This process.** Every write of that state calls [`changed`] inside its transaction, which bumps a
//!   process-wide epoch right after the commit, before the writer answers. Entries carry the epoch they were
//!   loaded under and are served only while it is current, and a reader that loaded under an older epoch cannot
//!   install what it read (load, then check the epoch): so an entry never outlives a commit that may change it.
//! - **Other processes on SQLite** (the CLI, a second server on the same file). Before serving from memory the
//!   cache reads `PRAGMA data_version` on a connection of its own, whose value changes whenever another
//!   connection commits; any change bumps the epoch. Any commit at all empties the cache, which keeps it simple:
//!   revocations are rare, and a busy write load only turns the cache into the database read it saves.
//! - **Other instances on PostgreSQL** (and the CLI). [`changed`] also sends `NOTIFY offboard_state` in the
//!   same transaction (PostgreSQL delivers it only if the transaction commits); a thread with its own
//!   connection `LISTEN`s and bumps the epoch on each notification. The window between a commit returning in
//!   another process and this one knowing is that delivery plus up to one [`LISTEN_POLL`] (measured in the
//!   README); the writer closes it in practice by answering only once its own listener has taken the
//!   notification, and as long again (see [`grace`]).
//!
//! Fail closed: memory is used only while the watcher is confirmed live. Until the listener has `LISTEN`ed
//! (at start, after a reconnect), once it sees an error, or when the SQLite connection fails, every read goes
//! to the database; coming back bumps the epoch, so nothing loaded before is served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::sqlite::SqliteConnection;
use sha2::{Digest, Sha256};

use crate::db::{Backend, Db, DbConnection};

/// The PostgreSQL channel that tells every instance its cached state may be stale.
pub const CHANNEL: &str = "offboard_state";

/// How often the listener reads its connection for notifications (diesel's iterator does not block).
pub const LISTEN_POLL: Duration = Duration::from_millis(1);

/// How often the listener proves its connection alive with a round trip (a dropped connection with nothing to
/// read shows only then).
const LISTEN_PING: Duration = Duration::from_millis(500);

/// How long the listener waits before connecting again after an error (memory is not used meanwhile).
const RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// How recent the listener's last finished read must be for memory to be used (µs): a few polls.
const LISTEN_FRESH_US: u64 = 3_000;

/// Microseconds since the first call in this process (a monotonic clock cheap to store in an atomic).
fn clock() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

static EPOCH: AtomicU64 = AtomicU64::new(1);

/// The process-wide epoch: cached state is valid only under the epoch it was loaded in.
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

/// Makes everything cached so far stale, in every cache of this process.
pub fn invalidate() {
    EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// Declares that the current write changes state that introspection or authentication read: the caches of this
/// process are invalidated once it commits (at once when there is no transaction), and on PostgreSQL every other
/// process is told by a `NOTIFY` that commits with it. Called by `repo` right after such a statement.
pub fn changed(conn: &mut DbConnection) -> QueryResult<()> {
    if crate::db::transaction_depth() == 0 {
        invalidate();
    } else {
        crate::db::after_commit(invalidate);
    }
    if matches!(conn, DbConnection::Postgres(_)) {
        // Within a transaction, PostgreSQL folds repeated notifications into one. `pg_notify`, the function form
        // of `NOTIFY`, keeps the statement prepared (docs/decisions/0041-fewer-statements-per-write.md).
        crate::db::repo::fanout::notify(conn, CHANNEL)?;
        if let Some(serial) = crate::db::transaction_serial() {
            let seen = received();
            crate::db::after_commit(move || grace(serial, seen));
        }
    }
    Ok(())
}

/// How long a writer on PostgreSQL waits after its commit when this process has no live listener (the CLI):
/// far above the delivery of a notification (see the README), and nothing for a command typed by a person.
pub const CLI_GRACE: Duration = Duration::from_millis(250);

/// The longest a writer waits for its own listener.
const MAX_GRACE: Duration = Duration::from_millis(200);

thread_local! {
    /// The write transaction whose grace this thread has waited out.
    static GRACED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Notifications taken by the live listeners of this process, and how many listeners are live.
static RECEIVED: (Mutex<u64>, std::sync::Condvar) = (Mutex::new(0), std::sync::Condvar::new());
static LIVE_LISTENERS: AtomicU64 = AtomicU64::new(0);

fn received() -> u64 {
    RECEIVED.0.lock().map_or(0, |n| *n)
}

fn note_received() {
    if let Ok(mut n) = RECEIVED.0.lock() {
        *n += 1;
    }
    RECEIVED.1.notify_all();
}

/// After a commit that changed state on PostgreSQL, before the writer answers: waits until the other processes
/// have most likely taken the notification, once per write transaction. PostgreSQL signals every listener at
/// the same moment, so with a live listener of its own the writer waits for that one to take a notification
/// sent after `seen`, then as long again plus one poll; without one (the CLI) it waits [`CLI_GRACE`]. Revocations
/// are rare; this is their only cost.
fn grace(serial: u64, seen: u64) {
    if GRACED.with(|g| g.replace(Some(serial))) == Some(serial) {
        return;
    }
    if LIVE_LISTENERS.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(CLI_GRACE);
        return;
    }
    let started = Instant::now();
    if let Ok(guard) = RECEIVED.0.lock() {
        drop(RECEIVED.1.wait_timeout_while(guard, MAX_GRACE, |n| *n <= seen));
    }
    std::thread::sleep(started.elapsed() + LISTEN_POLL);
}

/// A cache key: SHA-256 of the parts, each length-prefixed.
pub fn key(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Entries loaded under one epoch.
struct Memo<V> {
    epoch: u64,
    entries: HashMap<[u8; 32], V>,
}

impl<V: Clone> Memo<V> {
    fn new() -> Self {
        Self {
            epoch: 0,
            entries: HashMap::new(),
        }
    }

    /// Moves to `at` if it is newer; whether the entries are those of `at`.
    fn at(&mut self, at: u64) -> bool {
        if at > self.epoch {
            self.entries.clear();
            self.epoch = at;
        }
        self.epoch == at
    }
}

/// A cache of `V` by key, valid under one epoch.
struct Table<V> {
    capacity: usize,
    memo: Mutex<Memo<V>>,
}

impl<V: Clone> Table<V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            memo: Mutex::new(Memo::new()),
        }
    }

    fn get(&self, at: u64, key: &[u8; 32]) -> Option<V> {
        let mut memo = self.memo.lock().ok()?;
        if !memo.at(at) {
            return None;
        }
        memo.entries.get(key).cloned()
    }

    fn put(&self, at: u64, key: [u8; 32], value: V) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut memo) = self.memo.lock() else { return };
        // Loaded before a commit that may have changed it: not installed.
        if epoch() != at || !memo.at(at) {
            return;
        }
        if memo.entries.len() >= self.capacity {
            memo.entries.clear();
        }
        memo.entries.insert(key, value);
    }
}

/// What tells this process that another one committed.
enum Watch {
    /// Not watching (the CLI, a cache turned off): memory is never used.
    Off,
    Sqlite(Mutex<SqliteWatch>),
    Postgres(Arc<PgWatch>),
}

struct SqliteWatch {
    path: String,
    conn: Option<SqliteConnection>,
    seen: Option<i64>,
}

/// `PRAGMA data_version` as a statement whose shape diesel knows at compile time, so the watch connection keeps it
/// prepared (a `sql_query` is parsed again on every call, and this runs on every use of the state).
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
struct DataVersion;

impl diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite> for DataVersion {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        out.push_sql("PRAGMA data_version");
        Ok(())
    }
}

impl diesel::query_builder::Query for DataVersion {
    type SqlType = BigInt;
}

impl RunQueryDsl<SqliteConnection> for DataVersion {}

impl SqliteWatch {
    /// The current epoch after looking for commits of other connections, or None when that cannot be known.
    fn check(&mut self) -> Option<u64> {
        if self.conn.is_none() {
            let mut conn = SqliteConnection::establish(&self.path).ok()?;
            diesel::sql_query("PRAGMA busy_timeout = 100")
                .execute(&mut conn)
                .ok()?;
            self.conn = Some(conn);
            self.seen = None;
        }
        let conn = self.conn.as_mut()?;
        match DataVersion.get_result::<i64>(conn) {
            Ok(v) => {
                if self.seen != Some(v) {
                    invalidate();
                    self.seen = Some(v);
                }
                Some(epoch())
            }
            Err(e) => {
                tracing::warn!("state cache: cannot read the SQLite data version, reading the database: {e}");
                self.conn = None;
                invalidate();
                None
            }
        }
    }
}

/// The PostgreSQL listener's state, shared with its thread.
#[derive(Default)]
pub struct PgWatch {
    live: AtomicBool,
    /// When the listener last began a read of its connection that it has finished (µs since [`clock`]'s start):
    /// memory is used only while this is recent, so a listener thread that is not scheduled (a busy machine)
    /// cannot leave memory in use while notifications wait on its socket.
    drained_at: AtomicU64,
    stop: AtomicBool,
    /// Notifications received (for tests and the window measurement).
    received: AtomicU64,
    /// The listener's backend pid while connected (for tests that terminate it).
    backend_pid: AtomicU64,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

fn listen(url: &str, watch: &PgWatch) {
    while !watch.stop.load(Ordering::SeqCst) {
        match listen_once(url, watch) {
            Ok(()) => {}
            Err(e) => tracing::warn!("state cache listener: {e}; reading the database until it is back"),
        }
        watch.live.store(false, Ordering::SeqCst);
        watch.backend_pid.store(0, Ordering::SeqCst);
        invalidate();
        if !watch.stop.load(Ordering::SeqCst) {
            std::thread::sleep(RECONNECT_DELAY);
        }
    }
}

fn listen_once(url: &str, watch: &PgWatch) -> Result<(), String> {
    let mut conn = diesel::pg::PgConnection::establish(url).map_err(|e| format!("cannot connect: {e}"))?;
    diesel::sql_query(format!("LISTEN {CHANNEL}"))
        .execute(&mut conn)
        .map_err(|e| format!("cannot LISTEN: {e}"))?;
    let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .map_err(|e| format!("cannot read its backend pid: {e}"))?;
    watch
        .backend_pid
        .store(u64::try_from(pid.pid).unwrap_or(0), Ordering::SeqCst);
    // Anything committed before the LISTEN took effect was not announced to this process: start afresh.
    invalidate();
    watch.live.store(true, Ordering::SeqCst);
    let _counted = Counted::new(&LIVE_LISTENERS);
    let mut pinged = Instant::now();
    while !watch.stop.load(Ordering::SeqCst) {
        let began = clock();
        let mut woke = 0;
        for n in conn.notifications_iter() {
            match n {
                Ok(_) => woke += 1,
                Err(e) => {
                    watch.live.store(false, Ordering::SeqCst);
                    return Err(format!("lost its connection: {e}"));
                }
            }
        }
        if woke > 0 {
            invalidate();
            watch.received.fetch_add(woke, Ordering::SeqCst);
            note_received();
        }
        watch.drained_at.store(began, Ordering::SeqCst);
        if pinged.elapsed() >= LISTEN_PING {
            if let Err(e) = diesel::connection::SimpleConnection::batch_execute(&mut conn, "SELECT 1") {
                watch.live.store(false, Ordering::SeqCst);
                return Err(format!("lost its connection: {e}"));
            }
            pinged = Instant::now();
        }
        std::thread::sleep(LISTEN_POLL);
    }
    Ok(())
}

/// Counts a live listener while it exists.
struct Counted(&'static AtomicU64);

impl Counted {
    fn new(counter: &'static AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The in-memory state of one server instance (see the module doc).
pub struct StateCache {
    watch: Watch,
    listener: Mutex<Option<std::thread::JoinHandle<()>>>,
    introspection: Table<crate::db::repo::tokens::IntrospectionState>,
    credentials: Table<crate::db::models::Credential>,
}

impl std::fmt::Debug for StateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache").finish_non_exhaustive()
    }
}

impl StateCache {
    /// A cache that is never used (the CLI).
    pub fn off() -> Self {
        Self {
            watch: Watch::Off,
            listener: Mutex::new(None),
            introspection: Table::new(0),
            credentials: Table::new(0),
        }
    }

    /// A cache of up to `capacity` entries of each kind, watching `db` for commits of other processes. On
    /// PostgreSQL this starts the listener thread (stopped when the cache is dropped); memory is used from the
    /// moment it listens.
    pub fn watching(db: &Db, capacity: usize) -> std::io::Result<Self> {
        if capacity == 0 {
            return Ok(Self::off());
        }
        let (watch, listener) = match db.backend() {
            Backend::Sqlite => (
                Watch::Sqlite(Mutex::new(SqliteWatch {
                    path: db.url().target.clone(),
                    conn: None,
                    seen: None,
                })),
                None,
            ),
            Backend::Postgres => {
                let shared = Arc::new(PgWatch::default());
                let (url, w) = (db.url().target.clone(), shared.clone());
                let handle = std::thread::Builder::new()
                    .name("offboard-state-listen".into())
                    .spawn(move || listen(&url, &w))?;
                (Watch::Postgres(shared), Some(handle))
            }
        };
        Ok(Self {
            watch,
            listener: Mutex::new(listener),
            introspection: Table::new(capacity),
            credentials: Table::new(capacity),
        })
    }

    /// The epoch to read and install under, or None when memory must not be used now (fail closed).
    pub fn current(&self) -> Option<u64> {
        match &self.watch {
            Watch::Off => None,
            Watch::Sqlite(w) => w.lock().ok()?.check(),
            Watch::Postgres(w) => {
                let fresh = clock().saturating_sub(w.drained_at.load(Ordering::SeqCst)) < LISTEN_FRESH_US;
                (w.live.load(Ordering::SeqCst) && fresh).then(epoch)
            }
        }
    }

    /// Whether memory is in use now (the PostgreSQL listener is live, the SQLite watch works).
    pub fn is_live(&self) -> bool {
        self.current().is_some()
    }

    /// PostgreSQL: the backend pid of the listener's connection while it is connected (tests terminate it).
    pub fn listener_pid(&self) -> Option<i32> {
        match &self.watch {
            Watch::Postgres(w) => i32::try_from(w.backend_pid.load(Ordering::SeqCst))
                .ok()
                .filter(|p| *p != 0),
            _ => None,
        }
    }

    /// PostgreSQL: notifications the listener has received.
    pub fn notifications(&self) -> u64 {
        match &self.watch {
            Watch::Postgres(w) => w.received.load(Ordering::SeqCst),
            _ => 0,
        }
    }

    pub fn introspection(
        &self,
        at: u64,
        key: &[u8; 32],
    ) -> Option<crate::db::repo::tokens::IntrospectionState> {
        self.introspection.get(at, key)
    }

    pub fn put_introspection(
        &self,
        at: u64,
        key: [u8; 32],
        state: crate::db::repo::tokens::IntrospectionState,
    ) {
        self.introspection.put(at, key, state);
    }

    /// The credential row a presented credential names (by secret hash or by name), from memory when it is
    /// current, else from the database (and remembered). Only rows that exist are remembered.
    pub fn credential(
        &self,
        db: &Db,
        by: CredentialKey<'_>,
    ) -> Result<Option<crate::db::models::Credential>, crate::db::DbError> {
        let at = self.current();
        let key = match by {
            CredentialKey::Hash(h) => key(&[b"hash", h.as_bytes()]),
            CredentialKey::Name(n) => key(&[b"name", n.as_bytes()]),
        };
        if let Some(at) = at
            && let Some(row) = self.credentials.get(at, &key)
        {
            return Ok(Some(row));
        }
        let row = db.read(|c| {
            match by {
                CredentialKey::Hash(h) => crate::db::repo::credentials::find_by_hash(c, h),
                CredentialKey::Name(n) => crate::db::repo::credentials::find_by_name(c, n),
            }
            .map_err(crate::db::DbError::from)
        })?;
        if let (Some(at), Some(row)) = (at, &row) {
            self.credentials.put(at, key, row.clone());
        }
        Ok(row)
    }
}

/// How a presented credential is looked up.
#[derive(Debug, Clone, Copy)]
pub enum CredentialKey<'a> {
    Hash(&'a str),
    Name(&'a str),
}

impl Drop for StateCache {
    fn drop(&mut self) {
        if let Watch::Postgres(w) = &self.watch {
            w.stop.store(true, Ordering::SeqCst);
        }
        if let Some(handle) = self.listener.get_mut().ok().and_then(Option::take) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_makes_earlier_loads_unservable() {
        let table = Table::<u32>::new(10);
        let k = key(&[b"a"]);
        // Other tests of this process may commit meanwhile (which only refuses the entry): try until one sticks.
        let at = (0..100)
            .map(|_| epoch())
            .find(|at| {
                table.put(*at, k, 1);
                table.get(*at, &k) == Some(1)
            })
            .expect("an entry installed");
        // A commit between a load and its installation: what was read is not installed.
        let loaded_at = epoch();
        invalidate();
        table.put(loaded_at, key(&[b"b"]), 2);
        let now = epoch();
        assert_eq!(table.get(now, &key(&[b"b"])), None);
        // And nothing from before the commit is served under the new epoch.
        assert_eq!(table.get(now, &k), None);
        // A reader still holding the old epoch does not bring old entries back.
        assert_eq!(table.get(at, &k), None);
    }

    #[test]
    fn the_table_is_bounded_and_can_be_off() {
        let table = Table::<u32>::new(2);
        let at = epoch();
        for i in 0u8..5 {
            table.put(at, key(&[&[i]]), u32::from(i));
        }
        let held = table.memo.lock().unwrap().entries.len();
        // Another test may move the epoch meanwhile, which only empties the table.
        assert!(held <= 2);
        let off = Table::<u32>::new(0);
        off.put(at, key(&[b"x"]), 1);
        assert_eq!(off.get(at, &key(&[b"x"])), None);
        assert_eq!(StateCache::off().current(), None);
    }

    #[test]
    fn the_sqlite_watch_sees_another_connections_commit() {
        use diesel::connection::SimpleConnection;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watch.db").to_string_lossy().into_owned();
        let mut other = SqliteConnection::establish(&path).unwrap();
        other.batch_execute("CREATE TABLE t (x INTEGER)").unwrap();
        let mut watch = SqliteWatch {
            path,
            conn: None,
            seen: None,
        };
        watch.check().expect("the watch reads the data version");
        let seen = watch.seen;
        // Nothing committed since: the prepared statement answers the same version again.
        watch.check().unwrap();
        assert_eq!(watch.seen, seen);
        other.batch_execute("INSERT INTO t VALUES (1)").unwrap();
        let before = epoch();
        watch.check().unwrap();
        assert_ne!(
            watch.seen, seen,
            "another connection's commit changes the version"
        );
        assert!(epoch() > before, "and makes everything cached stale");
    }

    #[test]
    #[ignore = "a measurement, not a test: cargo test --release --lib data_version_cost -- --ignored --nocapture"]
    fn data_version_cost() {
        #[derive(QueryableByName)]
        struct Dv {
            #[diesel(sql_type = BigInt)]
            data_version: i64,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cost.db").to_string_lossy().into_owned();
        let mut watch = SqliteWatch {
            path,
            conn: None,
            seen: None,
        };
        watch.check().unwrap();
        let n = 200_000u32;
        let started = Instant::now();
        for _ in 0..n {
            watch.check().unwrap();
        }
        println!(
            "prepared PRAGMA data_version: {:?} per check",
            started.elapsed() / n
        );
        let conn = watch.conn.as_mut().unwrap();
        let started = Instant::now();
        for _ in 0..n {
            let v = diesel::sql_query("PRAGMA data_version")
                .get_result::<Dv>(conn)
                .unwrap();
            assert!(v.data_version > 0);
        }
        println!(
            "sql_query PRAGMA data_version: {:?} per check",
            started.elapsed() / n
        );
    }

    #[test]
    fn keys_do_not_collide_on_concatenation() {
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
    }
}
