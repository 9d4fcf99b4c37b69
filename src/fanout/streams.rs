//! SSF streams (receivers): create, list, change status, remove. A push stream names its endpoint (`https://`,
//! or `http://` to a loopback address: docs/decisions/0025-stream-management.md) and optionally the `Authorization`
//! header offboard sends
//! with each SET, which is sealed under the key-encryption key at rest. `aud` defaults to the creating client's
//! name.

use serde_json::Value;

use super::EVENTS_SUPPORTED;
use crate::audit::{self, Entry};
use crate::db::models::StreamRow;
use crate::db::{Db, DbError, now, repo};
use crate::keys::{KeyError, KeyStore};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Invalid(String),
    #[error("no stream with id `{0}`")]
    NotFound(String),
    /// A cap on the number of streams (`fanout.max_streams_per_client`, `fanout.max_streams`) is reached.
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for StreamError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// How a stream receives its SETs. `Debug` leaves the authorization header out.
#[derive(Clone)]
pub enum Delivery {
    /// RFC 8935: offboard POSTs each SET to `endpoint_url`.
    Push {
        endpoint_url: String,
        authorization_header: Option<String>,
    },
    /// RFC 8936: the receiver polls.
    Poll,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Push { endpoint_url, .. } => f
                .debug_struct("Push")
                .field("endpoint_url", endpoint_url)
                .finish_non_exhaustive(),
            Self::Poll => f.write_str("Poll"),
        }
    }
}

/// A new stream.
#[derive(Debug, Clone)]
pub struct NewStream {
    pub audience: String,
    pub delivery: Delivery,
    /// Event-type URIs; empty means every event offboard emits.
    pub events_requested: Vec<String>,
    pub description: Option<String>,
    pub created_by: String,
}

/// A stream as shown to operators, with its outbox counts.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub row: StreamRow,
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
}

fn validate(new: &NewStream, network: &crate::outbound::AddressPolicy) -> Result<(), StreamError> {
    if new.audience.trim().is_empty() || new.audience.len() > 512 {
        return Err(StreamError::Invalid(
            "the audience must be 1-512 characters".into(),
        ));
    }
    if let Delivery::Push {
        endpoint_url,
        authorization_header,
    } = &new.delivery
    {
        validate_push(endpoint_url, authorization_header.as_deref(), network)?;
    }
    validate_events(&new.events_requested)
}

/// A push endpoint is `https://` without userinfo to a host that is not a non-public address (unless
/// `network` allows it), or `http://` to a loopback address; its header is one non-empty line.
fn validate_push(
    endpoint_url: &str,
    authorization_header: Option<&str>,
    network: &crate::outbound::AddressPolicy,
) -> Result<(), StreamError> {
    if !crate::outbound::allowed_url(endpoint_url) || url_has_no_host(endpoint_url) {
        return Err(StreamError::Invalid(format!(
            "push endpoint `{}` must be an https:// URL (http:// only to a loopback address)",
            endpoint_for_audit(endpoint_url)
        )));
    }
    network
        .check_endpoint(endpoint_url)
        .map_err(StreamError::Invalid)?;
    if authorization_header.is_some_and(|h| h.is_empty() || h.contains(['\r', '\n'])) {
        return Err(StreamError::Invalid(
            "the authorization header must be one non-empty line".into(),
        ));
    }
    Ok(())
}

/// Requested event types must include at least one that offboard emits (none requested means all).
fn validate_events(requested: &[String]) -> Result<(), StreamError> {
    if !requested.is_empty() && delivered(requested).is_empty() {
        return Err(StreamError::Invalid(format!(
            "none of the requested event types is one offboard emits (supported: {})",
            EVENTS_SUPPORTED.join(", ")
        )));
    }
    Ok(())
}

/// The events a stream gets (`events_delivered`): those requested that offboard emits, or all of them when none
/// was named. Requested types offboard does not emit are ignored (SSF §8.1.1).
pub fn delivered(requested: &[String]) -> Vec<&'static str> {
    if requested.is_empty() {
        return EVENTS_SUPPORTED.to_vec();
    }
    EVENTS_SUPPORTED
        .into_iter()
        .filter(|e| requested.iter().any(|r| r == e))
        .collect()
}

