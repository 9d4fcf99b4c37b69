-- Cheaper outbox inserts: the per-row trigger that added each new outbox row to `outbox_counts` is dropped; the
-- code that inserts outbox rows (src/db/repo/fanout.rs, `insert_outbox_many`, the only insert path) adds them with
-- one multi-row upsert per statement instead. The update and delete triggers stay. PostgreSQL keeps its
-- statement-level trigger: its twin of this migration changes nothing.
DROP TRIGGER outbox_counts_insert;
