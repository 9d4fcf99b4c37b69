//! The SCIM load benchmark: create throughput, `userName eq` lookup latency, GET by id, list pages, `sw` / `co` /
//! `and`+`or` filters, member PATCH on a 10 000-member group, and PATCH `active=false` / `active=true` throughput,
//! on SQLite and PostgreSQL, at a given number of users.
//!
//! ```text
//! cargo bench --bench scim -- [--backend sqlite|postgres|both] [--users 100000] [--seconds 10] [--connections 32]
//!                             [--phases create,lookup,get,list-page,filter-sw,filter-co,filter-and-or,group-patch,
//!                                       deactivate,reactivate]
//! ```
//!
//! `--phases` picks phases (default all); they always run in the order above, and `reactivate` needs `deactivate`.
//! Seeded userNames are `Seed.User{index}@Bench.Example` with the index zero-padded (at least 3 digits), and every
//! tenth seeded user (index ending in 9) is seeded inactive, so each filter's answer is known exactly:
//! - `filter-sw`: `userName sw "Seed.User{index without its last two digits}"`, a block of up to 100 users;
//! - `filter-co`: `userName co "{three digits}@bench"`, every user whose index ends in those digits (users/1000 of
//!   the seeded ones, plus created users whose number ends so), an unanchored substring in another case;
//! - `filter-and-or`: `(userName sw "…" or userName sw "…") and active eq true` on two blocks.
//!
//! The counts are taken from the userNames the benchmark seeded and created, not from the server.
//! `group-patch` sends PATCH requests to one group seeded (in one `offboard::lifecycle::groups::create` call) with the first 10 000
//! seeded users (fewer when `--users` is small): Okta's add (`path: members`) and remove (`path: members[value eq
//! "…"]`) of reserved users outside the group (the last 1 000 seeded users, which `deactivate` leaves alone), with
//! `excludedAttributes=members`. A user is removed only after its add was answered and added again only after its
//! removal was answered, so every PATCH is a real change and the member list at the end is known.
//!
//! Each backend gets a fresh database (SQLite in a temp dir; PostgreSQL a database `offboard_bench_<uuid>` created
//! on `TEST_DATABASE_URL` and dropped at the end), seeded with Okta-shaped users through
//! `offboard::lifecycle::users::create`, the same use case `POST /Users` runs (no HTTP, several threads). The real
//! server then runs in-process on a loopback listener: one actix worker in its own thread and `actix_web::rt::System`,
//! built through `offboard::configure` exactly as `offboard serve` does. The load generator is a current-thread
//! tokio runtime in the main thread keeping `--connections` requests in flight over reqwest. Every answer is
//! checked, and the store is read back at the end; a wrong answer fails the run. The server's writes are durable as
//! in production (SQLite WAL with `synchronous=NORMAL`; PostgreSQL with the server's `synchronous_commit`, printed).
//! Only the seeding connections, closed before the server starts, commit without waiting for PostgreSQL's WAL flush.
//!
//! Nothing here pins threads to cores: on a small machine the load generator shares the CPU with the server, so
//! compare runs made on the same machine, and record them in BENCHMARKS.md with the machine line printed here.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, ValueEnum};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use hdrhistogram::Histogram;
use offboard::AppState;
use offboard::config::Config;
use offboard::credentials::{self, Scope};
use offboard::db::{Backend, Db, DbError, DbOptions, DbUrl, schema};
use offboard::lifecycle::{groups, users};
use offboard::scim::{GROUP_SCHEMA, PATCH_OP_SCHEMA, USER_SCHEMA};
use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

#[path = "common/mod.rs"]
mod common;

use common::{BenchDb, Which, backend_name, machine};

#[derive(Debug, Parser)]
#[command(about = "SCIM load benchmark for offboard (see the module doc of benches/scim.rs)")]
struct Args {
    /// Which backends to measure.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    /// Users seeded before the phases.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Length of each phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests kept in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Phases to run, comma-separated (they run in the default order whatever the order given).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Phase::ALL)]
    phases: Vec<Phase>,
    /// Added by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Create,
    Lookup,
    Get,
    ListPage,
    FilterSw,
    FilterCo,
    FilterAndOr,
    GroupPatch,
    Deactivate,
    Reactivate,
}

impl Phase {
    const ALL: [Self; 10] = [
        Self::Create,
        Self::Lookup,
        Self::Get,
        Self::ListPage,
        Self::FilterSw,
        Self::FilterCo,
        Self::FilterAndOr,
        Self::GroupPatch,
        Self::Deactivate,
        Self::Reactivate,
    ];

