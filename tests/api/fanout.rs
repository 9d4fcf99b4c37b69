//! Revocation fan-out: the outbox rows a change queues (recorded in its own transaction), the SETs the worker
//! pushes to a real HTTP receiver on loopback (verified against the JWKS), retries, dead-lettering, paused and
//! disabled streams, ordering, redelivery after a lost claim, and the wake-up after a commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use offboard::db::models::OutboxRow;
use offboard::fanout::streams::{self, Delivery, NewStream};
use offboard::fanout::worker::Worker;
use offboard::fanout::{ACCOUNT_DISABLED, SESSION_REVOKED};
use serde_json::{Value, json};

use crate::harness::{Backend, ISSUER, TestApp, both_backends, patch_op};
use crate::peers::{Receiver, receiver};

pub(crate) fn add_stream(app: &TestApp, rx: &Receiver, audience: &str) -> String {
    streams::create(
        app.db(),
        &app.state.tokens.keys,
        &NewStream {
            audience: audience.into(),
            delivery: Delivery::Push {
                endpoint_url: rx.url.clone(),
                authorization_header: Some(format!("Bearer secret-of-{audience}")),
            },
            events_requested: Vec::new(),
            description: None,
            created_by: "test".into(),
        },
    )
    .unwrap()
    .id
}

pub(crate) fn worker(app: &TestApp) -> Worker {
    Worker::new(
        app.db().clone(),
        app.state.config.clone(),
        app.state.tokens.keys.clone(),
        app.state.fanout.clone(),
    )
}

/// The outbox rows of a stream, after the changes waiting to be written there are (as every reader of the outbox
/// does).
fn outbox(app: &TestApp, stream: &str) -> Vec<OutboxRow> {
    let stream = stream.to_owned();
    offboard::fanout::pending::expand(app.db()).unwrap();
    app.db()
        .read(|c| offboard::db::repo::fanout::outbox_of(c, &stream).map_err(offboard::db::DbError::from))
        .unwrap()
}

/// Verifies a SET the way a receiver must: against the JWKS, RS256 pinned, `typ` secevent+jwt, our `iss`, its
/// `aud`; no `exp` (docs/decisions/0024-sets-signed-with-rs256.md).
fn verify(app: &TestApp, set: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(set).unwrap();
    assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    assert_eq!(header.alg, Algorithm::RS256);
    let jwks: JwkSet = serde_json::from_str(&app.state.tokens.keys.jwks()).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_exp = false;
    v.set_required_spec_claims(&["iss", "aud"]);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[audience]);
    let claims: Value = jsonwebtoken::decode(set, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims;
    assert!(
        claims.get("sub").is_none() && claims.get("exp").is_none(),
        "SSF profile: {claims}"
    );
    assert_eq!(
        claims["events"].as_object().unwrap().len(),
        1,
        "one event per SET"
    );
    claims
}

