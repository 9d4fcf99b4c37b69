CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox
BEGIN
    INSERT INTO outbox_counts (stream_id, state, n)
    VALUES (NEW.stream_id,
            CASE WHEN NEW.status = 'pending' AND NEW.last_error IS NOT NULL THEN 'retrying'
                 WHEN NEW.status = 'pending' THEN 'queued' ELSE NEW.status END,
            1)
    ON CONFLICT (stream_id, state) DO UPDATE SET n = n + 1;
END;
