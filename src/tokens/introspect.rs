//! RFC 7662 introspection of access and refresh tokens. An access token is active only if every check of
//! ARCHITECTURE.md invariant 2 holds: signature under a published key of its own algorithm, `typ`, `iss`, `aud`,
//! `exp`, `nbf` (5 s leeway), the user live and active, `tgen` equal to the current generation, `jti` not
//! revoked, `sid` family not revoked (docs/decisions/0018-when-a-token-is-active.md), signing key not declared
//! compromised. Everything but the signature is read in one indexed statement together with the caller's
//! credential, and kept in memory by `crate::state`, which drops it once any change of that state commits, in this
//! process or (announced) in another: a change committed by any instance or by the CLI shows on the next call.
//! Anything else answers `{"active": false}`
//! and nothing more.

use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{AccessClaims, Authority, OAuthError, REFRESH_PREFIX};
use crate::credentials::{Presented, Scope, hash_secret};
use crate::db::repo::tokens::CallerKey;
use crate::db::{now, repo};

/// The bare inactive answer.
pub fn inactive() -> Value {
    json!({ "active": false })
}

/// The answer of an introspection, with who asked and whether the token was one revoked before its expiry.
#[derive(Debug)]
pub struct Introspection {
    pub answer: Value,
    /// The caller's credential name.
    pub caller: String,
    /// The token is authentic and unexpired but was revoked (its user, login, `jti` or key ended): a token
    /// presented after its revocation.
    pub revoked: bool,
}

impl Introspection {
    fn inactive(caller: String, revoked: bool) -> Self {
        Self {
            answer: inactive(),
            caller,
            revoked,
        }
    }
}

/// SHA-256 of the presented secret.
fn presented_hash(presented: &Presented) -> String {
    match presented {
        Presented::Bearer(secret) | Presented::Basic { secret, .. } => hash_secret(secret),
    }
}

/// Checks a credential row against what was presented: hash equal (constant time), live, with `introspect`.
fn check_caller(presented_hash: &str, stored_hash: &str, live: bool, scopes: &str) -> Result<(), OAuthError> {
    let equal: bool = presented_hash.as_bytes().ct_eq(stored_hash.as_bytes()).into();
    if !equal || !live {
        return Err(OAuthError::InvalidClient { presented: true });
    }
    if !scopes.split(',').any(|s| s == Scope::Introspect.as_str()) {
        return Err(OAuthError::InsufficientScope(Scope::Introspect.as_str()));
    }
    Ok(())
}

/// The active answer for a verified access token.
fn active_access(claims: &AccessClaims) -> Value {
    let mut v = json!({
        "active": true,
        "iss": claims.iss,
        "sub": claims.sub,
        "aud": claims.aud,
        "client_id": claims.client_id,
        "token_type": "Bearer",
        "exp": claims.exp,
        "iat": claims.iat,
        "nbf": claims.nbf,
        "jti": claims.jti,
    });
    let extra = [
        ("scope", claims.scope.clone().map(Value::from)),
        ("username", claims.preferred_username.clone().map(Value::from)),
        ("groups", claims.groups.clone().map(Value::from)),
        ("sid", claims.sid.clone().map(Value::from)),
        ("tgen", claims.tgen.map(Value::from)),
    ];
    if let Value::Object(m) = &mut v {
        for (k, val) in extra {
            if let Some(val) = val {
                m.insert(k.into(), val);
            }
        }
    }
    v
}

/// The key of a caller's view of a token's state: who asks (secret hash or name) and the token itself.
fn state_key(caller: &Presented, presented_hash: &str, token: &str) -> [u8; 32] {
    match caller {
        Presented::Bearer(_) => crate::state::key(&[b"hash", presented_hash.as_bytes(), token.as_bytes()]),
        Presented::Basic { name, .. } => crate::state::key(&[b"name", name.as_bytes(), token.as_bytes()]),
    }
}

