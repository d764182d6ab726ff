//! The customer row lock every writer takes (the API, the Stripe applies
//! per event and in a batch, the Salesforce apply) must not block the
//! credits tables' foreign-key checks: `credits.purchases`, `balances`
//! and `ledger` reference `customers (id)`, and an insert there takes FOR
//! KEY SHARE on the customer row. FOR UPDATE conflicts with it, FOR NO KEY
//! UPDATE does not (nor does an UPDATE that leaves `id` alone). Held FOR
//! UPDATE, the lock deadlocks for real: a lane's batch locks customer M;
//! a credits spend locks `credits.balances` M and its ledger insert waits
//! for M; the lane's catalog part then settles a refund of M and waits on
//! `credits.balances` M.
//!
//! Deterministic and quick: each path runs in a transaction left open
//! while another connection, with a short `lock_timeout`, inserts credits
//! rows for the customer; blocked, the insert fails within the timeout.

use diesel::prelude::*;
use serde_json::json;
use stripe_sync::apply::{self, FanOut};
use stripe_sync::customers::{self, input::CustomerPatch};
use stripe_sync::salesforce::apply::Context;
use stripe_sync::salesforce::event::{SalesforceEvent, SOURCE_POLL};
use stripe_sync::stripe::StripeEvent;

use crate::support::db::TestDb;
use crate::tombstone::{self, NoReads, CONTACT, INTEGRATION_USER, LOCAL, ORG, PERSON};

fn stripe_updated() -> StripeEvent {
    let event = json!({
        "id": "evt_lock_updated", "object": "event", "type": "customer.updated", "created": 200,
        "livemode": false,
        "data": {"object": {"id": "cus_race", "object": "customer", "email": "r@example.com",
                            "name": "After", "metadata": {}}},
    });
    StripeEvent::parse(&serde_json::to_vec(&event).unwrap()).unwrap()
}

fn stripe_update_per_event(conn: &mut PgConnection) {
    let event = stripe_updated();
    let results = apply::apply_each(conn, &NoReads, &[&event], FanOut::ToOtherServices).unwrap();
    assert_eq!(results, vec![Ok(apply::Applied::Upserted)]);
}

fn stripe_update_in_a_batch(conn: &mut PgConnection) {
    let event = stripe_updated();
    let results = apply::apply_batch(conn, &NoReads, &[&event], FanOut::ToOtherServices).unwrap();
    assert_eq!(results, vec![Ok(apply::Applied::Upserted)]);
}

fn salesforce_write(conn: &mut PgConnection) {
    let ctx = Context {
        org_id: ORG.into(),
        user_id: INTEGRATION_USER.into(),
        external_id_field: "StripeSync_Id__c".into(),
    };
    let record = json!({
        "Id": CONTACT, "FirstName": null, "LastName": "After", "Email": "r@example.com", "IsDeleted": false,
        "SystemModstamp": "2025-12-01T10:00:01.000+0000", "LastModifiedById": PERSON,
    });
    let event =
        SalesforceEvent::of_record(record.as_object().unwrap().clone(), Some(ORG), SOURCE_POLL)
            .unwrap();
    let applied = stripe_sync::salesforce::apply::apply(conn, &ctx, &event).unwrap();
    assert_eq!(applied, apply::Applied::Upserted);
}

fn api_update(conn: &mut PgConnection) {
    let patch = CustomerPatch {
        name: Some(Some("After".into())),
        ..CustomerPatch::default()
    };
    customers::update(conn, LOCAL.parse().unwrap(), patch, None).unwrap();
}

fn api_delete(conn: &mut PgConnection) {
    customers::delete(conn, LOCAL.parse().unwrap(), None).unwrap();
}

#[test]
fn a_customer_row_lock_does_not_block_the_credits_foreign_key_checks() {
    let paths = [
        (
            "stripe update, per event",
            stripe_update_per_event as fn(&mut PgConnection),
        ),
        ("stripe update, batch", stripe_update_in_a_batch),
        ("stripe delete, per event", tombstone::per_event),
        ("stripe delete, batch", tombstone::batch),
        ("salesforce update", salesforce_write),
        ("salesforce delete", tombstone::salesforce),
        ("api update", api_update),
        ("api delete", api_delete),
    ];
    let db = TestDb::migrated();
    let (mut holder, mut credits) = (db.conn(), db.conn());
    let mut blocked = Vec::new();
    for (name, path) in paths {
        diesel::sql_query("TRUNCATE customers, id_map, event_ledger, outbox CASCADE")
            .execute(&mut holder)
            .unwrap();
        tombstone::setup(&mut holder);
        holder
            .transaction::<_, diesel::result::Error, _>(|holder| {
                path(holder);
                // The path's row lock is held until this transaction ends.
                let inserted = credits.transaction::<_, diesel::result::Error, _>(|c| {
                    diesel::sql_query("SET LOCAL lock_timeout = '500ms'").execute(c)?;
                    diesel::sql_query(format!(
                        "INSERT INTO credits.balances (customer_id) VALUES ('{LOCAL}')"
                    ))
                    .execute(c)?;
                    diesel::sql_query(format!(
                        "INSERT INTO credits.ledger (customer_id, kind, credits, source) \
                         VALUES ('{LOCAL}', 'adjustment', 1, 'lock test')"
                    ))
                    .execute(c)
                });
                if let Err(e) = inserted {
                    blocked.push(format!("{name}: {e}"));
                }
                Ok(())
            })
            .unwrap();
    }
    assert!(
        blocked.is_empty(),
        "credits inserts waited for a customer row lock: {blocked:#?}"
    );
}