fn url_has_no_host(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default())
        .is_none_or(str::is_empty)
}

/// How many streams may exist (per creating credential, and in all), and which addresses push endpoints may
/// name.
#[derive(Debug, Clone)]
pub struct StreamCaps {
    pub per_client: i64,
    pub total: i64,
    pub network: crate::outbound::AddressPolicy,
}

impl Default for StreamCaps {
    fn default() -> Self {
        (&crate::config::FanoutConfig::default()).into()
    }
}

impl From<&crate::config::FanoutConfig> for StreamCaps {
    fn from(f: &crate::config::FanoutConfig) -> Self {
        Self {
            per_client: f.max_streams_per_client,
            total: f.max_streams,
            // Checked when the configuration is loaded; an entry that does not parse allows nothing.
            network: crate::outbound::AddressPolicy::new(&f.allowed_private_hosts).unwrap_or_default(),
        }
    }
}

/// Creates an enabled stream within the default [`StreamCaps`]; returns it.
pub fn create(db: &Db, keys: &KeyStore, new: &NewStream) -> Result<StreamRow, StreamError> {
    create_within(db, keys, new, &StreamCaps::default())
}

/// Creates an enabled stream, unless `new.created_by` already has `caps.per_client` streams or there are
/// `caps.total` in all ([`StreamError::Limit`]); returns it.
pub fn create_within(
    db: &Db,
    keys: &KeyStore,
    new: &NewStream,
    caps: &StreamCaps,
) -> Result<StreamRow, StreamError> {
    validate(new, &caps.network)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let events = delivered(&new.events_requested);
    let (method, endpoint_url, authorization_header) = match &new.delivery {
        Delivery::Push {
            endpoint_url,
            authorization_header,
        } => (
            "push",
            Some(endpoint_url.clone()),
            authorization_header
                .as_deref()
                .map(|h| keys.seal_secret(&stream_aad(&id), h.as_bytes()))
                .transpose()?,
        ),
        Delivery::Poll => ("poll", None, None),
    };
    let at = now();
    let row = StreamRow {
        id: id.clone(),
        audience: new.audience.clone(),
        delivery_method: method.into(),
        endpoint_url,
        authorization_header,
        events_requested: Value::from(events).to_string(),
        description: new.description.clone(),
        status: "enabled".into(),
        status_reason: None,
        created_by: new.created_by.clone(),
        created: at,
        updated: at,
    };
    db.write(|c| {
        // Concurrent creates on PostgreSQL take turns, so two cannot both pass the count.
        repo::advisory_lock(c, "streams", "create")?;
        if repo::fanout::count_streams(c, Some(&row.created_by))? >= caps.per_client {
            return Err(StreamError::Limit(format!(
                "`{}` has {} streams already, the most fanout.max_streams_per_client allows",
                row.created_by, caps.per_client
            )));
        }
        if repo::fanout::count_streams(c, None)? >= caps.total {
            return Err(StreamError::Limit(format!(
                "there are {} streams already, the most fanout.max_streams allows",
                caps.total
            )));
        }
        repo::fanout::insert_stream(c, &row)?;
        audit::record(
            stream_entry("stream.create", &row)
                .detail("delivery_method", row.delivery_method.as_str())
                .detail("endpoint", row.endpoint_url.as_deref().map(endpoint_for_audit))
                .detail("events", events_of(&row)),
        );
        Ok::<_, StreamError>(())
    })?;
    tracing::info!(stream.id = %id, audience = %row.audience, method, "created stream {id}");
    Ok(row)
}

/// The audit entry of a change to `row`: the stream as target, named by its audience.
fn stream_entry(action: &'static str, row: &StreamRow) -> Entry {
    Entry::new(action).target("stream", &row.id, Some(&row.audience))
}

/// A push endpoint as the audit log shows it: scheme, host, port and path. Userinfo, query and fragment can carry
/// credentials (a function key in `?code=`), so they are left out.
fn endpoint_for_audit(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(unparsable)".to_owned(),
    }
}

