//! The batch writer (docs/decisions/0029-batch-writer.md), in process on a real database: writes queued behind a
//! slow one share its transaction; a member that fails is rolled back alone (its row and its audit entry with it)
//! and gets its own error; the others are answered after the one commit, and the audit chain stays one chain.
//! Over HTTP, the writes of concurrent requests wait together on the write lane and share one commit.

use std::sync::mpsc;
use std::time::Duration;

use offboard::audit::{self, Entry, verify};
use offboard::db::models::NewCredential;
use offboard::db::{Db, DbConnection, DbError, DbOptions, DbUrl, now, repo};

use crate::harness::{Backend, TestApp, TestDb, both_backends, new_user};

/// What holds a write's transaction open: it says so on `held`, then waits for `release`.
struct Hold {
    held: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

/// A [`Hold`], and the ends the test keeps: the one that learns the write holds, the one that releases it.
fn hold() -> (Hold, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (held, held_rx) = mpsc::channel();
    let (release_tx, release) = mpsc::channel();
    (Hold { held, release }, held_rx, release_tx)
}

/// Waits until `n` writes wait for their turn in the batch writer's open transaction.
fn wait_for_waiting(db: &Db, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db.writes_waiting() != Some(n) {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} writes never all waited: {:?} waiting",
            db.writes_waiting()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A write that inserts credential `name` and records its audit entry; fails after both when `fail` is set.
fn insert(db: &Db, name: &str, fail: bool, hold: Option<&Hold>) -> Result<(), DbError> {
    db.write(|c: &mut DbConnection| {
        repo::credentials::insert(
            c,
            &NewCredential {
                name,
                secret_hash: &format!("hash-{name}"),
                scopes: "scim",
                created: now(),
            },
        )?;
        audit::record(Entry::new("test.batch").target("credential", name, None));
        if let Some(hold) = hold {
            // Inside the transaction: let the others queue up behind this write.
            hold.held.send(()).unwrap();
            hold.release.recv().unwrap();
        }
        if fail {
            return Err(DbError::Query(diesel::result::Error::RollbackTransaction));
        }
        Ok(())
    })
}

fn a_failed_member_rolls_back_alone(backend: Backend) {
    let test_db = TestDb::create(backend);
    let db = Db::open(&DbUrl::parse(&test_db.url()).unwrap(), &DbOptions::default()).unwrap();
    db.migrate().unwrap();
    let (batches_before, members_before) = db.batch_stats().expect("batching is on by default");

    let (first_hold, held, release) = hold();
    let first = {
        let db = db.clone();
        std::thread::spawn(move || insert(&db, "first", false, Some(&first_hold)))
    };
    held.recv().unwrap();
    // `first` holds the transaction open: these queue behind it and join its batch.
    let others: Vec<_> = ["ok-1", "bad", "ok-2", "ok-3"]
        .into_iter()
        .map(|name| {
            let db = db.clone();
            std::thread::spawn(move || (name, insert(&db, name, name == "bad", None)))
        })
        .collect();
    wait_for_waiting(&db, 4);
    release.send(()).unwrap();
    assert!(first.join().unwrap().is_ok());
    for t in others {
        let (name, result) = t.join().unwrap();
        assert_eq!(result.is_err(), name == "bad", "{name}: {result:?}");
    }

    let (batches, members) = db.batch_stats().unwrap();
    assert_eq!(members - members_before, 4, "the four good writes committed");
    assert_eq!(batches - batches_before, 1, "in one transaction");

    let names: Vec<String> = db
        .read(|c| repo::credentials::list(c).map_err(DbError::from))
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    for name in ["first", "ok-1", "ok-2", "ok-3"] {
        assert!(names.contains(&name.to_owned()), "{name} missing from {names:?}");
    }
    assert!(
        !names.contains(&"bad".to_owned()),
        "the failed write left its row"
    );

    let entries = db
        .read(|c| repo::audit::after(c, 0, 1000).map_err(DbError::from))
        .unwrap();
    let targets: Vec<&str> = entries
        .iter()
        .filter(|e| e.action == "test.batch")
        .filter_map(|e| e.target_id.as_deref())
        .collect();
    assert_eq!(targets.len(), 4, "{targets:?}");
    assert_eq!(targets[0], "first", "sealed in commit order");
    assert!(!targets.contains(&"bad"), "the failed write left its audit entry");
    let check = offboard::keys::audit_signature_checker(&db).unwrap();
    let v = verify::run(&db, &check).unwrap();
    assert!(v.ok, "{v:?}");
}

fn switched_off_every_write_is_its_own_transaction(backend: Backend) {
    let test_db = TestDb::create(backend);
    let db = Db::open(
        &DbUrl::parse(&test_db.url()).unwrap(),
        &DbOptions {
            batch_writes: 0,
            ..DbOptions::default()
        },
    )
    .unwrap();
    db.migrate().unwrap();
    assert_eq!(db.batch_stats(), None);
    assert!(insert(&db, "a", false, None).is_ok());
    assert!(insert(&db, "b", true, None).is_err());
    let names: Vec<String> = db
        .read(|c| repo::credentials::list(c).map_err(DbError::from))
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["a".to_owned()]);
}

#[test]
fn sqlite_a_failed_member_rolls_back_alone() {
    a_failed_member_rolls_back_alone(Backend::Sqlite);
}

#[test]
fn postgres_a_failed_member_rolls_back_alone() {
    if crate::harness::postgres_available("batch::postgres_a_failed_member_rolls_back_alone") {
        a_failed_member_rolls_back_alone(Backend::Postgres);
    }
}

#[test]
fn sqlite_switched_off_every_write_is_its_own_transaction() {
    switched_off_every_write_is_its_own_transaction(Backend::Sqlite);
}

#[test]
fn postgres_switched_off_every_write_is_its_own_transaction() {
    if crate::harness::postgres_available("batch::postgres_switched_off") {
        switched_off_every_write_is_its_own_transaction(Backend::Postgres);
    }
}

/// Eight SCIM creates sent together while another write holds the batch open: all eight wait in the batch
/// (`offboard_db_writes_waiting` counts them) and commit with it, once.
async fn concurrent_requests_share_one_commit(backend: Backend) {
    const REQUESTS: usize = 8;
    let app = TestApp::start(backend).await;
    let db = app.db().clone();
    let (batches_before, writes_before) = db.batch_stats().expect("the test apps batch writes");

    let (holder_hold, held, release_tx) = hold();
    let holder = {
        let db = db.clone();
        std::thread::spawn(move || insert(&db, "holder", false, Some(&holder_hold)))
    };
    held.recv().unwrap();

    let bodies: Vec<_> = (0..REQUESTS)
        .map(|i| new_user(&format!("together{i}@example.com")))
        .collect();
    let creates = futures::future::join_all(bodies.iter().map(|body| app.post("/Users", body)));
    let release = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while db.writes_waiting() != Some(REQUESTS) {
            assert!(
                std::time::Instant::now() < deadline,
                "the creates never all waited: {:?} waiting",
                db.writes_waiting()
            );
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        release_tx.send(()).unwrap();
    };
    let (answers, ()) = futures::join!(creates, release);
    holder.join().unwrap().unwrap();
    for res in &answers {
        assert_eq!(res.status, 201, "{}", res.text);
    }

    let (batches, writes) = db.batch_stats().unwrap();
    assert_eq!(
        writes - writes_before,
        REQUESTS as u64 + 1,
        "each create is one write use case"
    );
    assert_eq!(
        batches - batches_before,
        1,
        "the held write and the eight creates committed together"
    );
    assert_eq!(db.writes_waiting(), Some(0));
    let listed = app.get("/Users?filter=userName%20sw%20%22together%22").await;
    assert_eq!(listed.body["totalResults"], REQUESTS, "{}", listed.text);
}

both_backends!(concurrent_requests_share_one_commit);
