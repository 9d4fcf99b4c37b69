//! Revocation latency: from the moment offboard answers a SCIM deactivation (`PATCH active: false`) to the first
//! moment a running guard refuses that user's access token, over N deactivations (default 100), in poll mode and
//! in push mode, on SQLite and on PostgreSQL (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; skipped when unreachable). A real offboard serves on a loopback port
//! in this process with its fan-out worker; the push guard's `/ssf/push` listens on another loopback port.
//!
//! The guard is asked every 1 ms (`Guard::check`, in process), so each figure may be up to ~1 ms late. Poll mode:
//! deactivations are spread evenly over the poll interval's phase (a fixed pattern), since a deactivation sent
//! right after a poll waits a whole interval and one sent just before waits almost nothing.
//!
//! `cargo bench -p offboard-guard --bench revocation_latency -- [--n 100] [--poll-ms 200] [--backend sqlite|postgres]
//! [--mode poll|push]`
#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a benchmark: a panic is a failed run with its message"
)]

use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, web};
use diesel::{Connection, RunQueryDsl, pg::PgConnection};
use offboard::config::{Config, SecretString};
use offboard::credentials::{self, Scope};
use offboard::db::{Db, DbOptions, DbUrl};
use offboard::{AppState, configure};
use offboard_guard::{Delivery, Guard, GuardConfig, Refusal};
use serde_json::{Value, json};

const KEK: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

struct Server {
    state: AppState,
    issuer: String,
    scim: String,
    http: reqwest::Client,
    _worker: offboard::fanout::worker::Running,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg
            && let Ok(mut c) = PgConnection::establish(admin)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c);
        }
    }
}

