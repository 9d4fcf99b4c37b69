//! The service side of revocation: an access token revoked by `jti` and a compromised signing key each queue a
//! SET, and `GET /ssf/snapshot` returns the revocations that can still kill an unexpired token, paged, with the
//! stream position they correspond to; a revocation between the snapshot and the next poll is in that poll.

use actix_web::test::TestRequest;
use offboard::credentials::Scope;
use serde_json::{Value, json};

use crate::harness::{Backend, ISSUER, Resp, TEST_KEK, TestApp, both_backends};

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
const KEY_COMPROMISED: &str = "urn:offboard:secevent:key-compromised";

async fn call(app: &TestApp, method: &str, path: &str, secret: &str, body: Option<Value>) -> Resp {
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = TestRequest::default()
        .method(method)
        .uri(path)
        .insert_header(("Authorization", format!("Bearer {secret}")));
    if let Some(b) = body {
        req = req
            .insert_header(("Content-Type", "application/json"))
            .set_payload(b.to_string());
    }
    app.send(req).await
}

/// A poll stream of a new `ssf.manage` credential: (stream id, secret).
async fn poll_stream(app: &TestApp, name: &str) -> (String, String) {
    let secret = app.credential(name, &[Scope::SsfManage]);
    let res = call(app, "POST", "/ssf/streams", &secret, Some(json!({}))).await;
    assert_eq!(res.status, 201, "{}", res.text);
    (res.body["stream_id"].as_str().unwrap().to_owned(), secret)
}

/// Every SET queued for the stream, as claims, acknowledging them.
async fn drain(app: &TestApp, stream: &str, secret: &str) -> Vec<Value> {
    let path = format!("/ssf/poll/{stream}");
    let res = call(
        app,
        "POST",
        &path,
        secret,
        Some(json!({"returnImmediately": true})),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let sets = res.body["sets"].as_object().unwrap().clone();
    let ack: Vec<&String> = sets.keys().collect();
    let acked = call(
        app,
        "POST",
        &path,
        secret,
        Some(json!({"returnImmediately": true, "maxEvents": 0, "ack": ack})),
    )
    .await;
    assert_eq!(acked.status, 200, "{}", acked.text);
    sets.values()
        .map(|s| jsonwebtoken::dangerous::insecure_decode_claims(s.as_str().unwrap()).unwrap())
        .collect()
}

async fn snapshot(app: &TestApp, query: &str, secret: &str) -> Resp {
    call(app, "GET", &format!("/ssf/snapshot?{query}"), secret, None).await
}

async fn revoke(app: &TestApp, token: &str) {
    let res = app
        .form(
            "/oauth2/revoke",
            None,
            &[("client_id", "offboard-cli"), ("token", token)],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
}

fn jti_of(token: &str) -> String {
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

async fn a_jti_revocation_queues_a_set_about_that_token(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (stream, secret) = poll_stream(&app, "svc-jti").await;
    app.create_user("jti@example.com").await;
    let t = app.login("jti@example.com");
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&t.access_token).unwrap();
    revoke(&app, &t.access_token).await;
    revoke(&app, &t.access_token).await;
    let sets = drain(&app, &stream, &secret).await;
    assert_eq!(
        sets.len(),
        1,
        "one SET, however often the token is revoked: {sets:?}"
    );
    let set = &sets[0];
    assert_eq!(
        set["sub_id"],
        json!({"format": "jwt_id", "iss": ISSUER, "jti": claims["jti"]})
    );
    let event = &set["events"][SESSION_REVOKED];
    assert_eq!(
        event["exp"],
        claims["exp"].as_i64().unwrap() + 5,
        "the token's exp with the leeway"
    );
    assert!(
        event.get("min_tgen").is_none(),
        "the generation did not change: {event}"
    );
    assert_eq!(event["initiating_entity"], "policy");
}

/// A service token (no user) revoked by `jti` is told to the streams too, and listed by the snapshot.
async fn a_service_token_revoked_by_jti_queues_a_set(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.tokens
            .client_credentials
            .insert("deploy-bot".into(), vec!["repo:read".into()]);
    })
    .await;
    let (stream, secret) = poll_stream(&app, "svc-bot").await;
    let bot = app.credential("deploy-bot", &[Scope::Introspect]);
    let res = app
        .form(
            "/oauth2/token",
            Some(("deploy-bot", &bot)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let token = res.body["access_token"].as_str().unwrap().to_owned();
    let res = app
        .form("/oauth2/revoke", Some(("deploy-bot", &bot)), &[("token", &token)])
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let sets = drain(&app, &stream, &secret).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(
        sets[0]["sub_id"],
        json!({"format": "jwt_id", "iss": ISSUER, "jti": jti_of(&token)})
    );
    assert_eq!(sets[0]["events"][SESSION_REVOKED]["exp"], j_exp(&token) + 5);
    let snap = snapshot(&app, &format!("stream_id={stream}"), &secret).await;
    assert_eq!(
        snap.body["tokens"][0]["jti"],
        jti_of(&token).as_str(),
        "{}",
        snap.text
    );
}

async fn a_key_compromise_queues_a_set_with_the_kid(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (stream, secret) = poll_stream(&app, "svc-kid").await;
    app.create_user("kid@example.com").await;
    let t = app.login("kid@example.com");
    let kid = jsonwebtoken::decode_header(&t.access_token).unwrap().kid.unwrap();
    let config = (*app.state.config).clone();
    let kek = offboard::keys::Kek::from_base64(TEST_KEK).unwrap();
    offboard::lifecycle::compromise_key(app.db(), &kek, &config, &kid, "key file leaked").unwrap();
    let sets = drain(&app, &stream, &secret).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0]["sub_id"], json!({"format": "opaque", "id": kid}));
    assert_eq!(sets[0]["events"][KEY_COMPROMISED]["kid"], kid.as_str());
    assert_eq!(
        sets[0]["events"][KEY_COMPROMISED]["reason_admin"]["en"],
        "key file leaked"
    );
    let snap = snapshot(&app, &format!("stream_id={stream}"), &secret).await;
    assert_eq!(snap.body["keys"][0]["kid"], kid.as_str(), "{}", snap.text);
}

