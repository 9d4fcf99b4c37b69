//! The two-stage outbox. A change does not write its SETs to the outbox in its own transaction: it writes ONE row
//! to `outbox_changes` ([`record`], from [`super::enqueue`]) holding the events' stored payloads (built once) and
//! the exact receivers decided then, `(stream, events)`, from the streams, their `events_requested` and the
//! exclusions as of the change. The change and the news of it still commit together, and the row is durable, so a
//! process that dies after the commit loses nothing.
//!
//! [`expand`] turns those rows, oldest first, into today's per-stream outbox rows (a fresh `jti` each, `created`
//! and first due time = the change's time, the `outbox_counts` counters kept by the one outbox insert path) and
//! deletes them, in one transaction under the `outbox`/`order` lock the changes were written under, so outbox
//! ids, and with them each stream's delivery order, follow commit order across instances. A stream removed since
//! the change is skipped; one created since was not a receiver and gets nothing. Expanding twice writes nothing
//! twice: the rows it expands are gone when it commits.
//!
//! Everything that reads the outbox expands first: the delivery worker (woken after every change that has a
//! receiver, and on start-up), a poll (so a poll right after a SCIM answer sees its SETs), the stream list with
//! its counts, `/metrics`, verification (so its SET queues behind earlier changes), the offboarding report and
//! `offboard streams show`. With nothing waiting that costs one indexed existence read.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::QueryResult;

use crate::db::models::{NewOutbox, NewOutboxChange, OutboxChangeRow};
use crate::db::{Db, DbConnection, DbError, repo};

/// About the most outbox rows one expansion transaction writes (always at least one whole change), so a backlog
/// never holds the writer for long: 2 000 is one change with 1 000 streams and two events.
pub const EXPAND_ROWS: usize = 2_000;

/// Most waiting changes one expansion transaction reads.
const CHANGES_PER_READ: i64 = 100;

/// Most outbox rows in one insert statement (10 bound values each: under PostgreSQL's 65 535).
const ROWS_PER_INSERT: usize = 1_000;

/// Records one change's SETs to be written to the outbox: `events` are `(event-type URI, stored payload)`,
/// `targets` `(stream id, bit i set when the stream receives events[i])`, in stream order. Inside the change's
/// transaction, which must hold the `outbox`/`order` lock (so ids follow commit order).
pub(crate) fn record(
    conn: &mut DbConnection,
    txn: &str,
    user_id: &str,
    at: NaiveDateTime,
    events: &[(&str, &str)],
    targets: &[(&str, u32)],
) -> QueryResult<()> {
    let events =
        serde_json::to_string(events).map_err(|e| diesel::result::Error::SerializationError(e.into()))?;
    let targets =
        serde_json::to_string(targets).map_err(|e| diesel::result::Error::SerializationError(e.into()))?;
    repo::fanout::insert_change(
        conn,
        &NewOutboxChange {
            txn,
            user_id,
            created: at,
            events: &events,
            targets: &targets,
        },
    )
}

/// Writes every waiting change to the outbox, in transactions of about [`EXPAND_ROWS`] rows; returns the outbox
/// rows written. One existence read when nothing waits.
pub fn expand(db: &Db) -> Result<usize, DbError> {
    let mut written = 0;
    while db.read(|c| repo::fanout::has_changes(c).map_err(DbError::from))? {
        let (rows, changes) = db.write(|c| expand_in(c, EXPAND_ROWS).map_err(DbError::from))?;
        written += rows;
        if changes == 0 {
            break;
        }
    }
    Ok(written)
}

/// Writes every waiting change to the outbox inside the caller's write transaction (before something else is
/// queued there, so it queues behind them); returns the outbox rows written.
pub(crate) fn expand_all_in(conn: &mut DbConnection) -> QueryResult<usize> {
    let mut written = 0;
    loop {
        let (rows, changes) = expand_in(conn, EXPAND_ROWS)?;
        written += rows;
        if changes == 0 {
            return Ok(written);
        }
    }
}

/// Writes the oldest waiting changes to the outbox, whole, until about `budget` rows are written, and deletes
/// them; returns `(outbox rows written, changes expanded)`. Inside the caller's write transaction.
pub(crate) fn expand_in(conn: &mut DbConnection, budget: usize) -> QueryResult<(usize, usize)> {
    // The lock the changes were recorded under: ids taken here follow theirs, and two expanders take turns (the
    // second then finds the rows the first expanded deleted).
    repo::advisory_lock(conn, "outbox", "order")?;
    let changes = repo::fanout::changes(conn, CHANGES_PER_READ)?;
    let Some(first) = changes.first() else {
        return Ok((0, 0));
    };
    let live: HashSet<String> = repo::fanout::stream_ids(conn)?.into_iter().collect();
    let (mut written, mut expanded, mut last) = (0, 0, first.id);
    for change in &changes {
        if expanded > 0 && written >= budget {
            break;
        }
        written += expand_one(conn, change, &live)?;
        expanded += 1;
        last = change.id;
    }
    repo::fanout::delete_changes_through(conn, last)?;
    Ok((written, expanded))
}

/// The outbox rows of one change, on the streams of its receivers that still exist.
fn expand_one(
    conn: &mut DbConnection,
    change: &OutboxChangeRow,
    live: &HashSet<String>,
) -> QueryResult<usize> {
    let events: Vec<(String, String)> = match serde_json::from_str(&change.events) {
        Ok(e) => e,
        Err(e) => return Err(unreadable(change, &e)),
    };
    let targets: Vec<(String, u32)> = match serde_json::from_str(&change.targets) {
        Ok(t) => t,
        Err(e) => return Err(unreadable(change, &e)),
    };
    let wanted: Vec<(&str, &(String, String))> = targets
        .iter()
        .filter(|(stream, _)| live.contains(stream))
        .flat_map(|(stream, mask)| {
            events
                .iter()
                .enumerate()
                .filter(move |(i, _)| u32::try_from(*i).is_ok_and(|i| i < 32 && mask & (1 << i) != 0))
                .map(move |(_, event)| (stream.as_str(), event))
        })
        .collect();
    let jtis: Vec<String> = wanted.iter().map(|_| super::new_jti()).collect();
    let rows: Vec<NewOutbox<'_>> = wanted
        .iter()
        .zip(&jtis)
        .map(|(&(stream_id, (event_type, payload)), jti)| NewOutbox {
            stream_id,
            jti,
            txn: &change.txn,
            event_type,
            user_id: Some(&change.user_id),
            payload,
            status: "pending",
            attempts: 0,
            next_attempt_at: change.created,
            created: change.created,
        })
        .collect();
    let mut n = 0;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        n += repo::fanout::insert_outbox_many(conn, chunk)?;
    }
    Ok(n)
}

/// A waiting change this code cannot read (only this module writes them): expansion stops at it rather than drop
/// its SETs silently, and says which it is.
fn unreadable(change: &OutboxChangeRow, e: &serde_json::Error) -> diesel::result::Error {
    tracing::error!(change.id = change.id, txn = %change.txn, "a waiting fan-out change cannot be read: {e}");
    diesel::result::Error::DeserializationError(format!("outbox change {}: {e}", change.id).into())
}
