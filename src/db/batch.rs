//! The batch writer (docs/decisions/0029-batch-writer.md): many write use cases in one transaction, each in a
//! savepoint of its own, each answered only after the one commit.
//!
//! The queue is the writer's lock: a request thread that wants to write waits for it, then runs its own use case
//! on the one open transaction of this instance (so its thread-local audit context, before- and after-commit hooks
//! stay its own), then either leaves the transaction open for the threads queued behind it and waits for the
//! commit, or, when nobody is queued (or the batch is full), seals and commits it for everyone. A use case that
//! fails is rolled back to its savepoint alone (its audit entries were never handed to the batch, its outbox rows
//! go with the savepoint) and gets its own error at once; when the COMMIT fails every member gets the error.
//!
//! The first member of a batch needs no savepoint: nothing else is in the transaction yet, so its failure rolls
//! the whole transaction back, and an uncontended write costs what it cost before batching.
//!
//! Work that must run once per batch, just before the commit, in commit order (the audit chain's seal) is handed
//! over with [`at_batch_commit`]; outside a batch it runs at once.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use diesel::QueryResult;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::PgConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;

use super::{
    DbConnection, DbError, InTransaction, Pool, PooledConn, SQLITE_BUSY_RETRIES, is_sqlite_busy,
    run_before_commit, take_after_commit,
};

/// Seals the items that the members of a batch handed over under one key, in commit order.
pub type Seal = fn(&mut DbConnection, Vec<Box<dyn Any + Send>>) -> QueryResult<()>;

struct Deferred {
    key: &'static str,
    seal: Seal,
    item: Box<dyn Any + Send>,
}

thread_local! {
    /// Whether this thread is running a member of a batch now (a write started inside it goes its own way).
    static IN_MEMBER: Cell<bool> = const { Cell::new(false) };
    /// What the running member handed over, kept back until it has succeeded.
    static STAGED: RefCell<Vec<Deferred>> = const { RefCell::new(Vec::new()) };
}

/// Whether the current thread is inside a member of a batch.
pub(super) fn in_member() -> bool {
    IN_MEMBER.with(Cell::get)
}

/// Hands `item` to `seal`, to run once per batch just before its commit, together with the items of the batch's
/// other members under the same `key`, in the order the members ran. Outside a batch `seal` runs at once. Items
/// of a member that fails are dropped with it.
pub fn at_batch_commit(
    conn: &mut DbConnection,
    key: &'static str,
    seal: Seal,
    item: Box<dyn Any + Send>,
) -> QueryResult<()> {
    if in_member() {
        STAGED.with(|s| s.borrow_mut().push(Deferred { key, seal, item }));
        Ok(())
    } else {
        seal(conn, vec![item])
    }
}

/// How a batch ended, for the members waiting on it.
#[derive(Default)]
struct Done {
    outcome: Mutex<Option<Result<(), String>>>,
    cv: Condvar,
}

impl Done {
    fn set(&self, outcome: Result<(), String>) {
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        self.cv.notify_all();
    }

