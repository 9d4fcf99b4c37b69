-- Foundation: SCIM users and API credentials. SQLite twin: migrations/sqlite/<same folder>.
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    user_name TEXT NOT NULL,
    -- userName folded in Rust (Unicode lower-case); SQL never folds (docs/decisions/0005-case-folding-in-rust.md).
    user_name_folded TEXT NOT NULL,
    external_id TEXT,
    display_name TEXT,
    display_name_folded TEXT,
    active BOOLEAN NOT NULL,
    -- The stored SCIM resource (canonical names, no id/meta/password), as JSON text.
    resource TEXT NOT NULL,
    token_generation BIGINT NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 1,
    created TIMESTAMP NOT NULL,
    last_modified TIMESTAMP NOT NULL,
    deleted_at TIMESTAMP
);
CREATE UNIQUE INDEX users_user_name_live ON users (user_name_folded) WHERE deleted_at IS NULL;
CREATE INDEX users_external_id ON users (external_id);
CREATE INDEX users_display_name_folded ON users (display_name_folded);
CREATE INDEX users_last_modified ON users (last_modified);
CREATE INDEX users_created_id ON users (created, id);

CREATE TABLE user_emails (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    value_folded TEXT NOT NULL,
    type_folded TEXT
);
CREATE INDEX user_emails_value ON user_emails (value_folded);
CREATE INDEX user_emails_user ON user_emails (user_id);

CREATE TABLE credentials (
    name TEXT PRIMARY KEY NOT NULL,
    -- SHA-256 of the secret, hex. Secrets are 256-bit random; never stored in clear.
    secret_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    revoked_at TIMESTAMP
);
