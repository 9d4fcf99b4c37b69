//! API credentials: the OAuth clients that call offboard (the IdP's SCIM client, resource servers that
//! introspect, auditors). Secrets are 256-bit random, shown once, stored only as SHA-256
//! (docs/decisions/0016-hashed-secrets.md: a password KDF would only cost CPU on every request for a secret this
//! strong) and compared in constant time.
//!
//! This module owns creating, listing, revoking and authenticating credentials, and the throttled record of when
//! each was last used. It knows nothing of HTTP.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::NaiveDateTime;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::models::{Credential, NewCredential};
use crate::db::{Db, DbConnection, DbError, now, repo};
use crate::state::CredentialKey;

/// Prefix of every secret offboard issues, so secret scanners can recognise a leaked one.
/// LOUD: changing it invalidates nothing but breaks scanners and docs that match it; do not change it.
pub const SECRET_PREFIX: &str = "ofb_";

/// Scopes a credential can hold (docs/decisions/0015-credentials-and-scopes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Scim,
    Introspect,
    AuditRead,
    SsfManage,
    SsfRead,
    Admin,
    /// The operator console at `/console` (sign-in, live view, users); `admin` may sign in too.
    Console,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Self::Scim,
        Self::Introspect,
        Self::AuditRead,
        Self::SsfManage,
        Self::SsfRead,
        Self::Admin,
        Self::Console,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scim => "scim",
            Self::Introspect => "introspect",
            Self::AuditRead => "audit:read",
            Self::SsfManage => "ssf.manage",
            Self::SsfRead => "ssf.read",
            Self::Admin => "admin",
            Self::Console => "console",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

/// Parses a comma- or space-separated scope list; an unknown scope is an error naming it.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, CredentialError> {
    let mut scopes = Vec::new();
    for part in list.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()) {
        let scope = Scope::parse(part).ok_or_else(|| CredentialError::UnknownScope(part.to_owned()))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(CredentialError::NoScopes);
    }
    Ok(scopes)
}

fn format_scopes(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// A freshly generated secret. `Debug` prints nothing of it.
pub struct Secret(String);

impl Secret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The secret itself, for showing once to the operator.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// SHA-256 of a secret, hex: what the database stores and looks up.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "unknown scope `{0}` (known: scim, introspect, audit:read, ssf.manage, ssf.read, admin, console)"
    )]
    UnknownScope(String),
    #[error("at least one scope is required")]
    NoScopes,
    #[error("invalid credential name `{0}`: use 1-64 characters from A-Z a-z 0-9 . _ -")]
    InvalidName(String),
    #[error("the credential name `{0}` is reserved")]
    ReservedName(String),
    #[error("a credential named `{0}` already exists")]
    Exists(String),
    #[error("no live credential named `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for CredentialError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Names reserved for built-in clients.
const RESERVED_NAMES: &[&str] = &["offboard-cli", "cli"];

fn validate_name(name: &str) -> Result<(), CredentialError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(CredentialError::InvalidName(name.to_owned()));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(CredentialError::ReservedName(name.to_owned()));
    }
    Ok(())
}

/// Creates a credential and returns its secret (the only time it exists outside the caller's hands).
pub fn create(db: &Db, name: &str, scopes: &[Scope]) -> Result<Secret, CredentialError> {
    validate_name(name)?;
    if scopes.is_empty() {
        return Err(CredentialError::NoScopes);
    }
    let secret = Secret::generate();
    let hash = hash_secret(secret.expose());
    let scopes = format_scopes(scopes);
    db.write(|c| {
        if repo::credentials::find_by_name(c, name)?.is_some() {
            return Err(CredentialError::Exists(name.to_owned()));
        }
        repo::credentials::insert(
            c,
            &NewCredential {
                name,
                secret_hash: &hash,
                scopes: &scopes,
                created: now(),
            },
        )?;
        crate::audit::record(
            crate::audit::Entry::new("credential.create")
                .target("credential", name, Some(name))
                .detail("scopes", scopes.as_str()),
        );
        Ok(())
    })?;
    tracing::info!(credential.name = %name, scopes = %scopes, "created credential {name}");
    Ok(secret)
}

