//! The store itself: both migration sets stay in step, every table round-trips a row on each backend (so
//! `schema.rs` cannot drift from the migrations), SQLite runs in WAL mode, userName uniqueness is per live user.

use diesel::prelude::*;
use offboard::db::models::{NewCredential, NewUser};
use offboard::db::schema::{credentials, user_emails, users};
use offboard::db::{DbConnection, DbError, now, repo};

use crate::harness::{Backend, TestApp, both_backends};

#[test]
fn migration_sets_have_identical_folder_names() {
    let names = |backend: &str| {
        let dir = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (sqlite, postgres) = (names("sqlite"), names("postgres"));
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite, postgres,
        "migrations/sqlite and migrations/postgres must have the same folders"
    );
}

async fn every_table_round_trips(backend: Backend) {
    let app = TestApp::start(backend).await;
    let at = now();
    app.db()
        .write(|c: &mut DbConnection| {
            let user = NewUser {
                id: "00000000-0000-7000-8000-000000000001",
                user_name: "Ünïcode@Example.com",
                user_name_folded: "ünïcode@example.com",
                external_id: Some("ext"),
                display_name: Some("D"),
                display_name_folded: Some("d"),
                active: true,
                resource: "{}",
                token_generation: 7,
                version: 3,
                created: at,
                last_modified: at,
            };
            repo::users::insert(c, &user, &[("a@b.c".into(), Some("work".into()))])?;
            repo::credentials::insert(
                c,
                &NewCredential {
                    name: "rt",
                    secret_hash: "h",
                    scopes: "scim",
                    created: at,
                },
            )?;
            Ok::<_, DbError>(())
        })
        .unwrap();
    let row = app.user_row("00000000-0000-7000-8000-000000000001");
    assert_eq!(row.user_name, "Ünïcode@Example.com");
    assert_eq!(row.token_generation, 7);
    assert_eq!(row.version, 3);
    assert_eq!(row.created, at, "timestamps round-trip exactly");
    assert!(row.deleted_at.is_none());
    let (emails, creds) = app
        .db()
        .read(|c| {
            let e: Vec<(String, String, Option<String>)> = user_emails::table.load(c)?;
            let n: i64 = credentials::table.count().get_result(c)?;
            Ok::<_, DbError>((e, n))
        })
        .unwrap();
    assert_eq!(
        emails,
        vec![(row.id.clone(), "a@b.c".to_owned(), Some("work".to_owned()))]
    );
    assert_eq!(creds, 2, "the harness credential and this one");
    let n: i64 = app
        .db()
        .read(|c| users::table.count().get_result(c).map_err(DbError::from))
        .unwrap();
    assert_eq!(n, 1);
}

async fn user_name_is_unique_among_live_users_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.create_user("Reuse@Example.com").await;
    let dup = app
        .post("/Users", &crate::harness::new_user("reuse@example.COM"))
        .await;
    assert_eq!(dup.status, 409, "{}", dup.text);
    assert_eq!(dup.body["scimType"], "uniqueness");
    assert_eq!(app.delete(&format!("/Users/{id}")).await.status, 204);
    let again = app.create_user("reuse@example.com").await;
    assert_ne!(again, id, "a user provisioned again gets a new id");
    assert!(app.user_row(&id).deleted_at.is_some(), "the tombstone stays");
}

async fn migrations_are_idempotent(backend: Backend) {
    let app = TestApp::start(backend).await;
    assert!(
        app.db().migrate().unwrap().is_empty(),
        "second run applies nothing"
    );
}

both_backends!(
    every_table_round_trips,
    user_name_is_unique_among_live_users_only,
    migrations_are_idempotent
);

#[actix_web::test]
async fn sqlite_runs_in_wal_mode_with_a_busy_timeout() {
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    let app = TestApp::start(Backend::Sqlite).await;
    let mode = app
        .db()
        .read(|c| {
            diesel::sql_query("PRAGMA journal_mode")
                .get_result::<Mode>(c)
                .map_err(DbError::from)
        })
        .unwrap();
    assert_eq!(mode.journal_mode, "wal");
}

/// The database holds every user, token family and the audit log: its file and the `-wal`/`-shm` files SQLite
/// creates beside it are readable by their owner only, whatever the umask.
#[cfg(unix)]
#[actix_web::test]
async fn sqlite_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::start(Backend::Sqlite).await;
    app.create_user("perm@example.com").await;
    let db = app.db().url().target.clone();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{db}{suffix}");
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{path} has mode {:o}", mode & 0o777);
    }
}