    fn flag(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

/// Members of the group `group-patch` patches (fewer when there are not enough seeded users).
const GROUP_MEMBERS: usize = 10_000;

/// Seeded users reserved for `group-patch` to add and remove (at most; never more than half the users).
const GROUP_POOL: usize = 1000;

/// The page size of the list and filter phases.
const PAGE: usize = 100;

/// Where the seeded users go, fixed by `--users` and `--connections`.
#[derive(Debug, Clone)]
struct Layout {
    /// Digits of the zero-padded index in seeded userNames.
    width: usize,
    /// Seeded users `0..members` are the members of the `group-patch` group.
    members: usize,
    /// Seeded users `pool` are added to and removed from that group; `deactivate` leaves them alone.
    pool: std::ops::Range<usize>,
}

impl Layout {
    fn new(users: usize, connections: usize) -> Self {
        let width = users.saturating_sub(1).to_string().len().max(3);
        // Enough that every connection always finds a user to add or remove.
        let pool_size = GROUP_POOL.max(2 * connections).min(users / 2);
        let pool = users - pool_size..users;
        Self {
            width,
            members: pool.start.min(GROUP_MEMBERS),
            pool,
        }
    }
}

fn main() -> ExitCode {
    // reqwest is built with rustls and no bundled provider: install offboard's (aws-lc-rs) before any client.
    offboard::outbound::install_crypto_provider();
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("FAILED: the server gave wrong answers (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected backends; `Ok(false)` when any answer was wrong.
fn run(args: &Args) -> anyhow::Result<bool> {
    if args.users == 0 || args.connections == 0 || args.seconds == 0 {
        bail!("--users, --connections and --seconds must be at least 1");
    }
    if args.phases.contains(&Phase::Reactivate) && !args.phases.contains(&Phase::Deactivate) {
        bail!("--phases: reactivate reactivates the users deactivate deactivated; add deactivate");
    }
    if args.phases.contains(&Phase::GroupPatch) && args.users < 4 {
        bail!("--phases: group-patch needs at least 4 users");
    }
    println!("# offboard SCIM benchmark\n");
    let phases: Vec<String> = Phase::ALL
        .into_iter()
        .filter(|p| args.phases.contains(p))
        .map(Phase::flag)
        .collect();
    println!(
        "`cargo bench --bench scim -- --backend {} --users {} --seconds {} --connections {} --phases {}`\n",
        args.backend.flag(),
        args.users,
        args.seconds,
        args.connections,
        phases.join(",")
    );
    println!("machine: {}\n", machine());
    let backends = args.backend.backends();
    let mut all_right = true;
    let mut ran = 0;
    for &backend in backends {
        let Some(bench_db) = BenchDb::create(backend)? else {
            continue;
        };
        let report = run_backend(&bench_db, args)?;
        drop(bench_db);
        report.print();
        all_right &= report.all_right();
        ran += 1;
    }
    if ran == 0 {
        bail!("no backend could run");
    }
    Ok(all_right)
}

/// PostgreSQL: whether connections opened from now on wait for the WAL flush at commit (the server default)
/// or not (for seeding).
fn seeding_commits(db: &BenchDb, seeding: bool) -> anyhow::Result<()> {
    let BenchDb::Postgres { admin_url, name } = db else {
        return Ok(());
    };
    let sql = if seeding {
        format!("ALTER DATABASE {name} SET synchronous_commit = off")
    } else {
        format!("ALTER DATABASE {name} RESET synchronous_commit")
    };
    let mut admin = PgConnection::establish(admin_url)?;
    diesel::sql_query(sql).execute(&mut admin)?;
    Ok(())
}

/// A seeded user, as the load generator addresses it.
struct Seeded {
    id: String,
    user_name: String,
    active: bool,
}

/// An Okta "Push New Users" body (shared/fixtures/okta-create-user.json): password, `groups: []` and locale
/// included, as Okta sends them. `kind` keeps the Okta ids (`externalId`) of seeded and created users apart.
fn okta_user(user_name: &str, n: usize, kind: char, active: bool) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Bench", "familyName": format!("User{n}")},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "displayName": format!("Bench User{n}"),
        "locale": "en-US",
        "externalId": format!("00u{kind}{n:016x}"),
        "groups": [],
        "password": "1mz050nq",
        "active": active
    })
}

/// The userName of seeded user `n`: its index zero-padded to `width` digits.
fn seed_name(n: usize, width: usize) -> String {
    format!("Seed.User{n:0width$}@Bench.Example")
}

/// Every tenth seeded user (index ending in 9) is seeded inactive, for `filter-and-or`.
fn seeded_active(n: usize) -> bool {
    n % 10 != 9
}

fn created_name(n: usize) -> String {
    format!("New.User{n}@Bench.Example")
}

/// Creates `count` users through `lifecycle::users::create` from several threads.
fn seed(db: &Db, count: usize, width: usize) -> anyhow::Result<Vec<Seeded>> {
    let threads = match db.backend() {
        // One writer connection: more threads only queue on it, two keep it busy while JSON is prepared.
        Backend::Sqlite => 2,
        // One thread per pooled connection: the use case is a chain of round trips, so many overlap.
        Backend::Postgres => 16,
    };
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    let mut mine = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= count {
                            break;
                        }
                        let user_name = seed_name(n, width);
                        let active = seeded_active(n);
                        let created =
                            users::create(db, &okta_user(&user_name, n, 's', active)).map_err(|e| {
                                next.store(count, Ordering::Relaxed); // stops the other threads
                                anyhow!("seeding user {n}: {e:?}")
                            })?;
                        mine.push((
                            n,
                            Seeded {
                                id: created.user.id,
                                user_name,
                                active,
                            },
                        ));
                    }
                    done.lock()
                        .map_err(|_| anyhow!("a seeding thread panicked"))?
                        .extend(mine);
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow!("a seeding thread panicked"))??;
        }
        Ok(())
    })?;
    let mut done = done
        .into_inner()
        .map_err(|_| anyhow!("a seeding thread panicked"))?;
    done.sort_unstable_by_key(|(n, _)| *n);
    Ok(done.into_iter().map(|(_, s)| s).collect())
}

/// What seeding left in the store for the phases.
struct Seeding {
    /// The IdP's SCIM credential.
    token: String,
    seeded: Vec<Seeded>,
    seed_secs: f64,
    /// The `group-patch` group's id and the seconds its creation took, when that phase runs.
    group: Option<(String, f64)>,
}

/// Seeds the store on `db`: the IdP's credential, the users, and the group when `group-patch` runs. PostgreSQL is
/// then analysed.
fn seed_store(db: &Db, args: &Args, layout: &Layout) -> anyhow::Result<Seeding> {
    let token = credentials::create(db, "bench-idp", &[Scope::Scim])?
        .expose()
        .to_owned();
    eprintln!("seeding {} users…", args.users);
    let started = Instant::now();
    let seeded = seed(db, args.users, layout.width)?;
    let seed_secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {} users in {seed_secs:.1} s ({:.0} users/s)\n",
        args.users,
        rate(args.users as u64, seed_secs)
    );
    let group = if args.phases.contains(&Phase::GroupPatch) {
        let started = Instant::now();
        let id = seed_group(db, &seeded, layout.members)?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "seeded a group of {} members in {secs:.2} s (one lifecycle::groups::create call)\n",
            layout.members
        );
        Some((id, secs))
    } else {
        None
    };
    if db.backend() == Backend::Postgres {
        // Autovacuum would analyse a table this size within a minute; do it now so the plans do not depend on when
        // it ran.
        db.read(|c| diesel::sql_query("ANALYZE").execute(c).map_err(DbError::from))?;
    }
    Ok(Seeding {
        token,
        seeded,
        seed_secs,
        group,
    })
}

