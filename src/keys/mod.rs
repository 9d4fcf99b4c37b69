//! Signing keys: generated on first start (RS256 with RSA-2048; `EdDSA` as an additional key when access tokens use
//! it), sealed at rest under the key-encryption key ([`kek`]), named by their RFC 7638 thumbprint, rotated with
//! overlap, published as a JWKS; signing and verifying JWS with them.
//!
//! Key states (one `active` and one `next` per algorithm, enforced by unique indexes, so several instances on one
//! PostgreSQL agree): `next` is published but does not sign yet; `active` signs; `retired` stays published until
//! every token it signed has expired (`publish_until` = retirement + longest access-token lifetime + leeway +
//! JWKS max-age). [`rotate`] refuses to activate a `next` key published for less than the JWKS max-age (verifiers
//! may not have fetched it yet) unless forced.
//!
//! A running server keeps the keys in memory ([`KeyStore`]) and re-reads them every `keys.reload_secs` and, at
//! most once a second, when a token names a `kid` it does not know; so a rotation by the CLI or by another
//! instance is followed within `keys.reload_secs`, while the old key stays published. Private keys never leave
//! this module unsealed, and no `Debug` prints them.
//!
//! A key can also be declared **compromised** ([`compromise`], `offboard keys compromise`): it is trusted for
//! nothing from that commit on. No cache may outlive that, whichever process made it: introspection reads the
//! key's state in its one statement (whose memory, `crate::state`, the compromise's commit empties), and the
//! token endpoint and the JWKS re-read the (tiny) list of compromised keys on every request
//! ([`KeyStore::sync`]) and reload the keys when it changed; verified-signature caches are
//! checked against the keys in memory on every hit. Only the signing of SETs and audit records follows at the
//! periodic reload.

pub mod kek;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use chrono::NaiveDateTime;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::Serialize;
use serde_json::Value;

pub use kek::{Kek, KekSource};

use crate::config::Config;
use crate::db::models::SigningKeyRow;
use crate::db::{Db, DbConnection, DbError, now, repo};

/// The verifier's clock leeway, seconds (docs/decisions/0018-when-a-token-is-active.md; RFC 8725 asks for little).
pub const LEEWAY_SECS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key-encryption key (`keys.kek`) {0}")]
    Kek(String),
    #[error(
        "signing key {0} cannot be opened with this key-encryption key: was it sealed under another `keys.kek`?"
    )]
    Sealed(String),
    #[error("key material: {0}")]
    Crypto(String),
    #[error("{0}")]
    Rotation(String),
    #[error("`keys.import_pem_file`: {0}")]
    Import(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for KeyError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// A signature algorithm offboard signs with. Never HS*: tokens leave offboard, and a shared secret would let
/// every verifier mint them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    RS256,
    EdDSA,
}

impl KeyAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Self::RS256),
            "EdDSA" => Some(Self::EdDSA),
            _ => None,
        }
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl From<crate::config::TokenAlgorithm> for KeyAlg {
    fn from(a: crate::config::TokenAlgorithm) -> Self {
        match a {
            crate::config::TokenAlgorithm::RS256 => Self::RS256,
            crate::config::TokenAlgorithm::EdDSA => Self::EdDSA,
        }
    }
}

/// PKCS#8 private key bytes. `Debug` prints nothing of them.
struct Pkcs8(Vec<u8>);

impl fmt::Debug for Pkcs8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkcs8(…)")
    }
}

/// A private key with its public JWK and thumbprint.
struct Material {
    kid: String,
    alg: KeyAlg,
    pkcs8: Pkcs8,
    jwk: Jwk,
}

fn crypto(e: impl fmt::Display) -> KeyError {
    KeyError::Crypto(e.to_string())
}

