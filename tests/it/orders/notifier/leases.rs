//! Who may finish an email: two real `order-notifier` processes share the
//! queue, and one of them is held in the middle of a send (a slow SMTP
//! answer, a process paused past its lease). Only the sender holding the
//! row's lease may send the message or record what became of it, and an
//! operator cannot queue again an email that is being sent.

use std::process::{Child, Command};

use serde_json::Value;
use stripe_sync::config::Env;

use super::{post_paid, tee_at_stripe, Notifier, WAIT};
use crate::orders::stack_with;
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::smtp::{Phase, SmtpSink};
use crate::support::stack::Stack;
use crate::support::{free_port, spawn_binary, wait_for};

/// A notifier process, killed when dropped (a failed assertion included).
struct Process {
    child: Child,
    /// Where its `/metrics` are.
    metrics: String,
}

impl Process {
    fn start(env: &Env) -> Self {
        let metrics = format!("127.0.0.1:{}", free_port());
        let env = env.with("METRICS_ADDR", &metrics);
        let child = spawn_binary(env!("CARGO_BIN_EXE_order-notifier"), &[], &env);
        Self { child, metrics }
    }

    /// SIGSTOP or SIGCONT: the whole process paused (a VM's or a
    /// collector's pause), then resumed.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// `stripe_sync_notifications_total{outcome}` in its `/metrics`.
    async fn counted(&self, outcome: &str) -> u64 {
        let Ok(r) = reqwest::get(format!("http://{}/metrics", self.metrics)).await else {
            return 0;
        };
        let text = r.text().await.unwrap_or_default();
        let prefix = format!("stripe_sync_notifications_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one notification, as `/api/admin/notifications` shows it.
async fn the_notification(stack: &Stack) -> Value {
    let r = stack
        .admin(reqwest::Method::GET, "/api/admin/notifications")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let list = body["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    list[0].clone()
}

async fn wait_status(stack: &Stack, status: &str) -> Value {
    wait_for(WAIT, &format!("the notification {status}"), || async {
        let n = the_notification(stack).await;
        (n["status"] == status).then_some(n)
    })
    .await
}

fn notifier_env(stack: &Stack, sink: &SmtpSink, lease_ms: &str) -> Env {
    Notifier::new(stack, sink, &[("NOTIFY_LEASE_MS", lease_ms)]).env
}

/// The SMTP server holds the message's DATA for seconds (a slow content
/// scan) while the operator asks for the email again. Queued again, it
/// would go to the other notifier at once and out a second time; so the
/// retry is refused, over HTTP (409 `being_sent`) and from the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cannot_queue_again_an_email_being_sent() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    tee_at_stripe(&fake, "cs_busy");
    sink.stall_next(Phase::Data, 5.0, None);
    let env = notifier_env(&stack, &sink, "30000");
    let _a = Process::start(&env);
    let _b = Process::start(&env);
    post_paid(&stack, "evt_busy", "cs_busy").await;
    sink.wait_stalled(Phase::Data, WAIT).await;

    let id = the_notification(&stack).await["id"].as_i64().unwrap();
    let r = stack
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/notifications/{id}/retry"),
        )
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let refusal: Value = r.json().await.unwrap();
    let cli = Command::new(env!("CARGO_BIN_EXE_stripe-sync"))
        .args(["notifications", "retry", &id.to_string()])
        .env_clear()
        .env("DATABASE_URL", &stack.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&cli.stdout).into_owned() + &String::from_utf8_lossy(&cli.stderr);
    assert!(
        sink.stalled(Phase::Data),
        "both retries came while it was held"
    );

    wait_for(WAIT, "the held DATA to be answered", || async {
        (!sink.stalled(Phase::Data)).then_some(())
    })
    .await;
    let sent = wait_status(&stack, "sent").await;
    let mails = sink.messages();
    assert_eq!(
        (
            status,
            refusal["error"]["code"].as_str(),
            mails.len(),
            sent["attempts"].as_i64()
        ),
        (409, Some("being_sent"), 1, Some(1)),
        "{refusal}"
    );
    assert!(
        !cli.status.success() && said.contains("being sent"),
        "the CLI refuses too: {said}"
    );
    stack.stop().await;
}

/// A notifier is paused (SIGSTOP) while the server tarpits its `RCPT`,
/// until its lease has run out and the other notifier has taken the email
/// and sent it. Resumed, it reads the server's answer and would go on to
/// DATA: it checks its lease first, finds it gone, and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_paused_past_its_lease_does_not_send_the_email_again() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    tee_at_stripe(&fake, "cs_paused");
    // A send may take half the lease (3 s); the tarpit is inside that.
    sink.stall_next(Phase::Rcpt, 2.0, None);
    let env = notifier_env(&stack, &sink, "6000");
    let a = Process::start(&env);
    post_paid(&stack, "evt_paused", "cs_paused").await;
    sink.wait_stalled(Phase::Rcpt, WAIT).await;
    a.signal("-STOP");
    let b = Process::start(&env);
    let sent = wait_status(&stack, "sent").await;
    assert_eq!(sink.messages().len(), 1);
    wait_for(WAIT, "the second notifier to count it sent", || async {
        (b.counted("sent").await == 1).then_some(())
    })
    .await;

    a.signal("-CONT");
    wait_for(
        WAIT,
        "the resumed notifier to finish its attempt",
        || async {
            (a.counted("lease_lost").await >= 1 || sink.messages().len() > 1).then_some(())
        },
    )
    .await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "one email for the order");
    let now = the_notification(&stack).await;
    assert_eq!(
        (now["status"].as_str(), now["sent_at"].clone()),
        (Some("sent"), sent["sent_at"].clone()),
        "the second sender's record stands"
    );
    stack.stop().await;
}