/// Every entry of the snapshot, following `Link: rel="next"`: (pages, merged body of the first page's shape).
async fn whole_snapshot(app: &TestApp, stream: &str, secret: &str, limit: usize) -> (usize, Value) {
    let mut merged = json!({"keys": [], "subjects": [], "sessions": [], "tokens": []});
    let mut query = format!("stream_id={stream}&limit={limit}");
    let mut pages = 0;
    loop {
        let page = snapshot(app, &query, secret).await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert_eq!(page.header("cache-control"), Some("no-store"));
        pages += 1;
        let mut n = 0;
        for kind in ["keys", "subjects", "sessions", "tokens"] {
            for e in page.body[kind].as_array().unwrap() {
                merged[kind].as_array_mut().unwrap().push(e.clone());
                n += 1;
            }
        }
        assert!(n <= limit, "a page holds at most `limit` entries");
        if pages == 1 {
            merged["position"] = page.body["position"].clone();
            merged["max_token_lifetime"] = page.body["max_token_lifetime"].clone();
        }
        let Some(link) = page.header("link") else {
            break;
        };
        let next = link
            .strip_prefix(&format!("<{ISSUER}/ssf/snapshot?"))
            .and_then(|l| l.strip_suffix(">; rel=\"next\""))
            .unwrap_or_else(|| panic!("{link}"));
        next.clone_into(&mut query);
        assert!(pages < 20, "paging must end");
    }
    (pages, merged)
}

