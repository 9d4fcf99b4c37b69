-- Operator holds (`offboard users deactivate`): a held user stays inactive whatever the identity provider sends
-- until `offboard users release`. `users.active` stays the effective flag (false while held); `idp_active` is what
-- the identity provider last asked for, applied on release. The twin for the other backend has the same name.
CREATE TABLE user_holds (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id),
    reason TEXT NOT NULL,
    held_at TIMESTAMP NOT NULL,
    idp_active BOOLEAN NOT NULL
);
