//! The token benchmark: the verify-only ceiling (signature verification alone, one core, RS256 / ES256 /
//! `EdDSA`), token minting (the `offboard token mint` path), refresh rotation over HTTP, and introspection over
//! HTTP under concurrency (active tokens, then the same tokens after their users were deactivated), on SQLite
//! and PostgreSQL.
//!
//! ```text
//! cargo bench --bench tokens -- [--backend sqlite|postgres|both] [--users 200] [--seconds 8] [--connections 32]
//! ```
//!
//! Each backend gets a fresh database (SQLite in a temp dir; PostgreSQL a database created on `TEST_DATABASE_URL`
//! and dropped at the end) with `--users` users created through `offboard::lifecycle::users::create`. Minting
//! calls `Authority::login`, the function behind `offboard token mint` and token exchange, on one thread. The real
//! server then runs in-process on a loopback listener, one actix worker, built through `offboard::configure`
//! as `offboard serve` builds it; a current-thread tokio runtime in the main thread keeps `--connections`
//! requests in flight over reqwest. Every answer is checked: introspection must say `active: true` for the
//! live tokens and `{"active": false}` after the deactivation; each refresh must rotate. A wrong answer fails the
//! run. The load generator shares the machine with the server: compare runs made on one machine.

use std::cell::RefCell;
use std::net::TcpListener;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use clap::Parser;
use hdrhistogram::Histogram;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use offboard::AppState;
use offboard::config::{Config, SecretString};
use offboard::credentials::{self, Scope};
use offboard::db::{Db, DbOptions, DbUrl};
use offboard::lifecycle::users;
use offboard::tokens::{CLI_CLIENT, TokenRequest, UserKey};
use serde_json::{Value, json};

#[path = "common/mod.rs"]
mod common;

use common::{BenchDb, Which, backend_name, machine};

#[derive(Debug, Parser)]
#[command(about = "Token benchmark for offboard (see the module doc of benches/tokens.rs)")]
struct Args {
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    /// Users created, each with its own tokens.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Length of each phase.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Requests kept in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Read introspection and credential state from the database on every request (the state cache off), for
    /// an A/B comparison with the default (state in memory, `offboard::state`).
    #[arg(long)]
    no_state_cache: bool,
    /// Added by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
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

fn run(args: &Args) -> anyhow::Result<bool> {
    if args.users == 0 || args.connections == 0 || args.seconds == 0 {
        bail!("--users, --connections and --seconds must be at least 1");
    }
    offboard::outbound::install_crypto_provider();
    println!("# offboard token benchmark\n");
    println!(
        "`cargo bench --bench tokens -- --backend {} --users {} --seconds {} --connections {}{}`\n",
        args.backend.flag(),
        args.users,
        args.seconds,
        args.connections,
        if args.no_state_cache {
            " --no-state-cache"
        } else {
            ""
        }
    );
    println!("machine: {}\n", machine());
    verify_ceiling(Duration::from_secs(args.seconds.div_ceil(2).max(1)))?;
    let backends = args.backend.backends();
    let mut all_right = true;
    for &backend in backends {
        let Some(db) = BenchDb::create(backend)? else {
            continue;
        };
        all_right &= run_backend(&db, args)?;
    }
    Ok(all_right)
}

/// Signature verification alone, on this thread: what one core can verify per second, whatever the server does.
fn verify_ceiling(length: Duration) -> anyhow::Result<()> {
    println!("## Verify-only ceiling (one core, jsonwebtoken 12 + aws-lc-rs, a 700-byte access token)\n");
    println!("| alg | verifications/s | µs each | signatures/s (jsonwebtoken `encode`) |");
    println!("| --- | ---: | ---: | ---: |");
    let claims = json!({
        "iss": "http://127.0.0.1:8080", "sub": "0192e4a1-0000-7000-8000-000000000000", "aud": "http://127.0.0.1:8080",
        "exp": 4_102_444_800_i64, "iat": 1_700_000_000, "nbf": 1_700_000_000, "jti": "0123456789abcdef0123456789abcdef",
        "client_id": "offboard-cli", "preferred_username": "jane.doe@example.com", "groups": ["eng", "prod-deployers"],
        "sid": "fedcba9876543210fedcba9876543210", "tgen": 3
    });
    let rng = SystemRandom::new();
    let rsa = offboard::keys::generate_rsa_pem(1)?;
    let ec =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|e| anyhow!("{e}"))?;
    let ed = Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(|e| anyhow!("{e}"))?;
    let keys = [
        (Algorithm::RS256, EncodingKey::from_rsa_pem(rsa.as_bytes())?),
        (Algorithm::ES256, EncodingKey::from_ec_der(ec.as_ref())),
        (Algorithm::EdDSA, EncodingKey::from_ed_der(ed.as_ref())),
    ];
    for (alg, enc) in keys {
        let jwk = Jwk::from_encoding_key(&enc, alg)?;
        let dec = DecodingKey::from_jwk(&jwk)?;
        let mut header = Header::new(alg);
        header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(&header, &claims, &enc)?;
        let mut v = Validation::new(alg);
        v.set_audience(&["http://127.0.0.1:8080"]);
        v.set_issuer(&["http://127.0.0.1:8080"]);
        v.leeway = 5;
        let started = Instant::now();
        let mut n: u64 = 0;
        while started.elapsed() < length {
            for _ in 0..64 {
                jsonwebtoken::decode::<Value>(&token, &dec, &v)?;
            }
            n += 64;
        }
        let secs = started.elapsed().as_secs_f64();
        let sign_started = Instant::now();
        let mut signed: u64 = 0;
        while sign_started.elapsed() < length / 2 {
            for _ in 0..16 {
                jsonwebtoken::encode(&header, &claims, &enc)?;
            }
            signed += 16;
        }
        println!(
            "| {alg:?} | {:.0} | {:.1} | {:.0} |",
            rate(n, secs),
            secs * 1e6 / to_f64(n),
            rate(signed, sign_started.elapsed().as_secs_f64())
        );
    }
    // The same RS256 signature with the private key parsed once, not on every call as jsonwebtoken does.
    let pem = pem::parse(rsa.as_bytes())?;
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(pem.contents()).map_err(|e| anyhow!("{e}"))?;
    let mut sig = vec![0u8; pair.public_modulus_len()];
    let started = Instant::now();
    let mut signed: u64 = 0;
    while started.elapsed() < length / 2 {
        pair.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &rng,
            b"header.payload-of-about-700-bytes",
            &mut sig,
        )
        .map_err(|e| anyhow!("{e}"))?;
        signed += 1;
    }
    println!(
        "\nRS256 signatures/s with the private key parsed once (aws-lc-rs directly): {:.0}",
        rate(signed, started.elapsed().as_secs_f64())
    );
    println!();
    Ok(())
}

