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

/// The SMTP server holds the message's DATA (a slow content scan) while
/// the operator asks for the email again. Queued again, it
/// would go to the other notifier at once and out a second time; so the
/// retry is refused, over HTTP (409 `being_sent`) and from the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cannot_queue_again_an_email_being_sent() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    tee_at_stripe(&fake, "cs_busy");
    sink.hold_next(Phase::Data, None);
    // The message may take 20 s: the retries below come well within it.
    let env = notifier_env(&stack, &sink, "60000");
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
    sink.release(Phase::Data);

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
    // Held until the other notifier has sent the email: the paused one
    // reads the answer only once resumed.
    sink.hold_next(Phase::Rcpt, None);
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

    sink.release(Phase::Rcpt);
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
    sink.hold_next(
        Phase::Data,
        Some("554 5.6.0 content scan timed out, message refused"),
    );
    let env = notifier_env(&stack, &sink, "6000");
    let a = Process::start(&env);
    post_paid(&stack, "evt_stale", "cs_stale").await;
    sink.wait_stalled(Phase::Data, WAIT).await;
    a.signal("-STOP");
    let _b = Process::start(&env);
    wait_status(&stack, "sent").await;

    sink.release(Phase::Data);
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
            account: &stripe_sync::stripe::AccountId::PLATFORM,
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
/// and the recipients, and never gets the message. So can the time since
/// the lease was renewed (a sender paused after its check holds the
/// message back) and a stop asked for before the message went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_withheld_before_data_never_reaches_the_server() {
    use std::time::Duration;
    use stripe_sync::apps::orders::settings::SmtpUrl;
    use stripe_sync::apps::orders::smtp::{Mailer, SendError};
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;
    let sink = SmtpSink::start().await;
    let mailer = Mailer::new(
        &SmtpUrl::parse(&sink.url()).unwrap(),
        super::FROM.parse().unwrap(),
        vec![super::TO.parse().unwrap()],
        Duration::from_secs(10),
    )
    .unwrap();
    let running = CancellationToken::new();
    let send = |id: &'static str, stop: CancellationToken, start_by: Result<Instant, ()>| {
        let mailer = mailer.clone();
        async move {
            let mut asked = false;
            let sent = mailer
                .send(id, "one", "t".into(), "h".into(), &stop, || {
                    asked = true;
                    async move { start_by.map_err(|()| SendError::Withheld) }
                })
                .await;
            (sent, asked)
        }
    };
    let (withheld, asked) = send("<withheld@shop.example>", running.clone(), Err(())).await;
    assert!(
        matches!(withheld, Err(SendError::Withheld)) && asked,
        "{withheld:?}"
    );
    // Renewed, then paused past the time the message had to begin by.
    let late = Instant::now() - Duration::from_millis(1);
    let (held, asked) = send("<late@shop.example>", running.clone(), Ok(late)).await;
    assert!(
        matches!(&held, Err(SendError::HeldBack(why)) if why.contains("late")) && asked,
        "{held:?}"
    );
    let stopping = CancellationToken::new();
    stopping.cancel();
    let soon = Instant::now() + Duration::from_secs(10);
    let (stopped, _) = send("<stopping@shop.example>", stopping, Ok(soon)).await;
    assert!(
        matches!(&stopped, Err(SendError::HeldBack(why)) if why.contains("stopping")),
        "{stopped:?}"
    );
    let (allowed, _) = send("<allowed@shop.example>", running.clone(), Ok(soon)).await;
    allowed.unwrap();
    let mails = sink.wait_messages(1, WAIT).await;
    let ids: Vec<&str> = mails.iter().map(|m| m.message_id()).collect();
    assert_eq!(ids, ["<allowed@shop.example>"]);
}

/// The server takes the whole message and answers only after the
/// notifier stopped waiting (a content scan slower than the timeout): it
/// has the email, and the notifier cannot know. Tried again a second
/// later, as a timeout before the message is, it would go out again on
/// every slow answer; so the notifier leaves it for
/// `NOTIFY_UNKNOWN_OUTCOME_WAIT_MS` (10 minutes), and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_answered_after_the_timeout_is_not_sent_again_soon() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    tee_at_stripe(&fake, "cs_slow_scan");
    sink.hold_next(Phase::Data, None);
    // A lease of 4 s: the message times out after 2 s.
    let notifier = Notifier::new(
        &stack,
        &sink,
        &[
            ("NOTIFY_LEASE_MS", "4000"),
            ("NOTIFY_UNKNOWN_OUTCOME_WAIT_MS", "600000"),
            ("NOTIFY_RETRY_MAX_MS", "60000"),
        ],
    )
    .start();
    post_paid(&stack, "evt_slow_scan", "cs_slow_scan").await;
    sink.wait_stalled(Phase::Data, WAIT).await;
    let unknown = wait_for(WAIT, "the notifier to give up waiting", || async {
        let n = the_notification(&stack).await;
        n["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("outcome unknown"))
            .then_some(n)
    })
    .await;
    sink.release(Phase::Data);
    // Retried as a timeout before the message is (1 s, then 2 s, then
    // 4 s), three more copies would have gone out by now.
    tokio::time::sleep(std::time::Duration::from_secs(1 + 2 + 4 + 1)).await;
    let now = the_notification(&stack).await;
    let due: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(now["next_attempt_at"].clone()).unwrap();
    let waits = (due - chrono::Utc::now()).num_seconds();
    assert_eq!(
        (
            sink.messages().len(),
            now["status"].as_str(),
            now["attempts"].as_i64()
        ),
        (1, Some("pending"), Some(1)),
        "{now}"
    );
    assert!(
        now["last_error"] == unknown["last_error"] && (500..=600).contains(&waits),
        "not tried again before ten minutes: {now}"
    );
    notifier.stop().await;
    stack.stop().await;
}

/// A stop asked for while the server still has not taken the recipients
/// (a tarpit): the notifier ends that conversation at once, lets the row
/// go (due again now, so another notifier need not wait out the lease)
/// and exits; the server never got the message. Started again, it sends
/// the email once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_told_to_stop_before_the_message_lets_the_email_go() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    tee_at_stripe(&fake, "cs_stopping");
    sink.hold_next(Phase::Rcpt, None);
    let extra = [("NOTIFY_LEASE_MS", "60000")];
    let notifier = Notifier::new(&stack, &sink, &extra).start();
    post_paid(&stack, "evt_stopping", "cs_stopping").await;
    sink.wait_stalled(Phase::Rcpt, WAIT).await;
    notifier.stop().await;
    assert_eq!(
        stack.db.count(
            "orders.notifications WHERE status = 'pending' AND lease_token IS NULL \
             AND next_attempt_at <= now() AND last_error LIKE '%stopping%'"
        ),
        1,
        "{}",
        the_notification(&stack).await
    );
    sink.release(Phase::Rcpt);
    let again = Notifier::new(&stack, &sink, &extra).start();
    wait_status(&stack, "sent").await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    again.stop().await;
    stack.stop().await;
}
