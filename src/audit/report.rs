//! The offboarding report of one user, built from the audit log alone (plus the outbox for SETs still in flight;
//! callers expand waiting fan-out changes first, `fanout::pending::expand`, so those SETs are in the outbox):
//! each time the user lost access, when the IdP's call arrived, when the generation was bumped, how many access
//! tokens and refresh-token logins that invalidated, and what each subscribed stream was told and when. It is the
//! proof an auditor asks for, as JSON (`GET /audit/users/{id}/offboarding`) or text (`offboard audit offboarding`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::format_time;
use crate::db::models::{AuditRow, User};
use crate::db::repo::audit::Selection;
use crate::db::{Db, DbError, repo};

/// Actions that end a user's access.
const ENDINGS: [&str; 3] = ["user.deactivate", "user.delete", "user.end_sessions"];
/// Actions that mint or refresh tokens for a user (their entries carry `tgen` and `exp`).
const GRANTS: [&str; 4] = [
    "token.mint",
    "token.refresh",
    "token.exchange",
    "token.client_credentials",
];

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub user: UserSummary,
    pub offboardings: Vec<Offboarding>,
    pub generated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserSummary {
    pub id: String,
    pub user_name: String,
    pub active: bool,
    pub deleted_at: Option<String>,
    pub token_generation: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Offboarding {
    /// The audit entry of the ending of access.
    pub seq: i64,
    /// `user.deactivate`, `user.delete` or `user.end_sessions`.
    pub action: String,
    pub reason: Option<String>,
    pub actor: String,
    pub request_id: Option<String>,
    /// The request that caused it (`scim.user.patch`, `admin.user.deactivate`…), when there was one.
    pub cause: Option<String>,
    /// When the IdP's (or the administrator's) request reached offboard.
    pub request_received_at: Option<String>,
    /// When the change committed: from then on every older token is refused.
    pub generation_bumped_at: String,
    pub previous_generation: Option<i64>,
    pub generation: Option<i64>,
    /// Access tokens issued before, still unexpired at that moment, now refused.
    pub access_tokens_invalidated: u64,
    /// Refresh-token logins (families) revoked.
    pub refresh_tokens_revoked: u64,
    pub txn: Option<String>,
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub stream_id: String,
    pub event: String,
    pub jti: String,
    /// `delivered`, `retrying`, `dead_lettered` or `pending` (not tried yet).
    pub status: String,
    pub method: Option<String>,
    pub attempts: i64,
    pub delivered_at: Option<String>,
    /// From the change's commit to the receiver's acknowledgement.
    pub latency_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no such user")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for ReportError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

/// The report of the user with this id (live or deleted).
pub fn for_user_id(db: &Db, id: &str) -> Result<Report, ReportError> {
    let user = db.read(|c| repo::users::find_any(c, id).map_err(ReportError::from))?;
    build(db, user.ok_or(ReportError::NotFound)?)
}

/// The report of the user who has (or last had) this userName.
pub fn for_user_name(db: &Db, user_name: &str) -> Result<Report, ReportError> {
    let folded = crate::scim::schema::fold(user_name);
    let users = db.read(|c| repo::users::find_any_by_folded_name(c, &folded).map_err(ReportError::from))?;
    build(db, users.into_iter().next().ok_or(ReportError::NotFound)?)
}

/// A token grant recorded for the user.
struct Grant {
    seq: i64,
    exp: i64,
    tgen: i64,
}

fn details(row: &AuditRow) -> Value {
    serde_json::from_str(&row.details).unwrap_or(Value::Null)
}

fn build(db: &Db, user: User) -> Result<Report, ReportError> {
    let selection = Selection {
        subject: Some(user.id.clone()),
        ..Selection::default()
    };
    // A user's own entries are few (its writes, grants and deliveries); read them in batches all the same.
    let mut cursor = super::export::Cursor::new(selection, None);
    let mut rows = Vec::new();
    loop {
        let batch = cursor.next_batch(db)?;
        if batch.is_empty() {
            break;
        }
        rows.extend(batch);
    }
    // Every grant's (seq, exp, tgen), parsed once.
    let grants: Vec<Grant> = rows
        .iter()
        .filter(|r| GRANTS.contains(&r.action.as_str()) && r.outcome == "success")
        .filter_map(|r| {
            let d = details(r);
            Some(Grant {
                seq: r.seq,
                exp: d.get("exp").and_then(Value::as_i64)?,
                tgen: d.get("tgen").and_then(Value::as_i64)?,
            })
        })
        .collect();
    let mut offboardings = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if !ENDINGS.contains(&row.action.as_str()) {
            continue;
        }
        let d = details(row);
        let generation = d.get("generation").and_then(Value::as_i64);
        let txn = d.get("txn").and_then(Value::as_str).map(str::to_owned);
        // The request entry of the same transaction: same commit time, just before.
        let cause = rows
            .get(..i)
            .unwrap_or_default()
            .iter()
            .rev()
            .take_while(|r| r.time == row.time)
            .find(|r| r.action.starts_with("scim.") || r.action.starts_with("admin."));
        let cutoff = row.time.and_utc().timestamp();
        let access_tokens_invalidated = grants
            .iter()
            .filter(|g| g.seq < row.seq && g.exp > cutoff && generation.is_some_and(|n| g.tgen < n))
            .count() as u64;
        let deliveries = match &txn {
            Some(txn) => deliveries(db, &rows, txn)?,
            None => Vec::new(),
        };
        offboardings.push(Offboarding {
            seq: row.seq,
            action: row.action.clone(),
            reason: d.get("reason").and_then(Value::as_str).map(str::to_owned),
            actor: row.actor.clone(),
            request_id: row.request_id.clone(),
            cause: cause.map(|c| c.action.clone()),
            request_received_at: cause.and_then(|c| {
                details(c)
                    .get("received_at")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }),
            generation_bumped_at: format_time(row.time),
            previous_generation: d.get("previous_generation").and_then(Value::as_i64),
            generation,
            access_tokens_invalidated,
            refresh_tokens_revoked: d
                .get("refresh_families_revoked")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            txn,
            deliveries,
        });
    }
    Ok(Report {
        user: UserSummary {
            id: user.id,
            user_name: user.user_name,
            active: user.active,
            deleted_at: user.deleted_at.map(format_time),
            token_generation: user.token_generation,
        },
        offboardings,
        generated_at: format_time(crate::db::now()),
    })
}

/// Every SET of change `txn`: its last recorded outcome, or its outbox state when none was recorded yet.
fn deliveries(db: &Db, rows: &[AuditRow], txn: &str) -> Result<Vec<Delivery>, ReportError> {
    let mut by_jti: BTreeMap<String, Delivery> = BTreeMap::new();
    let queued = db.read(|c| repo::fanout::outbox_of_txn(c, txn).map_err(ReportError::from))?;
    let mut order = Vec::new();
    for o in queued {
        order.push(o.jti.clone());
        by_jti.insert(
            o.jti.clone(),
            Delivery {
                stream_id: o.stream_id,
                event: o.event_type,
                jti: o.jti,
                status: match o.status.as_str() {
                    "dead" => "dead_lettered".into(),
                    "delivered" => "delivered".into(),
                    _ if o.attempts > 0 => "retrying".into(),
                    _ => "pending".into(),
                },
                method: None,
                attempts: i64::from(o.attempts),
                delivered_at: o.delivered_at.map(format_time),
                latency_ms: o.delivered_at.map(|t| (t - o.created).num_milliseconds()),
                last_error: o.last_error,
            },
        );
    }
    for r in rows.iter().filter(|r| r.action == "set.delivery") {
        let d = details(r);
        if d.get("txn").and_then(Value::as_str) != Some(txn) {
            continue;
        }
        let Some(jti) = d.get("jti").and_then(Value::as_str) else {
            continue;
        };
        if !by_jti.contains_key(jti) {
            order.push(jti.to_owned());
        }
        let delivered = r.outcome == "delivered";
        by_jti.insert(
            jti.to_owned(),
            Delivery {
                stream_id: r.target_id.clone().unwrap_or_default(),
                event: d
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                jti: jti.to_owned(),
                status: r.outcome.clone(),
                method: d.get("method").and_then(Value::as_str).map(str::to_owned),
                attempts: d.get("attempt").and_then(Value::as_i64).unwrap_or(0),
                delivered_at: delivered.then(|| format_time(r.time)),
                latency_ms: if delivered {
                    d.get("latency_ms").and_then(Value::as_i64)
                } else {
                    None
                },
                last_error: d.get("error").and_then(Value::as_str).map(str::to_owned),
            },
        );
    }
    Ok(order.iter().filter_map(|j| by_jti.remove(j)).collect())
}

/// The report as readable text. Every value that came from a client (names, reasons, a receiver's error) has its
/// control characters escaped, so a name with a newline or a terminal escape cannot forge a line of the report.
pub fn to_text(r: &Report) -> String {
    let mut out = String::new();
    let u = &r.user;
    let state = match (&u.deleted_at, u.active) {
        (Some(t), _) => format!("deleted at {}", esc(t)),
        (None, true) => "active".to_owned(),
        (None, false) => "inactive".to_owned(),
    };
    let _ = writeln!(
        out,
        "Offboarding report for {} ({})",
        esc(&u.user_name),
        esc(&u.id)
    );
    let _ = writeln!(out, "  account: {state}, token generation {}", u.token_generation);
    let _ = writeln!(out, "  generated: {}", r.generated_at);
    if r.offboardings.is_empty() {
        let _ = writeln!(out, "\nNo ending of access is recorded for this user.");
    }
    for o in &r.offboardings {
        let _ = writeln!(out);
        let what = match o.action.as_str() {
            "user.deactivate" => "deactivated",
            "user.delete" => "deleted",
            _ => "sessions ended",
        };
        let _ = writeln!(out, "{what} (audit entry {}) by {}", o.seq, esc(&o.actor));
        if let Some(reason) = &o.reason {
            let _ = writeln!(out, "  reason:                 {}", esc(reason));
        }
        if let Some(cause) = &o.cause {
            let _ = writeln!(
                out,
                "  request:                {}{}",
                esc(cause),
                o.request_id
                    .as_ref()
                    .map(|id| format!(" (request id {})", esc(id)))
                    .unwrap_or_default()
            );
        }
        if let Some(t) = &o.request_received_at {
            let _ = writeln!(out, "  request received:       {}", esc(t));
        }
        let _ = writeln!(
            out,
            "  generation bumped:      {} ({} -> {})",
            o.generation_bumped_at,
            o.previous_generation
                .map_or_else(|| "?".into(), |g| g.to_string()),
            o.generation.map_or_else(|| "?".into(), |g| g.to_string())
        );
        let _ = writeln!(out, "  access tokens refused:  {}", o.access_tokens_invalidated);
        let _ = writeln!(out, "  refresh logins revoked: {}", o.refresh_tokens_revoked);
        if o.deliveries.is_empty() {
            let _ = writeln!(out, "  streams told:           none subscribed");
        } else {
            let delivered = o.deliveries.iter().filter(|d| d.status == "delivered").count();
            let _ = writeln!(
                out,
                "  streams told:           {delivered} of {} SETs delivered",
                o.deliveries.len()
            );
            for d in &o.deliveries {
                let when = match (&d.delivered_at, d.latency_ms) {
                    (Some(t), Some(ms)) => format!("at {t}, {ms} ms after the change"),
                    _ => format!(
                        "{} attempt(s){}",
                        d.attempts,
                        d.last_error
                            .as_ref()
                            .map(|e| format!(", last error: {}", esc(e)))
                            .unwrap_or_default()
                    ),
                };
                let _ = writeln!(
                    out,
                    "    stream {}  {}  {}  {when}",
                    esc(&d.stream_id),
                    esc(short_event(&d.event)),
                    esc(&d.status)
                );
            }
        }
    }
    out
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    crate::input::escape_control(s)
}

fn short_event(uri: &str) -> &str {
    uri.rsplit('/').next().unwrap_or(uri)
}
