//! The order notifier: one email per paid order at a real SMTP server.
//! `orders` covers what earns an email and what it says, whatever arrives
//! (duplicates, both events of a session, renewals, shuffling); `delivery`
//! covers getting it there through SMTP outages, refusals, logins and a
//! SIGKILL. The harness here runs the notifier in-process against the
//! test's stack and SMTP sink.

mod console;
mod delivery;
mod leases;
mod orders;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use stripe_sync::apps::orders::notifier;
use stripe_sync::config::{Env, NotifierConfig};
use stripe_sync::stripe::PLATFORM_ACCOUNT;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{completed, line_item, post_all};
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
            .with("NOTIFY_LEASE_MS", "3000")
            // A message whose answer is late on a loaded machine is tried
            // again soon, not after ten minutes (the test of that wait,
            // in leases.rs, sets its own).
            .with("NOTIFY_UNKNOWN_OUTCOME_WAIT_MS", "3000");
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

/// Serves one T-shirt (25.00 USD) as the session's line items at Stripe.
fn tee_at_stripe(fake: &CatalogStripe, session_id: &str) {
    items_at_stripe(
        fake,
        session_id,
        vec![line_item(0, "prod_tee", "T-shirt", 2500)],
    );
}

/// Posts the webhook of a completed, paid session.
async fn post_paid(stack: &Stack, event_id: &str, session_id: &str) {
    post_all(stack, &[completed(event_id, session_id, "paid", json!({}))]).await;
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
