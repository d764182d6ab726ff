//! The order notifier: one email per paid order at a real SMTP server,
//! whatever arrives (duplicates, both events of a session, renewals,
//! shuffling), through SMTP outages, refusals and a SIGKILL.

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::seq::SliceRandom;
use serde_json::{json, Value};
use stripe_sync::apps::orders::notifier;
use stripe_sync::config::{Env, NotifierConfig};
use stripe_sync::stripe::PLATFORM_ACCOUNT;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{line_item, post_all, session, session_event, stack_with, T};
use crate::support::broker::wait_consumed;
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::smtp::{Mail, SmtpSink};
use crate::support::stack::Stack;
use crate::support::{unique, wait_for};

const FROM: &str = "Shop <orders@shop.example>";
const TO: &str = "owner@shop.example";
const WAIT: Duration = Duration::from_secs(60);

struct Notifier {
    env: Env,
    group: String,
    running: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
}

impl Notifier {
    fn new(stack: &Stack, sink: &SmtpSink, extra: &[(&str, &str)]) -> Self {
        let group = unique("notifier");
        let mut env = stack
            .env
            .with("NOTIFIER_CONSUMER_GROUP", &group)
            .with("SMTP_URL", &sink.url())
            .with("NOTIFY_EMAIL_FROM", FROM)
            .with("NOTIFY_EMAIL_TO", TO)
            .with("NOTIFY_POLL_MS", "50")
            .with("NOTIFY_RETRY_MAX_MS", "300")
            // A killed notifier's email is taken again after this.
            .with("NOTIFY_LEASE_MS", "3000");
        for (k, v) in extra {
            env = env.with(k, v);
        }
        Self {
            env,
            group,
            running: None,
        }
    }

    fn start(mut self) -> Self {
        let token = CancellationToken::new();
        let cfg = NotifierConfig::load(&self.env).unwrap();
        self.running = Some((token.clone(), tokio::spawn(notifier::run(cfg, token))));
        self
    }

    /// Waits until the notifier has consumed everything on the topic and
    /// has no email left to send: what the SMTP server has then is final.
    async fn drained(&self, stack: &Stack) {
        wait_consumed(&stack.brokers, &self.group, &stack.topic, WAIT).await;
        wait_for(WAIT, "no email left to send", || async {
            (stack
                .db
                .count("orders.notifications WHERE status = 'pending'")
                == 0)
                .then_some(())
        })
        .await;
    }

    async fn stop(mut self) {
        if let Some((token, handle)) = self.running.take() {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("the notifier stops in time")
                .unwrap()
                .expect("the notifier exits cleanly");
        }
    }
}

/// Serves the session's line items at Stripe (the fake).
fn items_at_stripe(fake: &CatalogStripe, session_id: &str, items: Vec<Value>) {
    fake.put_nested(
        PLATFORM_ACCOUNT,
        "checkout/sessions",
        session_id,
        "line_items",
        items,
    );
}

fn completed(event_id: &str, id: &str, payment_status: &str, fields: Value) -> Value {
    session_event(
        event_id,
        "checkout.session.completed",
        T,
        session(id, T, payment_status, fields),
    )
}

fn subjects(mails: &[Mail]) -> Vec<String> {
    let mut s: Vec<String> = mails.iter().map(|m| m.subject().to_owned()).collect();
    s.sort();
    s
}

/// Emails per session id (read from the subject).
fn per_session(mails: &[Mail]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in mails {
        let id = m
            .subject()
            .split_whitespace()
            .find(|w| w.starts_with("cs_"))
            .unwrap()
            .trim_end_matches(':');
        *counts.entry(id.to_owned()).or_default() += 1;
    }
    counts
}

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
        items_at_stripe(&fake, id, vec![line_item(0, "prod_tee", "T-shirt", 2500)]);
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
    post_all(
        &stack,
        &[completed("evt_m", "cs_mirrored", "paid", json!({}))],
    )
    .await;
    super::wait_mirrored(&stack, "paid", 1).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_wait_out_an_smtp_outage_and_arrive_once_each() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let mut sink = SmtpSink::start().await;
    sink.stop();
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    let events: Vec<Value> = (0..6)
        .map(|n| {
            completed(
                &format!("evt_{n}"),
                &format!("cs_down_{n}"),
                "paid",
                json!({}),
            )
        })
        .collect();
    for n in 0..6 {
        items_at_stripe(
            &fake,
            &format!("cs_down_{n}"),
            vec![line_item(0, "prod_tee", "T-shirt", 2500)],
        );
    }
    post_all(&stack, &events).await;
    // Every order is queued and has failed at least twice meanwhile.
    wait_for(WAIT, "every email to have been tried during the outage", || async {
        (stack.db.count("orders.notifications WHERE status = 'pending' AND attempts >= 2 AND last_error IS NOT NULL") == 6).then_some(())
    })
    .await;
    wait_consumed(&stack.brokers, &notifier.group, &stack.topic, WAIT).await;
    sink.resume().await;
    notifier.drained(&stack).await;
    let mails = sink.messages();
    assert_eq!(
        stack.db.count("orders.notifications WHERE status = 'sent'"),
        6
    );
    assert_eq!(mails.len(), 6, "{:?}", subjects(&mails));
    assert!(per_session(&mails).values().all(|&n| n == 1));
    notifier.stop().await;
    stack.stop().await;
}

