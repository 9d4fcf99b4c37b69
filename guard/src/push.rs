//! Push delivery (RFC 8935): [`Guard::receive`] verifies and applies one pushed SET exactly as a poll applies it,
//! and [`heartbeat`] keeps the freshness bound honest while nothing is pushed.
//!
//! A silent push stream looks the same whether nothing happened or deliveries stopped, so silence confirms nothing.
//! Every poll interval the guard reads the stream's delivery progress from `GET /ssf/status` (offboard's
//! extension: `position`, `undelivered_from`, `dead_letters`). It remembers when it asked and the position then;
//! once offboard reports every SET below some remembered position delivered (and a SET is delivered only when the
//! guard answered 202, after applying it), the feed is confirmed as of that moment. A SET dead-lettered since the
//! guard started is news it never applied: it reads the revocation snapshot again, which holds it.
//! See docs/decisions/0039-push-guard-freshness.md.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};

use crate::{Delivery, Guard, GuardError, Inner, at, fetch_text, read_snapshot};

/// Why a pushed SET was refused: the HTTP status and the RFC 8935 §2.3 error code and description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{err}: {description}")]
pub struct PushError {
    pub status: u16,
    /// `invalid_request`, `invalid_key`, `invalid_issuer`, `invalid_audience`, `authentication_failed`,
    /// `access_denied`, or `temporarily_unavailable` (503: try again).
    pub err: &'static str,
    pub description: String,
}

impl PushError {
    pub(crate) fn bad(err: &'static str, description: &str) -> Self {
        Self {
            status: 400,
            err,
            description: description.to_owned(),
        }
    }

    pub(crate) fn unavailable(description: &str) -> Self {
        Self {
            status: 503,
            err: "temporarily_unavailable",
            description: description.to_owned(),
        }
    }

