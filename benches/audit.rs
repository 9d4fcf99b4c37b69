//! The audit-log benchmark: export of a large log in constant memory, and verification of it, on SQLite and
//! PostgreSQL.
//!
//! ```text
//! cargo bench --bench audit -- [--backend sqlite|postgres|both] [--entries 1000000]
//! ```
//!
//! Fills a fresh database with `--entries` chained entries shaped like real ones (a SCIM patch with old→new values,
//! about 600 bytes as exported), appended through `offboard::audit::append` in transactions of 10 000. Then:
//! - **HTTP export**: `GET /audit/events` (NDJSON, then CSV) from the real server in-process, read by a streaming
//!   client that counts lines and keeps nothing; entries/s, MB/s, and the process's resident memory before and at
//!   its peak during the export (sampled every 20 ms from `/proc/self/status`), which is the constant-memory check;
//! - **verification**: `offboard::audit::verify::run` over the whole log (entries/s).
//!
//! Every export must return exactly `--entries` lines (plus what set-up wrote) and verification must pass.

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use offboard::audit::{self, Entry};
use offboard::credentials::{self, Scope};
use offboard::db::{Backend, Db, DbError};
use serde_json::json;

#[path = "common/app.rs"]
mod app;
#[path = "common/mod.rs"]
mod common;

use common::{BenchDb, Which, backend_name, machine};

#[derive(Debug, Parser)]
#[command(about = "Audit export benchmark for offboard (see the module doc of benches/audit.rs)")]
struct Args {
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    app::main(|| run(&Args::parse()))
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.entries == 0 {
        bail!("--entries must be at least 1");
    }
    println!("# offboard audit export benchmark\n");
    println!(
        "`cargo bench --bench audit -- --backend {} --entries {}`\n",
        args.backend.flag(),
        args.entries
    );
    println!("machine: {}\n", machine());
    let backends = args.backend.backends();
    for &backend in backends {
        run_backend(backend, args)?;
    }
    Ok(())
}

/// Resident memory of this process now, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Appends `n` entries in transactions of 10 000.
fn fill(db: &Db, n: u64) -> anyhow::Result<Duration> {
    const BATCH: u64 = 10_000;
    let started = Instant::now();
    let mut written = 0;
    while written < n {
        let take = BATCH.min(n - written);
        db.write(|c| {
            let entries = (0..take)
                .map(|i| {
                    let k = written + i;
                    let id = format!("0193a0e4-0000-7000-8000-{k:012}");
                    Entry::new("scim.user.patch")
                        .actor("okta-scim")
                        .user(&id, Some(&format!("user{k}@example.com")))
                        .detail(
                            "changes",
                            json!({"displayName": {"old": format!("User {k}"), "new": format!("User {k} (renamed)")},
                                   "title": {"old": null, "new": "Engineer"}}),
                        )
                        .detail("received_at", "2026-12-01T10:00:00.000Z")
                })
                .collect();
            audit::append(c, entries, Some("bench-request-id-0123456789abcdef")).map_err(DbError::from)?;
            Ok::<_, DbError>(())
        })?;
        written += take;
        if written % 100_000 == 0 || written == n {
            eprint!("\r  filled {written}/{n}");
        }
    }
    eprintln!();
    Ok(started.elapsed())
}

struct Export {
    lines: u64,
    bytes: u64,
    took: Duration,
    rss_before: u64,
    rss_peak: u64,
}

/// Streams `url` to the end, counting lines; samples this process's RSS meanwhile.
fn export(url: &str, secret: &str) -> anyhow::Result<Export> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()?;
    let rss_before = rss_kib();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let mut res = client.get(url).bearer_auth(secret).send()?.error_for_status()?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut lines, mut bytes) = (0u64, 0u64);
    loop {
        let n = res.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        #[expect(clippy::naive_bytecount, reason = "64 KiB at a time; not what is measured")]
        let newlines = buf
            .get(..n)
            .unwrap_or_default()
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        lines += newlines;
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().map_err(|_| anyhow!("sampler panicked"))?;
    Ok(Export {
        lines,
        bytes,
        took,
        rss_before,
        rss_peak: peak.load(Ordering::Relaxed),
    })
}

#[expect(clippy::cast_precision_loss, reason = "figures for a report")]
fn per_sec(n: u64, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn run_backend(backend: Backend, args: &Args) -> anyhow::Result<()> {
    let Some(bench_db) = BenchDb::create(backend)? else {
        return Ok(());
    };
    println!("## {}\n", backend_name(backend));
    let app::Opened {
        listener,
        addr,
        db,
        state,
        blocking,
    } = app::open(backend, &bench_db.url(), |_| {})?;
    let secret = credentials::create(&db, "auditor", &[Scope::AuditRead])?
        .expose()
        .to_owned();
    let before = offboard::audit::export::count(&db, &offboard::db::repo::audit::Selection::default())?;
    let filled = fill(&db, args.entries)?;
    let total = u64::try_from(before).unwrap_or(0) + args.entries;
    let server = common::serve(state, listener, Some(blocking))?;

    println!("| step | entries | time | entries/s | MB/s | RSS before → peak (MiB) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| fill (append, 10 000 per transaction) | {} | {:.1} s | {:.0} | | |",
        args.entries,
        filled.as_secs_f64(),
        per_sec(args.entries, filled)
    );
    for (name, path, header_lines) in [
        ("export NDJSON", "/audit/events", 0),
        ("export CSV", "/audit/events?format=csv", 1),
    ] {
        let e = export(&format!("http://{addr}{path}"), &secret).with_context(|| name.to_owned())?;
        let got = e.lines - header_lines;
        if got < total {
            bail!("{name} returned {got} entries, expected at least {total}");
        }
        #[expect(clippy::cast_precision_loss, reason = "figures for a report")]
        let (mb_s, before, peak) = (
            e.bytes as f64 / 1e6 / e.took.as_secs_f64(),
            e.rss_before as f64 / 1024.0,
            e.rss_peak as f64 / 1024.0,
        );
        println!(
            "| {name} (`GET {path}`) | {got} | {:.1} s | {:.0} | {mb_s:.0} | {before:.0} → {peak:.0} |",
            e.took.as_secs_f64(),
            per_sec(got, e.took),
        );
    }
    let started = Instant::now();
    let check = offboard::keys::audit_signature_checker(&db)?;
    let v = offboard::audit::verify::run(&db, &check)?;
    let took = started.elapsed();
    if !v.ok {
        bail!("verification failed: {v:?}");
    }
    println!(
        "| verify (recompute every hash) | {} | {:.1} s | {:.0} | | |\n",
        v.entries,
        took.as_secs_f64(),
        per_sec(v.entries, took)
    );
    actix_web::rt::System::new().block_on(server.handle().stop(true));
    server.join()?;
    drop(db);
    drop(bench_db);
    Ok(())
}
