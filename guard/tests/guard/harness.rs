//! A real offboard, started in-process on a loopback port with its own database (a temp SQLite file, or a fresh
//! PostgreSQL database on `TEST_DATABASE_URL`), and the `both_backends!` macro that runs each test on both, as
//! the server's own tests do (PostgreSQL unreachable: skipped, unless `CI=true`, where it fails).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer};
use diesel::{Connection, RunQueryDsl, pg::PgConnection};
use offboard::config::{Config, SecretString};
use offboard::credentials::{self, Scope};
use offboard::db::{Db, DbOptions, DbUrl};
use offboard::{AppState, configure};
use offboard_guard::{Guard, GuardConfig};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn postgres_available(test: &str) -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let probe = AVAILABLE.get_or_init(|| {
        PgConnection::establish(&pg_admin_url())
            .map(drop)
            .map_err(|e| e.to_string())
    });
    match probe {
        Ok(()) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("PostgreSQL at {} is unreachable and CI=true: {e}", pg_admin_url())
        }
        Err(e) => {
            eprintln!(
                "SKIPPED {test} on PostgreSQL: {} unreachable ({e})",
                pg_admin_url()
            );
            false
        }
    }
}

enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => {
                let admin_url = pg_admin_url();
                let name = format!("offboard_g_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&admin_url).unwrap();
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .unwrap();
                Self::Postgres { admin_url, name }
            }
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => dir.path().join("offboard.db").to_string_lossy().into_owned(),
            Self::Postgres { admin_url, name } => {
                let root = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(r, _)| r);
                format!("{root}/{name}")
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Self::Postgres { admin_url, name } = self
            && let Ok(mut admin) = PgConnection::establish(admin_url)
        {
            let _ =
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin);
        }
    }
}

/// RSA keys generated once per test process (RSA generation is slow).
fn keys_file() -> &'static std::path::Path {
    static FILE: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    let (_, path) = FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.pem");
        std::fs::write(&path, offboard::keys::generate_rsa_pem(6).unwrap()).unwrap();
        (dir, path)
    });
    path
}

pub const TEST_KEK: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

/// offboard serving on `issuer`.
pub struct Offboard {
    pub state: AppState,
    pub issuer: String,
    /// Secret of a credential with scope `scim`.
    scim: String,
    http: reqwest::Client,
    server: actix_web::dev::ServerHandle,
    _db: TestDb,
}

