//! Salesforce inbound and the three parties: Contacts changed in
//! Salesforce reach the local customers (poller and relay), and from there
//! Stripe; Stripe's changes reach Salesforce through the local row; echoes
//! stop at the first hop. Salesforce is the stateful fake in
//! `support::fake_salesforce` (no Salesforce is reachable here); Stripe is
//! localstripe, which sends signed webhooks. localstripe's events carry no
//! `request.idempotency_key`, so its echoes of our writes reach
//! stripe-inbound as reports and are stopped by changing nothing.

use std::time::Duration;

use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};
use stripe_sync::db::models::Customer;
use stripe_sync::db::schema::{customers, id_map, sync_cursors};

use crate::support::broker::read_all;
use crate::support::fake_salesforce::{FakeSalesforce, EXTERNAL_ID_FIELD, ORG_ID};
use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack, SECRET};
use crate::support::{json_of, wait_for};

pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// Every process: serve and stripe-inbound (against localstripe, whose
/// webhooks come back), outbox-relay, stripe-outbound, and salesforce's
/// outbound and inbound.
pub(crate) async fn three_parties(salesforce: &FakeSalesforce, ls: &mut LocalStripe) -> Stack {
    three_parties_with(salesforce, ls, &[]).await
}

/// [`three_parties`] with `extra` settings for the Salesforce workers.
pub(crate) async fn three_parties_with(
    salesforce: &FakeSalesforce,
    ls: &mut LocalStripe,
    extra: &[(&str, &str)],
) -> Stack {
    let mut stack = Stack::start(Options {
        stripe_base: ls.base(),
        start_outbound: true,
        ..Options::default()
    })
    .await;
    ls.register_webhook(&stack.webhook_url(), SECRET).await;
    stack.connect_salesforce(salesforce, extra).await;
    stack.start_salesforce_outbound(salesforce);
    stack.start_salesforce_inbound();
    stack
}

/// The local customer linked to `service`'s `external_id`.
pub(crate) fn linked(stack: &Stack, service: &str, external_id: &str) -> Option<Customer> {
    id_map::table
        .inner_join(customers::table.on(customers::id.eq(id_map::local_id)))
        .filter(id_map::service.eq(service))
        .filter(id_map::external_id.eq(external_id))
        .select(Customer::as_select())
        .first(&mut stack.db.conn())
        .optional()
        .unwrap()
}

/// `local_id`'s link at `service`.
pub(crate) fn link_of(
    stack: &Stack,
    service: &str,
    local_id: stripe_sync::customers::CustomerId,
) -> Option<String> {
    id_map::table
        .filter(id_map::service.eq(service))
        .filter(id_map::local_id.eq(local_id))
        .select(id_map::external_id)
        .first(&mut stack.db.conn())
        .optional()
        .unwrap()
}

pub(crate) async fn stripe_customer(ls: &LocalStripe, id: &str) -> Value {
    ls.call(Method::GET, &format!("/v1/customers/{id}"), &[])
        .await
}

/// What each outside party has been sent: writes the Salesforce fake
/// accepted, and customer events localstripe emitted (one per write).
pub(crate) async fn counts(salesforce: &FakeSalesforce, ls: &LocalStripe) -> (usize, usize) {
    (salesforce.writes().len(), ls.event_count("customer.").await)
}

/// The outbox, for failure messages: what went where, and from where.
pub(crate) fn outbox_rows(stack: &Stack) -> Vec<(i64, String, String, Value)> {
    use stripe_sync::db::schema::outbox;
    outbox::table
        .order(outbox::id)
        .select((
            outbox::id,
            outbox::origin,
            outbox::operation,
            outbox::fields,
        ))
        .load(&mut stack.db.conn())
        .unwrap()
}

/// Waits until salesforce-outbound has handled every change it is owed.
pub(crate) async fn wait_all_held_by_salesforce(stack: &Stack) {
    wait_for(
        WAIT,
        "every change handled by salesforce-outbound",
        || async {
            let held = stack
                .db
                .count("outbox_deliveries WHERE service = 'salesforce'");
            let owed = stack.db.count("outbox WHERE origin <> 'salesforce'");
            (held == owed).then_some(())
        },
    )
    .await;
}