impl Authority {
    /// Introspects `token` for the caller that presented `caller` (which needs scope `introspect`).
    pub fn introspect(&self, caller: &Presented, token: &str) -> Result<Introspection, OAuthError> {
        if token.starts_with(REFRESH_PREFIX) {
            return self.introspect_refresh(caller, token);
        }
        let verified = self.verify_access_kid(token);
        let (claims, kid) = match verified {
            Ok(v) => v,
            Err(why) => {
                tracing::debug!("introspection: inactive ({})", why.as_str());
                let name = self.authenticate_introspector(caller)?;
                return Ok(Introspection::inactive(name, false));
            }
        };
        let presented_hash = presented_hash(caller);
        let key = state_key(caller, &presented_hash, token);
        let at = self.state.current();
        let cached = at.and_then(|at| self.state.introspection(at, &key));
        let state = if let Some(state) = cached {
            state
        } else {
            let caller_key = match caller {
                Presented::Bearer(_) => CallerKey::SecretHash(&presented_hash),
                Presented::Basic { name, .. } => CallerKey::Name(name),
            };
            let sid = claims.sid.as_deref().unwrap_or_default();
            let state = self.db.read(|c| {
                repo::tokens::introspection_state(
                    c,
                    caller_key,
                    &claims.sub,
                    &claims.jti,
                    sid,
                    &claims.client_id,
                    &kid,
                )
                .map_err(OAuthError::from)
            })?;
            let Some(state) = state else {
                return Err(OAuthError::InvalidClient { presented: true });
            };
            if let Some(at) = at {
                self.state.put_introspection(at, key, state.clone());
            }
            state
        };
        self.decide(&presented_hash, &claims, state, true)
    }

    /// The answer from memory alone — a signature verified before and state current in memory — or None when
    /// the database (or a signature check) is needed, or the answer is an error: then
    /// [`introspect`](Self::introspect) answers, in a blocking task. Cheap enough for the async thread.
    /// A revoked user token not recorded as presented within the quiet period goes to the blocking path too, where
    /// that record is written.
    pub fn introspect_from_memory(&self, caller: &Presented, token: &str) -> Option<Introspection> {
        if token.starts_with(REFRESH_PREFIX) {
            return None;
        }
        let at = self.state.current()?;
        let (claims, _) = self.verified_in_memory(token)?;
        let presented_hash = presented_hash(caller);
        let state = self
            .state
            .introspection(at, &state_key(caller, &presented_hash, token))?;
        if state.key_compromised {
            return None;
        }
        let answer = self.decide(&presented_hash, &claims, state, false).ok()?;
        if answer.revoked && claims.tgen.is_some() && !self.revoked_presented.quiet(&claims.jti) {
            return None;
        }
        Some(answer)
    }

    /// The answer for a verified access token given its state.
    fn decide(
        &self,
        presented_hash: &str,
        claims: &AccessClaims,
        state: repo::tokens::IntrospectionState,
        record: bool,
    ) -> Result<Introspection, OAuthError> {
        check_caller(
            presented_hash,
            &state.caller_secret_hash,
            state.caller_live,
            &state.caller_scopes,
        )?;
        if state.key_compromised {
            // Another process declared the key compromised: follow it now, for the caches of this process too.
            if let Err(e) = self.keys.sync() {
                tracing::error!("could not reload signing keys: {e}");
            }
            tracing::debug!(token.jti = %claims.jti, "introspection: inactive (key compromised)");
            return Ok(Introspection::inactive(state.caller_name, true));
        }
        let active = !state.jti_revoked
            && match claims.tgen {
                Some(tgen) => {
                    state.user_active == Some(true)
                        && state.user_generation == Some(tgen)
                        && claims.sid.is_some()
                        && !state.sid_revoked
                }
                // A service token: its subject is its client, whose credential must still be live.
                None => claims.sid.is_none() && claims.sub == claims.client_id && state.client_live,
            };
        if !active {
            // Signed, unexpired, but revoked since: a token presented after it was revoked.
            tracing::debug!(token.jti = %claims.jti, "introspection: inactive (state)");
            if let (Some(tgen), true) = (claims.tgen, record) {
                self.revoked_presented(claims, tgen, &state);
            }
            return Ok(Introspection::inactive(state.caller_name, true));
        }
        if claims.tgen.is_some() {
            self.activity.introspected(&claims.sub, &claims.client_id);
        }
        Ok(Introspection {
            answer: active_access(claims),
            caller: state.caller_name,
            revoked: false,
        })
    }