    /// The RFC 8935 error body: `{"err", "description"}`.
    pub fn body(&self) -> Value {
        json!({"err": self.err, "description": self.description})
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Guard {
    /// Receives one pushed SET (RFC 8935 §2): checks the `Authorization` header (when the guard expects one) and
    /// the content type `application/secevent+jwt`, then verifies the SET (signature under offboard's JWKS,
    /// `typ`, `iss`, the stream's `aud`) and applies it. `Ok` means answer 202; offboard counts the SET delivered
    /// only then, which is what the freshness check relies on. A guard reading a poll stream refuses pushes.
    pub async fn receive(
        &self,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<(), PushError> {
        let Delivery::Push {
            authorization: expected,
        } = &self.inner.config.delivery
        else {
            return Err(PushError {
                status: 403,
                err: "access_denied",
                description: "this guard reads a poll stream".into(),
            });
        };
        if let Some(expected) = expected
            && !authorization.is_some_and(|got| same(got.as_bytes(), expected.as_bytes()))
        {
            return Err(PushError {
                status: 401,
                err: "authentication_failed",
                description: "the Authorization header is missing or wrong".into(),
            });
        }
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        if media.as_deref() != Some("application/secevent+jwt") {
            return Err(PushError::bad(
                "invalid_request",
                "the content type must be application/secevent+jwt",
            ));
        }
        let set = std::str::from_utf8(body)
            .map_err(|_| PushError::bad("invalid_request", "the body is not UTF-8"))?
            .trim();
        crate::apply_set(&self.inner, set).await?;
        self.inner.sets_applied.fetch_add(1, Ordering::Relaxed);
        self.inner.news.send_modify(|n| n.changes += 1);
        Ok(())
    }
}

/// What the heartbeat remembers between rounds.
#[derive(Debug, Default)]
pub(crate) struct Heartbeats {
    /// (when the progress was asked, the outbox position offboard answered), oldest first, not yet confirmed.
    asked: VecDeque<(Instant, i64)>,
}

/// The most unconfirmed rounds remembered (older ones could only confirm a moment already past the bound).
const REMEMBERED: usize = 256;

struct Progress {
    enabled: bool,
    position: i64,
    undelivered_from: Option<i64>,
    dead_letters: i64,
}

async fn progress(inner: &Inner) -> Result<Progress, GuardError> {
    let url = format!("{}/ssf/status", inner.config.issuer);
    let (_, text) = fetch_text(
        inner
            .http
            .get(url)
            .query(&[("stream_id", &inner.config.stream_id)])
            .bearer_auth(&inner.config.stream_credential),
    )
    .await?;
    let status: Value =
        serde_json::from_str(&text).map_err(|e| GuardError::Answer(format!("the stream status: {e}")))?;
    let (Some(position), Some(dead_letters)) = (
        at(&status, "position").as_i64(),
        at(&status, "dead_letters").as_i64(),
    ) else {
        return Err(GuardError::Answer(
            "the stream status reports no delivery progress (offboard too old for push mode)".into(),
        ));
    };
    Ok(Progress {
        enabled: at(&status, "status").as_str() == Some("enabled"),
        position,
        undelivered_from: at(&status, "undelivered_from").as_i64(),
        dead_letters,
    })
}

/// The dead-letter count when the guard starts, read before its snapshot (push mode).
pub(crate) async fn dead_letters(
    inner_http: &reqwest::Client,
    config: &crate::GuardConfig,
) -> Result<i64, GuardError> {
    let url = format!("{}/ssf/status", config.issuer);
    let (_, text) = fetch_text(
        inner_http
            .get(url)
            .query(&[("stream_id", &config.stream_id)])
            .bearer_auth(&config.stream_credential),
    )
    .await?;
    let status: Value =
        serde_json::from_str(&text).map_err(|e| GuardError::Answer(format!("the stream status: {e}")))?;
    at(&status, "dead_letters").as_i64().ok_or_else(|| {
        GuardError::Answer(
            "the stream status reports no delivery progress (offboard too old for push mode)".into(),
        )
    })
}

/// One round: reads the delivery progress and confirms the feed as of the newest remembered moment whose position
/// offboard now reports delivered (or known from the snapshot).
pub(crate) async fn heartbeat(inner: &Inner, rounds: &mut Heartbeats) {
    let asked = Instant::now();
    let p = match progress(inner).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                "offboard-guard: reading the delivery progress of stream {} failed: {e}",
                inner.config.stream_id
            );
            return;
        }
    };
    if !p.enabled {
        tracing::warn!(
            "offboard-guard: stream {} is not enabled: the feed is not confirmed",
            inner.config.stream_id
        );
        return;
    }
    let baseline = inner.dead_baseline.load(Ordering::Relaxed);
    if p.dead_letters > baseline {
        // A SET given up on since the guard last read the snapshot: the snapshot read now holds its news.
        tracing::warn!(
            "offboard-guard: stream {} has new dead-lettered SETs; reading the revocation snapshot again",
            inner.config.stream_id
        );
        match read_snapshot(&inner.http, &inner.config).await {
            Ok((fresh, position, _)) => {
                if let Ok(mut r) = inner.revocations.write() {
                    r.merge(fresh);
                } else {
                    return;
                }
                inner.known_position.fetch_max(position, Ordering::Relaxed);
                inner.dead_baseline.store(p.dead_letters, Ordering::Relaxed);
                inner.news.send_modify(|n| n.changes += 1);
            }
            Err(e) => {
                tracing::warn!("offboard-guard: reading the revocation snapshot failed: {e}");
            }
        }
        // Confirmed from the next round on.
        return;
    }
    if p.dead_letters < baseline {
        // Dead letters retried or pruned: a new one must raise the count above this.
        inner.dead_baseline.store(p.dead_letters, Ordering::Relaxed);
    }
    rounds.asked.push_back((asked, p.position));
    if rounds.asked.len() > REMEMBERED {
        rounds.asked.pop_front();
    }
    // Every SET below `undelivered_from` was delivered (a stream's SETs go out in id order); everything up to the
    // snapshot's position is in the state already.
    let delivered_to = p
        .undelivered_from
        .map_or(p.position, |u| u - 1)
        .max(inner.known_position.load(Ordering::Relaxed));
    let Some(newest) = rounds
        .asked
        .iter()
        .rposition(|&(_, position)| position <= delivered_to)
    else {
        return;
    };
    let confirmed_at = rounds.asked.get(newest).map(|&(t, _)| t);
    rounds.asked.drain(..=newest);
    if let (Some(t), Ok(mut confirmed)) = (confirmed_at, inner.confirmed.lock())
        && confirmed.is_none_or(|c| t > c)
    {
        *confirmed = Some(t);
        drop(confirmed);
        inner.news.send_if_modified(|n| std::mem::take(&mut n.stale));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_and_error_bodies() {
        assert!(same(b"Bearer abc", b"Bearer abc"));
        assert!(!same(b"Bearer abc", b"Bearer abd"));
        assert!(!same(b"Bearer abc", b"Bearer ab"));
        let e = PushError::bad("invalid_key", "unknown kid k1");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.body(),
            json!({"err": "invalid_key", "description": "unknown kid k1"})
        );
        assert_eq!(PushError::unavailable("x").status, 503);
    }
}