    fn wait(&self) -> Result<(), String> {
        let mut o = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = o.as_ref() {
                return r.clone();
            }
            o = self.cv.wait(o).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

struct Open {
    conn: PooledConn,
    /// Members that succeeded so far.
    members: usize,
    /// Whether anything ran in the transaction yet (the first member runs without a savepoint).
    used: bool,
    deferred: Vec<Deferred>,
    done: Arc<Done>,
}

/// One per [`super::Db`] with batching on: the open transaction and the queue in front of it.
pub(super) struct Batcher {
    open: Mutex<Option<Open>>,
    /// Threads waiting for `open`'s lock: while there are any, a finished member leaves the batch open for them.
    queued: AtomicUsize,
    max_members: usize,
    /// Batches committed, and the members they held.
    batches: AtomicU64,
    members: AtomicU64,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("max_members", &self.max_members)
            .finish_non_exhaustive()
    }
}

fn begin(conn: &mut DbConnection) -> QueryResult<()> {
    match conn {
        DbConnection::Postgres(c) => AnsiTransactionManager::begin_transaction(c),
        // docs/decisions/0008-sqlite-write-transactions.md
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
    }
}

/// A savepoint when the connection is in a transaction already (diesel keeps the depth).
fn savepoint(conn: &mut DbConnection) -> QueryResult<()> {
    match conn {
        DbConnection::Postgres(c) => AnsiTransactionManager::begin_transaction(c),
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction(c),
    }
}

/// Commits the transaction, or releases the innermost savepoint.
fn commit(conn: &mut DbConnection) -> QueryResult<()> {
    match conn {
        DbConnection::Postgres(c) => {
            <AnsiTransactionManager as TransactionManager<PgConnection>>::commit_transaction(c)
        }
        DbConnection::Sqlite(c) => {
            <AnsiTransactionManager as TransactionManager<SqliteConnection>>::commit_transaction(c)
        }
    }
}

/// Rolls back the transaction, or to the innermost savepoint.
fn rollback(conn: &mut DbConnection) -> QueryResult<()> {
    match conn {
        DbConnection::Postgres(c) => {
            <AnsiTransactionManager as TransactionManager<PgConnection>>::rollback_transaction(c)
        }
        DbConnection::Sqlite(c) => {
            <AnsiTransactionManager as TransactionManager<SqliteConnection>>::rollback_transaction(c)
        }
    }
}

/// The error each member of a batch whose commit failed gets (diesel's errors are not `Clone`).
fn commit_failed(message: &str) -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::Unknown,
        Box::new(format!("the batch commit failed: {message}")),
    )
}