fn to_f64(n: u64) -> f64 {
    // Counts stay far below 2^52.
    #[expect(clippy::cast_precision_loss, reason = "benchmark counts are far below 2^52")]
    let f = n as f64;
    f
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { to_f64(n) / secs } else { 0.0 }
}

fn ms(micros: u64) -> f64 {
    to_f64(micros) / 1000.0
}

/// One phase's figures.
struct Measured {
    name: &'static str,
    hist: Histogram<u64>,
    right: u64,
    wrong: u64,
    sample: Option<String>,
    elapsed: Duration,
}

impl Measured {
    fn new(name: &'static str) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            hist: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            right: 0,
            wrong: 0,
            sample: None,
            elapsed: Duration::ZERO,
        })
    }

    fn record(&mut self, latency: Duration, verdict: Result<(), String>) {
        self.hist
            .saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1));
        match verdict {
            Ok(()) => self.right += 1,
            Err(why) => {
                self.wrong += 1;
                self.sample.get_or_insert(why);
            }
        }
    }

    fn row(&self) -> String {
        format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.name,
            rate(self.right + self.wrong, self.elapsed.as_secs_f64()),
            ms(self.hist.value_at_quantile(0.5)),
            ms(self.hist.value_at_quantile(0.99)),
            ms(self.hist.max()),
            self.wrong
        )
    }
}

