//! The start the `audit`, `fanout` and `fanout_cost` benchmarks share: their `main`, and the real server's state on a
//! fresh database, configured as `offboard serve` would with one worker and the benchmark key-encryption key.
//! Included next to `common` by those benches with `#[path = "common/app.rs"] mod app;`.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use anyhow::anyhow;
use offboard::AppState;
use offboard::config::{Config, SecretString};
use offboard::db::{Backend, Db, DbOptions, DbUrl};

/// A bench's `main`: installs offboard's crypto provider (reqwest is built with rustls and no bundled one), runs
/// `run`, and prints its error.
pub fn main(run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    offboard::outbound::install_crypto_provider();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A server ready to start with `common::serve(state, listener, Some(blocking))`.
pub struct Opened {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub db: Db,
    pub state: AppState,
    /// The blocking threads per worker the config gives `backend`.
    pub blocking: usize,
}

/// Binds a loopback port, configures the server for the database at `url` (then `tweak` changes the config),
/// opens and migrates the database, and opens the state.
pub fn open(backend: Backend, url: &str, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<Opened> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut config = Config {
        database_url: url.to_owned(),
        issuer: format!("http://{addr}"),
        workers: 1,
        ..Config::default()
    };
    config.keys.kek = Some(SecretString::new(crate::common::BENCH_KEK));
    tweak(&mut config);
    let db = Db::open(&DbUrl::parse(url).map_err(|e| anyhow!(e))?, &DbOptions::default())?;
    db.migrate()?;
    let blocking = config.blocking_threads_per_worker(backend);
    let state = AppState::open(db.clone(), config)?;
    Ok(Opened {
        listener,
        addr,
        db,
        state,
        blocking,
    })
}
