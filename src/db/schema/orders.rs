// @generated automatically by Diesel CLI.

pub mod orders {
    diesel::table! {
        orders.export_batches (id) {
            id -> Uuid,
            name -> Text,
            from_xid -> Int8,
            from_seq -> Int8,
            to_xid -> Int8,
            to_seq -> Int8,
            payment_links -> Array<Nullable<Text>>,
            since -> Nullable<Timestamptz>,
            max_sessions -> Int8,
            count -> Int4,
            has_more -> Bool,
            sessions -> Nullable<Jsonb>,
            offers -> Int4,
            leased_until -> Timestamptz,
            created_at -> Timestamptz,
            acked_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        orders.exports (name) {
            name -> Text,
            last_xid -> Int8,
            last_seq -> Int8,
            runs -> Int8,
            delivered -> Int8,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        orders.notifications (id) {
            id -> Int8,
            account -> Text,
            order_key -> Text,
            session_id -> Text,
            event_id -> Text,
            event -> Jsonb,
            order_data -> Jsonb,
            message_id -> Text,
            status -> Text,
            attempts -> Int4,
            next_attempt_at -> Timestamptz,
            last_error -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            sent_at -> Nullable<Timestamptz>,
            lease_token -> Nullable<Uuid>,
        }
    }

    diesel::table! {
        orders.paid_sessions (account, session_id) {
            seq -> Int8,
            account -> Text,
            session_id -> Text,
            paid_xid -> Int8,
            seen_paid_at -> Timestamptz,
        }
    }

    diesel::allow_tables_to_appear_in_same_query!(
        export_batches,
        exports,
        notifications,
        paid_sessions,
    );
}
