//! The batch writer (docs/decisions/0029-batch-writer.md), in process on a real database: writes queued behind a
//! slow one share its transaction; a member that fails is rolled back alone (its row and its audit entry with it)
//! and gets its own error; the others are answered after the one commit, and the audit chain stays one chain.

use std::sync::mpsc;
use std::time::Duration;

use offboard::audit::{self, Entry, verify};
use offboard::db::models::NewCredential;
use offboard::db::{Db, DbConnection, DbError, DbOptions, DbUrl, now, repo};

use crate::harness::{Backend, TestDb};

/// A write that inserts credential `name` and records its audit entry; fails after both when `fail` is set.
fn insert(db: &Db, name: &str, fail: bool, hold: Option<&mpsc::Sender<()>>) -> Result<(), DbError> {
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
        if let Some(tx) = hold {
            // Inside the transaction: let the others queue up behind this write.
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(400));
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

    let (tx, rx) = mpsc::channel();
    let first = {
        let db = db.clone();
        std::thread::spawn(move || insert(&db, "first", false, Some(&tx)))
    };
    rx.recv().unwrap();
    // `first` holds the transaction open: these queue behind it and join its batch.
    let others: Vec<_> = ["ok-1", "bad", "ok-2", "ok-3"]
        .into_iter()
        .map(|name| {
            let db = db.clone();
            std::thread::spawn(move || (name, insert(&db, name, name == "bad", None)))
        })
        .collect();
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
