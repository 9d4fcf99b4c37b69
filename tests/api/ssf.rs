//! The SSF transmitter API: discovery, stream management with `ssf.manage` / `ssf.read`, status, subjects and
//! verification.

use actix_web::test::TestRequest;
use offboard::credentials::Scope;
use serde_json::{Value, json};

use crate::harness::{Backend, ISSUER, Resp, TestApp, both_backends, patch_op};

async fn call(app: &TestApp, method: &str, path: &str, secret: Option<&str>, body: Option<Value>) -> Resp {
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = TestRequest::default().method(method).uri(path);
    if let Some(s) = secret {
        req = req.insert_header(("Authorization", format!("Bearer {s}")));
    }
    if let Some(b) = body {
        req = req
            .insert_header(("Content-Type", "application/json"))
            .set_payload(b.to_string());
    }
    app.send(req).await
}

const ALL_EVENTS: usize = 5;

async fn discovery_names_every_endpoint(backend: Backend) {
    let app = TestApp::start(backend).await;
    let res = call(&app, "GET", "/.well-known/ssf-configuration", None, None).await;
    assert_eq!(res.status, 200);
    let c = &res.body;
    assert_eq!(c["spec_version"], "1_0");
    assert_eq!(c["issuer"], ISSUER);
    assert_eq!(c["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(
        c["delivery_methods_supported"],
        json!(["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"])
    );
    for (k, path) in [
        ("configuration_endpoint", "/ssf/streams"),
        ("status_endpoint", "/ssf/status"),
        ("add_subject_endpoint", "/ssf/subjects:add"),
        ("remove_subject_endpoint", "/ssf/subjects:remove"),
        ("verification_endpoint", "/ssf/verify"),
    ] {
        assert_eq!(c[k], format!("{ISSUER}{path}"), "{k}");
    }
    assert_eq!(
        c["authorization_schemes"],
        json!([{"spec_urn": "urn:ietf:rfc:6749"}])
    );
    assert_eq!(c["default_subjects"], "ALL");
}

async fn streams_are_managed_with_ssf_scopes(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-a", &[Scope::SsfManage]);
    let read = app.credential("svc-a-reader", &[Scope::SsfRead]);
    let create = json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "https://svc-a.example.com/ssf",
                                     "authorization_header": "Bearer receiver-secret"},
                        "description": "svc-a feed"});
    assert_eq!(
        call(&app, "POST", "/ssf/streams", None, Some(create.clone()))
            .await
            .status,
        401
    );
    let scim = app.token.clone();
    assert_eq!(
        call(&app, "POST", "/ssf/streams", Some(&scim), Some(create.clone()))
            .await
            .status,
        403
    );
    assert_eq!(
        call(&app, "POST", "/ssf/streams", Some(&read), Some(create.clone()))
            .await
            .status,
        403
    );

    let res = call(&app, "POST", "/ssf/streams", Some(&manage), Some(create)).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let s = &res.body;
    let id = s["stream_id"].as_str().unwrap().to_owned();
    assert_eq!(s["iss"], ISSUER);
    assert_eq!(s["aud"], "svc-a", "the creating credential's name");
    assert_eq!(
        s["delivery"],
        json!({"method": "urn:ietf:rfc:8935", "endpoint_url": "https://svc-a.example.com/ssf"})
    );
    assert_eq!(s["events_requested"].as_array().unwrap().len(), ALL_EVENTS);
    assert!(!res.text.contains("receiver-secret"), "the header is never shown");

    let got = call(
        &app,
        "GET",
        &format!("/ssf/streams?stream_id={id}"),
        Some(&manage),
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["stream_id"], id.as_str());
    let list = call(&app, "GET", "/ssf/streams", Some(&manage), None).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);

    // Another receiver's credential sees none of it; only the creator (or scope admin) manages a stream.
    let other = app.credential("svc-z", &[Scope::SsfManage]);
    let admin = app.credential("ops", &[Scope::Admin, Scope::SsfManage]);
    let stream = format!("/ssf/streams?stream_id={id}");
    assert_eq!(
        call(&app, "GET", &stream, Some(&read), None).await.status,
        404,
        "ssf.read of another credential"
    );
    assert_eq!(call(&app, "GET", &stream, Some(&other), None).await.status, 404);
    assert_eq!(
        call(&app, "GET", "/ssf/streams", Some(&other), None).await.body,
        json!([])
    );
    let pause = json!({"stream_id": id, "status": "disabled"});
    assert_eq!(
        call(&app, "POST", "/ssf/status", Some(&other), Some(pause))
            .await
            .status,
        404
    );
    assert_eq!(
        call(&app, "DELETE", &stream, Some(&other), None).await.status,
        404
    );
    assert_eq!(
        call(&app, "GET", &stream, Some(&admin), None).await.status,
        200,
        "admin sees every stream"
    );
}