/// The system is quiet: nothing more reaches either party for a while.
pub(crate) async fn assert_quiet(
    stack: &Stack,
    salesforce: &FakeSalesforce,
    ls: &LocalStripe,
    expected: (usize, usize),
) {
    assert_eq!(
        counts(salesforce, ls).await,
        expected,
        "(Salesforce writes, Stripe customer events); outbox: {:?}",
        outbox_rows(stack)
    );
    // Several poll rounds and webhook deliveries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        counts(salesforce, ls).await,
        expected,
        "an echo went on (Salesforce writes, Stripe customer events); outbox: {:?}",
        outbox_rows(stack)
    );
}

/// A Contact made, edited and deleted in Salesforce reaches the local row
/// and, from it, Stripe, once each; nothing is written back to Salesforce.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_contact_changed_in_salesforce_reaches_the_local_row_and_stripe_once() {
    let salesforce = FakeSalesforce::start();
    let mut ls = LocalStripe::start().await;
    let mut stack = three_parties(&salesforce, &mut ls).await;
    let contact = salesforce.create_as_person(json!({
        "FirstName": "Grace", "LastName": "Hopper", "Email": "grace@example.com",
        "Phone": null, "Description": null,
    }));
    let local = wait_for(WAIT, "the Contact as a local customer", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c }
    })
    .await;
    assert_eq!(local.name.as_deref(), Some("Grace Hopper"));
    assert_eq!(local.email.as_deref(), Some("grace@example.com"));
    let cus = wait_for(WAIT, "the customer in Stripe", || {
        let l = link_of(&stack, "stripe", local.id);
        async move { l }
    })
    .await;
    assert_eq!(
        stripe_customer(&ls, &cus).await["email"],
        "grace@example.com"
    );

    salesforce.edit_as_person(&contact, json!({"Email": "grace@navy.example"}));
    wait_for(WAIT, "the new email in Stripe", || async {
        let c = stripe_customer(&ls, &cus).await;
        (c["email"] == "grace@navy.example").then_some(())
    })
    .await;
    salesforce.delete_as_person(&contact);
    wait_for(WAIT, "the customer deleted in Stripe", || async {
        let r = stack
            .http
            .get(format!("{}/v1/customers/{cus}", ls.base()))
            .bearer_auth(crate::support::localstripe::API_KEY)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        (body["deleted"] == true || body["error"].is_object()).then_some(())
    })
    .await;
    let local = linked(&stack, "salesforce", &contact).unwrap();
    assert!(local.deleted_at.is_some());
    // Stripe: created, updated, deleted; Salesforce: nothing written back
    // of its own changes (one write a Stripe-origin row: see
    // `local_changes_reach_both_and_echoes_from_both_stay_quiet`).
    wait_for(WAIT, "Stripe's three events", || async {
        (ls.event_count("customer.").await == 3).then_some(())
    })
    .await;
    wait_for(WAIT, "Stripe's events applied", || async {
        let n = stack.db.count("event_ledger WHERE service = 'stripe'");
        (n >= 3).then_some(())
    })
    .await;
    wait_all_held_by_salesforce(&stack).await;
    let from_stripe = stack.db.count("outbox WHERE origin = 'stripe'") as usize;
    let written = salesforce.writes().len();
    assert!(
        written <= from_stripe,
        "{written} writes for {from_stripe} rows"
    );
    assert_quiet(&stack, &salesforce, &ls, (written, 3)).await;
    assert_eq!(
        stack.db.count("outbox WHERE origin = 'salesforce'"),
        3,
        "the create, the edit and the delete, each passed on once"
    );
    // One ledger entry per version, none for our own writes.
    assert_eq!(
        stack
            .db
            .count("event_ledger WHERE service = 'salesforce' AND NOT echo"),
        3
    );
    stack.stop_salesforce_inbound().await;
    stack.stop().await;
}

