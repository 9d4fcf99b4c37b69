//! The test harness: a `TestApp` that builds the real actix app through `offboard::configure` on its own
//! database (a temp SQLite file, or a fresh PostgreSQL database on `TEST_DATABASE_URL`), and the `both_backends!`
//! macro that runs each test once per backend.
//!
//! PostgreSQL unreachable: the PostgreSQL half prints a skip notice per test, unless `CI=true`, where it fails.

use std::rc::Rc;
use std::sync::OnceLock;

use actix_web::App;
use actix_web::http::header::HeaderMap;
use actix_web::test;
use diesel::{Connection, RunQueryDsl, pg::PgConnection};
use futures::future::LocalBoxFuture;
use offboard::config::{Config, SecretString};
use offboard::credentials::{self, Scope};
use offboard::db::{Db, DbOptions, DbUrl};
use offboard::{AppState, configure};
use serde_json::{Value, json};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether PostgreSQL tests can run; panics under CI when they cannot.
pub fn postgres_available(test: &str) -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let probe = AVAILABLE.get_or_init(|| {
        PgConnection::establish(&pg_admin_url())
            .map(drop)
            .map_err(|e| e.to_string())
    });
    match probe {
        Ok(()) => true,
        Err(e) if in_ci() => panic!("PostgreSQL at {} is unreachable and CI=true: {e}", pg_admin_url()),
        Err(e) => {
            eprintln!(
                "SKIPPED {test} on PostgreSQL: {} unreachable ({e}); set TEST_DATABASE_URL",
                pg_admin_url()
            );
            false
        }
    }
}

/// A database that exists for one test and is removed after it.
pub enum TestDb {
    Sqlite { dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite {
                dir: tempfile::tempdir().expect("temp dir"),
            },
            Backend::Postgres => {
                let admin_url = pg_admin_url();
                let name = format!("offboard_t_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&admin_url).expect("connect to PostgreSQL");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .expect("create database");
                Self::Postgres { admin_url, name }
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            Self::Sqlite { dir } => dir.path().join("offboard.db").to_string_lossy().into_owned(),
            Self::Postgres { admin_url, name } => with_database(admin_url, name),
        }
    }
}

/// Replaces the database name of a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let root = base.rsplit_once('/').map_or(base, |(root, _)| root);
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
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

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON, or `Null` when it is empty or not JSON.
    pub body: Value,
}

