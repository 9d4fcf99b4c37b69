//! `offboard streams`: the services that receive revocation events (Security Event Tokens).

use clap::Subcommand;
use offboard::AppState;
use offboard::config::Config;
use offboard::fanout::streams::{self, Delivery, NewStream};

use serde_json::json;

use super::{fmt_time, json_time, json_time_opt, print_json};

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
        /// A note for operators (shown by `streams list --json`).
        #[arg(long)]
        description: Option<String>,
    },
    /// List streams with their delivery counts.
    List {
        /// Print JSON (an array of streams) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a stream's SETs that were dead-lettered or are still waiting, with their last error.
    Show {
        /// The stream's id (see `streams list`).
        id: String,
        /// Print JSON (the stream and its undelivered SETs) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set a stream's status: enabled, paused (SETs are kept) or disabled (none are kept).
    Status {
        /// The stream's id (see `streams list`).
        id: String,
        /// The new status.
        #[arg(value_parser = ["enabled", "paused", "disabled"])]
        status: String,
        /// Why, for the audit log (shown as the stream's status reason).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Queue a stream's dead-lettered SETs again (once the receiver is fixed); a running server sends them.
    Retry {
        /// The stream's id (see `streams list`).
        id: String,
    },
    /// Remove a stream and its queued SETs.
    Remove {
        /// The stream's id (see `streams list`).
        id: String,
    },
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
        StreamsCommand::List { json } => list(db, json)?,
        StreamsCommand::Show { id, json } => show(db, &id, json)?,
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

fn list(db: &offboard::db::Db, json: bool) -> anyhow::Result<()> {
    let list = streams::list(db)?;
    if json {
        let out: Vec<_> = list
            .iter()
            .map(|s| {
                json!({
                    "id": s.row.id,
                    "audience": s.row.audience,
                    "deliveryMethod": s.row.delivery_method,
                    "endpointUrl": s.row.endpoint_url,
                    "eventsRequested": streams::events_of(&s.row),
                    "description": s.row.description,
                    "status": s.row.status,
                    "statusReason": s.row.status_reason,
                    "createdBy": s.row.created_by,
                    "created": json_time(s.row.created),
                    "pending": s.pending,
                    "delivered": s.delivered,
                    "dead": s.dead,
                })
            })
            .collect();
        return print_json(&out.into());
    }
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
    Ok(())
}

fn show(db: &offboard::db::Db, id: &str, json: bool) -> anyhow::Result<()> {
    let stream = streams::get(db, id)?;
    offboard::fanout::pending::expand(db)?;
    let rows = db.read(|c| offboard::db::repo::fanout::outbox_of(c, id).map_err(anyhow::Error::from))?;
    let open: Vec<_> = rows.iter().filter(|r| r.status != "delivered").collect();
    if json {
        let sets: Vec<_> = open
            .iter()
            .map(|r| {
                json!({
                    "jti": r.jti,
                    "eventType": r.event_type,
                    "status": r.status,
                    "attempts": r.attempts,
                    "nextAttemptAt": json_time(r.next_attempt_at),
                    "lastError": r.last_error,
                    "created": json_time(r.created),
                    "deliveredAt": json_time_opt(r.delivered_at),
                })
            })
            .collect();
        return print_json(&json!({
            "id": stream.id,
            "audience": stream.audience,
            "status": stream.status,
            "total": rows.len(),
            "undelivered": sets,
        }));
    }
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
    Ok(())
}
