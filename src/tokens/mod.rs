//! The token authority: minting access tokens (RFC 9068 JWTs carrying the user's token generation `tgen`),
//! rotating refresh tokens with reuse detection (RFC 9700 §4.14.2), client-credentials service tokens, token
//! exchange (RFC 8693), introspection (RFC 7662), revocation (RFC 7009) and Global Token Revocation.
//!
//! Invariants kept here (ARCHITECTURE.md invariants 2–4): minting reads the user's active flag and generation in
//! the transaction
//! that creates the login, so an inactive user gets no token and a token minted concurrently with a deactivation
//! carries the old generation (dead at once); a refresh re-reads both and mints with the current generation; a
//! rotated-out refresh token presented again ends its whole family through `lifecycle::end_session`. Access
//! tokens are signed after the transaction commits, so the SQLite write lock is never held during RSA signing.
//!
//! Nothing here knows HTTP; `http::oauth` maps requests to these functions and [`OAuthError`] to RFC 6749 §5.2
//! responses. Token values never reach a log; refresh tokens are stored as SHA-256 only.

pub mod activity;
pub mod exchange;
pub mod gtr;
pub mod introspect;
pub mod revoke;
pub mod verify;

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{NaiveDateTime, TimeDelta};
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub use activity::ActivityTracker;
pub use verify::AccessClaims;

use crate::audit;
use crate::config::Config;
use crate::credentials::{Client, Presented, hash_secret};
use crate::db::models::{RefreshFamily, RefreshTokenRow, User};
use crate::db::{Db, DbConnection, DbError, now, repo};
use crate::error::AppError;
use crate::keys::{KeyError, KeyStore};

/// The `error_description` of a refresh with a token whose login was revoked.
pub const REFRESH_REVOKED: &str = "refresh token revoked";
/// The `error_description` of a refresh with a token used before (reuse: its login is ended now).
pub const REFRESH_REUSED: &str = "refresh token was already used; its session has been ended";

/// The built-in public client of `offboard token mint` and developer CLIs
/// (docs/decisions/0017-cli-client-and-default-audience.md): no secret; it may
/// refresh and exchange, never use client credentials.
pub const CLI_CLIENT: &str = "offboard-cli";

/// Prefix of refresh tokens, so secret scanners and introspection can tell them from JWTs.
/// LOUD: changing it breaks every refresh token already issued; do not change it.
pub const REFRESH_PREFIX: &str = "ofr_";

/// `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TYP: &str = "at+jwt";

/// An RFC 6749 §5.2 error (plus RFC 7009 and RFC 8693 codes). `Display` is safe for clients; it never carries a
/// token.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    /// Client authentication failed; `presented` says whether an `Authorization` header was sent.
    #[error("client authentication failed")]
    InvalidClient { presented: bool },
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("grant_type `{0}` is not supported")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidTarget(String),
    #[error("{0}")]
    UnsupportedTokenType(String),
    /// An authenticated client without the scope the endpoint needs.
    #[error("this credential lacks the `{0}` scope")]
    InsufficientScope(&'static str),
    /// Not a client mistake: 500 or 503.
    #[error(transparent)]
    Server(AppError),
}

impl OAuthError {
    /// The RFC 6749 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient { .. } => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::InvalidTarget(_) => "invalid_target",
            Self::UnsupportedTokenType(_) => "unsupported_token_type",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::Server(AppError::Unavailable(_)) => "temporarily_unavailable",
            Self::Server(_) => "server_error",
        }
    }

    fn invalid_grant(why: impl Into<String>) -> Self {
        Self::InvalidGrant(why.into())
    }

    /// Whether this refusal answered a refresh token presented after it was revoked: `refresh_reuse` (used
    /// before; the login is ended now) or `refresh_revoked` (its login was ended before).
    pub fn revoked_refresh(&self) -> Option<&'static str> {
        match self {
            Self::InvalidGrant(why) if why == REFRESH_REUSED => Some("refresh_reuse"),
            Self::InvalidGrant(why) if why == REFRESH_REVOKED => Some("refresh_revoked"),
            _ => None,
        }
    }
}