/// A key, its seal and the items handed to it.
type Group = (&'static str, Seal, Vec<Box<dyn Any + Send>>);

/// Seals the batch's deferred work, grouped by key in first-use order, each group in member order.
fn seal_all(conn: &mut DbConnection, deferred: Vec<Deferred>) -> QueryResult<()> {
    let mut groups: Vec<Group> = Vec::new();
    for d in deferred {
        match groups.iter_mut().find(|(k, _, _)| *k == d.key) {
            Some((_, _, items)) => items.push(d.item),
            None => groups.push((d.key, d.seal, vec![d.item])),
        }
    }
    for (_, seal, items) in groups {
        seal(conn, items)?;
    }
    Ok(())
}

/// Marks the thread as running a member until dropped (also on panic), dropping anything it staged.
struct Member;

impl Member {
    fn enter() -> Self {
        IN_MEMBER.with(|m| m.set(true));
        STAGED.with(|s| s.borrow_mut().clear());
        Self
    }

    fn take_staged() -> Vec<Deferred> {
        STAGED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        IN_MEMBER.with(|m| m.set(false));
        STAGED.with(|s| s.borrow_mut().clear());
    }
}

/// Marks the thread as outside any batch member until dropped: a write on its own transaction, possibly nested
/// inside a member (its deferred work must not join the member's).
pub(super) struct Outside(bool);

impl Outside {
    pub(super) fn enter() -> Self {
        Self(IN_MEMBER.with(|m| m.replace(false)))
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        IN_MEMBER.with(|m| m.set(self.0));
    }
}

/// Runs `f` as a member of `open`: its own serial and hooks, a savepoint unless it is `first`. On success its
/// deferred work joins the batch; on failure (or panic) its savepoint is rolled back (the caller rolls back a
/// failed first member's whole transaction).
fn run_member<T, E>(
    open: &mut Open,
    first: bool,
    f: &mut impl FnMut(&mut DbConnection) -> Result<T, E>,
) -> std::thread::Result<Result<T, E>>
where
    E: From<DieselError>,
{
    let _member = Member::enter();
    let _tx = InTransaction::begin();
    let ran = catch_unwind(AssertUnwindSafe(|| {
        if !first {
            savepoint(&mut open.conn).map_err(E::from)?;
        }
        let outcome =
            f(&mut open.conn).and_then(|v| run_before_commit(&mut open.conn).map(|()| v).map_err(E::from));
        match outcome {
            Ok(v) if first => Ok(v),
            Ok(v) => commit(&mut open.conn).map(|()| v).map_err(E::from),
            Err(e) => {
                if !first && let Err(rb) = rollback(&mut open.conn) {
                    tracing::error!("rolling back to a member's savepoint failed: {rb}");
                }
                Err(e)
            }
        }
    }));
    if matches!(ran, Ok(Ok(_))) {
        open.deferred.extend(Member::take_staged());
    } else if !first && ran.is_err() {
        // A panic inside the savepoint: undo it like a failure.
        let _ = rollback(&mut open.conn);
    }
    ran
}

impl Batcher {
    pub(super) fn new(max_members: usize) -> Self {
        Self {
            open: Mutex::new(None),
            queued: AtomicUsize::new(0),
            max_members: max_members.max(1),
            batches: AtomicU64::new(0),
            members: AtomicU64::new(0),
        }
    }

    /// Writes waiting now for their turn in the open transaction.
    pub(super) fn waiting(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Batches committed so far, and the write use cases they held.
    pub(super) fn stats(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.members.load(Ordering::Relaxed),
        )
    }

    /// Runs `f` as one member of the open batch (opening one if needed) and answers after the batch commits.
    pub(super) fn write<T, E>(
        &self,
        pool: &Pool,
        f: &mut impl FnMut(&mut DbConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError> + From<DieselError>,
    {
        drop(take_after_commit());
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if guard.is_none() {
            match Self::open_batch(pool) {
                Ok(open) => *guard = Some(open),
                Err(e) => return Err(e.into()),
            }
        }
        let Some(open) = guard.as_mut() else {
            unreachable!("opened above")
        };
        let first = !open.used;
        open.used = true;

        let ran = run_member(open, first, f);
        let hooks = take_after_commit();
        let succeeded = matches!(ran, Ok(Ok(_)));
        if succeeded {
            open.members += 1;
        }

        // A failed first member leaves nothing worth keeping: the whole transaction goes.
        if first && !succeeded {
            if let Err(rb) = rollback(&mut open.conn) {
                tracing::error!("rolling back a failed write failed: {rb}");
            }
            *guard = None;
            drop(guard);
            return match ran {
                Ok(r) => r,
                Err(panic) => resume_unwind(panic),
            };
        }

        let keep_open = self.queued.load(Ordering::SeqCst) > 0 && open.members < self.max_members;
        let outcome = if keep_open {
            let done = open.done.clone();
            drop(guard);
            if !succeeded {
                // Nothing of this member is in the batch: answer now.
                return match ran {
                    Ok(r) => r,
                    Err(panic) => resume_unwind(panic),
                };
            }
            done.wait()
        } else {
            let Some(open) = guard.take() else {
                unreachable!("taken only here")
            };
            drop(guard);
            let members = open.members as u64;
            let outcome = Self::commit_batch(open);
            if outcome.is_ok() {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.members.fetch_add(members, Ordering::Relaxed);
            }
            if !succeeded {
                return match ran {
                    Ok(r) => r,
                    Err(panic) => resume_unwind(panic),
                };
            }
            outcome
        };
        let v = match ran {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(e),
            Err(panic) => resume_unwind(panic),
        };
        match outcome {
            Ok(()) => {
                for hook in hooks {
                    hook();
                }
                Ok(v)
            }
            Err(message) => Err(E::from(commit_failed(&message))),
        }
    }

    /// A connection with a transaction begun; retried while another process (the CLI) holds SQLite's lock.
    fn open_batch(pool: &Pool) -> Result<Open, DbError> {
        let mut conn = pool.get()?;
        let mut attempt = 0;
        loop {
            match begin(&mut conn) {
                Ok(()) => break,
                Err(e) if is_sqlite_busy(&e) && attempt < SQLITE_BUSY_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, "SQLite busy, retrying the batch's BEGIN: {e}");
                    std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Open {
            conn,
            members: 0,
            used: false,
            deferred: Vec::new(),
            done: Arc::new(Done::default()),
        })
    }

    /// Seals and commits `open`, then tells every member waiting on it.
    fn commit_batch(mut open: Open) -> Result<(), String> {
        let deferred = std::mem::take(&mut open.deferred);
        let result = seal_all(&mut open.conn, deferred).and_then(|()| commit(&mut open.conn));
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(members = open.members, "a batch of writes failed to commit: {e}");
                if let Err(rb) = rollback(&mut open.conn) {
                    tracing::error!("rolling back the failed batch failed: {rb}");
                }
                Err(e.to_string())
            }
        };
        open.done.set(outcome.clone());
        outcome
    }
}
