//! SQL for refresh-token families and tokens, revoked access-token ids, seen assertion ids, token activity, and
//! the one-statement introspection read (docs/decisions/0020-one-read-introspection.md).

use crate::db::DbConnection;
use crate::db::models::{RefreshFamily, RefreshTokenRow, TokenActivity};
use crate::db::schema::{refresh_families, refresh_tokens, revoked_jtis, seen_assertions, token_activity};
use chrono::NaiveDateTime;
use diesel::prelude::*;

pub fn insert_family(conn: &mut DbConnection, family: &RefreshFamily) -> QueryResult<()> {
    diesel::insert_into(refresh_families::table)
        .values(family)
        .execute(conn)
        .map(drop)
}

pub fn insert_token(conn: &mut DbConnection, token: &RefreshTokenRow) -> QueryResult<()> {
    diesel::insert_into(refresh_tokens::table)
        .values(token)
        .execute(conn)
        .map(drop)
}

/// A refresh token and its family, by the token's hash.
pub fn find_token(
    conn: &mut DbConnection,
    hash: &str,
) -> QueryResult<Option<(RefreshTokenRow, RefreshFamily)>> {
    refresh_tokens::table
        .inner_join(refresh_families::table)
        .filter(refresh_tokens::token_hash.eq(hash))
        .select((RefreshTokenRow::as_select(), RefreshFamily::as_select()))
        .load(conn)
        .map(super::unique)
}

/// A refresh token, its family and its user's active flag, generation and userName (`None` for the user when it
/// is a tombstone), in one statement, for introspection.
#[expect(clippy::type_complexity, reason = "one row of three joined tables, used once")]
pub fn find_token_with_user(
    conn: &mut DbConnection,
    hash: &str,
) -> QueryResult<Option<(RefreshTokenRow, RefreshFamily, Option<(bool, i64, String)>)>> {
    use crate::db::schema::users;
    let rows: Vec<(
        RefreshTokenRow,
        RefreshFamily,
        (bool, i64, String, Option<NaiveDateTime>),
    )> = refresh_tokens::table
        .inner_join(refresh_families::table)
        .inner_join(users::table.on(users::id.eq(refresh_families::user_id)))
        .filter(refresh_tokens::token_hash.eq(hash))
        .select((
            RefreshTokenRow::as_select(),
            RefreshFamily::as_select(),
            (
                users::active,
                users::token_generation,
                users::user_name,
                users::deleted_at,
            ),
        ))
        .load(conn)?;
    Ok(
        super::unique(rows).map(|(t, f, (active, generation, name, deleted))| {
            (t, f, deleted.is_none().then_some((active, generation, name)))
        }),
    )
}

/// Marks an unused token used; returns rows changed (0: it was used already, by a concurrent request).
pub fn mark_used(conn: &mut DbConnection, hash: &str, at: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(refresh_tokens::table)
        .filter(refresh_tokens::token_hash.eq(hash))
        .filter(refresh_tokens::used_at.is_null())
        .set(refresh_tokens::used_at.eq(at))
        .execute(conn)
}

/// Revokes one family if it is live; returns rows changed.
pub fn revoke_family(
    conn: &mut DbConnection,
    sid: &str,
    at: NaiveDateTime,
    reason: &str,
) -> QueryResult<usize> {
    let n = diesel::update(refresh_families::table)
        .filter(refresh_families::sid.eq(sid))
        .filter(refresh_families::revoked_at.is_null())
        .set((
            refresh_families::revoked_at.eq(at),
            refresh_families::revoked_reason.eq(reason),
        ))
        .execute(conn)?;
    if n > 0 {
        crate::state::changed(conn)?;
    }
    Ok(n)
}

/// Revokes every live family of a user; returns how many.
pub fn revoke_user_families(
    conn: &mut DbConnection,
    user_id: &str,
    at: NaiveDateTime,
    reason: &str,
) -> QueryResult<usize> {
    // A fixed statement, kept prepared: diesel's `UPDATE` is prepared again on every call
    // (docs/decisions/0041-fewer-statements-per-write.md).
    let n = super::fixed::execute(
        conn,
        "UPDATE refresh_families SET revoked_at = ?, revoked_reason = ? WHERE user_id = ? AND revoked_at IS NULL",
        &[
            super::fixed::Param::Time(at),
            super::fixed::Param::Text(reason),
            super::fixed::Param::Text(user_id),
        ],
    )?;
    if n > 0 {
        crate::state::changed(conn)?;
    }
    Ok(n)
}

