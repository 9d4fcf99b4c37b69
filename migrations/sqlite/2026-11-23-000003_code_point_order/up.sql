-- PostgreSQL twin: migrations/postgres/<same folder> gives the sorted and range-compared text columns code point
-- order (COLLATE "C"). SQLite compares text by code point already (its default BINARY collation): nothing to do.
SELECT 1;
