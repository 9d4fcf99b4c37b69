//! The operator console's use cases, free of HTTP: signing in with a credential that holds the `console` (or
//! `admin`) scope and the server-side sessions that follow, the live feed of access changes read from the audit
//! log, and the Users page's search. Its actions on users go through `lifecycle::users`, the same use cases the
//! CLI calls.
//!
//! # Sessions
//! A session id and its CSRF token are 256-bit random values; only their SHA-256 hashes are stored
//! (`console_sessions`), and presented values are compared in constant time. A session ends at sign-out, when its
//! credential is revoked or loses the scope, after `console.idle_minutes` without a request, or
//! `console.absolute_hours` after sign-in, whichever comes first. `last_seen` is written at most every
//! [`TOUCH_EVERY`], so a page load costs no write most of the time.
//!
//! # The feed
//! The live view is derived from the audit log: its entries are committed in `seq` order with no gaps (the chain
//! is appended under a lock held until commit), so "every feed entry with `seq` above N" is exactly what a viewer
//! who has seen N has missed: resuming from the SSE `Last-Event-ID` (the `seq`) loses nothing.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{NaiveDateTime, TimeDelta};
use rand::RngCore;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::audit::{self, Entry, FailureLimiter};
use crate::config::ConsoleConfig;
use crate::credentials::{self, Presented, Scope, hash_secret};
use crate::db::models::{AuditRow, ConsoleSession, UserHold};
use crate::db::repo::console::StatusFilter;
use crate::db::{Db, DbConnection, DbError, format_time, now, repo};
use crate::error::AppError;

/// How stale `last_seen` may get before a request writes it again.
pub const TOUCH_EVERY: Duration = Duration::from_secs(15);

