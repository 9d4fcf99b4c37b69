ALTER TABLE groups ALTER COLUMN external_id TYPE TEXT COLLATE "default";
ALTER TABLE groups ALTER COLUMN display_name_folded TYPE TEXT COLLATE "default";
ALTER TABLE users ALTER COLUMN external_id TYPE TEXT COLLATE "default";
ALTER TABLE users ALTER COLUMN display_name_folded TYPE TEXT COLLATE "default";
ALTER TABLE users ALTER COLUMN user_name_folded TYPE TEXT COLLATE "default";