async fn the_snapshot_lists_what_can_still_kill_a_token_paged(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (stream, secret) = poll_stream(&app, "svc-snap").await;
    let empty = snapshot(&app, &format!("stream_id={stream}"), &secret).await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.body["subjects"], json!([]));
    assert_eq!(
        empty.body["max_token_lifetime"], 3605,
        "tokens.max_access_ttl_secs + leeway"
    );
    assert!(empty.header("link").is_none());

    // A deactivated user, an ended login, a token revoked by jti, and an old deactivation long past.
    let gone = app.create_user("gone@example.com").await;
    let old = app.create_user("old@example.com").await;
    for u in ["s@example.com", "j@example.com"] {
        app.create_user(u).await;
    }
    app.deactivate(&gone).await;
    app.deactivate(&old).await;
    let s = app.login("s@example.com");
    let sid: Value = jsonwebtoken::dangerous::insecure_decode_claims(&s.access_token).unwrap();
    revoke(&app, s.refresh_token.as_deref().unwrap()).await;
    let j = app.login("j@example.com");
    revoke(&app, &j.access_token).await;
    {
        use diesel::prelude::*;
        use offboard::db::schema::users;
        let old = old.clone();
        let long_ago = offboard::db::now() - chrono::TimeDelta::hours(2);
        app.db()
            .write(|c| {
                diesel::update(users::table.filter(users::id.eq(&old)))
                    .set(users::generation_at.eq(long_ago))
                    .execute(c)
                    .map_err(offboard::db::DbError::from)
            })
            .unwrap();
    }

    let (pages, all) = whole_snapshot(&app, &stream, &secret, 1).await;
    assert_eq!(
        pages, 4,
        "one entry a page, and an empty last page after a full one: {all}"
    );
    let now = chrono::Utc::now().timestamp();
    let subjects = all["subjects"].as_array().unwrap();
    assert_eq!(
        subjects.len(),
        1,
        "the old deactivation's tokens have all expired: {all}"
    );
    assert_eq!(subjects[0]["sub"], gone.as_str());
    assert_eq!(subjects[0]["min_tgen"], 1);
    let until = subjects[0]["until"].as_i64().unwrap();
    assert!((now + 3600..=now + 3610).contains(&until), "{until} vs {now}");
    assert_eq!(all["sessions"][0]["sid"], sid["sid"]);
    assert_eq!(all["tokens"][0]["jti"], jti_of(&j.access_token).as_str());
    assert_eq!(all["tokens"][0]["until"], j_exp(&j.access_token) + 5);

    let (pages, big) = whole_snapshot(&app, &stream, &secret, 1000).await;
    assert_eq!(pages, 1);
    assert_eq!(
        (
            big["subjects"].clone(),
            big["sessions"].clone(),
            big["tokens"].clone()
        ),
        (
            all["subjects"].clone(),
            all["sessions"].clone(),
            all["tokens"].clone()
        )
    );

    // Only the stream's owner (or admin) reads it; bad input is a 400.
    let other = app.credential("other", &[Scope::SsfRead]);
    assert_eq!(
        snapshot(&app, &format!("stream_id={stream}"), &other)
            .await
            .status,
        404
    );
    assert_eq!(
        snapshot(&app, &format!("stream_id={stream}"), &app.token)
            .await
            .status,
        403
    );
    for bad in [
        String::new(),
        format!("stream_id={stream}&after=users:x"),
        format!("stream_id={stream}&limit=0"),
        format!("stream_id={stream}&limit=1001"),
        format!("stream_id={stream}&after=subjects:%00"),
    ] {
        let res = snapshot(&app, &bad, &secret).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
        assert_eq!(res.body["error"], "invalid_request", "{bad}");
    }
}

fn j_exp(token: &str) -> i64 {
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token).unwrap();
    claims["exp"].as_i64().unwrap()
}

/// The outbox ids of the stream's SETs about `user`.
fn outbox_ids(app: &TestApp, stream: &str, user: &str) -> Vec<i64> {
    let stream = stream.to_owned();
    // A change's SETs wait in `outbox_changes` until expanded (as a poll would first).
    offboard::fanout::pending::expand(app.db()).unwrap();
    let rows = app
        .db()
        .read(|c| offboard::db::repo::fanout::outbox_of(c, &stream).map_err(offboard::db::DbError::from))
        .unwrap();
    rows.iter()
        .filter(|r| r.user_id.as_deref() == Some(user))
        .map(|r| r.id)
        .collect()
}

async fn snapshot_then_poll_misses_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (stream, secret) = poll_stream(&app, "svc-gap").await;
    let before = app.create_user("before@example.com").await;
    let between = app.create_user("between@example.com").await;
    app.deactivate(&before).await;
    // A guard that ran before acknowledged everything queued so far.
    drain(&app, &stream, &secret).await;

    let snap = snapshot(&app, &format!("stream_id={stream}"), &secret).await;
    let position = snap.body["position"].as_i64().unwrap();
    let subjects: Vec<&str> = snap.body["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sub"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [before.as_str()],
        "the snapshot knows what the feed no longer holds"
    );
    assert!(
        outbox_ids(&app, &stream, &before)
            .iter()
            .all(|id| *id <= position)
    );

    // Revoked after the snapshot was read, before the first poll.
    app.deactivate(&between).await;
    let ids = outbox_ids(&app, &stream, &between);
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id > position),
        "{ids:?} after {position}"
    );
    let sets = drain(&app, &stream, &secret).await;
    let disabled: Vec<&Value> = sets
        .iter()
        .filter(|s| s["events"].get(ACCOUNT_DISABLED).is_some())
        .collect();
    assert_eq!(disabled.len(), 1, "{sets:?}");
    assert_eq!(disabled[0]["sub_id"]["sub"], between.as_str());
    assert_eq!(disabled[0]["events"][ACCOUNT_DISABLED]["min_tgen"], 1);
    let again = snapshot(&app, &format!("stream_id={stream}"), &secret).await;
    assert!(again.body["position"].as_i64().unwrap() > position);
}

both_backends!(
    a_jti_revocation_queues_a_set_about_that_token,
    a_service_token_revoked_by_jti_queues_a_set,
    a_key_compromise_queues_a_set_with_the_kid,
    the_snapshot_lists_what_can_still_kill_a_token_paged,
    snapshot_then_poll_misses_nothing,
);