/// A fresh 256-bit random value, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `presented` hashes to `stored_hash`, compared in constant time.
fn matches_hash(presented: &str, stored_hash: &str) -> bool {
    hash_secret(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// Whether two values a client sent are equal, compared in constant time (the sign-in form's double submit).
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A new random token for the sign-in form's double-submit check.
pub fn sign_in_nonce() -> String {
    random_token()
}

/// What a successful sign-in hands the browser: the session id and its CSRF token, both secret.
pub struct NewSession {
    pub id: String,
    pub csrf: String,
    pub credential: String,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("unknown credential or wrong secret")]
    Refused,
    #[error("this credential holds neither the console nor the admin scope")]
    NoScope,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for SignInError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

fn may_sign_in(scopes: impl IntoIterator<Item = Scope>) -> bool {
    scopes
        .into_iter()
        .any(|s| matches!(s, Scope::Console | Scope::Admin))
}

fn idle(cfg: &ConsoleConfig) -> TimeDelta {
    TimeDelta::minutes(i64::from(cfg.idle_minutes))
}

/// Signs in with a credential's name and secret: a new session, recorded as `console.sign_in`. A refusal is
/// recorded too (outcome `denied`, within `failures`' budget).
pub fn sign_in(
    db: &Db,
    cfg: &ConsoleConfig,
    failures: &FailureLimiter,
    name: &str,
    secret: &str,
) -> Result<NewSession, SignInError> {
    let presented = Presented::Basic {
        name: name.to_owned(),
        secret: secret.to_owned(),
    };
    let client = db.read(|c| credentials::authenticate(c, &presented).map_err(SignInError::from))?;
    let refusal = match &client {
        None => Some((SignInError::Refused, "unknown credential or wrong secret")),
        Some(client) if !may_sign_in(client.scopes.iter().copied()) => {
            Some((SignInError::NoScope, "missing scope console"))
        }
        Some(_) => None,
    };
    if let Some((err, reason)) = refusal {
        if let Some(suppressed) = failures.admit() {
            let shown = name
                .char_indices()
                .nth(64)
                .map_or(name, |(i, _)| name.get(..i).unwrap_or(name));
            let mut e = Entry::new("console.sign_in")
                .outcome("denied")
                .actor(if shown.is_empty() { "anonymous" } else { shown })
                .detail("reason", reason);
            if suppressed > 0 {
                e = e.detail("suppressed_before", suppressed);
            }
            if let Err(err) = audit::record_now(db, vec![e]) {
                tracing::warn!("could not record a refused console sign-in: {err}");
            }
        }
        tracing::info!("refused a console sign-in: {reason}");
        return Err(err);
    }
    let credential = name.to_owned();
    let session = NewSession {
        id: random_token(),
        csrf: random_token(),
        credential: credential.clone(),
    };
    let at = now();
    let row = ConsoleSession {
        id_hash: hash_secret(&session.id),
        credential_name: credential.clone(),
        csrf_hash: hash_secret(&session.csrf),
        created: at,
        last_seen: at,
        expires: at + TimeDelta::hours(i64::from(cfg.absolute_hours)),
    };
    db.write(|c| {
        repo::console::delete_expired(c, at, at - idle(cfg))?;
        repo::console::insert_session(c, &row)?;
        audit::record(
            Entry::new("console.sign_in")
                .actor(&credential)
                .target("credential", &credential, Some(&credential))
                .detail("expires", format_time(row.expires)),
        );
        Ok::<_, SignInError>(())
    })?;
    tracing::info!(credential.name = %credential, "console sign-in by {credential}");
    Ok(session)
}

/// A live session, as checked for one request.
#[derive(Debug, Clone)]
pub struct Session {
    /// The credential that signed in: the actor of everything done through this session.
    pub credential: String,
    id_hash: String,
    csrf_hash: String,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, presented: &str) -> bool {
        !presented.is_empty() && matches_hash(presented, &self.csrf_hash)
    }
}

/// The session whose id is `id`, if it is live: not past its absolute or idle expiry, its credential live and still
/// allowed in. With `touch`, moves `last_seen` forward (at most every [`TOUCH_EVERY`]); the live feed does not, so
/// a page left open does not keep a session alive. An expired session is deleted.
pub fn check(db: &Db, cfg: &ConsoleConfig, id: &str, touch: bool) -> Result<Option<Session>, DbError> {
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    let id_hash = hash_secret(id);
    let Some((row, scopes)) = db.read(|c| repo::console::find_session(c, &id_hash).map_err(DbError::from))?
    else {
        return Ok(None);
    };
    let at = now();
    if !matches_hash(id, &row.id_hash) || !may_sign_in(scopes.split(',').filter_map(Scope::parse)) {
        return Ok(None);
    }
    if row.expires <= at || row.last_seen + idle(cfg) <= at {
        db.write(|c| {
            repo::console::delete_session(c, &id_hash)?;
            audit::record(
                Entry::new("console.session_expired")
                    .actor(audit::SYSTEM_ACTOR)
                    .target("credential", &row.credential_name, Some(&row.credential_name))
                    .detail("why", if row.expires <= at { "absolute" } else { "idle" }),
            );
            Ok::<_, DbError>(())
        })?;
        return Ok(None);
    }
    if touch && at - row.last_seen >= TimeDelta::from_std(TOUCH_EVERY).unwrap_or_default() {
        db.write(|c| repo::console::touch_session(c, &id_hash, at).map_err(DbError::from))?;
    }
    Ok(Some(Session {
        credential: row.credential_name,
        id_hash,
        csrf_hash: row.csrf_hash,
    }))
}

/// Ends a session (sign-out), recorded as `console.sign_out`.
pub fn sign_out(db: &Db, session: &Session) -> Result<(), DbError> {
    db.write(|c| {
        if repo::console::delete_session(c, &session.id_hash)? == 1 {
            audit::record(Entry::new("console.sign_out").actor(&session.credential).target(
                "credential",
                &session.credential,
                Some(&session.credential),
            ));
        }
        Ok::<_, DbError>(())
    })?;
    tracing::info!(credential.name = %session.credential, "console sign-out by {}", session.credential);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// The live feed.

/// Audit actions that ended (or restored) a user's access.
const ACCESS_ACTIONS: [&str; 8] = [
    "user.deactivate",
    "user.delete",
    "user.end_sessions",
    "user.reactivate",
    "user.hold",
    "user.release",
    "token.reuse_detected",
    "token.revoke",
];

/// Every audit action the feed shows.
pub const FEED_ACTIONS: [&str; 10] = [
    "user.deactivate",
    "user.delete",
    "user.end_sessions",
    "user.reactivate",
    "user.hold",
    "user.release",
    "token.reuse_detected",
    "token.revoke",
    "set.delivery",
    "token.revoked_presented",
];

/// Most entries one feed read returns.
pub const FEED_BATCH: i64 = 200;

/// One event of the live view: `id` is the audit `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    pub id: i64,
    /// `access`, `delivery` or `presented`.
    pub kind: &'static str,
    pub data: Value,
}

/// What one poll of the feed found: its events, and the `seq` a viewer has now seen (the log's tail when no more
/// is pending), so the next poll starts there.
#[derive(Debug, Clone, Default)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    pub seen: i64,
}

