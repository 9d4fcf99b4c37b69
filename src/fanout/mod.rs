//! Revocation fan-out: offboard as an `OpenID` Shared Signals transmitter. Every change that ends (or restores)
//! access records its SETs and their receivers **in the transaction of the change** ([`enqueue`], called only
//! from `lifecycle`): one `outbox_changes` row, so the change and the news of it commit together or not at all
//! (ARCHITECTURE.md invariant 1), whatever the number of streams. [`pending::expand`] turns it into one outbox row per
//! event per receiving stream after the commit, before anything reads the outbox. The delivery worker is woken
//! after the commit ([`worker`]); it signs each SET (RFC 8417, `typ: secevent+jwt`, RS256 with the active key)
//! when it sends it, so a transaction never waits for RSA.
//!
//! The row keeps what the SET says (event type, user, `txn`, the event's members including `min_tgen`) and its
//! stable `jti`; the worker adds `iss`, `aud` (the stream's) and the subject (`iss_sub` of the user, or `complex`
//! user + session when one login ended) from its configuration, so every retry sends the same claims.
//!
//! Events (docs/decisions/0023-events-per-change.md): deactivate → `account-disabled` + `session-revoked`; delete →
//! `account-purged` +
//! `session-revoked`; reactivate → `account-enabled`; sessions ended with the account kept (group removal, Global
//! Token Revocation, `users revoke-tokens`) → `session-revoked`; one login ended (refresh-token reuse, RFC 7009)
//! → `session-revoked` for that session. Every event carries `min_tgen`, the generation now in force.
//!
//! Two revocations have no user-wide event: an access token revoked by its `jti` (RFC 7009) is a CAEP
//! `session-revoked` whose subject is that one token (SSF's `jwt_id` format: `iss` + `jti`), with the token's
//! `exp`; a signing key declared compromised is offboard's own [`KEY_COMPROMISED`] event with the `kid` (README,
//! "Revocation fan-out", says why).

pub mod metrics;
pub mod pending;
pub mod poll;
pub mod snapshot;
pub mod streams;
pub mod worker;

use serde_json::{Value, json};

use crate::config::SubjectFormat;
use crate::db::models::{NewOutbox, OutboxRow, StreamRow};
use crate::db::{DbConnection, now, repo};

pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub const ACCOUNT_ENABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
pub const ACCOUNT_PURGED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-purged";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// offboard's own event: a signing key (`kid`) must no longer be trusted. No SSF, CAEP or RISC event names a key
/// of the transmitter.
pub const KEY_COMPROMISED: &str = "urn:offboard:secevent:key-compromised";

/// The event types offboard emits.
pub const EVENTS_SUPPORTED: [&str; 5] = [
    SESSION_REVOKED,
    ACCOUNT_DISABLED,
    ACCOUNT_ENABLED,
    ACCOUNT_PURGED,
    KEY_COMPROMISED,
];

/// What happened to a user, as one SET each.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    AccountDisabled,
    AccountEnabled,
    AccountPurged,
    /// Every session of the user ended.
    SessionsRevoked {
        reason: &'a str,
        initiator: Initiator,
    },
    /// One login (refresh-token family) ended.
    SessionRevoked {
        sid: &'a str,
        reason: &'a str,
        initiator: Initiator,
    },
    /// One access token, revoked by its `jti` until `exp` (seconds since the epoch, leeway included).
    TokenRevoked {
        jti: &'a str,
        exp: i64,
        reason: &'a str,
        initiator: Initiator,
    },
    /// A signing key declared compromised: no token it signed may be accepted.
    KeyCompromised {
        kid: &'a str,
        reason: &'a str,
    },
}

/// CAEP `initiating_entity`.
#[derive(Debug, Clone, Copy)]
pub enum Initiator {
    Admin,
    Policy,
    System,
}

impl Initiator {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Policy => "policy",
            Self::System => "system",
        }
    }
}