impl Material {
    fn from_pkcs8(alg: KeyAlg, pkcs8: Vec<u8>) -> Result<Self, KeyError> {
        let encoding = match alg {
            KeyAlg::RS256 => {
                let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8).map_err(crypto)?;
                if pair.public_modulus_len() < 256 {
                    return Err(KeyError::Crypto("RSA keys must have at least 2048 bits".into()));
                }
                let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.clone()));
                EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(crypto)?
            }
            KeyAlg::EdDSA => {
                Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(crypto)?;
                EncodingKey::from_ed_der(&pkcs8)
            }
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg.jwt()).map_err(crypto)?;
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(crypto)?;
        jwk.common.key_id = Some(kid.clone());
        Ok(Self {
            kid,
            alg,
            pkcs8: Pkcs8(pkcs8),
            jwk,
        })
    }

    fn generate(alg: KeyAlg) -> Result<Self, KeyError> {
        let pkcs8 = match alg {
            KeyAlg::RS256 => {
                use aws_lc_rs::encoding::AsDer;
                let pair =
                    aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(crypto)?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = pair.as_der().map_err(crypto)?;
                der.as_ref().to_vec()
            }
            // PKCS#8 v1 (seed only): the form jsonwebtoken derives the public JWK from.
            KeyAlg::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
                .map_err(crypto)?
                .as_ref()
                .to_vec(),
        };
        Self::from_pkcs8(alg, pkcs8)
    }

    fn row(&self, kek: &Kek, state: &str, at: NaiveDateTime) -> Result<SigningKeyRow, KeyError> {
        Ok(SigningKeyRow {
            kid: self.kid.clone(),
            alg: self.alg.as_str().to_owned(),
            state: state.to_owned(),
            private_key: kek.seal(&self.kid, &self.pkcs8.0)?,
            kek_id: kek.id().to_owned(),
            public_jwk: serde_json::to_string(&self.jwk).map_err(crypto)?,
            created: at,
            activated_at: (state == "active").then_some(at),
            retired_at: None,
            publish_until: None,
        })
    }
}

/// A parsed private key, ready to sign.
enum Signer {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ed(Ed25519KeyPair),
}

/// A key that signs. `Debug` shows its id only.
///
/// The private key is parsed once, when the key is loaded: `jsonwebtoken::encode` parses it again on every call,
/// which measured 1 116 RS256 signatures/s against 2 898 with the key parsed once (`benches/tokens.rs`). The
/// compact serialisation (RFC 7515 §7.1) is written here; verification stays with jsonwebtoken, and a unit test
/// checks that it accepts what this signs.
pub struct SigningKey {
    pub kid: String,
    pub alg: KeyAlg,
    signer: Signer,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn new(kid: String, alg: KeyAlg, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let signer = match alg {
            KeyAlg::RS256 => Signer::Rsa(aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8).map_err(crypto)?),
            KeyAlg::EdDSA => Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(crypto)?),
        };
        Ok(Self { kid, alg, signer })
    }

    /// Signs `claims` as a compact JWS with header `typ` and this key's `alg` and `kid`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::json!({ "typ": typ, "alg": self.alg.as_str(), "kid": self.kid });
        let header = serde_json::to_vec(&header).map_err(crypto)?;
        let payload = serde_json::to_vec(claims).map_err(crypto)?;
        let mut jws = URL_SAFE_NO_PAD.encode(header);
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = match &self.signer {
            Signer::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    jws.as_bytes(),
                    &mut sig,
                )
                .map_err(crypto)?;
                sig
            }
            Signer::Ed(pair) => pair.sign(jws.as_bytes()).as_ref().to_vec(),
        };
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jws)
    }
}

