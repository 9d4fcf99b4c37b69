//! The tamper-evident audit log (ARCHITECTURE.md invariants 6–7): what offboard did, who asked, and whether it
//! worked.
//!
//! Use cases call [`record`] with an [`Entry`] while their write transaction is open; the entries are chained and
//! inserted by a before-commit hook of that same transaction ([`crate::db::before_commit`]), so an entry exists
//! exactly when its change does (invariant 1). Who asked (the actor) and the request id come from the ambient
//! [`Context`] that the HTTP layer and the CLI set for the thread doing the work; an entry may name its actor
//! itself (a token grant names its client).
//!
//! # The chain
//! Entries are numbered `seq` = 1, 2, 3… with no gaps, and
//! `hash_n = SHA-256(raw(hash_{n-1}) ‖ canonical(entry_n))`, with `raw(hash_0)` 32 zero bytes and hashes written
//! as lowercase hex. `canonical(entry)` is the UTF-8 of this JSON object, members in this order (which is
//! lexicographic), no whitespace, strings escaped as JSON does, absent values as `null`:
//!
//! ```text
//! {"action":…,"actor":…,"details":…,"outcome":…,"request_id":…,"seq":N,"subject":…,
//!  "target_id":…,"target_name":…,"target_type":…,"time":"YYYY-MM-DDTHH:MM:SS.mmmZ"}
//! ```
//!
//! `details` is embedded exactly as stored: JSON with object keys sorted and no whitespace. An export line
//! carries every one of these fields, so anyone can recompute the chain without offboard.
//!
//! On SQLite the single writer orders appends already; on PostgreSQL the hook takes a transaction-scoped
//! advisory lock just before reading the tail, so concurrent transactions never fork the chain
//! (docs/decisions/0027-audit-chain-lock.md). The lock is taken as late as possible (at commit) and held only for
//! the tail read, the insert and the commit. With the batch writer the entries of every write in a batch are
//! sealed together, in the order the writes ran, just before the batch commits (one lock, one tail read, one
//! insert: docs/decisions/0029-batch-writer.md).
//!
//! Nothing secret goes in: no token, no credential secret, no key material, no password (invariant 7).

pub mod export;
pub mod report;
pub mod retention;
pub mod verify;

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::QueryResult;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::db::models::AuditRow;
use crate::db::{Db, DbConnection, DbError, now, repo};

/// `hash_0`: what the first entry's `prev_hash` is.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The actor of work that no client asked for (the fan-out worker, retention).
pub const SYSTEM_ACTOR: &str = "offboard";

/// Who is acting on this thread, and for which request.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The authenticated credential's name, once known.
    pub actor: Option<String>,
    pub request_id: Option<String>,
    /// When the request reached offboard (for the offboarding report: when the IdP's call arrived).
    pub received_at: Option<NaiveDateTime>,
    /// Told of the entries this context records once their transaction has committed.
    pub observer: Option<Arc<dyn Observer>>,
}

/// What an [`Observer`] learns of a committed entry: its action and, when it has one, its `reason` detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub action: &'static str,
    pub reason: Option<String>,
}

/// Learns of entries once they have committed (the server's metrics count access changes this way, so a change
/// is counted exactly when it happened, by the use case that made it).
pub trait Observer: Send + Sync + std::fmt::Debug {
    fn committed(&self, entries: &[Committed]);
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
    /// Entries recorded in the write transactions this thread is in, by transaction serial (more than one group
    /// only while writes nest).
    static PENDING: RefCell<Vec<(u64, Vec<Entry>)>> = const { RefCell::new(Vec::new()) };
}

/// The actor when no context names one: `cli` in the command-line tool, else [`SYSTEM_ACTOR`].
static PROCESS_ACTOR: OnceLock<&'static str> = OnceLock::new();

/// Makes `actor` the default actor of this process (the CLI calls this with `cli`).
pub fn set_process_actor(actor: &'static str) {
    let _ = PROCESS_ACTOR.set(actor);
}

/// Runs `f` with `ctx` as this thread's context, restoring the previous one after (also on panic).
pub fn in_context<T>(ctx: Context, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Context>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CONTEXT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let _restore = Restore(CONTEXT.with(|c| c.borrow_mut().replace(ctx)));
    f()
}

/// The actor the current context names, if any (no process default).
pub fn context_actor() -> Option<String> {
    CONTEXT.with(|c| c.borrow().as_ref().and_then(|ctx| ctx.actor.clone()))
}