impl From<AppError> for OAuthError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Unauthorized { presented } => Self::InvalidClient { presented },
            AppError::Forbidden(scope) => Self::InsufficientScope(scope),
            other => Self::Server(other),
        }
    }
}

impl From<DbError> for OAuthError {
    fn from(e: DbError) -> Self {
        Self::Server(e.into())
    }
}

impl From<diesel::result::Error> for OAuthError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Server(AppError::internal(format!("database: {e}")))
    }
}

/// Input no query may see (a NUL, an oversized value): `invalid_request`.
impl From<crate::input::InputError> for OAuthError {
    fn from(e: crate::input::InputError) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}

impl From<KeyError> for OAuthError {
    fn from(e: KeyError) -> Self {
        Self::Server(AppError::internal(e))
    }
}

/// The token authority of one server (or one CLI command): database, configuration, keys.
pub struct Authority {
    pub db: Db,
    pub config: Arc<Config>,
    pub keys: Arc<KeyStore>,
    pub activity: ActivityTracker,
    /// Throttles the record of revoked tokens presented again.
    pub revoked_presented: activity::RevokedPresented,
    verified: verify::VerifyCache,
    revoked: revoke::RevokedJtis,
    issuers: exchange::TrustedIssuers,
    /// Revocation and credential state in memory (`crate::state`); off unless [`with_state`](Self::with_state).
    pub state: Arc<crate::state::StateCache>,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl Authority {
    pub fn new(db: Db, config: Arc<Config>, keys: Arc<KeyStore>) -> Result<Self, exchange::IssuerError> {
        let issuers = exchange::TrustedIssuers::load(&config.trusted_issuers)?;
        Ok(Self {
            revoked_presented: activity::RevokedPresented::new(config.audit.auth_failures_per_minute),
            verified: verify::VerifyCache::new(config.tokens.verify_cache_entries),
            revoked: revoke::RevokedJtis::new(config.tokens.verify_cache_entries),
            db,
            config,
            keys,
            activity: ActivityTracker::default(),
            issuers,
            state: Arc::new(crate::state::StateCache::off()),
        })
    }

    /// The same authority, keeping introspection and credential state in `state`.
    #[must_use]
    pub fn with_state(mut self, state: Arc<crate::state::StateCache>) -> Self {
        self.state = state;
        self
    }
}

/// The audit entry of a revoked token presented again (`via`: `introspection` or `refresh`), flagged against its
/// user; `suppressed`: how many such records the throttle left out before this one.
pub(crate) fn revoked_presented_entry(
    user_id: &str,
    user_name: Option<&str>,
    client_id: &str,
    via: &'static str,
    why: &str,
    suppressed: u64,
) -> audit::Entry {
    let mut e = audit::Entry::new("token.revoked_presented")
        .user(user_id, user_name)
        .outcome("denied")
        .detail("client_id", client_id)
        .detail("via", via)
        .detail("reason", why);
    if suppressed > 0 {
        e = e.detail("suppressed_before", suppressed);
    }
    e
}

/// A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub issued_token_type: Option<String>,
    pub token_type: String,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Who is asking for tokens, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An API credential (confidential client).
    Credential(Client),
    /// The built-in public client [`CLI_CLIENT`].
    Public,
}

impl Caller {
    pub fn client_id(&self) -> &str {
        match self {
            Self::Credential(c) => &c.name,
            Self::Public => CLI_CLIENT,
        }
    }
}

