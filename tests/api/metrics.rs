//! `/metrics` after a scripted scenario (SCIM create and deactivation, a service token minted, a refresh and a
//! refresh-token reuse, introspection before and after the deactivation, a bad credential, a push delivered),
//! parsed as `OpenMetrics` text; and the access log: one line per request, no secret in it, switchable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::test::TestRequest;
use offboard::credentials::Scope;
use offboard::telemetry::EscapedFields;
use serde_json::json;

use crate::fanout::{add_stream, worker};
use crate::harness::{Backend, TestApp, both_backends};
use crate::peers::receiver;

/// One sample of the exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    /// As written: counters and bucket counts are integers.
    value: String,
}

/// A parsed exposition: the samples, and each family's declared type.
#[derive(Debug)]
struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

/// Parses `OpenMetrics` text: `# TYPE`/`# HELP`/`# UNIT` lines, samples `name{k="v",…} value`, one `# EOF` as
/// the last line. Panics on anything else, so a malformed document fails the test.
fn parse(text: &str) -> Exposition {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    assert_eq!(text.matches("# EOF").count(), 1, "one # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, value) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
            match kind {
                "TYPE" => {
                    assert!(
                        types.insert(name.to_owned(), value.unwrap().to_owned()).is_none(),
                        "{name} declared twice"
                    );
                }
                "HELP" | "UNIT" => {}
                other => panic!("unknown metadata line {other}: {line}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "bad value: {line}"
        );
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: value.to_owned(),
        });
    }
    for s in &samples {
        let family = types.keys().find(|f| {
            s.name == **f
                || ["_total", "_bucket", "_sum", "_count", "_info"]
                    .iter()
                    .any(|suffix| s.name.strip_suffix(suffix) == Some(f.as_str()))
        });
        assert!(family.is_some(), "sample {} has no # TYPE", s.name);
    }
    Exposition { samples, types }
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} quoted: {text}");
        let mut value = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '"' => break,
                '\\' => match chars.next().expect("escaped char") {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        assert!(labels.insert(key.clone(), value).is_none(), "label {key} twice");
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

impl Exposition {
    /// The value of the one sample `name` whose labels include `labels`, as a count; panics when there is no
    /// such sample or its value is not a whole number.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let v = self.value(name, labels);
        v.parse()
            .unwrap_or_else(|_| panic!("{name} {labels:?} = {v} is not a count"))
    }

    /// A gauge or sum.
    fn number(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).parse().unwrap()
    }

    /// The value of the one sample `name` whose labels include `labels`; panics when there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> &str {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "one sample {name} {labels:?}, got {found:?}");
        &found[0].value
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

async fn scrape(app: &TestApp) -> (Exposition, String) {
    let res = app.send(TestRequest::get().uri("/metrics")).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        res.header("content-type")
    );
    (parse(&res.text), res.text)
}

/// The scripted scenario; returns the ids of the users and the group, and the stream's.
async fn scenario(backend: Backend) -> (TestApp, Vec<String>, String) {
    let app = TestApp::start_with(backend, |c| {
        c.tokens.client_credentials.insert("svc".into(), Vec::new());
    })
    .await;
    let svc = app.credential("svc", &[Scope::Introspect]);
    let rx = receiver();
    let stream = add_stream(&app, &rx, "svc-a");

    let id = app.create_user("alice@example.com").await;
    // A service token (client credentials).
    let res = app
        .form(
            "/oauth2/token",
            Some(("svc", &svc)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    // A login, refreshed once; then its first refresh token presented again (reuse).
    let login = app.login("alice@example.com");
    let first = login.refresh_token.unwrap();
    let refresh = |token: String| {
        let app = &app;
        async move {
            app.form(
                "/oauth2/token",
                None,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", "offboard-cli"),
                    ("refresh_token", &token),
                ],
            )
            .await
        }
    };
    let res = refresh(first.clone()).await;
    assert_eq!(res.status, 200, "{}", res.text);
    let access = res.body["access_token"].as_str().unwrap().to_owned();
    let introspect = |token: String| {
        let (app, svc) = (&app, &svc);
        async move {
            app.form("/oauth2/introspect", Some(("svc", svc)), &[("token", &token)])
                .await
        }
    };
    let res = introspect(access.clone()).await;
    assert_eq!(res.body["active"], true, "{}", res.text);
    let res = refresh(first).await;
    assert_eq!(res.body["error"], "invalid_grant", "{}", res.text);
    // The IdP deactivates alice; the token refreshed before is presented again.
    assert_eq!(app.deactivate(&id).await.status, 200);
    let res = introspect(access).await;
    assert_eq!(res.body["active"], false, "{}", res.text);
    // A bad credential.
    let res = app
        .send(
            TestRequest::get()
                .uri(&format!("/scim/v2/Users/{id}"))
                .insert_header(("Authorization", "Bearer not-a-credential")),
        )
        .await;
    assert_eq!(res.status, 401);
    // Bob leaves a group (his sessions end), then the IdP deletes him.
    let bob = app.create_user("bob@example.com").await;
    let res = app
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "eng",
                    "members": [{"value": bob}]}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let group = res.body["id"].as_str().unwrap().to_owned();
    let leave = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]});
    let res = app.patch(&format!("/Groups/{group}"), &leave).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(app.delete(&format!("/Users/{bob}")).await.status, 204);
    // A credential without the introspect scope.
    let res = app
        .form("/oauth2/introspect", Some(("idp", &app.token)), &[("token", "x")])
        .await;
    assert_eq!(res.body["error"], "insufficient_scope", "{}", res.text);
    // The reuse and the deactivation each queued SETs; push them all.
    while worker(&app).run_once().unwrap() > 0 {}
    assert!(!rx.got().is_empty());
    (app, vec![id, bob, group], stream)
}