fn current_observer() -> Option<Arc<dyn Observer>> {
    CONTEXT.with(|c| c.borrow().as_ref().and_then(|ctx| ctx.observer.clone()))
}

/// Names the actor of the current context (after authentication).
pub fn set_actor(actor: &str) {
    CONTEXT.with(|c| {
        if let Some(ctx) = c.borrow_mut().as_mut() {
            ctx.actor = Some(actor.to_owned());
        }
    });
}

/// The current context's actor, else the process default.
pub fn current_actor() -> String {
    CONTEXT
        .with(|c| c.borrow().as_ref().and_then(|ctx| ctx.actor.clone()))
        .unwrap_or_else(|| (*PROCESS_ACTOR.get().unwrap_or(&SYSTEM_ACTOR)).to_owned())
}

/// When the current request arrived, if there is one.
fn received_at() -> Option<NaiveDateTime> {
    CONTEXT.with(|c| c.borrow().as_ref().and_then(|ctx| ctx.received_at))
}

fn current_request_id() -> Option<String> {
    CONTEXT.with(|c| c.borrow().as_ref().and_then(|ctx| ctx.request_id.clone()))
}

/// One thing to record.
#[derive(Debug, Clone)]
pub struct Entry {
    action: &'static str,
    outcome: &'static str,
    actor: Option<String>,
    target_type: Option<&'static str>,
    target_id: Option<String>,
    target_name: Option<String>,
    subject: Option<String>,
    details: Map<String, Value>,
}

impl Entry {
    /// An entry for `action` (dotted, e.g. `scim.user.patch`), outcome `success`.
    pub fn new(action: &'static str) -> Self {
        Self {
            action,
            outcome: "success",
            actor: None,
            target_type: None,
            target_id: None,
            target_name: None,
            subject: None,
            details: Map::new(),
        }
    }

    /// The entry's target: a user, group, stream, credential, key…
    #[must_use]
    pub fn target(mut self, kind: &'static str, id: &str, name: Option<&str>) -> Self {
        self.target_type = Some(kind);
        self.target_id = Some(id.to_owned());
        self.target_name = name.map(str::to_owned);
        self
    }

    /// A user as target; the user is also the entry's subject.
    #[must_use]
    pub fn user(self, id: &str, user_name: Option<&str>) -> Self {
        self.target("user", id, user_name).subject(id)
    }

    /// The user the entry concerns, when the target is something else (a SET delivery).
    #[must_use]
    pub fn subject(mut self, user_id: &str) -> Self {
        self.subject = Some(user_id.to_owned());
        self
    }

    #[must_use]
    pub fn outcome(mut self, outcome: &'static str) -> Self {
        self.outcome = outcome;
        self
    }

    /// Names the actor instead of taking the context's.
    #[must_use]
    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_owned());
        self
    }

    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Adds `received_at`, when the current request reached offboard (SCIM writes: when the IdP's call arrived).
    #[must_use]
    pub fn received_now(self) -> Self {
        match received_at() {
            Some(t) => self.detail("received_at", format_time(t)),
            None => self,
        }
    }
}

/// Records `entry` in the current write transaction: it is chained and inserted just before that transaction
/// commits, and dropped if it rolls back. Called outside a write transaction, the entry is dropped with a
/// warning (use [`record_now`]).
pub fn record(entry: Entry) {
    let Some(serial) = crate::db::transaction_serial() else {
        tracing::warn!(
            action = entry.action,
            "audit entry recorded outside a write transaction: dropped"
        );
        return;
    };
    let actor = entry.actor.clone().unwrap_or_else(current_actor);
    let entry = Entry {
        actor: Some(actor),
        ..entry
    };
    let first = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if crate::db::transaction_depth() <= 1 {
            // No outer transaction: any other group is left over from a transaction that rolled back.
            p.retain(|(s, _)| *s == serial);
        }
        if let Some((_, entries)) = p.iter_mut().find(|(s, _)| *s == serial) {
            entries.push(entry);
            false
        } else {
            p.push((serial, vec![entry]));
            true
        }
    });
    if first {
        let request_id = current_request_id();
        crate::db::before_commit(move |conn| flush(conn, serial, request_id.as_deref()));
    }
}

/// Records `entries` in a transaction of their own (for events that change nothing else: a refused login).
pub fn record_now(db: &Db, entries: Vec<Entry>) -> Result<(), DbError> {
    let mut entries = Some(entries);
    db.write(|_| {
        for e in entries.take().unwrap_or_default() {
            record(e);
        }
        Ok::<_, DbError>(())
    })
}

