//! End to end with localstripe as Stripe: it sends signed webhooks (after
//! a delay, concurrently, so they arrive reordered and with same-second
//! ties) to our endpoint; the mirror must end equal to localstripe's state.

use std::collections::BTreeSet;
use std::time::Duration;

use diesel::prelude::*;
use stripe_sync::db::schema::event_ledger;

use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack, SECRET};
use crate::support::{json_of, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_created_updated_and_deleted_in_localstripe_are_mirrored() {
    let mut ls = LocalStripe::start().await;
    let stack = Stack::start(Options {
        stripe_base: ls.base(),
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;

    let mut ids = Vec::new();
    for i in 0..12 {
        let email = format!("person{i}@example.com");
        let c = ls
            .create_customer(&[("name", &format!("Person {i}")), ("email", &email)])
            .await;
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 0 {
            ls.update_customer(
                id,
                &[
                    ("name", &format!("Renamed {i}")),
                    ("metadata[tier]", "gold"),
                ],
            )
            .await;
            ls.update_customer(id, &[("phone", "+15555550100")]).await;
        }
    }
    let deleted: BTreeSet<String> = ids.iter().step_by(4).cloned().collect();
    for id in &deleted {
        ls.delete_customer(id).await;
    }

    let live = ls.list_customers().await;
    assert_eq!(live.len(), ids.len() - deleted.len());
    wait_for(
        Duration::from_secs(90),
        "the mirror to match localstripe",
        || {
            let matches = live.iter().all(|c| {
                stack
                    .customer(c["id"].as_str().unwrap())
                    .is_some_and(|(row, link)| {
                        row.deleted_at.is_none()
                            && !link.remote_deleted
                            && row.name.as_deref() == c["name"].as_str()
                            && row.email.as_deref() == c["email"].as_str()
                            && row.phone.as_deref() == c["phone"].as_str()
                            && row.metadata == c["metadata"]
                    })
            }) && deleted.iter().all(|id| {
                stack
                    .customer(id)
                    .is_some_and(|(row, link)| row.deleted_at.is_some() && link.remote_deleted)
            });
            async move { matches.then_some(()) }
        },
    )
    .await;

    // Every event localstripe sent is in the ledger exactly once.
    let events: serde_json::Value = json_of(
        reqwest::Client::new()
            .get(format!("{}/v1/events?limit=100", ls.base()))
            .bearer_auth(crate::support::localstripe::API_KEY),
    )
    .await;
    let sent: BTreeSet<String> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("customer."))
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 12 + 12 + 3, "12 created, 12 updated, 3 deleted");
    let ledgered = wait_for(
        Duration::from_secs(30),
        "every sent event in the ledger",
        || {
            let ledgered: BTreeSet<String> = event_ledger::table
                .select(event_ledger::event_id)
                .load::<String>(&mut stack.db.conn())
                .unwrap()
                .into_iter()
                .collect();
            let done = ledgered.len() >= sent.len();
            async move { done.then_some(ledgered) }
        },
    )
    .await;
    assert_eq!(ledgered, sent);
    stack.stop().await;
}