/// The event types a stream receives, as stored.
pub fn events_of(row: &StreamRow) -> Value {
    serde_json::from_str(&row.events_requested).unwrap_or(Value::Null)
}

/// The associated data a stream's sealed header is bound to.
pub fn stream_aad(id: &str) -> String {
    format!("stream:{id}")
}

/// Every stream with its outbox counts, read from the per-stream counters (one row per stream and state), so
/// the cost follows the number of streams (capped by `fanout.max_streams`), not the size of the outbox.
pub fn list(db: &Db) -> Result<Vec<StreamInfo>, StreamError> {
    super::pending::expand(db)?;
    db.read(|c| {
        let rows = repo::fanout::streams(c)?;
        let mut counts = std::collections::HashMap::new();
        for (stream, state, n) in repo::fanout::outbox_counts(c)? {
            counts.insert((stream, state), n);
        }
        let count = |id: &str, states: &[&str]| -> i64 {
            states
                .iter()
                .filter_map(|st| counts.get(&(id.to_owned(), (*st).to_owned())))
                .sum()
        };
        Ok(rows
            .into_iter()
            .map(|row| StreamInfo {
                pending: count(&row.id, &["queued", "retrying"]),
                delivered: count(&row.id, &["delivered"]),
                dead: count(&row.id, &["dead"]),
                row,
            })
            .collect())
    })
}

/// One page of streams in id order, after the id `after`: those `owner` created, or every stream when `None`.
pub fn page(
    db: &Db,
    owner: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<StreamRow>, StreamError> {
    db.read(|c| repo::fanout::streams_page(c, owner, after, limit).map_err(StreamError::from))
}

/// Sets a stream's status: `enabled`, `paused` (SETs are kept and sent when it is enabled again) or `disabled`
/// (no new SETs are kept for it).
pub fn set_status(db: &Db, id: &str, status: &str, reason: Option<&str>) -> Result<(), StreamError> {
    if !["enabled", "paused", "disabled"].contains(&status) {
        return Err(StreamError::Invalid(format!(
            "status must be enabled, paused or disabled, not `{status}`"
        )));
    }
    let n = db.write(|c| {
        let n = repo::fanout::set_status(c, id, status, reason, now())?;
        if n == 1 {
            audit::record(
                Entry::new("stream.status")
                    .target("stream", id, None)
                    .detail("status", status)
                    .detail("reason", reason),
            );
        }
        Ok::<_, StreamError>(n)
    })?;
    if n == 0 {
        return Err(StreamError::NotFound(id.to_owned()));
    }
    if status == "enabled" {
        super::worker::wake();
    }
    tracing::info!(stream.id = %id, status, "stream {id} is now {status}");
    Ok(())
}

pub fn get(db: &Db, id: &str) -> Result<StreamRow, StreamError> {
    db.read(|c| repo::fanout::find_stream(c, id).map_err(StreamError::from))?
        .ok_or_else(|| StreamError::NotFound(id.to_owned()))
}

/// Changes to a stream's receiver-supplied settings; `None` leaves one as it is. `Debug` leaves the header out.
#[derive(Clone, Default)]
pub struct StreamUpdate {
    pub endpoint_url: Option<String>,
    /// `Some(None)` removes the header.
    pub authorization_header: Option<Option<String>>,
    pub events_requested: Option<Vec<String>>,
    pub description: Option<Option<String>>,
}

impl std::fmt::Debug for StreamUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamUpdate")
            .field("endpoint_url", &self.endpoint_url)
            .field("events_requested", &self.events_requested)
            .finish_non_exhaustive()
    }
}

/// Applies `update` to a push stream and returns it (push endpoints checked against the default policy: only
/// public addresses).
pub fn update(db: &Db, keys: &KeyStore, id: &str, update: &StreamUpdate) -> Result<StreamRow, StreamError> {
    update_within(db, keys, id, update, &crate::outbound::AddressPolicy::default())
}