fn details(row: &AuditRow) -> Value {
    serde_json::from_str(&row.details).unwrap_or(Value::Null)
}

fn text(v: &Value, key: &str) -> Value {
    v.get(key).cloned().unwrap_or(Value::Null)
}

/// What ended the access an entry records, in words an operator reads.
fn ended_by(c: &mut DbConnection, row: &AuditRow, d: &Value) -> Result<&'static str, DbError> {
    let reason = d.get("reason").and_then(Value::as_str).unwrap_or_default();
    Ok(match row.action.as_str() {
        "user.delete" => "IdP delete",
        "user.deactivate" => {
            // The request entry of the same transaction (same time, just before) tells the IdP from an operator.
            let before = repo::audit::after(c, (row.seq - 4).max(0), 3)?;
            let operator = before
                .iter()
                .any(|r| r.seq < row.seq && r.time == row.time && r.action.starts_with("admin."));
            if operator {
                "operator hold"
            } else {
                "IdP deactivate"
            }
        }
        "user.end_sessions" if reason == "removed from group" || reason == "group deleted" => "group removal",
        "user.end_sessions" => "operator",
        "token.reuse_detected" => "refresh token reuse",
        "token.revoke" => "token revoked by its client",
        "user.hold" => "operator hold",
        "user.release" => "hold released",
        "user.reactivate" => "IdP reactivate",
        _ => "other",
    })
}