    /// Records a user's access token presented for introspection after it was revoked (throttled; see
    /// [`super::activity::RevokedPresented`]). Introspection otherwise never writes; this is the exception, bounded.
    fn revoked_presented(&self, claims: &AccessClaims, tgen: i64, state: &repo::tokens::IntrospectionState) {
        let why = if state.jti_revoked {
            "access token revoked"
        } else if state.user_generation.is_some_and(|g| g != tgen) {
            "sessions ended (generation changed)"
        } else if state.user_active != Some(true) {
            "user inactive or deleted"
        } else if state.sid_revoked {
            "login revoked"
        } else {
            return;
        };
        let Some(suppressed) = self.revoked_presented.admit(&claims.jti) else {
            return;
        };
        let entry = super::revoked_presented_entry(
            &claims.sub,
            claims.preferred_username.as_deref(),
            &claims.client_id,
            "introspection",
            why,
            suppressed,
        )
        .actor(&state.caller_name)
        .detail("jti", claims.jti.as_str())
        .detail("token_generation", tgen);
        if let Err(e) = crate::audit::record_now(&self.db, vec![entry]) {
            tracing::warn!("could not record a revoked token presented: {e}");
        }
    }

    fn authenticate_introspector(&self, caller: &Presented) -> Result<String, OAuthError> {
        let client = crate::credentials::authenticate_cached(&self.state, &self.db, caller)?
            .ok_or(OAuthError::InvalidClient { presented: true })?;
        if !client.has(Scope::Introspect) {
            return Err(OAuthError::InsufficientScope(Scope::Introspect.as_str()));
        }
        Ok(client.name)
    }

    /// A refresh token is active iff not rotated out, its family live and unexpired (absolute and idle), and its
    /// user active at the family's generation (docs/decisions/0019-refresh-token-introspection.md).
    fn introspect_refresh(&self, caller: &Presented, token: &str) -> Result<Introspection, OAuthError> {
        let name = self.authenticate_introspector(caller)?;
        let hash = hash_secret(token);
        let found = self
            .db
            .read(|c| repo::tokens::find_token_with_user(c, &hash).map_err(OAuthError::from))?;
        let at = now();
        let Some((row, family, Some((user_active, user_generation, user_name)))) = found else {
            return Ok(Introspection::inactive(name, false));
        };
        let unexpired = family.expires_at > at && row.idle_expires_at > at;
        let live = row.used_at.is_none()
            && family.revoked_at.is_none()
            && user_active
            && user_generation == family.generation;
        if !(unexpired && live) {
            // Unexpired but no longer live: presented after it was revoked (rotated out, login or user ended).
            return Ok(Introspection::inactive(name, unexpired));
        }
        let exp = row.idle_expires_at.min(family.expires_at);
        let mut v = json!({
            "active": true,
            "client_id": family.client_id,
            "sub": family.user_id,
            "sid": family.sid,
            "exp": exp.and_utc().timestamp(),
            "iat": row.issued_at.and_utc().timestamp(),
            "username": user_name,
            "tgen": family.generation,
            "iss": self.config.issuer,
        });
        if !family.scope.is_empty()
            && let Value::Object(m) = &mut v
        {
            m.insert("scope".into(), Value::from(family.scope.clone()));
        }
        Ok(Introspection {
            answer: v,
            caller: name,
            revoked: false,
        })
    }
}
