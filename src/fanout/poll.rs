//! Poll delivery (RFC 8936): the receiver POSTs to its stream's poll endpoint, acknowledging (`ack`) or
//! rejecting (`setErrs`) what it got before, and receives up to `maxEvents` queued SETs, oldest first, signed when
//! served. A SET stays queued, and is served again, until it is acknowledged (at least once; receivers
//! de-duplicate on `jti`); a rejected SET is dead-lettered with the receiver's error. Paused and disabled
//! streams serve nothing.

use serde_json::Value;

use super::streams::StreamError;
use crate::db::models::StreamRow;
use crate::db::{Db, now, repo};
use crate::keys::{KeyAlg, KeyStore};

/// Most SETs one poll returns.
pub const MAX_EVENTS: i64 = 1000;

/// What a receiver sends.
#[derive(Debug, Clone, Default)]
pub struct PollRequest {
    pub max_events: Option<i64>,
    pub ack: Vec<String>,
    /// `jti` → error description.
    pub set_errs: Vec<(String, String)>,
}

/// What it gets back.
#[derive(Debug, Clone)]
pub struct PollAnswer {
    /// (`jti`, signed SET), oldest first.
    pub sets: Vec<(String, String)>,
    pub more_available: bool,
}

/// Applies the acknowledgements and errors of `req`, then reads up to `maxEvents` queued SETs of the stream.
pub fn poll(
    db: &Db,
    keys: &KeyStore,
    config: &crate::config::Config,
    stream_id: &str,
    req: &PollRequest,
) -> Result<PollAnswer, StreamError> {
    let stream = super::streams::get(db, stream_id)?;
    if stream.delivery_method != "poll" {
        return Err(StreamError::Invalid(
            "this stream is delivered by push, not poll".into(),
        ));
    }
    let limit = req.max_events.unwrap_or(100).clamp(0, MAX_EVENTS);
    // Changes committed before this poll are served by it (read-your-writes after a SCIM answer).
    super::pending::expand(db)?;
    if !req.ack.is_empty() || !req.set_errs.is_empty() {
        db.write(|c| {
            let at = now();
            for jti in &req.ack {
                if let Some(row) = repo::fanout::pending_by_jti(c, stream_id, jti)?
                    && repo::fanout::settle_by_jti(c, stream_id, jti, at, None)? == 1
                {
                    crate::audit::record(super::delivery_entry(&row, "delivered", "poll", at, None));
                }
            }
            for (jti, err) in &req.set_errs {
                if let Some(row) = repo::fanout::pending_by_jti(c, stream_id, jti)?
                    && repo::fanout::settle_by_jti(c, stream_id, jti, at, Some(err))? == 1
                {
                    let entry = super::delivery_entry(&row, "dead_lettered", "poll", at, Some(err));
                    crate::audit::record(entry);
                }
            }
            Ok::<_, StreamError>(())
        })?;
    }
    if stream.status != "enabled" || limit == 0 {
        return Ok(PollAnswer {
            sets: Vec::new(),
            more_available: false,
        });
    }
    let rows = db.read(|c| repo::fanout::pending(c, stream_id, limit + 1).map_err(StreamError::from))?;
    let more_available = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    let signer = keys.signer(KeyAlg::RS256)?;
    let mut sets = Vec::new();
    for row in rows.iter().take(usize::try_from(limit).unwrap_or(0)) {
        let claims = super::set_claims(&config.issuer, config.fanout.subject_format, &stream, row);
        sets.push((row.jti.clone(), signer.sign("secevent+jwt", &claims)?));
    }
    Ok(PollAnswer { sets, more_available })
}

/// Whether a poll stream has a SET to serve (for long polling).
pub fn has_pending(db: &Db, stream: &StreamRow) -> Result<bool, StreamError> {
    if stream.status != "enabled" {
        return Ok(false);
    }
    super::pending::expand(db)?;
    Ok(!db
        .read(|c| repo::fanout::pending(c, &stream.id, 1).map_err(StreamError::from))?
        .is_empty())
}

/// Parses an RFC 8936 request body.
pub fn parse(body: &Value) -> Result<(PollRequest, bool), StreamError> {
    let bad = |m: &str| StreamError::Invalid(m.to_owned());
    let max_events = match body.get("maxEvents") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad("maxEvents must be a non-negative integer"))?,
        ),
    };
    let return_immediately = match body.get("returnImmediately") {
        None | Some(Value::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad("returnImmediately must be a boolean"))?,
    };
    let ack = match body.get("ack") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|j| {
                j.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("ack must list jti strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("ack must be an array")),
    };
    let set_errs = match body.get("setErrs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(jti, e)| {
                let err = e.get("err").and_then(Value::as_str).unwrap_or("invalid_request");
                let description = e.get("description").and_then(Value::as_str).unwrap_or("");
                (
                    jti.clone(),
                    format!("receiver: {err} {description}")
                        .trim()
                        .chars()
                        .take(200)
                        .collect(),
                )
            })
            .collect(),
        Some(_) => return Err(bad("setErrs must be an object")),
    };
    Ok((
        PollRequest {
            max_events,
            ack,
            set_errs,
        },
        return_immediately,
    ))
}
