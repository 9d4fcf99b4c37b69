//! The optional state file ([`crate::GuardConfig::state_file`]): the revocation state, the JWKS and the stream's
//! audience, with the snapshot position the state was built from and when the feed was last confirmed, so a guard
//! that restarts while offboard is unreachable is still complete. Written atomically (a temp file in the same
//! directory, flushed to disk, then renamed over the old one), after every poll that changed the state and before
//! the poll that acknowledges it; so every SET offboard considers delivered is in the file, and what is not yet
//! acknowledged is served again by the stream after a restart (applying it twice changes nothing).
//!
//! A file is used only when it is readable, of this format, for the same issuer, audience and stream, and written
//! within the last access-token lifetime (the snapshot bound); anything else is ignored with a warning and the
//! guard reads a fresh snapshot. The file holds no secret (not the stream credential); it holds user ids, ended
//! session ids and revoked token ids, so it is created readable by its owner only.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::Revocations;
use crate::{GuardConfig, epoch_now};

/// The format version; a file of another version is ignored.
pub const VERSION: u32 = 1;

/// The file's content. `R` is `&Revocations` when writing (no copy of the state) and `Revocations` when reading.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved<R> {
    pub version: u32,
    pub issuer: String,
    pub audience: String,
    pub stream_id: String,
    /// The stream's `aud`, which the SETs carry.
    pub stream_audience: String,
    /// When the file was written (seconds since the epoch).
    pub written_at: i64,
    /// When the feed was last confirmed (milliseconds since the epoch); `None`: never.
    pub confirmed_at_ms: Option<i64>,
    /// The outbox position of the snapshot the state was first built from; every SET acknowledged since is in
    /// `revocations`, every later one is still queued on the stream.
    pub snapshot_position: i64,
    /// The access-token lifetime + leeway offboard stated with the snapshot.
    pub max_token_lifetime: i64,
    /// The JWKS document last fetched.
    pub jwks: String,
    pub revocations: R,
}

/// Why a state file is not used.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("it does not parse: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("it is of format version {0}, not {VERSION}")]
    Version(u32),
    #[error("it was written for another issuer, audience or stream")]
    Mismatch,
    #[error("it was written {0} s ago, longer than the access-token lifetime ({1} s): a snapshot is needed")]
    TooOld(i64, i64),
}

/// Reads the state file at `path` for `config`.
pub fn load(path: &Path, config: &GuardConfig) -> Result<Saved<Revocations>, Unusable> {
    let bytes = std::fs::read(path)?;
    let saved: Saved<Revocations> = serde_json::from_slice(&bytes)?;
    if saved.version != VERSION {
        return Err(Unusable::Version(saved.version));
    }
    if saved.issuer != config.issuer
        || saved.audience != config.audience
        || saved.stream_id != config.stream_id
    {
        return Err(Unusable::Mismatch);
    }
    let age = epoch_now() - saved.written_at;
    // A file from the future (the clock went back) is no better than an old one.
    if !(0..=saved.max_token_lifetime).contains(&age) {
        return Err(Unusable::TooOld(age, saved.max_token_lifetime));
    }
    Ok(saved)
}

/// The temp file next to `path` that [`write`] renames over it.
fn temp_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `saved` to `path` atomically: readers (a restarting guard) see the old file or the new one, never a
/// part.
pub fn write(path: &Path, saved: &Saved<&Revocations>) -> std::io::Result<()> {
    let temp = temp_of(path);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&temp)?;
        let mut out = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut out, saved)?;
        out.flush()?;
        out.get_ref().sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename itself reaches the disk with the directory.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved<'a>(config: &GuardConfig, written_at: i64, r: &'a Revocations) -> Saved<&'a Revocations> {
        Saved {
            version: VERSION,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            stream_id: config.stream_id.clone(),
            stream_audience: "aud".into(),
            written_at,
            confirmed_at_ms: Some(written_at * 1000),
            snapshot_position: 42,
            max_token_lifetime: 3605,
            jwks: r#"{"keys":[]}"#.into(),
            revocations: r,
        }
    }

    #[test]
    fn a_file_round_trips_and_is_refused_when_it_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guard.json");
        let config = GuardConfig::new("https://o.example", "svc", "stream", "secret");
        let mut r = Revocations::default();
        r.raise("u", 3, epoch_now() + 100);
        r.end_session("s", epoch_now() + 100);
        r.revoke_token("j", epoch_now() + 100);
        write(&path, &saved(&config, epoch_now(), &r)).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["guard.json"], "no temp file is left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("secret"), "the credential is not in the file");
        let back = load(&path, &config).unwrap();
        assert_eq!(back.snapshot_position, 42);
        assert_eq!(back.revocations.len(), (1, 1, 1, 0));
        assert_eq!(back.revocations.min_generation("u"), Some(3));

        let other = GuardConfig::new("https://o.example", "svc", "another-stream", "secret");
        assert!(matches!(load(&path, &other), Err(Unusable::Mismatch)));
        write(&path, &saved(&config, epoch_now() - 3606, &r)).unwrap();
        assert!(matches!(load(&path, &config), Err(Unusable::TooOld(..))));
        write(&path, &saved(&config, epoch_now() + 600, &r)).unwrap();
        assert!(
            matches!(load(&path, &config), Err(Unusable::TooOld(..))),
            "from the future"
        );
        std::fs::write(&path, b"{\"version\":1,\"iss").unwrap();
        assert!(matches!(load(&path, &config), Err(Unusable::Parse(_))));
        assert!(matches!(
            load(&dir.path().join("missing.json"), &config),
            Err(Unusable::Read(_))
        ));
        // Writing into a directory that does not exist fails without leaving anything.
        assert!(
            write(
                &dir.path().join("no/such/guard.json"),
                &saved(&config, epoch_now(), &r)
            )
            .is_err()
        );
    }
}
