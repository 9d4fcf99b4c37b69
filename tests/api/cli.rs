//! The `offboard` command line as a newcomer finds it: the real binary on a real database. Unknown ids fail with a
//! message, every list and show has `--json` with stable field names, clap refuses a wrong stream status with the
//! valid ones, `keys list` only reads, and `migrate` says what it applied. `config check` shows the effective
//! configuration with secrets redacted; `serve` checks its port and configuration before it creates anything; a
//! permanent database error fails at once, in one line.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::{
    Backend, ISSUER, TEST_KEK, TestApp, both_backends, pg_admin_url, postgres_available, test_keys_file,
};

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
    let shown = json_of(&app, &["users", "show", "bob@example.com", "--json"]);
    assert_eq!(shown["userName"], "bob@example.com");
    assert_eq!(shown["id"], bob.as_str());
    assert_eq!(shown["active"], false);
    assert_eq!(shown["hold"]["reason"], "left");
    assert_eq!(shown["generation"], app.user_row(&bob).token_generation);
    assert_eq!(shown["groups"], serde_json::json!([]));
    assert_eq!(shown["liveLogins"], serde_json::json!([]));
    assert!(
        shown["lastModified"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{shown}"
    );
    let out = offboard(
        tempfile::tempdir().expect("temp dir").path(),
        &app.state.config.database_url,
        ISSUER,
        true,
        &["users", "show", "nobody@example.com", "--json"],
    );
    assert!(!out.ok && out.stdout.is_empty(), "{}", out.stdout);
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

/// Runs `offboard ARGS` in `dir` with only the given `OFFBOARD_*` variables (none inherited), at most 30 s.
fn offboard_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (Out, std::time::Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offboard"));
    cmd.args(args)
        .current_dir(dir)
        .env("OFFBOARD_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("OFFBOARD_") && name != "OFFBOARD_LOG_LEVEL" {
            cmd.env_remove(name);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().expect("run offboard");
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().expect("kill");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let out = child.wait_with_output().expect("output");
    (
        Out {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        elapsed,
    )
}

/// The names of the files in `dir`.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn config_check_prints_the_effective_configuration_with_every_secret_redacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("offboard.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"localhost:18080\"\nissuer = \"https://offboard.example.com\"\n[keys]\nkek = \"{TEST_KEK}\"\n\
             [limits]\nmax_results = 50\n"
        ),
    )
    .expect("write config");
    let file = file.to_str().expect("utf-8 path");
    let env = [
        ("OFFBOARD_CONFIG", file),
        (
            "OFFBOARD_DATABASE_URL",
            "postgres://offboard:s3cr3t-pw@db.example:5432/offboard?password=s3cr3t-pw",
        ),
        ("OFFBOARD_STREAM_AUTH_HEADER", "Bearer hdr-s3cr3t"),
        ("OFFBOARD_GUARD_ISSUER", "https://offboard.example.com"),
        ("OFFBOARD_FANOUT__CONCURRENCY", "7"),
    ];
    let (out, _) = offboard_env(dir.path(), &env, &["config", "check"]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    for line in [
        "listen = \"localhost:18080\"",
        "issuer = \"https://offboard.example.com\"",
        "database_url = \"postgres://offboard:***@db.example:5432/offboard?password=***\"",
        "kek = \"[redacted]\"",
        "max_results = 50",
        "concurrency = 7",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "no `{line}` in:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("OFFBOARD_STREAM_AUTH_HEADER"),
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("unknown"), "{}", out.stderr);
    assert!(out.stderr.contains("configuration is valid"), "{}", out.stderr);

    let (out, _) = offboard_env(dir.path(), &env, &["config", "check", "--json"]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], true);
    assert_eq!(v["config_file"], file);
    assert_eq!(v["config"]["listen"], "localhost:18080");
    assert_eq!(v["config"]["keys"]["kek"], "[redacted]");
    assert_eq!(v["config"]["fanout"]["concurrency"], 7);
    assert_eq!(
        v["config"]["database_url"],
        "postgres://offboard:***@db.example:5432/offboard?password=***"
    );
    assert_eq!(v["unknown_keys"], serde_json::json!([]));
    assert_eq!(v["environment"]["OFFBOARD_STREAM_AUTH_HEADER"], "[redacted]");
    for out in [&out.stdout, &out.stderr] {
        for secret in ["s3cr3t", TEST_KEK] {
            assert!(!out.contains(secret), "{secret} shown in {out}");
        }
    }
    assert_eq!(
        files_in(dir.path()),
        ["offboard.toml"],
        "config check created files"
    );
}