/// Live (not revoked, not expired) families of a user, newest first.
pub fn live_families(
    conn: &mut DbConnection,
    user_id: &str,
    at: NaiveDateTime,
) -> QueryResult<Vec<RefreshFamily>> {
    refresh_families::table
        .filter(refresh_families::user_id.eq(user_id))
        .filter(refresh_families::revoked_at.is_null())
        .filter(refresh_families::expires_at.gt(at))
        .order(refresh_families::created.desc())
        .select(RefreshFamily::as_select())
        .load(conn)
}

/// Records an access token revoked by `jti` until `expires_at` (idempotent, also under concurrent revocations).
/// Returns whether this call revoked it (false: it was revoked before).
pub fn revoke_jti(
    conn: &mut DbConnection,
    jti: &str,
    expires_at: NaiveDateTime,
    at: NaiveDateTime,
) -> QueryResult<bool> {
    let insert = diesel::insert_into(revoked_jtis::table)
        .values((
            revoked_jtis::jti.eq(jti),
            revoked_jtis::expires_at.eq(expires_at),
            revoked_jtis::revoked_at.eq(at),
        ))
        .on_conflict_do_nothing();
    // `MultiConnection` has no upsert: the same statement on each backend's own connection.
    let first = match conn {
        DbConnection::Postgres(c) => insert.execute(c),
        DbConnection::Sqlite(c) => insert.execute(c),
    }? == 1;
    if first {
        crate::state::changed(conn)?;
    }
    Ok(first)
}

/// Records an assertion id; returns false when it was seen already (a replay), also when a concurrent request
/// recorded it first.
pub fn remember_assertion(
    conn: &mut DbConnection,
    issuer: &str,
    jti: &str,
    expires_at: NaiveDateTime,
) -> QueryResult<bool> {
    let insert = diesel::insert_into(seen_assertions::table)
        .values((
            seen_assertions::issuer.eq(issuer),
            seen_assertions::jti.eq(jti),
            seen_assertions::expires_at.eq(expires_at),
        ))
        .on_conflict_do_nothing();
    let inserted = match conn {
        DbConnection::Postgres(c) => insert.execute(c)?,
        DbConnection::Sqlite(c) => insert.execute(c)?,
    };
    Ok(inserted == 1)
}

/// Deletes what can no longer matter: revoked jtis and seen assertions past their expiry, and families (with
/// their tokens) that expired more than `keep` ago. Returns rows deleted.
pub fn prune(conn: &mut DbConnection, at: NaiveDateTime, family_cutoff: NaiveDateTime) -> QueryResult<usize> {
    let a = diesel::delete(revoked_jtis::table.filter(revoked_jtis::expires_at.lt(at))).execute(conn)?;
    let b =
        diesel::delete(seen_assertions::table.filter(seen_assertions::expires_at.lt(at))).execute(conn)?;
    let old = refresh_families::table
        .filter(refresh_families::expires_at.lt(family_cutoff))
        .select(refresh_families::sid);
    let c = diesel::delete(refresh_tokens::table.filter(refresh_tokens::sid.eq_any(old))).execute(conn)?;
    let d = diesel::delete(refresh_families::table.filter(refresh_families::expires_at.lt(family_cutoff)))
        .execute(conn)?;
    if a + d > 0 {
        crate::state::changed(conn)?;
    }
    Ok(a + b + c + d)
}

/// One pending activity record: when a user's tokens for a client were minted, refreshed, introspected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityUpdate {
    pub minted: Option<NaiveDateTime>,
    pub refreshed: Option<NaiveDateTime>,
    pub introspected: Option<NaiveDateTime>,
}

