//! The `offboard` command line: `serve`, `migrate`, `credentials`, `keys`, `users`, `token`. Parses arguments,
//! loads configuration, and calls into the library; no logic of its own beyond presentation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use offboard::config::{Config, Loaded};
use offboard::credentials::{self, parse_scopes};
use offboard::db::{Db, DbOptions};
use offboard::keys::{self, Kek};
use offboard::lifecycle::users;
use offboard::tokens::{CLI_CLIENT, TokenRequest, UserKey};
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
    /// Signing keys: list them, rotate the active one.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Users: show their access, and the break-glass commands that end it.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Tokens for automation and tests.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Streams: the services that receive revocation events (Security Event Tokens).
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// The audit log: verify the chain, export entries, offboarding reports, retention.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run a verifying SET receiver that prints every event it gets (to check a stream's wiring).
    Receiver {
        /// Address to listen on; register `http://ADDR/events` with `offboard streams add --push`.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: String,
        /// The transmitter's issuer (default: `issuer` of the configuration).
        #[arg(long)]
        issuer: Option<String>,
        /// The transmitter's JWKS (default: ISSUER/.well-known/jwks.json).
        #[arg(long)]
        jwks_uri: Option<String>,
        /// The audience of the stream.
        #[arg(long)]
        audience: String,
        /// Require this `Authorization` header on every push (the stream's --auth-header).
        #[arg(
            long,
            value_name = "VALUE",
            env = "OFFBOARD_STREAM_AUTH_HEADER",
            hide_env_values = true
        )]
        auth_header: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; prints the verdict and exits non-zero when an entry was altered or removed.
    Verify,
    /// Write entries as NDJSON or CSV (to a file with a progress bar, or to stdout).
    Export {
        /// Entries at or after this time: RFC 3339 (2026-12-01T10:00:00Z) or a date (2026-12-01, UTC).
        #[arg(long)]
        since: Option<String>,
        /// Entries before this time (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        /// Entries after this sequence number (resume an earlier export).
        #[arg(long)]
        after_seq: Option<i64>,
        /// Only these actions (comma-separated, e.g. user.deactivate,set.delivery).
        #[arg(long)]
        action: Option<String>,
        /// Only entries whose target has this id or name (a user id, a userName, a stream id…).
        #[arg(long)]
        target: Option<String>,
        /// ndjson or csv.
        #[arg(long, default_value = "ndjson")]
        format: String,
        /// Write here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// The offboarding report of a user: when access ended, what was invalidated, which services were told.
    Offboarding {
        /// The user's userName (a deleted user's too).
        user_name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply retention now: archive and delete entries older than `audit.retention_days`.
    Prune {
        /// Days to keep (default: `audit.retention_days`).
        #[arg(long)]
        days: Option<u32>,
    },
    /// Append a signed checkpoint of the chain's head now.
    Checkpoint,
}

#[derive(Subcommand)]
enum StreamsCommand {
    /// Register a push stream: offboard POSTs each SET to URL (RFC 8935).
    Add {
        /// The receiver's endpoint: https://, or http:// to a loopback address.
        #[arg(long, value_name = "URL")]
        push: String,
        /// The `aud` of the SETs on this stream (the receiver checks it).
        #[arg(long)]
        audience: String,
        /// An `Authorization` header value offboard sends with each SET, e.g. "Bearer s3cret" (sealed at rest).
        /// Prefer the environment variable, which stays out of the shell history.
        #[arg(
            long,
            value_name = "VALUE",
            env = "OFFBOARD_STREAM_AUTH_HEADER",
            hide_env_values = true
        )]
        auth_header: Option<String>,
        /// Comma-separated event-type URIs (default: every event offboard emits).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List streams with their delivery counts.
    List,
    /// Show a stream's SETs that were dead-lettered or are still waiting, with their last error.
    Show { id: String },
    /// Set a stream's status: enabled, paused (SETs are kept) or disabled (none are kept).
    Status {
        id: String,
        status: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Queue a stream's dead-lettered SETs again (once the receiver is fixed); a running server sends them.
    Retry { id: String },
    /// Remove a stream and its queued SETs.
    Remove { id: String },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List signing keys with their state (next, active, retired) and whether the JWKS still publishes them.
    List,
    /// Activate the pre-published next key, retire the active one (published until its tokens have expired), and
    /// pre-publish a new next key.
    Rotate {
        /// Which key to rotate.
        #[arg(long, default_value = "RS256", value_parser = ["RS256", "EdDSA"])]
        alg: String,
        /// Rotate even if the next key was published less than `keys.jwks_max_age_secs` ago. The old key stays
        /// trusted until its tokens expire; for a key that leaked, use `keys compromise`.
        #[arg(long)]
        force: bool,
    },
    /// Stop trusting a key at once (it leaked): out of the JWKS, no token it signed is accepted anywhere; an
    /// active key is replaced by the next one now. Running servers follow on their next request.
    Compromise {
        /// The key's id (see `keys list`).
        kid: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "declared compromised by an administrator")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Show a user's state, generation, groups, live logins and token activity per client.
    Show {
        /// The userName (case-insensitive).
        user_name: String,
    },
    /// Break glass: deactivate a user now, as a SCIM `active:false` would (tokens die, logins end), and hold it
    /// inactive whatever the identity provider sends until `offboard users release`.
    Deactivate {
        user_name: String,
        /// Why, for the log (required).
        #[arg(long)]
        reason: String,
    },
    /// Lift the hold of `deactivate`: the user takes the `active` the identity provider last asked for.
    Release {
        user_name: String,
        /// Why, for the log.
        #[arg(long, default_value = "released by an administrator")]
        reason: String,
    },
    /// End every session of a user (generation bump, logins revoked); the account stays active.
    RevokeTokens {
        user_name: String,
        /// Why, for the log.
        #[arg(long, default_value = "revoked by an administrator")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint an access and refresh token for a user (client `offboard-cli`) and print the token response JSON.
    Mint {
        /// The userName (case-insensitive).
        #[arg(long)]
        user: String,
        /// Access-token lifetime in seconds (default `tokens.access_ttl_secs`, at most `tokens.max_access_ttl_secs`).
        #[arg(long)]
        ttl: Option<u64>,
        /// Space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// The `aud` (default `default_audience`, itself the issuer by default).
        #[arg(long)]
        audience: Option<String>,
    },
}

#[derive(Subcommand)]
enum CredentialsCommand {
    /// Create a credential; its secret is printed once, as the last line of stdout.
    Create {
        /// Name of the credential (its OAuth client id): 1-64 of A-Z a-z 0-9 . _ -
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: scim, introspect, audit:read, ssf.manage, ssf.read, admin, console
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
    offboard::outbound::install_crypto_provider();
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
    if !matches!(cli.command, Command::Serve) {
        // What an administrator does here is recorded with actor `cli`.
        offboard::audit::set_process_actor("cli");
    }
    match cli.command {
        Command::Audit(cmd) => {
            let db = open_db(&config, 2)?;
            audit_command(&db, config, cmd)
        }
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
        Command::Keys(cmd) => {
            let db = open_db(&config, 1)?;
            keys_command(&db, &config, cmd)
        }
        Command::Users(cmd) => {
            let db = open_db(&config, 2)?;
            users_command(&db, cmd)
        }
        Command::Receiver {
            listen,
            issuer,
            jwks_uri,
            audience,
            auth_header,
        } => {
            let issuer = issuer.unwrap_or_else(|| config.issuer.clone());
            let jwks_uri =
                jwks_uri.unwrap_or_else(|| format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')));
            receiver(
                &listen,
                offboard::receiver::ReceiverConfig {
                    issuer,
                    jwks_uri,
                    audience,
                    expect_authorization: auth_header,
                },
            )
        }
        Command::Streams(cmd) => {
            let db = open_db(&config, 2)?;
            streams_command(&db, config, cmd)
        }
        Command::Token(TokenCommand::Mint {
            user,
            ttl,
            scope,
            audience,
        }) => {
            let db = open_db(&config, 2)?;
            let state = AppState::open(db.clone(), config)?;
            let res = state
                .tokens
                .login(
                    &UserKey::UserName(user.clone()),
                    CLI_CLIENT,
                    &TokenRequest { scope, audience, ttl },
                )
                .map_err(|e| anyhow::anyhow!("cannot mint a token for `{user}`: {} ({e})", e.code()))?;
            state.tokens.activity.flush(&db)?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(())
        }
    }
}

fn receiver(listen: &str, config: offboard::receiver::ReceiverConfig) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = listen.parse().context("--listen must be HOST:PORT")?;
    eprintln!(
        "receiving SETs for audience `{}` from {} at http://{addr}/events (keys from {}); Ctrl-C stops",
        config.audience, config.issuer, config.jwks_uri
    );
    let receiver = std::sync::Arc::new(offboard::receiver::Receiver::new(config, true));
    actix_web::rt::System::new().block_on(async move {
        actix_web::HttpServer::new(move || {
            actix_web::App::new().configure(offboard::receiver::configure(receiver.clone()))
        })
        .workers(1)
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?
        .run()
        .await
        .context("receiver failed")
    })
}

fn audit_command(db: &Db, config: Config, cmd: AuditCommand) -> anyhow::Result<()> {
    use offboard::audit::{export, report, retention};
    match cmd {
        AuditCommand::Verify => audit_verify(db),
        AuditCommand::Export {
            since,
            until,
            after_seq,
            action,
            target,
            format,
            output,
        } => {
            let format: export::Format = format.parse().map_err(anyhow::Error::msg)?;
            let time = |name: &str, v: Option<String>| {
                v.map(|v| offboard::audit::export::parse_time(name, &v).map_err(anyhow::Error::msg))
                    .transpose()
            };
            let selection = offboard::db::repo::audit::Selection {
                since: time("--since", since)?,
                until: time("--until", until)?,
                after_seq,
                actions: action
                    .map(|a| {
                        a.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                target,
                subject: None,
            };
            audit_export(db, selection, format, output.as_deref())
        }
        AuditCommand::Offboarding { user_name, json } => {
            let r = match report::for_user_name(db, &user_name) {
                Ok(r) => r,
                Err(report::ReportError::NotFound) => {
                    anyhow::bail!("no user has (or had) userName `{user_name}`")
                }
                Err(report::ReportError::Db(e)) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", report::to_text(&r));
            }
            Ok(())
        }
        AuditCommand::Prune { days } => {
            let days = days.unwrap_or(config.audit.retention_days);
            if days == 0 {
                anyhow::bail!(
                    "no retention is configured (audit.retention_days = 0 keeps every entry); pass --days N"
                );
            }
            let archive = config.audit.archive_dir.clone();
            let state = AppState::open(db.clone(), config)?;
            let sign = keys::audit_signer(&state.tokens.keys);
            match retention::run(db, days, archive.as_deref(), &sign)? {
                None => eprintln!("no audit entries older than {days} days"),
                Some(p) => eprintln!(
                    "deleted entries {} to {} ({} entries){}",
                    p.first_seq,
                    p.through_seq,
                    p.deleted,
                    p.archive
                        .map(|a| format!(", archived to {}", a.display()))
                        .unwrap_or_default()
                ),
            }
            Ok(())
        }
        AuditCommand::Checkpoint => {
            let state = AppState::open(db.clone(), config)?;
            match checkpoint(&state)? {
                Some(seq) => eprintln!("signed checkpoint of entry {seq} appended"),
                None => eprintln!("nothing new since the last checkpoint"),
            }
            Ok(())
        }
    }
}

/// `offboard audit verify`: fails (non-zero exit) when the chain is broken.
fn audit_verify(db: &Db) -> anyhow::Result<()> {
    use offboard::audit::verify;
    let bar = progress_bar(db, &offboard::db::repo::audit::Selection::default(), "verifying")?;
    let check = keys::audit_signature_checker(db)?;
    let v = verify::run_with_progress(db, &check, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&v)?);
    match (v.ok, v.first_bad_seq) {
        (true, _) => {
            eprintln!(
                "audit log intact: {} entries, {} to {}",
                v.entries,
                v.first_seq.unwrap_or(0),
                v.last_seq.unwrap_or(0)
            );
            Ok(())
        }
        (false, seq) => anyhow::bail!(
            "audit log verification FAILED at entry {}: {}",
            seq.unwrap_or(0),
            v.problem.unwrap_or_default()
        ),
    }
}

/// `offboard audit export`: the selection, batch by batch, to a file or stdout.
fn audit_export(
    db: &Db,
    selection: offboard::db::repo::audit::Selection,
    format: offboard::audit::export::Format,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use offboard::audit::export;
    let mut out: Box<dyn std::io::Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = progress_bar(db, &selection, "exporting")?;
    out.write_all(&format.header())?;
    let mut cursor = export::Cursor::new(selection, None);
    let mut written = 0u64;
    loop {
        let rows = cursor.next_batch(db)?;
        if rows.is_empty() {
            break;
        }
        out.write_all(&format.encode(&rows))?;
        written += rows.len() as u64;
        bar.set_position(written);
    }
    out.flush()?;
    bar.finish_and_clear();
    let last = cursor.last_seq().map_or_else(String::new, |s| {
        format!(" (last seq {s}; resume with --after-seq {s})")
    });
    match output {
        Some(path) => eprintln!("exported {written} entries to {}{last}", path.display()),
        None => eprintln!("exported {written} entries{last}"),
    }
    Ok(())
}

/// Appends a signed checkpoint with the active RS256 key.
fn checkpoint(state: &AppState) -> anyhow::Result<Option<i64>> {
    let sign = keys::audit_signer(&state.tokens.keys);
    offboard::audit::checkpoint(&state.db, &state.config.issuer, &sign)
}

/// A progress bar over the entries of `selection` on stderr when it is a terminal; hidden otherwise, so scripts
/// and logs stay clean (and the entries are only counted when the bar is shown).
fn progress_bar(
    db: &Db,
    selection: &offboard::db::repo::audit::Selection,
    what: &'static str,
) -> anyhow::Result<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return Ok(indicatif::ProgressBar::hidden());
    }
    let total = offboard::audit::export::count(db, selection)?;
    let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} entries ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    Ok(bar)
}

fn streams_command(db: &Db, config: Config, cmd: StreamsCommand) -> anyhow::Result<()> {
    use offboard::fanout::streams::{self, Delivery, NewStream};
    match cmd {
        StreamsCommand::Add {
            push,
            audience,
            auth_header,
            events,
            description,
        } => {
            let caps = streams::StreamCaps::from(&config.fanout);
            let state = AppState::open(db.clone(), config)?;
            let row = streams::create_within(
                db,
                &state.tokens.keys,
                &NewStream {
                    audience,
                    delivery: Delivery::Push {
                        endpoint_url: push,
                        authorization_header: auth_header,
                    },
                    events_requested: events,
                    description,
                    created_by: "cli".into(),
                },
                &caps,
            )?;
            eprintln!(
                "Created push stream for audience `{}` to {}; events: {}",
                row.audience,
                row.endpoint_url.as_deref().unwrap_or("-"),
                row.events_requested
            );
            println!("{}", row.id);
        }
        StreamsCommand::List => {
            let list = streams::list(db)?;
            if list.is_empty() {
                eprintln!("no streams yet: add one with `offboard streams add --push URL --audience AUD`");
                return Ok(());
            }
            println!(
                "{:<32} {:<8} {:<6} {:>8} {:>9} {:>5}  AUDIENCE / ENDPOINT",
                "ID", "STATUS", "METHOD", "PENDING", "DELIVERED", "DEAD"
            );
            for s in list {
                println!(
                    "{:<32} {:<8} {:<6} {:>8} {:>9} {:>5}  {} {}",
                    s.row.id,
                    s.row.status,
                    s.row.delivery_method,
                    s.pending,
                    s.delivered,
                    s.dead,
                    s.row.audience,
                    s.row.endpoint_url.as_deref().unwrap_or("")
                );
            }
        }
        StreamsCommand::Show { id } => {
            let rows =
                db.read(|c| offboard::db::repo::fanout::outbox_of(c, &id).map_err(anyhow::Error::from))?;
            let open: Vec<_> = rows.iter().filter(|r| r.status != "delivered").collect();
            println!("{} SETs, {} not delivered", rows.len(), open.len());
            for r in open {
                println!(
                    "  {} {:<9} attempts {:<4} next {}  {}  {}",
                    r.jti,
                    r.status,
                    r.attempts,
                    fmt_time(r.next_attempt_at),
                    r.event_type.rsplit('/').next().unwrap_or(""),
                    r.last_error.as_deref().unwrap_or("")
                );
            }
        }
        StreamsCommand::Status { id, status, reason } => {
            streams::set_status(db, &id, &status, reason.as_deref())?;
            eprintln!("Stream {id} is now {status}.");
        }
        StreamsCommand::Retry { id } => {
            let n = streams::retry_dead(db, &id)?;
            eprintln!("Queued {n} dead-lettered SET(s) of stream {id} again.");
        }
        StreamsCommand::Remove { id } => {
            streams::remove(db, &id)?;
            eprintln!("Removed stream {id} and its queued SETs.");
        }
    }
    Ok(())
}

fn fmt_time(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn keys_command(db: &Db, config: &Config, cmd: KeysCommand) -> anyhow::Result<()> {
    let (kek, _) = Kek::load(config)?;
    match cmd {
        KeysCommand::List => {
            for kid in keys::ensure(
                db,
                &kek,
                &keys::needed_algs(config),
                config.keys.import_pem_file.as_deref(),
            )? {
                eprintln!("created signing key {kid}");
            }
            println!(
                "{:<44} {:<6} {:<11} {:<20} {:<20} PUBLISHED",
                "KID", "ALG", "STATE", "CREATED", "ACTIVATED"
            );
            let mut foreign = 0;
            for k in keys::list(db)? {
                if k.kek_id != kek.id() {
                    foreign += 1;
                }
                let published = if k.published {
                    k.publish_until
                        .map_or_else(|| "yes".to_owned(), |t| format!("until {}", fmt_time(t)))
                } else {
                    "no".to_owned()
                };
                println!(
                    "{:<44} {:<6} {:<11} {:<20} {:<20} {published}",
                    k.kid,
                    k.alg,
                    k.state,
                    fmt_time(k.created),
                    k.activated_at.map_or_else(|| "-".to_owned(), fmt_time)
                );
            }
            if foreign > 0 {
                eprintln!(
                    "warning: {foreign} key(s) were sealed under another key-encryption key than the one configured; \
                     a server with this configuration cannot sign with them"
                );
            }
        }
        KeysCommand::Rotate { alg, force } => {
            let alg = keys::KeyAlg::parse(&alg).context("--alg must be RS256 or EdDSA")?;
            let r = keys::rotate(db, &kek, config, alg, force)?;
            eprintln!("Rotated the {} signing key.", r.alg.as_str());
            eprintln!("  active now: {}", r.activated);
            if let Some(old) = &r.retired {
                eprintln!(
                    "  retired:    {old} (still published until {} UTC, when every token it signed has expired)",
                    fmt_time(r.retired_published_until)
                );
            }
            eprintln!(
                "  next:       {} (published now; rotate again after keys.jwks_max_age_secs)",
                r.next
            );
            eprintln!(
                "Running servers switch within keys.reload_secs ({} s).",
                config.keys.reload_secs
            );
        }
        KeysCommand::Compromise { kid, reason } => {
            let c = keys::compromise(db, &kek, config, &kid, &reason)?;
            eprintln!(
                "Key {} ({}, was {}) is compromised: it is out of the JWKS and no token it signed is accepted.",
                c.kid,
                c.alg.as_str(),
                c.was
            );
            if let Some(active) = &c.activated {
                eprintln!("  active now: {active}");
            }
            if let Some(next) = &c.next {
                eprintln!("  next:       {next}");
            }
            eprintln!(
                "Running servers follow on their next token, introspection or JWKS request. Services that verify \
                 tokens themselves must drop kid {} and fetch the JWKS again now.",
                c.kid
            );
        }
    }
    Ok(())
}

fn find_user(db: &Db, user_name: &str) -> anyhow::Result<offboard::lifecycle::users::UserView> {
    users::find_by_user_name(db, user_name)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("no live user with userName `{user_name}`"))
}

fn show_user(db: &Db, user_name: &str) -> anyhow::Result<()> {
    let view = find_user(db, user_name)?;
    let u = &view.user;
    let access = users::access_of(db, &u.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("user        {} ({})", u.user_name, u.id);
    println!("active      {}", u.active);
    if let Some(h) = &access.hold {
        println!(
            "hold        since {} UTC: {} (the identity provider asks for active: {}; `offboard users release` \
             applies it)",
            fmt_time(h.held_at),
            h.reason,
            h.idp_active
        );
    }
    println!(
        "generation  {} (tokens with a lower tgen are dead)",
        u.token_generation
    );
    let groups: Vec<&str> = view.groups.iter().map(|(_, n)| n.as_str()).collect();
    println!(
        "groups      {}",
        if groups.is_empty() {
            "-".to_owned()
        } else {
            groups.join(", ")
        }
    );
    println!("last change {} UTC", fmt_time(u.last_modified));
    println!("live logins {}", access.live_logins.len());
    for f in &access.live_logins {
        println!(
            "  sid {}  client {}  since {}  until {}",
            f.sid,
            f.client_id,
            fmt_time(f.created),
            fmt_time(f.expires_at)
        );
    }
    println!("token activity (written every few seconds by the server):");
    if access.activity.is_empty() {
        println!("  none");
    }
    let t = |v: Option<chrono::NaiveDateTime>| v.map_or_else(|| "never".to_owned(), fmt_time);
    for a in &access.activity {
        println!(
            "  client {:<24} minted {:<20} refreshed {:<20} introspected {}",
            a.client_id,
            t(a.last_minted_at),
            t(a.last_refreshed_at),
            t(a.last_introspected_at)
        );
    }
    Ok(())
}

fn users_command(db: &Db, cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Show { user_name } => show_user(db, &user_name)?,
        UsersCommand::Deactivate { user_name, reason } => {
            if reason.trim().is_empty() {
                anyhow::bail!("--reason must say why");
            }
            let view = find_user(db, &user_name)?;
            match users::deactivate(db, &view.user.id, &reason).map_err(|e| anyhow::anyhow!("{e}"))? {
                users::Held::Deactivated(generation) => eprintln!(
                    "Deactivated and held `{}` ({}); token generation is now {generation}: every earlier token is \
                     dead and every login ended. The identity provider cannot reactivate it until `offboard users \
                     release`.",
                    view.user.user_name, view.user.id
                ),
                users::Held::HeldInactive => eprintln!(
                    "`{}` was inactive already; it is now held inactive until `offboard users release`.",
                    view.user.user_name
                ),
                users::Held::AlreadyHeld => {
                    eprintln!("`{}` is held already; nothing changed.", view.user.user_name);
                }
            }
        }
        UsersCommand::Release { user_name, reason } => {
            if reason.trim().is_empty() {
                anyhow::bail!("--reason must say why");
            }
            let view = find_user(db, &user_name)?;
            match users::release(db, &view.user.id, &reason).map_err(|e| anyhow::anyhow!("{e}"))? {
                users::Released::Reactivated => eprintln!(
                    "Released `{}`: the identity provider last asked for it to be active, so it is active again \
                     (tokens from before the hold stay dead).",
                    view.user.user_name
                ),
                users::Released::StaysInactive => eprintln!(
                    "Released `{}`: it stays inactive, as the identity provider last asked.",
                    view.user.user_name
                ),
                users::Released::NotHeld => {
                    eprintln!("`{}` is not held; nothing changed.", view.user.user_name);
                }
            }
        }
        UsersCommand::RevokeTokens { user_name, reason } => {
            let view = find_user(db, &user_name)?;
            let ended =
                users::revoke_tokens(db, &view.user.id, &reason).map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "Ended every session of `{}`: generation {} in force, {} login(s) revoked. The account stays active.",
                view.user.user_name, ended.generation, ended.families_revoked
            );
        }
    }
    Ok(())
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
/// How often token activity (last minted, refreshed, introspected) is written.
const ACTIVITY_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// How often expired revocation records, assertion ids and refresh-token families are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Runs `job` on the blocking pool every `period` (the first run one period from now), logging failures.
fn every<E: std::fmt::Display + Send + 'static>(
    period: Duration,
    what: &'static str,
    job: impl Fn() -> Result<(), E> + Send + Sync + Clone + 'static,
) -> actix_web::rt::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            let job = job.clone();
            match actix_web::web::block(job).await {
                Ok(Err(e)) => tracing::warn!("could not {what}: {e}"),
                Err(e) => tracing::warn!("could not {what}: {e}"),
                Ok(Ok(())) => {}
            }
        }
    })
}

