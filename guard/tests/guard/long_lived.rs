//! Long-lived connections and the axum adoption: `Guard::watch` resolves at every kind of revocation that kills
//! its token (and when the feed goes stale), and the axum example service (`examples/axum_service.rs`, compiled
//! in here and served on a loopback port) answers like the actix middleware and closes an open WebSocket after a
//! SCIM deactivation.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use offboard_guard::{Guard, GuardConfig, Refusal, Revoked};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::harness::{Backend, Offboard, POLL, both_backends};

#[path = "../../examples/axum_service.rs"]
#[expect(dead_code, reason = "the example's `main`; the test serves its `app`")]
mod axum_service;

/// How long a revocation may take to end a watch or close a socket in these tests: the poll interval and a
/// margin for a busy machine (a correctness bound, not a speed target).
const BOUND: Duration = Duration::from_millis(200 + 2000);

type Watch = tokio::task::JoinHandle<Refusal>;

/// A watch of `token`, spawned on Tokio's `spawn` (so the watch future is `Send`).
async fn watch(guard: &Guard, token: &str) -> Watch {
    let claims = guard.check(token).await.expect("an accepted token");
    tokio::spawn(guard.watch(&claims))
}

/// What `watch` resolved to, within `BOUND`.
async fn ended(watch: &mut Watch) -> Refusal {
    tokio::time::timeout(BOUND, watch)
        .await
        .unwrap_or_else(|_| panic!("the watch did not end within {BOUND:?}"))
        .unwrap()
}

