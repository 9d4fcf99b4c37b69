//! offboard-guard against a real offboard started in-process, on SQLite and PostgreSQL: the three failures of a
//! hand-written verifier (a session ended by refresh-token reuse or RFC 7009 revocation, a token revoked by
//! `jti`, a deactivated user's token right after the service restarts) are refused; a deactivation is refused
//! within the poll interval + margin; a stale feed fails closed (or asks introspection); an unknown `kid` costs
//! one JWKS fetch per refresh interval.
#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure with its message"
)]

mod harness;
mod long_lived;

use std::time::Duration;

use offboard::credentials::Scope;
use offboard_guard::actix::receive_push;
use offboard_guard::{Delivery, Guard, GuardConfig, Refusal, Revoked, WhenStale};
use serde_json::{Value, json};

use harness::{Backend, Offboard, POLL, both_backends, eventually};

/// How long past the poll interval a revocation may take to reach a guard in these tests (a correctness bound on
/// a busy machine, not a speed target: those are in benches).
const MARGIN: Duration = Duration::from_secs(5);

fn claims_of(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode_claims(token).unwrap()
}

async fn refused(guard: &Guard, token: &str) -> Option<Refusal> {
    guard.check(token).await.err()
}

/// (a) The access tokens of a login ended by refresh-token reuse, and of one revoked with RFC 7009, are refused;
/// the user's other login is not.
async fn a_session_ended_by_reuse_or_revocation_is_refused(backend: Backend) {
    let ob = Offboard::start(backend);
    let (guard, _) = ob.guard("svc-a").await;
    ob.create_user("a@example.com").await;
    let reused = ob.login("a@example.com");
    let revoked = ob.login("a@example.com");
    let kept = ob.login("a@example.com");
    for t in [&reused, &revoked, &kept] {
        guard.check(&t.access_token).await.unwrap();
    }
    // Rotate once, then present the spent refresh token again: reuse ends the whole login.
    let spent = reused.refresh_token.clone().unwrap();
    let (status, rotated) = ob
        .form(
            "/oauth2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &spent)],
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let rotated_access = rotated["access_token"].as_str().unwrap().to_owned();
    guard.check(&rotated_access).await.unwrap();
    let (status, _) = ob
        .form(
            "/oauth2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &spent)],
        )
        .await;
    assert_eq!(status, 400, "reuse");
    let (status, _) = ob
        .form(
            "/oauth2/revoke",
            &[("token", revoked.refresh_token.as_deref().unwrap())],
        )
        .await;
    assert_eq!(status, 200);

    eventually(POLL + MARGIN, || async {
        refused(&guard, &rotated_access).await.is_some()
            && refused(&guard, &revoked.access_token).await.is_some()
    })
    .await;
    for token in [&reused.access_token, &rotated_access, &revoked.access_token] {
        assert_eq!(
            refused(&guard, token).await,
            Some(Refusal::Revoked(Revoked::Session))
        );
    }
    guard
        .check(&kept.access_token)
        .await
        .expect("another login of the user is untouched");
}

/// (b) A token revoked by its `jti` is refused; another token of the same login is not.
async fn a_token_revoked_by_jti_is_refused(backend: Backend) {
    let ob = Offboard::start(backend);
    let (guard, _) = ob.guard("svc-b").await;
    ob.create_user("b@example.com").await;
    let login = ob.login("b@example.com");
    let (status, next) = ob
        .form(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", login.refresh_token.as_deref().unwrap()),
            ],
        )
        .await;
    assert_eq!(status, 200, "{next}");
    let sibling = next["access_token"].as_str().unwrap().to_owned();
    guard.check(&login.access_token).await.unwrap();
    let (status, _) = ob.form("/oauth2/revoke", &[("token", &login.access_token)]).await;
    assert_eq!(status, 200);
    eventually(POLL + MARGIN, || async {
        refused(&guard, &login.access_token).await.is_some()
    })
    .await;
    assert_eq!(
        refused(&guard, &login.access_token).await,
        Some(Refusal::Revoked(Revoked::Token))
    );
    let sibling_claims = guard
        .check(&sibling)
        .await
        .expect("the login's other token stays valid");
    assert_eq!(
        sibling_claims.sid,
        claims_of(&login.access_token)["sid"].as_str().map(str::to_owned)
    );
}

