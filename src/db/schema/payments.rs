// @generated automatically by Diesel CLI.

pub mod payments {
    diesel::table! {
        payments.idempotency_keys (key) {
            key -> Text,
            route -> Text,
            request_hash -> Text,
            status -> Nullable<Int4>,
            response -> Nullable<Jsonb>,
            created_at -> Timestamptz,
            started_at -> Timestamptz,
        }
    }

    diesel::table! {
        payments.refund_requests (id) {
            id -> Text,
            local_id -> Uuid,
            payment_intent -> Text,
            amount -> Nullable<Int8>,
            reason -> Nullable<Text>,
            status -> Text,
            refund_id -> Nullable<Text>,
            error -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::allow_tables_to_appear_in_same_query!(idempotency_keys, refund_requests,);
}