/// A customer made, edited and deleted in Stripe reaches Salesforce
/// through the local row, once each; the poller's reports of those writes
/// are echoes, recorded and not applied, and nothing goes back to Stripe.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_changed_in_stripe_reaches_salesforce_once_and_its_echo_stops() {
    let salesforce = FakeSalesforce::start();
    let mut ls = LocalStripe::start().await;
    let stack = three_parties(&salesforce, &mut ls).await;
    let cus = ls
        .create_customer(&[("email", "linus@example.com"), ("name", "Linus Pauling")])
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let local = wait_for(WAIT, "the local customer", || {
        let c = linked(&stack, "stripe", &cus);
        async move { c }
    })
    .await;
    let local_id = local.id.to_string();
    let contact = wait_for(WAIT, "the Contact", || {
        let c = salesforce.contact_of(&local_id);
        async move { c }
    })
    .await;
    assert_eq!(contact["FirstName"], "Linus");
    assert_eq!(contact["LastName"], "Pauling");
    assert_eq!(contact["Email"], "linus@example.com");

    ls.update_customer(&cus, &[("phone", "+1 555 0100")]).await;
    wait_for(WAIT, "the phone in Salesforce", || {
        let c = salesforce.contact_of(&local_id);
        async move { c.filter(|c| c["Phone"] == "+1 555 0100") }
    })
    .await;
    ls.delete_customer(&cus).await;
    wait_for(WAIT, "the Contact deleted", || {
        let c = salesforce.contact_of(&local_id);
        async move { c.filter(|c| c["IsDeleted"] == true) }
    })
    .await;
    assert_quiet(&stack, &salesforce, &ls, (3, 3)).await;
    // The poller reported each of the three writes back, as echoes.
    wait_for(WAIT, "the echoes recorded", || async {
        let n = stack
            .db
            .count("event_ledger WHERE service = 'salesforce' AND echo AND outcome = 'echo'");
        (n == 3).then_some(())
    })
    .await;
    let view = json_of(stack.api(Method::GET, &format!("/api/customers/{local_id}"))).await;
    assert_eq!(view["sync"]["salesforce"]["status"], "synced", "{view}");
    stack.stop().await;
}

