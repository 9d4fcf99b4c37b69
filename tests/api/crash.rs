//! Crash safety of the fan-out (ARCHITECTURE.md invariant 5), with the real `offboard serve` binary killed by
//! SIGKILL: between the commit of a deprovisioning and the delivery of its SETs, and while a push is in flight.
//! After a restart every SET arrives at least once (same `jti`), in order, and none is lost.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use offboard::credentials::{self, Scope};
use offboard::db::{Db, DbOptions, DbUrl};
use offboard::fanout::streams::{self, Delivery, NewStream};
use serde_json::{Value, json};

use crate::harness::{Backend, TEST_KEK, TestDb, test_keys_file};
use crate::peers::{Receiver, receiver};

/// `offboard serve` as a child process on its own port.
struct Server {
    child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(db_url: &str, dir: &std::path::Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_offboard"))
        .arg("serve")
        .current_dir(dir)
        .env("OFFBOARD_DATABASE_URL", db_url)
        .env("OFFBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("OFFBOARD_ISSUER", format!("http://127.0.0.1:{port}"))
        .env("OFFBOARD_KEYS__KEK", TEST_KEK)
        .env("OFFBOARD_KEYS__IMPORT_PEM_FILE", test_keys_file())
        .env("OFFBOARD_FANOUT__LEASE_SECS", "2")
        .env("OFFBOARD_FANOUT__PUSH_TIMEOUT_SECS", "1")
        .env("OFFBOARD_FANOUT__BACKOFF_BASE_MS", "50")
        .env("OFFBOARD_FANOUT__BACKOFF_CAP_SECS", "1")
        // Batched on both backends (PostgreSQL's default is off), so a kill can land inside a batch.
        .env("OFFBOARD_DATABASE__BATCH_WRITES", "true")
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
    Server { child }
}

impl Server {
    /// SIGKILL: no shutdown code runs.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deactivate(port: u16, scim: &str, id: &str) {
    let res = reqwest::blocking::Client::new()
        .patch(format!("http://127.0.0.1:{port}/scim/v2/Users/{id}"))
        .bearer_auth(scim)
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

fn create_user(port: u16, scim: &str, name: &str) -> String {
    let res = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/scim/v2/Users"))
        .bearer_auth(scim)
        .header("Content-Type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name}).to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().unwrap()["id"].as_str().unwrap().to_owned()
}

/// Waits until the receiver has every SET of the stream and the server has settled them all.
fn wait_for_all(rx: &Receiver, db: &Db, stream: &str, n: usize, within: Duration) {
    let started = Instant::now();
    while started.elapsed() < within {
        let rows = outbox(db, stream);
        let got = rx.jtis();
        if rows.len() == n
            && rows
                .iter()
                .all(|r| r.status == "delivered" && got.contains(&r.jti))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn crash_between_commit_and_delivery_and_during_delivery(backend: Backend) {
    offboard::outbound::install_crypto_provider();
    let test_db = TestDb::create(backend);
    let dir = tempfile::tempdir().unwrap();
    let url = test_db.url();
    let db = Db::open(&DbUrl::parse(&url).unwrap(), &DbOptions::default()).unwrap();
    db.migrate().unwrap();
    let scim = credentials::create(&db, "idp", &[Scope::Scim])
        .unwrap()
        .expose()
        .to_owned();
    let rx = receiver();

    // 1. The receiver is down: the deprovisioning commits, its SETs wait; then the server dies (SIGKILL).
    rx.status.store(503, Ordering::SeqCst);
    let port = free_port();
    let server = serve(&url, dir.path(), port);
    let config = offboard::config::Config {
        database_url: url.clone(),
        issuer: format!("http://127.0.0.1:{port}"),
        keys: offboard::config::KeyConfig {
            kek: Some(offboard::config::SecretString::new(TEST_KEK)),
            import_pem_file: Some(test_keys_file().to_owned()),
            ..offboard::config::KeyConfig::default()
        },
        ..offboard::config::Config::default()
    };
    let state = offboard::AppState::open(db.clone(), config).unwrap();
    let stream = streams::create(
        &db,
        &state.tokens.keys,
        &NewStream {
            audience: "svc".into(),
            delivery: Delivery::Push {
                endpoint_url: rx.url.clone(),
                authorization_header: None,
            },
            events_requested: Vec::new(),
            description: None,
            created_by: "test".into(),
        },
    )
    .unwrap()
    .id;
    let first = create_user(port, &scim, "first@example.com");
    deactivate(port, &scim, &first);
    server.kill();
    let queued: Vec<String> = outbox(&db, &stream).into_iter().map(|r| r.jti).collect();
    assert_eq!(queued.len(), 2, "committed with the change, before any delivery");

    // 2. Back up with a slow receiver; kill the server while a push is in flight.
    rx.status.store(202, Ordering::SeqCst);
    rx.delay_ms.store(1500, Ordering::SeqCst);
    rx.seen_request.store(false, Ordering::SeqCst);
    let server = serve(&url, dir.path(), port);
    let started = Instant::now();
    while !rx.seen_request.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(rx.seen_request.load(Ordering::SeqCst), "a push was in flight");
    server.kill();

    // 3. A third deprovisioning while the receiver is fast again, then restart: everything arrives.
    rx.delay_ms.store(0, Ordering::SeqCst);
    let server = serve(&url, dir.path(), port);
    let second = create_user(port, &scim, "second@example.com");
    deactivate(port, &scim, &second);
    wait_for_all(&rx, &db, &stream, 4, Duration::from_secs(30));
    drop(server);

    let all: Vec<String> = outbox(&db, &stream).into_iter().map(|r| r.jti).collect();
    assert_eq!(all.len(), 4);
    let got = rx.jtis();
    for jti in &all {
        assert!(got.contains(jti), "SET {jti} was lost; got {got:?}");
    }
    // At least once, in order: dropping repeats, the receiver saw the stream's SETs in outbox order.
    let mut firsts: Vec<&String> = Vec::new();
    for j in &got {
        if !firsts.contains(&j) {
            firsts.push(j);
        }
    }
    assert_eq!(firsts, all.iter().collect::<Vec<_>>(), "in order");
    assert!(outbox(&db, &stream).iter().all(|r| r.status == "delivered"));
}

fn outbox(db: &Db, stream: &str) -> Vec<offboard::db::models::OutboxRow> {
    offboard::fanout::pending::expand(db).unwrap();
    db.read(|c| offboard::db::repo::fanout::outbox_of(c, stream).map_err(offboard::db::DbError::from))
        .unwrap()
}

#[test]
fn sqlite_survives_sigkill() {
    crash_between_commit_and_delivery_and_during_delivery(Backend::Sqlite);
}

#[test]
fn postgres_survives_sigkill() {
    if crate::harness::postgres_available("crash::postgres_survives_sigkill") {
        crash_between_commit_and_delivery_and_during_delivery(Backend::Postgres);
    }
}

/// PATCH active=false; `Some(true)` when acknowledged (200), `Some(false)` for any other answer, `None` when the
/// server did not answer (killed).
fn try_deactivate(client: &reqwest::blocking::Client, port: u16, scim: &str, id: &str) -> Option<bool> {
    let res = client
        .patch(format!("http://127.0.0.1:{port}/scim/v2/Users/{id}"))
        .bearer_auth(scim)
        .header("Content-Type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "active", "value": false}]})
            .to_string(),
        )
        .send()
        .ok()?;
    Some(res.status() == 200)
}

/// Client threads of the mid-batch crash test, and users each deprovisions.
const THREADS: usize = 12;
const PER_THREAD: usize = 40;

/// SIGKILL while batches of concurrent deprovisionings are being committed (docs/decisions/0029-batch-writer.md):
/// every acknowledged write is there with its audit entry and its SETs; a write that was not acknowledged is
/// there entirely or not at all; the audit chain verifies.
fn sigkill_mid_batch_loses_no_acknowledged_write(backend: Backend) {
    offboard::outbound::install_crypto_provider();
    let test_db = TestDb::create(backend);
    let dir = tempfile::tempdir().unwrap();
    let url = test_db.url();
    let db = Db::open(&DbUrl::parse(&url).unwrap(), &DbOptions::default()).unwrap();
    db.migrate().unwrap();
    let scim = credentials::create(&db, "idp", &[Scope::Scim])
        .unwrap()
        .expose()
        .to_owned();
    let rx = receiver();
    rx.status.store(503, Ordering::SeqCst);
    let port = free_port();
    let server = serve(&url, dir.path(), port);
    let config = offboard::config::Config {
        database_url: url.clone(),
        issuer: format!("http://127.0.0.1:{port}"),
        keys: offboard::config::KeyConfig {
            kek: Some(offboard::config::SecretString::new(TEST_KEK)),
            import_pem_file: Some(test_keys_file().to_owned()),
            ..offboard::config::KeyConfig::default()
        },
        ..offboard::config::Config::default()
    };
    let state = offboard::AppState::open(db.clone(), config).unwrap();
    let stream = streams::create(
        &db,
        &state.tokens.keys,
        &NewStream {
            audience: "svc".into(),
            delivery: Delivery::Push {
                endpoint_url: rx.url.clone(),
                authorization_header: None,
            },
            events_requested: Vec::new(),
            description: None,
            created_by: "test".into(),
        },
    )
    .unwrap()
    .id;

    // Users to deprovision, created over HTTP by a few threads at once.
    let ids: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let scim = &scim;
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| create_user(port, scim, &format!("u{t}-{i}@example.com")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let acknowledged = deprovision_until_killed(server, port, &scim, &ids);
    let all: Vec<&String> = ids.iter().flatten().collect();
    assert!(
        !acknowledged.is_empty(),
        "some writes were acknowledged before the kill"
    );
    assert!(
        acknowledged.len() < all.len(),
        "the kill came while writes were in flight"
    );

    drop(state);
    drop(db);
    check_after_crash(&url, &stream, &all, &acknowledged);
}

/// Every thread deprovisions its users one after another; the server is killed once a few dozen were answered.
/// Returns the acknowledged ones.
fn deprovision_until_killed(server: Server, port: u16, scim: &str, ids: &[Vec<String>]) -> Vec<String> {
    let acks = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|mine| {
                let acks = &acks;
                s.spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    let mut acked = Vec::new();
                    for id in mine {
                        match try_deactivate(&client, port, scim, id) {
                            Some(true) => {
                                acks.fetch_add(1, Ordering::SeqCst);
                                acked.push(id.clone());
                            }
                            Some(false) => panic!("a deprovisioning was refused"),
                            None => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        // Kill once a few dozen writes were answered, while the others are queued or in a batch.
        let started = Instant::now();
        while acks.load(Ordering::SeqCst) < 60 && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        server.kill();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// What the database holds after the crash (reopened: a SQLite WAL is recovered): every acknowledged
/// deprovisioning, each change whole or absent, an intact chain.
fn check_after_crash(url: &str, stream: &str, all: &[&String], acknowledged: &[String]) {
    let db = Db::open(&DbUrl::parse(url).unwrap(), &DbOptions::default()).unwrap();
    let rows = outbox(&db, stream);
    let audit = db
        .read(|c| offboard::db::repo::audit::after(c, 0, 100_000).map_err(offboard::db::DbError::from))
        .unwrap();
    let mut inactive = 0;
    for id in all {
        let user = db
            .read(|c| offboard::db::repo::users::find_live(c, id).map_err(offboard::db::DbError::from))
            .unwrap()
            .expect("the user exists");
        let patched = audit
            .iter()
            .filter(|e| e.action == "scim.user.patch" && e.target_id.as_deref() == Some(id.as_str()))
            .count();
        let sets = rows
            .iter()
            .filter(|r| r.user_id.as_deref() == Some(id.as_str()))
            .count();
        if acknowledged.contains(*id) {
            assert!(!user.active, "acknowledged deprovisioning of {id} was lost");
        }
        if user.active {
            assert_eq!(
                (patched, sets),
                (0, 0),
                "{id}: half a write (audit, SETs) without its change"
            );
        } else {
            inactive += 1;
            assert_eq!(patched, 1, "{id}: the change without its audit entry");
            assert!(sets > 0, "{id}: the change without its SETs");
        }
    }
    assert!(inactive >= acknowledged.len());
    let check = offboard::keys::audit_signature_checker(&db).unwrap();
    let v = offboard::audit::verify::run(&db, &check).unwrap();
    assert!(v.ok, "the audit chain after the crash: {v:?}");
}

#[test]
fn sqlite_sigkill_mid_batch_loses_no_acknowledged_write() {
    sigkill_mid_batch_loses_no_acknowledged_write(Backend::Sqlite);
}

#[test]
fn postgres_sigkill_mid_batch_loses_no_acknowledged_write() {
    if crate::harness::postgres_available("crash::postgres_sigkill_mid_batch") {
        sigkill_mid_batch_loses_no_acknowledged_write(Backend::Postgres);
    }
}
