//! The money check's self-test: one defect of each kind the money check
//! looks for, planted in a transaction rolled back afterwards or in copies
//! of the load's and the fake's records. A check that cannot fail proves
//! nothing.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::json;
use stripe_sync::apps::payments::command_worker;

use crate::payments::{is_final, Expected, Route};
use crate::payments_check::{verify, PaymentsVerdict};
use crate::payments_stripe::Money;

/// The money check's own test: plants one defect of each kind (in copies
/// of the load's record and the fake's, or in a transaction rolled back)
/// and returns the kinds it missed.
pub fn self_test(
    conn: &mut PgConnection,
    expected: &Expected,
    money: &Money,
) -> anyhow::Result<Vec<&'static str>> {
    let mut missed = Vec::new();
    let sql_plants: [(&'static str, &str, Caught); 6] = [
        (
            "a purchase credited twice",
            "DROP INDEX credits.ledger_one_credit_per_purchase;
             INSERT INTO credits.ledger (customer_id, kind, credits, source, purchase_id, reason)
             SELECT customer_id, kind, credits, source || ':again', purchase_id, reason
             FROM credits.ledger WHERE kind = 'purchase' LIMIT 1;",
            |v| v.purchases_credited_twice > 0,
        ),
        (
            "a payment intent crediting two purchases",
            "ALTER TABLE credits.purchases DROP CONSTRAINT purchases_payment_intent_key;
             UPDATE credits.purchases SET payment_intent =
                 (SELECT max(payment_intent) FROM credits.purchases WHERE status = 'succeeded')
             WHERE id = (SELECT id FROM credits.purchases WHERE status = 'succeeded'
                         ORDER BY payment_intent LIMIT 1);",
            |v| v.intents_crediting_two_purchases > 0,
        ),
        (
            "a charged purchase not credited",
            "ALTER TABLE credits.ledger DISABLE TRIGGER ledger_is_append_only;
             DELETE FROM credits.ledger WHERE id =
                 (SELECT id FROM credits.ledger WHERE kind = 'purchase' LIMIT 1);",
            |v| v.purchases_charged_not_credited > 0,
        ),
        (
            "a balance off its ledger by one",
            "UPDATE credits.balances SET balance = balance + 1
             WHERE customer_id = (SELECT min(customer_id::text)::uuid FROM credits.balances);",
            |v| v.balances_off_ledger > 0,
        ),
        (
            "a balance below zero",
            "UPDATE credits.balances SET balance = -1
             WHERE customer_id = (SELECT min(customer_id::text)::uuid FROM credits.balances);",
            |v| v.balances_negative > 0,
        ),
        (
            "a queued refund left pending",
            "UPDATE payments.refund_requests SET status = 'pending'
             WHERE id = (SELECT min(id) FROM payments.refund_requests);",
            |v| v.queued_refunds_not_final > 0,
        ),
    ];
    for (kind, sql, caught) in sql_plants {
        const ROLLED_BACK: &str = "the planted defect is rolled back";
        let mut found = false;
        let planted = conn.transaction::<(), anyhow::Error, _>(|conn| {
            conn.batch_execute(sql)?;
            found = caught(&verify(conn, expected, money)?);
            Err(anyhow::anyhow!(ROLLED_BACK))
        });
        match planted {
            Err(e) if e.to_string() == ROLLED_BACK => {}
            Err(e) => return Err(e),
            Ok(()) => unreachable!("the transaction always rolls back"),
        }
        if !found {
            missed.push(kind);
        }
    }
    for (kind, plant, caught) in copy_plants() {
        let (mut e, mut m) = (expected.clone(), money.clone());
        let found = plant(&mut e, &mut m) && caught(&verify(conn, &e, &m)?);
        if !found {
            missed.push(kind);
        }
    }
    Ok(missed)
}

type CopyPlant = fn(&mut Expected, &mut Money) -> bool;
type Caught = fn(&PaymentsVerdict) -> bool;

