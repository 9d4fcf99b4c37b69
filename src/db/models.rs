//! Row structs (`User`, `Credential`) and write structs (`NewUser`, `UserChange`, `NewCredential`).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{
    audit_log, credentials, group_members, groups, outbox, outbox_changes, refresh_families, refresh_tokens,
    signing_keys, streams, token_activity, user_emails, user_holds, users,
};

/// A user row: live (`deleted_at` is None) or a tombstone.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub user_name: String,
    pub user_name_folded: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub display_name_folded: Option<String>,
    pub active: bool,
    pub resource: String,
    pub token_generation: i64,
    pub version: i64,
    pub created: NaiveDateTime,
    pub last_modified: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub user_name: &'a str,
    pub user_name_folded: &'a str,
    pub external_id: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub display_name_folded: Option<&'a str>,
    pub active: bool,
    pub resource: &'a str,
    pub token_generation: i64,
    pub version: i64,
    pub created: NaiveDateTime,
    pub last_modified: NaiveDateTime,
}

/// The indexed columns and the stored resource, as replaced by PUT or PATCH.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = users, treat_none_as_null = true)]
pub struct UserChange<'a> {
    pub user_name: &'a str,
    pub user_name_folded: &'a str,
    // Owned: diesel's derive would take `&Option<&str>`, which clippy refuses.
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub display_name_folded: Option<String>,
    pub active: bool,
    pub resource: &'a str,
    pub last_modified: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = user_emails)]
pub struct NewUserEmail<'a> {
    pub user_id: &'a str,
    pub value_folded: String,
    pub type_folded: Option<String>,
}

/// An API credential. `secret_hash` is SHA-256 of the secret; the secret itself is never stored.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = credentials)]
pub struct Credential {
    pub name: String,
    pub secret_hash: String,
    pub scopes: String,
    pub created: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = credentials)]
pub struct NewCredential<'a> {
    pub name: &'a str,
    pub secret_hash: &'a str,
    pub scopes: &'a str,
    pub created: NaiveDateTime,
}

/// A SCIM group; its members live in `group_members`.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = groups)]
pub struct Group {
    pub id: String,
    pub display_name: String,
    pub display_name_folded: String,
    pub external_id: Option<String>,
    pub resource: String,
    pub version: i64,
    pub created: NaiveDateTime,
    pub last_modified: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = groups)]
pub struct NewGroup<'a> {
    pub id: &'a str,
    pub display_name: &'a str,
    pub display_name_folded: &'a str,
    pub external_id: Option<&'a str>,
    pub resource: &'a str,
    pub version: i64,
    pub created: NaiveDateTime,
    pub last_modified: NaiveDateTime,
}

#[derive(Debug, AsChangeset)]
#[diesel(table_name = groups, treat_none_as_null = true)]
pub struct GroupChange<'a> {
    pub display_name: &'a str,
    pub display_name_folded: &'a str,
    pub external_id: Option<String>,
    pub resource: &'a str,
    pub last_modified: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = group_members)]
pub struct NewMember<'a> {
    pub group_id: &'a str,
    pub user_id: &'a str,
}

/// A signing key. `private_key` is sealed under the key-encryption key; `Debug` leaves it out.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys)]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub private_key: String,
    pub kek_id: String,
    pub public_jwk: String,
    pub created: NaiveDateTime,
    pub activated_at: Option<NaiveDateTime>,
    pub retired_at: Option<NaiveDateTime>,
    pub publish_until: Option<NaiveDateTime>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("publish_until", &self.publish_until)
            .finish_non_exhaustive()
    }
}

/// A refresh-token family: one login, the `sid` of every access token minted from it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_families)]
pub struct RefreshFamily {
    pub sid: String,
    pub user_id: String,
    pub client_id: String,
    pub generation: i64,
    pub scope: String,
    pub audience: String,
    pub created: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
    pub revoked_reason: Option<String>,
}