/// A local change reaches both services once each; after N writes the
/// echoes from both are quiet (counted at each end).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_changes_reach_both_and_echoes_from_both_stay_quiet() {
    let salesforce = FakeSalesforce::start();
    let mut ls = LocalStripe::start().await;
    let stack = three_parties(&salesforce, &mut ls).await;
    let created = json_of(
        stack
            .api(Method::POST, "/api/customers")
            .json(&json!({"email": "ada@example.com", "name": "Ada Lovelace"})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    const EDITS: usize = 4;
    for n in 0..EDITS {
        let r = stack
            .api(Method::PATCH, &format!("/api/customers/{id}"))
            .json(&json!({"description": format!("edit {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let last = format!("edit {}", EDITS - 1);
    wait_for(WAIT, "the last edit in Salesforce", || {
        let c = salesforce.contact_of(&id);
        let last = last.clone();
        async move { c.filter(|c| c["Description"] == last.as_str()) }
    })
    .await;
    wait_for(WAIT, "every edit in Stripe", || async {
        (ls.event_count("customer.").await == 1 + EDITS).then_some(())
    })
    .await;
    // Every Stripe event applied (its webhooks come asynchronously), then
    // every change held by Salesforce (the create sent the row as it was,
    // the last edit already), before counting.
    wait_for(WAIT, "Stripe's events applied", || async {
        let n = stack.db.count("event_ledger WHERE service = 'stripe'");
        (n > EDITS as i64).then_some(())
    })
    .await;
    wait_all_held_by_salesforce(&stack).await;
    // Salesforce's echoes are never passed on. localstripe's echoes carry no
    // idempotency key (real Stripe's do, and are then never passed on: see
    // `outbound::echoes_of_our_own_writes_are_recognised_by_their_idempotency_key`
    // and `apply::the_batch_apply_has_exactly_the_effect_of_one_event_at_a_time`),
    // so one arriving after a later local edit reads as a Stripe-side
    // change of its own, and is passed on to Salesforce once: exactly one
    // write for each outbox row, none back to Stripe.
    assert_eq!(stack.db.count("outbox WHERE origin = 'salesforce'"), 0);
    let from_stripe = stack.db.count("outbox WHERE origin = 'stripe'") as usize;
    assert_quiet(
        &stack,
        &salesforce,
        &ls,
        (1 + EDITS + from_stripe, 1 + EDITS),
    )
    .await;
    let row = linked(
        &stack,
        "salesforce",
        salesforce.contact_of(&id).unwrap()["Id"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(row.description.as_deref(), Some(last.as_str()));
    stack.stop().await;
}

/// The three-writer conflict policy: a local change Salesforce has not
/// acknowledged keeps its field against a Salesforce edit of the same
/// field; the edit's other fields apply, and all three end the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_local_change_wins_its_field_over_a_salesforce_edit() {
    let salesforce = FakeSalesforce::start();
    let mut ls = LocalStripe::start().await;
    let mut stack = three_parties(&salesforce, &mut ls).await;
    let created = json_of(
        stack
            .api(Method::POST, "/api/customers")
            .json(&json!({"email": "kat@example.com", "name": "Katherine Johnson"})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let contact = wait_contact_id(&salesforce, &id).await;
    wait_for(WAIT, "the Stripe link", || {
        let l = link_of(&stack, "stripe", id.parse().unwrap());
        async move { l }
    })
    .await;
    // The local edit waits in the outbox while outbound is stopped.
    stack.stop_outbound().await;
    let r = stack
        .api(Method::PATCH, &format!("/api/customers/{id}"))
        .json(&json!({"name": "Katherine G. Johnson"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    salesforce.edit_as_person(
        &contact,
        json!({"FirstName": "Kat", "LastName": "Johnson", "Phone": "+1 757 555 0101"}),
    );
    let row = wait_for(WAIT, "Salesforce's phone applied", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c.filter(|c| c.phone.is_some()) }
    })
    .await;
    assert_eq!(row.name.as_deref(), Some("Katherine G. Johnson"));
    assert_eq!(row.phone.as_deref(), Some("+1 757 555 0101"));
    stack.start_outbound();
    stack.start_salesforce_outbound(&salesforce);
    wait_for(WAIT, "the local name in Salesforce", || {
        let c = salesforce.contact(&contact);
        async move { c.filter(|c| c["FirstName"] == "Katherine G.") }
    })
    .await;
    let cus = link_of(&stack, "stripe", id.parse().unwrap()).unwrap();
    wait_for(WAIT, "both fields in Stripe", || async {
        let c = stripe_customer(&ls, &cus).await;
        (c["name"] == "Katherine G. Johnson" && c["phone"] == "+1 757 555 0101").then_some(())
    })
    .await;
    assert_eq!(
        salesforce.contact(&contact).unwrap()["Phone"],
        "+1 757 555 0101"
    );
    stack.stop().await;
}

pub(crate) async fn wait_contact_id(salesforce: &FakeSalesforce, local_id: &str) -> String {
    wait_for(WAIT, "the Contact", || {
        let c = salesforce.contact_of(local_id);
        async move { c.and_then(|c| c["Id"].as_str().map(str::to_owned)) }
    })
    .await
}

/// The poller, stopped by Salesforce failing mid-way and then by the
/// worker stopping, resumes at its saved cursor: every Contact is read
/// and published once, and applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_poller_killed_and_resumed_misses_and_repeats_no_change() {
    const CONTACTS: usize = 130;
    let salesforce = FakeSalesforce::start();
    let mut contacts = Vec::new();
    for n in 0..CONTACTS {
        contacts.push(salesforce.create_as_person(json!({
            "FirstName": "Person", "LastName": format!("N{n}"),
            "Email": format!("p{n}@example.com"),
        })));
    }
    let mut stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    stack
        .connect_salesforce(&salesforce, &[("SALESFORCE_POLL_PAGE_SIZE", "50")])
        .await;
    // The poller reads only seconds that are over: wait for the Contacts'
    // second to end, so that its first two queries are two full pages.
    let stamped = salesforce.contact(&contacts[CONTACTS - 1]).unwrap()["SystemModstamp"]
        .as_str()
        .and_then(stripe_sync::salesforce::event::parse_datetime)
        .unwrap();
    while chrono::Utc::now().timestamp_millis() < stamped + 1_000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two pages, then Salesforce fails every query.
    salesforce.limit_queries(Some(2));
    stack.start_salesforce_inbound();
    let cursor = || -> Option<String> {
        sync_cursors::table
            .filter(sync_cursors::service.eq("salesforce"))
            .select(sync_cursors::position)
            .first::<Option<String>>(&mut stack.db.conn())
            .optional()
            .unwrap()
            .flatten()
    };
    wait_for(WAIT, "two pages applied", || {
        let n = stack.db.count("customers");
        async move { (n == 100).then_some(()) }
    })
    .await;
    let saved = cursor().expect("a saved cursor");
    assert!(saved.ends_with(&contacts[99]), "{saved}");
    stack.stop_salesforce_inbound().await;
    // A change made while the poller is down is not missed either.
    salesforce.edit_as_person(&contacts[3], json!({"Email": "late@example.com"}));
    salesforce.limit_queries(None);
    stack.start_salesforce_inbound();
    wait_for(WAIT, "every Contact and the edit applied", || {
        let n = stack.db.count("customers");
        let late = stack.db.count("customers WHERE email = 'late@example.com'");
        async move { (n == CONTACTS as i64 && late == 1).then_some(()) }
    })
    .await;
    let published = read_all(&stack.brokers, &stack.salesforce_topic);
    assert_eq!(
        published.len(),
        CONTACTS + 1,
        "each version published once (a Contact each, and the edit)"
    );
    assert_eq!(
        stack.db.count("event_ledger WHERE service = 'salesforce'"),
        CONTACTS as i64 + 1
    );
    assert_eq!(
        stack.db.count(&format!(
            "id_map WHERE service = 'salesforce' AND account = '{ORG_ID}'"
        )),
        CONTACTS as i64
    );
    stack.stop().await;
}

/// `POST /webhooks/salesforce`: verified before parsing, refused whole
/// with the bad record's position, and a version the relay and the poller
/// both report is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_route_verifies_refuses_clearly_and_dedupes_with_the_poller() {
    let salesforce = FakeSalesforce::start();
    let mut stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    stack.connect_salesforce(&salesforce, &[]).await;
    let contact = salesforce.create_as_person(json!({
        "FirstName": "Mary", "LastName": "Jackson", "Email": "mary@example.com",
    }));
    let record = salesforce.contact(&contact).unwrap();
    let body = json!({"records": [record]});

    let (status, answer) = stack.post_relay(&body, false).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "signature_missing", "{answer}");
    let bad = json!({"records": [record, {"Id": "003000000000999AAA"}]});
    let (status, answer) = stack.post_relay(&bad, true).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_records");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("records[1]"),
        "{answer}"
    );
    let (status, answer) = stack.post_relay(&body, true).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["received"], 1);
    let published = read_all(&stack.brokers, &stack.salesforce_topic);
    assert_eq!(published.len(), 1, "the refused bodies published nothing");

    // The poller reports the same version: one ledger entry.
    stack.start_salesforce_inbound();
    wait_for(WAIT, "the Contact applied", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c }
    })
    .await;
    wait_for(WAIT, "the poller's report too", || async {
        let n = read_all(&stack.brokers, &stack.salesforce_topic).len();
        (n == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stack.db.count("event_ledger WHERE service = 'salesforce'"),
        1
    );
    let row = linked(&stack, "salesforce", &contact).unwrap();
    assert_eq!(row.email.as_deref(), Some("mary@example.com"));
    assert_eq!(record[EXTERNAL_ID_FIELD], Value::Null);
    stack.stop().await;
}
