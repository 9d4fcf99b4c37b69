CREATE INDEX users_created_id ON users (created, id);
DROP INDEX users_live_created_id;
