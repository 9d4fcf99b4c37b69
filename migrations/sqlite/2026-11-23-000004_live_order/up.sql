-- Lists count and page live users in creation order: a partial index holds exactly those rows, so neither the
-- count nor the page visits tombstones or table rows to find them. It replaces the index over every row.
CREATE INDEX users_live_created_id ON users (created, id) WHERE deleted_at IS NULL;
DROP INDEX users_created_id;