#[test]
fn config_check_reports_errors_once_with_their_place_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("offboard.toml");
    let path = file.to_str().expect("utf-8 path");
    std::fs::write(
        &file,
        "issuer = \"http://127.0.0.1:8080\"\nlisten = \"127.0.0.1:8080\n",
    )
    .expect("write");
    let (out, _) = offboard_env(dir.path(), &[("OFFBOARD_CONFIG", path)], &["config", "check"]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains(path), "{}", out.stderr);
    assert!(out.stderr.contains("line 2, column 25"), "{}", out.stderr);

    std::fs::write(&file, "log_format = \"xml\"\n").expect("write");
    let (out, _) = offboard_env(
        dir.path(),
        &[("OFFBOARD_CONFIG", path)],
        &["config", "check", "--json"],
    );
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], false);
    let error = v["errors"][0].as_str().expect("an error");
    assert_eq!(error.matches("log_format").count(), 1, "{error}");
    assert!(error.contains("expected `text` or `json`"), "{error}");
    assert_eq!(out.stderr.matches("log_format").count(), 1, "{}", out.stderr);

    // Not a loopback issuer and no key-encryption key: serve would refuse, so the check does too.
    let (out, _) = offboard_env(
        dir.path(),
        &[("OFFBOARD_ISSUER", "https://offboard.example.com")],
        &["config", "check"],
    );
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("keys.kek"), "{}", out.stderr);

    let (out, _) = offboard_env(
        dir.path(),
        &[("OFFBOARD_LISTEN", "no-such-host.invalid:8080")],
        &["config", "check"],
    );
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("`listen`") && out.stderr.contains("cannot resolve host `no-such-host.invalid`"),
        "{}",
        out.stderr
    );
    assert_eq!(files_in(dir.path()), ["offboard.toml"]);
}

#[test]
fn serve_checks_its_port_and_configuration_before_creating_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let listen = format!("localhost:{port}");
    let issuer = format!("http://127.0.0.1:{port}");
    for (env, expected) in [
        (
            vec![
                ("OFFBOARD_LISTEN", listen.as_str()),
                ("OFFBOARD_ISSUER", issuer.as_str()),
            ],
            "cannot listen on",
        ),
        (vec![("OFFBOARD_LIMITS__MAX_RESULTS", "0")], "limits.max_results"),
        (
            vec![("OFFBOARD_ISSUER", "https://offboard.example.com")],
            "keys.kek",
        ),
        (vec![("OFFBOARD_LISTEN", "127.0.0.1:http-ish")], "`listen`"),
    ] {
        // A fresh directory: the default database `offboard.db` and the development KEK would be created here.
        let dir = tempfile::tempdir().expect("temp dir");
        let (out, _) = offboard_env(dir.path(), &env, &["serve"]);
        assert_eq!(out.code, Some(1), "{env:?}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(expected), "{env:?}: {}", out.stderr);
        assert!(
            files_in(dir.path()).is_empty(),
            "{env:?} left {:?}",
            files_in(dir.path())
        );
    }
    drop(taken);
}

