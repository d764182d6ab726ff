//! What earns an email and what it says.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use serde_json::{json, Value};

use super::{
    completed, items_at_stripe, per_session, post_paid, subjects, tee_at_stripe, Notifier, TO, WAIT,
};
use crate::orders::{line_item, post_all, session, session_event, stack_with, T};
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::smtp::{Mail, SmtpSink};
use crate::support::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_is_one_email_with_everything_the_shop_needs() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    // More items than one page of Stripe's list, in yen.
    let items: Vec<Value> = (0..105)
        .map(|n| {
            let mut item = line_item(n, "prod_tee", &format!("T-shirt #{n}"), 1500);
            item["currency"] = json!("jpy");
            item
        })
        .collect();
    items_at_stripe(&fake, "cs_paid", items);
    let session_fields = json!({
        "currency": "jpy", "amount_total": 157_500,
        "customer_details": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000",
                             "address": null, "tax_exempt": "none", "tax_ids": []},
        "collected_information": {"shipping_details": {"name": "Ada Lovelace", "address": {
            "line1": "12 Analytical Row", "line2": null, "city": "London", "postal_code": "N1 9GU",
            "state": null, "country": "GB"}}},
        "custom_fields": [{"key": "engraving", "label": {"custom": "Engraving", "type": "custom"},
                           "type": "text", "optional": true, "text": {"value": "To Charles"}}]
    });
    post_all(
        &stack,
        &[completed("evt_paid", "cs_paid", "paid", session_fields)],
    )
    .await;
    let mails = sink.wait_messages(1, WAIT).await;
    let mail = &mails[0];
    assert!(mail.subject().contains("cs_paid"), "{}", mail.subject());
    assert_eq!(mail.recipients(), [TO]);
    assert!(mail.header("from").unwrap().contains("orders@shop.example"));
    assert_eq!(
        mail.message_id(),
        "<order.checkout_session.cs_paid.platform@shop.example>"
    );
    let text = mail.text();
    for needle in [
        "Name: Ada Lovelace",
        "Email: ada@example.com",
        "Phone: +44 20 7946 0000",
        "Ship to: Ada Lovelace, 12 Analytical Row, N1 9GU London, GB",
        "Engraving: To Charles",
        "1 × T-shirt #0: 1,500 JPY",
        "1 × T-shirt #104: 1,500 JPY",
        "Total: 157,500 JPY",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert_eq!(
        text.matches(" × T-shirt #").count(),
        105,
        "every line item, past the first page"
    );
    assert!(
        mail.html().contains("<strong>Total: 157,500 JPY</strong>"),
        "{}",
        mail.html()
    );
    notifier.drained(&stack).await;
    assert_eq!(sink.messages().len(), 1);
    notifier.stop().await;
    stack.stop().await;
}