/// A notifier is paused while the server scans its message, which it then
/// refuses (554); meanwhile its lease ran out and the other notifier's
/// copy was accepted. The refusal the first one reads when resumed is
/// stale: recorded, it would turn a sent email into a failed one (and an
/// operator's retry into a second email). Only the lease holder records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_sender_cannot_record_over_the_lease_holder() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    tee_at_stripe(&fake, "cs_stale");
    sink.stall_next(
        Phase::Data,
        2.0,
        Some("554 5.6.0 content scan timed out, message refused"),
    );
    let env = notifier_env(&stack, &sink, "6000");
    let a = Process::start(&env);
    post_paid(&stack, "evt_stale", "cs_stale").await;
    sink.wait_stalled(Phase::Data, WAIT).await;
    a.signal("-STOP");
    let _b = Process::start(&env);
    wait_status(&stack, "sent").await;

    a.signal("-CONT");
    wait_for(
        WAIT,
        "the resumed notifier to finish its attempt",
        || async {
            let n = the_notification(&stack).await;
            (a.counted("lease_lost").await >= 1 || n["status"] != "sent").then_some(())
        },
    )
    .await;
    let now = the_notification(&stack).await;
    let dlq = stripe_sync::kafka::topics::notifier_dead_letters(&stack.topic);
    let letters = crate::support::broker::read_all(&stack.brokers, &dlq);
    assert_eq!(
        (now["status"].as_str(), letters.len(), sink.messages().len()),
        (Some("sent"), 0, 1),
        "{now}"
    );
    let r = stack
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/notifications/{}/retry", now["id"]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a sent email is not sent again");
    stack.stop().await;
}

/// The token makes a sender the holder: once another sender has taken the
/// row (the first one's lease ran out), the first can neither renew its
/// lease nor record an outcome, and the new holder can; a completed row
/// has no holder left.
#[test]
fn only_the_current_lease_holder_renews_and_records() {
    use std::time::Duration;
    use stripe_sync::apps::orders::notifications::{self as n, AsHolder, NewNotification};
    let db = crate::support::db::TestDb::migrated();
    let conn = &mut *db.conn();
    let event = serde_json::json!({"id": "evt_1"});
    let claimed = n::claim(
        conn,
        &NewNotification {
            account: "platform",
            order_key: "checkout_session:cs_1",
            session_id: "cs_1",
            event_id: "evt_1",
            event: &event,
            order_data: serde_json::json!({}),
            message_id: "<order.cs_1@shop.example>".into(),
        },
    )
    .unwrap();
    assert!(claimed);
    // A lease of no time at all: due again at once, as after a long pause.
    let first = n::take_next(conn, Duration::ZERO).unwrap().unwrap();
    let second = n::take_next(conn, Duration::from_secs(60))
        .unwrap()
        .unwrap();
    assert_eq!(first.id, second.id);
    assert!(n::take_next(conn, Duration::from_secs(60))
        .unwrap()
        .is_none());
    let minute = Duration::from_secs(60);
    assert_eq!(
        n::renew(conn, first.lease(), minute).unwrap(),
        AsHolder::LeaseLost
    );
    assert_eq!(
        n::mark_failed(conn, first.lease(), "stale").unwrap(),
        AsHolder::LeaseLost
    );
    assert_eq!(
        n::mark_retry(conn, first.lease(), "stale", minute).unwrap(),
        AsHolder::LeaseLost
    );
    assert_eq!(
        n::renew(conn, second.lease(), minute).unwrap(),
        AsHolder::Applied
    );
    assert_eq!(
        n::mark_sent(conn, second.lease()).unwrap(),
        AsHolder::Applied
    );
    assert_eq!(
        n::mark_failed(conn, second.lease(), "late").unwrap(),
        AsHolder::LeaseLost
    );
    assert!(matches!(
        n::retry(conn, second.id),
        Err(n::RetryError::AlreadySent(_))
    ));
    assert_eq!(
        db.count("orders.notifications WHERE status = 'sent' AND last_error IS NULL"),
        1
    );
}

/// The check before DATA can stop a message: the server took the sender
/// and the recipients, and never gets the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_withheld_before_data_never_reaches_the_server() {
    use stripe_sync::apps::orders::smtp::{Mailer, SendError, SmtpUrl};
    let sink = SmtpSink::start().await;
    let mailer = Mailer::new(
        &SmtpUrl::parse(&sink.url()).unwrap(),
        super::FROM.parse().unwrap(),
        vec![super::TO.parse().unwrap()],
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let mut asked = false;
    let withheld = mailer
        .send(
            "<withheld@shop.example>",
            "one",
            "t".into(),
            "h".into(),
            || {
                asked = true;
                async { Err(SendError::Withheld) }
            },
        )
        .await;
    assert!(
        matches!(withheld, Err(SendError::Withheld)) && asked,
        "{withheld:?}"
    );
    mailer
        .send(
            "<allowed@shop.example>",
            "two",
            "t".into(),
            "h".into(),
            || async { Ok(()) },
        )
        .await
        .unwrap();
    let mails = sink.wait_messages(1, WAIT).await;
    let ids: Vec<&str> = mails.iter().map(|m| m.message_id()).collect();
    assert_eq!(ids, ["<allowed@shop.example>"]);
}