#[test]
fn serve_listens_on_a_host_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let keys = test_keys_file().to_str().expect("utf-8 path").to_owned();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offboard"));
    cmd.arg("serve")
        .current_dir(dir.path())
        .env_remove("OFFBOARD_CONFIG")
        .env("OFFBOARD_LISTEN", format!("localhost:{port}"))
        .env("OFFBOARD_ISSUER", format!("http://127.0.0.1:{port}"))
        .env("OFFBOARD_LOG_LEVEL", "warn")
        .env("OFFBOARD_KEYS__KEK", TEST_KEK)
        .env("OFFBOARD_KEYS__IMPORT_PEM_FILE", keys)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run offboard serve");
    let started = std::time::Instant::now();
    let answer = loop {
        use std::io::{Read, Write};
        let got = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| {
            c.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            c.read_to_string(&mut text)?;
            Ok(text)
        });
        match got {
            // Not ready yet (503) is asked again, like a refused connection.
            Ok(text) if text.starts_with("HTTP/1.1 200") => break text,
            _ if started.elapsed() < std::time::Duration::from_secs(30) => {
                assert!(child.try_wait().expect("wait").is_none(), "serve exited");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(text) => break text,
            Err(e) => {
                child.kill().expect("kill");
                panic!("serve on localhost:{port} never answered: {e}");
            }
        }
    };
    child.kill().expect("kill");
    let out = child.wait_with_output().expect("output");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks that `args` fail at once (well within the 5 s connect timeout), with one line naming `problem`, without
/// `secret`, and create nothing in the directory they run in.
fn fails_at_once(env: &[(&str, &str)], args: &[&str], problem: &str, secret: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, elapsed) = offboard_env(dir.path(), env, args);
    assert_eq!(out.code, Some(1), "{args:?}: {}{}", out.stdout, out.stderr);
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "{args:?} took {elapsed:?}: {}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
    assert!(out.stderr.contains(problem), "{args:?}: {}", out.stderr);
    assert!(!out.stderr.contains(secret), "{args:?}: {}", out.stderr);
    assert!(
        files_in(dir.path()).is_empty(),
        "{args:?} left {:?}",
        files_in(dir.path())
    );
}

#[test]
fn a_missing_sqlite_directory_fails_at_once_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    let db = missing.join("offboard.db");
    let db = db.to_str().expect("utf-8 path");
    for args in [&["migrate"][..], &["serve"], &["users", "list"]] {
        fails_at_once(
            &[("OFFBOARD_DATABASE_URL", db), ("OFFBOARD_LISTEN", "127.0.0.1:0")],
            args,
            &format!(
                "the directory {} of the SQLite file does not exist",
                missing.display()
            ),
            "\u{0}",
        );
    }
    assert!(!missing.exists());
}

#[test]
fn an_unknown_postgres_database_or_role_fails_at_once_in_one_line() {
    if !postgres_available("an_unknown_postgres_database_or_role_fails_at_once_in_one_line") {
        return;
    }
    let admin = pg_admin_url();
    let (base, _) = admin.rsplit_once('/').expect("a database in TEST_DATABASE_URL");
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let unknown_db = format!("{scheme}://postgres:pw-h1-hidden@{host}/offboard_h1_no_such_database");
    let unknown_role = format!("{scheme}://offboard_h1_no_such_role:pw-h1-hidden@{host}/test");
    for args in [&["migrate"][..], &["serve"], &["streams", "list"]] {
        fails_at_once(
            &[
                ("OFFBOARD_DATABASE_URL", &unknown_db),
                ("OFFBOARD_LISTEN", "127.0.0.1:0"),
            ],
            args,
            "database \"offboard_h1_no_such_database\" does not exist",
            "pw-h1-hidden",
        );
    }
    fails_at_once(
        &[("OFFBOARD_DATABASE_URL", &unknown_role)],
        &["migrate"],
        "role \"offboard_h1_no_such_role\" does not exist",
        "pw-h1-hidden",
    );
    fails_at_once(
        &[(
            "OFFBOARD_DATABASE_URL",
            &format!("{scheme}://postgres:pw-h1-hidden@{host}:notaport/test"),
        )],
        &["migrate"],
        "port",
        "pw-h1-hidden",
    );
}

both_backends!(
    users_list_shows_each_user_with_its_hold_and_generation,
    lists_and_shows_have_json
);
