//! The Salesforce adapter's outbound path end to end: API write → outbox →
//! relay → Kafka → salesforce-outbound → Salesforce, beside stripe-outbound
//! on the same changes. No Salesforce is reachable here: the other end is
//! the stateful fake in `support::fake_salesforce` (said so there), and
//! Stripe's is the in-process Stripe fake.

use std::time::Duration;

use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};
use stripe_sync::db::schema::{id_map, outbox_deliveries};

use crate::support::broker::{read_all, wait_consumed};
use crate::support::fake_salesforce::{self, FakeSalesforce, Fault, EXTERNAL_ID_FIELD};
use crate::support::fake_stripe::FakeStripe;
use crate::support::stack::{Options, Stack};
use crate::support::{json_of, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// A stack with outbox-relay, stripe-outbound (against a Stripe fake) and
/// salesforce-outbound (against `salesforce`).
async fn stack_with(salesforce: &FakeSalesforce, stripe: &FakeStripe) -> Stack {
    let mut stack = Stack::start(Options {
        stripe_base: stripe.base(),
        start_outbound: true,
        start_worker: false,
        ..Options::default()
    })
    .await;
    stack.start_salesforce_outbound(salesforce);
    stack
}

async fn create(stack: &Stack, body: Value) -> String {
    let created = json_of(stack.api(Method::POST, "/api/customers").json(&body)).await;
    created["id"].as_str().expect("a customer id").to_owned()
}

async fn send(stack: &Stack, method: Method, id: &str, body: Option<Value>) {
    let mut request = stack.api(method, &format!("/api/customers/{id}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let status = request.send().await.unwrap().status();
    assert!(status.is_success(), "{status}");
}

/// Waits until the Contact of `local_id` satisfies `ready`.
async fn wait_contact(
    salesforce: &FakeSalesforce,
    local_id: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(WAIT, what, || {
        let contact = salesforce.contact_of(local_id).filter(|c| ready(c));
        async move { contact }
    })
    .await
}

/// Every change of the stack's outbox that `service` has recorded.
fn deliveries(stack: &Stack, service: &str) -> Vec<(String, Option<String>)> {
    outbox_deliveries::table
        .filter(outbox_deliveries::service.eq(service))
        .order(outbox_deliveries::outbox_id)
        .select((outbox_deliveries::status, outbox_deliveries::error))
        .load(&mut stack.db.conn())
        .unwrap()
}

/// Create, update and delete of a local customer reach Salesforce once
/// each (and Stripe once each, from the same changes), the Contact is
/// linked in `id_map` as (`salesforce`, org, `contact`, `003…`), and the
/// API shows both services' state. Redelivery of the whole changes topic
/// writes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_changes_reach_salesforce_and_stripe_exactly_once() {
    let salesforce = FakeSalesforce::start();
    let stripe = FakeStripe::start(vec![]);
    let mut stack = stack_with(&salesforce, &stripe).await;
    let id = create(
        &stack,
        json!({"email": "ada@example.com", "name": "Ada King Lovelace", "phone": "+44 20 7946 0000"}),
    )
    .await;
    let contact = wait_contact(&salesforce, &id, "the Contact", |_| true).await;
    assert_eq!(contact["FirstName"], "Ada King");
    assert_eq!(contact["LastName"], "Lovelace");
    assert_eq!(contact["Email"], "ada@example.com");
    assert_eq!(contact["Phone"], "+44 20 7946 0000");
    assert_eq!(contact[EXTERNAL_ID_FIELD], id.as_str());
    let contact_id = contact["Id"].as_str().unwrap().to_owned();
    assert!(contact_id.starts_with("003"));
    // The link commits with the delivery, just after the call.
    let link: (String, String, String) = wait_for(WAIT, "the link", || {
        let link = id_map::table
            .filter(id_map::service.eq("salesforce"))
            .filter(id_map::local_id.eq(id.parse::<uuid::Uuid>().unwrap()))
            .select((id_map::account, id_map::entity, id_map::external_id))
            .first(&mut stack.db.conn())
            .optional()
            .unwrap();
        async move { link }
    })
    .await;
    assert_eq!(
        link,
        (
            fake_salesforce::ORG_ID.to_owned(),
            "contact".to_owned(),
            contact_id.clone()
        )
    );

    send(
        &stack,
        Method::PATCH,
        &id,
        Some(json!({"email": "ada@lovelace.example", "metadata": {"tier": "gold"}})),
    )
    .await;
    wait_contact(&salesforce, &id, "the new email", |c| {
        c["Email"] == "ada@lovelace.example"
    })
    .await;
    // Metadata stays local: the Contact's other fields are untouched.
    assert_eq!(salesforce.contact_of(&id).unwrap()["LastName"], "Lovelace");

    send(&stack, Method::DELETE, &id, None).await;
    wait_contact(&salesforce, &id, "the delete", |c| c["IsDeleted"] == true).await;
    wait_for(WAIT, "Stripe to hold all three changes", || {
        let n = deliveries(&stack, "stripe").len();
        async move { (n == 3).then_some(()) }
    })
    .await;
    let view = json_of(stack.api(Method::GET, &format!("/api/customers/{id}"))).await;
    assert_eq!(
        view["sync"]["salesforce"]["id"],
        contact_id.as_str(),
        "{view}"
    );
    assert_eq!(view["sync"]["salesforce"]["status"], "synced", "{view}");
    assert_eq!(view["sync"]["stripe"]["status"], "synced", "{view}");

    // Consumed to the end by both groups: then count what each fake got.
    for group in [&stack.salesforce_group, &stack.outbound_group] {
        wait_consumed(&stack.brokers, group, &stack.changes_topic, WAIT).await;
    }
    let writes: Vec<String> = salesforce
        .writes()
        .iter()
        .map(|c| c.method.clone())
        .collect();
    assert_eq!(
        writes,
        ["PATCH", "PATCH", "DELETE"],
        "{:?}",
        salesforce.calls()
    );
    assert_eq!(
        deliveries(&stack, "salesforce"),
        vec![("synced".to_owned(), None); 3]
    );
    let stripe_writes = stripe
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .count();
    assert_eq!(stripe_writes, 3, "{:?}", stripe.requests());

    // A new consumer group on the same topic would redeliver everything;
    // restarting the workers from their committed offsets after a crash
    // redelivers the tail. Either way the delivery rows make it a no-op.
    stack.stop_outbound().await;
    stack.start_outbound();
    stack.start_salesforce_outbound(&salesforce);
    let replayed = create(&stack, json!({"name": "Grace Hopper"})).await;
    wait_contact(&salesforce, &replayed, "the next customer", |_| true).await;
    assert_eq!(
        salesforce.writes().len(),
        4,
        "only the new customer's create"
    );
    stack.stop().await;
}

/// An expired session mid-stream is renewed once and the change goes
/// through; nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_session_is_renewed_and_the_change_delivered_once() {
    let salesforce = FakeSalesforce::start();
    let stripe = FakeStripe::start(vec![]);
    let stack = stack_with(&salesforce, &stripe).await;
    let id = create(&stack, json!({"name": "Ada"})).await;
    wait_contact(&salesforce, &id, "the Contact", |_| true).await;
    assert_eq!(salesforce.grants(), 1);

    salesforce.expire_sessions();
    send(
        &stack,
        Method::PATCH,
        &id,
        Some(json!({"name": "Ada Lovelace"})),
    )
    .await;
    wait_contact(&salesforce, &id, "the renamed Contact", |c| {
        c["LastName"] == "Lovelace"
    })
    .await;
    assert_eq!(salesforce.grants(), 2, "one new token");
    let refused = salesforce.answered(401);
    assert_eq!(refused, 1, "{:?}", salesforce.calls());
    assert_eq!(salesforce.writes().len(), 2);
    stack.stop().await;
}

/// A field error is permanent: the change is failed with Salesforce's
/// message and code, dead-lettered on salesforce-outbound's own topic, and
/// the partition moves on; Stripe, which took the change, is unaffected.
/// The customer's next change, once fixed, creates the missing Contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_field_error_is_dead_lettered_with_salesforces_message() {
    let salesforce = FakeSalesforce::start();
    let stripe = FakeStripe::start(vec![]);
    let stack = stack_with(&salesforce, &stripe).await;
    // Our API takes it; Salesforce's check of the domain refuses it.
    let refused = create(
        &stack,
        json!({"name": "Bad Domain", "email": "bad@exa_mple.com"}),
    )
    .await;
    let fine = create(
        &stack,
        json!({"name": "Good Domain", "email": "good@example.com"}),
    )
    .await;
    wait_contact(&salesforce, &fine, "the next customer's Contact", |_| true).await;
    let dead = wait_for(WAIT, "the dead letter", || {
        let dead = read_all(
            &stack.brokers,
            &format!("{}.salesforce.dlq", stack.changes_topic),
        );
        async move { (!dead.is_empty()).then_some(dead) }
    })
    .await;
    assert_eq!(dead.len(), 1);
    let error = dead[0].header("dlq-error").unwrap();
    assert!(
        error.contains(
            "INVALID_EMAIL_ADDRESS (Email): Email: invalid email address: bad@exa_mple.com"
        ),
        "{error}"
    );
    assert!(error.contains(&refused), "{error}");
    assert!(salesforce.contact_of(&refused).is_none());
    let view = json_of(stack.api(Method::GET, &format!("/api/customers/{refused}"))).await;
    assert_eq!(view["sync"]["salesforce"]["status"], "failed", "{view}");
    assert!(view["sync"]["salesforce"]["error"]
        .as_str()
        .unwrap()
        .contains("INVALID_EMAIL_ADDRESS"));
    // Stripe's dead-letter topic holds nothing: only Salesforce refused.
    assert!(read_all(&stack.brokers, &format!("{}.dlq", stack.changes_topic)).is_empty());

    // Fixed locally, the customer's next change creates its Contact from
    // the row as it is now, name included.
    send(
        &stack,
        Method::PATCH,
        &refused,
        Some(json!({"email": "bad@example.com"})),
    )
    .await;
    let contact = wait_contact(&salesforce, &refused, "the Contact after the fix", |_| true).await;
    assert_eq!(contact["Email"], "bad@example.com");
    assert_eq!(contact["FirstName"], "Bad");
    assert_eq!(contact["LastName"], "Domain");
    let view = json_of(stack.api(Method::GET, &format!("/api/customers/{refused}"))).await;
    assert_eq!(view["sync"]["salesforce"]["status"], "synced", "{view}");
    stack.stop().await;
}