pub fn list(db: &Db) -> Result<Vec<Credential>, CredentialError> {
    Ok(db.read(|c| repo::credentials::list(c).map_err(DbError::from))?)
}

/// Revokes a credential; it fails authentication from the next request on.
pub fn revoke(db: &Db, name: &str) -> Result<(), CredentialError> {
    let n = db.write(|c| {
        let n = repo::credentials::revoke(c, name, now())?;
        if n == 1 {
            crate::audit::record(crate::audit::Entry::new("credential.revoke").target(
                "credential",
                name,
                Some(name),
            ));
        }
        Ok::<_, CredentialError>(n)
    })?;
    if n == 0 {
        return Err(CredentialError::NotFound(name.to_owned()));
    }
    tracing::info!(credential.name = %name, "revoked credential {name}");
    Ok(())
}

/// What a client presented in its `Authorization` header.
#[derive(Clone)]
pub enum Presented {
    /// `Bearer SECRET`.
    Bearer(String),
    /// HTTP Basic `name:secret` (`client_secret_basic`).
    Basic { name: String, secret: String },
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer(…)"),
            Self::Basic { name, .. } => write!(f, "Basic({name}:…)"),
        }
    }
}

/// Longest credential name looked up (names offboard creates have at most 64 characters).
pub const MAX_NAME: usize = crate::input::MAX_ID;
/// Longest secret hashed and looked up (offboard's have 47 characters).
pub const MAX_SECRET: usize = crate::input::MAX_ID;

impl Presented {
    /// Parses an `Authorization` header value; the scheme is case-insensitive (RFC 7235). A name or secret that
    /// no credential can have (a NUL character, longer than [`MAX_NAME`] / [`MAX_SECRET`]) is refused here, so
    /// it never reaches a query: the caller answers it as any other wrong credential (401).
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, rest) = header.trim().split_once(' ')?;
        let rest = rest.trim();
        if rest.is_empty() {
            return None;
        }
        let presented = if scheme.eq_ignore_ascii_case("bearer") {
            Self::Bearer(rest.to_owned())
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD.decode(rest).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (name, secret) = decoded.split_once(':')?;
            Self::Basic {
                name: name.to_owned(),
                secret: secret.to_owned(),
            }
        } else {
            return None;
        };
        presented.is_possible().then_some(presented)
    }

    /// Whether a credential could have this name and secret (no NUL, within the length limits).
    fn is_possible(&self) -> bool {
        let (name, secret) = match self {
            Self::Bearer(secret) => (None, secret),
            Self::Basic { name, secret } => (Some(name.as_str()), secret),
        };
        crate::input::check_opt("credential name", name, MAX_NAME).is_ok()
            && crate::input::check("credential secret", secret, MAX_SECRET).is_ok()
    }

    /// Whether an `Authorization` header names a scheme offboard accepts (Bearer or Basic). A request without
    /// one presented no credential at all: its challenge carries no error code (RFC 6750 §3.1).
    pub fn is_offered(header: &str) -> bool {
        let scheme = header.trim().split(' ').next().unwrap_or_default();
        scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("basic")
    }
}

/// An authenticated API client.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Client {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Checks a presented credential: one indexed read, then a constant-time comparison of the hashes.
pub fn authenticate(conn: &mut DbConnection, presented: &Presented) -> diesel::QueryResult<Option<Client>> {
    check_presented(presented, |by| match by {
        CredentialKey::Hash(h) => repo::credentials::find_by_hash(conn, h),
        CredentialKey::Name(n) => repo::credentials::find_by_name(conn, n),
    })
}

/// [`authenticate`] through the in-memory credential state of the server (`crate::state`), which reads the
/// database only when memory is not current.
pub fn authenticate_cached(
    cache: &crate::state::StateCache,
    db: &Db,
    presented: &Presented,
) -> Result<Option<Client>, DbError> {
    check_presented(presented, |by| cache.credential(db, by))
}

