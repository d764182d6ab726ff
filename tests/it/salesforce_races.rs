//! Salesforce as it really behaves, racing us: whole-second
//! `SystemModstamp`s (two changes in one second share a stamp), people's
//! edits landing between our writes inside one poll interval, and relays
//! that send only the fields that changed (as Change Data Capture does).
//! No person's edit may be lost or merged away, and our own writes still
//! stop at the first hop. Salesforce is the fake in
//! `support::fake_salesforce` (none is reachable here), which stamps and
//! attributes writes as Salesforce does; Stripe is localstripe.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::salesforce_inbound::{
    assert_quiet, counts, link_of, linked, outbox_rows, stripe_customer, three_parties,
    three_parties_with, wait_all_held_by_salesforce, wait_contact_id, WAIT,
};
use crate::support::fake_salesforce::{FakeSalesforce, INTEGRATION_USER, PERSON};
use crate::support::localstripe::LocalStripe;
use crate::support::stack::{Options, Stack};
use crate::support::{json_of, wait_for};

/// Sleeps until the host clock is early in a second, so that what a test
/// does next in a few hundred milliseconds shares one `SystemModstamp`.
async fn start_of_a_second() {
    loop {
        let into = chrono::Utc::now().timestamp_subsec_millis();
        if into < 100 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(u64::from(1005 - into))).await;
    }
}

/// `record` cut down to what Change Data Capture sends for a change of
/// `changed`: the id, the stamp, who made it, and the changed fields.
fn only(record: &Value, changed: &[&str]) -> Value {
    let mut partial = Map::new();
    for field in ["Id", "SystemModstamp", "LastModifiedById"]
        .iter()
        .chain(changed)
    {
        partial.insert((*field).to_owned(), record[*field].clone());
    }
    Value::Object(partial)
}

/// A Stack with serve (the relay route) and salesforce-inbound's
/// consumer, but no poller: what reaches the worker is what the test
/// relays.
async fn relay_only(salesforce: &FakeSalesforce) -> Stack {
    let mut stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    stack
        .connect_salesforce(salesforce, &[("SALESFORCE_POLL_INTERVAL_MS", "0")])
        .await;
    stack.start_salesforce_inbound();
    stack
}

/// A person edits Phone, then salesforce-outbound writes a local Email
/// change, both before the next poll: the poller sees one version, last
/// modified by the integration user. The person's Phone still reaches the
/// local row and Stripe; our Email is not written back; nothing echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_persons_edit_under_our_later_write_reaches_the_local_row_and_stripe() {
    let salesforce = FakeSalesforce::start();
    let mut ls = LocalStripe::start().await;
    let mut stack = three_parties(&salesforce, &mut ls).await;
    let created = json_of(
        stack
            .api(Method::POST, "/api/customers")
            .json(&json!({"email": "dorothy@example.com", "name": "Dorothy Vaughan"})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let contact = wait_contact_id(&salesforce, &id).await;
    let cus = wait_for(WAIT, "the Stripe link", || {
        let l = link_of(&stack, "stripe", id.parse().unwrap());
        async move { l }
    })
    .await;
    wait_for(WAIT, "the Contact's first version applied", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c }
    })
    .await;

    // Both changes land inside one poll interval (the poller is stopped).
    stack.stop_salesforce_inbound().await;
    salesforce.edit_as_person(&contact, json!({"Phone": "+1 757 555 0199"}));
    let r = stack
        .api(Method::PATCH, &format!("/api/customers/{id}"))
        .json(&json!({"email": "dorothy@nasa.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = wait_for(WAIT, "our Email written to the Contact", || {
        let c = salesforce.contact(&contact);
        async move { c.filter(|c| c["Email"] == "dorothy@nasa.example") }
    })
    .await;
    assert_eq!(seen["LastModifiedById"], INTEGRATION_USER);
    assert_eq!(seen["Phone"], "+1 757 555 0199");

    stack.start_salesforce_inbound();
    let row = wait_for(WAIT, "the person's Phone in the local row", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c.filter(|c| c.phone.is_some()) }
    })
    .await;
    assert_eq!(row.phone.as_deref(), Some("+1 757 555 0199"));
    assert_eq!(row.email.as_deref(), Some("dorothy@nasa.example"));
    wait_for(WAIT, "the person's Phone in Stripe", || async {
        let c = stripe_customer(&ls, &cus).await;
        (c["phone"] == "+1 757 555 0199" && c["email"] == "dorothy@nasa.example").then_some(())
    })
    .await;
    wait_all_held_by_salesforce(&stack).await;
    let now = counts(&salesforce, &ls).await;
    assert_quiet(&stack, &salesforce, &ls, now).await;
    let contact_now = salesforce.contact(&contact).unwrap();
    assert_eq!(contact_now["Phone"], "+1 757 555 0199");
    assert_eq!(contact_now["Email"], "dorothy@nasa.example");
    stack.stop().await;
}