/// Authenticates the client of a token or revocation request: a credential in `Authorization` (Basic or
/// Bearer), or form `client_id` (+ `client_secret`, `client_secret_post`), or the public `offboard-cli`.
pub fn authenticate_client(
    conn: &mut DbConnection,
    header: Option<Presented>,
    form_client_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<Caller, OAuthError> {
    let presented = match (header, form_client_id, form_secret) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::InvalidRequest(
                "use one client authentication method, not several".into(),
            ));
        }
        (Some(p), id, None) => {
            let client = crate::credentials::authenticate(conn, &p)?
                .ok_or(OAuthError::InvalidClient { presented: true })?;
            if id.is_some_and(|id| id != client.name) {
                return Err(OAuthError::InvalidClient { presented: true });
            }
            return Ok(Caller::Credential(client));
        }
        (None, Some(id), Some(secret)) => Presented::Basic {
            name: id.to_owned(),
            secret: secret.to_owned(),
        },
        (None, Some(CLI_CLIENT), None) => return Ok(Caller::Public),
        (None, _, None) => return Err(OAuthError::InvalidClient { presented: false }),
        (None, None, Some(_)) => {
            return Err(OAuthError::InvalidRequest(
                "client_secret without client_id".into(),
            ));
        }
    };
    crate::credentials::authenticate(conn, &presented)?
        .map(Caller::Credential)
        .ok_or(OAuthError::InvalidClient { presented: false })
}

/// The audit entry of one grant: what was issued to whom, never the token itself. `tgen` and `exp` let the
/// offboarding report count the tokens a later cut-off invalidated.
fn grant_entry(action: &'static str, claims: &AccessClaims) -> audit::Entry {
    let mut e = audit::Entry::new(action)
        .detail("client_id", claims.client_id.as_str())
        .detail("jti", claims.jti.as_str())
        .detail("aud", claims.aud.as_str())
        .detail("exp", claims.exp);
    e = match claims.tgen {
        Some(tgen) => e
            .user(&claims.sub, claims.preferred_username.as_deref())
            .detail("tgen", tgen),
        None => e.target("credential", &claims.sub, None),
    };
    if let Some(scope) = &claims.scope {
        e = e.detail("scope", scope.as_str());
    }
    if let Some(sid) = &claims.sid {
        e = e.detail("sid", sid.as_str());
    }
    e
}

/// Generates an opaque, prefixed, 256-bit refresh token.
fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Checks a `scope` parameter (RFC 6749 §3.3: space-separated NQCHAR tokens) and normalises it.
pub fn parse_scope(scope: Option<&str>) -> Result<Option<String>, OAuthError> {
    let Some(scope) = scope else { return Ok(None) };
    if scope.len() > 1024 {
        return Err(OAuthError::InvalidScope(
            "scope is longer than 1024 characters".into(),
        ));
    }
    let mut out: Vec<&str> = Vec::new();
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        let ok = token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(OAuthError::InvalidScope(format!(
                "scope `{token}` has characters RFC 6749 §3.3 forbids"
            )));
        }
        if !out.contains(&token) {
            out.push(token);
        }
    }
    Ok((!out.is_empty()).then(|| out.join(" ")))
}

/// `scope` when every one of its scopes is in `permitted`; `invalid_scope` otherwise.
fn allowed(scope: Option<String>, permitted: &[String], key: &str) -> Result<Option<String>, OAuthError> {
    if let Some(s) = &scope
        && let Some(bad) = s.split(' ').find(|t| !permitted.iter().any(|p| p == t))
    {
        return Err(OAuthError::InvalidScope(format!(
            "scope `{bad}` is not granted here (see {key})"
        )));
    }
    Ok(scope)
}

/// What a caller may ask of a new access token.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub scope: Option<String>,
    pub audience: Option<String>,
    /// Seconds; `None` is `tokens.access_ttl_secs`.
    pub ttl: Option<u64>,
}

impl Authority {
    fn audience(&self, requested: Option<&str>) -> Result<String, OAuthError> {
        match requested {
            None => Ok(self.config.default_audience().to_owned()),
            Some(a) if self.config.issues_for(a) => Ok(a.to_owned()),
            Some(a) => Err(OAuthError::InvalidTarget(format!(
                "offboard does not issue tokens for audience `{a}` (see tokens.audiences)"
            ))),
        }
    }

    fn ttl(&self, requested: Option<u64>) -> Result<u64, OAuthError> {
        let t = &self.config.tokens;
        match requested {
            None => Ok(t.access_ttl_secs),
            Some(s) if (10..=t.max_access_ttl_secs).contains(&s) => Ok(s),
            Some(s) => Err(OAuthError::InvalidRequest(format!(
                "a lifetime of {s} s is outside 10..={} s (tokens.max_access_ttl_secs)",
                t.max_access_ttl_secs
            ))),
        }
    }

