//! Retention: entries older than the configured number of days are written to an archive file (when an archive
//! directory is set) and then deleted, in one transaction that also appends an `audit.retention` entry naming the
//! `seq` and `hash` of the last entry removed, with a JWS over both made with the active signing key. That entry
//! is what anchors the first kept entry for verification (see [`super::verify`]), so pruning never breaks the
//! chain of what remains, and deleting anything beyond what retention removed is still caught. The newest entry
//! is never removed, so the chain always has a head to go on from. The chain lock is taken only at commit.
//!
//! The archive is NDJSON in the export format, written and synced to a temporary name and renamed before any row is
//! deleted: if the process dies in between, the rows are still in the database and the next run writes them again.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::export::{Cursor, Format};
use super::{Entry, Signer};
use crate::db::repo::audit::Selection;
use crate::db::{Db, DbError, now, repo};

/// The action of the entry a pruning run appends.
pub const ACTION: &str = "audit.retention";

/// What one run removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub first_seq: i64,
    pub through_seq: i64,
    pub deleted: usize,
    pub archive: Option<PathBuf>,
}

/// Removes the entries older than `days` days (archiving them first into `archive_dir`, if given).
/// `Ok(None)` when nothing is old enough.
pub fn run(
    db: &Db,
    days: u32,
    archive_dir: Option<&Path>,
    sign: Signer<'_>,
) -> anyhow::Result<Option<Pruned>> {
    prune_before(
        db,
        now() - chrono::TimeDelta::days(i64::from(days)),
        archive_dir,
        sign,
    )
}

/// Removes the entries written before `cutoff` (archiving them first into `archive_dir`, if given).
pub fn prune_before(
    db: &Db,
    cutoff: chrono::NaiveDateTime,
    archive_dir: Option<&Path>,
    sign: Signer<'_>,
) -> anyhow::Result<Option<Pruned>> {
    let (first, last, head) = db.read(|c| {
        Ok::<_, DbError>((
            repo::audit::first(c)?,
            repo::audit::last_before(c, cutoff)?,
            repo::audit::tail(c)?,
        ))
    })?;
    let (Some(first), Some(mut last), Some((head, _))) = (first, last, head) else {
        return Ok(None);
    };
    if last.seq >= head {
        // Keep the newest entry: the next append chains onto it.
        let Some(before) = db
            .read(|c| repo::audit::after(c, head - 2, 1).map_err(DbError::from))?
            .pop()
        else {
            return Ok(None);
        };
        last = before;
    }
    if last.seq < first.seq {
        return Ok(None);
    }
    let claims = serde_json::json!({
        "iat": now().and_utc().timestamp(),
        "audit_through_seq": last.seq,
        "audit_through_hash": last.hash,
    });
    let jws = sign(super::verify::RETENTION_TYP, &claims)
        .map_err(|e| anyhow::anyhow!("cannot sign the retention record: {e}"))?;
    let archive = match archive_dir {
        Some(dir) => Some(archive(db, dir, first.seq, last.seq)?),
        None => None,
    };
    let file_name = archive
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let deleted = db.write(|c| {
        let deleted = repo::audit::delete_through(c, last.seq)?;
        let mut entry = Entry::new(ACTION)
            .detail("first_seq", first.seq)
            .detail("through_seq", last.seq)
            .detail("through_hash", last.hash.as_str())
            .detail("deleted", deleted)
            .detail("cutoff", super::format_time(cutoff))
            .detail("jws", jws.as_str());
        if let Some(name) = &file_name {
            entry = entry.detail("archive", name.as_str());
        }
        super::record(entry);
        Ok::<_, DbError>(deleted)
    })?;
    tracing::info!(
        audit.first_seq = first.seq,
        audit.through_seq = last.seq,
        deleted,
        "pruned audit entries {} to {} (written before {})",
        first.seq,
        last.seq,
        super::format_time(cutoff)
    );
    Ok(Some(Pruned {
        first_seq: first.seq,
        through_seq: last.seq,
        deleted,
        archive,
    }))
}

/// Writes entries `first..=through` to `dir/audit-<first>-<through>.ndjson`, synced, and returns its path.
fn archive(db: &Db, dir: &Path, first: i64, through: i64) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the audit archive directory {}", dir.display()))?;
    let path = dir.join(format!("audit-{first:012}-{through:012}.ndjson"));
    let partial = path.with_extension("ndjson.partial");
    // The archive holds what the log held: readable by its owner only, whatever the umask.
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let selection = Selection {
        after_seq: Some(first - 1),
        ..Selection::default()
    };
    let mut cursor = Cursor::new(selection, u64::try_from(through - first + 1).ok());
    loop {
        let rows = cursor.next_batch(db)?;
        if rows.is_empty() {
            break;
        }
        file.write_all(&Format::Ndjson.encode(&rows))?;
    }
    file.sync_all()?;
    drop(file);
    fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    Ok(path)
}