/// Every event three times, shuffled: paid completions, an unpaid one
/// followed by its async success, an async failure, an expiry, and a
/// subscription's first order with its renewals. One email per paid order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_paid_order_gets_exactly_one_email_whatever_arrives() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    for id in [
        "cs_paid",
        "cs_async",
        "cs_failed",
        "cs_expired",
        "cs_sub",
        "cs_sub_again",
    ] {
        tee_at_stripe(&fake, id);
    }
    let sub = json!({"mode": "subscription", "subscription": "sub_1"});
    let renewal = |n: usize| {
        let mut invoice = crate::support::fixtures::resource("invoice");
        invoice["id"] = json!(format!("in_renewal_{n}"));
        invoice["subscription"] = json!("sub_1");
        invoice["billing_reason"] = json!("subscription_cycle");
        invoice["status"] = json!("paid");
        session_event(
            &format!("evt_renewal_{n}"),
            "invoice.paid",
            T + 30 + n as i64,
            invoice,
        )
    };
    let events = vec![
        completed("evt_paid", "cs_paid", "paid", json!({})),
        completed(
            "evt_async_done",
            "cs_async",
            "unpaid",
            json!({"status": "complete"}),
        ),
        session_event(
            "evt_async_ok",
            "checkout.session.async_payment_succeeded",
            T + 1,
            session("cs_async", T, "paid", json!({})),
        ),
        completed(
            "evt_fail_done",
            "cs_failed",
            "unpaid",
            json!({"status": "complete"}),
        ),
        session_event(
            "evt_async_fail",
            "checkout.session.async_payment_failed",
            T + 1,
            session("cs_failed", T, "unpaid", json!({"status": "complete"})),
        ),
        session_event(
            "evt_expired",
            "checkout.session.expired",
            T,
            session("cs_expired", T, "unpaid", json!({"status": "expired"})),
        ),
        completed("evt_sub", "cs_sub", "paid", sub.clone()),
        // A second session for the same subscription is not a new order.
        completed("evt_sub_again", "cs_sub_again", "paid", sub),
        renewal(1),
        renewal(2),
    ];
    let mut sent: Vec<Value> = events
        .iter()
        .chain(&events)
        .chain(&events)
        .cloned()
        .collect();
    sent.shuffle(&mut rand::thread_rng());
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    post_all(&stack, &sent).await;
    notifier.drained(&stack).await;
    let mails = sink.messages();
    let counts = per_session(&mails);
    assert_eq!(counts.get("cs_paid"), Some(&1), "{:?}", subjects(&mails));
    assert_eq!(counts.get("cs_async"), Some(&1), "{:?}", subjects(&mails));
    let sub_mails = counts.get("cs_sub").unwrap_or(&0) + counts.get("cs_sub_again").unwrap_or(&0);
    assert_eq!(
        sub_mails,
        1,
        "one email for the subscription: {:?}",
        subjects(&mails)
    );
    assert_eq!(mails.len(), 3, "{:?}", subjects(&mails));
    let ids: HashSet<&str> = mails.iter().map(Mail::message_id).collect();
    assert!(
        ids.contains("<order.subscription.sub_1.platform@shop.example>"),
        "{ids:?}"
    );
    notifier.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_product_filter_keeps_only_orders_of_the_listed_products() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    items_at_stripe(
        &fake,
        "cs_in",
        vec![
            line_item(0, "prod_mug", "Mug", 900),
            line_item(1, "prod_course", "Course", 9900),
        ],
    );
    items_at_stripe(&fake, "cs_out", vec![line_item(0, "prod_mug", "Mug", 900)]);
    let notifier = Notifier::new(
        &stack,
        &sink,
        &[("NOTIFY_PRODUCT_IDS", "prod_course, prod_ebook")],
    )
    .start();
    post_all(
        &stack,
        &[
            completed("evt_in", "cs_in", "paid", json!({})),
            completed("evt_out", "cs_out", "paid", json!({})),
        ],
    )
    .await;
    notifier.drained(&stack).await;
    let mails = sink.wait_messages(1, WAIT).await;
    assert_eq!(per_session(&mails).keys().collect::<Vec<_>>(), ["cs_in"]);
    assert_eq!(stack.db.count("orders.notifications"), 1);
    notifier.stop().await;
    stack.stop().await;
}

/// The mirror already holds the completed session and its items: the
/// notifier reads them there, and Stripe is not asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_items_come_from_the_mirror_when_it_has_them() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    items_at_stripe(
        &fake,
        "cs_mirrored",
        vec![line_item(0, "prod_lamp", "Lamp", 4200)],
    );
    post_paid(&stack, "evt_m", "cs_mirrored").await;
    crate::orders::wait_mirrored(&stack, "paid", 1).await;
    wait_for(WAIT, "the line items in the mirror", || async {
        (stack.db.count("stripe.checkout_session_line_items") == 1).then_some(())
    })
    .await;
    let asked_before = fake.calls().len();
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    let mails = sink.wait_messages(1, WAIT).await;
    assert!(
        mails[0].text().contains("1 × Lamp: 42.00 USD"),
        "{}",
        mails[0].text()
    );
    assert_eq!(
        fake.calls().len(),
        asked_before,
        "Stripe was not asked again"
    );
    notifier.stop().await;
    stack.stop().await;
}