/// Chains and inserts the pending entries of transaction `serial`.
fn flush(conn: &mut DbConnection, serial: u64, request_id: Option<&str>) -> QueryResult<()> {
    let entries = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match p.iter().position(|(s, _)| *s == serial) {
            Some(i) => p.swap_remove(i).1,
            None => Vec::new(),
        }
    });
    if entries.is_empty() {
        return Ok(());
    }
    if let Some(observer) = current_observer() {
        let committed: Vec<Committed> = entries
            .iter()
            .map(|e| Committed {
                action: e.action,
                reason: e.details.get("reason").and_then(Value::as_str).map(str::to_owned),
            })
            .collect();
        crate::db::after_commit(move || observer.committed(&committed));
    }
    // Sealed with the other entries of the batch, once, just before its commit (at once outside a batch).
    let group: Box<dyn std::any::Any + Send> = Box::new((entries, request_id.map(str::to_owned)));
    crate::db::at_batch_commit(conn, "audit", seal, group)
}

/// Chains and inserts the entries of every write of a batch, in the order the writes ran: one chain lock, one
/// tail read and one insert for the batch.
fn seal(conn: &mut DbConnection, groups: Vec<Box<dyn std::any::Any + Send>>) -> QueryResult<()> {
    let groups: Vec<(Vec<Entry>, Option<String>)> = groups
        .into_iter()
        .filter_map(|g| g.downcast::<(Vec<Entry>, Option<String>)>().ok().map(|g| *g))
        .collect();
    append_groups(conn, groups).map(drop)
}

/// Appends `entries` to the chain now, inside the caller's transaction. Returns the rows written.
pub fn append(
    conn: &mut DbConnection,
    entries: Vec<Entry>,
    request_id: Option<&str>,
) -> QueryResult<Vec<AuditRow>> {
    append_groups(conn, vec![(entries, request_id.map(str::to_owned))])
}

/// Appends groups of entries (each with its request id) to the chain now, in order, under one lock.
fn append_groups(
    conn: &mut DbConnection,
    groups: Vec<(Vec<Entry>, Option<String>)>,
) -> QueryResult<Vec<AuditRow>> {
    if groups.iter().all(|(entries, _)| entries.is_empty()) {
        return Ok(Vec::new());
    }
    lock_chain(conn)?;
    let (mut seq, mut prev) = repo::audit::tail(conn)?.unwrap_or_else(|| (0, GENESIS.to_owned()));
    let time = now();
    let rows: Vec<AuditRow> = groups
        .into_iter()
        .flat_map(|(entries, request_id)| entries.into_iter().map(move |e| (e, request_id.clone())))
        .map(|(e, request_id)| {
            seq += 1;
            let mut row = AuditRow {
                seq,
                time,
                actor: e.actor.unwrap_or_else(current_actor),
                action: e.action.to_owned(),
                target_type: e.target_type.map(str::to_owned),
                target_id: e.target_id,
                target_name: e.target_name,
                subject: e.subject,
                request_id,
                outcome: e.outcome.to_owned(),
                details: canonical_json(&Value::Object(e.details)),
                prev_hash: std::mem::take(&mut prev),
                hash: String::new(),
            };
            row.hash = chain_hash(&row.prev_hash, &row);
            prev.clone_from(&row.hash);
            row
        })
        .collect();
    repo::audit::insert(conn, &rows)?;
    Ok(rows)
}

/// Signs claims as a compact JWS with the active signing key, with the given `typ`.
pub type Signer<'a> = &'a dyn Fn(&str, &Value) -> Result<String, String>;

/// The action of a signed checkpoint entry.
pub const CHECKPOINT: &str = "audit.checkpoint";