impl Offboard {
    pub fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {})
    }

    /// Starts offboard with its configuration changed by `tweak`.
    pub fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        offboard::outbound::install_crypto_provider();
        let db_guard = TestDb::create(backend);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let mut config = Config {
            database_url: db_guard.url(),
            issuer: issuer.clone(),
            ..Config::default()
        };
        config.keys.kek = Some(SecretString::new(TEST_KEK));
        config.keys.import_pem_file = Some(keys_file().to_owned());
        tweak(&mut config);
        let db = Db::open(
            &DbUrl::parse(&config.database_url).unwrap(),
            &DbOptions {
                pool_size: 8,
                ..DbOptions::default()
            },
        )
        .unwrap();
        db.migrate().unwrap();
        let scim = credentials::create(&db, "idp", &[Scope::Scim])
            .unwrap()
            .expose()
            .to_owned();
        let state = AppState::open(db, config).unwrap();
        let app_state = state.clone();
        let server = HttpServer::new(move || App::new().configure(configure(app_state.clone())))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            state,
            issuer,
            scim,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            server: handle,
            _db: db_guard,
        }
    }

    /// Stops serving (every request fails from now on).
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }

    pub fn credential(&self, name: &str, scopes: &[Scope]) -> String {
        credentials::create(&self.state.db, name, scopes)
            .unwrap()
            .expose()
            .to_owned()
    }

    /// A request to offboard with a bearer secret; returns (status, JSON body or null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        secret: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.issuer))
            .bearer_auth(secret);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/scim+json")
                .body(b.to_string());
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A poll stream of a new `ssf.manage` credential: (stream id, secret).
    pub async fn poll_stream(&self, name: &str) -> (String, String) {
        let secret = self.credential(name, &[Scope::SsfManage]);
        let (status, body) = self
            .call(reqwest::Method::POST, "/ssf/streams", &secret, Some(json!({})))
            .await;
        assert_eq!(status, 201, "{body}");
        (body["stream_id"].as_str().unwrap().to_owned(), secret)
    }

    /// Starts the fan-out worker (push delivery), as `offboard serve` does; it stops when dropped.
    pub fn fanout(&self) -> offboard::fanout::worker::Running {
        offboard::fanout::worker::Worker::new(
            self.state.db.clone(),
            self.state.config.clone(),
            self.state.tokens.keys.clone(),
            self.state.fanout.clone(),
        )
        .spawn()
        .unwrap()
    }

    /// A push stream of a new `ssf.manage` credential to `endpoint`, whose pushes carry `authorization`:
    /// (stream id, secret).
    pub async fn push_stream(&self, name: &str, endpoint: &str, authorization: &str) -> (String, String) {
        let secret = self.credential(name, &[Scope::SsfManage]);
        let delivery = json!({"method": "urn:ietf:rfc:8935", "endpoint_url": endpoint,
                              "authorization_header": authorization});
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/ssf/streams",
                &secret,
                Some(json!({ "delivery": delivery })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (body["stream_id"].as_str().unwrap().to_owned(), secret)
    }

    /// A guard on a new poll stream, polling every 200 ms.
    pub async fn guard(&self, name: &str) -> (Guard, GuardConfig) {
        let (stream, secret) = self.poll_stream(name).await;
        let mut config = GuardConfig::new(&self.issuer, &self.issuer, stream, secret);
        config.poll_interval = POLL;
        (Guard::start(config.clone()).await.unwrap(), config)
    }

    pub async fn create_user(&self, user_name: &str) -> String {
        let user = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "emails": [{"primary": true, "value": user_name, "type": "work"}],
            "active": true
        });
        let (status, body) = self
            .call(reqwest::Method::POST, "/scim/v2/Users", &self.scim, Some(user))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn deactivate(&self, id: &str) {
        let op = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": "active", "value": false}]});
        let (status, body) = self
            .call(
                reqwest::Method::PATCH,
                &format!("/scim/v2/Users/{id}"),
                &self.scim,
                Some(op),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// A login for `user_name`, as `offboard token mint` makes it.
    pub fn login(&self, user_name: &str) -> offboard::tokens::TokenResponse {
        self.state
            .tokens
            .login(
                &offboard::tokens::UserKey::UserName(user_name.to_owned()),
                offboard::tokens::CLI_CLIENT,
                &offboard::tokens::TokenRequest::default(),
            )
            .unwrap()
    }

    /// POSTs a form as the public client `offboard-cli`; returns (status, body).
    pub async fn form(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let mut all = vec![("client_id", "offboard-cli")];
        all.extend_from_slice(params);
        self.form_as(None, path, &all).await
    }

    /// POSTs a form, with HTTP Basic `name:secret` when given; returns (status, body).
    pub async fn form_as(
        &self,
        basic: Option<(&str, &str)>,
        path: &str,
        params: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.issuer)).form(params);
        if let Some((name, secret)) = basic {
            req = req.basic_auth(name, Some(secret));
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// How many SETs of the stream wait for an acknowledgement.
    pub fn pending(&self, stream: &str) -> usize {
        let stream = stream.to_owned();
        self.state
            .db
            .read(|c| offboard::db::repo::fanout::outbox_of(c, &stream).map_err(offboard::db::DbError::from))
            .unwrap()
            .iter()
            .filter(|r| r.status == "pending")
            .count()
    }
}

/// The poll interval of the tests' guards.
pub const POLL: Duration = Duration::from_millis(200);

/// Waits until `f` holds, checking every 20 ms, for at most `within`; returns how long it took.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut f: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs each listed `async fn name(backend: Backend)` once on SQLite and once on PostgreSQL.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    if $crate::harness::postgres_available(concat!(module_path!(), "::", stringify!($name))) {
                        super::$name($crate::harness::Backend::Postgres).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use both_backends;