fn event_of(claims: &Value) -> (&str, &Value) {
    claims["events"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .map(|(k, v)| (k.as_str(), v))
        .unwrap()
}

async fn deactivation_pushes_verified_sets_to_every_stream(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (rx_a, rx_b) = (receiver(), receiver());
    let a = add_stream(&app, &rx_a, "svc-a");
    let b = add_stream(&app, &rx_b, "svc-b");
    let id = app.create_user("leaver@example.com").await;
    assert!(outbox(&app, &a).is_empty(), "creating a user reports nothing");
    let res = app
        .patch(
            &format!("/Users/{id}"),
            &patch_op("replace", None, &json!({"active": false})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    for s in [&a, &b] {
        let rows = outbox(&app, s);
        assert_eq!(rows.len(), 2, "committed with the change");
        assert_eq!(rows[0].txn, rows[1].txn, "one txn per deprovisioning");
    }
    // One SET per stream per round (a stream's SETs go out in order), both streams at once.
    assert_eq!(worker(&app).run_once().unwrap(), 2);
    assert_eq!(worker(&app).run_once().unwrap(), 2);
    for (rx, aud) in [(&rx_a, "svc-a"), (&rx_b, "svc-b")] {
        let got = rx.got();
        assert_eq!(got.len(), 2);
        let mut types = Vec::new();
        let mut txns = Vec::new();
        for r in &got {
            assert_eq!(r.content_type.as_deref(), Some("application/secevent+jwt"));
            assert_eq!(
                r.authorization.as_deref(),
                Some(format!("Bearer secret-of-{aud}").as_str())
            );
            let claims = verify(&app, &r.body, aud);
            assert_eq!(
                claims["sub_id"],
                json!({"format": "iss_sub", "iss": ISSUER, "sub": id})
            );
            assert!(claims["jti"].as_str().unwrap().len() >= 16);
            let (ty, event) = event_of(&claims);
            assert_eq!(event["min_tgen"], 1, "{claims}");
            if ty == SESSION_REVOKED {
                assert!(!event["reason_admin"]["en"].as_str().unwrap().is_empty());
                assert_eq!(event["initiating_entity"], "admin");
            }
            types.push(ty.to_owned());
            txns.push(claims["txn"].clone());
        }
        types.sort();
        assert_eq!(
            types,
            vec![SESSION_REVOKED.to_owned(), ACCOUNT_DISABLED.to_owned()]
        );
        assert_eq!(txns[0], txns[1]);
    }
    assert!(
        outbox(&app, &a)
            .iter()
            .all(|r| r.status == "delivered" && r.delivered_at.is_some())
    );
    assert_eq!(worker(&app).run_once().unwrap(), 0, "nothing left to send");
    let res = app
        .send(actix_web::test::TestRequest::get().uri("/metrics"))
        .await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(
        res.text.contains(&format!(
            "offboard_fanout_sets{{stream=\"{a}\",state=\"delivered\"}} 2"
        )),
        "{}",
        res.text
    );
    assert!(res.text.contains(&format!(
        "offboard_fanout_sets{{stream=\"{b}\",state=\"queued\"}} 0"
    )));
    assert!(res.text.contains(&format!(
        "offboard_fanout_last_delivery_latency_seconds{{stream=\"{a}\"}}"
    )));
}

async fn every_change_that_ends_access_is_reported(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = receiver();
    let s = add_stream(&app, &rx, "svc");
    let id = app.create_user("x@example.com").await;
    let path = format!("/Users/{id}");
    app.patch(&path, &patch_op("replace", Some("active"), &json!(false)))
        .await;
    app.patch(&path, &patch_op("replace", Some("active"), &json!(true)))
        .await;
    // A refresh token used twice ends that login only: a session-revoked for that session.
    let t = app.login("x@example.com");
    let rt = t.refresh_token.unwrap();
    for _ in 0..2 {
        app.form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "offboard-cli"),
                ("refresh_token", &rt),
            ],
        )
        .await;
    }
    // Leaving a group ends the user's sessions.
    let res = app
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "ops", "members": [{"value": id}]}),
        )
        .await;
    let gid = res.body["id"].as_str().unwrap();
    app.patch(
        &format!("/Groups/{gid}"),
        &patch_op("replace", Some("members"), &json!([])),
    )
    .await;
    assert_eq!(app.delete(&path).await.status, 204);
    while worker(&app).run_once().unwrap() > 0 {}
    let got: Vec<Value> = rx.got().iter().map(|r| verify(&app, &r.body, "svc")).collect();
    let seen: Vec<(String, i64)> = got
        .iter()
        .map(|c| {
            let (ty, ev) = event_of(c);
            (
                ty.rsplit('/').next().unwrap().to_owned(),
                ev["min_tgen"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("account-disabled".to_owned(), 1),
            ("session-revoked".to_owned(), 1),
            ("account-enabled".to_owned(), 1),
            ("session-revoked".to_owned(), 1),
            ("session-revoked".to_owned(), 2),
            ("account-purged".to_owned(), 3),
            ("session-revoked".to_owned(), 3),
        ],
        "in order, each with the generation then in force"
    );
    let reuse = &got[3];
    assert_eq!(reuse["sub_id"]["format"], "complex");
    assert_eq!(reuse["sub_id"]["user"]["sub"], id.as_str());
    assert_eq!(reuse["sub_id"]["session"]["format"], "opaque");
    assert_eq!(event_of(reuse).1["initiating_entity"], "policy");
    assert_eq!(outbox(&app, &s).len(), 7);
}

async fn a_refused_change_queues_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = receiver();
    let s = add_stream(&app, &rx, "svc");
    let id = app.create_user("y@example.com").await;
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "path": "active", "value": false},
        {"op": "replace", "path": "nosuchattribute.x", "value": 1}]});
    let res = app.patch(&format!("/Users/{id}"), &body).await;
    assert_eq!(res.status, 400, "{}", res.text);
    assert!(outbox(&app, &s).is_empty());
    assert!(app.user_row(&id).active);
    assert_eq!(app.user_row(&id).token_generation, 0);
}