/// The audit log's periodic work in `serve`: retention and signed checkpoints.
fn audit_tasks(state: &AppState) -> [actix_web::rt::task::JoinHandle<()>; 2] {
    let retention = {
        let state = state.clone();
        let (days, archive) = (
            state.config.audit.retention_days,
            state.config.audit.archive_dir.clone(),
        );
        every(PRUNE_INTERVAL, "apply audit retention", move || {
            if days == 0 {
                return Ok(());
            }
            let sign = keys::audit_signer(&state.tokens.keys);
            offboard::audit::retention::run(&state.db, days, archive.as_deref(), &sign).map(drop)
        })
    };
    let checkpoints = {
        let state = state.clone();
        let period = Duration::from_secs(state.config.audit.checkpoint_secs.max(1));
        let enabled = state.config.audit.checkpoint_secs > 0;
        every(period, "append a signed audit checkpoint", move || {
            if enabled {
                checkpoint(&state).map(drop)
            } else {
                Ok(())
            }
        })
    };
    [retention, checkpoints]
}

fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let db = open_db(&config, config.database.pool_size)?;
    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, usize::from)
    } else {
        config.workers
    };
    let blocking_threads = config.blocking_threads_per_worker(db.backend());
    let reload = Duration::from_secs(config.keys.reload_secs);
    let state = AppState::open(db.clone(), config)?;
    tracing::info!(
        listen = %addr,
        issuer = %state.config.issuer,
        database = %db.url().redacted(),
        "offboard {} serving SCIM at {}/scim/v2",
        env!("CARGO_PKG_VERSION"),
        state.config.issuer
    );
    let usage = state.usage.clone();
    let tokens = state.tokens.clone();
    let fanout = offboard::fanout::worker::Worker::new(
        db.clone(),
        state.config.clone(),
        tokens.keys.clone(),
        state.fanout.clone(),
    )
    .spawn()
    .context("cannot start the fan-out worker")?;
    actix_web::rt::System::new().block_on(async move {
        let flusher = {
            let (usage, db) = (usage.clone(), db.clone());
            every(USAGE_FLUSH_INTERVAL, "record credential usage", move || {
                usage.flush(&db).map(drop)
            })
        };
        let activity = {
            let (tokens, db) = (tokens.clone(), db.clone());
            every(ACTIVITY_FLUSH_INTERVAL, "record token activity", move || {
                tokens.activity.flush(&db).map(drop)
            })
        };
        let reloader = {
            let tokens = tokens.clone();
            every(reload, "reload signing keys", move || {
                tokens.keys.reload_if_stale();
                Ok::<_, std::convert::Infallible>(())
            })
        };
        let pruner = {
            let db = db.clone();
            let max_ttl = tokens.config.tokens.max_access_ttl_secs;
            every(PRUNE_INTERVAL, "prune expired token records", move || {
                offboard::tokens::prune(&db, max_ttl).map(|n| {
                    if n > 0 {
                        tracing::info!("pruned {n} expired token records");
                    }
                })
            })
        };
        let [retention, checkpoints] = audit_tasks(&state);
        let server =
            actix_web::HttpServer::new(move || actix_web::App::new().configure(configure(state.clone())))
                .workers(workers)
                .worker_max_blocking_threads(blocking_threads)
                .bind(addr)
                .with_context(|| format!("cannot listen on {addr} (key `listen`)"))?
                .run();
        server.await.context("HTTP server failed")?;
        for task in [flusher, activity, reloader, pruner, retention, checkpoints] {
            task.abort();
        }
        if let Err(e) = usage.flush(&db) {
            tracing::warn!("could not record credential usage at shutdown: {e}");
        }
        if let Err(e) = tokens.activity.flush(&db) {
            tracing::warn!("could not record token activity at shutdown: {e}");
        }
        fanout.stop();
        tracing::info!("offboard stopped");
        Ok(())
    })
}
