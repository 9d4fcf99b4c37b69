//! The two-stage outbox: a change records ONE waiting row (`outbox_changes`) in its transaction, with its receivers
//! as of the change; expansion turns it into the per-stream outbox rows before anything reads the outbox (the
//! worker, a poll, the counts), in commit order, durable across a restart.

use std::time::{Duration, Instant};

use actix_web::test::TestRequest;
use offboard::credentials::Scope;
use offboard::db::models::OutboxRow;
use offboard::db::{Db, DbError, DbOptions, DbUrl};
use offboard::fanout::streams::{self, Delivery, NewStream};
use offboard::fanout::worker::Worker;
use offboard::fanout::{ACCOUNT_DISABLED, ACCOUNT_ENABLED, SESSION_REVOKED, VERIFICATION, pending};
use serde_json::{Value, json};

use crate::fanout::add_stream;
use crate::harness::{Backend, ISSUER, TestApp, both_backends, patch_op};
use crate::peers::receiver;

/// The outbox rows of a stream as stored, without expanding anything first.
fn stored(db: &Db, stream: &str) -> Vec<OutboxRow> {
    db.read(|c| offboard::db::repo::fanout::outbox_of(c, stream).map_err(DbError::from))
        .unwrap()
}

/// Whether a change waits to be written to the outbox.
fn waiting(db: &Db) -> bool {
    db.read(|c| offboard::db::repo::fanout::has_changes(c).map_err(DbError::from))
        .unwrap()
}

fn events(rows: &[OutboxRow]) -> Vec<&str> {
    rows.iter().map(|r| r.event_type.as_str()).collect()
}

fn stream_asking_for(app: &TestApp, audience: &str, events: &[&str]) -> String {
    streams::create(
        app.db(),
        &app.state.tokens.keys,
        &NewStream {
            audience: audience.into(),
            delivery: Delivery::Poll,
            events_requested: events.iter().map(|e| (*e).to_owned()).collect(),
            description: None,
            created_by: "test".into(),
        },
    )
    .unwrap()
    .id
}

async fn a_change_is_one_row_that_expands_into_its_sets(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (rx_a, rx_b) = (receiver(), receiver());
    let a = add_stream(&app, &rx_a, "svc-a");
    let excluding = add_stream(&app, &rx_b, "svc-b");
    let sessions_only = stream_asking_for(&app, "svc-c", &[SESSION_REVOKED]);
    let user = app.create_user("two-stage@example.com").await;
    streams::set_subject(app.db(), &excluding, &user, false).unwrap();

    let res = app.deactivate(&user).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(waiting(app.db()), "the change is recorded, once");
    for s in [&a, &excluding, &sessions_only] {
        assert!(stored(app.db(), s).is_empty(), "not expanded yet");
    }
    assert_eq!(pending::expand(app.db()).unwrap(), 3);
    assert!(!waiting(app.db()));
    assert_eq!(
        pending::expand(app.db()).unwrap(),
        0,
        "expanding again writes nothing"
    );

    let rows = stored(app.db(), &a);
    assert_eq!(events(&rows), [ACCOUNT_DISABLED, SESSION_REVOKED]);
    assert!(rows[0].id < rows[1].id);
    assert_ne!(rows[0].jti, rows[1].jti, "a jti per SET");
    assert_eq!(rows[0].txn, rows[1].txn, "one change");
    assert_eq!(
        rows[0].created, rows[1].created,
        "queued when the change committed"
    );
    assert_eq!(rows[0].next_attempt_at, rows[0].created, "due at once");
    assert!(
        rows.iter()
            .all(|r| r.status == "pending" && r.attempts == 0 && r.user_id.as_deref() == Some(user.as_str()))
    );
    let payload: Value = serde_json::from_str(&rows[0].payload).unwrap();
    assert_eq!(payload["email"], "two-stage@example.com");
    assert!(payload["event"]["min_tgen"].is_i64());
    assert!(
        stored(app.db(), &excluding).is_empty(),
        "the user was excluded from it"
    );
    assert_eq!(events(&stored(app.db(), &sessions_only)), [SESSION_REVOKED]);
    let c = &stored(app.db(), &sessions_only)[0];
    assert_eq!(
        (c.txn.as_str(), c.created),
        (rows[0].txn.as_str(), rows[0].created)
    );

    // The counters follow the expansion.
    let list = streams::list(app.db()).unwrap();
    let count = |id: &str| list.iter().find(|s| s.row.id == id).unwrap().pending;
    assert_eq!((count(&a), count(&excluding), count(&sessions_only)), (2, 0, 1));
}

async fn receivers_are_those_of_the_change(backend: Backend) {
    let app = TestApp::start(backend).await;
    let a = stream_asking_for(&app, "svc-a", &[]);
    let removed = stream_asking_for(&app, "svc-b", &[]);
    let user = app.create_user("receivers@example.com").await;
    app.deactivate(&user).await;
    // Changed after the change, before its expansion: none of this alters who gets it.
    let later = stream_asking_for(&app, "svc-c", &[]);
    streams::remove(app.db(), &removed).unwrap();
    let update = streams::StreamUpdate {
        events_requested: Some(vec![ACCOUNT_ENABLED.to_owned()]),
        ..Default::default()
    };
    streams::update(app.db(), &app.state.tokens.keys, &a, &update).unwrap();
    streams::set_subject(app.db(), &a, &user, false).unwrap();
    assert_eq!(
        pending::expand(app.db()).unwrap(),
        2,
        "the removed stream is skipped"
    );
    assert_eq!(events(&stored(app.db(), &a)), [ACCOUNT_DISABLED, SESSION_REVOKED]);
    assert!(stored(app.db(), &later).is_empty(), "created after the change");
    assert!(stored(app.db(), &removed).is_empty());
    assert!(!waiting(app.db()));
    let list = streams::list(app.db()).unwrap();
    assert!(list.iter().all(|s| s.row.id != removed));
    assert_eq!(list.iter().find(|s| s.row.id == later).unwrap().pending, 0);
}