async fn failures_retry_with_backoff_then_dead_letter(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.fanout.max_attempts = 2;
        c.fanout.backoff_base_ms = 60_000;
    })
    .await;
    let rx = receiver();
    let s = add_stream(&app, &rx, "svc");
    rx.status.store(503, Ordering::SeqCst);
    let id = app.create_user("z@example.com").await;
    app.patch(
        &format!("/Users/{id}"),
        &patch_op("replace", Some("active"), &json!(false)),
    )
    .await;
    assert_eq!(
        worker(&app).run_once().unwrap(),
        1,
        "one stream: its first SET only, in order"
    );
    let rows = outbox(&app, &s);
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("pending", 1));
    assert_eq!(rows[0].last_error.as_deref(), Some("HTTP 503"));
    let metrics = app
        .send(actix_web::test::TestRequest::get().uri("/metrics"))
        .await
        .text;
    assert!(
        metrics.contains(&format!(
            "offboard_fanout_sets{{stream=\"{s}\",state=\"retrying\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "offboard_fanout_sets{{stream=\"{s}\",state=\"queued\"}} 1"
    )));
    assert!(
        rows[0].next_attempt_at > offboard::db::now() + chrono::TimeDelta::seconds(20),
        "backed off"
    );
    assert_eq!(rows[1].attempts, 0, "the next SET waits behind the first");
    assert_eq!(worker(&app).run_once().unwrap(), 0, "not due yet");

    rx.status.store(400, Ordering::SeqCst);
    make_due(&app, &s);
    worker(&app).run_once().unwrap();
    let rows = outbox(&app, &s);
    assert_eq!(rows[0].status, "dead", "after max_attempts");
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("HTTP 400: invalid_key unknown kid")
    );

    rx.status.store(202, Ordering::SeqCst);
    make_due(&app, &s);
    assert_eq!(
        worker(&app).run_once().unwrap(),
        1,
        "a dead SET no longer holds the stream up"
    );
    assert_eq!(outbox(&app, &s)[1].status, "delivered");
    assert_eq!(rx.got().len(), 1);
    // A SET the receiver calls invalid for it is dead at once: retrying cannot fix it.
    rx.status.store(400, Ordering::SeqCst);
    *rx.err.lock().unwrap() = "invalid_audience";
    app.patch(
        &format!("/Users/{id}"),
        &patch_op("replace", Some("active"), &json!(true)),
    )
    .await;
    worker(&app).run_once().unwrap();
    let rows = outbox(&app, &s);
    assert_eq!(
        (rows[2].status.as_str(), rows[2].attempts),
        ("dead", 1),
        "{:?}",
        rows[2].last_error
    );
}

fn make_due(app: &TestApp, stream: &str) {
    use diesel::prelude::*;
    use offboard::db::schema::outbox;
    let stream = stream.to_owned();
    app.db()
        .write(|c| {
            diesel::update(outbox::table.filter(outbox::stream_id.eq(&stream)))
                .set(outbox::next_attempt_at.eq(offboard::db::now() - chrono::TimeDelta::seconds(1)))
                .execute(c)
                .map_err(offboard::db::DbError::from)
        })
        .unwrap();
}