/// [`update`], with the addresses `network` allows for push endpoints.
pub fn update_within(
    db: &Db,
    keys: &KeyStore,
    id: &str,
    update: &StreamUpdate,
    network: &crate::outbound::AddressPolicy,
) -> Result<StreamRow, StreamError> {
    let mut row = get(db, id)?;
    if let Some(events) = &update.events_requested {
        validate_events(events)?;
    }
    if row.delivery_method == "push" {
        let endpoint_url = update
            .endpoint_url
            .clone()
            .or_else(|| row.endpoint_url.clone())
            .unwrap_or_default();
        validate_push(
            &endpoint_url,
            update.authorization_header.clone().flatten().as_deref(),
            network,
        )?;
        // A header was meant for the endpoint it was given with: a new endpoint without a new header gets none.
        if row.endpoint_url.as_deref() != Some(endpoint_url.as_str()) && update.authorization_header.is_none()
        {
            row.authorization_header = None;
        }
        row.endpoint_url = Some(endpoint_url);
    } else if update.endpoint_url.is_some() {
        return Err(StreamError::Invalid("a poll stream has no push endpoint".into()));
    }
    if let Some(h) = &update.authorization_header {
        row.authorization_header = h
            .as_deref()
            .map(|h| keys.seal_secret(&stream_aad(id), h.as_bytes()))
            .transpose()?;
    }
    if let Some(events) = &update.events_requested {
        row.events_requested = Value::from(delivered(events)).to_string();
    }
    if let Some(d) = &update.description {
        row.description.clone_from(d);
    }
    row.updated = now();
    db.write(|c| {
        repo::fanout::update_stream(c, &row)?;
        audit::record(
            stream_entry("stream.update", &row)
                .detail("endpoint", row.endpoint_url.as_deref().map(endpoint_for_audit))
                .detail(
                    "authorization_header_changed",
                    update.authorization_header.is_some(),
                )
                .detail("events", events_of(&row)),
        );
        Ok::<_, StreamError>(())
    })?;
    tracing::info!(stream.id = %id, "updated stream {id}");
    Ok(row)
}

/// Includes (`add`) or excludes a user from a stream's subjects; every user is included until removed.
pub fn set_subject(db: &Db, id: &str, user_id: &str, include: bool) -> Result<(), StreamError> {
    get(db, id)?;
    db.write(|c| {
        if include {
            repo::fanout::include(c, id, user_id)?;
        } else {
            repo::fanout::exclude(c, id, user_id)?;
        }
        audit::record(
            Entry::new(if include {
                "stream.subject_add"
            } else {
                "stream.subject_remove"
            })
            .target("stream", id, None)
            .subject(user_id),
        );
        Ok::<_, StreamError>(())
    })?;
    tracing::info!(stream.id = %id, user.id = %user_id, include, "stream {id} subject {user_id} included: {include}");
    Ok(())
}

/// Where a stream's delivery stands, offboard's extension of the stream status
/// (docs/decisions/0039-push-guard-freshness.md): `position`, the newest outbox id now (after expanding every
/// committed change); `undelivered_from`, the id of the stream's oldest SET not yet delivered (push) or
/// acknowledged (poll), if any; `dead_letters`, how many of its SETs are dead-lettered. Outbox ids follow commit
/// order and a push stream's SETs go out in id order, so every SET of the stream with an id below
/// `undelivered_from` (or up to `position` when it is `None`) has been delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub position: i64,
    pub undelivered_from: Option<i64>,
    pub dead_letters: i64,
}

/// The delivery [`Progress`] of a stream, read in one snapshot after expanding waiting changes.
pub fn progress(db: &Db, id: &str) -> Result<Progress, StreamError> {
    super::pending::expand(db)?;
    let id = id.to_owned();
    Ok(db.snapshot(|c| {
        Ok::<_, DbError>(Progress {
            position: repo::revocations::outbox_position(c)?,
            undelivered_from: repo::fanout::oldest_pending(c, &id)?,
            dead_letters: repo::fanout::dead_count(c, &id)?,
        })
    })?)
}

/// The shortest time between two verification requests of one stream.
pub const MIN_VERIFICATION_INTERVAL_SECS: i64 = 15;