/// A published public key, for verification. Its algorithm is ours, never the token header's.
pub struct VerifyingKey {
    pub kid: String,
    pub alg: KeyAlg,
    pub decoding: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// What one read of `signing_keys` gives a server.
struct KeySet {
    signing: HashMap<KeyAlg, Arc<SigningKey>>,
    verifying: HashMap<String, Arc<VerifyingKey>>,
    jwks: Arc<str>,
    /// The kids of compromised keys (sorted), as read with the rest.
    compromised: Vec<String>,
}

impl KeySet {
    fn load(db: &Db, kek: &Kek) -> Result<Self, KeyError> {
        let (rows, compromised) = db.read(|c| {
            let rows = repo::keys::published(c, now())?;
            let compromised = repo::keys::compromised(c)?;
            Ok::<_, DbError>((rows, compromised))
        })?;
        let mut signing = HashMap::new();
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        for row in rows {
            let Some(alg) = KeyAlg::parse(&row.alg) else {
                tracing::warn!(key.kid = %row.kid, "ignoring signing key {} with unknown alg {}", row.kid, row.alg);
                continue;
            };
            let jwk: Jwk = serde_json::from_str(&row.public_jwk).map_err(crypto)?;
            let decoding = DecodingKey::from_jwk(&jwk).map_err(crypto)?;
            if row.state == "active" {
                if row.kek_id != kek.id() {
                    return Err(KeyError::Sealed(row.kid));
                }
                let material = Material::from_pkcs8(alg, kek.open(&row.kid, &row.private_key)?)?;
                if material.kid != row.kid {
                    return Err(KeyError::Crypto(format!(
                        "stored key {} does not match its kid",
                        row.kid
                    )));
                }
                signing.insert(
                    alg,
                    Arc::new(SigningKey::new(row.kid.clone(), alg, &material.pkcs8.0)?),
                );
            }
            jwks.push(serde_json::to_value(&jwk).map_err(crypto)?);
            verifying.insert(
                row.kid.clone(),
                Arc::new(VerifyingKey {
                    kid: row.kid,
                    alg,
                    decoding,
                }),
            );
        }
        let jwks = serde_json::json!({ "keys": jwks }).to_string().into();
        Ok(Self {
            signing,
            verifying,
            jwks,
            compromised,
        })
    }
}

/// The keys of a running server, shared by its workers.
pub struct KeyStore {
    db: Db,
    kek: Arc<Kek>,
    access_alg: KeyAlg,
    reload_every: Duration,
    current: RwLock<Arc<KeySet>>,
    last_load: Mutex<Instant>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("access_alg", &self.access_alg)
            .finish_non_exhaustive()
    }
}

/// The algorithms a configuration signs with: RS256 always (SETs, docs/decisions/0024-sets-signed-with-rs256.md),
/// plus the access-token one.
pub fn needed_algs(config: &Config) -> Vec<KeyAlg> {
    let access = KeyAlg::from(config.tokens.algorithm);
    if access == KeyAlg::RS256 {
        vec![KeyAlg::RS256]
    } else {
        vec![KeyAlg::RS256, access]
    }
}

impl KeyStore {
    /// Creates any missing `active`/`next` key the configuration needs, then loads the published keys.
    pub fn open(db: &Db, config: &Config, kek: Kek) -> Result<Self, KeyError> {
        let created = ensure(
            db,
            &kek,
            &needed_algs(config),
            config.keys.import_pem_file.as_deref(),
        )?;
        for kid in &created {
            tracing::info!(key.kid = %kid, "created signing key {kid}");
        }
        let set = KeySet::load(db, &kek)?;
        Ok(Self {
            db: db.clone(),
            kek: Arc::new(kek),
            access_alg: config.tokens.algorithm.into(),
            reload_every: Duration::from_secs(config.keys.reload_secs),
            current: RwLock::new(Arc::new(set)),
            last_load: Mutex::new(Instant::now()),
        })
    }

    fn snapshot(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the keys from the database.
    pub fn reload(&self) -> Result<(), KeyError> {
        let set = KeySet::load(&self.db, &self.kek)?;
        if let Ok(mut last) = self.last_load.lock() {
            *last = Instant::now();
        }
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    /// Reloads when the last load is older than `min_age`. Returns whether it reloaded.
    fn reload_if_older(&self, min_age: Duration) -> bool {
        // Claim the reload before doing it, so concurrent callers do not all reload.
        let due = self.last_load.lock().map_or(true, |mut t| {
            let due = t.elapsed() >= min_age;
            if due {
                *t = Instant::now();
            }
            due
        });
        if !due {
            return false;
        }
        match self.reload() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("could not reload signing keys: {e}");
                false
            }
        }
    }

    /// The periodic reload (`keys.reload_secs`), for the server's background task.
    pub fn reload_if_stale(&self) {
        self.reload_if_older(self.reload_every);
    }

    /// Re-reads the list of compromised keys (one small statement) and reloads every key when it changed, so a
    /// compromise declared by the CLI or another instance holds from this process's next request on.
    pub fn sync(&self) -> Result<(), KeyError> {
        let compromised = self
            .db
            .read(|c| repo::keys::compromised(c).map_err(DbError::from))?;
        if compromised != self.snapshot().compromised {
            tracing::warn!(keys = ?compromised, "signing keys were declared compromised; reloading the keys");
            self.reload()?;
        }
        Ok(())
    }

    /// Whether `kid` is one of the keys this process trusts now (published, not compromised).
    pub fn trusts(&self, kid: &str) -> bool {
        self.snapshot().verifying.contains_key(kid)
    }