/// Creates the `group-patch` group with seeded users `0..members`, in one `lifecycle::groups::create` call (the
/// use case `POST /Groups` runs) with Okta's member form. Returns its id.
fn seed_group(db: &Db, seeded: &[Seeded], members: usize) -> anyhow::Result<String> {
    let members: Vec<Value> = seeded
        .iter()
        .take(members)
        .map(|s| json!({"value": s.id, "display": s.user_name}))
        .collect();
    let body = json!({
        "schemas": [GROUP_SCHEMA],
        "displayName": "Bench Engineering",
        "externalId": "00gbench0000000001",
        "members": members
    });
    let view = groups::create(db, &body, false).map_err(|e| anyhow!("seeding the group: {e:?}"))?;
    Ok(view.group.id)
}

/// What one backend's run measured.
struct Report {
    backend: Backend,
    db_version: String,
    durability: String,
    users: usize,
    seed_secs: f64,
    /// Members of the `group-patch` group and the seconds its creation took.
    group_seed: Option<(usize, f64)>,
    phases: Vec<Measured>,
    checks: Vec<String>,
}

fn run_backend(bench_db: &BenchDb, args: &Args) -> anyhow::Result<Report> {
    let url = DbUrl::parse(&bench_db.url()).map_err(|e| anyhow!("database url: {e}"))?;
    let backend = url.backend;
    println!("## {}\n", backend_name(backend));
    // What `offboard serve` uses with a default configuration.
    let config = Config {
        database_url: bench_db.url(),
        workers: 1,
        ..Config::default()
    };
    let opts = DbOptions {
        pool_size: config.database.pool_size,
        connect_timeout: Duration::from_secs(config.database.connect_timeout_secs),
        sqlite_busy_timeout_ms: config.database.sqlite_busy_timeout_ms,
        ..DbOptions::default()
    };
    let open = || Db::open(&url, &opts).with_context(|| format!("open {}", url.redacted()));

    // Seeding runs the same use case as POST /Users on its own pool. On PostgreSQL its commits do not wait for the
    // WAL flush (`synchronous_commit = off` for the seeding connections only): the rows are the same, and the
    // server's pool, opened afterwards, commits durably (printed below).
    seeding_commits(bench_db, true)?;
    let seeding_db = open()?;
    seeding_db.migrate()?;
    let layout = Layout::new(args.users, args.connections);
    let Seeding {
        token,
        seeded,
        seed_secs,
        group,
    } = seed_store(&seeding_db, args, &layout)?;
    drop(seeding_db);
    seeding_commits(bench_db, false)?;

    let db = open()?;
    let (db_version, durability) = db_facts(&db)?;

    let listener = TcpListener::bind("127.0.0.1:0").context("bind a loopback port")?;
    let addr = listener.local_addr()?;
    let mut config = Config {
        issuer: format!("http://{addr}"),
        ..config
    };
    // A throwaway key-encryption key: the benchmark's signing keys die with its database.
    config.keys.kek = Some(offboard::config::SecretString::new(common::BENCH_KEK));
    let state = AppState::open(db.clone(), config)?;
    let server = common::serve(state, listener, None)?;
    let handle = server.handle();

    let load = Load {
        root: format!("http://{addr}"),
        token,
        connections: args.connections,
        duration: Duration::from_secs(args.seconds),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let plan = Plan {
        phases: &args.phases,
        layout: &layout,
        group: group.as_ref().map(|(id, _)| id.as_str()),
    };
    let outcome = runtime.block_on(async {
        let outcome = phases(&load, &seeded, &plan).await;
        handle.stop(true).await;
        outcome
    });
    server.join()?;
    let outcome = outcome?;
    let checks = verify_store(&db, &seeded, &outcome)?;
    let phases = outcome.measured;
    Ok(Report {
        backend,
        db_version,
        durability,
        users: args.users,
        seed_secs,
        group_seed: group.map(|(_, secs)| (layout.members, secs)),
        phases,
        checks,
    })
}

#[derive(QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

/// The database version and how durable a commit is, as the server's connections see it.
fn db_facts(db: &Db) -> anyhow::Result<(String, String)> {
    let one = |sql: &'static str| {
        db.read(|c| {
            diesel::sql_query(sql)
                .get_result::<Text>(c)
                .map_err(DbError::from)
        })
    };
    Ok(match db.backend() {
        Backend::Sqlite => (
            format!("SQLite {}", one("SELECT sqlite_version() AS v")?.v),
            "WAL, synchronous=NORMAL (set per connection by offboard)".to_owned(),
        ),
        Backend::Postgres => {
            let version = one("SELECT current_setting('server_version') AS v")?.v;
            let sync = one("SELECT current_setting('synchronous_commit') AS v")?.v;
            let fsync = one("SELECT current_setting('fsync') AS v")?.v;
            (
                format!("PostgreSQL {version}"),
                format!("synchronous_commit={sync}, fsync={fsync}"),
            )
        }
    })
}

/// How the load is applied.
struct Load {
    /// `http://127.0.0.1:PORT`.
    root: String,
    token: String,
    connections: usize,
    duration: Duration,
}

/// Judges an answer: `Err` says what is wrong with it.
type Check = Box<dyn FnOnce(u16, &Value) -> Result<(), String>>;

/// One request to send and how to judge its answer (status and JSON body, `Null` when not JSON).
struct Job {
    request: reqwest::RequestBuilder,
    check: Check,
}

/// What one phase measured.
struct Measured {
    name: String,
    hist: Histogram<u64>,
    right: u64,
    wrong: u64,
    /// The first few wrong answers, described.
    samples: Vec<String>,
    elapsed: Duration,
    /// The phase ended before its time because it had no more targets (each PATCH needs a fresh user, or, in
    /// `group-patch`, one not in flight).
    ran_out: bool,
    /// CPU time of the process without the load generator (the server, and SQLite inside it), and of the load
    /// generator, during the phase. PostgreSQL's own processes are not counted.
    cpu: Option<CpuSplit>,
}

