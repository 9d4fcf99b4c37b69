//! Verifying offboard's own access tokens, strictly (RFC 8725, RFC 9068 §4): header `typ` must be `at+jwt`; the
//! `kid` must name one of our published keys, and the algorithm is that key's, never the header's (so `alg:
//! none`, HS256 signed with the public key and any other algorithm are refused); `iss`, `aud`, `exp`, `sub` are
//! required; `nbf` is validated; the leeway is [`LEEWAY_SECS`]. The `jsonwebtoken` crate does none of these by
//! default.
//!
//! Verified signatures are cached (SHA-256 of the token → claims and `kid`) until the token expires: a signature
//! cannot become invalid, and the state checks (user, generation, revocations) are made on every call by the
//! caller, so the cache never makes an answer stale (docs/decisions/0020-one-read-introspection.md). A key can stop
//! being trusted (its publish
//! window ends, or it is declared compromised): every hit checks that its `kid` is still among the keys in
//! memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ACCESS_TYP, Authority};
use crate::keys::LEEWAY_SECS;

/// The claims of an access token (RFC 9068 §2.2 plus `sid`, `groups`, `preferred_username`, and our `tgen`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The SCIM user id, or the client id of a service token.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub groups: Option<Vec<String>>,
    /// The refresh-token family (login) this token came from.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sid: Option<String>,
    /// The user's token generation at minting. Absent on service tokens.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tgen: Option<i64>,
}

/// Why a token was refused: for the debug log and the tests, never for the client (RFC 7662 answers
/// `active:false` and nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    WrongType,
    UnknownKey,
    Signature,
    Claims,
    Expired,
    NotYetValid,
}

impl Invalid {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongType => "typ is not at+jwt",
            Self::UnknownKey => "unknown kid",
            Self::Signature => "bad signature or algorithm",
            Self::Claims => "iss, aud or required claims wrong",
            Self::Expired => "expired",
            Self::NotYetValid => "not yet valid",
        }
    }
}

fn typ_is_access(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TYP) || t.eq_ignore_ascii_case("application/at+jwt"))
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The time checks, made on cache hits too.
fn check_times(claims: &AccessClaims, now: i64) -> Result<(), Invalid> {
    let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
    if claims.exp + leeway < now {
        return Err(Invalid::Expired);
    }
    if claims.nbf - leeway > now {
        return Err(Invalid::NotYetValid);
    }
    Ok(())
}

impl Authority {
    /// Verifies an access token's header, signature and claims (not the user or revocation state).
    pub fn verify_access(&self, token: &str) -> Result<Arc<AccessClaims>, Invalid> {
        self.verify_access_kid(token).map(|(claims, _)| claims)
    }

    /// [`verify_access`](Self::verify_access), with the `kid` of the key that signed the token.
    pub fn verify_access_kid(&self, token: &str) -> Result<(Arc<AccessClaims>, Arc<str>), Invalid> {
        let key = cache_key(token);
        if let Some((claims, kid)) = self.verified.get(&key) {
            check_times(&claims, unix_now())?;
            if !self.keys.trusts(&kid) {
                return Err(Invalid::UnknownKey);
            }
            return Ok((claims, kid));
        }
        let (claims, kid) = self.verify_uncached(token)?;
        let (claims, kid) = (Arc::new(claims), Arc::<str>::from(kid));
        self.verified.insert(key, claims.clone(), kid.clone(), claims.exp);
        Ok((claims, kid))
    }

    /// [`verify_access_kid`](Self::verify_access_kid) for a token whose signature was verified before; None
    /// when it must be verified (or is not valid).
    pub fn verified_in_memory(&self, token: &str) -> Option<(Arc<AccessClaims>, Arc<str>)> {
        let (claims, kid) = self.verified.get(&cache_key(token))?;
        check_times(&claims, unix_now()).ok()?;
        self.keys.trusts(&kid).then_some((claims, kid))
    }

    fn verify_uncached(&self, token: &str) -> Result<(AccessClaims, String), Invalid> {
        if token.len() > 16 * 1024 || token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(Invalid::Malformed);
        }
        let header = decode_header(token).map_err(|_| Invalid::Malformed)?;
        if !typ_is_access(header.typ.as_deref()) {
            return Err(Invalid::WrongType);
        }
        let kid = header.kid.as_deref().ok_or(Invalid::UnknownKey)?;
        let key = self.keys.verifying_key(kid).ok_or(Invalid::UnknownKey)?;
        // The algorithm is the key's own; a header naming another one fails here.
        let mut v = Validation::new(key.alg.jwt());
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.validate_exp = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&self.config.audiences());
        let data = decode::<AccessClaims>(token, &key.decoding, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => Invalid::Expired,
                ErrorKind::ImmatureSignature => Invalid::NotYetValid,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName => Invalid::Signature,
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    Invalid::Malformed
                }
                _ => Invalid::Claims,
            }
        })?;
        Ok((data.claims, key.kid.clone()))
    }
}

fn cache_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// SHA-256 of a token.
type TokenHash = [u8; 32];

/// A verified token: its claims, the `kid` that signed it, and its `exp`.
type Entry = (Arc<AccessClaims>, Arc<str>, i64);

/// Verified access tokens until they expire, bounded in size: when full, expired entries go first, and if none
/// has expired the cache starts over (a token verifies again on its next use).
pub struct VerifyCache {
    capacity: usize,
    entries: Mutex<HashMap<TokenHash, Entry>>,
}

impl VerifyCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &[u8; 32]) -> Option<(Arc<AccessClaims>, Arc<str>)> {
        if self.capacity == 0 {
            return None;
        }
        self.entries
            .lock()
            .ok()?
            .get(key)
            .map(|(c, kid, _)| (c.clone(), kid.clone()))
    }

    fn insert(&self, key: [u8; 32], claims: Arc<AccessClaims>, kid: Arc<str>, exp: i64) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            let cutoff = unix_now() - i64::try_from(LEEWAY_SECS).unwrap_or(0);
            entries.retain(|_, (_, _, exp)| *exp >= cutoff);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (claims, kid, exp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64, nbf: i64) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp,
            iat: nbf,
            nbf,
            jti: "j".into(),
            client_id: "c".into(),
            scope: None,
            preferred_username: None,
            groups: None,
            sid: None,
            tgen: Some(0),
        }
    }

    #[test]
    fn times_allow_five_seconds_of_leeway() {
        assert!(check_times(&claims(100, 0), 105).is_ok());
        assert_eq!(check_times(&claims(100, 0), 106), Err(Invalid::Expired));
        assert!(check_times(&claims(1000, 105), 100).is_ok());
        assert_eq!(check_times(&claims(1000, 106), 100), Err(Invalid::NotYetValid));
    }

    #[test]
    fn typ_must_be_at_jwt() {
        assert!(typ_is_access(Some("at+jwt")));
        assert!(typ_is_access(Some("application/AT+JWT")));
        assert!(!typ_is_access(Some("JWT")));
        assert!(!typ_is_access(Some("secevent+jwt")));
        assert!(!typ_is_access(None));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifyCache::new(2);
        let far = unix_now() + 1000;
        for i in 0u8..5 {
            cache.insert([i; 32], Arc::new(claims(far, 0)), "k".into(), far);
        }
        assert!(cache.entries.lock().unwrap().len() <= 2);
        assert!(cache.get(&[4; 32]).is_some());
        let off = VerifyCache::new(0);
        off.insert([1; 32], Arc::new(claims(far, 0)), "k".into(), far);
        assert!(off.get(&[1; 32]).is_none());
    }
}