/// Two edits in one second share a `SystemModstamp`. Relayed one after
/// the other, the second is a version of its own (not a duplicate of the
/// first), and the tie is settled by reading the Contact: its last value
/// is what the local row ends with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relayed_edits_in_one_second_both_count_and_the_last_one_wins() {
    let salesforce = FakeSalesforce::start();
    let stack = relay_only(&salesforce).await;
    let contact = salesforce.create_as_person(json!({
        "FirstName": "Mary", "LastName": "Jackson", "Email": "mary@example.com", "Phone": "+1 0",
    }));
    let (status, answer) = stack
        .post_relay(
            &json!({"records": [salesforce.contact(&contact).unwrap()]}),
            true,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_for(WAIT, "the Contact applied", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c }
    })
    .await;

    start_of_a_second().await;
    let first = salesforce.edit_as_person(&contact, json!({"Phone": "+1 1"}));
    let second = salesforce.edit_as_person(&contact, json!({"Phone": "+1 2"}));
    assert_eq!(
        first["SystemModstamp"], second["SystemModstamp"],
        "both edits in one second"
    );
    for record in [&first, &second] {
        let (status, answer) = stack.post_relay(&json!({"records": [record]}), true).await;
        assert_eq!(status, 200, "{answer}");
    }
    let row = wait_for(WAIT, "the second edit in the local row", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c.filter(|c| c.phone.as_deref() == Some("+1 2")) }
    })
    .await;
    assert_eq!(row.email.as_deref(), Some("mary@example.com"));
    assert_eq!(
        stack.db.count("event_ledger WHERE service = 'salesforce'"),
        3,
        "the create and both edits are versions of their own"
    );
    stack.stop().await;
}

/// The poller alone: an edit it has read and a second edit later in the
/// same second share (stamp, Id), so a cursor placed after the first would
/// pass the second for good. The poller reads only whole seconds that are
/// over; the last value arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_poller_misses_no_second_edit_in_the_same_second() {
    let salesforce = FakeSalesforce::start();
    let mut stack = Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    stack.connect_salesforce(&salesforce, &[]).await;
    stack.start_salesforce_inbound();
    let contact = salesforce.create_as_person(json!({
        "FirstName": "Christine", "LastName": "Darden", "Phone": "+1 0",
    }));
    wait_for(WAIT, "the Contact applied", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c }
    })
    .await;
    start_of_a_second().await;
    let first = salesforce.edit_as_person(&contact, json!({"Phone": "+1 1"}));
    // Several polls (every 100 ms) between the two edits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = salesforce.edit_as_person(&contact, json!({"Phone": "+1 2"}));
    assert_eq!(
        first["SystemModstamp"], second["SystemModstamp"],
        "both edits in one second"
    );
    let row = wait_for(WAIT, "the second edit in the local row", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c.filter(|c| c.phone.as_deref() == Some("+1 2")) }
    })
    .await;
    assert_eq!(row.name.as_deref(), Some("Christine Darden"));
    stack.stop().await;
}

/// A relay record with `FirstName` and no `LastName` (a changed compound
/// name, as Change Data Capture sends it) changes the first name only: the
/// last name is kept, locally and in what goes on to Stripe, even one of
/// several words that the local name alone cannot tell (the Contact is
/// read). A new Contact relayed without a name part is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_record_changes_only_what_it_carries() {
    let salesforce = FakeSalesforce::start();
    let stack = relay_only(&salesforce).await;
    let contact = salesforce.create_as_person(json!({
        "FirstName": "Vincent", "LastName": "van Gogh", "Email": "vincent@example.com",
    }));
    let (status, answer) = stack
        .post_relay(
            &json!({"records": [salesforce.contact(&contact).unwrap()]}),
            true,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_for(WAIT, "the Contact applied", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c }
    })
    .await;

    // Salesforce's new version whole, the relay's record of it partial.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let renamed = salesforce.edit_as_person(&contact, json!({"FirstName": "Theo"}));
    let (status, answer) = stack
        .post_relay(&json!({"records": [only(&renamed, &["FirstName"])]}), true)
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_for(WAIT, "the partial version applied", || async {
        (stack.db.count("event_ledger WHERE service = 'salesforce'") == 2).then_some(())
    })
    .await;
    let row = linked(&stack, "salesforce", &contact).unwrap();
    assert_eq!(row.name.as_deref(), Some("Theo van Gogh"));
    assert_eq!(row.email.as_deref(), Some("vincent@example.com"));
    let passed_on = outbox_rows(&stack)
        .into_iter()
        .filter(|(_, origin, op, _)| origin == "salesforce" && op == "update")
        .map(|(_, _, _, fields)| fields)
        .collect::<Vec<_>>();
    assert_eq!(passed_on, vec![json!({"name": "Theo van Gogh"})]);

    // A Contact new to us, relayed without its FirstName.
    let other = salesforce.create_as_person(json!({
        "FirstName": "Grace", "LastName": "Hopper", "Email": "grace@example.com",
    }));
    let record = salesforce.contact(&other).unwrap();
    let (status, answer) = stack
        .post_relay(
            &json!({"records": [only(&record, &["LastName", "Email"])]}),
            true,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let row = wait_for(WAIT, "the new Contact applied", || {
        let c = linked(&stack, "salesforce", &other);
        async move { c }
    })
    .await;
    assert_eq!(row.name.as_deref(), Some("Grace Hopper"));
    assert_eq!(row.email.as_deref(), Some("grace@example.com"));
    assert_eq!(record["LastModifiedById"], PERSON);
    stack.stop().await;
}

