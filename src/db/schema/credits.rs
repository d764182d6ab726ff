// @generated automatically by Diesel CLI.

pub mod credits {
    diesel::table! {
        credits.balances (customer_id) {
            customer_id -> Uuid,
            balance -> Int8,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        credits.ledger (id) {
            id -> Uuid,
            customer_id -> Uuid,
            kind -> Text,
            credits -> Int8,
            source -> Text,
            purchase_id -> Nullable<Uuid>,
            reason -> Nullable<Text>,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        credits.packages (id) {
            id -> Text,
            name -> Text,
            price -> Int8,
            currency -> Text,
            credits -> Int8,
            active -> Bool,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        credits.purchases (id) {
            id -> Uuid,
            customer_id -> Uuid,
            package_id -> Text,
            credits -> Int8,
            price -> Int8,
            currency -> Text,
            request_key -> Text,
            payment_intent -> Nullable<Text>,
            status -> Text,
            error_code -> Nullable<Text>,
            error -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            payment_method -> Nullable<Text>,
        }
    }

    diesel::joinable!(ledger -> purchases (purchase_id));
    diesel::joinable!(purchases -> packages (package_id));

    diesel::allow_tables_to_appear_in_same_query!(balances, ledger, packages, purchases,);
}