    /// Whether `kid` was one of offboard's keys, now compromised (as of the last [`sync`](Self::sync)).
    pub fn is_compromised(&self, kid: &str) -> bool {
        self.snapshot().compromised.iter().any(|k| k == kid)
    }

    /// The key that signs access tokens.
    pub fn access_signer(&self) -> Result<Arc<SigningKey>, KeyError> {
        self.signer(self.access_alg)
    }

    /// The active key of `alg`.
    pub fn signer(&self, alg: KeyAlg) -> Result<Arc<SigningKey>, KeyError> {
        if let Some(k) = self.snapshot().signing.get(&alg) {
            return Ok(k.clone());
        }
        self.reload()?;
        self.snapshot()
            .signing
            .get(&alg)
            .cloned()
            .ok_or_else(|| KeyError::Rotation(format!("no active {} signing key", alg.as_str())))
    }

    /// The published key `kid`. An unknown `kid` triggers a reload at most once a second (a key rotated in by
    /// another process), so a flood of made-up ids cannot hammer the database.
    pub fn verifying_key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        if let Some(k) = self.snapshot().verifying.get(kid) {
            return Some(k.clone());
        }
        if self.reload_if_older(Duration::from_secs(1)) {
            return self.snapshot().verifying.get(kid).cloned();
        }
        None
    }

    /// Seals a secret that offboard must send later (a stream's `Authorization` header) under the
    /// key-encryption key, bound to `context`.
    pub fn seal_secret(&self, context: &str, plaintext: &[u8]) -> Result<String, KeyError> {
        self.kek.seal(context, plaintext)
    }

    /// Opens what [`seal_secret`](Self::seal_secret) sealed for `context`.
    pub fn open_secret(&self, context: &str, sealed: &str) -> Result<Vec<u8>, KeyError> {
        self.kek.open(context, sealed)
    }

    /// The JWKS document (RFC 7517): public parts of every published key.
    pub fn jwks(&self) -> Arc<str> {
        self.snapshot().jwks.clone()
    }
}

/// Reads the keys of `import_pem_file` (PKCS#8 `PRIVATE KEY` blocks) for `alg`.
fn importable(path: &Path, alg: KeyAlg) -> Result<Vec<Material>, KeyError> {
    let text = std::fs::read(path).map_err(|e| KeyError::Import(format!("{}: {e}", path.display())))?;
    let blocks = pem::parse_many(&text).map_err(|e| KeyError::Import(format!("{}: {e}", path.display())))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "PRIVATE KEY")
        .filter_map(|b| Material::from_pkcs8(alg, b.into_contents()).ok())
        .collect())
}

/// A new key for `alg`: the first key of the import file not yet in the database, else a generated one.
fn new_material(db: &Db, alg: KeyAlg, import: Option<&Path>) -> Result<Material, KeyError> {
    if let Some(path) = import {
        for m in importable(path, alg)? {
            let kid = m.kid.clone();
            if !db.read(|c| repo::keys::exists(c, &kid).map_err(DbError::from))? {
                return Ok(m);
            }
        }
    }
    Material::generate(alg)
}

fn is_unique_violation(e: &KeyError) -> bool {
    matches!(
        e,
        KeyError::Db(DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _
        )))
    )
}

