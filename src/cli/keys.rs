//! `offboard keys`: the signing keys — list them, rotate the active one, declare one compromised.

use anyhow::Context;
use clap::Subcommand;
use offboard::config::Config;
use offboard::keys::{self, Kek};

use serde_json::json;

use super::{fmt_time, json_time, json_time_opt, print_json};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// List signing keys with their state (next, active, retired) and whether the JWKS still publishes them.
    /// Only reads: it creates no key and no key-encryption key (`offboard serve` does, on start).
    List {
        /// Print JSON (an array of keys) instead of a table.
        #[arg(long)]
        json: bool,
    },
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

pub fn run(config: &Config, cmd: KeysCommand) -> anyhow::Result<()> {
    let db = &super::open_db(config, 1)?;
    match cmd {
        KeysCommand::List { json } => list(db, config, json)?,
        KeysCommand::Rotate { alg, force } => {
            let (kek, _) = Kek::load(config)?;
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
            let (kek, _) = Kek::load(config)?;
            let c = offboard::lifecycle::compromise_key(db, &kek, config, &kid, &reason)?;
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

/// `keys list`: reads the keys, and the configured key-encryption key only if there is one (a configured key, a
/// key file, or the development key file already on disk), so that a fresh database stays as it is.
fn list(db: &offboard::db::Db, config: &Config, json: bool) -> anyhow::Result<()> {
    let kek_id = if config.keys.kek.is_some()
        || config.keys.kek_file.is_some()
        || std::path::Path::new(keys::kek::DEV_KEK_FILE).exists()
    {
        Some(Kek::load(config)?.0.id().to_owned())
    } else {
        None
    };
    let rows = keys::list(db)?;
    let foreign = rows
        .iter()
        .filter(|k| kek_id.as_ref().is_some_and(|id| *id != k.kek_id))
        .count();
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|k| {
                json!({
                    "kid": k.kid,
                    "alg": k.alg,
                    "state": k.state,
                    "created": json_time(k.created),
                    "activatedAt": json_time_opt(k.activated_at),
                    "retiredAt": json_time_opt(k.retired_at),
                    "published": k.published,
                    "publishUntil": json_time_opt(k.publish_until),
                    "sealedByConfiguredKek": kek_id.as_ref().map(|id| *id == k.kek_id),
                })
            })
            .collect();
        print_json(&out.into())?;
    } else {
        if rows.is_empty() {
            eprintln!("no signing keys yet: `offboard serve` creates them on start");
            return Ok(());
        }
        println!(
            "{:<44} {:<6} {:<11} {:<20} {:<20} PUBLISHED",
            "KID", "ALG", "STATE", "CREATED", "ACTIVATED"
        );
        for k in &rows {
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
    }
    if foreign > 0 {
        eprintln!(
            "warning: {foreign} key(s) were sealed under another key-encryption key than the one configured; \
             a server with this configuration cannot sign with them"
        );
    }
    Ok(())
}
