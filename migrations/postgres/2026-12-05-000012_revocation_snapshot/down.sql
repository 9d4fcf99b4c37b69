DROP INDEX refresh_families_revoked_at;
DROP INDEX users_generation_at;
ALTER TABLE users DROP COLUMN generation_at;