    /// Signs an access token for claims decided inside a committed transaction.
    fn sign_access(&self, claims: &AccessClaims) -> Result<String, OAuthError> {
        // Never sign with a key another process has just declared compromised.
        self.keys.sync()?;
        Ok(self.keys.access_signer()?.sign(ACCESS_TYP, claims)?)
    }
}

fn secs(s: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 4))
}

/// What a login transaction decided: everything needed to sign after commit.
struct Minted {
    claims: AccessClaims,
    refresh_token: Option<String>,
    user_id: String,
}

/// How a login names its user.
#[derive(Debug, Clone)]
pub enum UserKey {
    /// The SCIM `userName` (case-insensitive).
    UserName(String),
    /// The SCIM id.
    Id(String),
    /// `externalId`, exact.
    ExternalId(String),
    /// A work or other email (case-insensitive).
    Email(String),
    /// An email claim of a trusted issuer's token: matched exactly after ASCII lower-casing, and only against the
    /// user emails `select` names (`primary`, or email types); see [`exchange::email_matches`].
    IssuerEmail { address: String, select: Vec<String> },
}

/// The live user a key names; `None` when none or more than one live user matches.
fn resolve_user(c: &mut DbConnection, key: &UserKey) -> Result<Option<User>, OAuthError> {
    let users = match key {
        UserKey::UserName(name) => {
            repo::users::find_live_by_folded_name(c, &crate::scim::schema::fold(name))?
                .into_iter()
                .collect()
        }
        UserKey::Id(id) => repo::users::find_live(c, id)?.into_iter().collect(),
        UserKey::ExternalId(ext) => repo::users::find_live_by_external_id(c, ext)?,
        UserKey::Email(email) => repo::users::live_with_email(c, &crate::scim::schema::fold(email), 2)?,
        UserKey::IssuerEmail { address, select } => {
            let address = address.to_ascii_lowercase();
            // The index holds Unicode-folded values, a superset of the exact matches: filter them here.
            repo::users::live_with_email(c, &address, 64)?
                .into_iter()
                .filter(|u| exchange::email_matches(u, &address, select))
                .collect()
        }
    };
    match <[User; 1]>::try_from(users) {
        Ok([user]) => Ok(Some(user)),
        Err(many) if many.len() > 1 => {
            tracing::warn!(
                "{} live users match one token-exchange subject; refusing",
                many.len()
            );
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}

/// The live user a key names (none, or more than one: `None`), for other modules (SSF subjects).
pub fn find_user(db: &Db, key: &UserKey) -> Result<Option<User>, AppError> {
    db.read(|c| {
        resolve_user(c, key).map_err(|e| match e {
            OAuthError::Server(e) => e,
            other => AppError::internal(other),
        })
    })
}

fn group_names(c: &mut DbConnection, user_id: &str) -> Result<Vec<String>, OAuthError> {
    let mut groups = repo::groups::groups_of(c, &[user_id])?;
    Ok(groups
        .remove(user_id)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, name)| name)
        .collect())
}

fn unix(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp()
}

impl Authority {
    /// A new login for a user: a refresh-token family bound to user, client and the current generation, its first
    /// refresh token, and an access token. The one path for `offboard token mint`, token exchange and any future
    /// interactive grant. An inactive or unknown user gets `invalid_grant`.
    pub fn login(
        &self,
        user: &UserKey,
        client_id: &str,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        self.login_as("token.mint", None, user, client_id, req)
    }