/// Creates the `active` and `next` keys of each algorithm that lacks them; returns the kids created. Keys are
/// generated outside any transaction; if another instance created one meanwhile, ours is dropped.
pub fn ensure(db: &Db, kek: &Kek, algs: &[KeyAlg], import: Option<&Path>) -> Result<Vec<String>, KeyError> {
    let mut created = Vec::new();
    for &alg in algs {
        for state in ["active", "next"] {
            let have = db.read(|c| repo::keys::in_state(c, alg.as_str(), state).map_err(DbError::from))?;
            if have.is_some() {
                continue;
            }
            let material = new_material(db, alg, import)?;
            let row = material.row(kek, state, now())?;
            let inserted = db.write(|c| {
                if repo::keys::in_state(c, alg.as_str(), state)?.is_some() {
                    return Ok(false);
                }
                repo::keys::insert(c, &row)?;
                crate::audit::record(
                    crate::audit::Entry::new("key.create")
                        .target("key", &row.kid, None)
                        .detail("alg", alg.as_str())
                        .detail("state", state),
                );
                Ok::<_, KeyError>(true)
            });
            match inserted {
                Ok(true) => created.push(row.kid),
                Ok(false) => {}
                Err(e) if is_unique_violation(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(created)
}

/// What [`rotate`] did.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub alg: KeyAlg,
    pub activated: String,
    pub retired: Option<String>,
    pub retired_published_until: NaiveDateTime,
    pub next: String,
}

/// How long a retired key stays published: every token it signed has expired by then, and every verifier's
/// cached JWKS has been refreshed.
pub fn retirement_window(config: &Config) -> chrono::TimeDelta {
    let secs = config.tokens.max_access_ttl_secs
        + LEEWAY_SECS
        + config.keys.jwks_max_age_secs
        + config.keys.reload_secs;
    chrono::TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2))
}

/// Makes the `next` key of `alg` active, retires the active one (still published for
/// [`retirement_window`]), and pre-publishes a new `next` key, all in one transaction.
pub fn rotate(db: &Db, kek: &Kek, config: &Config, alg: KeyAlg, force: bool) -> Result<Rotation, KeyError> {
    ensure(db, kek, &[alg], config.keys.import_pem_file.as_deref())?;
    let fresh = new_material(db, alg, config.keys.import_pem_file.as_deref())?;
    // A next key may sign once every verifier's cached JWKS can have expired since every instance (each re-reads
    // the keys every `reload_secs`) began publishing it.
    let max_age = chrono::TimeDelta::seconds(
        i64::try_from(config.keys.jwks_max_age_secs + config.keys.reload_secs).unwrap_or(i64::MAX / 2),
    );
    db.write(|c| {
        let at = now();
        let next = repo::keys::in_state(c, alg.as_str(), "next")?
            .ok_or_else(|| KeyError::Rotation(format!("no next {} key to activate", alg.as_str())))?;
        let ready_at = next.created + max_age;
        if !force && ready_at > at {
            return Err(KeyError::Rotation(format!(
                "the next {} key {} was published at {} UTC; verifiers that cache the JWKS for up to {} s (plus \
                 keys.reload_secs) may not have it yet. Rotate after {} UTC, or pass --force to rotate now",
                alg.as_str(),
                next.kid,
                next.created.format("%Y-%m-%d %H:%M:%S"),
                config.keys.jwks_max_age_secs,
                ready_at.format("%Y-%m-%d %H:%M:%S"),
            )));
        }
        let retired = repo::keys::in_state(c, alg.as_str(), "active")?.map(|r| r.kid);
        let until = at + retirement_window(config);
        repo::keys::retire_active(c, alg.as_str(), at, until)?;
        if repo::keys::activate(c, &next.kid, at)? != 1 {
            return Err(KeyError::Rotation("the next key changed during rotation; try again".into()));
        }
        let row = fresh.row(kek, "next", at)?;
        repo::keys::insert(c, &row)?;
        crate::audit::record(
            crate::audit::Entry::new("key.rotate")
                .target("key", &next.kid, None)
                .detail("alg", alg.as_str())
                .detail("activated", next.kid.as_str())
                .detail("retired", retired.as_deref())
                .detail("retired_published_until", crate::audit::format_time(until))
                .detail("next", row.kid.as_str())
                .detail("forced", force),
        );
        Ok(Rotation {
            alg,
            activated: next.kid,
            retired,
            retired_published_until: until,
            next: row.kid,
        })
    })
}

/// What [`compromise`] did.
#[derive(Debug, Clone)]
pub struct Compromise {
    pub kid: String,
    pub alg: KeyAlg,
    /// The state the key was in (`active`, `next` or `retired`).
    pub was: String,
    /// The key that signs now, when the compromised one was active.
    pub activated: Option<String>,
    /// The new `next` key, when the compromised one was active or next.
    pub next: Option<String>,
}

/// Declares key `kid` compromised, in one transaction: it leaves the JWKS and is trusted for nothing (no token
/// it signed introspects active or is accepted anywhere) from the commit on. An active key is replaced at once
/// by the `next` one, whatever its age (verifiers that have not fetched it yet refuse the new tokens until they
/// do: the price of a compromise), and a new `next` key is published; a compromised `next` key is replaced too.
/// Recorded as `key.compromised`, with the SET `announce` queues in the same transaction (callers use
/// `lifecycle::compromise_key`).
pub fn compromise_with(
    db: &Db,
    kek: &Kek,
    config: &Config,
    kid: &str,
    reason: &str,
    announce: impl Fn(&mut DbConnection) -> diesel::QueryResult<(String, usize)>,
) -> Result<Compromise, KeyError> {
    let row = db
        .read(|c| repo::keys::find(c, kid).map_err(DbError::from))?
        .ok_or_else(|| KeyError::Rotation(format!("no signing key {kid}")))?;
    let alg = KeyAlg::parse(&row.alg)
        .ok_or_else(|| KeyError::Rotation(format!("key {kid} has an unknown algorithm {}", row.alg)))?;
    if row.state == repo::keys::COMPROMISED {
        return Err(KeyError::Rotation(format!("key {kid} is compromised already")));
    }
    let fresh = if row.state == "retired" {
        None
    } else {
        Some(new_material(db, alg, config.keys.import_pem_file.as_deref())?)
    };
    db.write(|c| {
        let at = now();
        let row =
            repo::keys::find(c, kid)?.ok_or_else(|| KeyError::Rotation(format!("no signing key {kid}")))?;
        let mut activated = None;
        if row.state == "active" {
            let next = repo::keys::in_state(c, alg.as_str(), "next")?
                .ok_or_else(|| KeyError::Rotation(format!("no next {} key to activate", alg.as_str())))?;
            if repo::keys::mark_compromised(c, kid, at)? != 1 || repo::keys::activate(c, &next.kid, at)? != 1
            {
                return Err(KeyError::Rotation("the keys changed meanwhile; try again".into()));
            }
            activated = Some(next.kid);
        } else if repo::keys::mark_compromised(c, kid, at)? != 1 {
            return Err(KeyError::Rotation("the keys changed meanwhile; try again".into()));
        }
        let next = match &fresh {
            Some(m) => {
                let new_next = m.row(kek, "next", at)?;
                repo::keys::insert(c, &new_next)?;
                Some(new_next.kid)
            }
            None => None,
        };
        // Services that cache the JWKS learn it from the fan-out, in this transaction like every revocation
        // (`announce`: `lifecycle::compromise_key` queues the SET; keys know nothing of the fan-out).
        let (txn, queued) = announce(c)?;
        crate::audit::record(
            crate::audit::Entry::new("key.compromised")
                .target("key", kid, None)
                .detail("txn", txn.as_str())
                .detail("sets_queued", queued)
                .detail("alg", alg.as_str())
                .detail("was", row.state.as_str())
                .detail("reason", reason)
                .detail("activated", activated.as_deref())
                .detail("next", next.as_deref()),
        );
        tracing::warn!(key.kid = %kid, reason, "signing key {kid} declared compromised");
        Ok(Compromise {
            kid: kid.to_owned(),
            alg,
            was: row.state,
            activated,
            next,
        })
    })
}

/// Signs audit checkpoints and retention records (`typ` given) with the active RS256 key.
pub fn audit_signer(keys: &KeyStore) -> impl Fn(&str, &Value) -> Result<String, String> + '_ {
    move |typ, claims| {
        keys.signer(KeyAlg::RS256)
            .and_then(|k| k.sign(typ, claims))
            .map_err(|e| e.to_string())
    }
}

