//! The operator console: sign-in for a session cookie (scope `console` or `admin`), its cookie attributes, CSRF on
//! every state-changing request, idle and absolute expiry, sign-out, their audit entries; the live feed as
//! Server-Sent Events (an access change, then its deliveries, resumed from `Last-Event-ID` with nothing lost); the
//! Users page, its actions through the lifecycle use cases, and revoked tokens presented again.

use std::pin::Pin;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::test;
use actix_web::{App, dev::ServiceResponse};
use chrono::TimeDelta;
use diesel::prelude::*;
use offboard::configure;
use offboard::credentials::Scope;
use offboard::db::schema::console_sessions;
use offboard::db::{DbError, models::AuditRow, repo};
use serde_json::{Value, json};

use crate::fanout::{add_stream, worker};
use crate::harness::{Backend, Resp, TestApp, both_backends};
use crate::peers::receiver;

/// The `name=value` of each `Set-Cookie` of a response, and the whole header lines.
fn set_cookies(res: &Resp) -> Vec<String> {
    res.headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

fn cookie_value(res: &Resp, name: &str) -> Option<String> {
    set_cookies(res).iter().find_map(|line| {
        let first = line.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// The value of `<input … name="NAME" value="…">` in a page.
fn field(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\" value=\""))?;
    let rest = page.get(at + name.len() + 15..)?;
    Some(rest.get(..rest.find('"')?)?.to_owned())
}

/// A browser's cookie jar for the console, reduced to what these tests need.
#[derive(Debug, Clone, Default)]
struct Browser {
    session: String,
    csrf: String,
}

impl Browser {
    fn cookie(&self) -> String {
        format!("offboard_session={}; offboard_csrf={}", self.session, self.csrf)
    }
}

async fn get_page(app: &TestApp, b: &Browser, path: &str) -> Resp {
    app.send(
        test::TestRequest::get()
            .uri(path)
            .insert_header(("Cookie", b.cookie())),
    )
    .await
}

async fn post_form(app: &TestApp, cookie: &str, path: &str, params: &[(&str, &str)]) -> Resp {
    app.send(
        test::TestRequest::post()
            .uri(path)
            .insert_header(("Cookie", cookie.to_owned()))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload(serde_urlencoded::to_string(params).unwrap()),
    )
    .await
}

/// Signs in through the form as a browser does; returns the response of the POST.
async fn try_sign_in(app: &TestApp, name: &str, secret: &str) -> Resp {
    let form = app.send(test::TestRequest::get().uri("/console/sign-in")).await;
    assert_eq!(form.status, 200);
    let nonce = cookie_value(&form, "offboard_sign_in").expect("nonce cookie");
    assert_eq!(field(&form.text, "nonce").as_deref(), Some(nonce.as_str()));
    post_form(
        app,
        &format!("offboard_sign_in={nonce}"),
        "/console/sign-in",
        &[("name", name), ("secret", secret), ("nonce", &nonce)],
    )
    .await
}

async fn sign_in(app: &TestApp, name: &str, secret: &str) -> Browser {
    let res = try_sign_in(app, name, secret).await;
    assert_eq!(res.status, 303, "{}", res.text);
    assert_eq!(res.header("location"), Some("/console"));
    Browser {
        session: cookie_value(&res, "offboard_session").expect("session cookie"),
        csrf: cookie_value(&res, "offboard_csrf").expect("csrf cookie"),
    }
}

fn audit_of(app: &TestApp, action: &str) -> Vec<AuditRow> {
    let action = action.to_owned();
    app.db()
        .read(|c| {
            repo::audit::batch(
                c,
                &repo::audit::Selection {
                    actions: vec![action],
                    ..Default::default()
                },
                1000,
            )
            .map_err(DbError::from)
        })
        .unwrap()
}

fn sessions(app: &TestApp) -> Vec<offboard::db::models::ConsoleSession> {
    app.db()
        .read(|c| {
            console_sessions::table
                .select(offboard::db::models::ConsoleSession::as_select())
                .load(c)
                .map_err(DbError::from)
        })
        .unwrap()
}

async fn sign_in_and_out_with_a_session_cookie(backend: Backend) {
    let app = TestApp::start(backend).await;
    let secret = app.credential("ops", &[Scope::Console]);
    let scim_only = app.credential("robot", &[Scope::Scim]);

    let res = app.send(test::TestRequest::get().uri("/")).await;
    assert_eq!((res.status, res.header("location")), (303, Some("/console")));
    let res = app.send(test::TestRequest::get().uri("/console")).await;
    assert_eq!(
        (res.status, res.header("location")),
        (303, Some("/console/sign-in"))
    );

    // Wrong secret, unknown name, a credential without the scope: refused, recorded, no session.
    for (name, s) in [
        ("ops", "ofb_wrong"),
        ("nobody", secret.as_str()),
        ("robot", scim_only.as_str()),
    ] {
        let res = try_sign_in(&app, name, s).await;
        assert_eq!(res.status, 401, "{name}: {}", res.text);
        assert!(cookie_value(&res, "offboard_session").is_none());
    }
    let denied = audit_of(&app, "console.sign_in");
    assert_eq!(denied.len(), 3);
    assert!(denied.iter().all(|r| r.outcome == "denied"));
    assert!(
        denied.iter().all(|r| !r.details.contains(&secret)),
        "no secret in the log"
    );
    assert!(sessions(&app).is_empty());

    // Without the form's nonce (a cross-site post): refused before any credential check.
    let res = post_form(
        &app,
        "",
        "/console/sign-in",
        &[("name", "ops"), ("secret", &secret)],
    )
    .await;
    assert_eq!(res.status, 403);
    assert!(cookie_value(&res, "offboard_session").is_none());

    let res = try_sign_in(&app, "ops", &secret).await;
    assert_eq!(res.status, 303, "{}", res.text);
    for line in set_cookies(&res)
        .iter()
        .filter(|l| !l.starts_with("offboard_sign_in="))
    {
        assert!(line.contains("; HttpOnly"), "{line}");
        assert!(line.contains("; SameSite=Strict"), "{line}");
        assert!(line.contains("; Path=/console"), "{line}");
        assert!(
            !line.contains("Secure"),
            "an http issuer gets no Secure cookie: {line}"
        );
    }
    let b = Browser {
        session: cookie_value(&res, "offboard_session").unwrap(),
        csrf: cookie_value(&res, "offboard_csrf").unwrap(),
    };
    // Only hashes are stored.
    let rows = sessions(&app);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].credential_name, "ops");
    assert_ne!(rows[0].id_hash, b.session);
    assert_eq!(rows[0].id_hash, offboard::credentials::hash_secret(&b.session));
    assert_eq!(rows[0].csrf_hash, offboard::credentials::hash_secret(&b.csrf));
    assert_eq!(rows[0].expires - rows[0].created, TimeDelta::hours(12));

    let page = get_page(&app, &b, "/console").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.text.contains("id=\"feed\""));
    assert_eq!(field(&page.text, "csrf").as_deref(), Some(b.csrf.as_str()));
    let js = app
        .send(test::TestRequest::get().uri("/console/assets/app.js"))
        .await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));

    // Sign-out: without the CSRF token, or with another, refused; with it, the session is gone.
    let res = post_form(&app, &b.cookie(), "/console/sign-out", &[]).await;
    assert_eq!(res.status, 403);
    let res = post_form(&app, &b.cookie(), "/console/sign-out", &[("csrf", "ofb_forged")]).await;
    assert_eq!(res.status, 403);
    assert_eq!(sessions(&app).len(), 1);
    let res = post_form(&app, &b.cookie(), "/console/sign-out", &[("csrf", &b.csrf)]).await;
    assert_eq!(
        (res.status, res.header("location")),
        (303, Some("/console/sign-in"))
    );
    assert!(set_cookies(&res).iter().all(|l| l.contains("Max-Age=0")));
    assert!(sessions(&app).is_empty());
    let res = get_page(&app, &b, "/console").await;
    assert_eq!(res.status, 303);
    assert_eq!(audit_of(&app, "console.sign_out").len(), 1);
    let ok: Vec<_> = audit_of(&app, "console.sign_in")
        .into_iter()
        .filter(|r| r.outcome == "success")
        .collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].actor, "ops");
}