fn run_backend(bench_db: &BenchDb, args: &Args) -> anyhow::Result<bool> {
    let url = DbUrl::parse(&bench_db.url()).map_err(|e| anyhow!("database url: {e}"))?;
    let backend = url.backend;
    println!("## {}\n", backend_name(backend));
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut config = Config {
        database_url: bench_db.url(),
        issuer: format!("http://{addr}"),
        workers: 1,
        ..Config::default()
    };
    config.keys.kek = Some(SecretString::new(common::BENCH_KEK));
    let db = Db::open(
        &url,
        &DbOptions {
            pool_size: config.database.pool_size,
            ..DbOptions::default()
        },
    )?;
    db.migrate()?;
    let blocking_threads = config.blocking_threads_per_worker(backend);
    let mut state = AppState::open(db.clone(), config)?;
    // Kept alive in the A/B's "off" runs too: its listener is what lets a writer of this process answer without
    // the 250 ms wait of a process that has none (`offboard::state::CLI_GRACE`).
    let _watching = state.tokens.clone();
    if args.no_state_cache {
        let off =
            offboard::tokens::Authority::new(db.clone(), state.config.clone(), state.tokens.keys.clone())?
                .with_state(std::sync::Arc::new(offboard::state::StateCache::off()));
        state.tokens = std::sync::Arc::new(off);
    }
    let introspect_secret = credentials::create(&db, "bench-rs", &[Scope::Introspect])?
        .expose()
        .to_owned();

    let names: Vec<String> = (0..args.users)
        .map(|i| format!("bench.user{i:05}@example.com"))
        .collect();
    let mut ids = Vec::with_capacity(names.len());
    for n in &names {
        let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": n,
                          "emails": [{"value": n, "primary": true}], "active": true});
        ids.push(
            users::create(&db, &user)
                .map_err(|e| anyhow!("create {n}: {e}"))?
                .user
                .id,
        );
    }

    let (mint, logins) = mint_phase(&state, &names, Duration::from_secs(args.seconds))?;
    let access_tokens: Vec<String> = logins
        .iter()
        .filter_map(|l| l.first().map(|(a, _)| a.clone()))
        .collect();
    let refresh_tokens: Vec<String> = logins
        .iter()
        .flat_map(|l| l.iter().map(|(_, r)| r.clone()))
        .collect();

    if backend == offboard::db::Backend::Postgres && !args.no_state_cache {
        notify_window(&state.tokens.state, &bench_db.url())?;
    }
    let server = common::serve(state.clone(), listener, Some(blocking_threads))?;
    let handle = server.handle();
    let root = format!("http://{addr}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let load = Load {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(args.connections)
            .build()?,
        root,
        basic: format!("Basic {}", base64_basic("bench-rs", &introspect_secret)),
        connections: args.connections,
        length: Duration::from_secs(args.seconds),
    };
    let phases = runtime.block_on(async {
        let out = http_phases(&load, &access_tokens, refresh_tokens, &db, &ids).await;
        handle.stop(true).await;
        out
    });
    server.join()?;
    let phases = phases?;
    Ok(report(args, access_tokens.len(), &mint, &phases))
}