async fn a_receiver_that_was_down_gets_everything_in_order(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.fanout.backoff_base_ms = 1).await;
    let rx = receiver();
    let s = add_stream(&app, &rx, "svc");
    rx.status.store(503, Ordering::SeqCst);
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = app.create_user(&format!("down{i}@example.com")).await;
        app.delete(&format!("/Users/{id}")).await;
        ids.push(id);
        worker(&app).run_once().unwrap();
    }
    assert!(rx.got().is_empty());
    rx.status.store(202, Ordering::SeqCst);
    make_due(&app, &s);
    while worker(&app).run_once().unwrap() > 0 {}
    let subjects: Vec<String> = rx
        .got()
        .iter()
        .map(|r| {
            verify(&app, &r.body, "svc")["sub_id"]["sub"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let want: Vec<String> = ids.iter().flat_map(|id| [id.clone(), id.clone()]).collect();
    assert_eq!(subjects, want, "every SET, in the order of the changes");
}

async fn paused_streams_hold_and_disabled_streams_drop(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (rx_p, rx_d) = (receiver(), receiver());
    let paused = add_stream(&app, &rx_p, "paused");
    let disabled = add_stream(&app, &rx_d, "disabled");
    streams::set_status(app.db(), &paused, "paused", Some("maintenance")).unwrap();
    streams::set_status(app.db(), &disabled, "disabled", None).unwrap();
    assert!(streams::set_status(app.db(), &paused, "sleepy", None).is_err());
    let id = app.create_user("p@example.com").await;
    app.patch(
        &format!("/Users/{id}"),
        &patch_op("replace", Some("active"), &json!(false)),
    )
    .await;
    assert_eq!(worker(&app).run_once().unwrap(), 0, "paused: held");
    assert_eq!(outbox(&app, &paused).len(), 2);
    assert!(outbox(&app, &disabled).is_empty(), "disabled: nothing kept");
    streams::set_status(app.db(), &paused, "enabled", None).unwrap();
    while worker(&app).run_once().unwrap() > 0 {}
    assert_eq!(rx_p.got().len(), 2);
    assert!(rx_d.got().is_empty());
    let list = streams::list(app.db()).unwrap();
    let p = list.iter().find(|s| s.row.id == paused).unwrap();
    assert_eq!((p.pending, p.delivered, p.dead), (0, 2, 0));
}

async fn a_lost_claim_is_delivered_again(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = receiver();
    let s = add_stream(&app, &rx, "svc");
    let id = app.create_user("crash@example.com").await;
    app.delete(&format!("/Users/{id}")).await;
    // A worker claims the head SET (of the outbox rows the change became) and dies before it settles it.
    offboard::fanout::pending::expand(app.db()).unwrap();
    let at = offboard::db::now();
    let claimed = app
        .db()
        .write(|c| {
            offboard::db::repo::fanout::claim_due(c, at, at + chrono::TimeDelta::seconds(30), 10)
                .map_err(offboard::db::DbError::from)
        })
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(worker(&app).run_once().unwrap(), 0, "leased to the dead worker");
    make_due(&app, &s);
    while worker(&app).run_once().unwrap() > 0 {}
    let got = rx.got();
    assert_eq!(got.len(), 2);
    assert_eq!(
        verify(&app, &got[0].body, "svc")["jti"].as_str(),
        Some(claimed[0].jti.as_str()),
        "same jti"
    );
}

async fn the_running_worker_is_woken_by_the_commit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = receiver();
    add_stream(&app, &rx, "svc");
    let running = worker(&app).spawn().unwrap();
    let id = app.create_user("fast@example.com").await;
    let started = Instant::now();
    app.patch(
        &format!("/Users/{id}"),
        &patch_op("replace", Some("active"), &json!(false)),
    )
    .await;
    while rx.got().len() < 2 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    running.stop();
    assert_eq!(rx.got().len(), 2, "delivered within 5 s");
    eprintln!("SCIM PATCH to both SETs received: {} ms", took.as_millis());
}

async fn subjects_can_be_emails_or_aliases(backend: Backend) {
    for (format, want) in [
        (
            offboard::config::SubjectFormat::Email,
            json!({"format": "email", "email": "mail@example.com"}),
        ),
        (
            offboard::config::SubjectFormat::Aliases,
            json!({"format": "aliases", "identifiers": [
                {"format": "iss_sub", "iss": ISSUER, "sub": "ID"},
                {"format": "email", "email": "mail@example.com"}]}),
        ),
    ] {
        let app = TestApp::start_with(backend, |c| c.fanout.subject_format = format).await;
        let rx = receiver();
        let s = add_stream(&app, &rx, "svc");
        let id = app.create_user("mail@example.com").await;
        app.patch(
            &format!("/Users/{id}"),
            &patch_op("replace", Some("active"), &json!(false)),
        )
        .await;
        let row = streams::get(app.db(), &s).unwrap();
        let claims = worker(&app).claims(&row, &outbox(&app, &s)[0]);
        let want: Value =
            serde_json::from_str(&want.to_string().replace("\"ID\"", &format!("\"{id}\""))).unwrap();
        assert_eq!(claims["sub_id"], want);
    }
}

/// `offboard receiver` as a real peer: its actix app on a loopback listener in its own thread.
fn offboard_receiver(
    app: &TestApp,
    audience: &str,
    auth: Option<&str>,
) -> (String, Arc<offboard::receiver::Receiver>) {
    let jwks: JwkSet = serde_json::from_str(&app.state.tokens.keys.jwks()).unwrap();
    let receiver = Arc::new(
        offboard::receiver::Receiver::new(
            offboard::receiver::ReceiverConfig {
                issuer: ISSUER.into(),
                jwks_uri: format!("{ISSUER}/.well-known/jwks.json"),
                audience: audience.into(),
                expect_authorization: auth.map(str::to_owned),
            },
            false,
        )
        .with_jwks(jwks),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let r = receiver.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            actix_web::HttpServer::new(move || {
                actix_web::App::new().configure(offboard::receiver::configure(r.clone()))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    (url, receiver)
}

async fn the_offboard_receiver_verifies_and_dedupes(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (url, rx) = offboard_receiver(&app, "svc-r", Some("Bearer secret-of-svc-r"));
    let stream = streams::create(
        app.db(),
        &app.state.tokens.keys,
        &NewStream {
            audience: "svc-r".into(),
            delivery: Delivery::Push {
                endpoint_url: url.clone(),
                authorization_header: Some("Bearer secret-of-svc-r".into()),
            },
            events_requested: Vec::new(),
            description: None,
            created_by: "test".into(),
        },
    )
    .unwrap()
    .id;
    let id = app.create_user("r@example.com").await;
    app.patch(
        &format!("/Users/{id}"),
        &patch_op("replace", Some("active"), &json!(false)),
    )
    .await;
    while worker(&app).run_once().unwrap() > 0 {}
    {
        let accepted = rx.accepted.lock().unwrap();
        let types: Vec<&str> = accepted.iter().map(|v| v.event_type.as_str()).collect();
        assert_eq!(types, vec![ACCOUNT_DISABLED, SESSION_REVOKED]);
    }
    assert_eq!(rx.min_tgen.lock().unwrap().get(&id), Some(&1));
    assert!(outbox(&app, &stream).iter().all(|r| r.status == "delivered"));
    // A redelivered SET is accepted again (202) but counted once.
    let first = outbox(&app, &stream).remove(0);
    let set = app
        .state
        .tokens
        .keys
        .signer(offboard::keys::KeyAlg::RS256)
        .unwrap()
        .sign(
            "secevent+jwt",
            &worker(&app).claims(&streams::list(app.db()).unwrap()[0].row, &first),
        )
        .unwrap();
    assert!(rx.verify(&set).unwrap().is_none(), "duplicate jti");
    assert_eq!(rx.accepted.lock().unwrap().len(), 2);
    // Wrong audience and a wrong Authorization header are refused with RFC 8935 codes.
    let url2 = url.clone();
    let (status, body) = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        let res = client
            .post(&url2)
            .header("Authorization", "Bearer wrong")
            .body(set)
            .send()
            .unwrap();
        (res.status().as_u16(), res.text().unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("authentication_failed"));
    let mut wrong_aud = worker(&app).claims(&streams::list(app.db()).unwrap()[0].row, &first);
    wrong_aud["aud"] = json!("someone-else");
    wrong_aud["jti"] = json!("fresh");
    let forged = app
        .state
        .tokens
        .keys
        .signer(offboard::keys::KeyAlg::RS256)
        .unwrap()
        .sign("secevent+jwt", &wrong_aud)
        .unwrap();
    assert_eq!(rx.verify(&forged).unwrap_err().err, "invalid_audience");
}

/// On PostgreSQL a SET queued by another instance wakes this one's worker through `LISTEN/NOTIFY`: the
/// worker here would otherwise sleep a minute.
async fn another_instance_wakes_the_worker(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.fanout.idle_poll_ms = 60_000).await;
    let rx = receiver();
    add_stream(&app, &rx, "svc");
    let id = app.create_user("other@example.com").await;
    let running = worker(&app).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // "Another instance": its own connection, outside this process's write path, so only its NOTIFY can wake
    // the worker here (the in-process wake runs only after a commit through `Db::write`).
    let url = app.db().url().target.clone();
    let before = offboard::fanout::worker::wakes();
    std::thread::spawn(move || {
        use diesel::Connection;
        let mut conn =
            offboard::db::DbConnection::Postgres(diesel::pg::PgConnection::establish(&url).unwrap());
        let event = offboard::fanout::Event::SessionsRevoked {
            reason: "another instance",
            initiator: offboard::fanout::Initiator::Admin,
        };
        offboard::fanout::enqueue(&mut conn, &id, None, "txn-other", 1, &[event]).unwrap();
    })
    .join()
    .unwrap();
    let started = Instant::now();
    while rx.got().is_empty() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    running.stop();
    assert_eq!(rx.got().len(), 1, "delivered long before the idle poll");
    assert!(offboard::fanout::worker::wakes() > before);
}

/// The per-stream counts `/metrics` and `offboard streams list` show, as the outbox itself says (the reference the
/// maintained counters must equal): `(queued, retrying, delivered, dead)`.
fn counted(app: &TestApp, stream: &str) -> (i64, i64, i64, i64) {
    let mut c = (0, 0, 0, 0);
    for r in outbox(app, stream) {
        match (r.status.as_str(), r.last_error.is_some()) {
            ("pending", false) => c.0 += 1,
            ("pending", true) => c.1 += 1,
            ("delivered", _) => c.2 += 1,
            _ => c.3 += 1,
        }
    }
    c
}

async fn metric(app: &TestApp, stream: &str) -> (i64, i64, i64, i64) {
    let text = app
        .send(actix_web::test::TestRequest::get().uri("/metrics"))
        .await
        .text;
    let get = |state: &str| -> i64 {
        let key = format!("offboard_fanout_sets{{stream=\"{stream}\",state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .parse()
            .unwrap()
    };
    (get("queued"), get("retrying"), get("delivered"), get("dead"))
}

/// `/metrics` and the stream list read counters the outbox keeps itself (not a scan of the outbox): they follow
/// every change of state (queued, failed, delivered, dead-lettered, queued again, removed by retention).
async fn outbox_counters_follow_every_change(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.fanout.backoff_base_ms = 1;
        c.fanout.max_attempts = 2;
    })
    .await;
    let (rx_a, rx_b) = (receiver(), receiver());
    let a = add_stream(&app, &rx_a, "svc-a");
    let b = add_stream(&app, &rx_b, "svc-b");
    rx_b.status.store(503, Ordering::SeqCst);
    for i in 0..3 {
        let id = app.create_user(&format!("count{i}@example.com")).await;
        app.delete(&format!("/Users/{id}")).await;
    }
    for s in [&a, &b] {
        assert_eq!(counted(&app, s), (6, 0, 0, 0));
        assert_eq!(metric(&app, s).await, (6, 0, 0, 0));
    }
    worker(&app).run_once().unwrap();
    assert_eq!(metric(&app, &a).await, counted(&app, &a));
    assert_eq!(metric(&app, &b).await, (5, 1, 0, 0), "one failed push");
    make_due(&app, &b);
    while worker(&app).run_once().unwrap() > 0 {
        make_due(&app, &b);
    }
    assert_eq!(metric(&app, &a).await, (0, 0, 6, 0));
    assert_eq!(
        metric(&app, &b).await,
        (0, 0, 0, 6),
        "dead-lettered after two attempts"
    );
    assert_eq!(streams::retry_dead(app.db(), &b).unwrap(), 6);
    assert_eq!(metric(&app, &b).await, (6, 0, 0, 0), "queued again, as new");
    let list = streams::list(app.db()).unwrap();
    let info = list.iter().find(|s| s.row.id == b).unwrap();
    assert_eq!((info.pending, info.delivered, info.dead), (6, 0, 0));
    for s in [&a, &b] {
        assert_eq!(metric(&app, s).await, counted(&app, s));
    }
    streams::remove(app.db(), &b).unwrap();
    assert!(
        !app.send(actix_web::test::TestRequest::get().uri("/metrics"))
            .await
            .text
            .contains(&b)
    );
}

/// Every SET's `jti` is time-ordered (a version 7 UUID: the outbox's unique `jti` index then grows at its end, which keeps
/// a change with many streams cheap on SQLite) and unique, so `jti` order is queue order on every stream, whichever
/// path queued the SET (a change's fan-out, a verification); and the counters follow both paths.
async fn set_ids_follow_queue_order_on_every_path(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (rx_a, rx_b) = (receiver(), receiver());
    let a = add_stream(&app, &rx_a, "svc-a");
    let b = add_stream(&app, &rx_b, "svc-b");
    for i in 0..3 {
        let id = app.create_user(&format!("order{i}@example.com")).await;
        app.delete(&format!("/Users/{id}")).await;
    }
    assert!(streams::verify(app.db(), &a, Some("state")).unwrap());
    let mut all = std::collections::HashSet::new();
    for (s, n) in [(&a, 7), (&b, 6)] {
        let rows = outbox(&app, s);
        assert_eq!(rows.len(), n);
        for r in &rows {
            assert_eq!(r.jti.len(), 32);
            assert!(r.jti.chars().all(|ch| ch.is_ascii_hexdigit()));
            assert_eq!(r.jti.get(12..13), Some("7"), "a version 7 UUID");
            assert!(all.insert(r.jti.clone()), "unique");
        }
        assert!(
            rows.windows(2).all(|w| w[0].jti < w[1].jti),
            "jti order is queue order: {:?}",
            rows.iter().map(|r| &r.jti).collect::<Vec<_>>()
        );
        assert_eq!(metric(&app, s).await, (i64::try_from(n).unwrap(), 0, 0, 0));
        assert_eq!(metric(&app, s).await, counted(&app, s));
    }
}

/// Delivered and dead-lettered SETs older than `fanout.outbox_retention_days` are removed by the worker, in
/// batches; pending and recent ones stay, and the counters follow.
async fn settled_sets_are_pruned_after_the_retention(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.fanout.outbox_retention_days = 7).await;
    let rx = receiver();
    let s = add_stream(&app, &rx, "svc");
    // More than one batch of old delivered SETs, some old dead ones, an old pending one and recent delivered ones.
    let old = offboard::db::now() - chrono::TimeDelta::days(8);
    let batch = usize::try_from(offboard::fanout::worker::PRUNE_BATCH).unwrap();
    let mut id = 0;
    let rows: Vec<(String, &str, chrono::NaiveDateTime)> = (0..batch + 10)
        .map(|_| "delivered")
        .chain(["dead"; 5])
        .chain(["pending"])
        .map(|st| (st, old))
        .chain([("delivered", offboard::db::now())])
        .map(|(st, at)| {
            id += 1;
            (format!("jti-{id}"), st, at)
        })
        .collect();
    let stream = s.clone();
    // Through the repository's insert, the one outbox insert path (on SQLite it also keeps the counters).
    let new_rows: Vec<offboard::db::models::NewOutbox<'_>> = rows
        .iter()
        .map(|(jti, status, at)| offboard::db::models::NewOutbox {
            stream_id: &stream,
            jti,
            txn: "t",
            event_type: ACCOUNT_DISABLED,
            user_id: None,
            payload: "{}",
            status,
            attempts: 1,
            next_attempt_at: *at,
            created: *at,
        })
        .collect();
    app.db()
        .write(|c| {
            offboard::db::repo::fanout::insert_outbox_many(c, &new_rows)?;
            Ok::<_, offboard::db::DbError>(())
        })
        .unwrap();
    let total = i64::try_from(batch).unwrap() + 11;
    assert_eq!(metric(&app, &s).await, (1, 0, total, 5));
    assert_eq!(worker(&app).prune().unwrap(), batch + 15);
    let left = outbox(&app, &s);
    assert_eq!(left.len(), 2, "the pending SET and the recent delivered one");
    assert!(left.iter().any(|r| r.status == "pending"));
    assert!(left.iter().any(|r| r.status == "delivered" && r.created > old));
    assert_eq!(metric(&app, &s).await, (1, 0, 1, 0));
    assert_eq!(worker(&app).prune().unwrap(), 0);
}

/// A receiver that answers an 8 MiB error body gets at most `MAX_ANSWER_BYTES` of it read: the push is a failed
/// delivery (retried: a body that long is no RFC 8935 error), and the stored error stays short.
async fn a_huge_error_answer_is_not_read(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.fanout.backoff_base_ms = 1).await;
    let rx = receiver();
    let s = add_stream(&app, &rx, "svc");
    rx.status.store(400, Ordering::SeqCst);
    *rx.err.lock().unwrap() = "invalid_request";
    rx.description_bytes.store(8 << 20, Ordering::SeqCst);
    let id = app.create_user("huge@example.com").await;
    app.delete(&format!("/Users/{id}")).await;
    assert_eq!(worker(&app).run_once().unwrap(), 1);
    let rows = outbox(&app, &s);
    assert_eq!(
        rows[0].status, "pending",
        "retried, not read as an RFC 8935 invalid_request"
    );
    let cap = offboard::fanout::worker::MAX_ANSWER_BYTES;
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some(format!("HTTP 400: answer longer than {cap} bytes, not read").as_str())
    );
    // An answer within the cap is still read: the same error, short, dead-letters the SET at once.
    rx.description_bytes.store(100, Ordering::SeqCst);
    make_due(&app, &s);
    worker(&app).run_once().unwrap();
    let rows = outbox(&app, &s);
    assert_eq!(rows[0].status, "dead");
    assert!(
        rows[0].last_error.as_deref().unwrap().len() <= 220,
        "{:?}",
        rows[0].last_error
    );
}