async fn admin_may_sign_in_and_revoking_the_credential_ends_its_sessions(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.credential("root", &[Scope::Admin]);
    let b = sign_in(&app, "root", &admin).await;
    assert_eq!(get_page(&app, &b, "/console/users").await.status, 200);
    offboard::credentials::revoke(app.db(), "root").unwrap();
    assert_eq!(get_page(&app, &b, "/console/users").await.status, 303);
}

async fn sessions_expire_when_idle_and_at_the_absolute_limit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let secret = app.credential("ops", &[Scope::Console]);
    let age = |column: &str, by: TimeDelta| {
        let at = offboard::db::now() - by;
        let column = column.to_owned();
        app.db()
            .write(|c| {
                let q = diesel::update(console_sessions::table);
                match column.as_str() {
                    "last_seen" => q.set(console_sessions::last_seen.eq(at)).execute(c),
                    _ => q.set(console_sessions::expires.eq(at)).execute(c),
                }
                .map_err(DbError::from)
            })
            .unwrap();
    };

    let b = sign_in(&app, "ops", &secret).await;
    age("last_seen", TimeDelta::minutes(29));
    assert_eq!(
        get_page(&app, &b, "/console").await.status,
        200,
        "29 minutes idle is fine"
    );
    let seen = sessions(&app)[0].last_seen;
    assert!(
        offboard::db::now() - seen < TimeDelta::minutes(1),
        "a request moves last_seen"
    );
    age("last_seen", TimeDelta::minutes(31));
    let res = get_page(&app, &b, "/console").await;
    assert_eq!(
        (res.status, res.header("location")),
        (303, Some("/console/sign-in"))
    );
    assert!(sessions(&app).is_empty(), "an expired session is deleted");

    let b = sign_in(&app, "ops", &secret).await;
    age("expires", TimeDelta::seconds(1));
    assert_eq!(get_page(&app, &b, "/console").await.status, 303);
    let expired = audit_of(&app, "console.session_expired");
    let whys: Vec<_> = expired
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.details).unwrap()["why"].clone())
        .collect();
    assert_eq!(whys, vec![json!("idle"), json!("absolute")]);
    // The event stream answers 401 (a browser's EventSource gives up and the page reloads to the sign-in form).
    let res = get_page(&app, &b, "/console/events").await;
    assert_eq!(res.status, 401);
}