#[derive(Debug, Clone, Copy)]
struct CpuSplit {
    server: Duration,
    load: Duration,
}

const WRONG_SAMPLES: usize = 5;

impl Measured {
    fn new(name: String) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            // Microseconds, 1 µs to 10 min, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            right: 0,
            wrong: 0,
            samples: Vec::new(),
            elapsed: Duration::ZERO,
            ran_out: false,
            cpu: None,
        })
    }

    fn record(&mut self, latency: Duration, verdict: Result<(), String>) {
        self.hist
            .saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1));
        match verdict {
            Ok(()) => self.right += 1,
            Err(why) => {
                self.wrong += 1;
                if self.samples.len() < WRONG_SAMPLES {
                    self.samples.push(why);
                }
            }
        }
    }
}

/// Runs `next`'s jobs with `load.connections` in flight until the phase's time is up or `next` has none left.
async fn drive(
    name: impl Into<String>,
    load: &Load,
    next: impl Fn() -> Option<Job>,
) -> anyhow::Result<Measured> {
    let measured = RefCell::new(Measured::new(name.into())?);
    let ran_out = Cell::new(false);
    let cpu_before = cpu_times();
    let started = Instant::now();
    let deadline = started + load.duration;
    let (next, measured_ref, ran_out_ref) = (&next, &measured, &ran_out);
    let worker = || async move {
        while Instant::now() < deadline {
            let Some(job) = next() else {
                ran_out_ref.set(true);
                break;
            };
            let sent = Instant::now();
            let answer = match job.request.send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    res.bytes().await.map(|b| (status, b))
                }
                Err(e) => Err(e),
            };
            let latency = sent.elapsed();
            let verdict = match answer {
                Ok((status, bytes)) => {
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    (job.check)(status, &body)
                        .map_err(|why| format!("{why}; HTTP {status}: {}", snippet(&bytes)))
                }
                Err(e) => Err(format!("no answer: {e}")),
            };
            measured_ref.borrow_mut().record(latency, verdict);
        }
    };
    futures::future::join_all((0..load.connections).map(|_| worker())).await;
    let mut measured = measured.into_inner();
    measured.elapsed = started.elapsed();
    measured.ran_out = ran_out.get();
    measured.cpu = cpu_before.zip(cpu_times()).map(|((p0, t0), (p1, t1))| {
        let load = t1.saturating_sub(t0);
        CpuSplit {
            server: p1.saturating_sub(p0).saturating_sub(load),
            load,
        }
    });
    Ok(measured)
}

/// CPU time (user + system) used so far by the whole process and by the calling thread, from /proc.
fn cpu_times() -> Option<(Duration, Duration)> {
    Some((cpu_time("/proc/self/stat")?, cpu_time("/proc/thread-self/stat")?))
}

/// `utime + stime` of a `/proc/…/stat` file.
fn cpu_time(path: &str) -> Option<Duration> {
    /// `USER_HZ`: the unit of those fields, 100 on every Linux architecture offboard runs on.
    const TICKS_PER_SEC: u64 = 100;
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces); utime and stime are fields 14 and 15 of the line.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * (1000 / TICKS_PER_SEC)))
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().nth(200).is_some() {
        s.push('…');
    }
    s
}

fn expect_status(status: u16, want: u16) -> Result<(), String> {
    if status == want {
        Ok(())
    } else {
        Err(format!("expected {want}"))
    }
}

fn expect_field(body: &Value, pointer: &str, want: &Value) -> Result<(), String> {
    match body.pointer(pointer) {
        Some(v) if v == want => Ok(()),
        Some(v) => Err(format!("{pointer} is {v}, expected {want}")),
        None => Err(format!("{pointer} missing, expected {want}")),
    }
}

/// The SCIM API as the IdP calls it: bearer credential, SCIM media types.
struct Api {
    client: reqwest::Client,
    root: String,
    auth: String,
}

impl Api {
    fn new(load: &Load) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(load.connections)
            .build()?;
        Ok(Self {
            client,
            root: load.root.clone(),
            auth: format!("Bearer {}", load.token),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/scim/v2{path}", self.root))
            .header("Authorization", &self.auth)
            .header("Accept", "application/scim+json")
    }

    fn with_body(&self, method: reqwest::Method, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.request(method, path)
            .header("Content-Type", "application/scim+json; charset=utf-8")
            .body(body.to_string())
    }
}

/// Opens the connections before the first phase, so no phase pays for connection set-up.
async fn warm_up(api: &Api, load: &Load) -> anyhow::Result<()> {
    let probes =
        (0..load.connections).map(|_| api.request(reqwest::Method::GET, "/ServiceProviderConfig").send());
    for res in futures::future::join_all(probes).await {
        res.context("the server does not answer")?;
    }
    Ok(())
}

/// What to run, and what the seeding prepared for it.
struct Plan<'a> {
    phases: &'a [Phase],
    layout: &'a Layout,
    /// The id of the `group-patch` group (seeded only when that phase runs).
    group: Option<&'a str>,
}

impl Plan<'_> {
    fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }
}

/// What the phases produced: their measurements, the users `create` created, which seeded users each PATCH phase
/// changed, and where `group-patch` left the group.
struct Phases {
    measured: Vec<Measured>,
    created: Vec<String>,
    deactivated: Vec<usize>,
    reactivated: Vec<usize>,
    group: Option<GroupOutcome>,
}

