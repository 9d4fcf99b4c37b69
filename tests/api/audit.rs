//! The audit log: every action leaves exactly its entry (in the change's transaction, none for a refused or
//! failed change), the chain verifies and catches any edited or deleted row, concurrent writers never fork it,
//! the export API streams NDJSON and CSV with cursor paging, the offboarding report proves what happened, and
//! retention prunes without breaking verification.

use diesel::RunQueryDsl;
use offboard::audit::{self, verify};
use offboard::credentials::Scope;
use offboard::db::models::AuditRow;
use offboard::db::{DbError, repo};
use offboard::fanout::streams;
use serde_json::{Value, json};

use crate::fanout::{add_stream, worker};
use crate::harness::{Backend, TestApp, both_backends, patch_op};
use crate::peers::receiver;

/// Every entry, in order.
fn entries(app: &TestApp) -> Vec<AuditRow> {
    app.db()
        .read(|c| repo::audit::after(c, 0, 1_000_000).map_err(DbError::from))
        .unwrap()
}

/// Tracks the log's end so each step can check the entries it added.
struct Log {
    seen: usize,
}

impl Log {
    fn new(app: &TestApp) -> Self {
        Self {
            seen: entries(app).len(),
        }
    }

    /// The entries added since the last call.
    fn added(&mut self, app: &TestApp) -> Vec<AuditRow> {
        let all = entries(app);
        let new = all[self.seen..].to_vec();
        self.seen = all.len();
        new
    }

    /// Asserts the actions added since the last call, in order, and returns those entries.
    fn expect(&mut self, app: &TestApp, step: &str, actions: &[&str]) -> Vec<AuditRow> {
        let new = self.added(app);
        let got: Vec<&str> = new.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(got, actions, "entries after {step}");
        new
    }
}

fn details(e: &AuditRow) -> Value {
    serde_json::from_str(&e.details).unwrap()
}

/// Runs the fan-out worker until the outbox is empty.
fn drain(app: &TestApp) {
    while worker(app).run_once().unwrap() > 0 {}
}

/// Verifies the whole chain, signatures checked against the database's keys.
fn verify_now(app: &TestApp) -> verify::Verification {
    let check = offboard::keys::audit_signature_checker(app.db()).unwrap();
    verify::run(app.db(), &check).unwrap()
}

fn assert_intact(app: &TestApp) -> verify::Verification {
    let v = verify_now(app);
    assert!(v.ok, "chain verifies: {v:?}");
    v
}

