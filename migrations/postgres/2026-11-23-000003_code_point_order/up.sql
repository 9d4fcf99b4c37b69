-- Text columns that lists sort on and filters compare by range: code point order (COLLATE "C"), the order SQLite
-- has by default and the one offboard defines (RFC 7644 §3.4.2.3: no locale). Their indexes are rebuilt with it, so
-- they serve `ORDER BY … COLLATE "C"`, `<`/`>` and `LIKE 'prefix%'` whatever the database's default collation.
-- SQLite twin: migrations/sqlite/<same folder> (nothing to change there).
ALTER TABLE users ALTER COLUMN user_name_folded TYPE TEXT COLLATE "C";
ALTER TABLE users ALTER COLUMN display_name_folded TYPE TEXT COLLATE "C";
ALTER TABLE users ALTER COLUMN external_id TYPE TEXT COLLATE "C";
ALTER TABLE groups ALTER COLUMN display_name_folded TYPE TEXT COLLATE "C";
ALTER TABLE groups ALTER COLUMN external_id TYPE TEXT COLLATE "C";