/// The phases, in order: create, lookup, get, list-page, filter-sw, filter-co, filter-and-or, group-patch,
/// deactivate, reactivate (those `plan` selects).
async fn phases(load: &Load, seeded: &[Seeded], plan: &Plan<'_>) -> anyhow::Result<Phases> {
    let api = Api::new(load)?;
    warm_up(&api, load).await?;
    let mut measured = Vec::new();

    // create: new unique Okta users → 201 with the user.
    let mut created = Vec::new();
    if plan.runs(Phase::Create) {
        let (m, names) = create_phase(load, &api).await?;
        measured.push(m);
        created = names;
    }

    read_phases(load, &api, seeded, plan, &mut measured).await?;

    // The live users as the server must see them now (the PATCH phases, which change `active`, come last).
    let directory = Directory::new(seeded, &created);

    if plan.runs(Phase::ListPage) {
        measured.push(list_page(load, &api, directory.len()).await?);
    }
    filter_phases(load, &api, seeded, &directory, plan, &mut measured).await?;

    // group-patch: Okta's member add / remove on the big group, members excluded from the answer.
    let mut group = None;
    if plan.runs(Phase::GroupPatch) {
        let id = plan
            .group
            .ok_or_else(|| anyhow!("group-patch runs without its group"))?;
        let (m, outcome) = group_patch(load, &api, seeded, id, plan.layout).await?;
        measured.push(m);
        group = Some(outcome);
    }

    // deactivate: Okta's PATCH (replace, no path, value map) on distinct active users in random order, each a real
    // state change (version 1 → 2) that ends the user's sessions. The users group-patch adds and removes are left
    // out: leaving the group ended their sessions too.
    let mut deactivated = Vec::new();
    if plan.runs(Phase::Deactivate) {
        let mut order: Vec<usize> = (0..plan.layout.pool.start)
            .filter(|&n| seeded.get(n).is_some_and(|s| s.active))
            .collect();
        order.shuffle(&mut rand::rng());
        let (m, changed) = patch_active(
            "deactivate (PATCH active=false)",
            load,
            &api,
            seeded,
            &order,
            false,
        )
        .await?;
        measured.push(m);
        deactivated = changed;
    }

    // reactivate: the same users back to active, in the same order (version 2 → 3).
    let mut reactivated = Vec::new();
    if plan.runs(Phase::Reactivate) {
        let (m, changed) = patch_active(
            "reactivate (PATCH active=true)",
            load,
            &api,
            seeded,
            &deactivated,
            true,
        )
        .await?;
        measured.push(m);
        reactivated = changed;
    }
    Ok(Phases {
        measured,
        created,
        deactivated,
        reactivated,
        group,
    })
}

/// create: new unique Okta users → 201 with the user. Returns the userNames created.
async fn create_phase(load: &Load, api: &Api) -> anyhow::Result<(Measured, Vec<String>)> {
    let created = Rc::new(RefCell::new(Vec::new()));
    let next_n = Cell::new(0usize);
    let measured = drive("create (POST)", load, || {
        let n = next_n.get();
        next_n.set(n + 1);
        let user_name = created_name(n);
        let request = api.with_body(
            reqwest::Method::POST,
            "/Users",
            &okta_user(&user_name, n, 'c', true),
        );
        let created = created.clone();
        Some(Job {
            request,
            check: Box::new(move |status, body| {
                expect_status(status, 201)?;
                expect_field(body, "/userName", &json!(user_name))?;
                expect_field(body, "/active", &json!(true))?;
                match body.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => {
                        created.borrow_mut().push(user_name);
                        Ok(())
                    }
                    _ => Err("no id".into()),
                }
            }),
        })
    })
    .await?;
    Ok((measured, created.take()))
}

/// lookup and get (those `plan` selects).
async fn read_phases(
    load: &Load,
    api: &Api,
    seeded: &[Seeded],
    plan: &Plan<'_>,
    measured: &mut Vec<Measured>,
) -> anyhow::Result<()> {
    // lookup: `userName eq` on random seeded users, spelt as seeded → exactly that user.
    if plan.runs(Phase::Lookup) {
        measured.push(
            drive("lookup (userName eq)", load, || {
                let user = seeded.get(rand::rng().random_range(0..seeded.len()))?;
                let filter = format!("userName eq \"{}\"", user.user_name);
                let request = api
                    .request(reqwest::Method::GET, "/Users")
                    .query(&[("filter", filter)]);
                let id = json!(user.id);
                Some(Job {
                    request,
                    check: Box::new(move |status, body| {
                        expect_status(status, 200)?;
                        expect_field(body, "/totalResults", &json!(1))?;
                        expect_field(body, "/Resources/0/id", &id)
                    }),
                })
            })
            .await?,
        );
    }

    // get: GET /Users/{id} on random seeded users.
    if plan.runs(Phase::Get) {
        measured.push(
            drive("get (GET /Users/{id})", load, || {
                let user = seeded.get(rand::rng().random_range(0..seeded.len()))?;
                let request = api.request(reqwest::Method::GET, &format!("/Users/{}", user.id));
                let user_name = json!(user.user_name);
                Some(Job {
                    request,
                    check: Box::new(move |status, body| {
                        expect_status(status, 200)?;
                        expect_field(body, "/userName", &user_name)
                    }),
                })
            })
            .await?,
        );
    }
    Ok(())
}

/// list-page: a page of 100 at a random startIndex → 100 users (fewer at the end), and all `total` users counted.
async fn list_page(load: &Load, api: &Api, total: usize) -> anyhow::Result<Measured> {
    drive("list-page (startIndex, count=100)", load, || {
        let start = rand::rng().random_range(1..=total.saturating_sub(PAGE - 1).max(1));
        let request = api
            .request(reqwest::Method::GET, "/Users")
            .query(&[("startIndex", start), ("count", PAGE)]);
        Some(Job {
            request,
            check: Box::new(move |status, body| {
                expect_status(status, 200)?;
                expect_field(body, "/startIndex", &json!(start))?;
                let want = (total + 1 - start).min(PAGE);
                expect_page(body, total, want, |r| {
                    r.get("id").and_then(Value::as_str).is_some()
                        && r.get("userName").and_then(Value::as_str).is_some()
                })
            }),
        })
    })
    .await
}

