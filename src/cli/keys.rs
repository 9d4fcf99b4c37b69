//! `offboard keys`: the signing keys — list them, rotate the active one, declare one compromised.

use anyhow::Context;
use clap::Subcommand;
use offboard::config::Config;
use offboard::keys::{self, Kek};

use super::fmt_time;

#[derive(Subcommand)]
pub enum KeysCommand {
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

pub fn run(config: &Config, cmd: KeysCommand) -> anyhow::Result<()> {
    let db = &super::open_db(config, 1)?;
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