async fn streams_update_refuse_and_delete(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-a", &[Scope::SsfManage]);
    let read = app.credential("svc-a-reader", &[Scope::SsfRead]);
    let create = json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "https://svc-a.example.com/ssf"},
                        "description": "svc-a feed"});
    let res = call(&app, "POST", "/ssf/streams", Some(&manage), Some(create)).await;
    let id = res.body["stream_id"].as_str().unwrap().to_owned();
    let patch = json!({"stream_id": id, "events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]});
    let res = call(&app, "PATCH", "/ssf/streams", Some(&manage), Some(patch)).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["events_requested"].as_array().unwrap().len(), 1);
    assert_eq!(
        res.body["description"], "svc-a feed",
        "PATCH keeps what it does not name"
    );
    let put = json!({"stream_id": id, "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "https://svc-a.example.com/v2"}});
    let res = call(&app, "PUT", "/ssf/streams", Some(&manage), Some(put)).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        res.body["delivery"]["endpoint_url"],
        "https://svc-a.example.com/v2"
    );
    assert_eq!(res.body["description"], Value::Null, "PUT replaces");
    assert_eq!(res.body["events_requested"].as_array().unwrap().len(), ALL_EVENTS);

    let bad = [
        json!({"delivery": {"method": "urn:ietf:rfc:8936", "endpoint_url": "https://mine.example/poll"}}),
        json!({"delivery": {"method": "urn:example:carrier-pigeon"}}),
        json!({"delivery": {"endpoint_url": "http://svc.example.com/ssf"}}),
        json!({"delivery": {"endpoint_url": "https://svc.example.com/ssf"}, "events_requested": ["https://x.example/nope"]}),
    ];
    for b in bad {
        let res = call(&app, "POST", "/ssf/streams", Some(&manage), Some(b.clone())).await;
        assert_eq!(res.status, 400, "{b}: {}", res.text);
        assert_eq!(res.body["error"], "invalid_request");
    }
    let res = call(
        &app,
        "PATCH",
        "/ssf/streams",
        Some(&manage),
        Some(json!({"description": "x"})),
    )
    .await;
    assert_eq!(res.status, 400, "no stream_id");
    let res = call(&app, "GET", "/ssf/streams?stream_id=nope", Some(&read), None).await;
    assert_eq!(res.status, 404);

    let res = call(
        &app,
        "DELETE",
        &format!("/ssf/streams?stream_id={id}"),
        Some(&manage),
        None,
    )
    .await;
    assert_eq!(res.status, 204);
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/ssf/streams?stream_id={id}"),
            Some(&read),
            None
        )
        .await
        .status,
        404
    );
}

async fn create_stream(app: &TestApp, manage: &str) -> String {
    let create =
        json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.1:9/ssf"}});
    let res = call(app, "POST", "/ssf/streams", Some(manage), Some(create)).await;
    assert_eq!(res.status, 201, "{}", res.text);
    res.body["stream_id"].as_str().unwrap().to_owned()
}

fn outbox(app: &TestApp, stream: &str) -> Vec<offboard::db::models::OutboxRow> {
    let stream = stream.to_owned();
    offboard::fanout::pending::expand(app.db()).unwrap();
    app.db()
        .read(|c| offboard::db::repo::fanout::outbox_of(c, &stream).map_err(offboard::db::DbError::from))
        .unwrap()
}

/// The delivery progress `GET /ssf/status` reports: (`position`, `undelivered_from`, `dead_letters`).
async fn progress(app: &TestApp, id: &str, manage: &str) -> (Value, Value, Value) {
    let res = call(
        app,
        "GET",
        &format!("/ssf/status?stream_id={id}"),
        Some(manage),
        None,
    )
    .await;
    (
        res.body["position"].clone(),
        res.body["undelivered_from"].clone(),
        res.body["dead_letters"].clone(),
    )
}

