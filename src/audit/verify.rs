//! Verification: walks the whole log in `seq` order, in keyset batches (constant memory), recomputing every hash
//! and naming the first entry that does not fit (DECISIONS.md §31).
//!
//! An entry is bad when its `seq` is not the one after the previous entry's (an entry before it was deleted),
//! when its `prev_hash` is not the previous entry's `hash` (the previous entry was altered and re-hashed), or when
//! its own `hash` is not the hash of its contents (it was altered). The first entry kept is the anchor: with
//! `seq` 1 its `prev_hash` must be [`GENESIS`]; after retention pruned the start, an `audit.retention` entry
//! later in the chain must name exactly the `seq` and `hash` where the pruned part ended, so deleting more than
//! retention did is caught too.

use serde::Serialize;

use super::{GENESIS, chain_hash};
use crate::db::models::AuditRow;
use crate::db::{Db, DbError, repo};

/// Rows per read.
const BATCH: i64 = 5000;

/// The answer of `GET /audit/verify` and `offboard audit verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    pub first_bad_seq: Option<i64>,
    /// What is wrong with the first bad entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The first entry kept and the last one: what the chain proves, from where to where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_hash: Option<String>,
}

/// The incremental checker, fed rows in `seq` order (also usable on an export read back from a file).
#[derive(Debug, Default)]
pub struct Checker {
    prev: Option<(i64, String)>,
    first: Option<(i64, String)>,
    /// (`through_seq`, `through_hash`) of every `audit.retention` entry seen.
    pruned: Vec<(i64, String)>,
    entries: u64,
    bad: Option<(i64, String)>,
}

impl Checker {
    /// Checks the next row; after the first problem, only counts.
    pub fn push(&mut self, row: &AuditRow) {
        self.entries += 1;
        if self.bad.is_some() {
            return;
        }
        match &self.prev {
            None => self.first = Some((row.seq, row.prev_hash.clone())),
            Some((seq, hash)) => {
                if row.seq != seq + 1 {
                    self.bad = Some((
                        seq + 1,
                        format!("entry {} is missing (the next entry is {})", seq + 1, row.seq),
                    ));
                    return;
                }
                if &row.prev_hash != hash {
                    self.bad = Some((
                        row.seq,
                        format!("prev_hash does not match the hash of entry {seq}: entry {seq} was altered"),
                    ));
                    return;
                }
            }
        }
        if chain_hash(&row.prev_hash, row) != row.hash {
            self.bad = Some((
                row.seq,
                "hash does not match the entry's contents: it was altered".into(),
            ));
            return;
        }
        if row.action == super::CHECKPOINT {
            let d: serde_json::Value = serde_json::from_str(&row.details).unwrap_or_default();
            let covers_previous = d.get("seq").and_then(serde_json::Value::as_i64) == Some(row.seq - 1)
                && d.get("hash").and_then(serde_json::Value::as_str) == Some(row.prev_hash.as_str());
            if !covers_previous {
                self.bad = Some((row.seq, "the checkpoint does not name the entry before it".into()));
                return;
            }
        }
        if row.action == super::retention::ACTION
            && let Ok(d) = serde_json::from_str::<serde_json::Value>(&row.details)
            && let (Some(seq), Some(hash)) = (
                d.get("through_seq").and_then(serde_json::Value::as_i64),
                d.get("through_hash").and_then(serde_json::Value::as_str),
            )
        {
            self.pruned.push((seq, hash.to_owned()));
        }
        self.prev = Some((row.seq, row.hash.clone()));
    }

    /// The verdict, once every row was pushed.
    pub fn finish(mut self) -> Verification {
        if self.bad.is_none()
            && let Some((seq, prev_hash)) = &self.first
        {
            let anchored = if *seq == 1 {
                prev_hash == GENESIS
            } else {
                self.pruned.iter().any(|(s, h)| *s == seq - 1 && h == prev_hash)
            };
            if !anchored {
                self.bad = Some((
                    *seq,
                    if *seq == 1 {
                        "the first entry's prev_hash is not the genesis hash".to_owned()
                    } else {
                        format!("entries before {seq} are missing and no retention entry accounts for them")
                    },
                ));
            }
        }
        let (first_bad_seq, problem) = self.bad.map_or((None, None), |(s, p)| (Some(s), Some(p)));
        Verification {
            ok: first_bad_seq.is_none(),
            entries: self.entries,
            first_bad_seq,
            problem,
            first_seq: self.first.map(|(s, _)| s),
            last_seq: self.prev.as_ref().map(|(s, _)| *s),
            last_hash: self.prev.map(|(_, h)| h),
        }
    }
}

/// Verifies the whole log: one short read per batch, no connection held between batches.
pub fn run(db: &Db) -> Result<Verification, DbError> {
    run_with_progress(db, |_| {})
}

/// [`run`], calling `progress` with the number of entries checked after each batch.
pub fn run_with_progress(db: &Db, mut progress: impl FnMut(u64)) -> Result<Verification, DbError> {
    let mut checker = Checker::default();
    let mut after = 0;
    loop {
        let rows = db.read(|c| repo::audit::after(c, after, BATCH).map_err(DbError::from))?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in &rows {
            checker.push(row);
        }
        progress(checker.entries);
        if i64::try_from(rows.len()).unwrap_or(BATCH) < BATCH {
            break;
        }
    }
    Ok(checker.finish())
}