/// The feed event of one audit entry.
fn event_of(
    c: &mut DbConnection,
    row: &AuditRow,
    streams: &HashMap<String, (String, String)>,
) -> Result<FeedEvent, DbError> {
    let audience = |id: &str| streams.get(id).map(|(a, _)| a.clone());
    let method = |id: &str| streams.get(id).map(|(_, m)| m.clone());
    let d = details(row);
    let common = |extra: Value| {
        let mut v = json!({
            "seq": row.seq,
            "time": format_time(row.time),
            "action": row.action,
            "actor": row.actor,
            "outcome": row.outcome,
            "user_id": row.subject,
            "user_name": if row.target_type.as_deref() == Some("user") { Value::from(row.target_name.clone()) } else { Value::Null },
        });
        if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
            m.extend(x);
        }
        v
    };
    if row.action == "set.delivery" {
        let stream = row.target_id.clone().unwrap_or_default();
        return Ok(FeedEvent {
            id: row.seq,
            kind: "delivery",
            data: common(json!({
                "txn": text(&d, "txn"),
                "jti": text(&d, "jti"),
                "event": text(&d, "event"),
                "method": text(&d, "method"),
                "attempt": text(&d, "attempt"),
                "latency_ms": text(&d, "latency_ms"),
                "error": text(&d, "error"),
                "audience": audience(&stream),
                "stream_id": stream,
            })),
        });
    }
    if row.action == "token.revoked_presented" {
        return Ok(FeedEvent {
            id: row.seq,
            kind: "presented",
            data: common(json!({
                "client_id": text(&d, "client_id"),
                "via": text(&d, "via"),
                "reason": text(&d, "reason"),
            })),
        });
    }
    let txn = d.get("txn").and_then(Value::as_str);
    let deliveries: Vec<Value> = match txn {
        Some(txn) => repo::fanout::outbox_of_txn(c, txn)?
            .into_iter()
            .map(|o| {
                json!({
                    "stream_id": o.stream_id,
                    "audience": audience(&o.stream_id),
                    "method": method(&o.stream_id),
                    "jti": o.jti,
                    "event": o.event_type,
                    "status": match o.status.as_str() {
                        "delivered" => "delivered",
                        "dead" => "dead_lettered",
                        _ if o.attempts > 0 => "retrying",
                        _ => "queued",
                    },
                    "latency_ms": o.delivered_at.map(|t| (t - o.created).num_milliseconds()),
                })
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(FeedEvent {
        id: row.seq,
        kind: "access",
        data: common(json!({
            "ended_by": ended_by(c, row, &d)?,
            "reason": text(&d, "reason"),
            "previous_generation": text(&d, "previous_generation"),
            "generation": text(&d, "generation"),
            "refresh_families_revoked": text(&d, "refresh_families_revoked"),
            "txn": txn,
            "request_id": row.request_id,
            "deliveries": deliveries,
        })),
    })
}

fn events_of(c: &mut DbConnection, rows: &[AuditRow]) -> Result<Vec<FeedEvent>, DbError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let streams: HashMap<String, (String, String)> = repo::fanout::streams(c)?
        .into_iter()
        .map(|s| (s.id, (s.audience, s.delivery_method)))
        .collect();
    rows.iter().map(|r| event_of(c, r, &streams)).collect()
}

/// The feed after `seq` (exclusive), at most [`FEED_BATCH`] events. Only entries up to the log's tail as read
/// before the fan-out's waiting changes are expanded (`fanout::pending::expand`) are sent: a change's audit entry
/// and its waiting SETs commit together, so every change sent shows its queued deliveries; later ones wait for
/// the next poll.
pub fn feed_after(db: &Db, seq: i64) -> Result<FeedPage, DbError> {
    let tail = db
        .read(|c| repo::audit::tail(c).map_err(DbError::from))?
        .map_or(0, |(s, _)| s);
    crate::fanout::pending::expand(db)?;
    db.read(|c| {
        let mut rows = repo::console::feed_after(c, seq, &FEED_ACTIONS, FEED_BATCH)?;
        let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= FEED_BATCH;
        rows.retain(|r| r.seq <= tail);
        let seen = match rows.last() {
            Some(last) if full => last.seq,
            _ => tail.max(seq),
        };
        Ok(FeedPage {
            events: events_of(c, &rows)?,
            seen,
        })
    })
}

/// What a viewer resuming after `seq` gets: the feed after it, or, when `seq` is beyond the log's tail (a database
/// reset under an open page), the recent history as a new viewer would.
pub fn feed_resume(db: &Db, seq: i64, limit: i64) -> Result<FeedPage, DbError> {
    let tail = db
        .read(|c| repo::audit::tail(c).map_err(DbError::from))?
        .map_or(0, |(s, _)| s);
    if seq > tail {
        return feed_recent(db, limit);
    }
    feed_after(db, seq)
}

/// The last `limit` events of the feed (what a new viewer sees first), and where the live part starts.
pub fn feed_recent(db: &Db, limit: i64) -> Result<FeedPage, DbError> {
    crate::fanout::pending::expand(db)?;
    db.read(|c| {
        let tail = repo::audit::tail(c)?.map_or(0, |(s, _)| s);
        let rows = repo::console::feed_recent(c, &FEED_ACTIONS, limit)?;
        let seen = rows.last().map_or(tail, |r| r.seq.max(tail));
        Ok(FeedPage {
            events: events_of(c, &rows)?,
            seen,
        })
    })
}

/// Whether an audit action belongs to the access rows of the feed.
pub fn is_access(action: &str) -> bool {
    ACCESS_ACTIONS.contains(&action)
}

// ---------------------------------------------------------------------------------------------------------------
// Users.

/// One user as the Users page lists it.
#[derive(Debug, Clone)]
pub struct UserLine {
    pub id: String,
    pub user_name: String,
    pub emails: Vec<String>,
    pub active: bool,
    pub hold: Option<UserHold>,
    pub generation: i64,
    pub groups: Vec<String>,
    /// Live refresh-token logins.
    pub live_sessions: usize,
    /// The last time one of the user's tokens was minted, refreshed or introspected.
    pub last_token_use: Option<NaiveDateTime>,
}

/// Parses the Users page's status filter (`any` when empty).
pub fn status_filter(s: &str) -> Option<StatusFilter> {
    Some(match s {
        "" | "any" => StatusFilter::Any,
        "active" => StatusFilter::Active,
        "inactive" => StatusFilter::Inactive,
        "held" => StatusFilter::Held,
        _ => return None,
    })
}

/// Most users the Users page shows at once.
pub const USERS_PAGE: i64 = 100;

/// Live users whose userName or an email contains `query` (case-insensitive), with what they hold.
pub fn search_users(db: &Db, query: &str, status: StatusFilter) -> Result<Vec<UserLine>, AppError> {
    let folded = crate::scim::schema::fold(query.trim());
    db.read(|c| {
        let users = repo::console::search_users(c, &folded, status, USERS_PAGE)?;
        lines_of(c, &users)
    })
}

/// One live user with what it holds, or None.
pub fn user_line(db: &Db, id: &str) -> Result<Option<UserLine>, AppError> {
    db.read(|c| {
        let Some(user) = repo::users::find_live(c, id)? else {
            return Ok(None);
        };
        Ok(lines_of(c, std::slice::from_ref(&user))?.into_iter().next())
    })
}

fn lines_of(c: &mut DbConnection, users: &[crate::db::models::User]) -> Result<Vec<UserLine>, AppError> {
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let mut groups = repo::groups::groups_of(c, &ids)?;
    let at = now();
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let activity = repo::tokens::activity_of(c, &u.id)?;
        let last_token_use = activity
            .iter()
            .flat_map(|a| [a.last_minted_at, a.last_refreshed_at, a.last_introspected_at])
            .flatten()
            .max();
        out.push(UserLine {
            id: u.id.clone(),
            user_name: u.user_name.clone(),
            emails: repo::console::emails_of(c, &u.id)?,
            active: u.active,
            hold: repo::users::hold(c, &u.id)?,
            generation: u.token_generation,
            groups: groups
                .remove(&u.id)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, name)| name)
                .collect(),
            live_sessions: repo::tokens::live_families(c, &u.id, at)?.len(),
            last_token_use,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------------
// The chart.

/// One hour of the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourBucket {
    pub start: NaiveDateTime,
    /// Endings of access (deactivations, deletions, sessions ended).
    pub endings: u32,
    /// Median and slowest latency of the SETs delivered in the hour, from the change's commit.
    pub median_ms: Option<i64>,
    pub max_ms: Option<i64>,
}

/// Most audit entries the chart reads; beyond, the oldest hours are left incomplete (and it says so).
pub const CHART_ROWS: i64 = 20_000;

/// Endings of access and delivery latency per hour over the last `hours` hours (the current one last), from the
/// audit log; `true` when more entries than [`CHART_ROWS`] fell in the window.
pub fn activity_by_hour(db: &Db, hours: u32) -> Result<(Vec<HourBucket>, bool), DbError> {
    let at = now();
    let hour = TimeDelta::hours(1);
    let current = at
        .date()
        .and_hms_opt(chrono::Timelike::hour(&at), 0, 0)
        .unwrap_or(at);
    let first = current - hour * i32::try_from(hours.saturating_sub(1)).unwrap_or(0);
    let selection = repo::audit::Selection {
        since: Some(first),
        actions: [
            "user.deactivate",
            "user.delete",
            "user.end_sessions",
            "set.delivery",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..repo::audit::Selection::default()
    };
    // The newest entries first would need another query shape; the window is read from its start, bounded.
    let rows = db.read(|c| repo::audit::batch(c, &selection, CHART_ROWS + 1).map_err(DbError::from))?;
    let truncated = i64::try_from(rows.len()).unwrap_or(i64::MAX) > CHART_ROWS;
    let mut buckets: Vec<(HourBucket, Vec<i64>)> = (0..hours)
        .map(|i| {
            (
                HourBucket {
                    start: first + hour * i32::try_from(i).unwrap_or(0),
                    endings: 0,
                    median_ms: None,
                    max_ms: None,
                },
                Vec::new(),
            )
        })
        .collect();
    for row in rows
        .iter()
        .take(usize::try_from(CHART_ROWS).unwrap_or(usize::MAX))
    {
        let Ok(index) = usize::try_from((row.time - first).num_hours()) else {
            continue;
        };
        let Some((bucket, latencies)) = buckets.get_mut(index) else {
            continue;
        };
        if row.action == "set.delivery" {
            if row.outcome == "delivered"
                && let Some(ms) = details(row).get("latency_ms").and_then(Value::as_i64)
            {
                latencies.push(ms);
            }
        } else {
            bucket.endings += 1;
        }
    }
    let out = buckets
        .into_iter()
        .map(|(mut b, mut l)| {
            l.sort_unstable();
            b.median_ms = l.get(l.len() / 2).copied();
            b.max_ms = l.last().copied();
            b
        })
        .collect();
    Ok((out, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_compared_by_hash() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert!(matches_hash(&a, &hash_secret(&a)));
        assert!(!matches_hash(&a, &hash_secret("other")));
        assert!(same_token("x", "x") && !same_token("", "") && !same_token("x", "y"));
    }

    #[test]
    fn only_console_or_admin_may_sign_in() {
        assert!(may_sign_in([Scope::Console]));
        assert!(may_sign_in([Scope::Scim, Scope::Admin]));
        assert!(!may_sign_in([Scope::Scim, Scope::AuditRead]));
    }

    #[test]
    fn status_filters_parse() {
        assert_eq!(status_filter(""), Some(StatusFilter::Any));
        assert_eq!(status_filter("held"), Some(StatusFilter::Held));
        assert_eq!(status_filter("gone"), None);
    }
}
