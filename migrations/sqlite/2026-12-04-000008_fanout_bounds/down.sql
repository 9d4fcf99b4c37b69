DROP TRIGGER outbox_counts_delete;
DROP TRIGGER outbox_counts_update;
DROP TRIGGER outbox_counts_insert;
DROP TABLE outbox_counts;
DROP INDEX outbox_settled;
DROP INDEX streams_owner;
