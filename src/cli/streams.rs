//! `offboard streams`: the services that receive revocation events (Security Event Tokens).

use clap::Subcommand;
use offboard::AppState;
use offboard::config::Config;
use offboard::fanout::streams::{self, Delivery, NewStream};

use super::fmt_time;

#[derive(Subcommand)]
pub enum StreamsCommand {
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

pub fn run(config: Config, cmd: StreamsCommand) -> anyhow::Result<()> {
    let db = &super::open_db(&config, 2)?;
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
            offboard::fanout::pending::expand(db)?;
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