/// Salesforce down (503 on everything, the token endpoint too), then its
/// request limit hit: changes wait, retried with backoff, and each reaches
/// Salesforce exactly once when it answers again, in order per customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn salesforce_down_then_up_delivers_each_change_once() {
    let salesforce = FakeSalesforce::start();
    let stripe = FakeStripe::start(vec![]);
    salesforce.set_down(true);
    let stack = stack_with(&salesforce, &stripe).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = create(&stack, json!({"name": format!("Customer {n}")})).await;
        send(
            &stack,
            Method::PATCH,
            &id,
            Some(json!({"email": format!("c{n}@example.com")})),
        )
        .await;
        ids.push(id);
    }
    wait_for(WAIT, "retries against the outage", || {
        let refused = salesforce.answered(503);
        async move { (refused >= 3).then_some(()) }
    })
    .await;
    assert!(salesforce.writes().is_empty());
    salesforce.push_faults([Fault::RequestLimit, Fault::Unavailable]);
    salesforce.set_down(false);
    for (n, id) in ids.iter().enumerate() {
        let email = format!("c{n}@example.com");
        wait_contact(&salesforce, id, "the customer after the outage", |c| {
            c["Email"] == email.as_str()
        })
        .await;
    }
    wait_consumed(
        &stack.brokers,
        &stack.salesforce_group,
        &stack.changes_topic,
        WAIT,
    )
    .await;
    assert_eq!(salesforce.writes().len(), 6, "{:?}", salesforce.calls());
    let limited = salesforce.answered(403);
    assert_eq!(limited, 1);
    assert_eq!(
        deliveries(&stack, "salesforce"),
        vec![("synced".to_owned(), None); 6]
    );
    stack.stop().await;
}

