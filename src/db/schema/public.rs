// @generated automatically by Diesel CLI.

diesel::table! {
    customers (id) {
        id -> Uuid,
        email -> Nullable<Text>,
        name -> Nullable<Text>,
        phone -> Nullable<Text>,
        description -> Nullable<Text>,
        metadata -> Jsonb,
        stripe_object -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        version -> Int8,
    }
}

diesel::table! {
    dlq_replays (dlq_topic, partition, offset) {
        dlq_topic -> Text,
        partition -> Int4,
        offset -> Int8,
        replayed_at -> Timestamptz,
    }
}

diesel::table! {
    event_ledger (service, account, event_id) {
        service -> Text,
        account -> Text,
        event_id -> Text,
        event_type -> Text,
        object_id -> Text,
        event_created -> Int8,
        outcome -> Text,
        processed_at -> Timestamptz,
        echo -> Bool,
    }
}

diesel::table! {
    id_map (service, account, entity, external_id) {
        service -> Text,
        account -> Text,
        entity -> Text,
        external_id -> Text,
        local_id -> Uuid,
        remote_version -> Int8,
        remote_event_id -> Nullable<Text>,
        remote_deleted -> Bool,
        synced_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        entity -> Text,
        local_id -> Uuid,
        operation -> Text,
        fields -> Jsonb,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        origin -> Text,
    }
}

diesel::table! {
    outbox_deliveries (outbox_id, service) {
        outbox_id -> Int8,
        service -> Text,
        status -> Text,
        external_id -> Nullable<Text>,
        error -> Nullable<Text>,
        delivered_at -> Timestamptz,
    }
}

diesel::table! {
    sync_cursors (service, account, stream) {
        service -> Text,
        account -> Text,
        stream -> Text,
        position -> Nullable<Text>,
        scope -> Text,
        completed_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(outbox_deliveries -> outbox (outbox_id));

diesel::allow_tables_to_appear_in_same_query!(
    customers,
    dlq_replays,
    event_ledger,
    id_map,
    outbox,
    outbox_deliveries,
    sync_cursors,
);
