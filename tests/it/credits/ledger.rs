//! Spends and refunds: concurrent spends never overdraw, a key spends
//! once, the ledger refuses rewrites, and a refund of a purchase debits
//! its share of the credits once, however its webhooks arrive.

use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

use super::{
    buy, credits, credits_stack, entries, local_customer, save_card, synced_customer,
    wait_mirrored_successes, WAIT,
};
use crate::payments::post;
use crate::support::fixtures::{self, refund_event};
use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack};
use crate::support::stripe_proxy::CountingProxy;
use crate::support::wait_for;

async fn spend(
    stack: &Stack,
    customer: &str,
    credits: i64,
    key: Option<&str>,
) -> (u16, Value, bool) {
    post(
        stack,
        &format!("/api/customers/{customer}/credit-spends"),
        key,
        json!({"credits": credits, "reason": "unlocked a level"}),
    )
    .await
}

/// An operator's adjustment through the admin API: (status, body).
async fn adjust(stack: &Stack, customer: &str, credits: i64, key: &str) -> (u16, Value) {
    let r = stack
        .admin(
            Method::POST,
            &format!("/api/admin/customers/{customer}/credit-adjustments"),
        )
        .header("Idempotency-Key", key)
        .json(&json!({"credits": credits, "reason": "goodwill grant"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spends_never_overdraw_and_a_key_spends_once() {
    let stack = Stack::start(Options::default()).await;
    let customer = local_customer(&stack, "player@example.com").await;
    let (status, granted) = adjust(&stack, &customer, 1100, "grant-1100").await;
    assert_eq!(
        (status, granted["balance"].as_i64()),
        (201, Some(1100)),
        "{granted}"
    );
    assert!(granted["adjustment_id"].is_string());
    let (status, zero) = adjust(&stack, &customer, 0, "grant-0").await;
    assert_eq!(
        (status, zero["error"]["field"].as_str()),
        (400, Some("credits"))
    );

    // 20 spends of 60 at once on 1,100: 18 fit.
    let spends = (0..20).map(|n| {
        let (stack, customer) = (&stack, customer.clone());
        async move { spend(stack, &customer, 60, Some(&format!("spend-{n}"))).await }
    });
    let answers = futures::future::join_all(spends).await;
    let ok = answers.iter().filter(|(s, _, _)| *s == 201).count();
    let short: Vec<&Value> = answers
        .iter()
        .filter(|(s, _, _)| *s == 409)
        .map(|(_, b, _)| b)
        .collect();
    assert_eq!((ok, short.len()), (18, 2), "{answers:?}");
    assert!(short
        .iter()
        .all(|b| b["error"]["code"] == "insufficient_credits" && b["error"]["balance"] == 20));
    let history = credits(&stack, &customer).await;
    assert_eq!(history["balance"], 20);
    assert_eq!(entries(&stack, &customer, "spend"), 18);
    assert_eq!(
        stack.db.count(&format!("credits.balances WHERE customer_id = '{customer}' AND balance = (SELECT sum(credits) FROM credits.ledger WHERE customer_id = '{customer}')")),
        1,
        "the balance is the sum of its entries"
    );

    // One key, one spend: the retry replays; another body is refused.
    let (status, first, _) = spend(&stack, &customer, 5, Some("coffee")).await;
    assert_eq!(
        (status, first["balance"].as_i64()),
        (201, Some(15)),
        "{first}"
    );
    let (status, again, replayed) = spend(&stack, &customer, 5, Some("coffee")).await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, first);
    let (status, reused, _) = spend(&stack, &customer, 6, Some("coffee")).await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // Under the key's answer, the ledger's own uniqueness: a spend whose
    // answer was lost (the key's row gone) finds its entry, not a second one.
    diesel::sql_query("DELETE FROM payments.idempotency_keys WHERE key = 'coffee'")
        .execute(&mut stack.db.conn())
        .unwrap();
    let (status, lost, _) = spend(&stack, &customer, 5, Some("coffee")).await;
    assert_eq!(
        (status, lost["spend_id"].as_str()),
        (201, first["spend_id"].as_str())
    );
    assert_eq!(lost["balance"], 15);

    // Refused at the edge.
    let (status, e, _) = spend(&stack, &customer, 5, None).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("idempotency_key_required"))
    );
    for (body, field) in [
        (json!({"credits": 0, "reason": "x"}), "credits"),
        (json!({"credits": 5, "reason": "  "}), "reason"),
    ] {
        let (status, e, _) = post(
            &stack,
            &format!("/api/customers/{customer}/credit-spends"),
            Some("bad"),
            body.clone(),
        )
        .await;
        assert_eq!(
            (status, e["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}"
        );
    }
    let (status, e, _) = spend(
        &stack,
        "0b7e4c1e-8f7e-4a51-9c53-55f0c0ffee00",
        1,
        Some("ghost"),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("customer_not_found"))
    );
    let (status, e, _) = spend(&stack, &customer, 16, Some("too-much")).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("insufficient_credits"))
    );

    // History pages newest first with a cursor.
    let (status, page) = crate::payments::get(
        &stack,
        &format!("/api/customers/{customer}/credits?limit=7"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            page["transactions"].as_array().unwrap().len(),
            page["has_more"].as_bool()
        ),
        (7, Some(true))
    );
    let mut seen = page["transactions"].as_array().unwrap().clone();
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let (_, next) = crate::payments::get(
            &stack,
            &format!("/api/customers/{customer}/credits?limit=7&cursor={c}"),
        )
        .await;
        seen.extend(next["transactions"].as_array().unwrap().iter().cloned());
        cursor = next["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        seen.len(),
        20,
        "18 spends, the coffee and the grant, each once"
    );
    assert_eq!(seen.last().unwrap()["kind"], "adjustment");
    assert_eq!(seen.last().unwrap()["reason"], "goodwill grant");
    let (status, _) = crate::payments::get(
        &stack,
        &format!("/api/customers/{customer}/credits?cursor=zz"),
    )
    .await;
    assert_eq!(status, 400);

    // Append-only: an entry cannot be changed or removed.
    let rewrite = diesel::sql_query("UPDATE credits.ledger SET credits = 1000000")
        .execute(&mut stack.db.conn());
    assert!(rewrite.unwrap_err().to_string().contains("append-only"));
    let remove = diesel::sql_query("DELETE FROM credits.ledger").execute(&mut stack.db.conn());
    assert!(remove.is_err());
    stack.stop().await;
}

