//! The `offboard` command line as a newcomer finds it: the real binary on a real database. Unknown ids fail with a
//! message, every list and show has `--json` with stable field names, clap refuses a wrong stream status with the
//! valid ones, `keys list` only reads, and `migrate` says what it applied.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::{Backend, ISSUER, TEST_KEK, TestApp, both_backends, test_keys_file};

struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `offboard ARGS` in `dir` on `db_url`; `kek` adds the test key-encryption key and signing keys.
fn offboard(dir: &Path, db_url: &str, issuer: &str, kek: bool, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offboard"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("OFFBOARD_CONFIG")
        .env("OFFBOARD_DATABASE_URL", db_url)
        .env("OFFBOARD_ISSUER", issuer)
        .env("OFFBOARD_LOG_LEVEL", "warn")
        .stdin(Stdio::null());
    if kek {
        cmd.env("OFFBOARD_KEYS__KEK", TEST_KEK)
            .env("OFFBOARD_KEYS__IMPORT_PEM_FILE", test_keys_file());
    }
    let out = cmd.output().expect("run offboard");
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command against the app's database and returns its stdout, failing the test if it fails.
fn ok(app: &TestApp, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = offboard(dir.path(), &app.state.config.database_url, ISSUER, true, args);
    assert!(out.ok, "offboard {args:?} failed: {}{}", out.stdout, out.stderr);
    out.stdout
}

fn json_of(app: &TestApp, args: &[&str]) -> Value {
    let stdout = ok(app, args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("offboard {args:?}: not JSON ({e}): {stdout}"))
}

#[test]
fn streams_show_of_an_unknown_id_fails_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("offboard.db");
    let db = db.to_str().expect("utf-8 path");
    for args in [
        &["streams", "show", "nope"][..],
        &["streams", "show", "nope", "--json"],
    ] {
        let out = offboard(dir.path(), db, ISSUER, true, args);
        assert!(!out.ok, "{args:?} succeeded: {}", out.stdout);
        assert!(
            out.stderr.contains("no stream with id `nope`"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?} printed {}", out.stdout);
    }
}

#[test]
fn a_wrong_stream_status_is_refused_by_the_parser_with_the_valid_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("offboard.db");
    let db = db.to_str().expect("utf-8 path");
    let out = offboard(
        dir.path(),
        db,
        ISSUER,
        true,
        &["streams", "status", "x", "stopped"],
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    for v in ["enabled", "paused", "disabled"] {
        assert!(out.stderr.contains(v), "{}", out.stderr);
    }
    assert!(
        !dir.path().join("offboard.db").exists(),
        "the parser refused it before any database was opened"
    );
    let help = offboard(dir.path(), db, ISSUER, true, &["streams", "status", "--help"]);
    assert!(help.ok);
    assert!(
        help.stdout
            .contains("[possible values: enabled, paused, disabled]"),
        "{}",
        help.stdout
    );
}

#[test]
fn keys_list_on_a_fresh_database_creates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("offboard.db");
    let db = db.to_str().expect("utf-8 path");
    // A loopback issuer with no key-encryption key: `serve` would create the development KEK file; `keys list`
    // must not.
    let out = offboard(
        dir.path(),
        db,
        "http://127.0.0.1:8080",
        false,
        &["keys", "list", "--json"],
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).expect("JSON"),
        Value::Array(vec![])
    );
    assert!(
        !dir.path().join(offboard::keys::kek::DEV_KEK_FILE).exists(),
        "keys list created a KEK file"
    );
    let out = offboard(dir.path(), db, ISSUER, true, &["keys", "list", "--json"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).expect("JSON"),
        Value::Array(vec![]),
        "keys list created signing keys"
    );
    let out = offboard(dir.path(), db, ISSUER, true, &["keys", "list"]);
    assert!(out.ok && out.stdout.is_empty(), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("no signing keys yet"), "{}", out.stderr);
}