/// A temporary refusal (451) is retried until the server takes the mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_refusal_is_retried_until_accepted() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    sink.defer(&[TO]);
    items_at_stripe(
        &fake,
        "cs_deferred",
        vec![line_item(0, "prod_tee", "T-shirt", 2500)],
    );
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    post_all(
        &stack,
        &[completed("evt_d", "cs_deferred", "paid", json!({}))],
    )
    .await;
    wait_for(WAIT, "the email to be retried after 451s", || async {
        let retried = "orders.notifications WHERE status = 'pending' AND attempts >= 3 \
                       AND last_error LIKE '%451%'";
        (stack.db.count(retried) == 1).then_some(())
    })
    .await;
    assert!(sink.messages().is_empty());
    sink.defer(&[]);
    notifier.drained(&stack).await;
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(
        stack.db.count("orders.notifications WHERE status = 'sent'"),
        1
    );
    notifier.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_email_is_failed_listed_dead_lettered_and_retried_once_fixed() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    sink.refuse(&[TO]);
    items_at_stripe(
        &fake,
        "cs_refused",
        vec![line_item(0, "prod_tee", "T-shirt", 2500)],
    );
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    post_all(
        &stack,
        &[completed("evt_r", "cs_refused", "paid", json!({}))],
    )
    .await;
    let failed = wait_for(WAIT, "the notification to fail", || async {
        let r = stack
            .api(
                reqwest::Method::GET,
                "/api/admin/notifications?status=failed",
            )
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        let list = body["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (list.len() == 1).then(|| list[0].clone())
    })
    .await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("550"),
        "{failed}"
    );
    assert_eq!(failed["order_key"], "checkout_session:cs_refused");
    // The operator's view and the dead letter say the same.
    let listed =
        stripe_sync::apps::orders::commands::list(&mut stack.db.conn(), Some("failed"), 10, false)
            .unwrap();
    assert!(
        listed.contains("checkout_session:cs_refused") && listed.contains("550"),
        "{listed}"
    );
    let dlq = stripe_sync::kafka::topics::notifier_dead_letters(&stack.topic);
    let letters = wait_for(WAIT, "the dead letter", || async {
        let letters = crate::support::broker::read_all(&stack.brokers, &dlq);
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert!(letters[0].header("dlq-error").unwrap().contains("550"));
    assert_eq!(letters[0].header("stripe-event-id"), Some("evt_r"));
    assert!(sink.messages().is_empty());

    // Fixed: retried from the API, sent once; a second retry is refused.
    sink.refuse(&[]);
    let id = failed["id"].as_i64().unwrap();
    let r = stack
        .api(
            reqwest::Method::POST,
            &format!("/api/admin/notifications/{id}/retry"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mails = sink.wait_messages(1, WAIT).await;
    assert!(mails[0].subject().contains("cs_refused"));
    wait_for(WAIT, "the notification marked sent", || async {
        (stack.db.count("orders.notifications WHERE status = 'sent'") == 1).then_some(())
    })
    .await;
    let r = stack
        .api(
            reqwest::Method::POST,
            &format!("/api/admin/notifications/{id}/retry"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = stack
        .api(
            reqwest::Method::POST,
            "/api/admin/notifications/999999/retry",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = stack
        .api(reqwest::Method::GET, "/api/admin/notifications?status=lost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(sink.messages().len(), 1);
    notifier.stop().await;
    stack.stop().await;
}

/// The dead letter of a refused email, replayed once the cause is fixed,
/// queues that email again: the operator's DLQ tools work here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_dead_letter_of_a_refused_email_sends_it_once() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    sink.refuse(&[TO]);
    items_at_stripe(
        &fake,
        "cs_replayed",
        vec![line_item(0, "prod_tee", "T-shirt", 2500)],
    );
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    post_all(
        &stack,
        &[completed("evt_rp", "cs_replayed", "paid", json!({}))],
    )
    .await;
    let letter = wait_for(WAIT, "the dead letter in /api/admin/dlq", || async {
        let r = stack
            .api(reqwest::Method::GET, "/api/admin/dlq")
            .send()
            .await
            .unwrap();
        let letters: Value = r.json().await.unwrap();
        letters
            .as_array()?
            .iter()
            .find(|l| l["event_id"] == "evt_rp")
            .cloned()
    })
    .await;
    assert!(
        letter["error"].as_str().unwrap().contains("550"),
        "{letter}"
    );
    assert_eq!(
        stack
            .db
            .count("orders.notifications WHERE status = 'failed'"),
        1
    );

    sink.refuse(&[]);
    let id = letter["id"].as_str().unwrap();
    let r = stack
        .api(
            reqwest::Method::POST,
            &format!("/api/admin/dlq/{id}/replay"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mails = sink.wait_messages(1, WAIT).await;
    assert!(mails[0].subject().contains("cs_replayed"));
    notifier.drained(&stack).await;
    assert_eq!(
        stack.db.count("orders.notifications WHERE status = 'sent'"),
        1
    );
    assert_eq!(sink.messages().len(), 1);
    // A replay of an event whose email went out changes nothing.
    post_all(
        &stack,
        &[completed("evt_rp", "cs_replayed", "paid", json!({}))],
    )
    .await;
    notifier.drained(&stack).await;
    assert_eq!(sink.messages().len(), 1);
    notifier.stop().await;
    stack.stop().await;
}

/// Credentials in SMTP_URL (percent-encoded) authenticate; wrong ones are
/// a configuration problem, retried, never an order marked failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_credentials_authenticate_and_a_wrong_password_fails_no_order() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::with_login("shop", "p@ss:word").await;
    items_at_stripe(
        &fake,
        "cs_auth",
        vec![line_item(0, "prod_tee", "T-shirt", 2500)],
    );
    let wrong = format!("smtp://shop:nope@127.0.0.1:{}", sink.port);
    let notifier = Notifier::new(&stack, &sink, &[("SMTP_URL", &wrong)]).start();
    post_all(
        &stack,
        &[completed("evt_auth", "cs_auth", "paid", json!({}))],
    )
    .await;
    wait_for(
        WAIT,
        "the email to be retried after the refused login",
        || async {
            let retried = "orders.notifications WHERE status = 'pending' AND attempts >= 2 \
                       AND last_error LIKE '%authentication failed%'";
            (stack.db.count(retried) == 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        stack
            .db
            .count("orders.notifications WHERE status = 'failed'"),
        0
    );
    notifier.stop().await;

    let right = format!("smtp://shop:p%40ss%3Aword@127.0.0.1:{}", sink.port);
    let notifier = Notifier::new(&stack, &sink, &[("SMTP_URL", &right)]).start();
    let mails = sink.wait_messages(1, WAIT).await;
    assert!(mails[0].subject().contains("cs_auth"));
    wait_for(WAIT, "the notification marked sent", || async {
        (stack.db.count("orders.notifications WHERE status = 'sent'") == 1).then_some(())
    })
    .await;
    notifier.stop().await;
    stack.stop().await;
}

fn spawn_notifier(env: &Env) -> Child {
    Command::new(env!("CARGO_BIN_EXE_order-notifier"))
        .env_clear()
        .envs(env.vars())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start order-notifier")
}

/// The binary is SIGKILLed while emails are going out, then started again:
/// every order ends with its email. The one resend a kill can cause (after
/// the server accepted, before the row was marked) carries the same
/// Message-ID as the first, so it is a copy, never a second order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_mid_stream_misses_no_order() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    let orders = 40;
    for n in 0..orders {
        items_at_stripe(
            &fake,
            &format!("cs_k{n:02}"),
            vec![line_item(0, "prod_tee", "T-shirt", 2500)],
        );
    }
    let mut env = Notifier::new(&stack, &sink, &[]).env;
    env = env.with("STRIPE_API_BASE", &fake.base());
    let mut child = spawn_notifier(&env);
    let events: Vec<Value> = (0..orders)
        .map(|n| {
            completed(
                &format!("evt_k{n}"),
                &format!("cs_k{n:02}"),
                "paid",
                json!({}),
            )
        })
        .collect();
    post_all(&stack, &events).await;
    sink.wait_messages(5, WAIT).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = spawn_notifier(&env);
    let mails = sink.wait_messages(orders, Duration::from_secs(120)).await;
    wait_for(WAIT, "every notification marked sent", || async {
        (stack.db.count("orders.notifications WHERE status = 'sent'") == orders as i64)
            .then_some(())
    })
    .await;
    let mails = if sink.messages().len() > mails.len() {
        sink.messages()
    } else {
        mails
    };
    let counts = per_session(&mails);
    assert_eq!(counts.len(), orders, "every order has its email");
    let distinct: HashSet<&str> = mails.iter().map(Mail::message_id).collect();
    assert_eq!(distinct.len(), orders, "one Message-ID per order");
    assert!(
        mails.len() <= orders + 1,
        "at most the one in-flight resend: {:?}",
        counts
    );
    assert_eq!(stack.db.count("orders.notifications"), orders as i64);
    child.kill().unwrap();
    child.wait().unwrap();
    stack.stop().await;
}