/// One refresh token, known by the SHA-256 of its value.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshTokenRow {
    pub token_hash: String,
    pub sid: String,
    pub issued_at: NaiveDateTime,
    pub idle_expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}

/// When a user's tokens for one client were last minted, refreshed and introspected.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = token_activity)]
pub struct TokenActivity {
    pub user_id: String,
    pub client_id: String,
    pub last_minted_at: Option<NaiveDateTime>,
    pub last_refreshed_at: Option<NaiveDateTime>,
    pub last_introspected_at: Option<NaiveDateTime>,
}

/// An operator hold on a user (`offboard users deactivate`): the user stays inactive until released;
/// `idp_active` is what the identity provider last asked for, applied on release.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = user_holds)]
pub struct UserHold {
    pub user_id: String,
    pub reason: String,
    pub held_at: NaiveDateTime,
    pub idp_active: bool,
}

/// An SSF stream: one receiver. `authorization_header` is sealed under the key-encryption key.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = streams)]
pub struct StreamRow {
    pub id: String,
    pub audience: String,
    pub delivery_method: String,
    pub endpoint_url: Option<String>,
    pub authorization_header: Option<String>,
    pub events_requested: String,
    pub description: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub created_by: String,
    pub created: NaiveDateTime,
    pub updated: NaiveDateTime,
}

impl std::fmt::Debug for StreamRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRow")
            .field("id", &self.id)
            .field("audience", &self.audience)
            .field("delivery_method", &self.delivery_method)
            .field("endpoint_url", &self.endpoint_url)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A SET waiting for (or past) delivery to one stream.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub stream_id: String,
    pub jti: String,
    pub txn: String,
    pub event_type: String,
    pub user_id: Option<String>,
    pub payload: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub last_error: Option<String>,
    pub created: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = outbox)]
pub struct NewOutbox<'a> {
    pub stream_id: &'a str,
    pub jti: &'a str,
    pub txn: &'a str,
    pub event_type: &'a str,
    pub user_id: Option<&'a str>,
    pub payload: &'a str,
    pub status: &'a str,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub created: NaiveDateTime,
}

/// A change whose SETs are not in the outbox yet (src/fanout/pending.rs).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox_changes)]
pub struct OutboxChangeRow {
    pub id: i64,
    pub txn: String,
    pub user_id: String,
    pub created: NaiveDateTime,
    pub events: String,
    pub targets: String,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = outbox_changes)]
pub struct NewOutboxChange<'a> {
    pub txn: &'a str,
    pub user_id: &'a str,
    pub created: NaiveDateTime,
    pub events: &'a str,
    pub targets: &'a str,
}

/// One audit-log entry, as stored and as exported.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, serde::Serialize)]
#[diesel(table_name = audit_log)]
pub struct AuditRow {
    pub seq: i64,
    #[serde(serialize_with = "serialize_time")]
    pub time: NaiveDateTime,
    pub actor: String,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub target_name: Option<String>,
    pub subject: Option<String>,
    pub request_id: Option<String>,
    pub outcome: String,
    #[serde(serialize_with = "serialize_raw_json")]
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// An entry's time as the audit log writes it: RFC 3339, UTC, milliseconds ([`super::format_time`]).
pub fn serialize_time<S: serde::Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::format_time(*t))
}

/// Embeds stored JSON text as JSON (not as a string), byte for byte.
pub fn serialize_raw_json<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    match serde_json::value::RawValue::from_string(text.to_owned()) {
        Ok(raw) => raw.serialize(s),
        Err(_) => s.serialize_str(text),
    }
}

/// An operator console session: only hashes of its id and CSRF token are kept.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = super::schema::console_sessions)]
pub struct ConsoleSession {
    pub id_hash: String,
    pub credential_name: String,
    pub csrf_hash: String,
    pub created: NaiveDateTime,
    pub last_seen: NaiveDateTime,
    pub expires: NaiveDateTime,
}