#[expect(
    clippy::too_many_lines,
    reason = "one walk through every audited action, in order"
)]
async fn every_action_leaves_exactly_its_entry(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut log = Log::new(&app);
    let rx = receiver();

    let id = app.create_user("ada@example.com").await;
    let e = log.expect(&app, "SCIM create", &["scim.user.create"]);
    assert_eq!(e[0].actor, "idp", "the SCIM credential is the actor");
    assert_eq!(e[0].target_id.as_deref(), Some(id.as_str()));
    assert_eq!(e[0].target_name.as_deref(), Some("ada@example.com"));
    assert!(e[0].request_id.is_some(), "the request id is recorded");
    assert_eq!(details(&e[0])["changes"]["userName"]["new"], "ada@example.com");

    let res = app
        .patch(
            &format!("/Users/{id}"),
            &patch_op("replace", Some("displayName"), &json!("Ada L.")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let e = log.expect(&app, "SCIM patch", &["scim.user.patch"]);
    assert_eq!(
        details(&e[0])["changes"],
        json!({"displayName": {"old": "Test User", "new": "Ada L."}}),
        "changed attributes, old and new"
    );

    // A refused write leaves nothing.
    let res = app
        .post("/Users", &crate::harness::new_user("ada@example.com"))
        .await;
    assert_eq!(res.status, 409);
    log.expect(&app, "a refused duplicate", &[]);

    let login = app.login("ada@example.com");
    let e = log.expect(&app, "token mint", &["token.mint"]);
    let d = details(&e[0]);
    assert_eq!(d["tgen"], 0);
    assert!(d["exp"].is_i64() && d["jti"].is_string());
    assert!(!e[0].details.contains(&login.access_token), "no token material");
    let first_refresh = login.refresh_token.clone().unwrap();
    assert!(!e[0].details.contains(&first_refresh));

    let res = app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "offboard-cli"),
                ("refresh_token", &first_refresh),
            ],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let e = log.expect(&app, "refresh", &["token.refresh"]);
    assert_eq!(e[0].actor, "offboard-cli");
    let access = res.body["access_token"].as_str().unwrap().to_owned();

    let res = app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "offboard-cli"),
                ("refresh_token", &first_refresh),
            ],
        )
        .await;
    assert_eq!(res.status, 400);
    let e = log.expect(&app, "refresh-token reuse", &["token.reuse_detected"]);
    assert_eq!(e[0].outcome, "success");
    assert!(details(&e[0])["reason"].as_str().unwrap().contains("reuse"));

    let res = app
        .form(
            "/oauth2/revoke",
            None,
            &[("client_id", "offboard-cli"), ("token", &access)],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    log.expect(&app, "RFC 7009 revocation", &["token.revoke"]);

    let res = app
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "eng",
                    "members": [{"value": id}]}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let group = res.body["id"].as_str().unwrap().to_owned();
    let e = log.expect(&app, "group create", &["scim.group.create"]);
    assert_eq!(details(&e[0])["members_added"], json!([id]));
    let res = app
        .patch(
            &format!("/Groups/{group}"),
            &patch_op(
                "remove",
                Some(&format!("members[value eq \"{id}\"]")),
                &Value::Null,
            ),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let e = log.expect(&app, "member removal", &["scim.group.patch", "user.end_sessions"]);
    assert_eq!(details(&e[0])["members_removed"], json!([id]));
    assert_eq!(details(&e[1])["previous_generation"], 0);
    assert_eq!(details(&e[1])["generation"], 1);

    let stream = add_stream(&app, &rx, "svc");
    let e = log.expect(&app, "stream create", &["stream.create"]);
    assert!(
        !e[0].details.contains("secret-of-svc"),
        "never the receiver's Authorization header"
    );

    let res = app
        .patch(
            &format!("/Users/{id}"),
            &patch_op("replace", None, &json!({"active": false})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let e = log.expect(&app, "deactivation", &["scim.user.patch", "user.deactivate"]);
    assert_eq!(
        details(&e[0])["changes"]["active"],
        json!({"old": true, "new": false})
    );
    assert_eq!(details(&e[1])["generation"], 2);
    assert_eq!(details(&e[1])["sets_queued"], 2);
    assert_eq!(e[0].time, e[1].time, "one transaction");

    drain(&app);
    let e = log.expect(&app, "delivery", &["set.delivery", "set.delivery"]);
    for d in &e {
        assert_eq!(d.outcome, "delivered");
        assert_eq!(d.target_id.as_deref(), Some(stream.as_str()));
        assert_eq!(d.subject.as_deref(), Some(id.as_str()));
        assert!(details(d)["latency_ms"].as_i64().unwrap() >= 0);
    }

    let res = app
        .patch(
            &format!("/Users/{id}"),
            &patch_op("replace", None, &json!({"active": true})),
        )
        .await;
    assert_eq!(res.status, 200);
    log.expect(&app, "reactivation", &["scim.user.patch", "user.reactivate"]);
    drain(&app);
    log.expect(&app, "delivery", &["set.delivery"]);

    let res = app.delete(&format!("/Users/{id}")).await;
    assert_eq!(res.status, 204);
    log.expect(&app, "SCIM delete", &["scim.user.delete", "user.delete"]);
    drain(&app);
    log.expect(&app, "delivery", &["set.delivery", "set.delivery"]);

    streams::set_status(app.db(), &stream, "paused", Some("maintenance")).unwrap();
    log.expect(&app, "stream status", &["stream.status"]);
    streams::remove(app.db(), &stream).unwrap();
    log.expect(&app, "stream removal", &["stream.remove"]);

    app.credential("auditor", &[Scope::AuditRead]);
    let e = log.expect(&app, "credential create", &["credential.create"]);
    assert!(!e[0].details.to_lowercase().contains("secret_hash"));
    offboard::credentials::revoke(app.db(), "auditor").unwrap();
    log.expect(&app, "credential revoke", &["credential.revoke"]);

    let (kek, _) = offboard::keys::Kek::load(&app.state.config).unwrap();
    offboard::keys::rotate(
        app.db(),
        &kek,
        &app.state.config,
        offboard::keys::KeyAlg::RS256,
        true,
    )
    .unwrap();
    log.expect(&app, "key rotation", &["key.rotate"]);

    let bad = app
        .send(
            actix_web::test::TestRequest::get()
                .uri("/scim/v2/Users")
                .insert_header(("Authorization", "Bearer not-a-credential")),
        )
        .await;
    assert_eq!(bad.status, 401);
    let e = log.expect(&app, "a refused credential", &["auth.failure"]);
    assert_eq!(e[0].outcome, "denied");
    assert!(
        !e[0].details.contains("not-a-credential"),
        "the presented secret is not recorded"
    );

    let v = assert_intact(&app);
    assert_eq!(v.entries, entries(&app).len() as u64);
}

/// Runs raw SQL on the test database, with the append-only trigger out of the way, as an attacker with database
/// access would.
/// `GET uri` with `secret` as the bearer credential.
async fn get_as(app: &TestApp, secret: &str, uri: &str) -> crate::harness::Resp {
    app.send(
        actix_web::test::TestRequest::get()
            .uri(uri)
            .insert_header(("Authorization", format!("Bearer {secret}"))),
    )
    .await
}

fn tamper(app: &TestApp, backend: Backend, sql: &str) {
    let disable = match backend {
        Backend::Sqlite => "DROP TRIGGER IF EXISTS audit_log_append_only",
        Backend::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
    };
    let sql = sql.to_owned();
    app.db()
        .write(|c| {
            diesel::sql_query(disable).execute(c)?;
            diesel::sql_query(&sql).execute(c)?;
            Ok::<_, DbError>(())
        })
        .unwrap();
}

async fn edited_or_deleted_rows_are_caught(backend: Backend) {
    let app = TestApp::start(backend).await;
    for i in 0..5 {
        app.create_user(&format!("u{i}@example.com")).await;
    }
    let all = entries(&app);
    assert!(all.len() >= 5);
    assert_intact(&app);

    // The database itself refuses an edit in place.
    let refused = app.db().write(|c| {
        diesel::sql_query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
            .execute(c)
            .map_err(DbError::from)
    });
    assert!(refused.is_err(), "the append-only trigger refuses UPDATE");

    // One column of one row changed.
    tamper(
        &app,
        backend,
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3",
    );
    let v = verify_now(&app);
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(3), "{v:?}");
    tamper(
        &app,
        backend,
        &format!("UPDATE audit_log SET actor = '{}' WHERE seq = 3", all[2].actor),
    );
    assert_intact(&app);

    // Details changed and the row's hash recomputed to match: the next entry's prev_hash gives it away.
    let mut row = all[1].clone();
    row.details = r#"{"changes":{}}"#.into();
    let forged = audit::chain_hash(&row.prev_hash, &row);
    tamper(
        &app,
        backend,
        &format!(
            "UPDATE audit_log SET details = '{{\"changes\":{{}}}}', hash = '{forged}' WHERE seq = {}",
            row.seq
        ),
    );
    let v = verify_now(&app);
    assert_eq!(v.first_bad_seq, Some(row.seq + 1), "{v:?}");

    // A row removed from the middle.
    let app = TestApp::start(backend).await;
    for i in 0..4 {
        app.create_user(&format!("v{i}@example.com")).await;
    }
    tamper(&app, backend, "DELETE FROM audit_log WHERE seq = 2");
    let v = verify_now(&app);
    assert_eq!(v.first_bad_seq, Some(2), "{v:?}");
    assert!(v.problem.unwrap().contains("missing"));

    // The first rows removed, with no retention entry to account for them.
    let app = TestApp::start(backend).await;
    for i in 0..3 {
        app.create_user(&format!("w{i}@example.com")).await;
    }
    tamper(&app, backend, "DELETE FROM audit_log WHERE seq = 1");
    let v = verify_now(&app);
    assert_eq!(v.first_bad_seq, Some(2), "{v:?}");
}

async fn concurrent_writers_never_fork_the_chain(backend: Backend) {
    let app = TestApp::start(backend).await;
    let before = entries(&app).len();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = app.db().clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    offboard::lifecycle::users::create(
                        &db,
                        &crate::harness::new_user(&format!("c{t}-{i}@x.test")),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = entries(&app);
    assert_eq!(all.len(), before + 80, "one entry per create");
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i64::try_from(i).unwrap() + 1, "no gaps, no duplicates");
    }
    assert_intact(&app);
}