impl Event<'_> {
    pub fn uri(&self) -> &'static str {
        match self {
            Self::AccountDisabled => ACCOUNT_DISABLED,
            Self::AccountEnabled => ACCOUNT_ENABLED,
            Self::AccountPurged => ACCOUNT_PURGED,
            Self::SessionsRevoked { .. } | Self::SessionRevoked { .. } | Self::TokenRevoked { .. } => {
                SESSION_REVOKED
            }
            Self::KeyCompromised { .. } => KEY_COMPROMISED,
        }
    }

    /// The stored form: the event's members and, for one session, its id.
    fn payload(&self, min_tgen: i64, at: i64) -> Value {
        let caep = |reason: &str, initiator: Initiator| {
            json!({
                "initiating_entity": initiator.as_str(),
                "reason_admin": {"en": reason},
                "event_timestamp": at,
                "min_tgen": min_tgen,
            })
        };
        match self {
            Self::AccountDisabled | Self::AccountEnabled | Self::AccountPurged => {
                json!({"event": {"min_tgen": min_tgen}})
            }
            Self::SessionsRevoked { reason, initiator } => json!({"event": caep(reason, *initiator)}),
            Self::SessionRevoked {
                sid,
                reason,
                initiator,
            } => json!({"event": caep(reason, *initiator), "session": sid}),
            Self::TokenRevoked {
                jti,
                exp,
                reason,
                initiator,
            } => {
                // The generation does not change: the subject is the token, not the user.
                let mut event = caep(reason, *initiator);
                if let Value::Object(m) = &mut event {
                    m.remove("min_tgen");
                    m.insert("exp".into(), json!(exp));
                }
                json!({"event": event, "token": jti})
            }
            Self::KeyCompromised { kid, reason } => json!({
                "event": {"kid": kid, "reason_admin": {"en": reason}, "event_timestamp": at},
                "key": kid,
            }),
        }
    }
}

/// The claims of the SET an outbox row stands for, on `stream` (RFC 8417 with the SSF profile: no `sub`, no `exp`,
/// one event): `iss`, the row's stable `jti`, `iat` = when the change committed, the stream's `aud`, `txn`, and
/// the subject (`iss_sub` of the user; `complex` user + session when one login ended; `jwt_id` when one access
/// token was revoked; the key as `opaque` for a compromised key; the stream itself, as `opaque`, for a
/// verification).
pub fn set_claims(issuer: &str, format: SubjectFormat, stream: &StreamRow, row: &OutboxRow) -> Value {
    let stored: Value = serde_json::from_str(&row.payload).unwrap_or(Value::Null);
    let email = stored.get("email").and_then(Value::as_str);
    let user = row.user_id.as_deref().map(|id| {
        let iss_sub = json!({"format": "iss_sub", "iss": issuer, "sub": id});
        match (format, email) {
            (SubjectFormat::Email, Some(email)) => json!({"format": "email", "email": email}),
            (SubjectFormat::Aliases, Some(email)) => {
                json!({"format": "aliases", "identifiers": [iss_sub, {"format": "email", "email": email}]})
            }
            _ => iss_sub,
        }
    });
    let token = stored.get("token").and_then(Value::as_str);
    let key = stored.get("key").and_then(Value::as_str);
    let sub_id = match (stored.get("session").and_then(Value::as_str), user) {
        _ if token.is_some() => json!({"format": "jwt_id", "iss": issuer, "jti": token}),
        _ if key.is_some() => json!({"format": "opaque", "id": key}),
        (Some(sid), Some(user)) => {
            json!({"format": "complex", "user": user, "session": {"format": "opaque", "id": sid}})
        }
        (_, Some(user)) => user,
        (_, None) => json!({"format": "opaque", "id": stream.id}),
    };
    let mut events = serde_json::Map::new();
    events.insert(
        row.event_type.clone(),
        stored.get("event").cloned().unwrap_or(json!({})),
    );
    json!({
        "iss": issuer,
        "jti": row.jti,
        "iat": row.created.and_utc().timestamp(),
        "aud": stream.audience,
        "txn": row.txn,
        "sub_id": sub_id,
        "events": events,
    })
}

