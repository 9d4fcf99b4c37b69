DROP TABLE token_activity;
DROP TABLE seen_assertions;
DROP TABLE revoked_jtis;
DROP TABLE refresh_tokens;
DROP TABLE refresh_families;
DROP TABLE signing_keys;