async fn changes_reach_each_stream_in_commit_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = receiver();
    let s = add_stream(&app, &rx, "svc");
    let (one, two) = (
        app.create_user("first@example.com").await,
        app.create_user("second@example.com").await,
    );
    app.deactivate(&one).await;
    app.patch(
        &format!("/Users/{one}"),
        &patch_op("replace", Some("active"), &json!(true)),
    )
    .await;
    app.deactivate(&two).await;
    // Queued straight into the outbox, after the three changes: it goes behind them.
    assert!(streams::verify(app.db(), &s, Some("after")).unwrap());
    assert!(!waiting(app.db()), "verification expanded what waited first");
    let rows = stored(app.db(), &s);
    assert_eq!(
        events(&rows),
        [
            ACCOUNT_DISABLED,
            SESSION_REVOKED,
            ACCOUNT_ENABLED,
            ACCOUNT_DISABLED,
            SESSION_REVOKED,
            VERIFICATION
        ]
    );
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    let subjects: Vec<Option<&str>> = rows.iter().map(|r| r.user_id.as_deref()).collect();
    let (one, two) = (Some(one.as_str()), Some(two.as_str()));
    assert_eq!(subjects, [one, one, one, two, two, None]);

    let worker = crate::fanout::worker(&app);
    while worker.run_once().unwrap() > 0 {}
    let jtis: Vec<String> = rows.iter().map(|r| r.jti.clone()).collect();
    assert_eq!(rx.jtis(), jtis, "pushed in commit order");
}

async fn a_poll_right_after_the_change_gets_its_sets(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-p", &[Scope::SsfManage]);
    let res = app
        .send(
            TestRequest::post()
                .uri("/ssf/streams")
                .insert_header(("Authorization", format!("Bearer {manage}")))
                .insert_header(("Content-Type", "application/json"))
                .set_payload(json!({"description": "polled"}).to_string()),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let url = res.body["delivery"]["endpoint_url"].as_str().unwrap().to_owned();
    let user = app.create_user("polled-at-once@example.com").await;
    assert_eq!(app.deactivate(&user).await.status, 200);
    assert!(waiting(app.db()), "nothing expanded it yet");
    let res = app
        .send(
            TestRequest::post()
                .uri(url.strip_prefix(ISSUER).unwrap())
                .insert_header(("Authorization", format!("Bearer {manage}")))
                .insert_header(("Content-Type", "application/json"))
                .set_payload(json!({"returnImmediately": true}).to_string()),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let sets = res.body["sets"].as_object().unwrap();
    assert_eq!(sets.len(), 2, "{}", res.text);
    let mut got: Vec<String> = sets
        .values()
        .map(|set| {
            let claims: Value =
                jsonwebtoken::dangerous::insecure_decode_claims(set.as_str().unwrap()).unwrap();
            assert_eq!(claims["sub_id"]["sub"], user.as_str());
            claims["events"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone()
        })
        .collect();
    got.sort();
    let mut want = vec![ACCOUNT_DISABLED.to_owned(), SESSION_REVOKED.to_owned()];
    want.sort();
    assert_eq!(got, want);
}

async fn a_waiting_change_is_delivered_after_a_restart(backend: Backend) {
    let app = TestApp::start(backend).await;
    let rx = receiver();
    let s = add_stream(&app, &rx, "svc");
    let user = app.create_user("restart@example.com").await;
    app.deactivate(&user).await;
    assert!(waiting(app.db()), "the process 'dies' before expanding");
    // A new process on the same database: its worker, on start-up, writes the change to the outbox and pushes it.
    let db = Db::open(
        &DbUrl::parse(&app.state.config.database_url).unwrap(),
        &DbOptions::default(),
    )
    .unwrap();
    let running = Worker::new(
        db.clone(),
        app.state.config.clone(),
        app.state.tokens.keys.clone(),
        app.state.fanout.clone(),
    )
    .spawn()
    .unwrap();
    let started = Instant::now();
    while rx.got().len() < 2 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    running.stop();
    assert_eq!(rx.got().len(), 2, "both SETs delivered");
    assert!(!waiting(&db));
    let rows = stored(&db, &s);
    assert_eq!(events(&rows), [ACCOUNT_DISABLED, SESSION_REVOKED]);
    assert!(rows.iter().all(|r| r.status == "delivered"));
    assert_eq!(rx.jtis(), rows.iter().map(|r| r.jti.clone()).collect::<Vec<_>>());
}

both_backends!(
    a_change_is_one_row_that_expands_into_its_sets,
    receivers_are_those_of_the_change,
    changes_reach_each_stream_in_commit_order,
    a_poll_right_after_the_change_gets_its_sets,
    a_waiting_change_is_delivered_after_a_restart,
);
