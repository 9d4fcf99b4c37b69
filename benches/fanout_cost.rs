//! What streams cost the rest of offboard, on SQLite and PostgreSQL:
//!
//! - **deactivation**: a SCIM `PATCH active=false` (answer time, over HTTP to the real server in-process) with 0,
//!   50 and 1 000 streams subscribed, each receiving the two SETs of the change (recorded as one waiting row in
//!   the change's transaction), and the expansion of that row into the per-stream outbox rows
//!   (`fanout::pending::expand`, which the worker or the next poll runs after the answer; here run and timed
//!   after each deactivation, alone);
//! - **stream list**: `GET /ssf/streams` of a credential that owns 50 streams, `/metrics`, and `offboard streams
//!   list` (the library call), with 1 000 000 SETs in the outbox.
//!
//! ```text
//! cargo bench --bench fanout_cost -- [--backend sqlite|postgres|both] [--rounds 100] [--outbox 1000000]
//!     [--streams 0,50,1000]
//! ```
//!
//! The streams are poll streams, so no delivery runs while measuring (the outbox only grows). Repeat a count to
//! interleave runs on a busy machine (`--streams 0,50,0,50,1000`). The outbox rows are
//! written by one `INSERT … SELECT` (a recursive CTE on SQLite, `generate_series` on PostgreSQL), spread over the 50
//! streams, 9 in 10 delivered, the rest pending (on SQLite, whose outbox counters the repository's insert keeps,
//! the load is then counted by one `INSERT … SELECT … GROUP BY`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use diesel::RunQueryDsl;
use hdrhistogram::Histogram;
use offboard::AppState;
use offboard::credentials::{self, Scope};
use offboard::db::{Backend, Db, DbConnection, DbError};
use offboard::fanout::streams::{self, Delivery, NewStream, StreamCaps};
use serde_json::Value;

#[path = "common/app.rs"]
mod app;
#[path = "common/mod.rs"]
mod common;
#[path = "common/deactivate.rs"]
mod deactivate;

use common::{BenchDb, Which, backend_name, machine};

#[derive(Debug, Parser)]
#[command(
    about = "What streams cost a deactivation and a stream list (see the module doc of benches/fanout_cost.rs)"
)]
struct Args {
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    /// Deactivations measured per stream count (and requests per list measure).
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Stream counts to measure a deactivation with.
    #[arg(long, value_delimiter = ',', default_values_t = [0, 50, 1000])]
    streams: Vec<usize>,
    /// Settle every pending SET after each deactivation (untimed), as receivers that keep up would: the outbox's
    /// pending index then stays small.
    #[arg(long)]
    settle: bool,
    /// Outbox rows for the list measure.
    #[arg(long, default_value_t = 1_000_000)]
    outbox: u64,
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    app::main(|| run(&Args::parse()))
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    println!("# offboard fan-out cost benchmark\n");
    let counts: Vec<String> = args.streams.iter().map(ToString::to_string).collect();
    println!(
        "`cargo bench --bench fanout_cost -- --backend {} --rounds {} --outbox {} --streams {}{}`\n",
        args.backend.flag(),
        args.rounds,
        args.outbox,
        counts.join(","),
        if args.settle { " --settle" } else { "" }
    );
    println!("machine: {}\n", machine());
    for &backend in args.backend.backends() {
        println!("## {}\n", backend_name(backend));
        println!("| streams | deactivation p50 ms | p99 ms | max ms | expansion p50 ms | p99 ms | max ms |");
        println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for &n in &args.streams {
            let Some(app) = App::start(backend)? else {
                return Ok(());
            };
            app.subscribe(n)?;
            let (h, x) = app.deactivations(args.rounds, args.settle)?;
            println!(
                "| {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                ms(&h, 0.5),
                ms(&h, 0.99),
                ms(&h, 1.0),
                ms(&x, 0.5),
                ms(&x, 0.99),
                ms(&x, 1.0)
            );
            app.stop()?;
        }
        println!();
        let Some(app) = App::start(backend)? else {
            return Ok(());
        };
        app.subscribe(50)?;
        let took = Instant::now();
        app.fill_outbox(args.outbox)?;
        println!(
            "{} outbox rows over 50 streams written in {:.1} s\n",
            args.outbox,
            took.elapsed().as_secs_f64()
        );
        println!(
            "| with 50 streams and {} outbox rows | p50 ms | p99 ms | max ms |",
            args.outbox
        );
        println!("| --- | ---: | ---: | ---: |");
        let list = App::timed(args.rounds, |c| {
            let res = c
                .get(format!("{}/ssf/streams", app.base))
                .bearer_auth(&app.ssf)
                .send()?;
            let n = res.json::<Value>()?.as_array().map_or(0, Vec::len);
            if n != 50 {
                bail!("the list has {n} streams");
            }
            Ok(())
        })?;
        row("`GET /ssf/streams` (the owner's 50)", &list);
        let metrics = App::timed(args.rounds, |c| {
            let text = c.get(format!("{}/metrics", app.base)).send()?.text()?;
            if !text.contains("offboard_fanout_sets") {
                bail!("no fan-out metrics");
            }
            Ok(())
        })?;
        row("`GET /metrics`", &metrics);
        let cli = App::timed(args.rounds, |_| {
            let n = streams::list(&app.db)?.len();
            if n != 50 {
                bail!("streams list has {n} streams");
            }
            Ok(())
        })?;
        row("`offboard streams list` (library call)", &cli);
        println!();
        app.stop()?;
    }
    Ok(())
}

fn row(what: &str, h: &Histogram<u64>) {
    println!(
        "| {what} | {:.2} | {:.2} | {:.2} |",
        ms(h, 0.5),
        ms(h, 0.99),
        ms(h, 1.0)
    );
}

