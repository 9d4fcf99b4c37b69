//! What the benchmarks share: the `--backend` choice, the machine line they print, and a fresh database per backend run (a SQLite file
//! in a temp dir, or a PostgreSQL database created on `TEST_DATABASE_URL` and dropped afterwards). Included by each
//! bench with `#[path = "common/mod.rs"] mod common;`.

use anyhow::Context;
use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};
use offboard::db::{Backend, DbUrl};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The key-encryption key of every benchmark server (base64 of 32 bytes; benchmarks only).
pub const BENCH_KEK: &str = "YmVuY2gtb25seS1rZXktZW5jcnlwdGlvbi1rZXkhISE=";

/// `--backend`: which backends a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Sqlite,
    Postgres,
    Both,
}

impl Which {
    pub fn backends(self) -> &'static [Backend] {
        match self {
            Self::Sqlite => &[Backend::Sqlite],
            Self::Postgres => &[Backend::Postgres],
            Self::Both => &[Backend::Sqlite, Backend::Postgres],
        }
    }

    /// The value as given on the command line.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Both => "both",
        }
    }
}

/// The backend's name in report headings.
pub fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}

/// `nproc` and the CPU model.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs (nproc), {model}")
}

/// A database that exists for one backend's run and is removed after it.
pub enum BenchDb {
    Sqlite { dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl BenchDb {
    /// A fresh database, or `None` (with a notice) when PostgreSQL is unreachable.
    pub fn create(backend: Backend) -> anyhow::Result<Option<Self>> {
        match backend {
            Backend::Sqlite => Ok(Some(Self::Sqlite {
                dir: tempfile::tempdir().context("create a temp dir")?,
            })),
            Backend::Postgres => {
                let admin_url =
                    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
                let shown = DbUrl::parse(&admin_url).map_or_else(|_| admin_url.clone(), |u| u.redacted());
                let mut admin = match PgConnection::establish(&admin_url) {
                    Ok(c) => c,
                    Err(e) => {
                        let why = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
                        println!(
                            "PostgreSQL at {shown} is unreachable ({why}): SKIPPED the PostgreSQL run; set \
                             TEST_DATABASE_URL\n"
                        );
                        return Ok(None);
                    }
                };
                let name = format!("offboard_bench_{}", uuid::Uuid::new_v4().simple());
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .with_context(|| format!("create database {name} on {shown}"))?;
                Ok(Some(Self::Postgres { admin_url, name }))
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

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Self::Postgres { admin_url, name } = self {
            let dropped = PgConnection::establish(admin_url)
                .map_err(|e| e.to_string())
                .and_then(|mut admin| {
                    diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = dropped {
                eprintln!("could not drop the benchmark database {name}: {e}; drop it by hand");
            }
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

/// The real server in-process, as `offboard serve` builds it: one actix worker in its own thread and
/// `actix_web::rt::System`, on `listener`.
pub struct Server {
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

/// Starts the server; `blocking_threads` bounds the worker's blocking pool (actix's default when `None`).
pub fn serve(
    state: offboard::AppState,
    listener: std::net::TcpListener,
    blocking_threads: Option<usize>,
) -> anyhow::Result<Server> {
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let thread =
        std::thread::Builder::new()
            .name("offboard-server".into())
            .spawn(move || -> anyhow::Result<()> {
                actix_web::rt::System::new().block_on(async move {
                    let mut server = actix_web::HttpServer::new(move || {
                        actix_web::App::new().configure(offboard::configure(state.clone()))
                    })
                    .workers(1)
                    .disable_signals();
                    if let Some(n) = blocking_threads {
                        server = server.worker_max_blocking_threads(n);
                    }
                    let server = server.listen(listener)?.run();
                    handle_tx
                        .send(server.handle())
                        .map_err(|_| anyhow::anyhow!("the benchmark went away"))?;
                    server.await.context("HTTP server failed")
                })
            })?;
    let handle = handle_rx.recv().context("the server did not start")?;
    Ok(Server { handle, thread })
}

impl Server {
    /// The handle, for stopping the server from an async context.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.handle.clone()
    }

    /// Waits for the server thread once the server was stopped.
    pub fn join(self) -> anyhow::Result<()> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the server thread panicked"))?
    }
}