/// A service token (`client_credentials`: no user, no `tgen`) is accepted until it is revoked by its `jti`.
async fn a_service_token_is_accepted_until_revoked(backend: Backend) {
    let ob = Offboard::start_with(backend, |c| {
        c.tokens
            .client_credentials
            .insert("deploy-bot".into(), vec!["repo:read".into()]);
    });
    let (guard, _) = ob.guard("svc-s").await;
    let bot = ob.credential("deploy-bot", &[Scope::Introspect]);
    let (status, body) = ob
        .form_as(
            Some(("deploy-bot", &bot)),
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let claims = guard.check(&token).await.unwrap();
    assert_eq!((claims.sub.as_str(), claims.tgen), ("deploy-bot", None));
    let (status, _) = ob
        .form_as(Some(("deploy-bot", &bot)), "/oauth2/revoke", &[("token", &token)])
        .await;
    assert_eq!(status, 200);
    eventually(POLL + MARGIN, || async {
        refused(&guard, &token).await.is_some()
    })
    .await;
    assert_eq!(
        refused(&guard, &token).await,
        Some(Refusal::Revoked(Revoked::Token))
    );
}

/// (c) After the guard restarts, a user deactivated before (whose SETs the old guard acknowledged, so the feed
/// holds nothing about them) is refused from the very first check, by the snapshot.
async fn after_a_restart_a_deactivated_users_token_is_refused_at_once(backend: Backend) {
    let ob = Offboard::start(backend);
    let (first, mut config) = ob.guard("svc-c").await;
    let gone = ob.create_user("gone@example.com").await;
    let also_gone = ob.create_user("also-gone@example.com").await;
    ob.create_user("stays@example.com").await;
    let token = ob.login("gone@example.com").access_token;
    let also_token = ob.login("also-gone@example.com").access_token;
    let other = ob.login("stays@example.com").access_token;
    let revoked = ob.login("stays@example.com").access_token;
    first.check(&token).await.unwrap();
    ob.deactivate(&gone).await;
    ob.deactivate(&also_gone).await;
    let (status, _) = ob.form("/oauth2/revoke", &[("token", &revoked)]).await;
    assert_eq!(status, 200);
    eventually(POLL + MARGIN, || async {
        refused(&first, &token).await.is_some() && refused(&first, &revoked).await.is_some()
    })
    .await;
    // The old guard acknowledges what it applied with its next poll; then it goes away.
    eventually(POLL + MARGIN, || async { ob.pending(&config.stream_id) == 0 }).await;
    drop(first);

    // One entry a snapshot page: the guard follows every `Link: rel="next"` before it starts.
    config.snapshot_page_size = 1;
    let restarted = Guard::start(config.clone()).await.unwrap();
    for t in [&token, &also_token] {
        assert_eq!(
            refused(&restarted, t).await,
            Some(Refusal::Revoked(Revoked::Generation)),
            "refused before anything came from the feed"
        );
    }
    assert_eq!(
        refused(&restarted, &revoked).await,
        Some(Refusal::Revoked(Revoked::Token))
    );
    let (subjects, sessions, tokens, _) = restarted.status().entries;
    assert_eq!((subjects, tokens), (2, 1));
    assert!(sessions >= 2, "the deactivated users' logins: {sessions}");
    assert_eq!(restarted.status().sets_applied, 0, "{:?}", restarted.status());
    let claims = restarted.check(&other).await.unwrap();
    assert_eq!(claims.preferred_username.as_deref(), Some("stays@example.com"));
    assert!(restarted.status().snapshot_position > 0);
}

/// The state file: a guard restarted with it reads no snapshot and drains what the stream queued meanwhile (a
/// deactivation while no guard ran); restarted again while offboard is down, it is still complete (the
/// deactivated users are refused as revoked, by the file) and, once the freshness bound has passed since the
/// last confirmation the file records, says its feed is stale (every other token refused, the sidecar answering
/// 503 and not ready); an unusable file (garbage, too old) is never loaded, so offboard being
/// down the guard does not start at all.
async fn a_guard_restarts_from_its_state_file_even_while_offboard_is_down(backend: Backend) {
    let ob = Offboard::start(backend);
    let (stream, secret) = ob.poll_stream("svc-p").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard-state.json");
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.poll_interval = POLL;
    config.state_file = Some(file.clone());
    config.freshness_bound = Some(Duration::from_secs(1));
    let a = ob.create_user("pa@example.com").await;
    let b = ob.create_user("pb@example.com").await;
    ob.create_user("pc@example.com").await;
    let (ta, tb, tc) = (
        ob.login("pa@example.com").access_token,
        ob.login("pb@example.com").access_token,
        ob.login("pc@example.com").access_token,
    );
    let first = Guard::start(config.clone()).await.unwrap();
    assert!(!first.status().restored);
    assert!(file.exists(), "written at start");
    ob.deactivate(&a).await;
    eventually(POLL + MARGIN, || async { refused(&first, &ta).await.is_some() }).await;
    eventually(POLL + MARGIN, || async { ob.pending(&stream) == 0 }).await;
    drop(first);

    // While no guard runs, b is deactivated: only the stream knows.
    ob.deactivate(&b).await;
    let second = Guard::start(config.clone()).await.unwrap();
    let status = second.status();
    assert!(status.restored, "{status:?}");
    assert!(
        status.sets_applied >= 1,
        "b's SETs, drained before start returned: {status:?}"
    );
    assert!(status.confirmed_ago < config.freshness(), "{status:?}");
    for t in [&ta, &tb] {
        assert_eq!(
            refused(&second, t).await,
            Some(Refusal::Revoked(Revoked::Generation))
        );
    }
    second.check(&tc).await.unwrap();
    eventually(POLL + MARGIN, || async { ob.pending(&stream) == 0 }).await;
    drop(second);

    // offboard down: the file alone.
    ob.stop().await;
    let third = Guard::start(config.clone()).await.unwrap();
    let status = third.status();
    assert!(status.restored, "{status:?}");
    // The file says when the feed was last confirmed: within the bound of that, tokens pass as they would have
    // in the guard that wrote it; past it, the guard is stale.
    assert!(status.confirmed_ago < Duration::from_secs(60), "{status:?}");
    let bound = config.freshness();
    eventually(bound + MARGIN, || async { third.status().confirmed_ago > bound }).await;
    for t in [&ta, &tb] {
        assert_eq!(
            refused(&third, t).await,
            Some(Refusal::Revoked(Revoked::Generation)),
            "complete: refused as revoked, not only as stale"
        );
    }
    assert!(
        matches!(refused(&third, &tc).await, Some(Refusal::Stale(_))),
        "fail closed"
    );
    drop(third);

    // The sidecar with the same file: 401 for the revoked, 503 for the rest, not ready.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = offboard_guard::sidecar::serve(config.clone(), listener).unwrap();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = |path: &'static str, token: Option<String>| {
        let mut req = http.get(format!("http://{addr}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    eventually(MARGIN, || async {
        status("/check", Some(ta.clone())).await == 401
    })
    .await;
    assert_eq!(status("/check", Some(tc.clone())).await, 503);
    assert_eq!(status("/readyz", None).await, 503);
    handle.stop(false).await;

    // Unusable files are not loaded: without offboard there is then nothing to start from.
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    assert!(Guard::start(config.clone()).await.is_err(), "a torn file");
    let mut old: Value = serde_json::from_slice(&good).unwrap();
    old["written_at"] =
        json!(old["written_at"].as_i64().unwrap() - old["max_token_lifetime"].as_i64().unwrap() - 1);
    std::fs::write(&file, old.to_string()).unwrap();
    assert!(
        Guard::start(config.clone()).await.is_err(),
        "older than the token lifetime"
    );
    std::fs::write(&file, &good).unwrap();
    let mut other = config.clone();
    other.audience = "another-service".into();
    assert!(Guard::start(other).await.is_err(), "another audience's file");
    assert!(Guard::start(config).await.is_ok(), "the good file again");
}

/// A SCIM deactivation reaches a running guard within the poll interval + margin.
async fn a_deactivation_is_refused_within_the_poll_interval(backend: Backend) {
    let ob = Offboard::start(backend);
    let (guard, _) = ob.guard("svc-d").await;
    let id = ob.create_user("d@example.com").await;
    let token = ob.login("d@example.com").access_token;
    let claims = guard.check(&token).await.unwrap();
    assert_eq!(claims.sub, id);
    assert_eq!(claims.tgen, Some(0));
    ob.deactivate(&id).await;
    eventually(POLL + MARGIN, || async {
        refused(&guard, &token).await.is_some()
    })
    .await;
    assert_eq!(
        refused(&guard, &token).await,
        Some(Refusal::Revoked(Revoked::Generation))
    );
}

/// A feed that cannot be confirmed (the stream paused, offboard gone) fails closed past the freshness bound, and
/// recovers when the feed does; with `WhenStale::Introspect` each token is asked about instead.
async fn a_stale_feed_fails_closed_or_introspects(backend: Backend) {
    let ob = Offboard::start(backend);
    let (stream, secret) = ob.poll_stream("svc-e").await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.poll_interval = POLL;
    config.freshness_bound = Some(Duration::from_millis(800));
    let guard = Guard::start(config.clone()).await.unwrap();
    let rs = ob.credential("rs", &[Scope::Introspect]);
    // One stream per guard: a poll acknowledges for the whole stream.
    let (stream2, secret2) = ob.poll_stream("svc-e2").await;
    let mut introspecting = GuardConfig::new(&ob.issuer, &ob.issuer, &stream2, &secret2);
    introspecting.poll_interval = POLL;
    introspecting.freshness_bound = config.freshness_bound;
    introspecting.when_stale = WhenStale::Introspect {
        client_id: "rs".into(),
        secret: rs,
    };
    let fallback = Guard::start(introspecting).await.unwrap();
    let id = ob.create_user("e@example.com").await;
    let token = ob.login("e@example.com").access_token;
    guard.check(&token).await.unwrap();

    let pause = |stream: &str, secret: &str, status: &'static str| {
        let (ob, stream, secret) = (&ob, stream.to_owned(), secret.to_owned());
        async move {
            let (code, body) = ob
                .call(
                    reqwest::Method::POST,
                    "/ssf/status",
                    &secret,
                    Some(json!({"stream_id": stream, "status": status})),
                )
                .await;
            assert_eq!(code, 200, "{body}");
        }
    };
    pause(&stream, &secret, "paused").await;
    pause(&stream2, &secret2, "paused").await;
    eventually(Duration::from_secs(10), || async {
        matches!(refused(&guard, &token).await, Some(Refusal::Stale(_)))
    })
    .await;
    let bound = config.freshness();
    eventually(Duration::from_secs(10), || async {
        fallback.status().confirmed_ago > bound
    })
    .await;
    // The paused stream holds this deactivation's SETs: introspection still sees it.
    fallback.check(&token).await.expect("introspection says active");
    ob.deactivate(&id).await;
    assert!(matches!(
        refused(&fallback, &token).await,
        Some(Refusal::Introspection(_))
    ));
    pause(&stream, &secret, "enabled").await;
    eventually(POLL + MARGIN, || async {
        refused(&guard, &token).await == Some(Refusal::Revoked(Revoked::Generation))
    })
    .await;

    // offboard unreachable: stale again.
    let live = ob.create_user("live@example.com").await;
    let _ = live;
    let live_token = ob.login("live@example.com").access_token;
    guard.check(&live_token).await.unwrap();
    ob.stop().await;
    eventually(Duration::from_secs(10), || async {
        matches!(refused(&guard, &live_token).await, Some(Refusal::Stale(_)))
    })
    .await;
}