    /// [`login`](Self::login), recorded as `action` (`token.mint`, `token.exchange`) with the subject token's
    /// issuer, if any.
    pub(crate) fn login_as(
        &self,
        action: &'static str,
        issuer: Option<&str>,
        user: &UserKey,
        client_id: &str,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let audience = self.audience(req.audience.as_deref())?;
        let ttl = self.ttl(req.ttl)?;
        let scope = allowed(
            parse_scope(req.scope.as_deref())?,
            &self.config.tokens.user_scopes,
            "tokens.user_scopes",
        )?;
        let refresh = new_refresh_token();
        let refresh_hash = hash_secret(&refresh);
        let minted = self.db.write(|c| {
            let at = now();
            let user = resolve_user(c, user)?
                .filter(|u| u.active)
                .ok_or_else(|| OAuthError::invalid_grant("no active user matches"))?;
            let sid = new_id();
            repo::tokens::insert_family(
                c,
                &RefreshFamily {
                    sid: sid.clone(),
                    user_id: user.id.clone(),
                    client_id: client_id.to_owned(),
                    generation: user.token_generation,
                    scope: scope.clone().unwrap_or_default(),
                    audience: audience.clone(),
                    created: at,
                    expires_at: at + secs(self.config.tokens.refresh_absolute_ttl_secs),
                    revoked_at: None,
                    revoked_reason: None,
                },
            )?;
            repo::tokens::insert_token(
                c,
                &RefreshTokenRow {
                    token_hash: refresh_hash.clone(),
                    sid: sid.clone(),
                    issued_at: at,
                    idle_expires_at: at + secs(self.config.tokens.refresh_idle_ttl_secs),
                    used_at: None,
                },
            )?;
            let groups = group_names(c, &user.id)?;
            let claims = self.user_claims(&user, groups, client_id, scope.clone(), &audience, &sid, ttl, at);
            let mut entry = grant_entry(action, &claims);
            if let Some(issuer) = issuer {
                entry = entry.detail("subject_issuer", issuer);
            }
            audit::record(entry);
            Ok::<_, OAuthError>(Minted {
                claims,
                refresh_token: Some(refresh.clone()),
                user_id: user.id,
            })
        })?;
        self.activity.minted(&minted.user_id, client_id);
        tracing::info!(user.id = %minted.user_id, client.id = %client_id, session.id = ?minted.claims.sid, "minted tokens for user {}", minted.user_id);
        self.respond(minted, ttl)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "every claim of RFC 9068 plus ours, named at the call site"
    )]
    fn user_claims(
        &self,
        user: &User,
        groups: Vec<String>,
        client_id: &str,
        scope: Option<String>,
        audience: &str,
        sid: &str,
        ttl: u64,
        at: NaiveDateTime,
    ) -> AccessClaims {
        let iat = unix(at);
        AccessClaims {
            iss: self.config.issuer.clone(),
            sub: user.id.clone(),
            aud: audience.to_owned(),
            exp: iat + i64::try_from(ttl).unwrap_or(0),
            iat,
            nbf: iat,
            jti: new_id(),
            client_id: client_id.to_owned(),
            scope,
            preferred_username: Some(user.user_name.clone()),
            groups: Some(groups),
            sid: Some(sid.to_owned()),
            tgen: Some(user.token_generation),
        }
    }

    fn respond(&self, minted: Minted, ttl: u64) -> Result<TokenResponse, OAuthError> {
        Ok(TokenResponse {
            access_token: self.sign_access(&minted.claims)?,
            issued_token_type: None,
            token_type: "Bearer".into(),
            expires_in: ttl,
            refresh_token: minted.refresh_token,
            scope: minted.claims.scope,
        })
    }

    /// `grant_type=refresh_token`: rotates the refresh token and mints an access token with the user's current
    /// generation. A token used before ends its family (reuse detection), committed even though the answer is
    /// `invalid_grant`.
    #[expect(
        clippy::too_many_lines,
        reason = "the checks of one refresh transaction, in the order they apply"
    )]
    pub fn refresh(
        &self,
        caller: &Caller,
        token: &str,
        requested_scope: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let hash = hash_secret(token);
        let next = new_refresh_token();
        let next_hash = hash_secret(&next);
        let requested_scope = parse_scope(requested_scope)?;
        let outcome = self.db.write(|c| {
            let at = now();
            let Some((row, family)) = repo::tokens::find_token(c, &hash)? else {
                return Ok(Refreshed::Refused("unknown refresh token"));
            };
            if family.client_id != caller.client_id() {
                // Not this client's token: refuse without touching it (RFC 6749 §6).
                return Ok(Refreshed::Refused("refresh token was issued to another client"));
            }
            if family.revoked_at.is_some() {
                if let Some(suppressed) = self.revoked_presented.admit(&family.sid) {
                    audit::record(
                        revoked_presented_entry(
                            &family.user_id,
                            None,
                            &family.client_id,
                            "refresh",
                            family.revoked_reason.as_deref().unwrap_or("login revoked"),
                            suppressed,
                        )
                        .detail("sid", family.sid.as_str()),
                    );
                }
                return Ok(Refreshed::Refused(REFRESH_REVOKED));
            }
            let reused = |c: &mut DbConnection, family: RefreshFamily| {
                crate::lifecycle::end_session(
                    c,
                    "token.reuse_detected",
                    &family.user_id,
                    family.generation,
                    &family.sid,
                    "refresh token reuse detected; the login was ended",
                )?;
                Ok::<_, OAuthError>(Refreshed::Reused {
                    sid: family.sid,
                    user_id: family.user_id,
                })
            };
            if row.used_at.is_some() {
                return reused(c, family);
            }
            if family.expires_at <= at || row.idle_expires_at <= at {
                return Ok(Refreshed::Refused("refresh token expired"));
            }
            let Some(user) = repo::users::find_live(c, &family.user_id)?.filter(|u| u.active) else {
                return Ok(Refreshed::Refused("the user is no longer active"));
            };
            if user.token_generation != family.generation {
                // Its sessions were ended already (and reported then); this only tidies the family.
                repo::tokens::revoke_family(c, &family.sid, at, "generation changed")?;
                return Ok(Refreshed::Refused(REFRESH_REVOKED));
            }
            let scope = match requested_scope.as_deref() {
                None => (!family.scope.is_empty()).then(|| family.scope.clone()),
                Some(req) => {
                    let granted: Vec<&str> = family.scope.split(' ').collect();
                    if req.split(' ').any(|s| !granted.contains(&s)) {
                        return Ok(Refreshed::Scope);
                    }
                    Some(req.to_owned())
                }
            };
            // Spent only now, when the request is known to succeed; 0 rows: a concurrent request spent it first.
            if repo::tokens::mark_used(c, &hash, at)? != 1 {
                return reused(c, family);
            }
            let idle = (at + secs(self.config.tokens.refresh_idle_ttl_secs)).min(family.expires_at);
            repo::tokens::insert_token(
                c,
                &RefreshTokenRow {
                    token_hash: next_hash.clone(),
                    sid: family.sid.clone(),
                    issued_at: at,
                    idle_expires_at: idle,
                    used_at: None,
                },
            )?;
            let groups = group_names(c, &user.id)?;
            let ttl = self.config.tokens.access_ttl_secs;
            let claims = self.user_claims(
                &user,
                groups,
                &family.client_id,
                scope,
                &family.audience,
                &family.sid,
                ttl,
                at,
            );
            audit::record(grant_entry("token.refresh", &claims));
            Ok::<_, OAuthError>(Refreshed::Minted(Box::new(Minted {
                claims,
                refresh_token: Some(next.clone()),
                user_id: user.id,
            })))
        })?;
        match outcome {
            Refreshed::Minted(minted) => {
                self.activity.refreshed(&minted.user_id, caller.client_id());
                self.respond(*minted, self.config.tokens.access_ttl_secs)
            }
            Refreshed::Reused { sid, user_id } => {
                tracing::warn!(user.id = %user_id, session.id = %sid, client.id = %caller.client_id(), "refresh token reuse: ended session {sid} of user {user_id}");
                Err(OAuthError::invalid_grant(REFRESH_REUSED))
            }
            Refreshed::Scope => Err(OAuthError::InvalidScope(
                "scope exceeds what the login was granted".into(),
            )),
            Refreshed::Refused(why) => Err(OAuthError::invalid_grant(why)),
        }
    }

    /// `grant_type=client_credentials`: a service token for an API credential. No user, no generation, no refresh
    /// token; it is active while its credential is.
    pub fn client_credentials(
        &self,
        caller: &Caller,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let Caller::Credential(client) = caller else {
            return Err(OAuthError::UnauthorizedClient(format!(
                "the public client {CLI_CLIENT} cannot use client_credentials"
            )));
        };
        let Some(granted) = self.config.tokens.client_credentials.get(&client.name) else {
            return Err(OAuthError::UnauthorizedClient(format!(
                "credential `{}` may not use client_credentials (see tokens.client_credentials)",
                client.name
            )));
        };
        let audience = self.audience(req.audience.as_deref())?;
        let ttl = self.ttl(req.ttl)?;
        // No scope asked for: every scope the credential may have (RFC 6749 §3.3 lets the server pick a default).
        let scope = match parse_scope(req.scope.as_deref())? {
            None => (!granted.is_empty()).then(|| granted.join(" ")),
            asked => allowed(asked, granted, "tokens.client_credentials")?,
        };
        let iat = unix(now());
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: client.name.clone(),
            aud: audience,
            exp: iat + i64::try_from(ttl).unwrap_or(0),
            iat,
            nbf: iat,
            jti: new_id(),
            client_id: client.name.clone(),
            scope,
            preferred_username: None,
            groups: None,
            sid: None,
            tgen: None,
        };
        audit::record_now(&self.db, vec![grant_entry("token.client_credentials", &claims)])?;
        tracing::info!(client.id = %client.name, "minted a service token for {}", client.name);
        Ok(TokenResponse {
            access_token: self.sign_access(&claims)?,
            issued_token_type: None,
            token_type: "Bearer".into(),
            expires_in: ttl,
            refresh_token: None,
            scope: claims.scope,
        })
    }
}