async fn cookies_are_secure_behind_an_https_issuer(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.issuer = "https://offboard.test".into()).await;
    let secret = app.credential("ops", &[Scope::Console]);
    let res = try_sign_in(&app, "ops", &secret).await;
    assert_eq!(res.status, 303);
    let lines = set_cookies(&res);
    assert!(lines.iter().all(|l| l.contains("; Secure")), "{lines:?}");
}

/// Reads the event stream until `until` holds for the events read so far, or panics after `within`.
async fn read_events(
    body: &mut BoxBody,
    buffer: &mut String,
    within: Duration,
    until: impl Fn(&[(i64, String, Value)]) -> bool,
) -> Vec<(i64, String, Value)> {
    let deadline = Instant::now() + within;
    loop {
        let events = parse_events(buffer);
        if until(&events) {
            return events;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "events not seen in time; got: {buffer}");
        let next = actix_web::rt::time::timeout(
            left,
            std::future::poll_fn(|cx| Pin::new(&mut *body).poll_next(cx)),
        )
        .await;
        match next {
            Ok(Some(Ok(chunk))) => buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
            Ok(other) => panic!("the stream ended: {:?}", other.map(|r| r.map(|_| ()))),
            Err(_) => {}
        }
    }
}

/// `(id, event, data)` of every complete event with data in `buffer`.
fn parse_events(buffer: &str) -> Vec<(i64, String, Value)> {
    buffer
        .split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut kind = String::from("message");
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    v.clone_into(&mut kind);
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            Some((id?, kind, data?))
        })
        .collect()
}