/// Appends a signed checkpoint: an entry whose details hold `seq` and `hash` of the entry before it and `jws`, a
/// JWS (`typ` `offboard-audit-checkpoint+jwt`, claims `iss`, `iat`, `audit_seq`, `audit_hash`) made by `sign` with
/// the active signing key, verifiable with the JWKS. An auditor who keeps one can prove that an export holding
/// that entry was not rewritten later. Nothing is written when the last entry is a checkpoint already (an idle
/// log). Returns the `seq` the checkpoint covers.
pub fn checkpoint(db: &Db, issuer: &str, sign: Signer<'_>) -> anyhow::Result<Option<i64>> {
    let covered = db.write(|c| {
        lock_chain(c)?;
        let Some(last) = repo::audit::last(c)? else {
            return Ok(None);
        };
        if last.action == CHECKPOINT {
            return Ok(None);
        }
        let claims = serde_json::json!({
            "iss": issuer,
            "iat": now().and_utc().timestamp(),
            "audit_seq": last.seq,
            "audit_hash": last.hash,
        });
        let jws = sign(verify::CHECKPOINT_TYP, &claims)
            .map_err(|e| anyhow::anyhow!("cannot sign the audit checkpoint: {e}"))?;
        let entry = Entry::new(CHECKPOINT)
            .detail("seq", last.seq)
            .detail("hash", last.hash.as_str())
            .detail("jws", jws);
        append(c, vec![entry], None)?;
        Ok::<_, anyhow::Error>(Some(last.seq))
    })?;
    Ok(covered)
}

/// Serialises appends to the chain until the transaction ends (PostgreSQL; SQLite has one writer).
pub(crate) fn lock_chain(conn: &mut DbConnection) -> QueryResult<()> {
    repo::advisory_lock(conn, "audit", "chain")
}

/// `canonical(entry)`, as the module doc defines it.
pub fn canonical(row: &AuditRow) -> String {
    let s = |v: &str| Value::from(v).to_string();
    let o = |v: &Option<String>| v.as_deref().map_or_else(|| "null".to_owned(), s);
    format!(
        r#"{{"action":{},"actor":{},"details":{},"outcome":{},"request_id":{},"seq":{},"subject":{},"target_id":{},"target_name":{},"target_type":{},"time":{}}}"#,
        s(&row.action),
        s(&row.actor),
        row.details,
        s(&row.outcome),
        o(&row.request_id),
        row.seq,
        o(&row.subject),
        o(&row.target_id),
        o(&row.target_name),
        o(&row.target_type),
        s(&format_time(row.time)),
    )
}

/// `hash_n` for `row` given `hash_{n-1}` (hex). A malformed `prev_hash` hashes as written, so it cannot match.
pub fn chain_hash(prev_hash: &str, row: &AuditRow) -> String {
    let mut h = Sha256::new();
    match hex::decode(prev_hash) {
        Ok(raw) if raw.len() == 32 => h.update(&raw),
        _ => h.update(prev_hash.as_bytes()),
    }
    h.update(canonical(row).as_bytes());
    hex::encode(h.finalize())
}

/// JSON with object keys sorted at every level and no whitespace.
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    if let Some(x) = m.get(k) {
                        out.insert(k.clone(), sorted(x));
                    }
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // serde_json's map is ordered by key unless `preserve_order` is on; sorting explicitly keeps the encoding
    // independent of that feature.
    sorted(v).to_string()
}

/// The entries' time format: RFC 3339, UTC, milliseconds (the same as every stored time offboard shows).
pub use crate::db::format_time;

/// How an entry's time and details serialise (they live beside the row type, so `db` needs nothing from here).
pub use crate::db::models::{serialize_raw_json, serialize_time};

/// Changed top-level attributes of a SCIM resource, `{"attr": {"old": …, "new": …}}`, secrets redacted.
pub fn changes(before: Option<&Value>, after: Option<&Value>) -> Value {
    let empty = Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Map::new();
    for k in keys {
        if matches!(k.as_str(), "meta" | "id" | "schemas") {
            continue;
        }
        let (old, new) = (b.get(k), a.get(k));
        if old == new {
            continue;
        }
        let shown = |v: Option<&Value>| match v {
            None => Value::Null,
            Some(_) if is_secret(k) => Value::from("[redacted]"),
            Some(v) => v.clone(),
        };
        let mut pair = Map::new();
        pair.insert("old".into(), shown(old));
        pair.insert("new".into(), shown(new));
        out.insert(k.clone(), Value::Object(pair));
    }
    Value::Object(out)
}

fn is_secret(attribute: &str) -> bool {
    let a = attribute.to_ascii_lowercase();
    a.contains("password") || a.contains("secret") || a.contains("token")
}

/// Bounds how many refused authentications one instance records per minute, so a flood of bad credentials cannot
/// fill the disk; the first entry after a full window says how many were left out.
#[derive(Debug)]
pub struct FailureLimiter {
    per_minute: u32,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    window_start: Instant,
    recorded: u32,
    suppressed: u64,
}

