//! Each state kept as text is one Rust enum and one CHECK constraint; the
//! two must list the same values, or a value one allows the other refuses
//! (a row Postgres takes that the code cannot read, or a write it refuses).

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel::sql_types::Text;
use stripe_sync::apps::credits::purchases::PurchaseStatus;
use stripe_sync::apps::orders::notifications::NotificationStatus;
use stripe_sync::apps::payments::refund_requests::RefundRequestStatus;
use stripe_sync::outbox::DeliveryStatus;

use crate::support::db::TestDb;

#[derive(QueryableByName)]
struct Constraint {
    #[diesel(sql_type = Text)]
    definition: String,
}

/// The values the CHECK constraints on `schema.table` allow `column`.
fn allowed(conn: &mut PgConnection, schema: &str, table: &str, column: &str) -> BTreeSet<String> {
    let checks: Vec<Constraint> = diesel::sql_query(
        "SELECT pg_get_constraintdef(c.oid) AS definition FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE c.contype = 'c' AND n.nspname = $1 AND t.relname = $2",
    )
    .bind::<Text, _>(schema)
    .bind::<Text, _>(table)
    .load(conn)
    .unwrap();
    let on_column: Vec<&str> = checks
        .iter()
        .map(|c| c.definition.as_str())
        .filter(|d| d.contains(&format!("({column} = ")) || d.contains(&format!("{column} = ANY")))
        .collect();
    assert_eq!(
        on_column.len(),
        1,
        "{schema}.{table}.{column} should have one CHECK listing its values: {on_column:?}"
    );
    on_column[0]
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn names(values: &[impl std::fmt::Display]) -> BTreeSet<String> {
    values.iter().map(ToString::to_string).collect()
}

#[test]
fn every_status_enum_lists_what_its_check_constraint_allows() {
    let db = TestDb::migrated();
    let mut conn = db.conn();
    let cases = [
        ("public", "outbox_deliveries", names(DeliveryStatus::ALL)),
        ("orders", "notifications", names(NotificationStatus::ALL)),
        (
            "payments",
            "refund_requests",
            names(RefundRequestStatus::ALL),
        ),
        ("credits", "purchases", names(PurchaseStatus::ALL)),
    ];
    for (schema, table, in_rust) in cases {
        assert_eq!(
            allowed(&mut conn, schema, table, "status"),
            in_rust,
            "{schema}.{table}.status: the CHECK constraint and the enum differ"
        );
    }
}
