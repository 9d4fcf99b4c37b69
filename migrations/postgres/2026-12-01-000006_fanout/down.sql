DROP TABLE outbox;
DROP TABLE streams;