#[expect(clippy::cast_precision_loss, reason = "latencies in µs are far below 2^52")]
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The real server in-process on a fresh database, with a `scim` and an `ssf.manage` credential.
struct App {
    db: Db,
    state: AppState,
    base: String,
    scim: String,
    ssf: String,
    server: common::Server,
    // Dropped last.
    _bench_db: BenchDb,
}

impl App {
    fn start(backend: Backend) -> anyhow::Result<Option<Self>> {
        let Some(bench_db) = BenchDb::create(backend)? else {
            return Ok(None);
        };
        let app::Opened {
            listener,
            addr,
            db,
            state,
            blocking,
        } = app::open(backend, &bench_db.url(), |config| {
            config.fanout.max_streams_per_client = 1000;
        })?;
        let scim = credentials::create(&db, "idp", &[Scope::Scim])?
            .expose()
            .to_owned();
        let ssf = credentials::create(&db, "svc", &[Scope::SsfManage])?
            .expose()
            .to_owned();
        let server = common::serve(state.clone(), listener, Some(blocking))?;
        Ok(Some(Self {
            db,
            state,
            base: format!("http://{addr}"),
            scim,
            ssf,
            server,
            _bench_db: bench_db,
        }))
    }

    /// `n` poll streams created by the credential `svc`.
    fn subscribe(&self, n: usize) -> anyhow::Result<()> {
        let caps = StreamCaps::from(&self.state.config.fanout);
        for i in 0..n {
            streams::create_within(
                &self.db,
                &self.state.tokens.keys,
                &NewStream {
                    audience: format!("svc-{i}"),
                    delivery: Delivery::Poll,
                    events_requested: Vec::new(),
                    description: None,
                    created_by: "svc".into(),
                },
                &caps,
            )?;
        }
        Ok(())
    }

    /// Creates a user and deactivates it, `rounds` times; the deactivations' answer times, and the times of the
    /// expansion of each change into outbox rows, run after the answer (as the worker or a poll would).
    fn deactivations(&self, rounds: usize, settle: bool) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
        let client = reqwest::blocking::Client::new();
        let base = format!("{}/scim/v2", self.base);
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut x = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        // Warm-up: connections, statement caches.
        for round in 0..rounds + 5 {
            let (_, sent, answered) = deactivate::create_and_deactivate(&client, &base, &self.scim, round)?;
            let took = answered - sent;
            let expanding = Instant::now();
            offboard::fanout::pending::expand(&self.db)?;
            let expanded = expanding.elapsed();
            if round >= 5 {
                h.saturating_record(micros(took));
                x.saturating_record(micros(expanded));
            }
            if settle {
                self.db.write(|conn| {
                    diesel::sql_query("UPDATE outbox SET status = 'delivered' WHERE status = 'pending'")
                        .execute(conn)
                        .map_err(DbError::from)
                })?;
            }
        }
        Ok((h, x))
    }

    /// `rows` outbox rows over the existing streams, in one statement.
    fn fill_outbox(&self, rows: u64) -> anyhow::Result<()> {
        const SELECT: &str = "SELECT s.id, 'bench-' || c.x, 'txn-' || c.x, \
             'https://schemas.openid.net/secevent/caep/event-type/session-revoked', NULL, '{}', \
             CASE WHEN c.x % 10 = 0 THEN 'pending' ELSE 'delivered' END, 1, {now}, {now} \
             FROM c JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM streams) s \
             ON s.k = c.x % (SELECT count(*) FROM streams)";
        const INTO: &str = "INSERT INTO outbox (stream_id, jti, txn, event_type, user_id, payload, status, \
                            attempts, next_attempt_at, created) ";
        self.db.write(|conn| {
            let sql = match conn {
                DbConnection::Sqlite(_) => format!(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows}) {INTO}{}",
                    SELECT.replace("{now}", "CURRENT_TIMESTAMP")
                ),
                DbConnection::Postgres(_) => format!(
                    "{INTO}WITH c(x) AS (SELECT generate_series(1, {rows})) {}",
                    SELECT.replace("{now}", "LOCALTIMESTAMP")
                ),
            };
            diesel::sql_query(sql).execute(conn).map_err(DbError::from)?;
            // SQLite's counters are kept by the repository's insert, not a trigger: count the bulk load once.
            if let DbConnection::Sqlite(_) = conn {
                diesel::sql_query("DELETE FROM outbox_counts")
                    .execute(conn)
                    .map_err(DbError::from)?;
                diesel::sql_query(
                    "INSERT INTO outbox_counts (stream_id, state, n) SELECT stream_id, \
                     CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 'retrying' \
                     WHEN status = 'pending' THEN 'queued' ELSE status END, count(*) FROM outbox GROUP BY 1, 2",
                )
                .execute(conn)
                .map_err(DbError::from)?;
            }
            // Fresh statistics, as autovacuum (or SQLite's optimize) would gather after a load.
            diesel::sql_query("ANALYZE").execute(conn).map_err(DbError::from)
        })?;
        Ok(())
    }

    /// `rounds` timed calls of `f` (after 3 unmeasured ones).
    fn timed(
        rounds: usize,
        f: impl Fn(&reqwest::blocking::Client) -> anyhow::Result<()>,
    ) -> anyhow::Result<Histogram<u64>> {
        let client = reqwest::blocking::Client::new();
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for i in 0..rounds + 3 {
            let t = Instant::now();
            f(&client)?;
            if i >= 3 {
                h.saturating_record(micros(t.elapsed()));
            }
        }
        Ok(h)
    }

    fn stop(self) -> anyhow::Result<()> {
        actix_web::rt::System::new().block_on(self.server.handle().stop(true));
        self.server.join()
    }
}