/// Recomputes an exported entry's hash from its exported fields, following the encoding documented in
/// `offboard::audit` and the README, without calling offboard.
fn recompute(line: &Value) -> String {
    use sha2::{Digest, Sha256};
    let s = |k: &str| line[k].to_string();
    let canonical = format!(
        r#"{{"action":{},"actor":{},"details":{},"outcome":{},"request_id":{},"seq":{},"subject":{},"target_id":{},"target_name":{},"target_type":{},"time":{}}}"#,
        s("action"),
        s("actor"),
        s("details"),
        s("outcome"),
        s("request_id"),
        s("seq"),
        s("subject"),
        s("target_id"),
        s("target_name"),
        s("target_type"),
        s("time")
    );
    let mut h = Sha256::new();
    h.update(hex::decode(line["prev_hash"].as_str().unwrap()).unwrap());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

async fn export_streams_ndjson_and_csv_with_paging(backend: Backend) {
    let app = TestApp::start(backend).await;
    let auditor = app.credential("auditor", &[Scope::AuditRead]);
    for i in 0..5 {
        app.create_user(&format!("e{i}@example.com")).await;
    }
    // The SCIM credential lacks audit:read.
    assert_eq!(get_as(&app, &app.token, "/audit/events").await.status, 403);

    let res = get_as(&app, &auditor, "/audit/events").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = res
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // credential.create for the auditor, then 5 creates (keys and the idp credential came first).
    assert!(lines.len() >= 6);
    let mut prev = audit::GENESIS.to_owned();
    for l in &lines {
        assert_eq!(l["prev_hash"], prev.as_str());
        assert_eq!(
            recompute(l),
            l["hash"].as_str().unwrap(),
            "documented encoding reproduces the hash"
        );
        prev = l["hash"].as_str().unwrap().to_owned();
    }

    // Paging: a full page links to the next one; following the links yields every entry once.
    let mut uri = "/audit/events?action=scim.user.create&limit=2".to_owned();
    let mut seen = Vec::new();
    loop {
        let res = get_as(&app, &auditor, &uri).await;
        assert_eq!(res.status, 200, "{}", res.text);
        for l in res.text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["action"], "scim.user.create");
            seen.push(v["seq"].as_i64().unwrap());
        }
        match res.header("link") {
            Some(link) => {
                assert!(link.ends_with("rel=\"next\""), "{link}");
                link.trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .clone_into(&mut uri);
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // CSV: a header, then one record per entry; filtered by target name.
    let res = get_as(&app, &auditor, "/audit/events?format=csv&target=e3@example.com").await;
    assert_eq!(res.status, 200);
    assert!(res.header("content-type").unwrap().starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(res.text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        offboard::audit::export::CSV_COLUMNS.to_vec()
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 1);
    assert_eq!(&records[0][3], "scim.user.create");

    // Time window: everything is from today, nothing from before.
    let res = get_as(&app, &auditor, "/audit/events?until=2000-01-01").await;
    assert_eq!(res.status, 200);
    assert!(res.text.is_empty());

    for bad in [
        "since=yesterday",
        "limit=0",
        "after_seq=-1",
        "format=xml",
        "colour=blue",
        "limit=1&limit=2",
    ] {
        let res = get_as(&app, &auditor, &format!("/audit/events?{bad}")).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
        assert_eq!(res.body["scimType"], "invalidValue", "{bad}");
    }

    let res = get_as(&app, &auditor, "/audit/verify").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["ok"], true);
    assert_eq!(res.body["first_bad_seq"], Value::Null);
    assert_eq!(
        res.body["entries"],
        lines.len(),
        "reads add nothing (the refused 403 came before the export)"
    );
}

async fn offboarding_report_proves_delivery(backend: Backend) {
    let app = TestApp::start(backend).await;
    let auditor = app.credential("auditor", &[Scope::AuditRead]);
    let rx = receiver();
    let stream = add_stream(&app, &rx, "svc");
    let id = app.create_user("leaver@example.com").await;
    app.login("leaver@example.com");
    app.login("leaver@example.com");
    let res = app
        .patch(
            &format!("/Users/{id}"),
            &patch_op("replace", None, &json!({"active": false})),
        )
        .await;
    assert_eq!(res.status, 200);
    drain(&app);
    let res = get_as(&app, &auditor, &format!("/audit/users/{id}/offboarding")).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let r = &res.body;
    assert_eq!(r["user"]["user_name"], "leaver@example.com");
    let o = &r["offboardings"][0];
    assert_eq!(o["action"], "user.deactivate");
    assert_eq!(o["cause"], "scim.user.patch");
    assert_eq!(o["actor"], "idp");
    assert!(o["request_received_at"].is_string());
    assert_eq!(o["previous_generation"], 0);
    assert_eq!(o["generation"], 1);
    assert_eq!(o["access_tokens_invalidated"], 2);
    assert_eq!(o["refresh_tokens_revoked"], 2);
    let deliveries = o["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "account-disabled and session-revoked");
    for d in deliveries {
        assert_eq!(d["stream_id"], stream.as_str());
        assert_eq!(d["status"], "delivered");
        assert!(d["latency_ms"].as_i64().unwrap() >= 0);
    }
    let text = get_as(
        &app,
        &auditor,
        &format!("/audit/users/{id}/offboarding?format=text"),
    )
    .await;
    assert_eq!(text.status, 200);
    assert!(text.text.contains("deactivated (audit entry"), "{}", text.text);
    assert!(text.text.contains("2 of 2 SETs delivered"), "{}", text.text);

    // By userName, as the CLI asks; unknown users are a 404 / NotFound.
    let by_name = offboard::audit::report::for_user_name(app.db(), "LEAVER@example.com").unwrap();
    assert_eq!(by_name.user.id, id);
    assert_eq!(
        get_as(&app, &auditor, "/audit/users/nobody/offboarding")
            .await
            .status,
        404
    );
}

async fn retention_prunes_and_keeps_verification(backend: Backend) {
    let app = TestApp::start(backend).await;
    for i in 0..4 {
        app.create_user(&format!("r{i}@example.com")).await;
    }
    let old = entries(&app);
    let dir = tempfile::tempdir().unwrap();
    let cutoff = offboard::db::now() + chrono::TimeDelta::seconds(1);
    let sign = offboard::keys::audit_signer(&app.state.tokens.keys);
    let pruned = audit::retention::prune_before(app.db(), cutoff, Some(dir.path()), &sign)
        .unwrap()
        .unwrap();
    assert_eq!(pruned.deleted, old.len() - 1, "everything but the newest entry");
    assert_eq!(pruned.through_seq, old.last().unwrap().seq - 1);
    let archive = pruned.archive.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the archive is private to its owner");
    }
    let archived = std::fs::read_to_string(&archive).unwrap();
    assert_eq!(
        archived.lines().count(),
        old.len() - 1,
        "every pruned entry archived"
    );

    let kept = entries(&app);
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].seq, pruned.through_seq + 1);
    assert_eq!(kept[1].action, "audit.retention");
    assert_eq!(details(&kept[1])["through_hash"], kept[0].prev_hash.as_str());
    app.create_user("after@example.com").await;
    let v = assert_intact(&app);
    assert_eq!(v.first_seq, Some(pruned.through_seq + 1));
    // Nothing old enough left: a second run does nothing.
    assert!(
        audit::retention::prune_before(
            app.db(),
            offboard::db::now() - chrono::TimeDelta::days(1),
            None,
            &sign
        )
        .unwrap()
        .is_none()
    );

    // Deleting more than retention did is still caught.
    tamper(
        &app,
        backend,
        &format!("DELETE FROM audit_log WHERE seq = {}", pruned.through_seq + 1),
    );
    let v = verify_now(&app);
    assert!(!v.ok, "{v:?}");
    assert_eq!(v.first_bad_seq, Some(pruned.through_seq + 2));
}

