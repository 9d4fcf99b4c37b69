-- Operator console sessions (`/console`): a credential with the `console` (or `admin`) scope signs in and gets a
-- session cookie. Only SHA-256 hashes of the session id and of its CSRF token are stored. A session ends at
-- `expires` (absolute) or when `last_seen` is older than the idle limit, whichever comes first; sign-out deletes
-- it. The twin for the other backend has the same name.
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY NOT NULL,
    credential_name TEXT NOT NULL REFERENCES credentials (name),
    csrf_hash TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    expires TIMESTAMP NOT NULL
);
CREATE INDEX console_sessions_credential ON console_sessions (credential_name);