async fn open_events(app: &TestApp, b: &Browser, last_event_id: Option<i64>) -> BoxBody {
    let service = test::init_service(App::new().configure(configure(app.state.clone()))).await;
    let mut req = test::TestRequest::get()
        .uri("/console/events")
        .insert_header(("Cookie", b.cookie()));
    if let Some(id) = last_event_id {
        req = req.insert_header(("Last-Event-ID", id.to_string()));
    }
    let res: ServiceResponse = test::call_service(&service, req.to_request()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap().to_str().unwrap(),
        "text/event-stream"
    );
    res.into_body()
}

async fn the_live_feed_shows_changes_and_deliveries_and_resumes_without_loss(backend: Backend) {
    let app = TestApp::start(backend).await;
    let secret = app.credential("ops", &[Scope::Console]);
    let rx = receiver();
    let stream = add_stream(&app, &rx, "svc-a");
    let id = app.create_user("leaver@example.com").await;
    let b = sign_in(&app, "ops", &secret).await;

    let mut body = open_events(&app, &b, None).await;
    let mut buffer = String::new();
    assert_eq!(app.deactivate(&id).await.status, 200);
    let events = read_events(&mut body, &mut buffer, Duration::from_secs(10), |e| {
        e.iter().any(|(_, k, _)| k == "access")
    })
    .await;
    let (access_id, _, access) = events.iter().find(|(_, k, _)| k == "access").unwrap().clone();
    assert_eq!(access["user_name"], "leaver@example.com");
    assert_eq!(access["user_id"], id.as_str());
    assert_eq!(access["ended_by"], "IdP deactivate");
    assert_eq!(access["actor"], "idp");
    assert_eq!(
        (
            access["previous_generation"].clone(),
            access["generation"].clone()
        ),
        (json!(0), json!(1))
    );
    let deliveries = access["deliveries"].as_array().unwrap();
    assert_eq!(
        deliveries.len(),
        2,
        "account-disabled and session-revoked: {access}"
    );
    assert!(
        deliveries
            .iter()
            .all(|d| d["stream_id"] == stream.as_str() && d["status"] == "queued")
    );
    assert!(deliveries.iter().all(|d| d["audience"] == "svc-a"));

    // The worker pushes both SETs: each delivery follows, with its latency.
    assert_eq!(worker(&app).run_once().unwrap(), 1);
    assert_eq!(worker(&app).run_once().unwrap(), 1);
    let events = read_events(&mut body, &mut buffer, Duration::from_secs(10), |e| {
        e.iter().filter(|(_, k, _)| k == "delivery").count() == 2
    })
    .await;
    let delivered: Vec<_> = events.iter().filter(|(_, k, _)| k == "delivery").collect();
    for (seq, _, d) in &delivered {
        assert!(*seq > access_id);
        assert_eq!(d["outcome"], "delivered");
        assert_eq!(d["stream_id"], stream.as_str());
        assert_eq!(d["txn"], access["txn"]);
        assert!(d["latency_ms"].as_i64().unwrap() >= 0);
    }
    drop(body);

    // A viewer that saw the change but not its deliveries resumes from its Last-Event-ID: it gets exactly those.
    let mut body = open_events(&app, &b, Some(access_id)).await;
    let mut buffer = String::new();
    let resumed = read_events(&mut body, &mut buffer, Duration::from_secs(10), |e| {
        e.iter().filter(|(_, k, _)| k == "delivery").count() == 2
    })
    .await;
    let ids: Vec<i64> = resumed.iter().map(|(id, _, _)| *id).collect();
    let expected: Vec<i64> = delivered.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, expected, "nothing lost, nothing repeated");

    // A new viewer gets the recent history first.
    let mut body = open_events(&app, &b, None).await;
    let mut buffer = String::new();
    let backlog = read_events(&mut body, &mut buffer, Duration::from_secs(10), |e| e.len() >= 3).await;
    assert_eq!(backlog.first().map(|e| e.0), Some(access_id));

    // A Last-Event-ID beyond the log (a database reset under an open page) gets the history, not silence.
    let mut body = open_events(&app, &b, Some(1_000_000)).await;
    let mut buffer = String::new();
    let reset = read_events(&mut body, &mut buffer, Duration::from_secs(10), |e| e.len() >= 3).await;
    assert_eq!(reset.first().map(|e| e.0), Some(access_id));
}

