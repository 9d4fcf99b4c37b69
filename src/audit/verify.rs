//! Verification: walks the whole log in `seq` order, in keyset batches (constant memory), recomputing every hash
//! and naming the first entry that does not fit (docs/decisions/0026-audit-export-and-verification.md).
//!
//! An entry is bad when its `seq` is not the one after the previous entry's (an entry before it was deleted),
//! when its `prev_hash` is not the previous entry's `hash` (the previous entry was altered and re-hashed), or when
//! its own `hash` is not the hash of its contents (it was altered). Checkpoint and retention entries carry a JWS
//! made with one of offboard's signing keys; a signature that does not verify, or that signs other values than
//! the entry states, makes the entry bad. The first entry kept is the anchor: with `seq` 1 its `prev_hash` must
//! be [`GENESIS`]; after retention pruned the start, a signed `audit.retention` entry later in the chain must name
//! exactly the `seq` and `hash` where the pruned part ended, so deleting more than retention did is caught too
//! (forging that entry takes the private signing key).
//!
//! The walk reads one snapshot of the database ([`Db::snapshot`]), so entries retention deletes meanwhile do not
//! look like tampering.

use serde::Serialize;

use serde_json::Value;

use super::{GENESIS, chain_hash};
use crate::db::models::AuditRow;
use crate::db::{Db, DbError, repo};

/// Checks a JWS against offboard's signing keys and returns its `typ` and claims
/// ([`crate::keys::audit_signature_checker`]).
pub type SignatureCheck<'a> = &'a dyn Fn(&str) -> Result<(String, Value), String>;

/// The `typ` of checkpoint and retention JWSs (the same values as in `keys`).
pub const CHECKPOINT_TYP: &str = "offboard-audit-checkpoint+jwt";
pub const RETENTION_TYP: &str = "offboard-audit-retention+jwt";

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
    /// The first entry kept and, when the chain is intact, the last one and its hash: what it proves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_hash: Option<String>,
}

/// The incremental checker, fed rows in `seq` order (also usable on an export read back from a file).
pub struct Checker<'a> {
    check: SignatureCheck<'a>,
    prev: Option<(i64, String)>,
    first: Option<(i64, String)>,
    /// (`through_seq`, `through_hash`) of every `audit.retention` entry seen.
    pruned: Vec<(i64, String)>,
    entries: u64,
    bad: Option<(i64, String)>,
}

impl<'a> Checker<'a> {
    pub fn new(check: SignatureCheck<'a>) -> Self {
        Self {
            check,
            prev: None,
            first: None,
            pruned: Vec::new(),
            entries: 0,
            bad: None,
        }
    }

    /// The signed claims of a checkpoint or retention entry, which must match what its details state.
    fn check_signed(&mut self, row: &AuditRow) -> Result<(), String> {
        let (typ, fields): (&str, [(&str, &str); 2]) = if row.action == super::CHECKPOINT {
            (CHECKPOINT_TYP, [("seq", "audit_seq"), ("hash", "audit_hash")])
        } else if row.action == super::retention::ACTION {
            (
                RETENTION_TYP,
                [
                    ("through_seq", "audit_through_seq"),
                    ("through_hash", "audit_through_hash"),
                ],
            )
        } else {
            return Ok(());
        };
        let d: Value = serde_json::from_str(&row.details).unwrap_or_default();
        let jws = d
            .get("jws")
            .and_then(Value::as_str)
            .ok_or("the entry carries no signature")?;
        let (got_typ, claims) =
            (self.check)(jws).map_err(|e| format!("the entry's signature does not verify: {e}"))?;
        if got_typ != typ {
            return Err(format!("the entry's signature has typ `{got_typ}`, not {typ}"));
        }
        for (detail, claim) in fields {
            if d.get(detail).is_none() || d.get(detail) != claims.get(claim) {
                return Err(format!("the signed {claim} differs from the entry's {detail}"));
            }
        }
        if row.action == super::CHECKPOINT {
            let covers_previous = d.get("seq").and_then(Value::as_i64) == Some(row.seq - 1)
                && d.get("hash").and_then(Value::as_str) == Some(row.prev_hash.as_str());
            if !covers_previous {
                return Err("the checkpoint does not name the entry before it".into());
            }
        } else if let (Some(seq), Some(hash)) = (
            d.get("through_seq").and_then(Value::as_i64),
            d.get("through_hash").and_then(Value::as_str),
        ) {
            self.pruned.push((seq, hash.to_owned()));
        }
        Ok(())
    }

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
        if let Err(problem) = self.check_signed(row) {
            self.bad = Some((row.seq, problem));
            return;
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
        let ok = first_bad_seq.is_none();
        // The head is what an intact chain proves; after a bad entry there is nothing to state.
        let head = if ok { self.prev } else { None };
        Verification {
            ok,
            entries: self.entries,
            first_bad_seq,
            problem,
            first_seq: self.first.map(|(s, _)| s),
            last_seq: head.as_ref().map(|(s, _)| *s),
            last_hash: head.map(|(_, h)| h),
        }
    }
}

/// Verifies the whole log, batch by batch (constant memory) in one read snapshot.
pub fn run(db: &Db, check: SignatureCheck<'_>) -> Result<Verification, DbError> {
    run_with_progress(db, check, |_| {})
}

/// [`run`], calling `progress` with the number of entries checked after each batch.
pub fn run_with_progress(
    db: &Db,
    check: SignatureCheck<'_>,
    mut progress: impl FnMut(u64),
) -> Result<Verification, DbError> {
    let mut checker = Checker::new(check);
    db.snapshot(|c| {
        let mut after = 0;
        loop {
            let rows = repo::audit::after(c, after, BATCH)?;
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
        Ok::<_, DbError>(())
    })?;
    Ok(checker.finish())
}