/// Queues a verification SET for a stream (SSF §8.1.4), echoing `state`. `Ok(false)` when the last one was
/// queued less than [`MIN_VERIFICATION_INTERVAL_SECS`] ago.
pub fn verify(db: &Db, id: &str, state: Option<&str>) -> Result<bool, StreamError> {
    get(db, id)?;
    let queued = db.write(|c| {
        let at = now();
        if let Some(last) = repo::fanout::last_verification(c, id, super::VERIFICATION)?
            && at - last < chrono::TimeDelta::seconds(MIN_VERIFICATION_INTERVAL_SECS)
        {
            return Ok(false);
        }
        let mut event = serde_json::Map::new();
        if let Some(state) = state {
            event.insert("state".into(), Value::from(state));
        }
        let payload = serde_json::json!({ "event": event }).to_string();
        super::queue(c, id, &super::new_txn(), super::VERIFICATION, None, &payload, at)?;
        audit::record(Entry::new("stream.verify").target("stream", id, None));
        crate::db::after_commit(super::worker::wake);
        Ok::<_, StreamError>(true)
    })?;
    Ok(queued)
}

/// Queues a stream's dead-lettered SETs again (after the receiver was fixed); returns how many. They go out in
/// their original order, ahead of anything queued since (ordering is by outbox id).
pub fn retry_dead(db: &Db, id: &str) -> Result<usize, StreamError> {
    get(db, id)?;
    let n = db.write(|c| {
        let n = repo::fanout::requeue_dead(c, id, now())?;
        audit::record(
            Entry::new("stream.retry_dead")
                .target("stream", id, None)
                .detail("requeued", n),
        );
        Ok::<_, StreamError>(n)
    })?;
    if n > 0 {
        super::worker::wake();
    }
    tracing::info!(stream.id = %id, requeued = n, "queued {n} dead-lettered SETs of stream {id} again");
    Ok(n)
}

pub fn remove(db: &Db, id: &str) -> Result<(), StreamError> {
    let n = db.write(|c| {
        let n = repo::fanout::delete_stream(c, id)?;
        if n == 1 {
            audit::record(Entry::new("stream.remove").target("stream", id, None));
        }
        Ok::<_, StreamError>(n)
    })?;
    if n == 0 {
        return Err(StreamError::NotFound(id.to_owned()));
    }
    tracing::info!(stream.id = %id, "removed stream {id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(url: &str) -> NewStream {
        NewStream {
            audience: "svc".into(),
            delivery: Delivery::Push {
                endpoint_url: url.into(),
                authorization_header: None,
            },
            events_requested: Vec::new(),
            description: None,
            created_by: "cli".into(),
        }
    }

    #[test]
    fn push_endpoints_are_https_or_loopback() {
        let net = crate::outbound::AddressPolicy::default();
        let validate = |n: &NewStream| validate(n, &net);
        assert!(validate(&push("https://svc.example.com/ssf")).is_ok());
        assert!(validate(&push("http://127.0.0.1:9000/events")).is_ok());
        assert!(validate(&push("http://svc.example.com/ssf")).is_err());
        assert!(validate(&push("https://")).is_err());
        assert!(validate(&push("https://10.0.0.1/")).is_err());
        let mut bad_event = push("https://svc.example.com/ssf");
        bad_event.events_requested = vec!["https://example.com/nope".into()];
        assert!(validate(&bad_event).is_err(), "nothing offboard emits");
        bad_event
            .events_requested
            .push(super::super::ACCOUNT_DISABLED.into());
        assert!(validate(&bad_event).is_ok(), "unsupported types are ignored");
        assert_eq!(
            delivered(&bad_event.events_requested),
            vec![super::super::ACCOUNT_DISABLED]
        );
    }
}

#[cfg(test)]
mod audit_tests {
    use super::endpoint_for_audit;

    #[test]
    fn endpoints_are_recorded_without_credentials() {
        assert_eq!(
            endpoint_for_audit("https://user:pw@svc.example.com:8443/api/events?code=SECRET#x"),
            "https://svc.example.com:8443/api/events"
        );
        assert_eq!(endpoint_for_audit("not a url"), "(unparsable)");
    }
}