async fn a_forged_retention_entry_does_not_hide_a_deletion(backend: Backend) {
    let app = TestApp::start(backend).await;
    for i in 0..4 {
        app.create_user(&format!("f{i}@example.com")).await;
    }
    let all = entries(&app);
    let cut = &all[2];
    tamper(
        &app,
        backend,
        &format!("DELETE FROM audit_log WHERE seq <= {}", cut.seq),
    );
    // An attacker with database access appends what retention would have written, without the signing key.
    for jws in [None, Some("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")] {
        let mut e = audit::Entry::new("audit.retention")
            .detail("through_seq", cut.seq)
            .detail("through_hash", cut.hash.as_str());
        if let Some(j) = jws {
            e = e.detail("jws", j);
        }
        app.db()
            .write(|c| {
                audit::append(c, vec![e.clone()], None)
                    .map(drop)
                    .map_err(DbError::from)
            })
            .unwrap();
        let v = verify_now(&app);
        assert!(!v.ok, "{v:?}");
        assert!(v.problem.unwrap().contains("signature"));
    }
}

async fn signed_checkpoints_cover_the_head(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.create_user("cp@example.com").await;
    let sign = offboard::keys::audit_signer(&app.state.tokens.keys);
    let covered = audit::checkpoint(app.db(), &app.state.config.issuer, &sign)
        .unwrap()
        .unwrap();
    assert_eq!(
        audit::checkpoint(app.db(), &app.state.config.issuer, &sign).unwrap(),
        None,
        "idle: no new one"
    );
    let all = entries(&app);
    let cp = all.last().unwrap();
    assert_eq!(cp.action, "audit.checkpoint");
    let d = details(cp);
    assert_eq!(d["seq"], covered);
    assert_eq!(d["hash"], cp.prev_hash.as_str());
    // The JWS verifies against the published JWKS.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&app.state.tokens.keys.jwks()).unwrap();
    let token = d["jws"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims: Value = jsonwebtoken::decode(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["audit_seq"], covered);
    assert_eq!(claims["audit_hash"], d["hash"]);
    assert_intact(&app);

    // A checkpoint re-pointed at another hash (chain rewritten to match) no longer matches its signature.
    let mut forged = cp.clone();
    let mut fd = d.clone();
    fd["hash"] = Value::from("0".repeat(64));
    forged.details = audit::canonical_json(&fd);
    forged.prev_hash = "0".repeat(64);
    let check = offboard::keys::audit_signature_checker(app.db()).unwrap();
    let mut checker = verify::Checker::new(&check);
    forged.hash = audit::chain_hash(&forged.prev_hash, &forged);
    checker.push(&forged);
    let v = checker.finish();
    assert!(!v.ok);
    assert!(
        v.problem.unwrap().contains("signed audit_hash"),
        "caught by the signature"
    );
}

async fn a_flood_of_bad_credentials_is_recorded_within_budget(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.audit.auth_failures_per_minute = 5).await;
    let mut log = Log::new(&app);
    for i in 0..50 {
        let res = app
            .send(
                actix_web::test::TestRequest::get()
                    .uri("/scim/v2/Users")
                    .insert_header(("Authorization", format!("Bearer guess-{i}"))),
            )
            .await;
        assert_eq!(res.status, 401);
    }
    let added = log.added(&app);
    assert_eq!(added.len(), 5, "at most the budget per minute");
    assert!(
        added
            .iter()
            .all(|e| e.action == "auth.failure" && e.outcome == "denied")
    );
    assert!(added.iter().all(|e| !e.details.contains("guess-")));
    assert_intact(&app);
}