/// A change whose outbox row was pruned (delivered and older than 30 days),
/// redelivered from a topic that kept it longer, is skipped by both
/// services: nothing is written again and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pruned_change_redelivered_is_skipped() {
    let salesforce = FakeSalesforce::start();
    let stripe = FakeStripe::start(vec![]);
    let stack = stack_with(&salesforce, &stripe).await;
    let local_id = uuid::Uuid::new_v4();
    let pruned = json!({
        "outbox_id": 987_654, "entity": "customer", "local_id": local_id,
        "operation": "create", "fields": {"name": "Long Gone"},
        "occurred_at": "2026-10-01T00:00:00Z",
    });
    let producer = stripe_sync::kafka::EventProducer::new(
        &stack.brokers,
        Duration::from_secs(10),
        stripe_sync::config::DEFAULT_COMPRESSION,
    )
    .unwrap();
    producer
        .send(
            &stack.changes_topic,
            local_id.to_string().as_bytes(),
            pruned.to_string().as_bytes(),
            &Vec::new(),
        )
        .await
        .unwrap();
    let id = create(&stack, json!({"name": "Still Here"})).await;
    wait_contact(&salesforce, &id, "the live customer's Contact", |_| true).await;
    for group in [&stack.salesforce_group, &stack.outbound_group] {
        wait_consumed(&stack.brokers, group, &stack.changes_topic, WAIT).await;
    }
    assert!(salesforce.contact_of(&local_id.to_string()).is_none());
    assert_eq!(salesforce.writes().len(), 1, "{:?}", salesforce.calls());
    assert_eq!(stripe.created(), 1);
    for dlq in [".dlq", ".salesforce.dlq"] {
        let topic = format!("{}{dlq}", stack.changes_topic);
        assert!(read_all(&stack.brokers, &topic).is_empty(), "{topic}");
    }
    stack.stop().await;
}

