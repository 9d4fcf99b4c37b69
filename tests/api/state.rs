//! Revocation and credential state kept in memory (`offboard::state`) is never stale: a revocation committed by
//! this process, by the CLI (the real `offboard` binary, another process on the same database) or by another
//! server instance (the real binary, on the same PostgreSQL) is followed by the next introspection, with zero
//! wrong answers while introspection is hammered; a killed PostgreSQL listener makes the cache step aside until
//! it is back.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::{Connection, RunQueryDsl};
use offboard::credentials::{Presented, Scope};
use offboard::tokens::Authority;
use serde_json::{Value, json};

use crate::harness::{
    Backend, ISSUER, TEST_KEK, TestApp, both_backends, pg_admin_url, postgres_available, test_keys_file,
};

/// Waits until the state cache of `app` uses memory (at once on SQLite; once the listener `LISTEN`s on
/// PostgreSQL).
fn wait_live(app: &TestApp) {
    let started = Instant::now();
    while !app.state.tokens.state.is_live() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the state cache never went live"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What `POST /oauth2/introspect` answers: from memory when it can, else through the database.
fn active(tokens: &Authority, caller: &Presented, token: &str) -> bool {
    let i = tokens
        .introspect_from_memory(caller, token)
        .unwrap_or_else(|| tokens.introspect(caller, token).expect("introspection"));
    i.answer["active"] == json!(true)
}

/// Whether introspection of `token` is answered from memory, allowing the listener a moment: on a loaded machine
/// its thread may not have run within the liveness window (memory is then bypassed, as it must be), so this
/// retries for up to 2 s, reading through the database between tries.
fn answered_from_memory(tokens: &Authority, caller: &Presented, token: &str) -> bool {
    let started = Instant::now();
    loop {
        if tokens.introspect_from_memory(caller, token).is_some() {
            return true;
        }
        if started.elapsed() > Duration::from_secs(2) {
            return false;
        }
        active(tokens, caller, token);
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn introspector(app: &TestApp) -> Presented {
    let secret = app.credential("rs", &[Scope::Introspect]);
    Presented::Basic {
        name: "rs".into(),
        secret,
    }
}

/// The real `offboard` binary run as the CLI against `db_url`; panics unless it succeeds.
fn cli(db_url: &str, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_offboard"))
        .args(args)
        .current_dir(dir.path())
        .env("OFFBOARD_DATABASE_URL", db_url)
        .env("OFFBOARD_ISSUER", ISSUER)
        .env("OFFBOARD_KEYS__KEK", TEST_KEK)
        .env("OFFBOARD_KEYS__IMPORT_PEM_FILE", test_keys_file())
        .env("OFFBOARD_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run offboard");
    assert!(
        out.status.success(),
        "offboard {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Introspection of one token from several threads, counting answers before and after its revocation returned.
#[derive(Default)]
struct Tally {
    revoked: AtomicBool,
    active_before: AtomicU64,
    inactive_after: AtomicU64,
    /// Active answers to introspections that started after the revocation had returned.
    wrong: AtomicU64,
    /// When the revocation returned, and the latest start of a wrong answer after it (µs), for the message.
    revoked_at: std::sync::OnceLock<Instant>,
    latest_wrong_us: AtomicU64,
}

impl Tally {
    /// Records one answer; `after` is whether the revocation had returned when the introspection started.
    fn record(&self, after: bool, active: bool, started: Instant) {
        match (after, active) {
            (true, true) => {
                if let Some(at) = self.revoked_at.get() {
                    let late =
                        u64::try_from(started.saturating_duration_since(*at).as_micros()).unwrap_or(u64::MAX);
                    self.latest_wrong_us.fetch_max(late, Ordering::SeqCst);
                }
                self.wrong.fetch_add(1, Ordering::SeqCst)
            }
            (true, false) => self.inactive_after.fetch_add(1, Ordering::SeqCst),
            (false, true) => self.active_before.fetch_add(1, Ordering::SeqCst),
            (false, false) => 0,
        };
    }

    fn assert_clean(&self, what: &str) {
        assert_eq!(
            self.wrong.load(Ordering::SeqCst),
            0,
            "{what}: revoked token answered active, up to {} µs after the revocation returned",
            self.latest_wrong_us.load(Ordering::SeqCst)
        );
        assert!(
            self.active_before.load(Ordering::SeqCst) > 0,
            "{what}: never active before"
        );
        assert!(
            self.inactive_after.load(Ordering::SeqCst) > 0,
            "{what}: never inactive after"
        );
    }
}

/// Waits until `n` inactive answers followed the revocation (hammering goes on meanwhile).
fn wait_after(tally: &Tally, n: u64) {
    let started = Instant::now();
    while tally.inactive_after.load(Ordering::SeqCst) < n && tally.wrong.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "the hammer stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
}

async fn in_process_revocations_show_at_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    wait_live(&app);
    let caller = introspector(&app);
    let tokens = app.state.tokens.clone();
    for i in 0..6 {
        let name = format!("user{i}@example.com");
        let id = app.create_user(&name).await;
        let login = app.login(&name);
        let token = login.access_token;
        assert!(active(&tokens, &caller, &token));
        assert!(
            answered_from_memory(&tokens, &caller, &token),
            "the second introspection is answered from memory"
        );
        match i % 3 {
            0 => assert_eq!(app.deactivate(&id).await.status, 200),
            1 => drop(offboard::lifecycle::users::revoke_tokens(app.db(), &id, "test").unwrap()),
            _ => {
                let refresh = login.refresh_token.unwrap();
                let res = app
                    .form(
                        "/oauth2/revoke",
                        None,
                        &[("token", refresh.as_str()), ("client_id", "offboard-cli")],
                    )
                    .await;
                assert_eq!(res.status, 200, "{}", res.text);
            }
        }
        // No sleep: the writer answered, so its commit has invalidated memory.
        assert!(
            !active(&tokens, &caller, &token),
            "revocation {i} not seen at once"
        );
        let res = app
            .form(
                "/oauth2/introspect",
                Some(("rs", secret_of(&caller))),
                &[("token", &token)],
            )
            .await;
        assert_eq!(res.body, json!({"active": false}));
    }
    // A credential: accepted, remembered, revoked in this process, refused on the next request.
    let ops = app.credential("ops", &[Scope::Scim]);
    let get = |secret: String| {
        actix_web::test::TestRequest::get()
            .uri("/scim/v2/Users")
            .insert_header(("Authorization", format!("Bearer {secret}")))
    };
    assert_eq!(app.send(get(ops.clone())).await.status, 200);
    assert_eq!(app.send(get(ops.clone())).await.status, 200);
    offboard::credentials::revoke(app.db(), "ops").unwrap();
    assert_eq!(app.send(get(ops)).await.status, 401);
    // The introspector's own credential, remembered by the introspections above.
    offboard::credentials::revoke(app.db(), "rs").unwrap();
    let t = app.login("user1@example.com");
    assert!(tokens.introspect_from_memory(&caller, &t.access_token).is_none());
    let res = app
        .form(
            "/oauth2/introspect",
            Some(("rs", secret_of(&caller))),
            &[("token", &t.access_token)],
        )
        .await;
    assert_eq!(res.status, 401, "{}", res.text);
}

fn secret_of(p: &Presented) -> &str {
    match p {
        Presented::Basic { secret, .. } | Presented::Bearer(secret) => secret,
    }
}

/// Hammers introspection of `token` from `threads` threads of this process while `revoke` runs; returns the tally.
fn hammer_while(
    tokens: &Arc<Authority>,
    caller: &Presented,
    token: &str,
    threads: usize,
    revoke: impl FnOnce(),
) -> Tally {
    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let (started, after) = (Instant::now(), tally.revoked.load(Ordering::SeqCst));
                    tally.record(after, active(tokens, caller, token), started);
                }
            });
        }
        // Some answers before the revocation.
        while tally.active_before.load(Ordering::SeqCst) < 200 {
            std::thread::sleep(Duration::from_millis(1));
        }
        revoke();
        tally.revoked_at.get_or_init(Instant::now);
        tally.revoked.store(true, Ordering::SeqCst);
        wait_after(&tally, 2000);
        stop.store(true, Ordering::SeqCst);
    });
    tally
}