/// A refund of a purchase debits the refunded share of its credits,
/// rounded down and cumulative over partial refunds, once, whether it is
/// told by `refund.*`, by `charge.refunded` or by both, twice. The balance
/// may go below zero; spends are refused until it is positive again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_debits_its_share_of_the_credits_once() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = credits_stack(&mut ls, &proxy).await;
    let customer = synced_customer(&stack, "refunded@example.com").await;
    assert_eq!(save_card(&stack, &customer, "pm_card_visa").await.0, 200);
    let (status, bought, _) = buy(&stack, &customer, "package_2", "popular").await;
    assert_eq!(status, 201, "{bought}");
    let purchase = bought["purchase_id"].as_str().unwrap().to_owned();
    wait_mirrored_successes(&stack, 1).await;
    let (status, spent, _) = spend(&stack, &customer, 250, Some("sword")).await;
    assert_eq!((status, spent["balance"].as_i64()), (201, Some(50)));
    let pi: String = credits(&stack, &customer).await["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "purchase")
        .unwrap()["payment_intent"]
        .as_str()
        .unwrap()
        .to_owned();

    // 1,001 then 9 of 2,500 refunded: 300 × 1,001 / 2,500 = 120.12 → 120,
    // then 300 × 1,010 / 2,500 = 121.2 → 121 in all.
    let mut refunds = Vec::new();
    for amount in [1001, 9] {
        let (status, r, _) = post(
            &stack,
            "/api/refunds",
            Some(&format!("refund-{amount}")),
            json!({"payment_intent": pi, "amount": amount}),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        let id = r["refund"]["id"].as_str().unwrap();
        refunds.push(
            ls.call(Method::GET, &format!("/v1/refunds/{id}"), &[])
                .await,
        );
    }
    let charge_id = refunds[0]["charge"].as_str().unwrap().to_owned();
    let charge = ls
        .call(Method::GET, &format!("/v1/charges/{charge_id}"), &[])
        .await;
    assert_eq!(charge["amount_refunded"], 1010);
    let now = stripe_sync::ingest::unix_now();
    let events = [
        refund_event("evt_refund_a", now - 30, &refunds[0], "succeeded"),
        fixtures::event("evt_charge_refunded", "charge.refunded", now - 20, charge),
        refund_event("evt_refund_b", now - 10, &refunds[1], "succeeded"),
    ];
    // Each event twice, the charge's first.
    for e in [
        &events[1], &events[0], &events[2], &events[1], &events[0], &events[2],
    ] {
        assert!(stack.post_event(e).await.is_success());
    }
    wait_for(WAIT, "the refunds debited", || async {
        (credits(&stack, &customer).await["balance"] == -71).then_some(())
    })
    .await;
    wait_for(WAIT, "every delivery applied", || async {
        let applied = stack.db.count(
            "event_ledger WHERE event_id IN ('evt_refund_a', 'evt_charge_refunded', 'evt_refund_b')",
        );
        (applied == 3).then_some(())
    })
    .await;
    let history = credits(&stack, &customer).await;
    assert_eq!(history["balance"], -71, "50 - 121");
    let debits: i64 = history["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "refund")
        .map(|t| {
            assert_eq!(t["payment_intent"], pi.as_str());
            t["credits"].as_i64().unwrap()
        })
        .sum();
    assert_eq!(debits, -121);
    assert_eq!(
        stack.db.count(&format!(
            "credits.purchases WHERE id = '{purchase}' AND status = 'succeeded'"
        )),
        1,
        "the purchase stays bought"
    );
    let (status, e, _) = spend(&stack, &customer, 1, Some("while-negative")).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("insufficient_credits"))
    );
    stack.stop().await;
}