/// Upserts activity rows; a time left out keeps the stored one.
pub fn record_activity(
    conn: &mut DbConnection,
    rows: &[((String, String), ActivityUpdate)],
) -> QueryResult<()> {
    for ((user_id, client_id), u) in rows {
        let updated = diesel::update(token_activity::table)
            .filter(token_activity::user_id.eq(user_id))
            .filter(token_activity::client_id.eq(client_id))
            .set((
                u.minted.map(|t| token_activity::last_minted_at.eq(t)),
                u.refreshed.map(|t| token_activity::last_refreshed_at.eq(t)),
                u.introspected.map(|t| token_activity::last_introspected_at.eq(t)),
            ))
            .execute(conn);
        let updated = match updated {
            // Nothing to set (cannot happen: an update carries at least one time).
            Err(diesel::result::Error::QueryBuilderError(_)) => continue,
            other => other?,
        };
        if updated == 0 {
            diesel::insert_into(token_activity::table)
                .values(&TokenActivity {
                    user_id: user_id.clone(),
                    client_id: client_id.clone(),
                    last_minted_at: u.minted,
                    last_refreshed_at: u.refreshed,
                    last_introspected_at: u.introspected,
                })
                .execute(conn)?;
        }
    }
    Ok(())
}

pub fn activity_of(conn: &mut DbConnection, user_id: &str) -> QueryResult<Vec<TokenActivity>> {
    token_activity::table
        .filter(token_activity::user_id.eq(user_id))
        .order(token_activity::client_id)
        .select(TokenActivity::as_select())
        .load(conn)
}

/// What introspection needs to know beyond the signature, read in one statement.
#[derive(Debug, Clone, Queryable)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one row of independent yes/no facts, as SQL returns them"
)]
pub struct IntrospectionState {
    /// The caller's credential.
    pub caller_name: String,
    pub caller_secret_hash: String,
    pub caller_scopes: String,
    pub caller_live: bool,
    /// The token's user: None when no live row has that id.
    pub user_active: Option<bool>,
    pub user_generation: Option<i64>,
    pub jti_revoked: bool,
    pub sid_revoked: bool,
    /// The credential the token was issued to is live (service tokens).
    pub client_live: bool,
    /// The key that signed the token was declared compromised (by any instance or the CLI).
    pub key_compromised: bool,
}

/// How the caller of introspection identified its credential.
#[derive(Debug, Clone, Copy)]
pub enum CallerKey<'a> {
    SecretHash(&'a str),
    Name(&'a str),
}

diesel::alias!(crate::db::schema::credentials as token_client: TokenClient);

/// The caller's credential plus the token's user, `jti` and `sid` state, in one statement of index lookups. `None`
/// when no credential matches the caller. Written with the query builder, not as SQL text, so both backends keep
/// it prepared (diesel caches statements whose shape is known at compile time; a text query is parsed and
/// planned again on every call).
pub fn introspection_state(
    conn: &mut DbConnection,
    caller: CallerKey<'_>,
    sub: &str,
    jti: &str,
    sid: &str,
    client_id: &str,
    kid: &str,
) -> QueryResult<Option<IntrospectionState>> {
    use diesel::dsl::exists;

    use crate::db::schema::{credentials, signing_keys, users};
    let base =
        credentials::table.left_join(users::table.on(users::id.eq(sub).and(users::deleted_at.is_null())));
    let select = (
        credentials::name,
        credentials::secret_hash,
        credentials::scopes,
        credentials::revoked_at.is_null(),
        users::active.nullable(),
        users::token_generation.nullable(),
        exists(revoked_jtis::table.filter(revoked_jtis::jti.eq(jti))),
        exists(
            refresh_families::table
                .filter(refresh_families::sid.eq(sid))
                .filter(refresh_families::revoked_at.is_not_null()),
        ),
        exists(
            token_client
                .filter(token_client.field(credentials::name).eq(client_id))
                .filter(token_client.field(credentials::revoked_at).is_null()),
        ),
        exists(
            signing_keys::table
                .filter(signing_keys::kid.eq(kid))
                .filter(signing_keys::state.eq(super::keys::COMPROMISED)),
        ),
    );
    let rows: Vec<IntrospectionState> = match caller {
        CallerKey::SecretHash(h) => base
            .filter(credentials::secret_hash.eq(h))
            .select(select)
            .load(conn)?,
        CallerKey::Name(n) => base.filter(credentials::name.eq(n)).select(select).load(conn)?,
    };
    Ok(super::unique(rows))
}