/// A token signed by a key the JWKS lacks makes the guard fetch the JWKS once per refresh interval, however many
/// such tokens arrive; a key offboard publishes later is found by that fetch.
async fn an_unknown_kid_costs_one_rate_limited_jwks_fetch(backend: Backend) {
    let ob = Offboard::start(backend);
    let (stream, secret) = ob.poll_stream("svc-f").await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.poll_interval = POLL;
    config.jwks_refresh_interval = Duration::from_secs(2);
    let guard = Guard::start(config).await.unwrap();
    assert_eq!(guard.status().jwks_fetches, 1);
    ob.create_user("f@example.com").await;
    let token = ob.login("f@example.com").access_token;

    // A token like offboard's, signed by a key offboard never had.
    let mut claims = claims_of(&token);
    claims["jti"] = json!("forged");
    let pem = offboard::keys::generate_rsa_pem(1).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("stranger".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();

    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..5 {
        assert_eq!(refused(&guard, &forged).await, Some(Refusal::UnknownKey));
    }
    assert_eq!(
        guard.status().jwks_fetches,
        2,
        "one fetch for five unknown-kid tokens"
    );

    // Two compromises of the active key: the key that signs now was published after the guard's last fetch.
    let config = (*ob.state.config).clone();
    let kek = offboard::keys::Kek::from_base64(harness::TEST_KEK).unwrap();
    for _ in 0..2 {
        let kid = jsonwebtoken::decode_header(&ob.login("f@example.com").access_token)
            .unwrap()
            .kid
            .unwrap();
        offboard::lifecycle::compromise_key(&ob.state.db, &kek, &config, &kid, "test").unwrap();
    }
    let fresh = ob.login("f@example.com").access_token;
    assert_eq!(
        refused(&guard, &fresh).await,
        Some(Refusal::UnknownKey),
        "within the refresh interval: not fetched again"
    );
    assert_eq!(guard.status().jwks_fetches, 2);
    eventually(Duration::from_secs(10), || async {
        guard.check(&fresh).await.is_ok()
    })
    .await;
    // The first compromised key, learned from the feed (its SET may wait for offboard to sign with a key the
    // guard knows).
    eventually(POLL + MARGIN, || async {
        refused(&guard, &token).await == Some(Refusal::Revoked(Revoked::Key))
    })
    .await;
    assert_eq!(
        guard.status().entries.3,
        2,
        "both compromised kids: {:?}",
        guard.status()
    );
}

/// The actix adoption of the example service: the middleware lets an accepted token through to a handler that
/// reads its claims, answers 401 with a Bearer challenge without one, and refuses the token once the user is
/// deactivated.
async fn the_actix_middleware_protects_a_service(backend: Backend) {
    use actix_web::{App, middleware::from_fn, test, web};
    use offboard_guard::actix::{Verified, require};

    async fn hello(user: Verified) -> String {
        format!(
            "hello {}",
            user.preferred_username.as_deref().unwrap_or(&user.sub)
        )
    }

    let ob = Offboard::start(backend);
    let (guard, _) = ob.guard("svc-g").await;
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(guard.clone()))
            .wrap(from_fn(require))
            .route("/hello", web::get().to(hello)),
    )
    .await;
    let id = ob.create_user("g@example.com").await;
    let token = ob.login("g@example.com").access_token;
    let get = |auth: Option<String>| {
        let mut req = test::TestRequest::get().uri("/hello");
        if let Some(a) = auth {
            req = req.insert_header(("Authorization", a));
        }
        req.to_request()
    };
    let res = test::call_service(&app, get(Some(format!("Bearer {token}")))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, "hello g@example.com");
    let res = test::call_service(&app, get(None)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers().get("www-authenticate").unwrap(), "Bearer");
    let res = test::call_service(&app, get(Some("Bearer not.a.token".into()))).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers().get("www-authenticate").unwrap(),
        "Bearer error=\"invalid_token\""
    );
    ob.deactivate(&id).await;
    eventually(POLL + MARGIN, || async {
        refused(&guard, &token).await.is_some()
    })
    .await;
    let res = test::call_service(&app, get(Some(format!("Bearer {token}")))).await;
    assert_eq!(res.status(), 401);
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body["error"], "invalid_token");
}