/// A backlog of changes of many customers goes out in Composite requests
/// (several changes a call), each change once; a field error inside one
/// fails that change alone, and the others of the same request land.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_goes_out_in_composite_requests_and_a_field_error_stays_alone() {
    let salesforce = FakeSalesforce::start();
    let stripe = FakeStripe::start(vec![]);
    let mut stack = Stack::start(Options {
        stripe_base: stripe.base(),
        start_outbound: true,
        start_worker: false,
        ..Options::default()
    })
    .await;
    const CUSTOMERS: usize = 12;
    let mut ids = Vec::new();
    for n in 0..CUSTOMERS {
        let email = if n == 5 {
            "bad@exa_mple.com".to_owned()
        } else {
            format!("c{n}@example.com")
        };
        ids.push(
            create(
                &stack,
                json!({"name": format!("Customer {n}"), "email": email}),
            )
            .await,
        );
    }
    // Every change waits on the topic, then salesforce-outbound starts.
    wait_for(WAIT, "the changes published", || {
        let n = stack.db.count("outbox WHERE published_at IS NOT NULL");
        async move { (n == CUSTOMERS as i64).then_some(()) }
    })
    .await;
    stack.start_salesforce_outbound(&salesforce);
    wait_for(WAIT, "every change handled", || {
        let n = deliveries(&stack, "salesforce").len();
        async move { (n == CUSTOMERS).then_some(()) }
    })
    .await;
    assert!(
        salesforce.composites() >= 1,
        "no Composite request: {:?}",
        salesforce.calls()
    );
    assert!(
        salesforce.composites() < CUSTOMERS - 1,
        "a Composite request a change"
    );
    assert_eq!(
        salesforce.writes().len(),
        CUSTOMERS - 1,
        "each Contact once"
    );
    for (n, id) in ids.iter().enumerate() {
        let contact = salesforce.contact_of(id);
        assert_eq!(contact.is_some(), n != 5, "customer {n}");
    }
    let failed: Vec<_> = deliveries(&stack, "salesforce")
        .into_iter()
        .filter(|(status, _)| status == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]
            .1
            .as_deref()
            .unwrap()
            .contains("INVALID_EMAIL_ADDRESS"),
        "{failed:?}"
    );
    wait_for(WAIT, "the refusal dead-lettered", || {
        let n = read_all(
            &stack.brokers,
            &stripe_sync::kafka::topics::salesforce_dead_letters(&stack.changes_topic),
        )
        .len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    stack.stop().await;
}