async fn metrics_series_move_with_a_scripted_scenario(backend: Backend) {
    let (app, ids, stream) = scenario(backend).await;
    let (m, text) = scrape(&app).await;
    for id in &ids {
        assert!(!text.contains(id.as_str()), "a raw path leaked into a label");
    }
    let counter = |name: &str| m.types.get(name).map(String::as_str);
    for family in [
        "offboard_http_requests",
        "offboard_scim_operations",
        "offboard_tokens",
        "offboard_revoked_tokens_presented",
        "offboard_auth_failures",
        "offboard_deprovisions",
    ] {
        assert_eq!(counter(family), Some("counter"), "{family}");
    }
    for family in [
        "offboard_http_request_duration_seconds",
        "offboard_db_pool_wait_seconds",
    ] {
        assert_eq!(counter(family), Some("histogram"), "{family}");
    }
    assert_eq!(counter("offboard_build"), Some("info"));

    http_and_domain_series(&m);
    read_at_scrape(&m, backend, &stream);
    // The scrape itself is counted by the next one; nothing here grew with the data.
    let (again, _) = scrape(&app).await;
    let scrape_labels = [("method", "GET"), ("route", "/metrics"), ("status", "200")];
    assert_eq!(again.count("offboard_http_requests_total", &scrape_labels), 1);
}

/// The counters and histograms the scenario moved.
fn http_and_domain_series(m: &Exposition) {
    // HTTP, by route pattern and status.
    let create = [("method", "POST"), ("route", "/scim/v2/Users"), ("status", "201")];
    assert_eq!(m.count("offboard_http_requests_total", &create), 2);
    assert_eq!(
        m.count("offboard_http_request_duration_seconds_count", &create),
        2
    );
    let mut inf = create.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(m.count("offboard_http_request_duration_seconds_bucket", &inf), 2);
    assert!(m.number("offboard_http_request_duration_seconds_sum", &create) > 0.0);
    let patch = [
        ("method", "PATCH"),
        ("route", "/scim/v2/Users/{id}"),
        ("status", "200"),
    ];
    assert_eq!(m.count("offboard_http_requests_total", &patch), 1);
    let token = [("method", "POST"), ("route", "/oauth2/token"), ("status", "200")];
    assert_eq!(m.count("offboard_http_requests_total", &token), 2);

    // SCIM operations by kind, resource and result.
    let scim = |op: &str, result: &str| {
        m.count(
            "offboard_scim_operations_total",
            &[("operation", op), ("resource", "Users"), ("result", result)],
        )
    };
    assert_eq!(scim("create", "success"), 2);
    assert_eq!(scim("patch", "success"), 1);
    assert_eq!(scim("delete", "success"), 1);
    assert_eq!(scim("get", "unauthorized"), 1);
    let groups = |op: &str| {
        m.count(
            "offboard_scim_operations_total",
            &[("operation", op), ("resource", "Groups"), ("result", "success")],
        )
    };
    assert_eq!((groups("create"), groups("patch")), (1, 1));

    // Tokens by operation and result.
    let tokens =
        |op: &str, result: &str| m.count("offboard_tokens_total", &[("operation", op), ("result", result)]);
    assert_eq!(tokens("minted", "ok"), 1);
    assert_eq!(tokens("refreshed", "ok"), 1);
    assert_eq!(tokens("refreshed", "invalid_grant"), 1);
    assert_eq!(tokens("introspected", "active"), 1);
    assert_eq!(tokens("introspected", "inactive"), 1);
    assert_eq!(tokens("introspected", "insufficient_scope"), 1);

    // Revoked tokens presented, authentication failures, access ended.
    let presented = |via: &str| m.count("offboard_revoked_tokens_presented_total", &[("via", via)]);
    assert_eq!(presented("refresh_reuse"), 1);
    assert_eq!(presented("introspect"), 1);
    assert_eq!(
        m.count(
            "offboard_auth_failures_total",
            &[("reason", "unknown_credential")]
        ),
        1
    );
    let failures = |reason: &str| m.count("offboard_auth_failures_total", &[("reason", reason)]);
    assert_eq!(failures("missing_scope"), 1);
    assert_eq!(failures("no_credential"), 0);
    let ended = |cause: &str| m.count("offboard_deprovisions_total", &[("cause", cause)]);
    for cause in ["reuse", "deactivate", "group_removal", "delete"] {
        assert_eq!(ended(cause), 1, "{cause}");
    }
    // A cause that did not happen is there, at 0.
    assert_eq!(ended("operator"), 0);
    assert_eq!(presented("refresh_revoked"), 0);
}

