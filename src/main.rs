//! The `offboard` command line: `serve`, `migrate`, `credentials`. Parses arguments, loads configuration, and
//! calls into the library; no logic of its own beyond presentation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use offboard::config::{Config, Loaded};
use offboard::credentials::{self, parse_scopes};
use offboard::db::{Db, DbOptions};
use offboard::{AppState, configure, telemetry};

#[derive(Parser)]
#[command(
    name = "offboard",
    version,
    about = "SCIM 2.0 provisioning target and token authority: offboarding that is instant and provable."
)]
struct Cli {
    /// TOML configuration file; every key can be overridden by an OFFBOARD_<KEY> environment variable.
    #[arg(long, global = true, env = "OFFBOARD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage API credentials (the IdP's SCIM client, services that introspect, auditors).
    #[command(subcommand)]
    Credentials(CredentialsCommand),
}

#[derive(Subcommand)]
enum CredentialsCommand {
    /// Create a credential; its secret is printed once, as the last line of stdout.
    Create {
        /// Name of the credential (its OAuth client id): 1-64 of A-Z a-z 0-9 . _ -
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: scim, introspect, audit:read, ssf.manage, ssf.read, admin
        #[arg(long)]
        scopes: String,
    },
    /// List credentials (never their secrets).
    List,
    /// Revoke a credential; a running server refuses it from its next request.
    Revoke {
        /// Name of the credential.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&std::path::Path>, serving: bool) -> anyhow::Result<Config> {
    let Loaded { config, unknown_keys } = Config::load(path)?;
    // The server logs at the configured level; one-shot commands print their own output and log only problems.
    telemetry::init(
        if serving { &config.log_level } else { "warn" },
        config.log_format,
    );
    for key in unknown_keys {
        tracing::warn!("ignoring unknown configuration key `{key}`");
    }
    Ok(config)
}

fn open_db(config: &Config, pool_size: u32) -> anyhow::Result<Db> {
    let url = config.db_url();
    let opts = DbOptions {
        pool_size,
        connect_timeout: Duration::from_secs(config.database.connect_timeout_secs),
        sqlite_busy_timeout_ms: config.database.sqlite_busy_timeout_ms,
    };
    let db = Db::open(&url, &opts).with_context(|| format!("cannot open database {}", url.redacted()))?;
    let applied = db.migrate()?;
    for name in &applied {
        tracing::info!("applied migration {name}");
    }
    Ok(db)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(cli.config.as_deref(), matches!(cli.command, Command::Serve))?;
    match cli.command {
        Command::Serve => serve(config),
        Command::Migrate => {
            let db = open_db(&config, 1)?;
            eprintln!("database {} is up to date", db.url().redacted());
            Ok(())
        }
        Command::Credentials(cmd) => {
            let db = open_db(&config, 1)?;
            credentials_command(&db, cmd)
        }
    }
}

fn credentials_command(db: &Db, cmd: CredentialsCommand) -> anyhow::Result<()> {
    match cmd {
        CredentialsCommand::Create { name, scopes } => {
            let scopes = parse_scopes(&scopes)?;
            let secret = credentials::create(db, &name, &scopes)?;
            let list = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
            eprintln!("Created credential `{name}` with scopes {list}.");
            eprintln!(
                "Its secret follows; store it now, it cannot be shown again. Send it as `Authorization: Bearer <secret>`."
            );
            println!("{}", secret.expose());
        }
        CredentialsCommand::List => {
            let rows = credentials::list(db)?;
            if rows.is_empty() {
                eprintln!(
                    "no credentials yet: create one with `offboard credentials create --name NAME --scopes scim`"
                );
                return Ok(());
            }
            println!(
                "{:<32} {:<40} {:<20} {:<20} STATUS",
                "NAME", "SCOPES", "CREATED", "LAST USED"
            );
            for c in rows {
                let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
                let status = c
                    .revoked_at
                    .map_or_else(|| "active".to_owned(), |t| format!("revoked {}", fmt(t)));
                println!(
                    "{:<32} {:<40} {:<20} {:<20} {status}",
                    c.name,
                    c.scopes,
                    fmt(c.created),
                    c.last_used_at.map_or_else(|| "never".to_owned(), fmt)
                );
            }
        }
        CredentialsCommand::Revoke { name } => {
            credentials::revoke(db, &name)?;
            eprintln!("Revoked credential `{name}`.");
        }
    }
    Ok(())
}

/// How often credential last-used times are written.
const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let db = open_db(&config, config.database.pool_size)?;
    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, usize::from)
    } else {
        config.workers
    };
    tracing::info!(
        listen = %addr,
        issuer = %config.issuer,
        database = %db.url().redacted(),
        "offboard {} serving SCIM at {}/scim/v2",
        env!("CARGO_PKG_VERSION"),
        config.issuer
    );
    let blocking_threads = config.blocking_threads_per_worker(db.backend());
    let state = AppState::new(db.clone(), config);
    let usage = state.usage.clone();
    actix_web::rt::System::new().block_on(async move {
        let flusher = {
            let (usage, db) = (usage.clone(), db.clone());
            actix_web::rt::spawn(async move {
                let mut tick = actix_web::rt::time::interval(USAGE_FLUSH_INTERVAL);
                loop {
                    tick.tick().await;
                    let (usage, db) = (usage.clone(), db.clone());
                    match actix_web::web::block(move || usage.flush(&db)).await {
                        Ok(Err(e)) => tracing::warn!("could not record credential usage: {e}"),
                        Err(e) => tracing::warn!("could not record credential usage: {e}"),
                        Ok(Ok(_)) => {}
                    }
                }
            })
        };
        let server =
            actix_web::HttpServer::new(move || actix_web::App::new().configure(configure(state.clone())))
                .workers(workers)
                .worker_max_blocking_threads(blocking_threads)
                .bind(addr)
                .with_context(|| format!("cannot listen on {addr} (key `listen`)"))?
                .run();
        server.await.context("HTTP server failed")?;
        flusher.abort();
        if let Err(e) = usage.flush(&db) {
            tracing::warn!("could not record credential usage at shutdown: {e}");
        }
        tracing::info!("offboard stopped");
        Ok(())
    })
}
