-- The revocation snapshot (`GET /ssf/snapshot`): when each user's token generation last went up, so the snapshot
-- lists only users whose older tokens may still be unexpired, and an index to find the logins ended recently.
-- Users whose generation went up before this migration count as raised now (they stay in snapshots for one
-- access-token lifetime). The twin for the other backend has the same name.
ALTER TABLE users ADD COLUMN generation_at TIMESTAMP;
UPDATE users SET generation_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE token_generation > 0;
CREATE INDEX users_generation_at ON users (generation_at) WHERE generation_at IS NOT NULL;
CREATE INDEX refresh_families_revoked_at ON refresh_families (revoked_at) WHERE revoked_at IS NOT NULL;
