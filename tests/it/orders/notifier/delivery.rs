//! Getting each email there exactly once: SMTP outages, temporary and
//! permanent refusals, logins, dead-letter replays, a SIGKILL.

use std::collections::HashSet;
use std::process::Child;
use std::time::Duration;

use serde_json::{json, Value};
use stripe_sync::config::Env;

use super::{completed, per_session, post_paid, subjects, tee_at_stripe, Notifier, TO, WAIT};
use crate::orders::{post_all, stack_with};
use crate::support::broker::wait_consumed;
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::smtp::{Mail, SmtpSink};
use crate::support::{spawn_binary, wait_for};

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
        tee_at_stripe(&fake, &format!("cs_down_{n}"));
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
    tee_at_stripe(&fake, "cs_deferred");
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    post_paid(&stack, "evt_d", "cs_deferred").await;
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
    tee_at_stripe(&fake, "cs_refused");
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    post_paid(&stack, "evt_r", "cs_refused").await;
    let failed = wait_for(WAIT, "the notification to fail", || async {
        let r = stack
            .admin(
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
    assert_eq!(
        stripe_sync::kafka::envelope::event_id_in(&letters[0].payload).as_deref(),
        Some("evt_r")
    );
    assert_eq!(letters[0].header("source"), Some("order-notifier"));
    assert!(sink.messages().is_empty());

    // Fixed: retried from the API, sent once; a second retry is refused.
    sink.refuse(&[]);
    let id = failed["id"].as_i64().unwrap();
    let r = stack
        .admin(
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
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/notifications/{id}/retry"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = stack
        .admin(
            reqwest::Method::POST,
            "/api/admin/notifications/999999/retry",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = stack
        .admin(reqwest::Method::GET, "/api/admin/notifications?status=lost")
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
    tee_at_stripe(&fake, "cs_replayed");
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    post_paid(&stack, "evt_rp", "cs_replayed").await;
    let letter = wait_for(WAIT, "the dead letter in /api/admin/dlq", || async {
        let r = stack
            .admin(reqwest::Method::GET, "/api/admin/dlq")
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
        .admin(
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
    post_paid(&stack, "evt_rp", "cs_replayed").await;
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
    tee_at_stripe(&fake, "cs_auth");
    let wrong = format!("smtp://shop:nope@127.0.0.1:{}", sink.port);
    let notifier = Notifier::new(&stack, &sink, &[("SMTP_URL", &wrong)]).start();
    post_paid(&stack, "evt_auth", "cs_auth").await;
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
    spawn_binary(env!("CARGO_BIN_EXE_order-notifier"), &[], env)
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
        tee_at_stripe(&fake, &format!("cs_k{n:02}"));
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
