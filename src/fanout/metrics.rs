//! Fan-out figures for `/metrics` (Prometheus, `OpenMetrics` text; the other series are in `src/metrics.rs`): per
//! stream, the SETs queued, retrying (queued after a failed push), delivered and dead-lettered, read when scraped from
//! the per-stream counters the outbox triggers keep (so every instance on one database reports the same counts, and a
//! scrape costs one row per stream and state, however large the outbox), and the latency of the last delivery this
//! instance made (from the commit of the change to the receiver's `202`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::db::{Db, DbError, repo};

/// What this instance's worker measured.
#[derive(Debug, Default)]
pub struct FanoutStats {
    last_latency: Mutex<HashMap<String, f64>>,
}

impl FanoutStats {
    pub fn delivered(&self, stream_id: &str, seconds: f64) {
        if let Ok(mut m) = self.last_latency.lock() {
            m.insert(stream_id.to_owned(), seconds);
        }
    }

    pub fn last_latency(&self, stream_id: &str) -> Option<f64> {
        self.last_latency.lock().ok()?.get(stream_id).copied()
    }
}

type Labels = Vec<(String, String)>;

/// Adds the fan-out figures, read now, to `registry` (a registry of one scrape).
pub fn register(db: &Db, stats: &FanoutStats, registry: &mut Registry) -> Result<(), DbError> {
    // Counts include the SETs of changes not yet written to the outbox.
    super::pending::expand(db)?;
    let (rows, streams) =
        db.read(|c| Ok::<_, DbError>((repo::fanout::outbox_counts(c)?, repo::fanout::streams(c)?)))?;
    let sets = Family::<Labels, Gauge>::default();
    let latency = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let enabled = Family::<Labels, Gauge>::default();
    registry.register(
        "offboard_fanout_sets",
        "SETs per stream by state: queued, retrying (queued after a failed push), delivered, dead",
        sets.clone(),
    );
    registry.register(
        "offboard_fanout_last_delivery_latency_seconds",
        "Commit of the change to the receiver's answer, for the last SET this instance delivered",
        latency.clone(),
    );
    registry.register(
        "offboard_fanout_stream_enabled",
        "1 when a stream is enabled, 0 when paused or disabled",
        enabled.clone(),
    );
    for s in &streams {
        let label = |state: &str| {
            vec![
                ("stream".to_owned(), s.id.clone()),
                ("state".to_owned(), state.to_owned()),
            ]
        };
        for state in ["queued", "retrying", "delivered", "dead"] {
            sets.get_or_create(&label(state)).set(0);
        }
        enabled
            .get_or_create(&vec![("stream".to_owned(), s.id.clone())])
            .set(i64::from(s.status == "enabled"));
        if let Some(l) = stats.last_latency(&s.id) {
            latency
                .get_or_create(&vec![("stream".to_owned(), s.id.clone())])
                .set(l);
        }
    }
    for (stream, state, n) in rows {
        sets.get_or_create(&vec![("stream".to_owned(), stream), ("state".to_owned(), state)])
            .set(n);
    }
    Ok(())
}