#[test]
fn migrate_lists_what_it_applied_then_says_none_were_pending() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("offboard.db");
    let db = db.to_str().expect("utf-8 path");
    let first = offboard(dir.path(), db, ISSUER, true, &["migrate"]);
    assert!(first.ok, "{}", first.stderr);
    let applied: Vec<&str> = first.stdout.lines().collect();
    assert!(applied.len() > 1, "{}", first.stdout);
    assert!(
        applied.iter().all(|l| l.starts_with("applied ")),
        "{}",
        first.stdout
    );
    assert!(applied.iter().any(|l| l.contains("000001")), "{}", first.stdout);
    assert!(
        first
            .stderr
            .contains(&format!("applied {} migration(s)", applied.len())),
        "{}",
        first.stderr
    );
    let again = offboard(dir.path(), db, ISSUER, true, &["migrate"]);
    assert!(again.ok, "{}", again.stderr);
    assert!(again.stdout.is_empty(), "{}", again.stdout);
    assert!(
        again.stderr.contains("no migration was pending"),
        "{}",
        again.stderr
    );
}

async fn users_list_shows_each_user_with_its_hold_and_generation(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.create_user("alice@example.com").await;
    let bob = app.create_user("bob@example.com").await;
    ok(
        &app,
        &["users", "deactivate", "bob@example.com", "--reason", "left"],
    );
    let list = json_of(&app, &["users", "list", "--json"]);
    let users = list.as_array().expect("array");
    assert_eq!(users.len(), 2, "{list}");
    let get = |i: usize| users.get(i).expect("user");
    assert_eq!(get(0)["userName"], "alice@example.com");
    assert_eq!(get(0)["id"], alice.as_str());
    assert_eq!(get(0)["active"], true);
    assert_eq!(get(0)["hold"], Value::Null);
    assert_eq!(get(0)["generation"], app.user_row(&alice).token_generation);
    assert_eq!(get(1)["userName"], "bob@example.com");
    assert_eq!(get(1)["id"], bob.as_str());
    assert_eq!(get(1)["active"], false);
    assert_eq!(get(1)["hold"]["reason"], "left");
    assert_eq!(get(1)["hold"]["idpActive"], true);
    assert_eq!(get(1)["generation"], app.user_row(&bob).token_generation);
    let table = ok(&app, &["users", "list"]);
    let bob_line = table
        .lines()
        .find(|l| l.starts_with("bob@example.com"))
        .expect("bob's line");
    assert!(bob_line.contains(&bob) && bob_line.contains("held"), "{table}");
}

async fn lists_and_shows_have_json(backend: Backend) {
    let app = TestApp::start(backend).await;
    let creds = json_of(&app, &["credentials", "list", "--json"]);
    let idp = creds
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "idp"))
        .expect("the idp credential");
    assert_eq!(idp["scopes"], serde_json::json!(["scim"]));
    assert_eq!(idp["active"], true);
    assert_eq!(idp["revokedAt"], Value::Null);
    assert!(
        idp.get("secret").is_none() && idp.get("secretHash").is_none(),
        "{idp}"
    );

    let keys = json_of(&app, &["keys", "list", "--json"]);
    let keys = keys.as_array().expect("array");
    assert!(!keys.is_empty());
    assert!(
        keys.iter().any(|k| k["state"] == "active" && k["alg"] == "RS256"),
        "{keys:?}"
    );
    assert!(
        keys.iter().all(|k| k["sealedByConfiguredKek"] == true),
        "{keys:?}"
    );

    let id = ok(
        &app,
        &[
            "streams",
            "add",
            "--push",
            "http://127.0.0.1:9/events",
            "--audience",
            "https://rp.example",
        ],
    );
    let id = id.trim();
    let streams = json_of(&app, &["streams", "list", "--json"]);
    let s = streams.as_array().and_then(|a| a.first()).expect("one stream");
    assert_eq!(s["id"], id);
    assert_eq!(s["audience"], "https://rp.example");
    assert_eq!(s["deliveryMethod"], "push");
    assert_eq!(s["endpointUrl"], "http://127.0.0.1:9/events");
    assert_eq!(s["status"], "enabled");
    assert_eq!(s["pending"], 0);
    assert!(s.get("authorizationHeader").is_none(), "{s}");
    ok(
        &app,
        &["streams", "status", id, "paused", "--reason", "maintenance"],
    );
    let shown = json_of(&app, &["streams", "show", id, "--json"]);
    assert_eq!(shown["id"], id);
    assert_eq!(shown["status"], "paused");
    assert_eq!(shown["total"], 0);
    assert_eq!(shown["undelivered"], serde_json::json!([]));
}

both_backends!(
    users_list_shows_each_user_with_its_hold_and_generation,
    lists_and_shows_have_json
);