/// Asserts `res` is a `400` `tooMany` SCIM error; `what` names the request in the failure message.
#[track_caller]
pub fn assert_too_many(res: &Resp, what: &str) {
    assert_eq!(
        (res.status, res.body["scimType"].as_str()),
        (400, Some("tooMany")),
        "{what}: {}",
        res.text
    );
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Call = Rc<dyn Fn(test::TestRequest) -> LocalBoxFuture<'static, Resp>>;

/// The real app on its own database, with a `scim` credential ready.
pub struct TestApp {
    pub state: AppState,
    /// Secret of a credential with scope `scim`.
    pub token: String,
    call: Call,
    // Dropped last: the database outlives the pools that use it.
    _db: TestDb,
}

pub const ISSUER: &str = "http://offboard.test";

/// The key-encryption key of every test app (32 bytes of 0x2a, base64).
pub const TEST_KEK: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

/// A PEM file of RSA keys generated once per test process, so no test waits for RSA key generation
/// (docs/decisions/0022-one-test-signing-key.md): each app takes its keys from it in order.
pub fn test_keys_file() -> &'static std::path::Path {
    static FILE: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    let (_, path) = FILE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("test-keys.pem");
        let pem = offboard::keys::generate_rsa_pem(4).expect("generate RSA keys");
        std::fs::write(&path, pem).expect("write test keys");
        (dir, path)
    });
    path
}
pub const SCIM: &str = "/scim/v2";

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        // reqwest clients (the worker's, the tests' own) need the rustls provider installed first.
        offboard::outbound::install_crypto_provider();
        let db_guard = TestDb::create(backend);
        let mut config = Config {
            database_url: db_guard.url(),
            issuer: ISSUER.into(),
            ..Config::default()
        };
        config.keys.kek = Some(SecretString::new(TEST_KEK));
        config.keys.import_pem_file = Some(test_keys_file().to_owned());
        tweak(&mut config);
        let db = Db::open(
            &DbUrl::parse(&config.database_url).expect("url"),
            &DbOptions {
                pool_size: 8,
                ..DbOptions::default()
            },
        )
        .expect("open database");
        db.migrate().expect("migrate");
        let token = credentials::create(&db, "idp", &[Scope::Scim])
            .expect("credential")
            .expose()
            .to_owned();
        let state = AppState::open(db, config).expect("app state");
        let app = Rc::new(test::init_service(App::new().configure(configure(state.clone()))).await);
        let call: Call = Rc::new(move |req: test::TestRequest| {
            let app = app.clone();
            Box::pin(async move {
                let res = test::call_service(&*app, req.to_request()).await;
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let bytes = test::read_body(res).await;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                Resp {
                    status,
                    headers,
                    text,
                    body,
                }
            })
        });
        Self {
            state,
            token,
            call,
            _db: db_guard,
        }
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// Creates another credential and returns its secret.
    pub fn credential(&self, name: &str, scopes: &[Scope]) -> String {
        credentials::create(self.db(), name, scopes)
            .expect("credential")
            .expose()
            .to_owned()
    }

    /// Sends a request as is.
    pub async fn send(&self, req: test::TestRequest) -> Resp {
        (self.call)(req).await
    }

    fn authed(&self, req: test::TestRequest) -> test::TestRequest {
        req.insert_header(("Authorization", format!("Bearer {}", self.token)))
    }

    /// Authenticated request to a path under `/scim/v2`, with an optional JSON body.
    pub async fn scim(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let method = actix_web::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.authed(
            test::TestRequest::default()
                .method(method)
                .uri(&format!("{SCIM}{path}")),
        );
        if let Some(b) = body {
            req = req
                .insert_header(("Content-Type", "application/scim+json"))
                .set_payload(b.to_string());
        }
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.scim("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.scim("POST", path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.scim("PUT", path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.scim("PATCH", path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.scim("DELETE", path, None).await
    }

    /// Deactivates a user as an IdP does: `PATCH` `replace active` with `false`.
    pub async fn deactivate(&self, id: &str) -> Resp {
        self.patch(
            &format!("/Users/{id}"),
            &patch_op("replace", Some("active"), &json!(false)),
        )
        .await
    }

    /// Creates a user and returns its id.
    pub async fn create_user(&self, user_name: &str) -> String {
        let res = self.post("/Users", &new_user(user_name)).await;
        assert_eq!(res.status, 201, "create {user_name}: {}", res.text);
        res.body["id"].as_str().expect("id").to_owned()
    }

    /// The stored user row, tombstones included.
    pub fn user_row(&self, id: &str) -> offboard::db::models::User {
        use diesel::prelude::*;
        use offboard::db::schema::users;
        let id = id.to_owned();
        self.db()
            .read(|c| {
                users::table
                    .filter(users::id.eq(&id))
                    .select(offboard::db::models::User::as_select())
                    .first(c)
                    .map_err(offboard::db::DbError::from)
            })
            .expect("user row")
    }
}

impl TestApp {
    /// POSTs a form to `path`, with HTTP Basic `name:secret` when given.
    pub async fn form(&self, path: &str, basic: Option<(&str, &str)>, params: &[(&str, &str)]) -> Resp {
        let body = serde_urlencoded::to_string(params).expect("form");
        let mut req = test::TestRequest::post()
            .uri(path)
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .set_payload(body);
        if let Some((name, secret)) = basic {
            use base64::Engine;
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{secret}"));
            req = req.insert_header(("Authorization", format!("Basic {v}")));
        }
        self.send(req).await
    }

    /// A login for `user_name` through the same path as `offboard token mint`.
    pub fn login(&self, user_name: &str) -> offboard::tokens::TokenResponse {
        self.state
            .tokens
            .login(
                &offboard::tokens::UserKey::UserName(user_name.to_owned()),
                offboard::tokens::CLI_CLIENT,
                &offboard::tokens::TokenRequest::default(),
            )
            .expect("login")
    }
}

/// An Okta-shaped new user.
pub fn new_user(user_name: &str) -> Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "displayName": "Test User",
        "externalId": format!("ext-{user_name}"),
        "active": true
    })
}

pub fn patch_op(op: &str, path: Option<&str>, value: &Value) -> Value {
    let mut o = serde_json::json!({"op": op, "value": value});
    if let Some(p) = path {
        o["path"] = Value::String(p.to_owned());
    }
    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [o]})
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
