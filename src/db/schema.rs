//! diesel table definitions, written to match `migrations/` on both backends (a test round-trips every table).

diesel::table! {
    users (id) {
        id -> Text,
        user_name -> Text,
        user_name_folded -> Text,
        external_id -> Nullable<Text>,
        display_name -> Nullable<Text>,
        display_name_folded -> Nullable<Text>,
        active -> Bool,
        resource -> Text,
        token_generation -> BigInt,
        version -> BigInt,
        created -> Timestamp,
        last_modified -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    user_emails (user_id, value_folded) {
        user_id -> Text,
        value_folded -> Text,
        type_folded -> Nullable<Text>,
    }
}

diesel::table! {
    credentials (name) {
        name -> Text,
        secret_hash -> Text,
        scopes -> Text,
        created -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    groups (id) {
        id -> Text,
        display_name -> Text,
        display_name_folded -> Text,
        external_id -> Nullable<Text>,
        resource -> Text,
        version -> BigInt,
        created -> Timestamp,
        last_modified -> Timestamp,
    }
}

diesel::table! {
    group_members (group_id, user_id) {
        group_id -> Text,
        user_id -> Text,
    }
}

diesel::joinable!(user_emails -> users (user_id));
diesel::joinable!(group_members -> groups (group_id));
diesel::joinable!(group_members -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, user_emails, credentials, groups, group_members);
