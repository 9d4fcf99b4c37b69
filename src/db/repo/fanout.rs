//! SQL for SSF streams and the outbox of SETs. Claiming work is the one dialect difference: PostgreSQL takes
//! `FOR UPDATE SKIP LOCKED` so several instances never claim the same row; SQLite has one writer already.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamp};

use super::fixed::Param;
use crate::db::DbConnection;
use crate::db::models::{NewOutbox, NewOutboxChange, OutboxChangeRow, OutboxRow, StreamRow};
use crate::db::schema::{outbox, outbox_changes, outbox_counts, stream_exclusions, streams};

pub fn insert_stream(conn: &mut DbConnection, row: &StreamRow) -> QueryResult<()> {
    diesel::insert_into(streams::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn streams(conn: &mut DbConnection) -> QueryResult<Vec<StreamRow>> {
    streams::table
        .order((streams::created.asc(), streams::id.asc()))
        .select(StreamRow::as_select())
        .load(conn)
}

pub fn find_stream(conn: &mut DbConnection, id: &str) -> QueryResult<Option<StreamRow>> {
    streams::table
        .filter(streams::id.eq(id))
        .select(StreamRow::as_select())
        .load(conn)
        .map(super::unique)
}

/// One page of streams in id order: those `owner` created (every stream when `None`), after the id `after`.
/// Reads the `streams_owner` index (or the primary key), never the outbox.
pub fn streams_page(
    conn: &mut DbConnection,
    owner: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<StreamRow>> {
    let mut q = streams::table.select(StreamRow::as_select()).into_boxed();
    if let Some(owner) = owner {
        q = q.filter(streams::created_by.eq(owner.to_owned()));
    }
    if let Some(after) = after {
        q = q.filter(streams::id.gt(after.to_owned()));
    }
    q.order(streams::id.asc()).limit(limit).load(conn)
}

/// How many streams exist, or how many `owner` created.
pub fn count_streams(conn: &mut DbConnection, owner: Option<&str>) -> QueryResult<i64> {
    let mut q = streams::table.count().into_boxed();
    if let Some(owner) = owner {
        q = q.filter(streams::created_by.eq(owner.to_owned()));
    }
    q.get_result(conn)
}

/// The outbox counts of every stream, `(stream, state, count)`, from the counters the outbox triggers (and, for
/// inserts on SQLite, [`insert_outbox_many`]) keep (one row per stream and state: `queued`, `retrying`,
/// `delivered`, `dead`), never from the outbox itself.
pub fn outbox_counts(conn: &mut DbConnection) -> QueryResult<Vec<(String, String, i64)>> {
    outbox_counts::table
        .filter(outbox_counts::n.ne(0))
        .select((outbox_counts::stream_id, outbox_counts::state, outbox_counts::n))
        .load(conn)
}

/// The id of a stream's oldest pending SET, if any (the `outbox_stream_pending` index).
pub fn oldest_pending(conn: &mut DbConnection, stream_id: &str) -> QueryResult<Option<i64>> {
    outbox::table
        .filter(outbox::stream_id.eq(stream_id))
        .filter(outbox::status.eq("pending"))
        .select(diesel::dsl::min(outbox::id))
        .get_result(conn)
}

/// How many of a stream's SETs are dead-lettered, from the `outbox_counts` counters.
pub fn dead_count(conn: &mut DbConnection, stream_id: &str) -> QueryResult<i64> {
    outbox_counts::table
        .filter(outbox_counts::stream_id.eq(stream_id))
        .filter(outbox_counts::state.eq("dead"))
        .select(outbox_counts::n)
        .first::<i64>(conn)
        .optional()
        .map(Option::unwrap_or_default)
}

/// Deletes up to `limit` settled (delivered or dead-lettered) SETs of one stream queued before `before`; returns
/// how many. Reads the `outbox_settled` index.
pub fn prune_settled(
    conn: &mut DbConnection,
    stream_id: &str,
    before: NaiveDateTime,
    limit: i64,
) -> QueryResult<usize> {
    const SQL: &str = "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE stream_id = {1} \
                       AND status <> 'pending' AND created < {2} ORDER BY created LIMIT {3})";
    match conn {
        DbConnection::Postgres(c) => {
            diesel::sql_query(SQL.replace("{1}", "$1").replace("{2}", "$2").replace("{3}", "$3"))
                .bind::<diesel::sql_types::Text, _>(stream_id)
                .bind::<Timestamp, _>(before)
                .bind::<BigInt, _>(limit)
                .execute(c)
        }
        DbConnection::Sqlite(c) => {
            diesel::sql_query(SQL.replace("{1}", "?").replace("{2}", "?").replace("{3}", "?"))
                .bind::<diesel::sql_types::Text, _>(stream_id)
                .bind::<Timestamp, _>(before)
                .bind::<BigInt, _>(limit)
                .execute(c)
        }
    }
}

/// Streams that receive events now or later: `enabled`, and `paused` ones (which hold them).
pub fn receiving_streams(conn: &mut DbConnection) -> QueryResult<Vec<StreamRow>> {
    // Two comparisons, not `eq_any`: an `IN` list of bound values is prepared again on every call
    // (docs/decisions/0041-fewer-statements-per-write.md).
    streams::table
        .filter(streams::status.eq("enabled").or(streams::status.eq("paused")))
        .order(streams::id.asc())
        .select(StreamRow::as_select())
        .load(conn)
}

pub fn delete_stream(conn: &mut DbConnection, id: &str) -> QueryResult<usize> {
    diesel::delete(outbox::table.filter(outbox::stream_id.eq(id))).execute(conn)?;
    diesel::delete(streams::table.filter(streams::id.eq(id))).execute(conn)
}

pub fn set_status(
    conn: &mut DbConnection,
    id: &str,
    status: &str,
    reason: Option<&str>,
    at: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(streams::table.filter(streams::id.eq(id)))
        .set((
            streams::status.eq(status),
            streams::status_reason.eq(reason),
            streams::updated.eq(at),
        ))
        .execute(conn)
}

/// Replaces a stream's receiver-supplied settings.
pub fn update_stream(conn: &mut DbConnection, row: &StreamRow) -> QueryResult<usize> {
    diesel::update(streams::table.filter(streams::id.eq(&row.id)))
        .set((
            streams::endpoint_url.eq(&row.endpoint_url),
            streams::authorization_header.eq(&row.authorization_header),
            streams::events_requested.eq(&row.events_requested),
            streams::description.eq(&row.description),
            streams::updated.eq(row.updated),
        ))
        .execute(conn)
}

/// The streams that excluded this user.
pub fn excluding(conn: &mut DbConnection, user_id: &str) -> QueryResult<Vec<String>> {
    stream_exclusions::table
        .filter(stream_exclusions::user_id.eq(user_id))
        .select(stream_exclusions::stream_id)
        .load(conn)
}

pub fn exclude(conn: &mut DbConnection, stream_id: &str, user_id: &str) -> QueryResult<()> {
    diesel::delete(
        stream_exclusions::table
            .filter(stream_exclusions::stream_id.eq(stream_id))
            .filter(stream_exclusions::user_id.eq(user_id)),
    )
    .execute(conn)?;
    diesel::insert_into(stream_exclusions::table)
        .values((
            stream_exclusions::stream_id.eq(stream_id),
            stream_exclusions::user_id.eq(user_id),
        ))
        .execute(conn)
        .map(drop)
}

pub fn include(conn: &mut DbConnection, stream_id: &str, user_id: &str) -> QueryResult<()> {
    diesel::delete(
        stream_exclusions::table
            .filter(stream_exclusions::stream_id.eq(stream_id))
            .filter(stream_exclusions::user_id.eq(user_id)),
    )
    .execute(conn)
    .map(drop)
}

/// When the last verification SET of a stream was queued.
pub fn last_verification(
    conn: &mut DbConnection,
    stream_id: &str,
    event: &str,
) -> QueryResult<Option<NaiveDateTime>> {
    outbox::table
        .filter(outbox::stream_id.eq(stream_id))
        .filter(outbox::event_type.eq(event))
        .select(diesel::dsl::max(outbox::created))
        .get_result(conn)
}

pub fn insert_outbox(conn: &mut DbConnection, row: &NewOutbox<'_>) -> QueryResult<()> {
    insert_outbox_many(conn, std::slice::from_ref(row)).map(drop)
}

/// Most rows in one SQLite upsert of `outbox_counts` (3 bound values each, well under SQLite's 32 766).
const SQLITE_ROWS_PER_INSERT: usize = 500;

/// Inserts many outbox rows (ids follow the slice order): one multi-row statement on PostgreSQL (one round trip),
/// where a statement-level trigger adds them to `outbox_counts`. On SQLite, in-process, one cached statement per
/// row (measured no slower than one multi-row statement, which SQLite must also be able to undo alone, so it
/// copies every page it changes to a statement journal, and which is prepared afresh each time), then one upsert
/// of `outbox_counts` for all of them ([`count_inserted`]; SQLite's row trigger did one per row). Every outbox
/// insert goes through here, so the counters stay right.
pub fn insert_outbox_many(conn: &mut DbConnection, rows: &[NewOutbox<'_>]) -> QueryResult<usize> {
    match conn {
        DbConnection::Postgres(c) => diesel::insert_into(outbox::table).values(rows).execute(c),
        DbConnection::Sqlite(c) => {
            let mut n = 0;
            for row in rows {
                n += diesel::insert_into(outbox::table).values(row).execute(c)?;
            }
            count_inserted(c, rows)?;
            Ok(n)
        }
    }
}

/// The `outbox_counts` state of a new row (new rows have no error yet, so a pending one is `queued`).
fn state_of(status: &str) -> &str {
    if status == "pending" { "queued" } else { status }
}

/// Adds freshly inserted rows to `outbox_counts` on SQLite: one row per stream and state, in one upsert (a row
/// trigger did this before, one upsert per outbox row, and made every insert keep a statement journal).
fn count_inserted(c: &mut diesel::SqliteConnection, rows: &[NewOutbox<'_>]) -> QueryResult<()> {
    use diesel::upsert::excluded;
    let mut counts = std::collections::BTreeMap::<(&str, &str), i64>::new();
    for row in rows {
        *counts.entry((row.stream_id, state_of(row.status))).or_default() += 1;
    }
    let values: Vec<_> = counts
        .into_iter()
        .map(|((stream, state), n)| {
            (
                outbox_counts::stream_id.eq(stream),
                outbox_counts::state.eq(state),
                outbox_counts::n.eq(n),
            )
        })
        .collect();
    for chunk in values.chunks(SQLITE_ROWS_PER_INSERT) {
        diesel::insert_into(outbox_counts::table)
            .values(chunk)
            .on_conflict((outbox_counts::stream_id, outbox_counts::state))
            .do_update()
            .set(outbox_counts::n.eq(outbox_counts::n + excluded(outbox_counts::n)))
            .execute(c)?;
    }
    Ok(())
}

/// Claims up to `limit` due SETs of enabled push streams, only the oldest pending SET of each stream (so a stream's
/// SETs go out in order), by moving their next attempt to `lease_until` and counting the attempt. A claim that is
/// not settled (the process died) becomes due again at `lease_until`.
pub fn claim_due(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<OutboxRow>> {
    const HEADS: &str = "SELECT o.id FROM outbox o JOIN streams s ON s.id = o.stream_id \
         WHERE o.status = 'pending' AND o.next_attempt_at <= {now} AND s.status = 'enabled' \
         AND s.delivery_method = 'push' \
         AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.stream_id = o.stream_id AND p.status = 'pending' \
                         AND p.id < o.id) \
         ORDER BY o.id LIMIT {limit}";
    const COLUMNS: &str = "id, stream_id, jti, txn, event_type, user_id, payload, status, attempts, \
                           next_attempt_at, last_error, created, delivered_at";
    match conn {
        DbConnection::Postgres(c) => {
            let heads =
                HEADS.replace("{now}", "$2").replace("{limit}", "$3") + " FOR UPDATE OF o SKIP LOCKED";
            diesel::sql_query(format!(
                "UPDATE outbox SET next_attempt_at = $1, attempts = attempts + 1 WHERE id IN ({heads}) \
                 RETURNING {COLUMNS}"
            ))
            .bind::<Timestamp, _>(lease_until)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(limit)
            .load(c)
        }
        DbConnection::Sqlite(c) => {
            let heads = HEADS.replace("{now}", "?").replace("{limit}", "?");
            diesel::sql_query(format!(
                "UPDATE outbox SET next_attempt_at = ?, attempts = attempts + 1 WHERE id IN ({heads}) \
                 RETURNING {COLUMNS}"
            ))
            .bind::<Timestamp, _>(lease_until)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(limit)
            .load(c)
        }
    }
}

pub fn mark_delivered(conn: &mut DbConnection, id: i64, at: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(
        outbox::table
            .filter(outbox::id.eq(id))
            .filter(outbox::status.eq("pending")),
    )
    .set((
        outbox::status.eq("delivered"),
        outbox::delivered_at.eq(at),
        outbox::last_error.eq(None::<String>),
    ))
    .execute(conn)
}

/// Records a failed attempt: retried at `next` or, when `dead`, given up on.
pub fn mark_failed(
    conn: &mut DbConnection,
    id: i64,
    next: NaiveDateTime,
    error: &str,
    dead: bool,
) -> QueryResult<usize> {
    diesel::update(
        outbox::table
            .filter(outbox::id.eq(id))
            .filter(outbox::status.eq("pending")),
    )
    .set((
        outbox::status.eq(if dead { "dead" } else { "pending" }),
        outbox::next_attempt_at.eq(next),
        outbox::last_error.eq(error),
    ))
    .execute(conn)
}

/// The earliest time a pending SET of an enabled push stream is due, if any (the worker sleeps until then).
/// Only each stream's oldest pending SET counts: the ones behind it wait for it, whatever their own time.
pub fn next_due(conn: &mut DbConnection) -> QueryResult<Option<NaiveDateTime>> {
    diesel::alias!(outbox as earlier: Earlier);
    outbox::table
        .inner_join(streams::table)
        .filter(outbox::status.eq("pending"))
        .filter(streams::status.eq("enabled"))
        .filter(streams::delivery_method.eq("push"))
        .filter(diesel::dsl::not(diesel::dsl::exists(
            earlier
                .filter(earlier.field(outbox::stream_id).eq(outbox::stream_id))
                .filter(earlier.field(outbox::status).eq("pending"))
                .filter(earlier.field(outbox::id).lt(outbox::id)),
        )))
        .select(diesel::dsl::min(outbox::next_attempt_at))
        .get_result(conn)
}

/// Queues a stream's dead-lettered SETs again, due now with a fresh retry budget; returns how many.
pub fn requeue_dead(conn: &mut DbConnection, stream_id: &str, at: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(
        outbox::table
            .filter(outbox::stream_id.eq(stream_id))
            .filter(outbox::status.eq("dead")),
    )
    .set((
        outbox::status.eq("pending"),
        outbox::attempts.eq(0),
        outbox::next_attempt_at.eq(at),
        outbox::last_error.eq(None::<String>),
    ))
    .execute(conn)
}

/// The oldest `limit` pending SETs of a stream (poll delivery).
pub fn pending(conn: &mut DbConnection, stream_id: &str, limit: i64) -> QueryResult<Vec<OutboxRow>> {
    outbox::table
        .filter(outbox::stream_id.eq(stream_id))
        .filter(outbox::status.eq("pending"))
        .order(outbox::id.asc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(conn)
}

/// The pending SET of a stream with this `jti`, if any.
pub fn pending_by_jti(conn: &mut DbConnection, stream_id: &str, jti: &str) -> QueryResult<Option<OutboxRow>> {
    outbox::table
        .filter(outbox::stream_id.eq(stream_id))
        .filter(outbox::jti.eq(jti))
        .filter(outbox::status.eq("pending"))
        .select(OutboxRow::as_select())
        .load(conn)
        .map(super::unique)
}

/// Every SET queued by one change (`txn`), on every stream, in queue order.
pub fn outbox_of_txn(conn: &mut DbConnection, txn: &str) -> QueryResult<Vec<OutboxRow>> {
    outbox::table
        .filter(outbox::txn.eq(txn))
        .order(outbox::id.asc())
        .select(OutboxRow::as_select())
        .load(conn)
}

/// Settles pending SETs of a stream by `jti`: delivered (acknowledged) or dead (with the receiver's error).
pub fn settle_by_jti(
    conn: &mut DbConnection,
    stream_id: &str,
    jti: &str,
    at: NaiveDateTime,
    error: Option<&str>,
) -> QueryResult<usize> {
    let target = outbox::table
        .filter(outbox::stream_id.eq(stream_id))
        .filter(outbox::jti.eq(jti))
        .filter(outbox::status.eq("pending"));
    match error {
        None => diesel::update(target)
            .set((outbox::status.eq("delivered"), outbox::delivered_at.eq(at)))
            .execute(conn),
        Some(e) => diesel::update(target)
            .set((outbox::status.eq("dead"), outbox::last_error.eq(e)))
            .execute(conn),
    }
}

/// Outbox rows of one stream, oldest first (for status and tests).
pub fn outbox_of(conn: &mut DbConnection, stream_id: &str) -> QueryResult<Vec<OutboxRow>> {
    outbox::table
        .filter(outbox::stream_id.eq(stream_id))
        .order(outbox::id.asc())
        .select(OutboxRow::as_select())
        .load(conn)
}

/// The id of every stream.
pub fn stream_ids(conn: &mut DbConnection) -> QueryResult<Vec<String>> {
    streams::table.select(streams::id).load(conn)
}

/// Records a change whose SETs are still to be written to the outbox (src/fanout/pending.rs).
pub fn insert_change(conn: &mut DbConnection, row: &NewOutboxChange<'_>) -> QueryResult<()> {
    // A fixed statement: PostgreSQL would get diesel's insert prepared again on every call
    // (docs/decisions/0041-fewer-statements-per-write.md).
    super::fixed::execute(
        conn,
        "INSERT INTO outbox_changes (txn, user_id, created, events, targets) VALUES (?, ?, ?, ?, ?)",
        &[
            Param::Text(row.txn),
            Param::Text(row.user_id),
            Param::Time(row.created),
            Param::Text(row.events),
            Param::Text(row.targets),
        ],
    )
    .map(drop)
}

/// Notifies PostgreSQL listeners on `channel` when the transaction commits (dropped on rollback): `pg_notify`,
/// the function form of `NOTIFY`, so the statement stays prepared.
pub fn notify(conn: &mut DbConnection, channel: &str) -> QueryResult<()> {
    super::fixed::execute(conn, "SELECT pg_notify(?, '')", &[Param::Text(channel)]).map(drop)
}

/// Whether any change waits to be written to the outbox (reads the first key of the primary key).
pub fn has_changes(conn: &mut DbConnection) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        outbox_changes::table.select(outbox_changes::id),
    ))
    .get_result(conn)
}

/// The oldest `limit` changes waiting to be written to the outbox, in id (commit) order.
pub fn changes(conn: &mut DbConnection, limit: i64) -> QueryResult<Vec<OutboxChangeRow>> {
    outbox_changes::table
        .order(outbox_changes::id.asc())
        .limit(limit)
        .select(OutboxChangeRow::as_select())
        .load(conn)
}

/// Deletes the waiting changes up to and including id `last`; returns how many.
pub fn delete_changes_through(conn: &mut DbConnection, last: i64) -> QueryResult<usize> {
    diesel::delete(outbox_changes::table.filter(outbox_changes::id.le(last))).execute(conn)
}