/// Defects planted in copies of the load's and the fake's records; each
/// says whether it found something to plant on.
fn copy_plants() -> Vec<(&'static str, CopyPlant, Caught)> {
    vec![
        (
            "a declined purchase credited",
            |_, m| {
                let credited = m.intents.values_mut().find(|pi| {
                    pi["status"] == "succeeded"
                        && pi["metadata"]["stripe_sync_purchase"].is_string()
                });
                credited
                    .map(|pi| pi["status"] = json!("requires_payment_method"))
                    .is_some()
            },
            |v| v.purchases_credited_not_charged > 0,
        ),
        (
            "a purchase charged twice",
            |_, m| {
                let Some(pi) = m.intents.values().find(|pi| {
                    pi["status"] == "succeeded"
                        && pi["metadata"]["stripe_sync_purchase"].is_string()
                }) else {
                    return false;
                };
                let mut twin = pi.clone();
                twin["id"] = json!("pi_chaosplanted");
                m.intents.insert("pi_chaosplanted".into(), twin);
                true
            },
            |v| v.purchases_charged_twice > 0,
        ),
        (
            "a spend that differs from its answer",
            |e, _| {
                let done = e
                    .sent
                    .iter_mut()
                    .find(|s| s.route == Route::Spend && matches!(s.told(), Some((201, _))));
                done.map(|s| s.answers.iter_mut().for_each(|a| a.0 = 409))
                    .is_some()
            },
            |v| v.spends_divergent > 0,
        ),
        (
            "a refund done twice at Stripe",
            |_, m| {
                let Some(refund) = m.refunds.values().next().cloned() else {
                    return false;
                };
                let mut twin = refund;
                twin["id"] = json!("re_chaosplanted");
                m.refunds.insert("re_chaosplanted".into(), twin);
                true
            },
            |v| v.refunds_done_twice > 0,
        ),
        (
            "a charge refunded beyond its amount",
            |_, m| {
                let Some(refund) = m.refunds.values_mut().find(|r| r["status"] == "succeeded")
                else {
                    return false;
                };
                refund["amount"] = json!(100_000_000);
                true
            },
            |v| v.charges_over_refunded > 0,
        ),
        (
            "a queued refund differing from Stripe",
            |_, m| {
                let queued = m.refunds.values_mut().find(|r| {
                    r["metadata"][command_worker::REQUEST_METADATA].is_string()
                        && r["status"] == "succeeded"
                });
                queued.map(|r| r["status"] = json!("failed")).is_some()
            },
            |v| v.queued_refunds_diverging > 0,
        ),
        (
            "an answer contradicting Stripe",
            |e, _| {
                let told = e
                    .sent
                    .iter_mut()
                    .find(|s| s.route == Route::Intent && matches!(s.told(), Some((201, _))));
                told.map(|s| s.answers.iter_mut().for_each(|a| a.1["amount"] = json!(1)))
                    .is_some()
            },
            |v| v.answers_contradicting_stripe > 0,
        ),
        (
            "one key answered two ways",
            |e, _| {
                let Some(s) = e
                    .sent
                    .iter_mut()
                    .find(|s| s.answers.first().is_some_and(|a| is_final(s.route, a)))
                else {
                    return false;
                };
                let other = (201, json!({"planted": true}));
                s.answers.push(other);
                true
            },
            |v| v.answers_differing_for_one_key > 0,
        ),
        (
            "a money request unanswered",
            |e, _| {
                let Some(s) = e.sent.first_mut() else {
                    return false;
                };
                s.answers.clear();
                true
            },
            |v| v.requests_unanswered > 0,
        ),
        (
            "an unexplained Stripe payment write",
            |_, m| {
                m.performed.insert("stripe-sync-api-planted".into(), 1);
                true
            },
            |v| v.stripe_payment_writes_unexplained > 0,
        ),
    ]
}

/// How many defects the money self-test plants.
pub const PLANTS: usize = 16;