/// The forward-auth sidecar (`offboard_guard::sidecar::serve`, what the `offboard-guard` binary runs) on a loopback
/// port: ready once started; a user's token passes with the identity headers, no token gets the challenge, and a
/// SCIM deactivation is refused within the poll interval + margin.
async fn the_sidecar_answers_forward_auth(backend: Backend) {
    let ob = Offboard::start(backend);
    let (stream, secret) = ob.poll_stream("sidecar").await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.poll_interval = POLL;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = offboard_guard::sidecar::serve(config, listener).unwrap();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = |path: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/healthz").await, 200);
    eventually(MARGIN, || async { status("/readyz").await == 200 }).await;

    let id = ob.create_user("side@example.com").await;
    let token = ob.login("side@example.com").access_token;
    ob.create_user("kept@example.com").await;
    let kept = ob.login("kept@example.com").access_token;
    // Any method, and any path below /check (Envoy appends the original path).
    let check = |method: reqwest::Method, path: &'static str, auth: Option<String>| {
        let mut req = http.request(method, format!("{base}{path}"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send()
    };
    for (method, path) in [
        (reqwest::Method::GET, "/check"),
        (reqwest::Method::POST, "/check"),
        (reqwest::Method::GET, "/check/api/orders?x=1"),
    ] {
        let res = check(method, path, Some(format!("Bearer {token}")))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["x-auth-subject"], id.as_str());
        assert_eq!(res.headers()["x-auth-user"], "side@example.com");
        assert!(res.headers().contains_key("x-auth-groups"));
    }
    let res = check(reqwest::Method::GET, "/check", None).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert!(!res.headers().contains_key("x-auth-subject"));
    let res = check(reqwest::Method::GET, "/check", Some("Bearer not.a.token".into()))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );

    ob.deactivate(&id).await;
    let took = eventually(POLL + MARGIN, || async {
        check(reqwest::Method::GET, "/check", Some(format!("Bearer {token}")))
            .await
            .unwrap()
            .status()
            == 401
    })
    .await;
    eprintln!("sidecar refused the deactivated user's token after {took:?}");
    let res = check(reqwest::Method::GET, "/check", Some(format!("Bearer {token}")))
        .await
        .unwrap();
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert!(!res.headers().contains_key("x-auth-subject"));

    // The stream paused: the feed is no longer confirmed, and past the freshness bound the sidecar fails closed
    // (503) even for a valid token, and is not ready.
    let (code, body) = ob
        .call(
            reqwest::Method::POST,
            "/ssf/status",
            &secret,
            Some(json!({"stream_id": stream, "status": "paused"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    eventually(Duration::from_secs(20), || async {
        check(reqwest::Method::GET, "/check", Some(format!("Bearer {kept}")))
            .await
            .unwrap()
            .status()
            == 503
    })
    .await;
    assert_eq!(status("/readyz").await, 503);
    assert_eq!(status("/healthz").await, 200);
    handle.stop(false).await;
}

/// The nginx configuration of the README's "Protect a service", with the ports and the temp directory filled in.
fn nginx_conf(dir: &std::path::Path, listen: u16, sidecar: &str, upstream: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{listen};

        location / {{
            auth_request /_offboard_check;
            auth_request_set $auth_subject $upstream_http_x_auth_subject;
            auth_request_set $auth_user $upstream_http_x_auth_user;
            auth_request_set $auth_groups $upstream_http_x_auth_groups;
            proxy_set_header X-Auth-Subject $auth_subject;
            proxy_set_header X-Auth-User $auth_user;
            proxy_set_header X-Auth-Groups $auth_groups;
            proxy_pass http://{upstream};
        }}

        location = /_offboard_check {{
            internal;
            proxy_pass http://{sidecar}/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
    }}
}}
"#
    )
}

