-- Nothing to change on PostgreSQL: its outbox counters are kept by one statement-level trigger per INSERT, which
-- costs one aggregated upsert per change already. The SQLite twin drops that backend's per-row insert trigger.
SELECT 1;
