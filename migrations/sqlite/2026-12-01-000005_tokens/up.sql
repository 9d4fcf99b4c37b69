-- Token authority: signing keys, refresh-token families and their tokens, revoked access-token ids, replayed
-- assertion ids, and per user and client token activity. The twin for the other backend has the same folder name.

CREATE TABLE signing_keys (
    -- RFC 7638 thumbprint (SHA-256, base64url) of the public JWK.
    kid TEXT PRIMARY KEY NOT NULL,
    alg TEXT NOT NULL,
    -- next (published, not yet signing) | active (signing) | retired (published until publish_until)
    state TEXT NOT NULL,
    -- PKCS#8 private key sealed with AES-256-GCM under the key-encryption key (nonce ‖ ciphertext ‖ tag, base64).
    private_key TEXT NOT NULL,
    -- Which key-encryption key sealed it (first bytes of SHA-256 of the KEK), for a clear error on a wrong KEK.
    kek_id TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    activated_at TIMESTAMP,
    retired_at TIMESTAMP,
    publish_until TIMESTAMP
);
-- Several instances on one database agree: at most one active and one next key per algorithm.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (alg) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (alg) WHERE state = 'next';

-- One row per login (the `sid` of every access token minted from it): bound to user, client and generation.
CREATE TABLE refresh_families (
    sid TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    client_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    scope TEXT NOT NULL,
    audience TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    -- Absolute lifetime: no refresh after this, however often the family was used.
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    revoked_reason TEXT
);
CREATE INDEX refresh_families_live_user ON refresh_families (user_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_families_expires ON refresh_families (expires_at);

-- Each refresh token ever issued, by SHA-256 of its value; `used_at` set when it was rotated out.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    sid TEXT NOT NULL REFERENCES refresh_families (sid) ON DELETE CASCADE,
    issued_at TIMESTAMP NOT NULL,
    -- Idle timeout: a token not used by then has expired.
    idle_expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP
);
CREATE INDEX refresh_tokens_sid ON refresh_tokens (sid);

-- Access tokens revoked one by one (RFC 7009), kept until they would have expired anyway.
CREATE TABLE revoked_jtis (
    jti TEXT PRIMARY KEY NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP NOT NULL
);
CREATE INDEX revoked_jtis_expires ON revoked_jtis (expires_at);

-- Assertion ids already accepted (private-key JWTs of Global Token Revocation), kept until they expire.
CREATE TABLE seen_assertions (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX seen_assertions_expires ON seen_assertions (expires_at);

-- When tokens were last minted, refreshed and introspected, per user and client (written in batches).
CREATE TABLE token_activity (
    user_id TEXT NOT NULL REFERENCES users (id),
    client_id TEXT NOT NULL,
    last_minted_at TIMESTAMP,
    last_refreshed_at TIMESTAMP,
    last_introspected_at TIMESTAMP,
    PRIMARY KEY (user_id, client_id)
);