async fn the_cli_revokes_for_a_running_server(backend: Backend) {
    let app = TestApp::start(backend).await;
    wait_live(&app);
    let caller = introspector(&app);
    let url = app.state.config.database_url.clone();
    for (i, command) in ["revoke-tokens", "deactivate"].into_iter().enumerate() {
        let name = format!("cli{i}@example.com");
        app.create_user(&name).await;
        let token = app.login(&name).access_token;
        let tally = hammer_while(&app.state.tokens, &caller, &token, 2, || {
            cli(&url, &["users", command, &name, "--reason", "test"]);
        });
        tally.assert_clean(command);
    }
    // A credential revoked by the CLI is refused from the next request on.
    let ops = app.credential("ops", &[Scope::Scim]);
    let get = || {
        actix_web::test::TestRequest::get()
            .uri("/scim/v2/Users")
            .insert_header(("Authorization", format!("Bearer {ops}")))
    };
    assert_eq!(app.send(get()).await.status, 200);
    assert_eq!(app.send(get()).await.status, 200);
    cli(&url, &["credentials", "revoke", "ops"]);
    assert_eq!(app.send(get()).await.status, 401);
}

both_backends!(
    in_process_revocations_show_at_once,
    the_cli_revokes_for_a_running_server
);

/// `offboard serve` as a child process on its own port, on the database of a test app.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(db_url: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir();
        let child = Command::new(env!("CARGO_BIN_EXE_offboard"))
            .arg("serve")
            .current_dir(dir)
            .env("OFFBOARD_DATABASE_URL", db_url)
            .env("OFFBOARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("OFFBOARD_ISSUER", ISSUER)
            .env("OFFBOARD_KEYS__KEK", TEST_KEK)
            .env("OFFBOARD_KEYS__IMPORT_PEM_FILE", test_keys_file())
            .env("OFFBOARD_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start offboard serve");
        let started = Instant::now();
        while reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "offboard serve did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn introspect(&self, http: &reqwest::blocking::Client, caller: &Presented, token: &str) -> bool {
        let Presented::Basic { name, secret } = caller else {
            unreachable!("the tests introspect with Basic")
        };
        let res = http
            .post(format!("http://127.0.0.1:{}/oauth2/introspect", self.port))
            .basic_auth(name, Some(secret))
            .form(&[("token", token)])
            .send()
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().unwrap()["active"] == json!(true)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two instances on one PostgreSQL (this test's app and a real `offboard serve`) and the CLI: introspection is
/// hammered on both while each of them revokes in turn; no introspection that started after a revocation
/// returned answers active.
#[actix_web::test]
async fn two_instances_and_the_cli_on_postgresql() {
    if !postgres_available("state::two_instances_and_the_cli_on_postgresql") {
        return;
    }
    let app = TestApp::start(Backend::Postgres).await;
    wait_live(&app);
    let caller = introspector(&app);
    let url = app.state.config.database_url.clone();
    let mut users = Vec::new();
    for i in 0..4 {
        let name = format!("two{i}@example.com");
        let id = app.create_user(&name).await;
        let token = app.login(&name).access_token;
        users.push((name, id, token));
    }
    let tokens = app.state.tokens.clone();
    let scim = app.token.clone();
    // Off the test's async thread: the blocking HTTP client may not run on it.
    std::thread::scope(|s| {
        s.spawn(|| {
            let server = Server::start(&url);
            let http = reqwest::blocking::Client::new();
            for (i, (name, id, token)) in users.iter().enumerate() {
                // One tally for this instance's answers, one for the other's.
                let tallies = [Tally::default(), Tally::default()];
                let stop = AtomicBool::new(false);
                std::thread::scope(|h| {
                    for t in 0..4 {
                        let (tally, stop, tokens, caller, server, http) =
                            (&tallies[t % 2], &stop, &tokens, &caller, &server, &http);
                        h.spawn(move || {
                            while !stop.load(Ordering::SeqCst) {
                                let (started, after) = (Instant::now(), tally.revoked.load(Ordering::SeqCst));
                                let answer = if t % 2 == 0 {
                                    active(tokens, caller, token)
                                } else {
                                    server.introspect(http, caller, token)
                                };
                                tally.record(after, answer, started);
                            }
                        });
                    }
                    for tally in &tallies {
                        while tally.active_before.load(Ordering::SeqCst) < 100 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    match i {
                        // This instance.
                        0 => drop(offboard::lifecycle::users::revoke_tokens(&tokens.db, id, "test").unwrap()),
                        // The other instance, over SCIM.
                        1 => {
                            let res = http
                                .patch(format!("http://127.0.0.1:{}/scim/v2/Users/{id}", server.port))
                                .bearer_auth(&scim)
                                .header("Content-Type", "application/scim+json")
                                .body(
                                    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                       "Operations": [{"op": "replace", "path": "active", "value": false}]})
                                    .to_string(),
                                )
                                .send()
                                .unwrap();
                            assert_eq!(res.status(), 200);
                        }
                        // The CLI.
                        2 => cli(&url, &["users", "revoke-tokens", name, "--reason", "test"]),
                        _ => cli(&url, &["users", "deactivate", name, "--reason", "test"]),
                    }
                    for tally in &tallies {
                        tally.revoked_at.get_or_init(Instant::now);
                        tally.revoked.store(true, Ordering::SeqCst);
                    }
                    for tally in &tallies {
                        wait_after(tally, 1000);
                    }
                    stop.store(true, Ordering::SeqCst);
                });
                let by = ["this instance", "the other instance", "the CLI", "the CLI"][i];
                tallies[0].assert_clean(&format!("{name} revoked by {by}, introspected here"));
                tallies[1].assert_clean(&format!(
                    "{name} revoked by {by}, introspected by the other instance"
                ));
            }
        });
    });
}

/// Terminating the listener's backend makes this process read the database until the listener is back; answers
/// stay right throughout, also for a revocation the CLI commits meanwhile.
#[actix_web::test]
async fn a_killed_listener_bypasses_memory_until_it_is_back() {
    if !postgres_available("state::a_killed_listener_bypasses_memory_until_it_is_back") {
        return;
    }
    let app = TestApp::start(Backend::Postgres).await;
    wait_live(&app);
    let caller = introspector(&app);
    let url = app.state.config.database_url.clone();
    app.create_user("kill@example.com").await;
    let token = app.login("kill@example.com").access_token;
    let tokens = app.state.tokens.clone();
    assert!(active(&tokens, &caller, &token));
    assert!(answered_from_memory(&tokens, &caller, &token));
    let pid = tokens.state.listener_pid().expect("listener pid");
    let mut admin = diesel::pg::PgConnection::establish(&pg_admin_url()).unwrap();
    let tally = hammer_while(&tokens, &caller, &token, 2, || {
        diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
            .execute(&mut admin)
            .unwrap();
        // Until the listener sees it is gone memory may still answer; from then until it is back, never.
        let started = Instant::now();
        while tokens.state.is_live() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the listener never noticed"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(
            tokens.introspect_from_memory(&caller, &token).is_none(),
            "memory used while not live"
        );
        cli(
            &url,
            &["users", "revoke-tokens", "kill@example.com", "--reason", "test"],
        );
    });
    tally.assert_clean("listener killed");
    wait_live(&app);
    assert_ne!(tokens.state.listener_pid(), Some(pid), "the listener reconnected");
    assert!(!active(&tokens, &caller, &token));
}