/// A push endpoint that reaches a non-public address is refused at push time too, before any connection: an IP
/// literal by the check, a host name by the resolver (here `localhost`, resolved locally). Each is a failed
/// delivery, and the receiver (a real one on loopback) never sees a request.
async fn pushes_to_private_addresses_are_refused_before_connecting(backend: Backend) {
    use diesel::prelude::*;
    use offboard::db::schema::streams as table;
    let app = TestApp::start_with(backend, |c| c.fanout.backoff_base_ms = 1).await;
    let (rx_ip, rx_name) = (receiver(), receiver());
    let by_ip = add_stream(&app, &rx_ip, "svc-ip");
    let by_name = add_stream(&app, &rx_name, "svc-name");
    // Written as a stream created before the rules existed would be (the API refuses these now).
    let https_ip = rx_ip.url.replacen("http://", "https://", 1);
    let port = rx_name.url.rsplit_once(':').unwrap().1.to_owned();
    let https_name = format!("https://localhost:{port}");
    for (id, url) in [(&by_ip, &https_ip), (&by_name, &https_name)] {
        let (id, url) = (id.clone(), url.clone());
        app.db()
            .write(|c| {
                diesel::update(table::table.filter(table::id.eq(&id)))
                    .set(table::endpoint_url.eq(&url))
                    .execute(c)
                    .map_err(offboard::db::DbError::from)
            })
            .unwrap();
    }
    let id = app.create_user("private@example.com").await;
    app.delete(&format!("/Users/{id}")).await;
    assert_eq!(worker(&app).run_once().unwrap(), 2);
    for (s, rx) in [(&by_ip, &rx_ip), (&by_name, &rx_name)] {
        let rows = outbox(&app, s);
        assert_eq!(rows[0].status, "pending", "a failed delivery, retried");
        let error = rows[0].last_error.as_deref().unwrap();
        assert!(error.contains("endpoint refused"), "{error}");
        assert!(
            !rx.seen_request.load(Ordering::SeqCst),
            "no request reached the receiver"
        );
    }
}

both_backends!(
    pushes_to_private_addresses_are_refused_before_connecting,
    a_huge_error_answer_is_not_read,
    outbox_counters_follow_every_change,
    set_ids_follow_queue_order_on_every_path,
    settled_sets_are_pruned_after_the_retention,
    deactivation_pushes_verified_sets_to_every_stream,
    every_change_that_ends_access_is_reported,
    a_refused_change_queues_nothing,
    failures_retry_with_backoff_then_dead_letter,
    a_receiver_that_was_down_gets_everything_in_order,
    paused_streams_hold_and_disabled_streams_drop,
    a_lost_claim_is_delivered_again,
    the_running_worker_is_woken_by_the_commit,
    the_offboard_receiver_verifies_and_dedupes,
    subjects_can_be_emails_or_aliases,
);

/// PostgreSQL only: SQLite has one instance per file, woken in process.
#[actix_web::test]
async fn postgres_another_instance_wakes_the_worker() {
    if crate::harness::postgres_available("fanout::postgres_another_instance_wakes_the_worker") {
        another_instance_wakes_the_worker(Backend::Postgres).await;
    }
}