fn check_presented<E>(
    presented: &Presented,
    lookup: impl FnOnce(CredentialKey<'_>) -> Result<Option<Credential>, E>,
) -> Result<Option<Client>, E> {
    // Form-posted client credentials arrive here without `parse`: the same bound, before any query.
    if !presented.is_possible() {
        return Ok(None);
    }
    let bearer_hash;
    let (row, secret) = match presented {
        Presented::Bearer(secret) => {
            bearer_hash = hash_secret(secret);
            (lookup(CredentialKey::Hash(&bearer_hash))?, secret)
        }
        Presented::Basic { name, secret } => (lookup(CredentialKey::Name(name))?, secret),
    };
    let Some(row) = row else { return Ok(None) };
    let presented_hash = hash_secret(secret);
    let equal: bool = presented_hash.as_bytes().ct_eq(row.secret_hash.as_bytes()).into();
    if !equal || row.revoked_at.is_some() {
        return Ok(None);
    }
    let scopes = row.scopes.split(',').filter_map(Scope::parse).collect();
    Ok(Some(Client {
        name: row.name,
        scopes,
    }))
}

/// Remembers when credentials were used and writes it in batches, so authentication never writes.
#[derive(Debug, Default)]
pub struct UsageTracker {
    pending: Mutex<HashMap<String, NaiveDateTime>>,
}

impl UsageTracker {
    pub fn record(&self, name: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(name.to_owned(), now());
        }
    }

    /// Writes what was recorded since the last flush (one transaction).
    pub fn flush(&self, db: &Db) -> Result<usize, DbError> {
        let batch: Vec<(String, NaiveDateTime)> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        db.write(|c| repo::credentials::touch(c, &batch).map_err(DbError::from))?;
        Ok(batch.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hidden_from_debug() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(a.expose().len(), SECRET_PREFIX.len() + 43);
        assert_ne!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(&a.expose()[4..]));
    }

    #[test]
    fn scope_lists_parse_and_reject_unknown() {
        assert_eq!(
            parse_scopes("scim, introspect").unwrap(),
            vec![Scope::Scim, Scope::Introspect]
        );
        assert_eq!(
            parse_scopes("audit:read admin").unwrap(),
            vec![Scope::AuditRead, Scope::Admin]
        );
        assert_eq!(parse_scopes("console").unwrap(), vec![Scope::Console]);
        assert!(matches!(parse_scopes("scim,root"), Err(CredentialError::UnknownScope(s)) if s == "root"));
        assert!(matches!(parse_scopes(" , "), Err(CredentialError::NoScopes)));
    }

    #[test]
    fn authorization_headers_parse_case_insensitively() {
        assert!(matches!(Presented::parse("bearer abc"), Some(Presented::Bearer(s)) if s == "abc"));
        assert!(matches!(Presented::parse("BEARER  abc "), Some(Presented::Bearer(s)) if s == "abc"));
        let basic = format!("Basic {}", STANDARD.encode("okta:s3cret"));
        assert!(matches!(Presented::parse(&basic),
            Some(Presented::Basic { name, secret }) if name == "okta" && secret == "s3cret"));
        assert!(Presented::parse("Bearer").is_none());
        assert!(Presented::parse("Digest x").is_none());
        assert!(Presented::parse("Basic !!!").is_none());
        let nul = format!("Basic {}", STANDARD.encode("ok\0ta:s3cret"));
        assert!(Presented::parse(&nul).is_none());
        let long = format!(
            "Basic {}",
            STANDARD.encode(format!("{}:s", "n".repeat(MAX_NAME + 1)))
        );
        assert!(Presented::parse(&long).is_none());
        assert!(Presented::parse(&format!("Bearer {}", "s".repeat(MAX_SECRET + 1))).is_none());
        assert!(Presented::parse(&format!("Bearer {}", "s".repeat(MAX_SECRET))).is_some());
        assert!(Presented::is_offered("bearer x") && Presented::is_offered("Basic"));
        assert!(!Presented::is_offered("Digest x") && !Presented::is_offered(""));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("okta-prod_1.x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
        assert!(matches!(
            validate_name("offboard-cli"),
            Err(CredentialError::ReservedName(_))
        ));
    }
}
