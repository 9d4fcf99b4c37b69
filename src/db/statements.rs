//! Counting the statements a piece of work sends to the database, and whether diesel kept each one prepared
//! (docs/decisions/0041-fewer-statements-per-write.md).
//!
//! Every connection the pools open carries a [`Counter`] (diesel's connection instrumentation). It costs
//! nothing worth measuring while nothing records: a thread-local check per statement, and the SQL text of each
//! statement diesel puts into its cache, once per connection. [`record`] turns recording on for the current
//! thread while a closure runs and returns every statement sent meanwhile, on any connection, from this thread.
//! A write use case runs on its caller's thread, including its batch's seal and commit when nobody else is
//! queued behind it (`batch.rs`), so recording around one use case at a time counts all of it. On PostgreSQL each
//! statement is one round trip (diesel sends an uncached one as a single `PQsendQueryParams`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// How a statement reached the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// Found in (or, on its first run, put into) the connection's statement cache: parsed and planned once.
    Cached,
    /// Prepared for this run only and thrown away (diesel never caches an `UPDATE`, raw SQL, an `IN` list of bound
    /// values or an insert whose SQL depends on its values): parsed and planned every time.
    Uncached,
    /// Transaction control sent as text (`BEGIN`, `COMMIT`, `SAVEPOINT`, `RELEASE`, `ROLLBACK`).
    Transaction,
}

/// One statement as recorded: its SQL (without bound values) and how it was prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub prepared: Prepared,
}

/// The statements recorded, in the order they were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded(pub Vec<Statement>);

impl Recorded {
    /// Every statement, transaction control included.
    pub fn total(&self) -> usize {
        self.0.len()
    }

    /// The statements that were prepared for this run only.
    pub fn uncached(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|s| s.prepared == Prepared::Uncached)
            .map(|s| s.sql.as_str())
            .collect()
    }
}

impl fmt::Display for Recorded {
    /// One line per statement: `cached`, `UNCACHED` or `txn`, then the SQL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.0 {
            let how = match s.prepared {
                Prepared::Cached => "cached  ",
                Prepared::Uncached => "UNCACHED",
                Prepared::Transaction => "txn     ",
            };
            writeln!(f, "{how} {}", s.sql)?;
        }
        Ok(())
    }
}

thread_local! {
    /// The statements recorded on this thread, while [`record`] runs.
    static RECORDING: RefCell<Option<Vec<Statement>>> = const { RefCell::new(None) };
}

/// Statements sent by this process on every connection the pools opened, transaction control included.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Statements sent so far by this process (`offboard_db_statements_total`): divided by the requests served in
/// the same time, the statements a request costs (`benches/profile.sh`).
pub fn sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// Runs `f` and returns what it returned with every statement this thread sent meanwhile.
pub fn record<T>(f: impl FnOnce() -> T) -> (T, Recorded) {
    struct Restore(Option<Vec<Statement>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            RECORDING.with(|r| {
                let mut r = r.borrow_mut();
                // A recording inside another one: the outer one sees these statements too.
                let inner = r.take().unwrap_or_default();
                *r = outer.map(|mut o| {
                    o.extend(inner);
                    o
                });
            });
        }
    }
    let restore = Restore(RECORDING.with(|r| r.borrow_mut().replace(Vec::new())));
    let value = f();
    let recorded = RECORDING.with(|r| r.borrow_mut().as_ref().cloned().unwrap_or_default());
    drop(restore);
    (value, Recorded(recorded))
}

fn recording() -> bool {
    RECORDING.with(|r| r.borrow().is_some())
}

/// The SQL of a statement as diesel shows it, without the bound values it appends.
fn sql_of(shown: &str) -> &str {
    shown
        .split_once(" -- binds: ")
        .map_or(shown, |(sql, _)| sql)
        .trim()
}

fn is_transaction_control(sql: &str) -> bool {
    let word = sql.split_whitespace().next().unwrap_or("");
    ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
}

/// The instrumentation of one connection: knows which SQL texts its statement cache holds.
#[derive(Debug, Default)]
pub struct Counter {
    cached: HashSet<String>,
}

impl Instrumentation for Counter {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if matches!(event, InstrumentationEvent::StartQuery { .. }) {
            SENT.fetch_add(1, Ordering::Relaxed);
        }
        match event {
            InstrumentationEvent::CacheQuery { sql, .. } => {
                let sql = sql.trim();
                self.cached.insert(sql.to_owned());
                // Prepared now for the statement being started, and kept.
                RECORDING.with(|r| {
                    if let Some(last) = r.borrow_mut().as_mut().and_then(|v| v.last_mut())
                        && last.sql == sql
                    {
                        last.prepared = Prepared::Cached;
                    }
                });
            }
            InstrumentationEvent::StartQuery { query, .. } if recording() => {
                let shown = query.to_string();
                let sql = sql_of(&shown);
                let prepared = if is_transaction_control(sql) {
                    Prepared::Transaction
                } else if self.cached.contains(sql) {
                    Prepared::Cached
                } else {
                    Prepared::Uncached
                };
                let statement = Statement {
                    sql: sql.to_owned(),
                    prepared,
                };
                RECORDING.with(|r| {
                    if let Some(v) = r.borrow_mut().as_mut() {
                        v.push(statement);
                    }
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_values_are_not_part_of_the_sql() {
        assert_eq!(
            sql_of("SELECT 1 FROM users WHERE id = ? -- binds: [\"x\"]"),
            "SELECT 1 FROM users WHERE id = ?"
        );
        assert_eq!(sql_of("BEGIN IMMEDIATE"), "BEGIN IMMEDIATE");
        assert!(is_transaction_control("SAVEPOINT diesel_savepoint_1"));
        assert!(is_transaction_control("commit"));
        assert!(!is_transaction_control("SELECT 1"));
    }

    #[test]
    fn recordings_nest() {
        let ((), outer) = record(|| {
            RECORDING.with(|r| {
                r.borrow_mut().as_mut().unwrap().push(Statement {
                    sql: "a".into(),
                    prepared: Prepared::Cached,
                });
            });
            let ((), inner) = record(|| {
                RECORDING.with(|r| {
                    r.borrow_mut().as_mut().unwrap().push(Statement {
                        sql: "b".into(),
                        prepared: Prepared::Uncached,
                    });
                });
            });
            assert_eq!(inner.total(), 1);
            assert_eq!(inner.uncached(), ["b"]);
        });
        assert_eq!(outer.total(), 2);
        assert!(!recording());
    }
}