/// filter-sw, filter-co, filter-and-or (those `plan` selects): every answer against `directory`.
async fn filter_phases(
    load: &Load,
    api: &Api,
    seeded: &[Seeded],
    directory: &Directory,
    plan: &Plan<'_>,
    measured: &mut Vec<Measured>,
) -> anyhow::Result<()> {
    // The seeded userNames share `Seed.User` and a zero-padded index: without its last two digits it names a block of
    // up to 100 seeded users.
    let block_digits = plan.layout.width - 2;
    let blocks = seeded.len().div_ceil(100);
    let block_prefix = |b: usize| format!("Seed.User{b:0block_digits$}");

    // filter-sw: one block → every user of the block, active or not.
    if plan.runs(Phase::FilterSw) {
        measured.push(
            drive("filter-sw (userName sw)", load, || {
                let prefix = block_prefix(rand::rng().random_range(0..blocks));
                let total = directory.starting_with(&prefix).len();
                let filter = format!("userName sw \"{prefix}\"");
                let request = api
                    .request(reqwest::Method::GET, "/Users")
                    .query(&[("filter", filter.as_str()), ("count", "100")]);
                let prefix = prefix.to_lowercase();
                Some(Job {
                    request,
                    check: Box::new(move |status, body| {
                        expect_status(status, 200)?;
                        expect_page(body, total, total.min(PAGE), |r| {
                            user_name_of(r).is_some_and(|u| u.starts_with(&prefix))
                        })
                    }),
                })
            })
            .await?,
        );
    }

    // filter-co: `co "{ddd}@bench"` → every user whose index or number ends in ddd (lower case: userName is not
    // caseExact, and the seeded names say `@Bench`).
    if plan.runs(Phase::FilterCo) {
        measured.push(
            drive("filter-co (userName co)", load, || {
                let digits = format!("{:03}", rand::rng().random_range(0..1000));
                let total = directory.containing_before_at(&digits);
                let needle = format!("{digits}@bench");
                let filter = format!("userName co \"{needle}\"");
                let request = api
                    .request(reqwest::Method::GET, "/Users")
                    .query(&[("filter", filter.as_str()), ("count", "100")]);
                Some(Job {
                    request,
                    check: Box::new(move |status, body| {
                        expect_status(status, 200)?;
                        expect_page(body, total, total.min(PAGE), |r| {
                            user_name_of(r).is_some_and(|u| u.contains(&needle))
                        })
                    }),
                })
            })
            .await?,
        );
    }

    // filter-and-or: two different blocks, active users only → nine in ten of the two blocks.
    if plan.runs(Phase::FilterAndOr) {
        measured.push(
            drive("filter-and-or ((sw or sw) and active eq true)", load, || {
                let mut rng = rand::rng();
                let a = rng.random_range(0..blocks);
                let b = if blocks > 1 {
                    (a + rng.random_range(1..blocks)) % blocks
                } else {
                    a
                };
                let (pa, pb) = (block_prefix(a), block_prefix(b));
                let active = |p: &str| {
                    directory
                        .starting_with(p)
                        .iter()
                        .filter(|(_, active)| *active)
                        .count()
                };
                let total = if a == b {
                    active(&pa)
                } else {
                    active(&pa) + active(&pb)
                };
                let filter = format!("(userName sw \"{pa}\" or userName sw \"{pb}\") and active eq true");
                let request = api
                    .request(reqwest::Method::GET, "/Users")
                    .query(&[("filter", filter.as_str()), ("count", "100")]);
                let (pa, pb) = (pa.to_lowercase(), pb.to_lowercase());
                Some(Job {
                    request,
                    check: Box::new(move |status, body| {
                        expect_status(status, 200)?;
                        expect_page(body, total, total.min(PAGE), |r| {
                            r.get("active") == Some(&Value::Bool(true))
                                && user_name_of(r).is_some_and(|u| u.starts_with(&pa) || u.starts_with(&pb))
                        })
                    }),
                })
            })
            .await?,
        );
    }
    Ok(())
}

/// The live users' userNames, folded to lower case as the server compares them, with `active`: what the list and
/// filter phases must find.
struct Directory {
    /// Sorted.
    users: Vec<(String, bool)>,
    /// How many userNames have each three characters right before `@bench` (every userName here has one `@`).
    before_at: HashMap<String, usize>,
}

impl Directory {
    fn new(seeded: &[Seeded], created: &[String]) -> Self {
        let mut users: Vec<(String, bool)> = seeded
            .iter()
            .map(|s| (s.user_name.to_lowercase(), s.active))
            .chain(created.iter().map(|u| (u.to_lowercase(), true)))
            .collect();
        users.sort_unstable();
        let mut before_at = HashMap::new();
        for (u, _) in &users {
            if let Some((local, domain)) = u.split_once('@')
                && domain.starts_with("bench")
                && let Some(key) = local.get(local.len().saturating_sub(3)..)
                && key.len() == 3
            {
                *before_at.entry(key.to_owned()).or_insert(0) += 1;
            }
        }
        Self { users, before_at }
    }

    fn len(&self) -> usize {
        self.users.len()
    }

    /// The users whose userName starts with `prefix` (compared in lower case).
    fn starting_with(&self, prefix: &str) -> &[(String, bool)] {
        let prefix = prefix.to_lowercase();
        let from = self.users.partition_point(|(u, _)| u.as_str() < prefix.as_str());
        let rest = self.users.get(from..).unwrap_or_default();
        let n = rest.partition_point(|(u, _)| u.starts_with(&prefix));
        rest.get(..n).unwrap_or_default()
    }

    /// How many userNames contain `{digits}@bench` (three digits).
    fn containing_before_at(&self, digits: &str) -> usize {
        self.before_at.get(digits).copied().unwrap_or(0)
    }
}

/// A list response's userName, in lower case.
fn user_name_of(resource: &Value) -> Option<String> {
    resource
        .get("userName")
        .and_then(Value::as_str)
        .map(str::to_lowercase)
}