fn pg_admin() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl Server {
    fn start(postgres: bool) -> Self {
        offboard::outbound::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = if postgres {
            let admin = pg_admin();
            let name = format!("offboard_bench_{}", uuid::Uuid::new_v4().simple());
            let mut c = PgConnection::establish(&admin).unwrap();
            diesel::sql_query(format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .unwrap();
            let root = admin
                .rsplit_once('/')
                .map_or(admin.as_str(), |(r, _)| r)
                .to_owned();
            (format!("{root}/{name}"), Some((admin, name)))
        } else {
            (
                dir.path().join("offboard.db").to_string_lossy().into_owned(),
                None,
            )
        };
        let keys = dir.path().join("keys.pem");
        std::fs::write(&keys, offboard::keys::generate_rsa_pem(1).unwrap()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let mut config = Config {
            database_url: url,
            issuer: issuer.clone(),
            ..Config::default()
        };
        config.keys.kek = Some(SecretString::new(KEK));
        config.keys.import_pem_file = Some(keys);
        let db = Db::open(
            &DbUrl::parse(&config.database_url).unwrap(),
            &DbOptions::default(),
        )
        .unwrap();
        db.migrate().unwrap();
        let scim = credentials::create(&db, "idp", &[Scope::Scim])
            .unwrap()
            .expose()
            .to_owned();
        let state = AppState::open(db, config).unwrap();
        let worker = offboard::fanout::worker::Worker::new(
            state.db.clone(),
            state.config.clone(),
            state.tokens.keys.clone(),
            state.fanout.clone(),
        )
        .spawn()
        .unwrap();
        let app = state.clone();
        let server = HttpServer::new(move || App::new().configure(configure(app.clone())))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
        actix_web::rt::spawn(server);
        Self {
            state,
            issuer,
            scim,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            _worker: worker,
            _dir: dir,
            pg,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, secret: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .request(method, format!("{}{path}", self.issuer))
            .bearer_auth(secret)
            .header("Content-Type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// A stream (push to `endpoint`, or poll) of a new credential: (stream id, secret).
    async fn stream(&self, name: &str, endpoint: Option<&str>) -> (String, String) {
        let secret = credentials::create(&self.state.db, name, &[Scope::SsfManage])
            .unwrap()
            .expose()
            .to_owned();
        let body = match endpoint {
            Some(e) => json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": e}}),
            None => json!({}),
        };
        let (status, body) = self
            .call(reqwest::Method::POST, "/ssf/streams", &secret, body)
            .await;
        assert_eq!(status, 201, "{body}");
        (body["stream_id"].as_str().unwrap().to_owned(), secret)
    }

    /// Creates a user and logs them in: (user id, access token).
    async fn user(&self, name: &str) -> (String, String) {
        let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name,
                          "active": true});
        let (status, body) = self
            .call(reqwest::Method::POST, "/scim/v2/Users", &self.scim, user)
            .await;
        assert_eq!(status, 201, "{body}");
        let token = self
            .state
            .tokens
            .login(
                &offboard::tokens::UserKey::UserName(name.to_owned()),
                offboard::tokens::CLI_CLIENT,
                &offboard::tokens::TokenRequest::default(),
            )
            .unwrap()
            .access_token;
        (body["id"].as_str().unwrap().to_owned(), token)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn run(postgres: bool, push: bool, n: u32, poll: Duration) {
    let backend = if postgres { "PostgreSQL" } else { "SQLite" };
    let mode = if push { "push" } else { "poll" };
    let server = Server::start(postgres);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!(
        "http://127.0.0.1:{}/ssf/push",
        listener.local_addr().unwrap().port()
    );
    let (stream, secret) = server.stream("svc", push.then_some(endpoint.as_str())).await;
    let mut config = GuardConfig::new(&server.issuer, &server.issuer, stream, secret);
    config.poll_interval = poll;
    if push {
        config.delivery = Delivery::Push { authorization: None };
    }
    let guard = Guard::start(config).await.unwrap();
    let app_guard = guard.clone();
    let receiver = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(app_guard.clone()))
            .route("/ssf/push", web::post().to(offboard_guard::actix::receive_push))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let receiver_handle = receiver.handle();
    actix_web::rt::spawn(receiver);

    let mut users = Vec::new();
    for i in 0..n {
        users.push(server.user(&format!("u{i}@example.com")).await);
    }
    let op = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "active", "value": false}]});
    let mut latencies = Vec::new();
    let mut misses = 0;
    for (i, (id, token)) in users.iter().enumerate() {
        guard
            .check(token)
            .await
            .expect("accepted before its deactivation");
        // Spread the deactivations over the poll phase (push: over 0-20 ms).
        let span = if push { Duration::from_millis(20) } else { poll };
        let phase = u32::try_from((i * 37) % 100).unwrap_or(0);
        actix_web::rt::time::sleep(span.mul_f64(f64::from(phase) / 100.0)).await;
        let (status, body) = server
            .call(
                reqwest::Method::PATCH,
                &format!("/scim/v2/Users/{id}"),
                &server.scim,
                op.clone(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let answered = Instant::now();
        loop {
            match guard.check(token).await {
                Err(Refusal::Revoked(_)) => {
                    latencies.push(answered.elapsed());
                    break;
                }
                _ if answered.elapsed() > Duration::from_secs(10) => {
                    misses += 1;
                    break;
                }
                _ => actix_web::rt::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    receiver_handle.stop(false).await;
    latencies.sort();
    let goal = if push {
        Duration::from_millis(50)
    } else {
        poll + Duration::from_millis(10)
    };
    let p99 = percentile(&latencies, 99.0);
    println!(
        "{backend:<10} {mode:<4} interval {:>4} ms  n {:>3}  p50 {:>6} ms  p99 {:>6} ms  max {:>6} ms  \
         not refused within 10 s: {misses}  goal p99 < {} ms: {}",
        poll.as_millis(),
        latencies.len(),
        ms(percentile(&latencies, 50.0)),
        ms(p99),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        goal.as_millis(),
        if p99 < goal && misses == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let n: u32 = arg("--n").map_or(100, |v| v.parse().expect("--n"));
    let poll = Duration::from_millis(arg("--poll-ms").map_or(200, |v| v.parse().expect("--poll-ms")));
    let backends: Vec<bool> = match arg("--backend").as_deref() {
        Some("sqlite") => vec![false],
        Some("postgres") => vec![true],
        _ => vec![false, true],
    };
    let modes: Vec<bool> = match arg("--mode").as_deref() {
        Some("poll") => vec![false],
        Some("push") => vec![true],
        _ => vec![false, true],
    };
    actix_web::rt::System::new().block_on(async move {
        for &postgres in &backends {
            if postgres && let Err(e) = PgConnection::establish(&pg_admin()) {
                println!("PostgreSQL    skipped: {} unreachable ({e})", pg_admin());
                continue;
            }
            for &push in &modes {
                run(postgres, push, n, poll).await;
            }
        }
    });
}