/// Checks the JWS of an audit checkpoint or retention entry against every signing key offboard ever had (public
/// halves only, from the database: no key-encryption key needed, and retired keys still count, since such an
/// entry outlives its key's publish window). Returns the JWS's `typ` and claims.
pub fn audit_signature_checker(
    db: &Db,
) -> Result<impl Fn(&str) -> Result<(String, Value), String> + use<>, KeyError> {
    let rows = db.read(|c| repo::keys::all(c).map_err(DbError::from))?;
    let mut keys = HashMap::new();
    for row in rows {
        let Some(alg) = KeyAlg::parse(&row.alg) else {
            continue;
        };
        let jwk: Jwk = serde_json::from_str(&row.public_jwk).map_err(crypto)?;
        keys.insert(row.kid, (alg, DecodingKey::from_jwk(&jwk).map_err(crypto)?));
    }
    Ok(move |jws: &str| {
        let header = jsonwebtoken::decode_header(jws).map_err(|e| format!("not a JWS: {e}"))?;
        let kid = header.kid.ok_or("the JWS names no kid")?;
        let (alg, key) = keys
            .get(&kid)
            .ok_or_else(|| format!("signed with an unknown key {kid}"))?;
        let mut validation = jsonwebtoken::Validation::new(alg.jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(jws, key, &validation)
            .map_err(|e| format!("bad signature: {e}"))?;
        Ok((header.typ.unwrap_or_default(), data.claims))
    })
}

/// A key as `offboard keys list` shows it (no private material).
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub created: NaiveDateTime,
    pub activated_at: Option<NaiveDateTime>,
    pub retired_at: Option<NaiveDateTime>,
    pub publish_until: Option<NaiveDateTime>,
    /// Whether the JWKS still carries it.
    pub published: bool,
    /// Fingerprint of the key-encryption key that sealed it ([`Kek::id`]).
    pub kek_id: String,
}

