-- Bounded fan-out: per-stream outbox counts kept by triggers (so listing streams and /metrics read one row per
-- stream and state, never the outbox), an index for listing a credential's streams, and one for pruning settled
-- SETs after the retention. SQLite twin: migrations/sqlite/<same folder>.
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

CREATE FUNCTION outbox_state(status TEXT, last_error TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 'retrying'
                WHEN status = 'pending' THEN 'queued' ELSE status END
$$;

INSERT INTO outbox_counts (stream_id, state, n)
SELECT stream_id, outbox_state(status, last_error), count(*) FROM outbox GROUP BY 1, 2;

-- Statement-level, over the transition tables: one aggregated change per statement (a 50-row insert touches each
-- counter once), applied in (stream, state) order so concurrent writers lock counters in one order.
CREATE FUNCTION outbox_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO outbox_counts (stream_id, state, n)
        SELECT stream_id, outbox_state(status, last_error), count(*) FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (stream_id, state) DO UPDATE SET n = outbox_counts.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE outbox_counts c SET n = c.n - d.k
        FROM (SELECT stream_id, outbox_state(status, last_error) AS state, count(*) AS k
              FROM old_rows GROUP BY 1, 2) d
        WHERE c.stream_id = d.stream_id AND c.state = d.state;
    ELSE
        INSERT INTO outbox_counts (stream_id, state, n)
        SELECT stream_id, state, sum(k) FROM (
            SELECT o.stream_id, outbox_state(o.status, o.last_error) AS state, -1 AS k
            FROM old_rows o JOIN new_rows w ON w.id = o.id
            WHERE outbox_state(o.status, o.last_error) <> outbox_state(w.status, w.last_error)
            UNION ALL
            SELECT w.stream_id, outbox_state(w.status, w.last_error), 1
            FROM old_rows o JOIN new_rows w ON w.id = o.id
            WHERE outbox_state(o.status, o.last_error) <> outbox_state(w.status, w.last_error)
        ) d GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (stream_id, state) DO UPDATE SET n = outbox_counts.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_counts_apply();
CREATE TRIGGER outbox_counts_update AFTER UPDATE ON outbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_counts_apply();
CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_counts_apply();
