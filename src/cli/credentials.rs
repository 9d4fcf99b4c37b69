//! `offboard credentials`: the API credentials (the IdP's SCIM client, services that introspect, auditors).

use clap::Subcommand;
use offboard::config::Config;
use offboard::credentials::{self, parse_scopes};
use serde_json::json;

use super::{json_time, json_time_opt, print_json};

#[derive(Subcommand)]
pub enum CredentialsCommand {
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
    List {
        /// Print JSON (an array of credentials) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential; a running server refuses it from its next request.
    Revoke {
        /// Name of the credential.
        name: String,
    },
}

pub fn run(config: &Config, cmd: CredentialsCommand) -> anyhow::Result<()> {
    let db = super::open_db(config, 1)?;
    match cmd {
        CredentialsCommand::Create { name, scopes } => {
            let scopes = parse_scopes(&scopes)?;
            let secret = credentials::create(&db, &name, &scopes)?;
            let list = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
            eprintln!("Created credential `{name}` with scopes {list}.");
            eprintln!(
                "Its secret follows; store it now, it cannot be shown again. Send it as `Authorization: Bearer <secret>`."
            );
            println!("{}", secret.expose());
        }
        CredentialsCommand::List { json } => {
            let rows = credentials::list(&db)?;
            if json {
                let out: Vec<_> = rows
                    .iter()
                    .map(|c| {
                        json!({
                            "name": c.name,
                            "scopes": c.scopes.split([',', ' ']).filter(|s| !s.is_empty()).collect::<Vec<_>>(),
                            "created": json_time(c.created),
                            "lastUsedAt": json_time_opt(c.last_used_at),
                            "revokedAt": json_time_opt(c.revoked_at),
                            "active": c.revoked_at.is_none(),
                        })
                    })
                    .collect();
                return print_json(&out.into());
            }
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
            credentials::revoke(&db, &name)?;
            eprintln!("Revoked credential `{name}`.");
        }
    }
    Ok(())
}