/// Writes one pending outbox row with a fresh `jti`, due at once, behind every change still waiting to be
/// written to the outbox (expanded first, in the same transaction), so it reaches each stream after them.
pub(crate) fn queue(
    conn: &mut DbConnection,
    stream_id: &str,
    txn: &str,
    event_type: &str,
    user_id: Option<&str>,
    payload: &str,
    at: chrono::NaiveDateTime,
) -> diesel::QueryResult<()> {
    pending::expand_all_in(conn)?;
    let jti = new_jti();
    repo::fanout::insert_outbox(
        conn,
        &NewOutbox {
            stream_id,
            jti: &jti,
            txn,
            event_type,
            user_id,
            payload,
            status: "pending",
            attempts: 0,
            next_attempt_at: at,
            created: at,
        },
    )
}

/// The user's primary email (else the first), as provisioned, for `email` subjects: from `resource`, the stored
/// resource when the caller has it, else read.
fn primary_email(
    conn: &mut DbConnection,
    user_id: &str,
    resource: Option<&str>,
) -> diesel::QueryResult<Option<String>> {
    use diesel::prelude::*;

    use crate::db::schema::users;
    let resource: Option<String> = match resource {
        Some(r) => Some(r.to_owned()),
        None => users::table
            .filter(users::id.eq(user_id))
            .select(users::resource)
            .load(conn)
            .map(repo::unique)?,
    };
    let emails = resource
        .and_then(|r| serde_json::from_str::<Value>(&r).ok())
        .and_then(|v| v.get("emails").cloned())
        .and_then(|e| e.as_array().cloned())
        .unwrap_or_default();
    let value = |e: &Value| e.get("value").and_then(Value::as_str).map(str::to_owned);
    Ok(emails
        .iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .and_then(value)
        .or_else(|| emails.first().and_then(value)))
}

/// The audit entry of one delivery attempt of a SET: `delivered`, `retrying` or `dead_lettered` (ARCHITECTURE.md:
/// every delivery is recorded, so an auditor can prove each service was told). `latency_ms` runs from the change
/// that queued the SET to this outcome.
pub(crate) fn delivery_entry(
    row: &crate::db::models::OutboxRow,
    outcome: &'static str,
    method: &'static str,
    at: chrono::NaiveDateTime,
    error: Option<&str>,
) -> crate::audit::Entry {
    let mut e = crate::audit::Entry::new("set.delivery")
        .target("stream", &row.stream_id, None)
        .outcome(outcome)
        .detail("jti", row.jti.as_str())
        .detail("txn", row.txn.as_str())
        .detail("event", row.event_type.as_str())
        .detail("method", method)
        .detail("attempt", row.attempts)
        .detail("latency_ms", (at - row.created).num_milliseconds());
    if let Some(user) = &row.user_id {
        e = e.subject(user);
    }
    if let Some(error) = error {
        e = e.detail("error", error);
    }
    e
}

