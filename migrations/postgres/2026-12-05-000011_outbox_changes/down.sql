DROP TABLE outbox_changes;
