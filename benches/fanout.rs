//! The fan-out latency benchmark: from the SCIM answer to a deactivation to the receipt of its SETs at every one
//! of `--subscribers` loopback receivers (real HTTP servers, one per stream), on SQLite and PostgreSQL.
//!
//! ```text
//! cargo bench --bench fanout -- [--backend sqlite|postgres|both] [--subscribers 100] [--rounds 20]
//! ```
//!
//! The real server runs in-process (`offboard::configure`, one HTTP worker) with its delivery worker, as `offboard
//! serve` runs them. Each round deactivates one user over SCIM (`PATCH active=false`), takes the time the answer
//! arrives, and waits until every receiver has both SETs of that deprovisioning (`account-disabled` and
//! `session-revoked`); each receipt's latency is its arrival minus the answer's. Rounds run one after another,
//! so the figures are the latency of one offboarding fanned out to every subscriber; every receiver must get
//! exactly the two SETs of the round (their signatures are checked by the fan-out tests, not here).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use offboard::AppState;
use offboard::credentials::{self, Scope};
use offboard::db::{Backend, Db};
use offboard::fanout::streams::{self, Delivery, NewStream};
use serde_json::Value;

#[path = "common/app.rs"]
mod app;
#[path = "common/mod.rs"]
mod common;
#[path = "common/deactivate.rs"]
mod deactivate;

use common::{BenchDb, Which, backend_name, machine};

#[derive(Debug, Parser)]
#[command(about = "Fan-out latency benchmark for offboard (see the module doc of benches/fanout.rs)")]
struct Args {
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    #[arg(long, hide = true)]
    bench: bool,
}

/// Arrivals per receiver: (user id, event type, when).
type Arrivals = Arc<Mutex<Vec<(String, String, Instant)>>>;

fn main() -> ExitCode {
    app::main(|| run(&Args::parse()))
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.subscribers == 0 || args.rounds == 0 {
        bail!("--subscribers and --rounds must be at least 1");
    }
    println!("# offboard fan-out latency benchmark\n");
    println!(
        "`cargo bench --bench fanout -- --backend {} --subscribers {} --rounds {}`\n",
        args.backend.flag(),
        args.subscribers,
        args.rounds
    );
    println!("machine: {}\n", machine());
    let backends = args.backend.backends();
    for &backend in backends {
        run_backend(backend, args)?;
    }
    Ok(())
}

/// A receiver: a loopback HTTP server that answers 202 and records each SET's subject, type and arrival.
fn receiver() -> anyhow::Result<(String, Arrivals)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let arrivals: Arrivals = Arc::default();
    let log = arrivals.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let log = log.clone();
            std::thread::spawn(move || {
                let Ok(clone) = stream.try_clone() else { return };
                let mut reader = BufReader::new(clone);
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let at = Instant::now();
                let _ = stream
                    .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let set = String::from_utf8_lossy(&body).into_owned();
                if let Ok(claims) = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&set) {
                    let sub = claims
                        .pointer("/sub_id/sub")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let ty = claims
                        .get("events")
                        .and_then(Value::as_object)
                        .and_then(|e| e.keys().next().cloned())
                        .unwrap_or_default();
                    if let Ok(mut l) = log.lock() {
                        l.push((sub, ty, at));
                    }
                }
            });
        }
    });
    Ok((url, arrivals))
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
    } = app::open(backend, &bench_db.url(), |config| config.fanout.concurrency = 32)?;
    let scim = credentials::create(&db, "idp", &[Scope::Scim])?
        .expose()
        .to_owned();
    let receivers = subscribe(&db, &state, args.subscribers)?;
    let worker = offboard::fanout::worker::Worker::new(
        db.clone(),
        state.config.clone(),
        state.tokens.keys.clone(),
        state.fanout.clone(),
    )
    .spawn()?;
    let server = common::serve(state.clone(), listener, Some(blocking))?;

    let measured = measure(&format!("http://{addr}/scim/v2"), &scim, &receivers, args.rounds);
    worker.stop();
    actix_web::rt::System::new().block_on(server.handle().stop(true));
    server.join()?;
    let (scim_ms, first, all) = measured?;
    #[expect(clippy::cast_precision_loss, reason = "latencies in µs are far below 2^52")]
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} subscribers, {} rounds, fanout.concurrency 32\n",
        args.subscribers, args.rounds
    );
    println!("| measure | p50 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| SCIM PATCH answered | {:.1} | {:.1} | {:.1} |",
        ms(&scim_ms, 0.5),
        ms(&scim_ms, 0.99),
        ms(&scim_ms, 1.0)
    );
    println!(
        "| first SET at a receiver, after the answer | {:.1} | {:.1} | {:.1} |",
        ms(&first, 0.5),
        ms(&first, 0.99),
        ms(&first, 1.0)
    );
    println!(
        "| every SET at every receiver, after the answer | {:.1} | {:.1} | {:.1} |\n",
        ms(&all, 0.5),
        ms(&all, 0.99),
        ms(&all, 1.0)
    );
    Ok(())
}

/// One push stream per receiver.
fn subscribe(db: &Db, state: &AppState, n: usize) -> anyhow::Result<Vec<Arrivals>> {
    let mut receivers = Vec::new();
    for i in 0..n {
        let (rx_url, arrivals) = receiver()?;
        streams::create(
            db,
            &state.tokens.keys,
            &NewStream {
                audience: format!("svc-{i}"),
                delivery: Delivery::Push {
                    endpoint_url: rx_url,
                    authorization_header: None,
                },
                events_requested: Vec::new(),
                description: None,
                created_by: "bench".into(),
            },
        )?;
        receivers.push(arrivals);
    }
    Ok(receivers)
}

type Hist = Histogram<u64>;

/// The rounds: SCIM answer times, first receipt per receiver, every receipt.
fn measure(
    base: &str,
    scim: &str,
    receivers: &[Arrivals],
    rounds: usize,
) -> anyhow::Result<(Hist, Hist, Hist)> {
    let client = reqwest::blocking::Client::new();
    let mut first = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut scim_ms = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for round in 0..rounds {
        let (id, sent, answered) = deactivate::create_and_deactivate(&client, base, scim, round)?;
        scim_ms.saturating_record(micros(answered - sent));
        let deadline = answered + Duration::from_secs(30);
        loop {
            let done = receivers.iter().all(|r| {
                r.lock()
                    .is_ok_and(|l| l.iter().filter(|(s, _, _)| *s == id).count() >= 2)
            });
            if done {
                break;
            }
            if Instant::now() > deadline {
                bail!("round {round}: not every receiver got both SETs within 30 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for r in receivers {
            let l = r.lock().map_err(|_| anyhow!("poisoned"))?;
            let mine: Vec<&(String, String, Instant)> = l.iter().filter(|(s, _, _)| *s == id).collect();
            let mut types: HashMap<&str, usize> = HashMap::new();
            for (_, ty, _) in &mine {
                *types.entry(ty.as_str()).or_default() += 1;
            }
            if mine.len() != 2 || types.len() != 2 {
                bail!("round {round}: a receiver got {types:?}");
            }
            for (i, (_, _, at)) in mine.iter().enumerate() {
                let us = micros(at.saturating_duration_since(answered));
                all.saturating_record(us);
                if i == 0 {
                    first.saturating_record(us);
                }
            }
        }
    }
    Ok((scim_ms, first, all))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}