async fn stream_status_is_read_and_set(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-b", &[Scope::SsfManage]);
    let id = create_stream(&app, &manage).await;

    let res = call(
        &app,
        "GET",
        &format!("/ssf/status?stream_id={id}"),
        Some(&manage),
        None,
    )
    .await;
    assert_eq!(
        res.body,
        json!({"stream_id": id, "status": "enabled", "reason": null,
               "position": 0, "undelivered_from": null, "dead_letters": 0})
    );
    // The delivery progress (docs/decisions/0039-push-guard-freshness.md): a queued SET is the oldest undelivered
    // one until it is delivered, then nothing is.
    let res = call(
        &app,
        "POST",
        "/ssf/verify",
        Some(&manage),
        Some(json!({"stream_id": id})),
    )
    .await;
    assert_eq!(res.status, 204, "{}", res.text);
    let queued = outbox(&app, &id).last().unwrap().id;
    assert_eq!(
        progress(&app, &id, &manage).await,
        (json!(queued), json!(queued), json!(0))
    );
    app.db()
        .write(|c| {
            offboard::db::repo::fanout::mark_delivered(c, queued, offboard::db::now())
                .map_err(offboard::db::DbError::from)
        })
        .unwrap();
    assert_eq!(
        progress(&app, &id, &manage).await,
        (json!(queued), Value::Null, json!(0))
    );
    let res = call(
        &app,
        "POST",
        "/ssf/status",
        Some(&manage),
        Some(json!({"stream_id": id, "status": "paused", "reason": "maintenance"})),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["status"], "paused");
    let res = call(
        &app,
        "POST",
        "/ssf/status",
        Some(&manage),
        Some(json!({"stream_id": id, "status": "asleep"})),
    )
    .await;
    assert_eq!(res.status, 400);
    call(
        &app,
        "POST",
        "/ssf/status",
        Some(&manage),
        Some(json!({"stream_id": id, "status": "enabled"})),
    )
    .await;
}