/// What a scrape reads: fan-out, pools, build.
fn read_at_scrape(m: &Exposition, backend: Backend, stream: &str) {
    // Fan-out (read at scrape), the pools, the build.
    assert!(
        m.count(
            "offboard_fanout_sets",
            &[("stream", stream), ("state", "delivered")]
        ) >= 3,
        "reuse: 1 SET, deactivation: 2"
    );
    assert_eq!(
        m.count("offboard_fanout_stream_enabled", &[("stream", stream)]),
        1
    );
    assert!(m.has("offboard_fanout_last_delivery_latency_seconds"));
    let pool = |state: &str| {
        m.count(
            "offboard_db_pool_connections",
            &[("pool", "read"), ("state", state)],
        )
    };
    let open = pool("idle") + pool("in_use");
    assert!(
        (1..=8).contains(&open),
        "the read pool keeps a connection open: {open}"
    );
    assert_eq!(
        m.count("offboard_db_pool_max_connections", &[("pool", "read")]),
        8
    );
    let writer = m.samples.iter().any(|s| {
        s.name == "offboard_db_pool_max_connections"
            && s.labels.get("pool").map(String::as_str) == Some("write")
    });
    assert_eq!(
        writer,
        backend == Backend::Sqlite,
        "SQLite has a writer pool of its own"
    );
    assert!(m.count("offboard_db_pool_wait_seconds_count", &[]) > 0);
    // The test apps batch writes on both backends (the default `DbOptions`).
    let (batches, members) = (
        m.count("offboard_db_write_batches_total", &[]),
        m.count("offboard_db_batched_writes_total", &[]),
    );
    assert!(
        batches >= 1 && members >= batches,
        "{batches} batches held {members} writes"
    );
    assert_eq!(
        m.count("offboard_db_writes_waiting", &[]),
        0,
        "nothing waits after the scenario"
    );
    assert_eq!(
        m.count("offboard_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1
    );
}

/// A writer that keeps what a subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// A text-format subscriber writing here, as `offboard serve` formats logs.
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .fmt_fields(EscapedFields::default())
            .finish()
    }
}

/// The access log lines in `text`.
fn access_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains("offboard::access")).collect()
}

