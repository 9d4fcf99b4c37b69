//! The memory of a guard's revocation state with 1,000,000 entries, as the resident set size (`VmRSS` of
//! `/proc/self/status`, Linux) before and after filling a `Revocations`; with the size and the write and load
//! times of the same state serialized as the state file holds it (JSON), and the cost of one revocation check
//! against it.
//!
//! ```text
//! cargo bench -p offboard-guard --bench memory -- [--entries 1000000]
//! ```
//!
//! The entries are split as a busy deployment might hold them: 40 % ended sessions, 40 % tokens revoked by
//! `jti`, 20 % users with a raised generation; every key a 36-character UUID, as offboard's ids are.
#![expect(
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "bench: a panic is a failed run; figures are printed as floats"
)]

use std::hint::black_box;
use std::time::Instant;

use offboard_guard::Revocations;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries: usize = args
        .iter()
        .position(|a| a == "--entries")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000_000, |n| n.parse().expect("--entries N"));
    let until = 4_000_000_000;
    let ids: Vec<String> = (0..entries).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let before = rss_kib();
    let started = Instant::now();
    let mut r = Revocations::default();
    for (i, id) in ids.iter().enumerate() {
        match i % 5 {
            0 | 1 => r.end_session(id, until),
            2 | 3 => r.revoke_token(id, until),
            _ => r.raise(id, 1, until),
        }
    }
    let filled = started.elapsed();
    let after = rss_kib();
    let (subjects, sessions, tokens, keys) = r.len();
    assert_eq!(subjects + sessions + tokens + keys, entries);
    let delta = after.saturating_sub(before);
    println!(
        "{entries} entries ({subjects} subjects, {sessions} sessions, {tokens} tokens): filled in {filled:.2?}; \
         RSS {before} KiB -> {after} KiB: +{delta} KiB = {:.1} MiB, {:.0} bytes an entry",
        delta as f64 / 1024.0,
        delta as f64 * 1024.0 / entries as f64
    );

    // One check against the full state (a token none of it revokes: every map is looked up).
    let probe = uuid::Uuid::new_v4().to_string();
    let n = 1_000_000;
    let started = Instant::now();
    for _ in 0..n {
        black_box(r.refuses(black_box("kid"), black_box(&probe), Some(&probe), &probe, Some(1)));
    }
    println!(
        "revocation check at this size: {:.0} ns",
        started.elapsed().as_nanos() as f64 / f64::from(n)
    );

    let started = Instant::now();
    let json = serde_json::to_vec(&r).expect("serializes");
    let written = started.elapsed();
    let started = Instant::now();
    let back: Revocations = serde_json::from_slice(&json).expect("parses");
    let loaded = started.elapsed();
    assert_eq!(back.len(), r.len());
    println!(
        "as the state file holds it (JSON): {:.1} MiB, serialized in {written:.2?}, parsed in {loaded:.2?}",
        json.len() as f64 / 1024.0 / 1024.0
    );
}
