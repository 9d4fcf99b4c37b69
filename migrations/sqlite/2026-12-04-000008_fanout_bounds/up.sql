-- Bounded fan-out: per-stream outbox counts kept by triggers (so listing streams and /metrics read one row per
-- stream and state, never the outbox), an index for listing a credential's streams, and one for pruning settled
-- SETs after the retention. PostgreSQL twin: migrations/postgres/<same folder>.
CREATE INDEX streams_owner ON streams (created_by, id);

-- Settled (delivered or dead-lettered) SETs by stream and age, for retention.
CREATE INDEX outbox_settled ON outbox (stream_id, created) WHERE status <> 'pending';

-- How many outbox rows each stream holds per state: queued (pending, no failed push yet), retrying (pending after a
-- failed push: last_error set), delivered, dead. Maintained by the triggers below, whatever writes the outbox.
CREATE TABLE outbox_counts (
    stream_id TEXT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (stream_id, state)
);

INSERT INTO outbox_counts (stream_id, state, n)
SELECT stream_id,
       CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 'retrying'
            WHEN status = 'pending' THEN 'queued' ELSE status END,
       count(*)
FROM outbox GROUP BY 1, 2;

CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox
BEGIN
    INSERT INTO outbox_counts (stream_id, state, n)
    VALUES (NEW.stream_id,
            CASE WHEN NEW.status = 'pending' AND NEW.last_error IS NOT NULL THEN 'retrying'
                 WHEN NEW.status = 'pending' THEN 'queued' ELSE NEW.status END,
            1)
    ON CONFLICT (stream_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER outbox_counts_update AFTER UPDATE OF status, last_error ON outbox
WHEN (CASE WHEN OLD.status = 'pending' AND OLD.last_error IS NOT NULL THEN 'retrying'
           WHEN OLD.status = 'pending' THEN 'queued' ELSE OLD.status END)
  <> (CASE WHEN NEW.status = 'pending' AND NEW.last_error IS NOT NULL THEN 'retrying'
           WHEN NEW.status = 'pending' THEN 'queued' ELSE NEW.status END)
BEGIN
    UPDATE outbox_counts SET n = n - 1
    WHERE stream_id = OLD.stream_id
      AND state = (CASE WHEN OLD.status = 'pending' AND OLD.last_error IS NOT NULL THEN 'retrying'
                        WHEN OLD.status = 'pending' THEN 'queued' ELSE OLD.status END);
    INSERT INTO outbox_counts (stream_id, state, n)
    VALUES (NEW.stream_id,
            CASE WHEN NEW.status = 'pending' AND NEW.last_error IS NOT NULL THEN 'retrying'
                 WHEN NEW.status = 'pending' THEN 'queued' ELSE NEW.status END,
            1)
    ON CONFLICT (stream_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox
BEGIN
    UPDATE outbox_counts SET n = n - 1
    WHERE stream_id = OLD.stream_id
      AND state = (CASE WHEN OLD.status = 'pending' AND OLD.last_error IS NOT NULL THEN 'retrying'
                        WHEN OLD.status = 'pending' THEN 'queued' ELSE OLD.status END);
END;
