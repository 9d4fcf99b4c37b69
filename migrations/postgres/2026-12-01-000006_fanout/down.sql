DROP TABLE stream_exclusions;
DROP TABLE outbox;
DROP TABLE streams;
