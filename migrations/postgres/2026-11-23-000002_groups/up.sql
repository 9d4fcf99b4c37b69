-- SCIM Groups and their members. The twin for the other backend has the same folder name.
CREATE TABLE groups (
    id TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    -- displayName folded in Rust (Unicode lower-case); SQL never folds
    -- (docs/decisions/0005-case-folding-in-rust.md).
    display_name_folded TEXT NOT NULL,
    external_id TEXT,
    -- The stored SCIM resource without members (they live in group_members), as JSON text.
    resource TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    created TIMESTAMP NOT NULL,
    last_modified TIMESTAMP NOT NULL
);
CREATE INDEX groups_display_name_folded ON groups (display_name_folded);
CREATE INDEX groups_external_id ON groups (external_id);
CREATE INDEX groups_last_modified ON groups (last_modified);
CREATE INDEX groups_created_id ON groups (created, id);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);
