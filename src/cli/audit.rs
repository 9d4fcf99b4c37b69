//! `offboard audit`: verify the chain, export entries, offboarding reports, retention, checkpoints.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use offboard::AppState;
use offboard::audit::{export, report, retention, verify};
use offboard::config::Config;
use offboard::db::Db;
use offboard::keys;

#[derive(Subcommand)]
pub enum AuditCommand {
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

pub fn run(config: Config, cmd: AuditCommand) -> anyhow::Result<()> {
    let db = &super::open_db(&config, 2)?;
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
            offboard::fanout::pending::expand(db)?;
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
pub(super) fn checkpoint(state: &AppState) -> anyhow::Result<Option<i64>> {
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