async fn removed_subjects_get_no_sets(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-b", &[Scope::SsfManage]);
    let id = create_stream(&app, &manage).await;
    // Removing a subject stops its SETs on this stream; adding it back resumes them.
    let user = app.create_user("quiet@example.com").await;
    let subject = json!({"stream_id": id, "subject": {"format": "email", "email": "QUIET@example.com"}});
    let res = call(
        &app,
        "POST",
        "/ssf/subjects:remove",
        Some(&manage),
        Some(subject.clone()),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.patch(
        &format!("/Users/{user}"),
        &patch_op("replace", Some("active"), &json!(false)),
    )
    .await;
    assert!(outbox(&app, &id).is_empty(), "an excluded subject");
    let by_id = json!({"stream_id": id, "subject": {"format": "iss_sub", "iss": ISSUER, "sub": user}});
    assert_eq!(
        call(&app, "POST", "/ssf/subjects:add", Some(&manage), Some(by_id))
            .await
            .status,
        200
    );
    app.patch(
        &format!("/Users/{user}"),
        &patch_op("replace", Some("active"), &json!(true)),
    )
    .await;
    assert_eq!(outbox(&app, &id).len(), 1, "account-enabled, included again");
    let unknown = json!({"stream_id": id, "subject": {"format": "email", "email": "nobody@example.com"}});
    assert_eq!(
        call(&app, "POST", "/ssf/subjects:add", Some(&manage), Some(unknown))
            .await
            .status,
        400
    );
    let phone = json!({"stream_id": id, "subject": {"format": "phone_number", "phone_number": "+1"}});
    assert_eq!(
        call(&app, "POST", "/ssf/subjects:add", Some(&manage), Some(phone))
            .await
            .status,
        400
    );
}

async fn verification_sends_a_set_about_the_stream(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-b", &[Scope::SsfManage]);
    let id = create_stream(&app, &manage).await;
    // Verification: 204, a SET whose subject is the stream, echoing `state`; again at once is 429.
    let res = call(
        &app,
        "POST",
        "/ssf/verify",
        Some(&manage),
        Some(json!({"stream_id": id, "state": "abc123"})),
    )
    .await;
    assert_eq!(res.status, 204, "{}", res.text);
    let rows = outbox(&app, &id);
    let v = rows.last().unwrap();
    assert_eq!(
        v.event_type,
        "https://schemas.openid.net/secevent/ssf/event-type/verification"
    );
    let worker = offboard::fanout::worker::Worker::new(
        app.db().clone(),
        app.state.config.clone(),
        app.state.tokens.keys.clone(),
        app.state.fanout.clone(),
    );
    let row = offboard::fanout::streams::get(app.db(), &id).unwrap();
    let claims = worker.claims(&row, v);
    assert_eq!(claims["sub_id"], json!({"format": "opaque", "id": id}));
    assert_eq!(claims["aud"], "svc-b");
    assert_eq!(
        claims["events"]["https://schemas.openid.net/secevent/ssf/event-type/verification"]["state"],
        "abc123"
    );
    let res = call(
        &app,
        "POST",
        "/ssf/verify",
        Some(&manage),
        Some(json!({"stream_id": id})),
    )
    .await;
    assert_eq!(res.status, 429);
    assert_eq!(
        call(
            &app,
            "POST",
            "/ssf/verify",
            Some(&manage),
            Some(json!({"stream_id": "nope"}))
        )
        .await
        .status,
        404
    );
}

async fn poll(app: &TestApp, secret: &str, url: &str, body: Value) -> Resp {
    let path = url.strip_prefix(ISSUER).unwrap().to_owned();
    call(app, "POST", &path, Some(secret), Some(body)).await
}

async fn poll_delivery_serves_until_acknowledged(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-p", &[Scope::SsfManage]);
    // No `delivery`: a poll stream, with offboard's endpoint.
    let res = call(
        &app,
        "POST",
        "/ssf/streams",
        Some(&manage),
        Some(json!({"description": "behind a firewall"})),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["delivery"]["method"], "urn:ietf:rfc:8936");
    let id = res.body["stream_id"].as_str().unwrap().to_owned();
    let url = res.body["delivery"]["endpoint_url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("{ISSUER}/ssf/poll/{id}"));

    let empty = poll(&app, &manage, &url, json!({"returnImmediately": true})).await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.body, json!({"sets": {}, "moreAvailable": false}));

    let user = app.create_user("polled@example.com").await;
    app.patch(
        &format!("/Users/{user}"),
        &patch_op("replace", Some("active"), &json!(false)),
    )
    .await;
    let res = poll(
        &app,
        &manage,
        &url,
        json!({"returnImmediately": true, "maxEvents": 1}),
    )
    .await;
    assert_eq!(res.body["moreAvailable"], true);
    assert_eq!(res.body["sets"].as_object().unwrap().len(), 1);
    let res = poll(&app, &manage, &url, json!({"returnImmediately": true})).await;
    let sets = res.body["sets"].as_object().unwrap().clone();
    assert_eq!(sets.len(), 2, "not acknowledged yet: served again");
    for (jti, set) in &sets {
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(set.as_str().unwrap()).unwrap();
        assert_eq!(&claims["jti"], jti);
        assert_eq!(claims["aud"], "svc-p");
        assert_eq!(claims["sub_id"]["sub"], user.as_str());
        let header = jsonwebtoken::decode_header(set.as_str().unwrap()).unwrap();
        assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    }
    let mut jtis: Vec<&String> = sets.keys().collect();
    jtis.sort();
    let (first, second) = (jtis[0].clone(), jtis[1].clone());
    let res = poll(
        &app,
        &manage,
        &url,
        json!({"returnImmediately": true, "ack": [first],
               "setErrs": {second.clone(): {"err": "invalid_audience", "description": "not ours"}}}),
    )
    .await;
    assert_eq!(
        res.body,
        json!({"sets": {}, "moreAvailable": false}),
        "{}",
        res.text
    );
    let rows = offboard::db::repo::fanout::outbox_of;
    let rows = app
        .db()
        .read(|c| rows(c, &id).map_err(offboard::db::DbError::from))
        .unwrap();
    let by_jti = |j: &str| rows.iter().find(|r| r.jti == j).unwrap().clone();
    assert_eq!(by_jti(&first).status, "delivered");
    assert_eq!(by_jti(&second).status, "dead");
    assert_eq!(
        by_jti(&second).last_error.as_deref(),
        Some("receiver: invalid_audience not ours")
    );

    // A long poll waits for the next SET and returns it as soon as it is queued.
    let waiting = poll(&app, &manage, &url, json!({}));
    let change = async {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(200)).await;
        app.patch(
            &format!("/Users/{user}"),
            &patch_op("replace", Some("active"), &json!(true)),
        )
        .await
    };
    let (res, _) = futures::join!(waiting, change);
    assert_eq!(res.body["sets"].as_object().unwrap().len(), 1, "{}", res.text);

    let res = poll(&app, &manage, &url, json!({"maxEvents": -1})).await;
    assert_eq!(res.status, 400);
    let res = call(&app, "POST", &format!("/ssf/poll/{id}"), None, Some(json!({}))).await;
    assert_eq!(res.status, 401);
}