/// Our own writes, reported late or racing a person's edit of the same
/// field: a relayed version of our older write, arriving after a newer
/// one was acknowledged, cannot be ordered against it by its whole-second
/// stamp, so the Contact is read, and the local row keeps the newer value;
/// a person's edit of a field we wrote moments before is read the same
/// way, and the person's value (what Salesforce holds) reaches the local
/// row and Stripe.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn our_late_echo_is_not_applied_and_an_edit_racing_our_write_is_read_and_applied() {
    let salesforce = FakeSalesforce::start();
    let mut ls = LocalStripe::start().await;
    // Versions reach the worker only as the test relays them.
    let stack = three_parties_with(
        &salesforce,
        &mut ls,
        &[("SALESFORCE_POLL_INTERVAL_MS", "0")],
    )
    .await;
    let created = json_of(
        stack
            .api(Method::POST, "/api/customers")
            .json(&json!({"email": "annie@example.com", "name": "Annie Easley"})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let contact = wait_contact_id(&salesforce, &id).await;
    let cus = wait_for(WAIT, "the Stripe link", || {
        let l = link_of(&stack, "stripe", id.parse().unwrap());
        async move { l }
    })
    .await;
    let patch_email = |email: &'static str| {
        let request = stack
            .api(Method::PATCH, &format!("/api/customers/{id}"))
            .json(&json!({ "email": email }));
        async move { assert_eq!(request.send().await.unwrap().status(), 200) }
    };
    let written = |email: &'static str| {
        let salesforce = &salesforce;
        let contact = &contact;
        async move {
            wait_for(WAIT, "our Email written to the Contact", || {
                let c = salesforce.contact(contact);
                async move { c.filter(|c| c["Email"] == email) }
            })
            .await
        }
    };
    patch_email("annie@nasa.example").await;
    let older = written("annie@nasa.example").await;
    patch_email("annie@glenn.example").await;
    written("annie@glenn.example").await;
    wait_all_held_by_salesforce(&stack).await;

    let relay = |record: Value| {
        let stack = &stack;
        async move {
            let n = stack.db.count("event_ledger WHERE service = 'salesforce'");
            let (status, answer) = stack
                .post_relay(&json!({ "records": [record] }), true)
                .await;
            assert_eq!(status, 200, "{answer}");
            wait_for(WAIT, "the relayed version ledgered", || async {
                let now = stack.db.count("event_ledger WHERE service = 'salesforce'");
                (now == n + 1).then_some(())
            })
            .await;
        }
    };
    // The poller is off: every query is a read of the Contact.
    let reads = || {
        salesforce
            .calls()
            .iter()
            .filter(|c| c.method == "GET" && c.path.ends_with("/queryAll"))
            .count()
    };
    relay(older).await;
    assert_eq!(
        reads(),
        1,
        "the late echo was ordered by reading the Contact"
    );
    let row = linked(&stack, "salesforce", &contact).unwrap();
    assert_eq!(row.email.as_deref(), Some("annie@glenn.example"));
    assert_eq!(
        stack.db.count("outbox WHERE origin = 'salesforce'"),
        0,
        "nothing passed on"
    );

    relay(salesforce.edit_as_person(&contact, json!({"Email": "annie.easley@example.com"}))).await;
    wait_for(WAIT, "the person's Email in the local row", || {
        let c = linked(&stack, "salesforce", &contact);
        async move { c.filter(|c| c.email.as_deref() == Some("annie.easley@example.com")) }
    })
    .await;
    assert!(
        stack
            .db
            .count("event_ledger WHERE service = 'salesforce' AND outcome = 'tie_resolved'")
            >= 1,
        "the edit was ordered against our write by reading the Contact"
    );
    // localstripe's echoes carry no Idempotency-Key, so one of our two
    // quick Stripe writes may come back late as a Stripe edit and go
    // round once (see docs/src/salesforce.md); what must hold is that all three
    // settle on the person's value and stay there.
    wait_for(
        WAIT,
        "all three on the person's Email, and quiet",
        || async {
            let before = counts(&salesforce, &ls).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let after = counts(&salesforce, &ls).await;
            let email = "annie.easley@example.com";
            let local = linked(&stack, "salesforce", &contact).and_then(|c| c.email);
            let remote = salesforce.contact(&contact).unwrap()["Email"].clone();
            let stripe = stripe_customer(&ls, &cus).await["email"].clone();
            (before == after
                && local.as_deref() == Some(email)
                && remote == email
                && stripe == email)
                .then_some(())
        },
    )
    .await;
    stack.stop().await;
}