/// nginx, run in the foreground; killed when dropped.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> Option<std::path::PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// The protected service: echoes the identity nginx passed on (`-` for a header it did not get).
async fn echo(req: actix_web::HttpRequest) -> String {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    format!(
        "{} {} {}",
        h("x-auth-subject"),
        h("x-auth-user"),
        h("x-auth-groups")
    )
}

/// Starts [`echo`] on a loopback port: (its address, its handle).
fn start_upstream() -> (String, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server =
        actix_web::HttpServer::new(|| actix_web::App::new().default_service(actix_web::web::to(echo)))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (addr, handle)
}

/// nginx `auth_request` in front of a small upstream, asking the sidecar: a user's request passes with the
/// identity headers (a client's own `X-Auth-*` replaced), no token gets 401 with the challenge, and after a SCIM
/// deactivation the same request is refused (nginx absent: skipped, unless `CI=true`, where it fails).
async fn nginx_auth_request_asks_the_sidecar(backend: Backend) {
    let Some(nginx) = nginx_binary() else {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "nginx is not installed and CI=true"
        );
        eprintln!("SKIPPED nginx_auth_request_asks_the_sidecar: nginx is not installed");
        return;
    };
    let ob = Offboard::start(backend);
    let (stream, secret) = ob.poll_stream("nginx").await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.poll_interval = POLL;
    let sidecar_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sidecar = sidecar_listener.local_addr().unwrap().to_string();
    let server = offboard_guard::sidecar::serve(config, sidecar_listener).unwrap();
    let sidecar_handle = server.handle();
    actix_web::rt::spawn(server);

    let (upstream, upstream_handle) = start_upstream();

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir.path(), port, &sidecar, &upstream)).unwrap();
    let _nginx = Nginx(
        std::process::Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg("stderr")
            .spawn()
            .unwrap(),
    );

    let id = ob.create_user("ngx@example.com").await;
    let token = ob.login("ngx@example.com").access_token;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |auth: Option<&str>| {
        let mut req = http
            .get(format!("http://127.0.0.1:{port}/orders"))
            .header("X-Auth-Subject", "forged");
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        async move {
            let res = req.send().await.ok()?;
            let status = res.status().as_u16();
            let challenge = res
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Some((status, challenge, res.text().await.ok()?))
        }
    };
    // nginx and the sidecar are up once the token passes.
    eventually(MARGIN, || async {
        get(Some(&token)).await.is_some_and(|(s, _, _)| s == 200)
    })
    .await;
    let (_, _, body) = get(Some(&token)).await.unwrap();
    assert_eq!(
        body,
        format!("{id} ngx@example.com -"),
        "groups empty: not passed"
    );
    let (status, challenge, _) = get(None).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer"));

    ob.deactivate(&id).await;
    eventually(POLL + MARGIN, || async {
        get(Some(&token)).await.is_some_and(|(s, _, _)| s == 401)
    })
    .await;
    let (_, challenge, body) = get(Some(&token)).await.unwrap();
    assert_eq!(challenge.as_deref(), Some("Bearer error=\"invalid_token\""));
    assert!(!body.contains(&id), "the upstream was not reached");
    upstream_handle.stop(false).await;
    sidecar_handle.stop(false).await;
}

