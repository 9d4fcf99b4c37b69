//! The key-encryption key (KEK) that seals signing keys at rest: AES-256-GCM, a fresh 96-bit nonce per seal, the
//! key id as associated data (a sealed key moved to another row does not open). Where the KEK comes from: the
//! config key `keys.kek` (env `OFFBOARD_KEYS__KEK`), else the file `keys.kek_file`, else, in dev mode only, a
//! `0600` file `offboard.kek` in the working directory that offboard creates
//! (docs/decisions/0021-dev-mode-key-encryption-key.md).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::KeyError;
use crate::config::Config;

/// Where the dev-mode KEK lives, relative to the working directory.
pub const DEV_KEK_FILE: &str = "offboard.kek";

/// A loaded key-encryption key. `Debug` prints only its id.
pub struct Kek {
    key: LessSafeKey,
    id: String,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How the KEK was found, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    Config,
    File(PathBuf),
    /// Dev mode: read from, or just created as, `offboard.kek`.
    DevFile {
        path: PathBuf,
        created: bool,
    },
}

impl Kek {
    /// Parses 32 bytes given as base64 (standard or URL-safe, padding optional).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| {
                KeyError::Kek("is not base64 (generate one with `openssl rand -base64 32`)".into())
            })?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::Kek(format!(
                "must be 32 bytes, got {} (generate one with `openssl rand -base64 32`)",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError::Kek("is unusable".into()))?;
        let digest = Sha256::new()
            .chain_update(b"offboard-kek-id:")
            .chain_update(bytes)
            .finalize();
        Ok(Self {
            key: LessSafeKey::new(key),
            id: hex::encode(digest.get(..8).unwrap_or_default()),
        })
    }

    /// A short public fingerprint of this KEK (stored beside each sealed key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks, creating nothing, that [`Kek::load`] will find a usable KEK: the configured one parses, the
    /// configured file reads and parses, or dev mode may use (or create) `offboard.kek`.
    pub fn check(config: &Config) -> Result<(), KeyError> {
        if config.keys.kek.is_some() || config.keys.kek_file.is_some() || !config.dev_mode() {
            return Self::load(config).map(drop);
        }
        match std::fs::read_to_string(DEV_KEK_FILE) {
            Ok(text) => Self::from_base64(&text).map(drop),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(KeyError::Kek(format!("file {DEV_KEK_FILE} cannot be read: {e}"))),
        }
    }

    /// Loads the KEK the configuration names, creating the dev file when allowed.
    pub fn load(config: &Config) -> Result<(Self, KekSource), KeyError> {
        if let Some(kek) = &config.keys.kek {
            return Ok((Self::from_base64(kek.expose())?, KekSource::Config));
        }
        if let Some(path) = &config.keys.kek_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| KeyError::Kek(format!("file {} cannot be read: {e}", path.display())))?;
            return Ok((Self::from_base64(&text)?, KekSource::File(path.clone())));
        }
        if !config.dev_mode() {
            return Err(KeyError::Kek(format!(
                "is required: the issuer {} is not a loopback http:// URL, so offboard will not invent one. Set \
                 `keys.kek` (env OFFBOARD_KEYS__KEK) or `keys.kek_file` to 32 random bytes in base64 \
                 (`openssl rand -base64 32`)",
                config.issuer
            )));
        }
        let path = PathBuf::from(DEV_KEK_FILE);
        let (kek, created) = Self::dev_file(&path)?;
        Ok((kek, KekSource::DevFile { path, created }))
    }

    fn dev_file(path: &Path) -> Result<(Self, bool), KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => return Ok((Self::from_base64(&text)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(KeyError::Kek(format!(
                    "file {} cannot be read: {e}",
                    path.display()
                )));
            }
        }
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Kek("could not be generated: no randomness".into()))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .map_err(|e| KeyError::Kek(format!("file {} cannot be created: {e}", path.display())))?;
        file.write_all(format!("{}\n", STANDARD.encode(bytes)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| KeyError::Kek(format!("file {} cannot be written: {e}", path.display())))?;
        Ok((Self::from_bytes(&bytes)?, true))
    }

    /// Seals `plaintext` for the key `kid`: base64 of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<String, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyError::Crypto("no randomness for a nonce".into()))?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Crypto("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(STANDARD.encode(out))
    }

    /// Opens what [`seal`](Self::seal) produced for `kid`.
    pub fn open(&self, kid: &str, sealed: &str) -> Result<Vec<u8>, KeyError> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| KeyError::Sealed(kid.to_owned()))?;
        let (nonce, rest) = bytes
            .split_at_checked(NONCE_LEN)
            .ok_or_else(|| KeyError::Sealed(kid.to_owned()))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Sealed(kid.to_owned()))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Sealed(kid.to_owned()))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> Kek {
        Kek::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn seal_and_open_round_trip_bound_to_the_kid() {
        let k = kek();
        let sealed = k.seal("kid-1", b"private key").unwrap();
        assert!(!sealed.contains("private"));
        assert_eq!(k.open("kid-1", &sealed).unwrap(), b"private key");
        assert!(
            k.open("kid-2", &sealed).is_err(),
            "moved to another kid, it must not open"
        );
        let other = Kek::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open("kid-1", &sealed).is_err());
        assert_ne!(k.id(), other.id());
        assert_ne!(
            k.seal("kid-1", b"x").unwrap(),
            k.seal("kid-1", b"x").unwrap(),
            "fresh nonce each time"
        );
    }

    #[test]
    fn bad_keks_are_refused_with_a_hint() {
        assert!(
            Kek::from_base64("not base64!")
                .unwrap_err()
                .to_string()
                .contains("openssl rand")
        );
        assert!(
            Kek::from_base64(&STANDARD.encode([1u8; 16]))
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        assert!(!format!("{:?}", kek()).contains("key:"));
    }

    #[test]
    fn production_issuers_need_a_kek() {
        let config = Config {
            issuer: "https://offboard.example.com".into(),
            ..Config::default()
        };
        let err = Kek::load(&config).unwrap_err().to_string();
        assert!(
            err.contains("keys.kek") && err.contains("OFFBOARD_KEYS__KEK"),
            "{err}"
        );
    }

    #[test]
    fn the_dev_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEV_KEK_FILE);
        let (a, created) = Kek::dev_file(&path).unwrap();
        assert!(created);
        let (b, created) = Kek::dev_file(&path).unwrap();
        assert!(!created);
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