/// Checks a `ListResponse`: `total` results, a page of `want` resources, each one `fits`.
fn expect_page(body: &Value, total: usize, want: usize, fits: impl Fn(&Value) -> bool) -> Result<(), String> {
    expect_field(body, "/totalResults", &json!(total))?;
    expect_field(body, "/itemsPerPage", &json!(want))?;
    let resources = match body.get("Resources") {
        Some(Value::Array(list)) => list.as_slice(),
        None if want == 0 => &[],
        _ => return Err("no Resources array".into()),
    };
    if resources.len() != want {
        return Err(format!("{} Resources, expected {want}", resources.len()));
    }
    match resources.iter().find(|r| !fits(r)) {
        Some(r) => Err(format!(
            "a resource that does not fit: id {}, userName {}",
            r.get("id").unwrap_or(&Value::Null),
            r.get("userName").unwrap_or(&Value::Null)
        )),
        None => Ok(()),
    }
}

/// Where `group-patch` left the group, as its answers say.
struct GroupOutcome {
    id: String,
    /// Members seeded.
    seeded_members: usize,
    /// Pool users confirmed added and not removed since: members now.
    added: Vec<usize>,
    /// Pool users confirmed out of the group: not members.
    out: Vec<usize>,
    /// Pool users whose last PATCH got a wrong answer: state unknown.
    unknown: usize,
    /// Confirmed PATCH requests, each a real change of the member list (one new group version each).
    changes: u64,
}

/// PATCH /Groups/{id}?excludedAttributes=members with Okta's forms, alternately adding a reserved user who is not a
/// member (`add`, path `members`) and removing one whose add was answered (`remove`, path `members[value eq "…"]`).
/// A user's next PATCH is sent only after the answer to its last, so each is a real change whatever the order the
/// server runs concurrent requests in.
async fn group_patch(
    load: &Load,
    api: &Api,
    seeded: &[Seeded],
    id: &str,
    layout: &Layout,
) -> anyhow::Result<(Measured, GroupOutcome)> {
    let out: Rc<RefCell<VecDeque<usize>>> = Rc::new(RefCell::new(layout.pool.clone().collect()));
    let added: Rc<RefCell<VecDeque<usize>>> = Rc::new(RefCell::new(VecDeque::new()));
    let remove_next = Cell::new(false);
    let path = format!("/Groups/{id}?excludedAttributes=members");
    let group_id = json!(id);
    let name = format!("group-patch (PATCH members, {}-member group)", layout.members);
    let measured = drive(name, load, || {
        let remove = remove_next.get();
        remove_next.set(!remove);
        let first = if remove { &added } else { &out };
        let popped = first.borrow_mut().pop_front();
        let (n, add) = if let Some(n) = popped {
            (n, !remove)
        } else {
            // Nothing of that kind is waiting (all in flight): the other kind.
            let other = if remove { &out } else { &added };
            let n = other.borrow_mut().pop_front()?;
            (n, remove)
        };
        let user = seeded.get(n)?;
        let op = if add {
            json!({"op": "add", "path": "members", "value": [{"value": user.id, "display": user.user_name}]})
        } else {
            json!({"op": "remove", "path": format!("members[value eq \"{}\"]", user.id)})
        };
        let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [op]});
        let request = api.with_body(reqwest::Method::PATCH, &path, &body);
        let (out, added, group_id) = (out.clone(), added.clone(), group_id.clone());
        Some(Job {
            request,
            check: Box::new(move |status, body| {
                expect_status(status, 200)?;
                expect_field(body, "/id", &group_id)?;
                if let Some(k) = body
                    .as_object()
                    .and_then(|m| m.keys().find(|k| k.eq_ignore_ascii_case("members")))
                {
                    return Err(format!(
                        "the answer has \"{k}\" despite excludedAttributes=members"
                    ));
                }
                if add {
                    added.borrow_mut().push_back(n);
                } else {
                    out.borrow_mut().push_back(n);
                }
                Ok(())
            }),
        })
    })
    .await?;
    let added: Vec<usize> = added.take().into();
    let out: Vec<usize> = out.take().into();
    let unknown = layout.pool.len() - added.len() - out.len();
    let outcome = GroupOutcome {
        id: id.to_owned(),
        seeded_members: layout.members,
        added,
        out,
        unknown,
        changes: measured.right,
    };
    Ok((measured, outcome))
}

/// Sends a PATCH of `active` to the seeded users named by `order`, one request each, in that order. Returns the
/// measurement and the users whose change was confirmed.
async fn patch_active(
    name: &'static str,
    load: &Load,
    api: &Api,
    seeded: &[Seeded],
    order: &[usize],
    active: bool,
) -> anyhow::Result<(Measured, Vec<usize>)> {
    let body = json!({
        "schemas": [PATCH_OP_SCHEMA],
        "Operations": [{"op": "replace", "value": {"active": active}}]
    });
    // Seeded at version 1; each phase changes each user once.
    let version = json!(if active { "W/\"3\"" } else { "W/\"2\"" });
    let position = Cell::new(0usize);
    let changed = Rc::new(RefCell::new(Vec::new()));
    let measured = drive(name, load, || {
        let i = position.get();
        let &n = order.get(i)?;
        position.set(i + 1);
        let user = seeded.get(n)?;
        let request = api.with_body(reqwest::Method::PATCH, &format!("/Users/{}", user.id), &body);
        let (changed, version) = (changed.clone(), version.clone());
        Some(Job {
            request,
            check: Box::new(move |status, body| {
                expect_status(status, 200)?;
                expect_field(body, "/active", &json!(active))?;
                expect_field(body, "/meta/version", &version)?;
                changed.borrow_mut().push(n);
                Ok(())
            }),
        })
    })
    .await?;
    let changed = changed.take();
    Ok((measured, changed))
}