async fn introspect(app: &TestApp, secret: &str, token: &str) -> Value {
    let res = app
        .form("/oauth2/introspect", Some(("rs", secret)), &[("token", token)])
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body
}

async fn users_page_actions_go_through_the_lifecycle(backend: Backend) {
    let app = TestApp::start(backend).await;
    let secret = app.credential("ops", &[Scope::Console]);
    let rs = app.credential("rs", &[Scope::Introspect]);
    let id = app.create_user("dev@example.com").await;
    app.create_user("other@example.com").await;
    let token = app.login("dev@example.com");
    assert_eq!(introspect(&app, &rs, &token.access_token).await["active"], true);
    let b = sign_in(&app, "ops", &secret).await;

    let page = get_page(&app, &b, "/console/users?q=DEV%40").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("dev@example.com"));
    assert!(!page.text.contains("other@example.com"), "search narrows");
    let page = get_page(&app, &b, "/console/users?status=held").await;
    assert!(!page.text.contains("dev@example.com"));
    assert_eq!(get_page(&app, &b, "/console/users?status=gone").await.status, 400);

    let page = get_page(&app, &b, &format!("/console/users/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("<dd id=\"sessions\">1</dd>"), "{}", page.text);
    assert!(page.text.contains("Offboarding report for dev@example.com"));
    assert!(page.text.contains("?verify=1"));
    let page = get_page(&app, &b, &format!("/console/users/{id}?verify=1")).await;
    assert!(page.text.contains("Audit chain verified:"), "{}", page.text);
    assert_eq!(get_page(&app, &b, "/console/users/nope").await.status, 404);
    let long = "x".repeat(10_000);
    assert_eq!(
        get_page(&app, &b, &format!("/console/users/{long}")).await.status,
        404
    );

    // End sessions: refused without the CSRF token (nothing changes), done with it, as the console user.
    let path = format!("/console/users/{id}/end-sessions");
    let res = post_form(&app, &b.cookie(), &path, &[("reason", "laptop stolen")]).await;
    assert_eq!(res.status, 403);
    assert_eq!(app.user_row(&id).token_generation, 0);
    let res = post_form(&app, &b.cookie(), &path, &[("reason", ""), ("csrf", &b.csrf)]).await;
    assert_eq!(res.status, 400, "a reason is required");
    let res = post_form(
        &app,
        &b.cookie(),
        &path,
        &[("reason", "laptop stolen"), ("csrf", &b.csrf)],
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.text);
    assert!(
        res.header("location")
            .unwrap()
            .starts_with(&format!("/console/users/{id}?done="))
    );
    assert_eq!(app.user_row(&id).token_generation, 1);
    let ended = audit_of(&app, "user.end_sessions");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].actor, "ops");
    assert!(ended[0].details.contains("laptop stolen"));

    // The old token is refused, and presenting it is recorded against the user (once, throttled).
    assert_eq!(
        introspect(&app, &rs, &token.access_token).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&app, &rs, &token.access_token).await,
        json!({"active": false})
    );
    let presented = audit_of(&app, "token.revoked_presented");
    assert_eq!(presented.len(), 1, "once a minute per token");
    assert_eq!(presented[0].subject.as_deref(), Some(id.as_str()));
    assert_eq!(presented[0].actor, "rs");
    assert_eq!(presented[0].outcome, "denied");
    assert!(presented[0].details.contains("generation changed"));
    // Its refresh token too.
    let res = app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", token.refresh_token.as_deref().unwrap()),
                ("client_id", offboard::tokens::CLI_CLIENT),
            ],
        )
        .await;
    assert_eq!(res.status, 400, "{}", res.text);
    assert_eq!(
        audit_of(&app, "token.revoked_presented").len(),
        2,
        "the refresh too"
    );
}