async fn access_log_names_route_status_and_client_never_a_secret(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.create_user("carol@example.com").await;
    let login = app.login("carol@example.com");
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());

    // Authenticated SCIM request with our own request id, and a query string holding a marker value.
    let res = app
        .send(
            TestRequest::get()
                .uri("/scim/v2/Users?filter=userName%20eq%20%22query-marker-7f3%22")
                .insert_header(("Authorization", format!("Bearer {}", app.token)))
                .insert_header(("X-Request-Id", "req-abc.123")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("x-request-id"), Some("req-abc.123"));
    // An unauthenticated refresh (the public client) with the refresh token in the body and, wrongly, in the
    // query string too.
    let refresh = login.refresh_token.clone().unwrap();
    let res = app
        .send(
            TestRequest::post()
                .uri(&format!("/oauth2/token?refresh_token={refresh}"))
                .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
                .set_payload(
                    serde_urlencoded::to_string([
                        ("grant_type", "refresh_token"),
                        ("client_id", "offboard-cli"),
                        ("refresh_token", refresh.as_str()),
                    ])
                    .unwrap(),
                ),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    // An insane request id is replaced by a generated one, returned to the caller.
    let res = app
        .send(
            TestRequest::get()
                .uri("/healthz")
                .insert_header(("X-Request-Id", "bad id\twith spaces")),
        )
        .await;
    let generated = res.header("x-request-id").unwrap().to_owned();
    assert_ne!(generated, "bad id\twith spaces");
    assert_eq!(generated.len(), 32, "{generated}");

    let text = captured.text();
    let lines = access_lines(&text);
    assert_eq!(lines.len(), 3, "{text}");
    let scim = lines[0];
    for part in [
        " INFO ",
        "GET /scim/v2/Users 200",
        "method=GET",
        "route=\"/scim/v2/Users\"",
        "status=200",
        "latency_ms=",
        "request_id=\"req-abc.123\"",
        "client=\"idp\"",
    ] {
        assert!(scim.contains(part), "{part} in {scim}");
    }
    let token = lines[1];
    assert!(token.contains("POST /oauth2/token 200"), "{token}");
    assert!(token.contains("client=\"offboard-cli\""), "{token}");
    let health = lines[2];
    assert!(health.contains("GET /healthz 200"), "{health}");
    assert!(health.contains("client=\"-\""), "{health}");
    assert!(health.contains(&generated), "{health}");
    for secret in [
        app.token.as_str(),
        refresh.as_str(),
        login.access_token.as_str(),
        "query-marker-7f3",
    ] {
        assert!(
            !text.contains(secret),
            "a secret or query value was logged: {text}"
        );
    }
    assert!(
        !text.contains(offboard::tokens::REFRESH_PREFIX),
        "a refresh token (the rotated one?) was logged: {text}"
    );
}

async fn access_log_can_be_switched_off(backend: Backend) {
    let app = TestApp::start_with(backend, |c| c.log.access = false).await;
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let res = app.get("/Users").await;
    assert_eq!(res.status, 200);
    let text = captured.text();
    assert!(access_lines(&text).is_empty(), "{text}");
    // The request still counts in the metrics.
    let (m, _) = scrape(&app).await;
    let list = [("method", "GET"), ("route", "/scim/v2/Users"), ("status", "200")];
    assert_eq!(m.count("offboard_http_requests_total", &list), 1);
}

/// Each request is labelled with the pattern of the route it took (a trailing slash takes the same route), however
/// many ids went through it, and a path no route takes is labelled with none.
async fn route_labels_are_the_patterns_requests_took(backend: Backend) {
    let app = TestApp::start(backend).await;
    let a = app.create_user("label-a@example.com").await;
    let b = app.create_user("label-b@example.com").await;
    for path in [
        format!("/Users/{a}"),
        format!("/Users/{b}"),
        format!("/Users/{a}/"),
        "/Users".to_owned(),
        "/Users/".to_owned(),
        "/Users".to_owned(),
    ] {
        assert_eq!(app.get(&path).await.status, 200, "{path}");
    }
    let unrouted = app.send(TestRequest::get().uri("/no/such/route")).await;
    assert_eq!(unrouted.status, 404);
    let (m, text) = scrape(&app).await;
    let get = |route: &str| {
        m.count(
            "offboard_http_requests_total",
            &[("method", "GET"), ("route", route), ("status", "200")],
        )
    };
    assert_eq!(get("/scim/v2/Users/{id}"), 3);
    assert_eq!(get("/scim/v2/Users"), 3);
    assert!(
        !text.contains(&a) && !text.contains(&b),
        "an id leaked into a label"
    );
    assert!(
        !text.contains("/no/such/route"),
        "a path no route takes became a label"
    );
}

both_backends!(
    route_labels_are_the_patterns_requests_took,
    metrics_series_move_with_a_scripted_scenario,
    access_log_names_route_status_and_client_never_a_secret,
    access_log_can_be_switched_off,
);
