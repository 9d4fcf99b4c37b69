//! The revocation snapshot (`GET /ssf/snapshot?stream_id=`): what a service that verifies access tokens locally
//! must know before it accepts its first request, read in one consistent database snapshot per page. Four kinds
//! of entry, each with `until` (seconds since the epoch), the moment after which no token it kills can still be
//! valid:
//!
//! - `keys`: signing keys declared compromised within the last access-token lifetime + leeway + JWKS max age
//!   (after that no honest token it signed is unexpired and no JWKS, cached or fresh, still lists it);
//! - `subjects`: users whose generation went up within the last access-token lifetime + leeway, with `min_tgen`;
//! - `sessions`: logins (`sid`) ended within the same window;
//! - `tokens`: access tokens revoked by `jti` that have not expired.
//!
//! **Position.** Every page carries `position`, the newest outbox id when that page was read, in the same
//! snapshot as its entries. Outbox ids follow commit order (`fanout::enqueue`), and a change commits with its
//! SETs, so a revocation the page does not show committed later and queued its SET with a larger id; on a poll
//! stream that SET stays queued until the receiver acknowledges it. A guard that reads the snapshot and then polls
//! its stream therefore misses nothing; SETs it polls that are older than the position only repeat what the
//! snapshot said (every entry only ever tightens: generations go up, ended things stay ended).

use serde_json::{Value, json};

use crate::config::Config;
use crate::db::{Db, DbError, now, repo};
use crate::keys::LEEWAY_SECS;

/// The most entries one page holds, and the page size when none is asked for.
pub const PAGE: i64 = 1000;

/// The kinds in page order.
const KINDS: [&str; 4] = ["keys", "subjects", "sessions", "tokens"];

/// Where a page starts: after `key` in the kind `KINDS[kind]`. Written `KIND:KEY` in the `after` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    kind: usize,
    key: String,
}

impl Cursor {
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, key) = s.split_once(':')?;
        Some(Self {
            kind: KINDS.iter().position(|k| *k == kind)?,
            key: key.to_owned(),
        })
    }

    pub fn encode(&self) -> String {
        format!(
            "{}:{}",
            KINDS.get(self.kind).copied().unwrap_or("tokens"),
            self.key
        )
    }
}

/// One page of the snapshot.
#[derive(Debug, Clone)]
pub struct Page {
    pub position: i64,
    /// When the page was read (seconds since the epoch).
    pub as_of: i64,
    /// The longest an access token can be accepted after it was minted: `tokens.max_access_ttl_secs` + leeway.
    pub max_token_lifetime: i64,
    /// `keys`, `subjects`, `sessions`, `tokens`, as JSON arrays.
    pub entries: [Vec<Value>; 4],
    /// Where the next page starts, when this one is full.
    pub next: Option<Cursor>,
}

impl Page {
    pub fn to_json(&self, stream_id: &str) -> Value {
        let [keys, subjects, sessions, tokens] = &self.entries;
        json!({
            "stream_id": stream_id,
            "position": self.position,
            "as_of": self.as_of,
            "max_token_lifetime": self.max_token_lifetime,
            "keys": keys,
            "subjects": subjects,
            "sessions": sessions,
            "tokens": tokens,
        })
    }
}

fn secs(t: chrono::NaiveDateTime) -> i64 {
    t.and_utc().timestamp()
}

/// Reads one page of at most `limit` entries after `after`.
pub fn page(db: &Db, config: &Config, after: Option<&Cursor>, limit: i64) -> Result<Page, DbError> {
    let lifetime = i64::try_from(config.tokens.max_access_ttl_secs + LEEWAY_SECS).unwrap_or(i64::MAX / 4);
    let key_window = lifetime + i64::try_from(config.keys.jwks_max_age_secs).unwrap_or(0);
    let at = now();
    let since = |window: i64| at - chrono::TimeDelta::seconds(window);
    db.snapshot(|c| {
        let position = repo::revocations::outbox_position(c)?;
        let mut entries: [Vec<Value>; 4] = Default::default();
        let mut budget = limit;
        let mut next = None;
        let first = after.map_or(0, |a| a.kind);
        for kind in first..KINDS.len() {
            let from = after.filter(|a| a.kind == kind).map_or("", |a| a.key.as_str());
            let rows: Vec<(String, Value)> = match kind {
                0 => repo::revocations::compromised_keys(c, since(key_window), from, budget)?
                    .into_iter()
                    .map(|(kid, t)| {
                        let until = t.map_or(0, secs) + key_window;
                        (kid.clone(), json!({"kid": kid, "until": until}))
                    })
                    .collect(),
                1 => repo::revocations::raised_generations(c, since(lifetime), from, budget)?
                    .into_iter()
                    .map(|(sub, tgen, t)| {
                        let until = t.map_or(0, secs) + lifetime;
                        (sub.clone(), json!({"sub": sub, "min_tgen": tgen, "until": until}))
                    })
                    .collect(),
                2 => repo::revocations::ended_sessions(c, since(lifetime), from, budget)?
                    .into_iter()
                    .map(|(sid, t)| {
                        let until = t.map_or(0, secs) + lifetime;
                        (sid.clone(), json!({"sid": sid, "until": until}))
                    })
                    .collect(),
                _ => repo::revocations::revoked_tokens(c, at, from, budget)?
                    .into_iter()
                    .map(|(jti, t)| (jti.clone(), json!({"jti": jti, "until": secs(t)})))
                    .collect(),
            };
            budget -= i64::try_from(rows.len()).unwrap_or(budget);
            let last = rows.last().map(|(key, _)| key.clone());
            if let Some(list) = entries.get_mut(kind) {
                list.extend(rows.into_iter().map(|(_, v)| v));
            }
            if budget <= 0 {
                next = last.map(|key| Cursor { kind, key });
                break;
            }
        }
        Ok(Page {
            position,
            as_of: secs(at),
            max_token_lifetime: lifetime,
            entries,
            next,
        })
    })
}