async fn users_can_be_held_and_released_from_the_console(backend: Backend) {
    let app = TestApp::start(backend).await;
    let secret = app.credential("ops", &[Scope::Console]);
    let id = app.create_user("dev@example.com").await;
    let b = sign_in(&app, "ops", &secret).await;
    let res = post_form(
        &app,
        &b.cookie(),
        &format!("/console/users/{id}/hold"),
        &[("reason", "investigation"), ("csrf", &b.csrf)],
    )
    .await;
    assert_eq!(res.status, 303);
    assert!(!app.user_row(&id).active);
    let hold = audit_of(&app, "user.hold");
    assert_eq!((hold.len(), hold[0].actor.as_str()), (1, "ops"));
    let page = get_page(&app, &b, "/console/users?status=held").await;
    assert!(page.text.contains("dev@example.com") && page.text.contains("investigation"));
    let page = get_page(&app, &b, &format!("/console/users/{id}")).await;
    assert!(page.text.contains("Release hold"));
    assert!(page.text.contains("deactivated (audit entry"), "{}", page.text);
    let res = post_form(
        &app,
        &b.cookie(),
        &format!("/console/users/{id}/release"),
        &[("reason", "cleared"), ("csrf", &b.csrf)],
    )
    .await;
    assert_eq!(res.status, 303);
    assert!(app.user_row(&id).active);
    let res = post_form(
        &app,
        &b.cookie(),
        &format!("/console/users/{id}/explode"),
        &[("reason", "x"), ("csrf", &b.csrf)],
    )
    .await;
    assert_eq!(res.status, 404);
}

async fn streams_page_shows_dead_letters_and_retries_them(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.fanout.max_attempts = 1).await;
    let secret = app.credential("ops", &[Scope::Console]);
    let rx = receiver();
    rx.status.store(503, std::sync::atomic::Ordering::SeqCst);
    let stream = add_stream(&app, &rx, "svc-down");
    let id = app.create_user("z@example.com").await;
    assert_eq!(app.deactivate(&id).await.status, 200);
    while worker(&app).run_once().unwrap() > 0 {}
    let b = sign_in(&app, "ops", &secret).await;

    let page = get_page(&app, &b, "/console/streams").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("svc-down"));
    assert!(page.text.contains("<td class=\"dead\">2</td>"), "{}", page.text);
    assert!(page.text.contains("Retry dead letters"));
    assert!(page.text.contains("<svg class=\"chart\""));
    assert!(
        page.text.contains(" UTC: 1 ending(s) of access</title>"),
        "{}",
        page.text
    );

    let path = format!("/console/streams/{stream}/retry");
    assert_eq!(post_form(&app, &b.cookie(), &path, &[]).await.status, 403);
    assert!(audit_of(&app, "stream.retry_dead").is_empty());
    let res = post_form(&app, &b.cookie(), &path, &[("csrf", &b.csrf)]).await;
    assert_eq!(res.status, 303, "{}", res.text);
    let retried = audit_of(&app, "stream.retry_dead");
    assert_eq!((retried.len(), retried[0].actor.as_str()), (1, "ops"));
    let page = get_page(&app, &b, res.header("location").unwrap()).await;
    assert!(
        page.text.contains("2 dead-lettered SET(s) queued again."),
        "{}",
        page.text
    );
    assert!(page.text.contains("<td class=\"dead\">0</td>"));
    let res = post_form(
        &app,
        &b.cookie(),
        "/console/streams/nope/retry",
        &[("csrf", &b.csrf)],
    )
    .await;
    assert_eq!(res.status, 404);
}

both_backends!(
    sign_in_and_out_with_a_session_cookie,
    admin_may_sign_in_and_revoking_the_credential_ends_its_sessions,
    sessions_expire_when_idle_and_at_the_absolute_limit,
    cookies_are_secure_behind_an_https_issuer,
    the_live_feed_shows_changes_and_deliveries_and_resumes_without_loss,
    users_page_actions_go_through_the_lifecycle,
    users_can_be_held_and_released_from_the_console,
    streams_page_shows_dead_letters_and_retries_them,
);