/// Deletes records that can no longer matter: revoked `jti`s and seen assertions past expiry, and refresh-token
/// families that expired so long ago that no access token of theirs can still be valid (the family row is what
/// makes a revoked `sid` inactive). Returns rows deleted.
pub fn prune(db: &Db, max_access_ttl_secs: u64) -> Result<usize, DbError> {
    let at = now();
    let keep = secs(max_access_ttl_secs) + TimeDelta::days(1);
    db.write(|c| repo::tokens::prune(c, at, at - keep).map_err(DbError::from))
}

enum Refreshed {
    Minted(Box<Minted>),
    Reused { sid: String, user_id: String },
    Scope,
    Refused(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_rfc_6749() {
        assert_eq!(parse_scope(None).unwrap(), None);
        assert_eq!(parse_scope(Some("  ")).unwrap(), None);
        assert_eq!(
            parse_scope(Some("repo:read  repo:write repo:read"))
                .unwrap()
                .as_deref(),
            Some("repo:read repo:write")
        );
        assert!(matches!(
            parse_scope(Some("a\"b")),
            Err(OAuthError::InvalidScope(_))
        ));
        assert!(matches!(
            parse_scope(Some("a\\b")),
            Err(OAuthError::InvalidScope(_))
        ));
        assert!(matches!(
            parse_scope(Some(&"a".repeat(1025))),
            Err(OAuthError::InvalidScope(_))
        ));
    }

    #[test]
    fn refresh_tokens_are_prefixed_and_random() {
        let a = new_refresh_token();
        assert!(a.starts_with(REFRESH_PREFIX));
        assert_eq!(a.len(), REFRESH_PREFIX.len() + 43);
        assert_ne!(a, new_refresh_token());
    }

    #[test]
    fn error_codes_are_rfc_6749() {
        assert_eq!(
            OAuthError::InvalidClient { presented: true }.code(),
            "invalid_client"
        );
        assert_eq!(OAuthError::invalid_grant("x").code(), "invalid_grant");
        assert_eq!(
            OAuthError::from(AppError::Unauthorized { presented: false }).code(),
            "invalid_client"
        );
        assert_eq!(OAuthError::Server(AppError::internal("x")).code(), "server_error");
    }
}