/// OWASP CSV injection: a cell beginning with `=`, `+`, `-`, `@`, a tab, a carriage return (or `'`, so the rule
/// reverses) gets a leading `'` in the CSV export; the text offboarding report escapes control characters, so a
/// userName cannot forge a line or send a terminal escape.
async fn exports_and_reports_neutralise_hostile_names(backend: Backend) {
    let app = TestApp::start(backend).await;
    let auditor = app.credential("auditor", &[Scope::AuditRead]);
    let names = [
        "=HYPERLINK(\"https://evil.example\")",
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(1+1)",
        "\tx@example.com",
        "\rx@example.com",
        "'=quoted@example.com",
        "plain@example.com",
    ];
    for name in names {
        app.create_user(name).await;
    }
    let res = get_as(&app, &auditor, "/audit/events?format=csv&action=scim.user.create").await;
    assert_eq!(res.status, 200, "{}", res.text);
    let mut reader = csv::Reader::from_reader(res.text.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), names.len());
    for record in &records {
        for cell in record {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a cell a spreadsheet would evaluate: {cell:?}"
            );
        }
    }
    let exported: Vec<&str> = records.iter().map(|r| &r[6]).collect();
    let expected: Vec<String> = names
        .iter()
        .map(|n| {
            if n.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) {
                format!("'{n}")
            } else {
                (*n).to_owned()
            }
        })
        .collect();
    assert_eq!(
        exported, expected,
        "target_name: prefixed, and reversible by dropping one `'`"
    );

    // The text report of a user whose name carries a newline and a terminal escape.
    let forged = "mallory@example.com\nOffboarding report for admin@example.com\u{1b}[2J";
    let id = app.create_user(forged).await;
    let res = app.deactivate(&id).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let text = get_as(
        &app,
        &auditor,
        &format!("/audit/users/{id}/offboarding?format=text"),
    )
    .await;
    assert_eq!(text.status, 200, "{}", text.text);
    assert!(!text.text.contains('\u{1b}'), "{}", text.text);
    assert_eq!(
        text.text
            .lines()
            .filter(|l| l.starts_with("Offboarding report"))
            .count(),
        1,
        "{}",
        text.text
    );
    assert!(
        text.text
            .contains("mallory@example.com\\nOffboarding report for admin@example.com\\x1b[2J"),
        "{}",
        text.text
    );
    // JSON keeps the stored value as it is.
    let json = get_as(&app, &auditor, &format!("/audit/users/{id}/offboarding")).await;
    assert_eq!(json.body["user"]["user_name"], forged);
}

both_backends!(
    exports_and_reports_neutralise_hostile_names,
    a_flood_of_bad_credentials_is_recorded_within_budget,
    every_action_leaves_exactly_its_entry,
    edited_or_deleted_rows_are_caught,
    concurrent_writers_never_fork_the_chain,
    export_streams_ndjson_and_csv_with_paging,
    offboarding_report_proves_delivery,
    retention_prunes_and_keeps_verification,
    a_forged_retention_entry_does_not_hide_a_deletion,
    signed_checkpoints_cover_the_head,
);