/// Each kind of revocation ends the watch of the token it kills, with the reason `check` gives, and leaves the
/// others running; a feed that goes stale ends the watches of a fail-closed guard.
async fn a_watch_ends_at_each_revocation_and_when_the_feed_goes_stale(backend: Backend) {
    let ob = Offboard::start(backend);
    let (stream, secret) = ob.poll_stream("svc-w").await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.poll_interval = POLL;
    // The SET of a key compromise is signed by the key that replaces it: fetched at once.
    config.jwks_refresh_interval = Duration::ZERO;
    let guard = Guard::start(config).await.unwrap();
    let gone = ob.create_user("w1@example.com").await;
    ob.create_user("w2@example.com").await;
    ob.create_user("w3@example.com").await;
    let deactivated = ob.login("w1@example.com");
    let logged_out = ob.login("w2@example.com");
    let by_jti = ob.login("w2@example.com");
    let kept = ob.login("w3@example.com");
    let mut w_gen = watch(&guard, &deactivated.access_token).await;
    let mut w_sid = watch(&guard, &logged_out.access_token).await;
    let mut w_jti = watch(&guard, &by_jti.access_token).await;
    let mut w_key = watch(&guard, &kept.access_token).await;
    tokio::time::sleep(POLL * 2).await;
    assert!(!w_gen.is_finished(), "nothing revoked yet");

    ob.deactivate(&gone).await;
    assert_eq!(ended(&mut w_gen).await, Refusal::Revoked(Revoked::Generation));
    let (status, _) = ob
        .form(
            "/oauth2/revoke",
            &[("token", logged_out.refresh_token.as_deref().unwrap())],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ended(&mut w_sid).await, Refusal::Revoked(Revoked::Session));
    let (status, _) = ob
        .form("/oauth2/revoke", &[("token", &by_jti.access_token)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(ended(&mut w_jti).await, Refusal::Revoked(Revoked::Token));
    assert!(
        !w_key.is_finished(),
        "another user's token is untouched: {:?}",
        guard.status()
    );
    let kid = jsonwebtoken::decode_header(&kept.access_token)
        .unwrap()
        .kid
        .unwrap();
    let kek = offboard::keys::Kek::from_base64(crate::harness::TEST_KEK).unwrap();
    offboard::lifecycle::compromise_key(&ob.state.db, &kek, &ob.state.config, &kid, "test").unwrap();
    assert_eq!(ended(&mut w_key).await, Refusal::Revoked(Revoked::Key));

    // A fail-closed guard with a short bound (its own stream): offboard stops answering, the watch ends Stale.
    let (stream, secret) = ob.poll_stream("svc-w2").await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.poll_interval = POLL;
    config.freshness_bound = Some(Duration::from_millis(800));
    let strict = Guard::start(config.clone()).await.unwrap();
    let fresh = ob.login("w3@example.com").access_token;
    let mut w_stale = watch(&strict, &fresh).await;
    ob.stop().await;
    let why = tokio::time::timeout(config.freshness() + BOUND, &mut w_stale)
        .await
        .expect("the watch ends once the feed is stale")
        .unwrap();
    assert!(matches!(why, Refusal::Stale(_)), "{why:?}");
    assert!(
        matches!(strict.check(&fresh).await, Err(Refusal::Stale(_))),
        "the watch ended when check refuses"
    );
}

/// Opens a WebSocket to the example service with `token` (or none).
async fn open(
    base: &str,
    token: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tungstenite::Error,
> {
    let mut req = format!("ws://{base}/ws").into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

/// The axum example service against a real offboard: `GET /hello` answers the user, 401 with the Bearer
/// challenge without a token or with a bad one; a WebSocket opened with a user's token echoes until a SCIM
/// deactivation of that user, then is closed (policy violation) within the poll interval + margin, while another
/// user's socket stays open.
async fn the_axum_example_closes_a_websocket_on_deactivation(backend: Backend) {
    let ob = Offboard::start(backend);
    let (guard, _) = ob.guard("svc-ws").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        axum::serve(listener, axum_service::app(guard)).await.unwrap();
    });
    let id = ob.create_user("ws@example.com").await;
    ob.create_user("stays@example.com").await;
    let token = ob.login("ws@example.com").access_token;
    let other = ob.login("stays@example.com").access_token;

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |auth: Option<String>| {
        let mut req = http.get(format!("http://{base}/hello"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send()
    };
    let res = get(Some(format!("Bearer {token}"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "hello ws@example.com\n");
    let res = get(None).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let res = get(Some("Bearer not.a.token".into())).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    match open(&base, None).await {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("a WebSocket without a token: {:?}", other.map(|_| ())),
    }

    let mut ws = open(&base, Some(&token)).await.unwrap();
    let mut kept = open(&base, Some(&other)).await.unwrap();
    for socket in [&mut ws, &mut kept] {
        socket.send(Message::text("ping")).await.unwrap();
        let echo = socket.next().await.unwrap().unwrap();
        assert_eq!(echo, Message::text("ping"));
    }

    ob.deactivate(&id).await;
    let deactivated = Instant::now();
    let first = tokio::time::timeout(BOUND, ws.next())
        .await
        .unwrap_or_else(|_| panic!("the socket is still open {BOUND:?} after the deactivation"));
    let took = deactivated.elapsed();
    match first {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Policy);
            assert_eq!(frame.reason.as_str(), "the token is revoked");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    eprintln!("the WebSocket was closed {took:?} after the SCIM deactivation answered");
    let after = tokio::time::timeout(BOUND, ws.next()).await.unwrap();
    assert!(
        !matches!(after, Some(Ok(Message::Text(_)))),
        "nothing more after the close: {after:?}"
    );

    kept.send(Message::text("still here")).await.unwrap();
    let echo = tokio::time::timeout(BOUND, kept.next()).await.unwrap();
    assert_eq!(echo.unwrap().unwrap(), Message::text("still here"));
    let res = get(Some(format!("Bearer {token}"))).await.unwrap();
    assert_eq!(res.status(), 401, "the deactivated user's requests too");
    server.abort();
}

both_backends!(
    a_watch_ends_at_each_revocation_and_when_the_feed_goes_stale,
    the_axum_example_closes_a_websocket_on_deactivation,
);