/// `GET /ssf/streams` lists only the caller's streams (all of them for `admin`), a page at a time, with a `Link`
/// to the next page; a credential that owns nothing gets an empty list.
async fn stream_lists_are_the_callers_and_paged(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-a", &[Scope::SsfManage]);
    let reader = app.credential("nobody", &[Scope::SsfRead]);
    let admin = app.credential("ops", &[Scope::Admin, Scope::SsfRead]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let res = call(&app, "POST", "/ssf/streams", Some(&manage), Some(json!({}))).await;
        assert_eq!(res.status, 201, "{}", res.text);
        ids.push(res.body["stream_id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let nothing = call(&app, "GET", "/ssf/streams", Some(&reader), None).await;
    assert_eq!((nothing.status, nothing.body.clone()), (200, json!([])));
    assert_eq!(nothing.header("link"), None);

    let first = call(&app, "GET", "/ssf/streams?limit=2", Some(&manage), None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let got: Vec<&str> = first
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[0].as_str(), ids[1].as_str()], "in stream_id order");
    let link = first.header("link").expect("a next page").to_owned();
    assert_eq!(
        link,
        format!("<{ISSUER}/ssf/streams?after={}&limit=2>; rel=\"next\"", ids[1])
    );
    let next = call(
        &app,
        "GET",
        &format!("/ssf/streams?after={}&limit=2", ids[1]),
        Some(&manage),
        None,
    )
    .await;
    let got: Vec<&str> = next
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str()]);
    assert_eq!(next.header("link"), None, "the last page");

    // Someone else's streams are never listed; admin sees every stream.
    let other = app.credential("svc-b", &[Scope::SsfManage]);
    let res = call(&app, "POST", "/ssf/streams", Some(&other), Some(json!({}))).await;
    assert_eq!(res.status, 201);
    assert_eq!(
        call(&app, "GET", "/ssf/streams", Some(&manage), None)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        call(&app, "GET", "/ssf/streams", Some(&admin), None)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        4
    );
    for bad in ["0", "-1", "x"] {
        let res = call(
            &app,
            "GET",
            &format!("/ssf/streams?limit={bad}"),
            Some(&manage),
            None,
        )
        .await;
        assert_eq!(
            (res.status, res.body["error"].as_str()),
            (400, Some("invalid_request")),
            "limit={bad}"
        );
    }
}

/// Streams are capped per credential (`fanout.max_streams_per_client`) and in all (`fanout.max_streams`): beyond,
/// a create answers 409 and writes nothing.
async fn streams_are_capped_per_credential_and_in_all(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.fanout.max_streams_per_client = 2;
        c.fanout.max_streams = 3;
    })
    .await;
    let a = app.credential("svc-a", &[Scope::SsfManage]);
    let b = app.credential("svc-b", &[Scope::SsfManage]);
    for _ in 0..2 {
        assert_eq!(
            call(&app, "POST", "/ssf/streams", Some(&a), Some(json!({})))
                .await
                .status,
            201
        );
    }
    let res = call(&app, "POST", "/ssf/streams", Some(&a), Some(json!({}))).await;
    assert_eq!(res.status, 409, "{}", res.text);
    assert_eq!(res.body["error"], "limit_exceeded");
    assert!(
        res.body["error_description"]
            .as_str()
            .unwrap()
            .contains("fanout.max_streams_per_client")
    );
    assert_eq!(
        call(&app, "POST", "/ssf/streams", Some(&b), Some(json!({})))
            .await
            .status,
        201
    );
    let res = call(&app, "POST", "/ssf/streams", Some(&b), Some(json!({}))).await;
    assert_eq!(res.status, 409, "{}", res.text);
    assert!(
        res.body["error_description"]
            .as_str()
            .unwrap()
            .contains("fanout.max_streams ")
    );
    assert_eq!(offboard::fanout::streams::list(app.db()).unwrap().len(), 3);
}