pub fn list(db: &Db) -> Result<Vec<KeyInfo>, KeyError> {
    let at = now();
    let rows = db.read(|c| repo::keys::all(c).map_err(DbError::from))?;
    Ok(rows
        .into_iter()
        .map(|r| KeyInfo {
            published: matches!(r.state.as_str(), "next" | "active")
                || (r.state == "retired" && r.publish_until.is_some_and(|t| t > at)),
            kid: r.kid,
            alg: r.alg,
            state: r.state,
            created: r.created,
            activated_at: r.activated_at,
            retired_at: r.retired_at,
            publish_until: r.publish_until,
            kek_id: r.kek_id,
        })
        .collect())
}

/// Generates `n` RSA-2048 keys as one PEM text (PKCS#8), for `keys.import_pem_file` in tests and benchmarks.
pub fn generate_rsa_pem(n: usize) -> Result<String, KeyError> {
    let mut out = String::new();
    for _ in 0..n {
        let m = Material::generate(KeyAlg::RS256)?;
        out.push_str(&pem::encode(&pem::Pem::new("PRIVATE KEY", m.pkcs8.0)));
    }
    Ok(out)
}

/// The path of a key-encryption key file, for messages.
pub fn describe_source(source: &KekSource) -> String {
    match source {
        KekSource::Config => "from `keys.kek`".into(),
        KekSource::File(p) => format!("from {}", p.display()),
        KekSource::DevFile { path, created: true } => format!("created in {} (dev mode)", display(path)),
        KekSource::DevFile { path, created: false } => format!("from {} (dev mode)", display(path)),
    }
}

fn display(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| PathBuf::from(p))
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_thumbprint_kids_and_public_jwks() {
        for alg in [KeyAlg::RS256, KeyAlg::EdDSA] {
            let m = Material::generate(alg).unwrap();
            assert_eq!(m.kid.len(), 43, "base64url SHA-256");
            let jwk = serde_json::to_value(&m.jwk).unwrap();
            assert_eq!(jwk["kid"], m.kid.as_str());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["alg"], alg.as_str());
            assert!(
                jwk.get("d").is_none() && jwk.get("p").is_none(),
                "public parts only: {jwk}"
            );
            let again = Material::from_pkcs8(alg, m.pkcs8.0.clone()).unwrap();
            assert_eq!(again.kid, m.kid, "the kid is a function of the key");
        }
    }

    #[test]
    fn jsonwebtoken_verifies_what_we_sign() {
        for alg in [KeyAlg::RS256, KeyAlg::EdDSA] {
            let m = Material::generate(alg).unwrap();
            let key = SigningKey::new(m.kid.clone(), alg, &m.pkcs8.0).unwrap();
            let claims = serde_json::json!({"sub": "u", "exp": 4_102_444_800_i64, "tgen": 3});
            let token = key.sign("at+jwt", &claims).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.kid.as_deref(), Some(m.kid.as_str()));
            let decoding = DecodingKey::from_jwk(&m.jwk).unwrap();
            let mut v = jsonwebtoken::Validation::new(alg.jwt());
            v.validate_aud = false;
            let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &v).unwrap();
            assert_eq!(data.claims, claims);
        }
    }

    #[test]
    fn rsa_keys_are_2048_bits() {
        let m = Material::generate(KeyAlg::RS256).unwrap();
        let jwk = serde_json::to_value(&m.jwk).unwrap();
        assert_eq!(
            jwk["n"].as_str().unwrap().len(),
            342,
            "2048-bit modulus in base64url"
        );
        assert_eq!(jwk["e"], "AQAB");
    }
}
