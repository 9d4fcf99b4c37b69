//! Export: the entries of a [`Selection`] in `seq` order as NDJSON (one entry per line) or CSV, produced in
//! keyset batches so memory stays constant however many entries there are (docs/decisions/0028-keyset-export.md).
//! The HTTP endpoint streams one batch per blocking hop; the CLI writes them to a file.

use std::borrow::Cow;
use std::str::FromStr;

use chrono::NaiveDateTime;

use crate::db::models::AuditRow;
use crate::db::repo::audit::Selection;
use crate::db::{Db, DbError, repo};

/// Entries per batch.
pub const BATCH: i64 = 2000;

/// The CSV columns, in order: every field of an entry, so the chain can be recomputed from the file.
pub const CSV_COLUMNS: [&str; 13] = [
    "seq",
    "time",
    "actor",
    "action",
    "target_type",
    "target_id",
    "target_name",
    "subject",
    "request_id",
    "outcome",
    "details",
    "prev_hash",
    "hash",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ndjson" | "jsonl" => Ok(Self::Ndjson),
            "csv" => Ok(Self::Csv),
            other => Err(format!("unknown format `{other}` (use ndjson or csv)")),
        }
    }
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    /// What comes before the first entry.
    pub fn header(self) -> Vec<u8> {
        match self {
            Self::Ndjson => Vec::new(),
            Self::Csv => {
                let mut w = csv::Writer::from_writer(Vec::new());
                // Writing to a Vec cannot fail.
                let _ = w.write_record(CSV_COLUMNS);
                w.into_inner().unwrap_or_default()
            }
        }
    }

    /// The entries, encoded.
    pub fn encode(self, rows: &[AuditRow]) -> Vec<u8> {
        match self {
            Self::Ndjson => {
                let mut out = Vec::with_capacity(rows.len() * 400);
                for row in rows {
                    if serde_json::to_writer(&mut out, row).is_ok() {
                        out.push(b'\n');
                    }
                }
                out
            }
            Self::Csv => {
                let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 400));
                for r in rows {
                    let seq = r.seq.to_string();
                    let time = super::format_time(r.time);
                    let _ = w.write_record(
                        [
                            Cow::Borrowed(seq.as_str()),
                            Cow::Borrowed(time.as_str()),
                            csv_cell(&r.actor),
                            csv_cell(&r.action),
                            csv_opt(r.target_type.as_deref()),
                            csv_opt(r.target_id.as_deref()),
                            csv_opt(r.target_name.as_deref()),
                            csv_opt(r.subject.as_deref()),
                            csv_opt(r.request_id.as_deref()),
                            csv_cell(&r.outcome),
                            csv_cell(&r.details),
                            csv_cell(&r.prev_hash),
                            csv_cell(&r.hash),
                        ]
                        .iter()
                        .map(|c| c.as_bytes()),
                    );
                }
                w.into_inner().unwrap_or_default()
            }
        }
    }
}

/// A CSV cell a spreadsheet will not run as a formula (OWASP "CSV Injection"): a value beginning with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a leading `'`, and so does one beginning with `'`, so the rule
/// reverses exactly: drop one leading `'` from every cell that has one to get the stored value back (and
/// recompute the chain). NDJSON keeps values as they are.
pub fn csv_cell(value: &str) -> Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

fn csv_opt(value: Option<&str>) -> Cow<'_, str> {
    value.map_or(Cow::Borrowed(""), csv_cell)
}

/// A cursor over a selection: each [`next_batch`](Self::next_batch) reads the next entries after the last one
/// given out, so no connection or result set is held between batches.
#[derive(Debug, Clone)]
pub struct Cursor {
    selection: Selection,
    /// Entries still to give out, when the caller set a limit.
    remaining: Option<u64>,
    done: bool,
}

impl Cursor {
    pub fn new(selection: Selection, limit: Option<u64>) -> Self {
        Self {
            selection,
            remaining: limit,
            done: limit == Some(0),
        }
    }

    /// The next batch (empty once the selection, or the limit, is exhausted).
    pub fn next_batch(&mut self, db: &Db) -> Result<Vec<AuditRow>, DbError> {
        if self.done {
            return Ok(Vec::new());
        }
        let want = self
            .remaining
            .map_or(BATCH, |r| i64::try_from(r).unwrap_or(BATCH).min(BATCH));
        let rows = db.read(|c| repo::audit::batch(c, &self.selection, want).map_err(DbError::from))?;
        if let Some(last) = rows.last() {
            self.selection.after_seq = Some(last.seq);
        }
        let got = rows.len() as u64;
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(got);
            if *r == 0 {
                self.done = true;
            }
        }
        if got < u64::try_from(want).unwrap_or(0) {
            self.done = true;
        }
        Ok(rows)
    }

    /// The `seq` of the last entry given out (the cursor for the next page).
    pub fn last_seq(&self) -> Option<i64> {
        self.selection.after_seq
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// How many entries `selection` holds.
pub fn count(db: &Db, selection: &Selection) -> Result<i64, DbError> {
    db.read(|c| repo::audit::count(c, selection).map_err(DbError::from))
}

/// With pages of `limit` entries: the `seq` after which the next page starts, when there is one.
pub fn page_end(db: &Db, selection: &Selection, limit: u64) -> Result<Option<i64>, DbError> {
    let offset = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
    let seqs = db.read(|c| repo::audit::seqs_from(c, selection, offset, 2).map_err(DbError::from))?;
    Ok(match seqs.as_slice() {
        [last, _more] => Some(*last),
        _ => None,
    })
}

/// An RFC 3339 time (`2026-12-01T10:00:00Z`) or a date (`2026-12-01`, midnight UTC).
pub fn parse_time(name: &str, v: &str) -> Result<NaiveDateTime, String> {
    use chrono::Datelike;
    let t = chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.naive_utc())
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map(|d| d.and_time(chrono::NaiveTime::MIN))
        })
        .map_err(|_| {
            format!("`{name}` must be an RFC 3339 time (2026-12-01T10:00:00Z) or a date (2026-12-01)")
        })?;
    // Both backends store years 1 to 9999 (PostgreSQL refuses others).
    if (1..=9999).contains(&t.year()) {
        Ok(t)
    } else {
        Err(format!("`{name}` must be between the years 1 and 9999"))
    }
}