/// A long poll begun before its credential was revoked answers 401, not the SETs queued after the revocation:
/// the credential (and the stream's ownership) is checked again before the poll answers.
async fn a_long_poll_of_a_revoked_credential_gets_no_sets(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-lp", &[Scope::SsfManage]);
    let res = call(&app, "POST", "/ssf/streams", Some(&manage), Some(json!({}))).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let url = res.body["delivery"]["endpoint_url"].as_str().unwrap().to_owned();
    let user = app.create_user("long-polled@example.com").await;
    let waiting = poll(&app, &manage, &url, json!({"returnImmediately": false}));
    let meanwhile = async {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
        // What `offboard credentials revoke svc-lp` does, then a change that queues SETs on the stream.
        offboard::credentials::revoke(app.db(), "svc-lp").unwrap();
        let res = app
            .patch(
                &format!("/Users/{user}"),
                &patch_op("replace", Some("active"), &json!(false)),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
    };
    let (answer, ()) = futures::join!(waiting, meanwhile);
    assert_eq!(answer.status, 401, "{}", answer.text);
    assert!(!answer.text.contains("sets"), "{}", answer.text);
}

/// Push endpoints that name a non-public address, a loopback name or userinfo are refused (400) at create and at
/// update; `http://` to a loopback address stays allowed (development).
async fn push_endpoints_must_be_public(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-n", &[Scope::SsfManage]);
    let push = |url: &str| json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}});
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://0.0.0.0/",
        "https://user:pw@example.com/",
        "https://100.64.0.1/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "https://[::ffff:192.168.0.1]/",
        "https://0x7f.1/",
        "https://localhost/",
    ] {
        let res = call(&app, "POST", "/ssf/streams", Some(&manage), Some(push(url))).await;
        assert_eq!(res.status, 400, "{url}: {}", res.text);
        assert_eq!(res.body["error"], "invalid_request", "{url}");
        assert!(
            !res.text.contains("pw@"),
            "the password is not echoed: {}",
            res.text
        );
    }
    assert!(
        offboard::fanout::streams::list(app.db()).unwrap().is_empty(),
        "nothing written"
    );
    let ok = call(
        &app,
        "POST",
        "/ssf/streams",
        Some(&manage),
        Some(push("http://127.0.0.1:9/events")),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let id = ok.body["stream_id"].as_str().unwrap();
    for url in ["https://10.0.0.1/", "https://user:pw@example.com/"] {
        let res = call(
            &app,
            "PATCH",
            "/ssf/streams",
            Some(&manage),
            Some(json!({"stream_id": id, "delivery": {"endpoint_url": url}})),
        )
        .await;
        assert_eq!(res.status, 400, "{url}: {}", res.text);
    }
}

/// Every SSF input refuses a NUL character and an oversized value with 400 `invalid_request` (never a 500 from
/// PostgreSQL, which cannot store a NUL): stream ids in query, body and path, description, endpoint, event types,
/// status and reason, subjects, verification state, poll acknowledgements and errors.
async fn ssf_inputs_refuse_nul_and_oversized_values(backend: Backend) {
    let app = TestApp::start(backend).await;
    let manage = app.credential("svc-i", &[Scope::SsfManage]);
    let res = call(&app, "POST", "/ssf/streams", Some(&manage), Some(json!({}))).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let id = res.body["stream_id"].as_str().unwrap().to_owned();
    for (method, path, body) in bad_ssf_inputs(&id) {
        let res = call(&app, method, &path, Some(&manage), body.clone()).await;
        assert_eq!(res.status, 400, "{method} {path} {body:?}: {}", res.text);
        assert_eq!(
            res.body["error"], "invalid_request",
            "{method} {path}: {}",
            res.text
        );
    }
    // Nothing was written: still the one stream, enabled, with no SETs.
    let list = offboard::fanout::streams::list(app.db()).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].row.status.as_str(), list[0].pending), ("enabled", 0));
}

