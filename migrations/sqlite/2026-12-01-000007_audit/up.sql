-- The tamper-evident audit log (ARCHITECTURE.md invariant 6). PostgreSQL twin: migrations/postgres/<same folder>.
-- `seq` is assigned by offboard under the chain lock, so it has no gaps: a missing number is a deleted entry.
-- hash = SHA-256(prev_hash || canonical(entry)); the canonical encoding is documented in src/audit/mod.rs.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY NOT NULL,
    time TIMESTAMP NOT NULL,
    -- A credential name, `cli`, `offboard` (the server itself) or a trusted issuer.
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    target_name TEXT,
    -- The user the entry concerns (the target of a user change, the subject of a SET delivery), for reports.
    subject TEXT,
    request_id TEXT,
    outcome TEXT NOT NULL,
    -- Canonical JSON (sorted keys, no whitespace), hashed as stored.
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time);
CREATE INDEX audit_log_subject ON audit_log (subject, seq) WHERE subject IS NOT NULL;
CREATE INDEX audit_log_target ON audit_log (target_id, seq) WHERE target_id IS NOT NULL;
CREATE INDEX audit_log_action ON audit_log (action, seq);

-- Entries are never changed in place: the chain would catch it, this refuses it first. Retention deletes the
-- oldest entries (and records that in the chain), so DELETE stays allowed.
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
