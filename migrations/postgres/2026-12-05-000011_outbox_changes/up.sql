-- Two-stage outbox: a change writes ONE row here, in its own transaction (the change and the news of it commit
-- together), instead of one outbox row per event per receiving stream. `fanout::pending::expand` turns these rows,
-- in id order, into the per-stream outbox rows (fresh `jti` each, `created` = the change's time) and deletes them,
-- before anything reads the outbox (src/fanout/pending.rs). SQLite twin: migrations/sqlite/<same folder>.
CREATE TABLE outbox_changes (
    -- Commit order (taken under the outbox order advisory lock, held until commit, so ids follow
    -- commit order across instances).
    id BIGSERIAL PRIMARY KEY,
    txn TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    -- JSON array of [event-type URI, stored payload] pairs, built once per change.
    events TEXT NOT NULL,
    -- JSON array of [stream id, bit mask of the events it receives], in stream id order: the receivers as of the
    -- change (streams receiving, asking for the event, not excluding the user).
    targets TEXT NOT NULL
);