impl FailureLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            state: Mutex::new(LimiterState {
                window_start: Instant::now(),
                recorded: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether to record one more failure now; `Some(n)` carries how many were left out before it.
    pub fn admit(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.window_start.elapsed() >= Duration::from_secs(60) {
            s.window_start = Instant::now();
            s.recorded = 0;
        }
        if s.recorded >= self.per_minute {
            s.suppressed += 1;
            return None;
        }
        s.recorded += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

/// Records a refused authentication on a SCIM or admin endpoint, when `limiter` admits one more now.
pub fn auth_failure(
    db: &Db,
    limiter: &FailureLimiter,
    credential: Option<&str>,
    reason: &'static str,
    path: &str,
) {
    if let Some(suppressed) = limiter.admit() {
        record_auth_failure(db, suppressed, credential, reason, path);
    }
}

/// Writes a refused authentication admitted by a [`FailureLimiter`] (`suppressed`: how many it left out before).
pub fn record_auth_failure(
    db: &Db,
    suppressed: u64,
    credential: Option<&str>,
    reason: &'static str,
    path: &str,
) {
    let mut e = Entry::new("auth.failure")
        .outcome("denied")
        .actor(credential.unwrap_or("anonymous"))
        .detail("reason", reason)
        .detail("path", path);
    if let Some(name) = credential {
        e = e.target("credential", name, None);
    }
    if suppressed > 0 {
        e = e.detail("suppressed_before", suppressed);
    }
    if let Err(err) = record_now(db, vec![e]) {
        tracing::warn!("could not record a refused authentication: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(details: &str) -> AuditRow {
        AuditRow {
            seq: 1,
            time: chrono::DateTime::from_timestamp_millis(1_764_582_000_123)
                .unwrap()
                .naive_utc(),
            actor: "okta".into(),
            action: "scim.user.patch".into(),
            target_type: Some("user".into()),
            target_id: Some("u1".into()),
            target_name: Some("jane@example.com".into()),
            subject: Some("u1".into()),
            request_id: None,
            outcome: "success".into(),
            details: details.into(),
            prev_hash: GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn canonical_encoding_is_the_documented_one() {
        assert_eq!(
            canonical(&row(r#"{"a":1}"#)),
            r#"{"action":"scim.user.patch","actor":"okta","details":{"a":1},"outcome":"success","request_id":null,"seq":1,"subject":"u1","target_id":"u1","target_name":"jane@example.com","target_type":"user","time":"2025-12-01T09:40:00.123Z"}"#
        );
        // Any change to any field changes the hash.
        let h = chain_hash(GENESIS, &row("{}"));
        assert_eq!(h.len(), 64);
        assert_ne!(h, chain_hash(GENESIS, &row(r#"{"a":1}"#)));
        let mut other = row("{}");
        other.actor = "mallory".into();
        assert_ne!(h, chain_hash(GENESIS, &other));
        assert_ne!(h, chain_hash(&"1".repeat(64), &row("{}")));
    }

    #[test]
    fn details_are_sorted_and_compact() {
        let v = serde_json::json!({"b": {"z": 1, "a": [ {"y": 2, "x": 1} ]}, "a": "\u{e9}\"q"});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":"é\"q","b":{"a":[{"x":1,"y":2}],"z":1}}"#
        );
    }

    #[test]
    fn changes_show_old_and_new_and_redact_secrets() {
        let before = serde_json::json!({"id": "1", "userName": "a", "title": "x", "password": "hunter2",
                                        "meta": {"version": "1"}});
        let after = serde_json::json!({"id": "1", "userName": "a", "title": "y", "password": "hunter3",
                                       "active": false, "meta": {"version": "2"}});
        let c = changes(Some(&before), Some(&after));
        assert_eq!(
            c,
            serde_json::json!({
                "active": {"old": null, "new": false},
                "password": {"old": "[redacted]", "new": "[redacted]"},
                "title": {"old": "x", "new": "y"},
            })
        );
        assert!(!c.to_string().contains("hunter"));
    }

    #[test]
    fn the_failure_limiter_admits_a_budget_per_minute() {
        let limiter = FailureLimiter::new(2);
        assert_eq!(limiter.admit(), Some(0));
        assert_eq!(limiter.admit(), Some(0));
        assert_eq!(limiter.admit(), None);
        assert_eq!(limiter.admit(), None);
        // A new window reports what the last one left out.
        limiter
            .state
            .lock()
            .unwrap()
            .window_start
            .clone_from(&Instant::now().checked_sub(Duration::from_secs(61)).unwrap());
        assert_eq!(limiter.admit(), Some(2));
        assert_eq!(limiter.admit(), Some(0));
    }
}