/// PostgreSQL: the time from a `COMMIT` that sent `NOTIFY offboard_state` returning on another connection (as in
/// another instance, or the CLI) to this process's listener having taken it and invalidated its memory.
fn notify_window(state: &offboard::state::StateCache, url: &str) -> anyhow::Result<()> {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    const SAMPLES: usize = 1000;
    let mut conn = diesel::pg::PgConnection::establish(url)?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..SAMPLES {
        let started = Instant::now();
        while !state.is_live() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the state listener is not live");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = state.notifications();
        conn.batch_execute(&format!("BEGIN; NOTIFY {}; COMMIT", offboard::state::CHANNEL))?;
        let committed = Instant::now();
        while state.notifications() == before {
            if committed.elapsed() > Duration::from_secs(10) {
                bail!("no notification in 10 s");
            }
            std::thread::yield_now();
        }
        hist.saturating_record(
            u64::try_from(committed.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "Cross-instance window ({SAMPLES} commits on another connection, `COMMIT` returned → this process's memory \
         invalidated): p50 {} µs, p99 {} µs, max {} µs\n",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    Ok(())
}

/// Prints the table; false when any answer was wrong.
fn report(args: &Args, tokens: usize, mint: &Measured, phases: &[Measured]) -> bool {
    println!(
        "{} users, {} tokens introspected round-robin, {} connections, {} s a phase, server on 1 actix worker\n",
        args.users, tokens, args.connections, args.seconds
    );
    println!("| phase | req/s | p50 ms | p99 ms | max ms | wrong |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!("{}", mint.row());
    for p in phases {
        println!("{}", p.row());
    }
    println!();
    let mut right = mint.wrong == 0;
    for p in std::iter::once(mint).chain(phases) {
        if let Some(s) = &p.sample {
            println!("wrong answer in {}: {s}", p.name);
            right = false;
        }
    }
    right
}

/// Logins for the users in turn, on this thread, for `length`: the `offboard token mint` path. Returns the
/// figures and each user's (access, refresh) tokens.
#[expect(clippy::type_complexity, reason = "a list of token pairs per user, used once")]
fn mint_phase(
    state: &AppState,
    names: &[String],
    length: Duration,
) -> anyhow::Result<(Measured, Vec<Vec<(String, String)>>)> {
    let mut mint = Measured::new("mint (Authority::login, 1 thread)")?;
    let started = Instant::now();
    let deadline = started + length;
    let mut logins: Vec<Vec<(String, String)>> = vec![Vec::new(); names.len()];
    'outer: while Instant::now() < deadline {
        for (name, tokens) in names.iter().zip(logins.iter_mut()) {
            if Instant::now() >= deadline {
                break 'outer;
            }
            let at = Instant::now();
            let res = state.tokens.login(
                &UserKey::UserName(name.clone()),
                CLI_CLIENT,
                &TokenRequest::default(),
            );
            let verdict = match res {
                Ok(t) => {
                    if let Some(rt) = t.refresh_token {
                        tokens.push((t.access_token, rt));
                    }
                    Ok(())
                }
                Err(e) => Err(format!("login: {e}")),
            };
            mint.record(at.elapsed(), verdict);
        }
    }
    mint.elapsed = started.elapsed();
    Ok((mint, logins))
}

fn base64_basic(name: &str, secret: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{name}:{secret}"))
}

struct Load {
    client: reqwest::Client,
    root: String,
    basic: String,
    connections: usize,
    length: Duration,
}

type Verdict = Result<(), String>;

/// Keeps `load.connections` requests in flight for the phase's length; `request(worker, n)` builds the n-th
/// request of a worker and `check` judges its answer.
async fn drive<F, C>(name: &'static str, load: &Load, request: F, check: C) -> anyhow::Result<Measured>
where
    F: Fn(usize, usize) -> Option<reqwest::RequestBuilder>,
    C: Fn(usize, u16, &Value) -> Verdict,
{
    let measured = Rc::new(RefCell::new(Measured::new(name)?));
    let started = Instant::now();
    let deadline = started + load.length;
    let (request, check) = (&request, &check);
    let workers = (0..load.connections).map(|w| {
        let measured = measured.clone();
        async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let Some(req) = request(w, n) else { break };
                n += 1;
                let sent = Instant::now();
                let verdict = match req.send().await {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        match res.bytes().await {
                            Ok(b) => {
                                let body = serde_json::from_slice(&b).unwrap_or(Value::Null);
                                check(w, status, &body).map_err(|why| format!("{why}: HTTP {status} {body}"))
                            }
                            Err(e) => Err(format!("body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("no answer: {e}")),
                };
                measured.borrow_mut().record(sent.elapsed(), verdict);
            }
        }
    });
    futures::future::join_all(workers).await;
    let mut m = Rc::try_unwrap(measured)
        .map_err(|_| anyhow!("a worker outlived its phase"))?
        .into_inner();
    m.elapsed = started.elapsed();
    Ok(m)
}

async fn http_phases(
    load: &Load,
    access: &[String],
    refresh: Vec<String>,
    db: &Db,
    ids: &[String],
) -> anyhow::Result<Vec<Measured>> {
    let mut out = Vec::new();
    let healthz = format!("{}/healthz", load.root);
    out.push(
        drive(
            "plain (GET /healthz)",
            load,
            |_, _| Some(load.client.get(&healthz)),
            |_, s, _| {
                if s == 200 { Ok(()) } else { Err("not 200".into()) }
            },
        )
        .await?,
    );
    let introspect_url = format!("{}/oauth2/introspect", load.root);
    let introspect = |w: usize, n: usize| {
        let token = access.get((w * 7919 + n) % access.len().max(1))?;
        Some(
            load.client
                .post(&introspect_url)
                .header("Authorization", &load.basic)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(format!("token={token}")),
        )
    };
    out.push(
        drive("introspect (active)", load, introspect, |_, s, b| {
            if s == 200 && b["active"] == true {
                Ok(())
            } else {
                Err("not active".into())
            }
        })
        .await?,
    );

    // Refresh rotation: each worker owns its own chains of refresh tokens and follows each one.
    let token_url = format!("{}/oauth2/token", load.root);
    let chains: Vec<RefCell<Vec<String>>> = (0..load.connections)
        .map(|w| {
            RefCell::new(
                refresh
                    .iter()
                    .skip(w)
                    .step_by(load.connections)
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    let refresh_req = |w: usize, n: usize| {
        let chain = chains.get(w)?.borrow();
        if chain.is_empty() {
            return None;
        }
        let token = chain.get(n % chain.len())?;
        Some(
            load.client
                .post(&token_url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(format!(
                    "grant_type=refresh_token&client_id=offboard-cli&refresh_token={token}"
                )),
        )
    };
    let refresh_check = |w: usize, s: u16, b: &Value| {
        let next = b["refresh_token"]
            .as_str()
            .ok_or_else(|| "no refresh_token".to_owned())?;
        if s != 200 {
            return Err("not 200".into());
        }
        // Replace the spent token: the next request of this worker that lands on that slot uses the new one.
        let mut chain = chains.get(w).ok_or_else(|| "no chain".to_owned())?.borrow_mut();
        chain.remove(0);
        chain.push(next.to_owned());
        Ok(())
    };
    // Each worker sends its chain's first token and appends the successor, so slot 0 is always unspent.
    out.push(
        drive(
            "refresh (rotation)",
            load,
            |w, _| refresh_req(w, 0),
            refresh_check,
        )
        .await?,
    );

    for id in ids {
        users::deactivate(db, id, "benchmark").map_err(|e| anyhow!("deactivate: {e}"))?;
    }
    out.push(
        drive("introspect (revoked)", load, introspect, |_, s, b| {
            if s == 200 && *b == json!({"active": false}) {
                Ok(())
            } else {
                Err("not inactive".into())
            }
        })
        .await?,
    );
    Ok(out)
}
