DROP TRIGGER outbox_counts_delete ON outbox;
DROP TRIGGER outbox_counts_update ON outbox;
DROP TRIGGER outbox_counts_insert ON outbox;
DROP FUNCTION outbox_counts_apply();
DROP FUNCTION outbox_state(TEXT, TEXT);
DROP TABLE outbox_counts;
DROP INDEX outbox_settled;
DROP INDEX streams_owner;