/// Reads the store behind the server's back: the answers must have been real, committed changes.
fn verify_store(db: &Db, seeded: &[Seeded], phases: &Phases) -> anyhow::Result<Vec<String>> {
    use schema::users::dsl as u;
    let mut problems = Vec::new();
    let created = phases.created.len() as u64;
    let live: i64 = db.read(|c| {
        u::users
            .filter(u::deleted_at.is_null())
            .count()
            .get_result(c)
            .map_err(DbError::from)
    })?;
    let expected = seeded.len() as u64 + created;
    if u64::try_from(live).ok() != Some(expected) {
        problems.push(format!(
            "{live} live users in the store, expected {expected} (seeded + created)"
        ));
    }
    // A sample of the PATCHed users: deactivation bumped the token generation once, in the same transaction.
    let reactivated: std::collections::HashSet<usize> = phases.reactivated.iter().copied().collect();
    for &n in phases
        .deactivated
        .iter()
        .step_by((phases.deactivated.len() / 200).max(1))
    {
        let Some(user) = seeded.get(n) else { continue };
        let (is_active, generation): (bool, i64) = db.read(|c| {
            u::users
                .filter(u::id.eq(&user.id))
                .select((u::active, u::token_generation))
                .first(c)
                .map_err(DbError::from)
        })?;
        let active = reactivated.contains(&n);
        if is_active != active || generation != 1 {
            problems.push(format!(
                "user {}: active={is_active} token_generation={generation} in the store, expected active={active} \
                 token_generation=1",
                user.id
            ));
        }
    }
    if let Some(group) = &phases.group {
        problems.extend(verify_group(db, seeded, group)?);
    }
    Ok(problems)
}

/// The group after `group-patch`: the seeded members plus the pool users whose add was the last answer, none of
/// those whose removal was, and one new version per confirmed PATCH.
fn verify_group(db: &Db, seeded: &[Seeded], group: &GroupOutcome) -> anyhow::Result<Vec<String>> {
    use schema::group_members::dsl as m;
    use schema::groups::dsl as g;
    let mut problems = Vec::new();
    let members: i64 = db.read(|c| {
        m::group_members
            .filter(m::group_id.eq(&group.id))
            .count()
            .get_result(c)
            .map_err(DbError::from)
    })?;
    let expected = group.seeded_members + group.added.len();
    if group.unknown > 0 {
        problems.push(format!(
            "{} pool users got a wrong answer to their last group PATCH",
            group.unknown
        ));
    } else if usize::try_from(members).ok() != Some(expected) {
        problems.push(format!(
            "the group has {members} members in the store, expected {expected} ({} seeded + {} added and not \
             removed)",
            group.seeded_members,
            group.added.len()
        ));
    }
    let ids = |list: &[usize]| -> Vec<String> {
        list.iter()
            .filter_map(|&n| seeded.get(n))
            .map(|s| s.id.clone())
            .collect()
    };
    let (added, out) = (ids(&group.added), ids(&group.out));
    let among = |ids: &[String]| -> anyhow::Result<usize> {
        let mut found = 0;
        for chunk in ids.chunks(1000) {
            let n: i64 = db.read(|c| {
                m::group_members
                    .filter(m::group_id.eq(&group.id))
                    .filter(m::user_id.eq_any(chunk))
                    .count()
                    .get_result(c)
                    .map_err(DbError::from)
            })?;
            found += usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(found)
    };
    let (added_in, out_in) = (among(&added)?, among(&out)?);
    if added_in != added.len() || out_in != 0 {
        problems.push(format!(
            "{added_in} of the {} users last added are members, and {out_in} of the {} last removed (or never \
             added) are",
            added.len(),
            out.len()
        ));
    }
    let version: i64 = db.read(|c| {
        g::groups
            .filter(g::id.eq(&group.id))
            .select(g::version)
            .first(c)
            .map_err(DbError::from)
    })?;
    let expected = 1 + group.changes;
    if u64::try_from(version).ok() != Some(expected) {
        problems.push(format!(
            "the group is at version {version} in the store, expected {expected} (1 + one per confirmed PATCH)"
        ));
    }
    Ok(problems)
}

#[expect(clippy::cast_precision_loss, reason = "request counts are far below 2^52")]
fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[expect(clippy::cast_precision_loss, reason = "latencies in µs are far below 2^52")]
fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Report {
    fn all_right(&self) -> bool {
        self.checks.is_empty() && self.phases.iter().all(|m| m.wrong == 0 && m.right > 0)
    }

    fn print(&self) {
        let group = self.group_seed.map_or_else(String::new, |(members, secs)| {
            format!("; the {members}-member group in {secs:.2} s through one lifecycle::groups::create")
        });
        println!(
            "{} at {} users ({}; {}), seeding {:.0} users/s through lifecycle::users::create{group}\n",
            backend_name(self.backend),
            self.users,
            self.db_version,
            self.durability,
            rate(self.users as u64, self.seed_secs)
        );
        println!(
            "| phase | requests | req/s | p50 ms | p99 ms | max ms | wrong | offboard CPU | load gen CPU |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for m in &self.phases {
            let secs = m.elapsed.as_secs_f64();
            let note = if m.ran_out {
                format!(" (ran out of users after {secs:.1} s)")
            } else {
                String::new()
            };
            // Share of one core.
            let share = |d: Duration| format!("{:.0} %", 100.0 * d.as_secs_f64() / secs);
            let (server, load) = m
                .cpu
                .map_or_else(|| ("?".into(), "?".into()), |c| (share(c.server), share(c.load)));
            println!(
                "| {}{note} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {server} | {load} |",
                m.name,
                m.right + m.wrong,
                rate(m.right + m.wrong, secs),
                millis(m.hist.value_at_quantile(0.5)),
                millis(m.hist.value_at_quantile(0.99)),
                millis(m.hist.max()),
                m.wrong
            );
        }
        println!(
            "\nCPU in % of one core: offboard is this process without the load generator's thread (HTTP worker, \
             blocking pool{}); load gen is reqwest and the answer checks.\n",
            match self.backend {
                Backend::Sqlite => ", SQLite",
                Backend::Postgres => "; PostgreSQL's own processes are not counted",
            }
        );
        for m in self.phases.iter().filter(|m| m.wrong > 0) {
            println!(
                "wrong answers in {} ({} of them), the first ones:",
                m.name, m.wrong
            );
            for s in &m.samples {
                println!("- {s}");
            }
        }
        for m in self.phases.iter().filter(|m| m.right == 0) {
            println!("{}: no right answer at all", m.name);
        }
        for p in &self.checks {
            println!("store check failed: {p}");
        }
        if self.all_right() {
            println!("every answer right; the store agrees with them\n");
        }
    }
}
