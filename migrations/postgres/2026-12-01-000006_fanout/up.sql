-- Revocation fan-out: SSF streams (receivers) and the transactional outbox of Security Event Tokens.
-- SQLite twin: migrations/sqlite/<same folder>.
CREATE TABLE streams (
    id TEXT PRIMARY KEY NOT NULL,
    -- The `aud` of every SET on this stream.
    audience TEXT NOT NULL,
    -- push (RFC 8935) | poll (RFC 8936)
    delivery_method TEXT NOT NULL,
    endpoint_url TEXT,
    -- The receiver's Authorization header for push, sealed under the key-encryption key (never stored in clear).
    authorization_header TEXT,
    -- JSON array of event-type URIs the receiver asked for.
    events_requested TEXT NOT NULL,
    description TEXT,
    -- enabled | paused | disabled
    status TEXT NOT NULL,
    status_reason TEXT,
    created_by TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    updated TIMESTAMP NOT NULL
);

-- One row per event per stream, written in the transaction of the change it reports (ARCHITECTURE.md invariant 1).
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    stream_id TEXT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    -- The SET's `jti`: stable across retries, so receivers can de-duplicate.
    jti TEXT NOT NULL UNIQUE,
    txn TEXT NOT NULL,
    event_type TEXT NOT NULL,
    user_id TEXT,
    -- The SET's claims as JSON; signed when sent, with the active RS256 key.
    payload TEXT NOT NULL,
    -- pending | delivered | dead
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error TEXT,
    created TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP
);
CREATE INDEX outbox_stream_pending ON outbox (stream_id, id) WHERE status = 'pending';
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';

-- Subjects a receiver removed from its stream (SSF `remove_subject`); every other user is included (`default_subjects`
-- ALL). Adding the subject again deletes the row.
CREATE TABLE stream_exclusions (
    stream_id TEXT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    PRIMARY KEY (stream_id, user_id)
);
CREATE INDEX stream_exclusions_user ON stream_exclusions (user_id);
