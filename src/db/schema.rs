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
        generation_at -> Nullable<Timestamp>,
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

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        state -> Text,
        private_key -> Text,
        kek_id -> Text,
        public_jwk -> Text,
        created -> Timestamp,
        activated_at -> Nullable<Timestamp>,
        retired_at -> Nullable<Timestamp>,
        publish_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    refresh_families (sid) {
        sid -> Text,
        user_id -> Text,
        client_id -> Text,
        generation -> BigInt,
        scope -> Text,
        audience -> Text,
        created -> Timestamp,
        expires_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        revoked_reason -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        sid -> Text,
        issued_at -> Timestamp,
        idle_expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    revoked_jtis (jti) {
        jti -> Text,
        expires_at -> Timestamp,
        revoked_at -> Timestamp,
    }
}

diesel::table! {
    seen_assertions (issuer, jti) {
        issuer -> Text,
        jti -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    user_holds (user_id) {
        user_id -> Text,
        reason -> Text,
        held_at -> Timestamp,
        idp_active -> Bool,
    }
}

diesel::table! {
    token_activity (user_id, client_id) {
        user_id -> Text,
        client_id -> Text,
        last_minted_at -> Nullable<Timestamp>,
        last_refreshed_at -> Nullable<Timestamp>,
        last_introspected_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    streams (id) {
        id -> Text,
        audience -> Text,
        delivery_method -> Text,
        endpoint_url -> Nullable<Text>,
        authorization_header -> Nullable<Text>,
        events_requested -> Text,
        description -> Nullable<Text>,
        status -> Text,
        status_reason -> Nullable<Text>,
        created_by -> Text,
        created -> Timestamp,
        updated -> Timestamp,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        stream_id -> Text,
        jti -> Text,
        txn -> Text,
        event_type -> Text,
        user_id -> Nullable<Text>,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        created -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    outbox_counts (stream_id, state) {
        stream_id -> Text,
        state -> Text,
        n -> BigInt,
    }
}

diesel::table! {
    outbox_changes (id) {
        id -> BigInt,
        txn -> Text,
        user_id -> Text,
        created -> Timestamp,
        events -> Text,
        targets -> Text,
    }
}

diesel::table! {
    stream_exclusions (stream_id, user_id) {
        stream_id -> Text,
        user_id -> Text,
    }
}

diesel::table! {
    audit_log (seq) {
        seq -> BigInt,
        time -> Timestamp,
        actor -> Text,
        action -> Text,
        target_type -> Nullable<Text>,
        target_id -> Nullable<Text>,
        target_name -> Nullable<Text>,
        subject -> Nullable<Text>,
        request_id -> Nullable<Text>,
        outcome -> Text,
        details -> Text,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    console_sessions (id_hash) {
        id_hash -> Text,
        credential_name -> Text,
        csrf_hash -> Text,
        created -> Timestamp,
        last_seen -> Timestamp,
        expires -> Timestamp,
    }
}

diesel::joinable!(console_sessions -> credentials (credential_name));
diesel::joinable!(outbox -> streams (stream_id));
diesel::joinable!(stream_exclusions -> streams (stream_id));
diesel::joinable!(outbox_counts -> streams (stream_id));
diesel::joinable!(user_emails -> users (user_id));
diesel::joinable!(refresh_families -> users (user_id));
diesel::joinable!(refresh_tokens -> refresh_families (sid));
diesel::joinable!(token_activity -> users (user_id));
diesel::joinable!(user_holds -> users (user_id));
diesel::joinable!(group_members -> groups (group_id));
diesel::joinable!(group_members -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    user_emails,
    credentials,
    groups,
    group_members,
    signing_keys,
    refresh_families,
    refresh_tokens,
    revoked_jtis,
    seen_assertions,
    token_activity,
    user_holds,
    streams,
    outbox,
    outbox_counts,
    outbox_changes,
    stream_exclusions,
    audit_log,
    console_sessions,
);
