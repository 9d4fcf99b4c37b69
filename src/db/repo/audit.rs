//! SQL for the audit log: the chain's tail, appends, keyset-batched reads for export and verification, and the
//! retention delete. Every read walks `seq` in order through the primary key
//! (docs/decisions/0028-keyset-export.md).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::fixed::{self, Param};
use crate::db::models::AuditRow;
use crate::db::schema::audit_log;
use crate::db::{DbConnection, MultiBackend};

/// The last entry's `seq` and `hash`, if any. A fixed statement with `LIMIT 1` written out: diesel binds a
/// `LIMIT`, which SQLite plans again on every run (docs/decisions/0041-fewer-statements-per-write.md).
pub fn tail(conn: &mut DbConnection) -> QueryResult<Option<(i64, String)>> {
    #[derive(QueryableByName)]
    struct Tail {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        seq: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        hash: String,
    }
    let rows = fixed::load::<Tail>(
        conn,
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        &[],
    )?;
    Ok(super::unique(rows).map(|t| (t.seq, t.hash)))
}

/// Most entries in one insert statement: each count up to it is its own statement, prepared once per
/// connection; a batch of writes with more entries takes several.
const ROWS_PER_INSERT: usize = 64;

/// The columns of an entry, in the order [`insert`] binds them.
const INSERT: &str = "INSERT INTO audit_log (seq, time, actor, action, target_type, target_id, target_name, \
                      subject, request_id, outcome, details, prev_hash, hash) VALUES ";
const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Inserts entries in one statement per [`ROWS_PER_INSERT`] (most changes write one to three): fixed text for
/// each count, so every one stays prepared, where diesel's multi-row insert is prepared again on PostgreSQL and
/// is one statement per row inside a savepoint on SQLite.
pub fn insert(conn: &mut DbConnection, rows: &[AuditRow]) -> QueryResult<()> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::with_capacity(INSERT.len() + chunk.len() * (ROW.len() + 2));
        sql.push_str(INSERT);
        let mut params = Vec::with_capacity(chunk.len() * 13);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(ROW);
            params.extend([
                Param::BigInt(r.seq),
                Param::Time(r.time),
                Param::Text(&r.actor),
                Param::Text(&r.action),
                Param::OptText(r.target_type.as_deref()),
                Param::OptText(r.target_id.as_deref()),
                Param::OptText(r.target_name.as_deref()),
                Param::OptText(r.subject.as_deref()),
                Param::OptText(r.request_id.as_deref()),
                Param::Text(&r.outcome),
                Param::Text(&r.details),
                Param::Text(&r.prev_hash),
                Param::Text(&r.hash),
            ]);
        }
        fixed::execute(conn, &sql, &params)?;
    }
    Ok(())
}

/// What an export selects; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub since: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
    pub after_seq: Option<i64>,
    pub actions: Vec<String>,
    /// Matches the target's id or its name (a userName, a group's displayName).
    pub target: Option<String>,
    pub subject: Option<String>,
}

/// The selection as a boxed query (boxed for the multi-backend, so it runs on either connection).
fn selection(sel: &Selection) -> audit_log::BoxedQuery<'_, MultiBackend> {
    let mut q = audit_log::table.into_boxed::<MultiBackend>();
    if let Some(after) = sel.after_seq {
        q = q.filter(audit_log::seq.gt(after));
    }
    if let Some(since) = sel.since {
        q = q.filter(audit_log::time.ge(since));
    }
    if let Some(until) = sel.until {
        q = q.filter(audit_log::time.lt(until));
    }
    if !sel.actions.is_empty() {
        q = q.filter(audit_log::action.eq_any(&sel.actions));
    }
    if let Some(target) = &sel.target {
        q = q.filter(
            audit_log::target_id
                .eq(target)
                .or(audit_log::target_name.eq(target)),
        );
    }
    if let Some(subject) = &sel.subject {
        q = q.filter(audit_log::subject.eq(subject));
    }
    q
}

/// The next `limit` entries of the selection in `seq` order.
pub fn batch(conn: &mut DbConnection, sel: &Selection, limit: i64) -> QueryResult<Vec<AuditRow>> {
    selection(sel)
        .order(audit_log::seq.asc())
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)
}

/// The `seq`s of the selection from position `offset` on (0-based), at most `limit`.
pub fn seqs_from(conn: &mut DbConnection, sel: &Selection, offset: i64, limit: i64) -> QueryResult<Vec<i64>> {
    selection(sel)
        .order(audit_log::seq.asc())
        .offset(offset)
        .limit(limit)
        .select(audit_log::seq)
        .load(conn)
}

/// How many entries the selection holds (for a progress bar).
pub fn count(conn: &mut DbConnection, sel: &Selection) -> QueryResult<i64> {
    selection(sel).count().get_result(conn)
}

/// The entries after `after` in `seq` order, at most `limit` (verification walks the whole log this way).
pub fn after(conn: &mut DbConnection, after: i64, limit: i64) -> QueryResult<Vec<AuditRow>> {
    audit_log::table
        .filter(audit_log::seq.gt(after))
        .order(audit_log::seq.asc())
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)
}

/// The last entry with this action, if any.
pub fn last_of(conn: &mut DbConnection, action: &str) -> QueryResult<Option<AuditRow>> {
    audit_log::table
        .filter(audit_log::action.eq(action))
        .order(audit_log::seq.desc())
        .limit(1)
        .select(AuditRow::as_select())
        .load(conn)
        .map(super::unique)
}

/// The last entry, if any.
pub fn last(conn: &mut DbConnection) -> QueryResult<Option<AuditRow>> {
    audit_log::table
        .order(audit_log::seq.desc())
        .limit(1)
        .select(AuditRow::as_select())
        .load(conn)
        .map(super::unique)
}

/// The first entry, if any.
pub fn first(conn: &mut DbConnection) -> QueryResult<Option<AuditRow>> {
    audit_log::table
        .order(audit_log::seq.asc())
        .limit(1)
        .select(AuditRow::as_select())
        .load(conn)
        .map(super::unique)
}

/// The last entry written before `time`, if any (retention's cut point).
pub fn last_before(conn: &mut DbConnection, time: NaiveDateTime) -> QueryResult<Option<AuditRow>> {
    audit_log::table
        .filter(audit_log::time.lt(time))
        .order(audit_log::seq.desc())
        .limit(1)
        .select(AuditRow::as_select())
        .load(conn)
        .map(super::unique)
}

/// Deletes the entries up to and including `through`. Returns the count.
pub fn delete_through(conn: &mut DbConnection, through: i64) -> QueryResult<usize> {
    diesel::delete(audit_log::table.filter(audit_log::seq.le(through))).execute(conn)
}