/// A new SET `jti`: a time-ordered UUID (version 7: the time in milliseconds, then counter and random bits, in
/// creation order within this process), so the outbox's unique `jti` index grows at its end. A random (v4) one lands each new row on a different page of that index, and on
/// SQLite every page a change touches is written to the WAL at commit: with 50 streams that was most of the
/// index's pages, on every deactivation. A `jti` is unique, never secret: receivers de-duplicate on it.
pub(crate) fn new_jti() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A new `txn`: the id that links every event of one change.
pub fn new_txn() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Records the SETs of a change for every stream that receives them (enabled or paused, asking for the event
/// type, not having removed the user from its subjects), inside the caller's transaction: ONE `outbox_changes` row
/// with the receivers as of now, which [`pending::expand`] turns into one outbox row per event per stream after
/// the commit (the worker is woken for it then). `resource` is the user's stored resource when the caller has
/// it (saves reading it for the `email` subject). Returns the SETs that will be queued.
pub fn enqueue(
    conn: &mut DbConnection,
    user_id: &str,
    resource: Option<&str>,
    txn: &str,
    min_tgen: i64,
    events: &[Event<'_>],
) -> diesel::QueryResult<usize> {
    let streams = repo::fanout::receiving_streams(conn)?;
    let excluded = if streams.is_empty() {
        Vec::new()
    } else {
        repo::fanout::excluding(conn, user_id)?
    };
    // (stream, bit i set when it receives events[i]) for every receiving stream, in stream order.
    let targets: Vec<(&str, u32)> = streams
        .iter()
        .filter(|s| !excluded.contains(&s.id))
        .filter_map(|stream| {
            let requested: Vec<String> = serde_json::from_str(&stream.events_requested).unwrap_or_default();
            let mask = events
                .iter()
                .take(32)
                .enumerate()
                .filter(|(_, e)| requested.iter().any(|r| r == e.uri()))
                .fold(0u32, |m, (i, _)| m | (1 << i));
            (mask != 0).then_some((stream.id.as_str(), mask))
        })
        .collect();
    let queued: usize = targets.iter().map(|(_, m)| m.count_ones() as usize).sum();
    if queued == 0 {
        return Ok(0);
    }
    // Outbox ids must follow commit order, or a stream could get a later change first: on PostgreSQL ids are
    // taken at insert, so enqueuing transactions take turns (the lock is held until commit), and so does the
    // expansion (src/fanout/pending.rs). SQLite's single writer takes turns already.
    repo::advisory_lock(conn, "outbox", "order")?;
    let email = primary_email(conn, user_id, resource)?;
    let at = now();
    // Each event's stored form is the same on every stream: built once, stored once.
    let payloads: Vec<String> = events
        .iter()
        .map(|event| {
            let mut payload = event.payload(min_tgen, at.and_utc().timestamp());
            if let (Some(email), Value::Object(m)) = (&email, &mut payload) {
                m.insert("email".into(), Value::from(email.clone()));
            }
            payload.to_string()
        })
        .collect();
    let stored: Vec<(&str, &str)> = events
        .iter()
        .zip(&payloads)
        .map(|(e, p)| (e.uri(), p.as_str()))
        .collect();
    pending::record(conn, txn, user_id, at, &stored, &targets)?;
    // The worker writes the change's outbox rows (for poll streams too), then pushes what is due.
    crate::db::after_commit(worker::wake);
    // Other instances on the same PostgreSQL: the notification (`pg_notify`, NOTIFY as a function) is delivered at
    // commit, and dropped on rollback.
    if let DbConnection::Postgres(_) = conn {
        repo::fanout::notify(conn, worker::CHANNEL)?;
    }
    Ok(queued)
}

/// Writes one outbox row per event per stream that receives it, for a change that concerns no user (a service
/// token revoked by `jti`, a compromised signing key), inside the caller's transaction; like [`enqueue`] it keeps
/// commit order and wakes the worker once the transaction commits. Returns the rows written.
pub fn enqueue_unattributed(
    conn: &mut DbConnection,
    txn: &str,
    events: &[Event<'_>],
) -> diesel::QueryResult<usize> {
    let streams = repo::fanout::receiving_streams(conn)?;
    let rows: Vec<(&StreamRow, &Event<'_>)> = streams
        .iter()
        .flat_map(|stream| {
            let requested: Vec<String> = serde_json::from_str(&stream.events_requested).unwrap_or_default();
            events
                .iter()
                .filter(move |e| requested.iter().any(|r| r == e.uri()))
                .map(move |e| (stream, e))
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    repo::advisory_lock(conn, "outbox", "order")?;
    let at = now();
    for (stream, event) in &rows {
        let payload = event.payload(0, at.and_utc().timestamp());
        queue(conn, &stream.id, txn, event.uri(), None, &payload.to_string(), at)?;
    }
    if rows.iter().any(|(stream, _)| stream.delivery_method == "push") {
        crate::db::after_commit(worker::wake);
        if let DbConnection::Postgres(_) = conn {
            repo::fanout::notify(conn, worker::CHANNEL)?;
        }
    }
    Ok(rows.len())
}