/// A request to every SSF route with a NUL or an oversized value in each of its inputs (`id`: a stream the
/// caller owns, for the inputs that are not the stream id).
fn bad_ssf_inputs(id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let long_id = "a".repeat(offboard::input::MAX_ID + 1);
    let long_text = "d".repeat(offboard::input::MAX_TEXT + 1);
    let long_url = format!("https://svc.example.com/{}", "u".repeat(offboard::input::MAX_URL));
    let mut cases: Vec<(&str, String, Option<Value>)> = Vec::new();
    for bad in ["a%00b", long_id.as_str()] {
        for path in [
            "/ssf/streams?stream_id=",
            "/ssf/streams?after=",
            "/ssf/status?stream_id=",
        ] {
            cases.push(("GET", format!("{path}{bad}"), None));
        }
        cases.push(("DELETE", format!("/ssf/streams?stream_id={bad}"), None));
        cases.push((
            "POST",
            format!("/ssf/poll/{bad}"),
            Some(json!({"returnImmediately": true})),
        ));
    }
    for bad in [json!("a\u{0}b"), json!(long_id)] {
        cases.push((
            "PATCH",
            "/ssf/streams".into(),
            Some(json!({"stream_id": bad, "description": "x"})),
        ));
        cases.push(("PUT", "/ssf/streams".into(), Some(json!({"stream_id": bad}))));
        cases.push((
            "POST",
            "/ssf/status".into(),
            Some(json!({"stream_id": bad, "status": "paused"})),
        ));
        cases.push(("POST", "/ssf/verify".into(), Some(json!({"stream_id": bad}))));
        for route in ["/ssf/subjects:add", "/ssf/subjects:remove"] {
            let subjects = [
                json!({"stream_id": bad, "subject": {"format": "email", "email": "a@example.com"}}),
                json!({"stream_id": id, "subject": {"format": "email", "email": bad}}),
                json!({"stream_id": id, "subject": {"format": "iss_sub", "iss": ISSUER, "sub": bad}}),
            ];
            for body in subjects {
                cases.push(("POST", route.into(), Some(body)));
            }
        }
        let poll = format!("/ssf/poll/{id}");
        cases.push((
            "POST",
            poll.clone(),
            Some(json!({"returnImmediately": true, "ack": [bad]})),
        ));
    }
    let poll = format!("/ssf/poll/{id}");
    for bad in [json!("a\u{0}b"), json!(long_text)] {
        cases.push(("POST", "/ssf/streams".into(), Some(json!({"description": bad}))));
        cases.push((
            "PATCH",
            "/ssf/streams".into(),
            Some(json!({"stream_id": id, "description": bad})),
        ));
        cases.push((
            "POST",
            "/ssf/status".into(),
            Some(json!({"stream_id": id, "status": "paused", "reason": bad})),
        ));
        cases.push((
            "POST",
            "/ssf/verify".into(),
            Some(json!({"stream_id": id, "state": bad})),
        ));
        cases.push((
            "POST",
            poll.clone(),
            Some(json!({"returnImmediately": true, "setErrs": {"j": {"err": "invalid_request", "description": bad}}})),
        ));
    }
    cases.push((
        "POST",
        "/ssf/status".into(),
        Some(json!({"stream_id": id, "status": "paused\u{0}"})),
    ));
    cases.push((
        "POST",
        poll.clone(),
        Some(json!({"returnImmediately": true, "setErrs": {"j\u{0}": {}}})),
    ));
    bad_urls(id, &long_url, &mut cases);
    cases
}

/// Oversized or NUL-carrying push endpoints and event types, at create and at update.
fn bad_urls(id: &str, long_url: &str, cases: &mut Vec<(&'static str, String, Option<Value>)>) {
    let push = |url: &str| json!({"method": "urn:ietf:rfc:8935", "endpoint_url": url});
    for url in ["https://svc.example.com/a\u{0}b", long_url] {
        cases.push((
            "POST",
            "/ssf/streams".into(),
            Some(json!({"delivery": push(url)})),
        ));
        cases.push((
            "PATCH",
            "/ssf/streams".into(),
            Some(json!({"stream_id": id, "delivery": push(url)})),
        ));
        cases.push((
            "POST",
            "/ssf/streams".into(),
            Some(json!({"delivery": push("https://svc.example.com/"), "events_requested": [url]})),
        ));
    }
}

both_backends!(
    ssf_inputs_refuse_nul_and_oversized_values,
    push_endpoints_must_be_public,
    a_long_poll_of_a_revoked_credential_gets_no_sets,
    stream_lists_are_the_callers_and_paged,
    streams_are_capped_per_credential_and_in_all,
    discovery_names_every_endpoint,
    streams_are_managed_with_ssf_scopes,
    streams_update_refuse_and_delete,
    stream_status_is_read_and_set,
    removed_subjects_get_no_sets,
    verification_sends_a_set_about_the_stream,
    poll_delivery_serves_until_acknowledged,
);