/// Serves `guard`'s push endpoint (`/ssf/push`) on `listener`.
fn push_receiver(guard: &Guard, listener: std::net::TcpListener) -> actix_web::dev::ServerHandle {
    let guard = guard.clone();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(actix_web::web::Data::new(guard.clone()))
            .route("/ssf/push", actix_web::web::post().to(receive_push))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    handle
}

/// A guard receiving pushes (RFC 8935) on loopback: offboard's fan-out worker delivers a deactivation's SETs to
/// the guard's `/ssf/push`, which verifies and applies them, so the token is refused; a quiet stream stays
/// confirmed through the delivery-progress heartbeat; bad pushes get RFC 8935 errors.
async fn a_push_stream_delivers_revocations_to_the_guard(backend: Backend) {
    let ob = Offboard::start(backend);
    let _worker = ob.fanout();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!(
        "http://127.0.0.1:{}/ssf/push",
        listener.local_addr().unwrap().port()
    );
    let (stream, secret) = ob.push_stream("svc-p", &endpoint, "Bearer push-secret").await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.delivery = Delivery::Push {
        authorization: Some("Bearer push-secret".into()),
    };
    config.poll_interval = POLL;
    config.freshness_bound = Some(Duration::from_secs(1));
    let guard = Guard::start(config).await.unwrap();
    let handle = push_receiver(&guard, listener);

    let id = ob.create_user("p@example.com").await;
    let token = ob.login("p@example.com").access_token;
    guard.check(&token).await.unwrap();
    // Nothing happens for longer than the freshness bound: the heartbeat keeps the quiet stream confirmed.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    guard
        .check(&token)
        .await
        .expect("a quiet push stream stays fresh");
    ob.deactivate(&id).await;
    let took = eventually(MARGIN, || async { refused(&guard, &token).await.is_some() }).await;
    assert_eq!(
        refused(&guard, &token).await,
        Some(Refusal::Revoked(Revoked::Generation)),
        "refused after {took:?}"
    );
    assert!(guard.status().sets_applied >= 1);

    // Bad pushes: RFC 8935 errors, nothing applied.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let push = |auth: Option<&'static str>, ctype: &'static str, body: &'static str| {
        let (http, endpoint) = (http.clone(), endpoint.clone());
        async move {
            let mut req = http.post(&endpoint).header("Content-Type", ctype).body(body);
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = push(None, "application/secevent+jwt", "x.y.z").await;
    assert_eq!(
        (status, &body["err"]),
        (401, &json!("authentication_failed")),
        "{body}"
    );
    let (status, body) = push(Some("Bearer wrong"), "application/secevent+jwt", "x.y.z").await;
    assert_eq!(
        (status, &body["err"]),
        (401, &json!("authentication_failed")),
        "{body}"
    );
    let (status, body) = push(Some("Bearer push-secret"), "application/json", "x.y.z").await;
    assert_eq!((status, &body["err"]), (400, &json!("invalid_request")), "{body}");
    let (status, body) = push(
        Some("Bearer push-secret"),
        "application/secevent+jwt",
        "not a jwt",
    )
    .await;
    assert_eq!((status, &body["err"]), (400, &json!("invalid_request")), "{body}");
    // An access token is signed by offboard too, but it is no SET.
    let other = ob.create_user("p2@example.com").await;
    let _ = other;
    let at = ob.login("p2@example.com").access_token;
    let res = http
        .post(&endpoint)
        .header("Content-Type", "application/secevent+jwt")
        .header("Authorization", "Bearer push-secret")
        .body(at.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    guard.check(&at).await.expect("a refused push changes nothing");

    // The receiver goes away: pushes fail, the heartbeat sees them undelivered, the guard fails closed.
    handle.stop(false).await;
    let id2 = ob.create_user("p3@example.com").await;
    let t2 = ob.login("p3@example.com").access_token;
    guard.check(&t2).await.unwrap();
    ob.deactivate(&id2).await;
    eventually(Duration::from_secs(10), || async {
        matches!(refused(&guard, &t2).await, Some(Refusal::Stale(_)))
    })
    .await;
    assert!(
        guard.check(&at).await.is_err(),
        "every token is refused while the push feed is not confirmed"
    );
}

/// A guard in push mode refuses a poll stream (and the reverse), and a poll guard refuses pushes.
async fn push_and_poll_streams_are_not_mixed(backend: Backend) {
    let ob = Offboard::start(backend);
    let (poll_stream, secret) = ob.poll_stream("svc-q").await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &poll_stream, &secret);
    config.delivery = Delivery::Push { authorization: None };
    assert!(matches!(
        Guard::start(config).await,
        Err(offboard_guard::GuardError::Config(_))
    ));
    let (push_stream, secret) = ob
        .push_stream("svc-r", "http://127.0.0.1:9/ssf/push", "Bearer x")
        .await;
    let config = GuardConfig::new(&ob.issuer, &ob.issuer, &push_stream, &secret);
    assert!(matches!(
        Guard::start(config).await,
        Err(offboard_guard::GuardError::Config(_))
    ));
    let (guard, _) = ob.guard("svc-s").await;
    let e = guard
        .receive(Some("application/secevent+jwt"), None, b"x.y.z")
        .await
        .unwrap_err();
    assert_eq!((e.status, e.err), (403, "access_denied"));
}

/// A pushed SET the guard refuses for good is dead-lettered by offboard, never applied: the heartbeat sees the
/// dead-letter count rise and the guard reads the snapshot again, which holds the revocation. (Here every SET names
/// the user by email, which a guard cannot map to a user id.)
async fn a_dead_lettered_push_makes_the_guard_read_the_snapshot_again(backend: Backend) {
    let ob = Offboard::start_with(backend, |c| {
        c.fanout.subject_format = offboard::config::SubjectFormat::Email;
    });
    let _worker = ob.fanout();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!(
        "http://127.0.0.1:{}/ssf/push",
        listener.local_addr().unwrap().port()
    );
    let (stream, secret) = ob.push_stream("svc-dl", &endpoint, "Bearer dl").await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.delivery = Delivery::Push {
        authorization: Some("Bearer dl".into()),
    };
    config.poll_interval = POLL;
    config.freshness_bound = Some(Duration::from_secs(1));
    let guard = Guard::start(config).await.unwrap();
    push_receiver(&guard, listener);
    let id = ob.create_user("dl@example.com").await;
    let token = ob.login("dl@example.com").access_token;
    let stays = ob.create_user("stays-dl@example.com").await;
    let _ = stays;
    let other = ob.login("stays-dl@example.com").access_token;
    guard.check(&token).await.unwrap();
    ob.deactivate(&id).await;
    eventually(MARGIN, || async {
        refused(&guard, &token).await == Some(Refusal::Revoked(Revoked::Generation))
    })
    .await;
    assert_eq!(guard.status().sets_applied, 0, "no pushed SET was applied");
    let (_, status) = ob
        .call(
            reqwest::Method::GET,
            &format!("/ssf/status?stream_id={stream}"),
            &secret,
            None,
        )
        .await;
    assert!(status["dead_letters"].as_i64().unwrap() >= 1, "{status}");
    // Confirmed again once the snapshot is read: other users' tokens pass past the bound.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    guard.check(&other).await.expect("fresh again after the snapshot");
}

/// The sidecar in push mode: offboard pushes to its `/ssf/push`, and `/check` refuses a deactivated user's token.
async fn the_sidecar_receives_pushes(backend: Backend) {
    let ob = Offboard::start(backend);
    let _worker = ob.fanout();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stream, secret) = ob
        .push_stream("sidecar-push", &format!("{base}/ssf/push"), "Bearer side-push")
        .await;
    let mut config = GuardConfig::new(&ob.issuer, &ob.issuer, &stream, &secret);
    config.delivery = Delivery::Push {
        authorization: Some("Bearer side-push".into()),
    };
    config.poll_interval = POLL;
    let server = offboard_guard::sidecar::serve(config, listener).unwrap();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let check = |token: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/check"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let id = ob.create_user("side-push@example.com").await;
    let token = ob.login("side-push@example.com").access_token;
    eventually(MARGIN, || async { check(token.clone()).await == 200 }).await;
    ob.deactivate(&id).await;
    eventually(MARGIN, || async { check(token.clone()).await == 401 }).await;
    let res = http
        .post(format!("{base}/ssf/push"))
        .header("Content-Type", "application/secevent+jwt")
        .body("x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "a push without the stream's header");
    handle.stop(false).await;
}

both_backends!(
    a_push_stream_delivers_revocations_to_the_guard,
    the_sidecar_receives_pushes,
    a_dead_lettered_push_makes_the_guard_read_the_snapshot_again,
    push_and_poll_streams_are_not_mixed,
    nginx_auth_request_asks_the_sidecar,
    the_sidecar_answers_forward_auth,
    a_service_token_is_accepted_until_revoked,
    the_actix_middleware_protects_a_service,
    a_session_ended_by_reuse_or_revocation_is_refused,
    a_token_revoked_by_jti_is_refused,
    after_a_restart_a_deactivated_users_token_is_refused_at_once,
    a_guard_restarts_from_its_state_file_even_while_offboard_is_down,
    a_deactivation_is_refused_within_the_poll_interval,
    a_stale_feed_fails_closed_or_introspects,
    an_unknown_kid_costs_one_rate_limited_jwks_fetch,
);
