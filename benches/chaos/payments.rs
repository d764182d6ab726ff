//! The soak's money load, through serve as the application's backend
//! would call it: customers made for it save a card (some a card that
//! Stripe declines), then a steady mix of credit purchases, spends (some
//! larger than any balance, to be refused), payment intents created with
//! `confirm`, synchronous refunds and queued refunds (polled until final).
//! Every request carries an Idempotency-Key and is retried with it until
//! answered, as a client would; some are sent twice at once on purpose.
//! What each request was told is kept for the check (`payments_check.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::load::Deliveries;

/// What a request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Route {
    CardSave,
    Purchase,
    Spend,
    Intent,
    SyncRefund,
    QueuedRefund,
}

/// One request of the load and what it was told.
#[derive(Clone, Debug)]
pub struct Sent {
    pub route: Route,
    pub key: String,
    pub customer: Option<Uuid>,
    pub body: Value,
    /// The final answers it got (more than one when sent twice).
    pub answers: Vec<(u16, Value)>,
    /// Spends built to be refused (more than any balance can hold).
    pub must_refuse: bool,
    /// Queued refunds: the request as last polled.
    pub polled: Option<Value>,
}

impl Sent {
    /// What the request was told: its success if any answer was one
    /// (answers that read the present, such as a short balance, are not
    /// saved under the key, so a twin sent at once may do the work after
    /// one was refused), else its first answer.
    pub fn told(&self) -> Option<&(u16, Value)> {
        self.answers
            .iter()
            .find(|(status, _)| (200..300).contains(status))
            .or(self.answers.first())
    }
}

/// Whether serve saves `answer` to a request of `route` under the key and
/// replays it to every retry (docs/src/apps/payments.md, "Which answers are final"); the
/// others read the present, and a retry does the work again. Of the 2xx,
/// only a purchase's `202 pending` is not final (a queued refund's `202`
/// is).
pub fn is_final(route: Route, answer: &(u16, Value)) -> bool {
    let (status, body) = answer;
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let reads_the_present = matches!(
        code,
        "insufficient_credits"
            | "amount_too_large"
            | "charge_already_refunded"
            | "customer_not_found"
            | "invalid_package"
            | "no_payment_method"
            | "authentication_required"
    );
    !(route == Route::Purchase && *status == 202) && *status < 500 && !reads_the_present
}

/// The money load's expected state: every request sent, in order.
#[derive(Default, Clone)]
pub struct Expected {
    pub customers: Vec<Uuid>,
    pub sent: Vec<Sent>,
}

#[derive(Default, serde::Serialize)]
pub struct Stats {
    pub card_saves: AtomicU64,
    pub purchases: AtomicU64,
    pub purchases_declined: AtomicU64,
    pub spends: AtomicU64,
    pub spends_refused: AtomicU64,
    pub intents: AtomicU64,
    pub intents_declined: AtomicU64,
    pub sync_refunds: AtomicU64,
    pub sync_refunds_refused: AtomicU64,
    pub queued_refunds: AtomicU64,
    /// Requests sent twice at once, or again after their answer.
    pub sent_twice: AtomicU64,
    pub retries: AtomicU64,
}

/// The status a queued refund ends in.
pub const FINAL: &[&str] = &["succeeded", "failed", "canceled"];

/// A payment of the load's, and what is still free to refund by what we asked.
struct Payment {
    id: String,
    left: i64,
}

pub struct MoneyLoad {
    pub base: String,
    pub token: String,
    pub deliveries: Deliveries,
    pub load_on: Arc<AtomicBool>,
    pub ops_per_sec: f64,
    pub customers: usize,
}

#[derive(Clone)]
struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    deliveries: Deliveries,
}

impl Client {
    /// Sends until a final answer, with the same key each time: a 5xx, no
    /// answer at all, or a 409 that says "not yet" is retried. `None` after
    /// two minutes.
    async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&self.token);
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Ok(answer) = request.send().await {
                let status = answer.status().as_u16();
                if let Ok(body) = answer.json::<Value>().await {
                    let later = matches!(
                        body["error"]["code"].as_str(),
                        Some(
                            "idempotency_key_in_use"
                                | "purchase_in_progress"
                                | "stripe_idempotency_conflict"
                                | "customer_not_synced"
                        )
                    );
                    if status < 500 && !(status == 409 && later) {
                        return Some((status, body));
                    }
                }
            }
            self.deliveries
                .stats()
                .payments
                .retries
                .fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        None
    }

    /// Sends a request under a fresh key and records it; `twice` sends it
    /// a second time at once (both answers are kept).
    async fn request(
        &self,
        route: Route,
        path: &str,
        customer: Option<Uuid>,
        body: Value,
        must_refuse: bool,
        twice: bool,
    ) -> Option<(u16, Value)> {
        let key = format!("chaos-pay-{:?}-{}", route, Uuid::new_v4().simple());
        let index = {
            let mut e = self.deliveries.expected();
            e.payments.sent.push(Sent {
                route,
                key: key.clone(),
                customer,
                body: body.clone(),
                answers: vec![],
                must_refuse,
                polled: None,
            });
            e.payments.sent.len() - 1
        };
        let one = self.send(Method::POST, path, Some(&key), Some(&body));
        let answers = if twice {
            self.deliveries
                .stats()
                .payments
                .sent_twice
                .fetch_add(1, Ordering::Relaxed);
            let (a, b) = tokio::join!(one, self.send(Method::POST, path, Some(&key), Some(&body)));
            vec![a, b]
        } else {
            vec![one.await]
        };
        let answers: Vec<(u16, Value)> = answers.into_iter().flatten().collect();
        let mut e = self.deliveries.expected();
        let sent = &mut e.payments.sent[index];
        sent.answers = answers;
        sent.told().cloned()
    }

    /// Polls a queued refund until its status is final (or three minutes
    /// pass), and records what it saw last.
    async fn poll(self, index: usize, request_id: String) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(180) {
            let path = format!("/api/refund-requests/{request_id}");
            if let Some((200, seen)) = self.send(Method::GET, &path, None, None).await {
                let done = FINAL.contains(&seen["status"].as_str().unwrap_or_default());
                self.deliveries.expected().payments.sent[index].polled = Some(seen);
                if done {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl MoneyLoad {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = Client {
            base: self.base.clone(),
            token: self.token.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            deliveries: self.deliveries.clone(),
        };
        let stats = || &self.deliveries.stats().payments;
        let customers = self.make_customers(&client).await;
        self.deliveries.expected().payments.customers = customers.clone();
        let mut pollers = Vec::new();
        let mut to_refund_now: Vec<Payment> = Vec::new();
        let mut to_queue: Vec<Payment> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / self.ops_per_sec));
        while self.load_on.load(Ordering::Relaxed) && !customers.is_empty() {
            tick.tick().await;
            let (customer, roll, twice) = {
                let mut rng = rand::thread_rng();
                (
                    *customers.choose(&mut rng).expect("customers"),
                    rng.gen_range(0..100),
                    rng.gen_bool(0.15),
                )
            };
            match roll {
                0..=29 => {
                    let package = ["package_1", "package_2", "package_3"]
                        .choose(&mut rand::thread_rng())
                        .expect("packages");
                    stats().purchases.fetch_add(1, Ordering::Relaxed);
                    let path = format!("/api/customers/{customer}/credit-purchases");
                    let body = json!({"package_id": package});
                    let told = client
                        .request(Route::Purchase, &path, Some(customer), body, false, twice)
                        .await;
                    if matches!(told, Some((402, _))) {
                        stats().purchases_declined.fetch_add(1, Ordering::Relaxed);
                    }
                }
                30..=51 => {
                    // One in six asks for more than any balance can hold.
                    let must_refuse = rand::thread_rng().gen_bool(1.0 / 6.0);
                    let credits = if must_refuse {
                        900_000_000
                    } else {
                        rand::thread_rng().gen_range(1..=80)
                    };
                    stats().spends.fetch_add(1, Ordering::Relaxed);
                    let path = format!("/api/customers/{customer}/credit-spends");
                    let body = json!({"credits": credits, "reason": "chaos spend"});
                    let told = client
                        .request(
                            Route::Spend,
                            &path,
                            Some(customer),
                            body,
                            must_refuse,
                            twice,
                        )
                        .await;
                    if matches!(told, Some((409, _))) {
                        stats().spends_refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                52..=67 => {
                    let (amount, declined, with_customer) = {
                        let mut rng = rand::thread_rng();
                        (
                            rng.gen_range(500..=5000),
                            rng.gen_bool(0.1),
                            rng.gen_bool(0.3),
                        )
                    };
                    let mut body = json!({
                        "amount": amount, "currency": "usd", "confirm": true,
                        "payment_method": if declined { "pm_card_chargeDeclined" } else { "pm_card_visa" },
                        "metadata": {"chaos": "payment"},
                    });
                    if with_customer {
                        body["customer_id"] = json!(customer);
                    }
                    stats().intents.fetch_add(1, Ordering::Relaxed);
                    let told = client
                        .request(
                            Route::Intent,
                            "/api/payment-intents",
                            None,
                            body,
                            false,
                            twice,
                        )
                        .await;
                    match told {
                        Some((201, pi)) if pi["status"] == "succeeded" => {
                            let payment = Payment {
                                id: pi["id"].as_str().unwrap_or_default().to_owned(),
                                left: amount,
                            };
                            // Each payment is refunded one way only, so
                            // the queued ones are never refused (a refused
                            // command is dead-lettered).
                            if rand::thread_rng().gen_bool(0.5) {
                                to_refund_now.push(payment);
                            } else {
                                to_queue.push(payment);
                            }
                        }
                        Some((402, _)) => {
                            stats().intents_declined.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                68..=83 => {
                    to_refund_now.retain(|p| p.left > 0);
                    let Some(payment) = to_refund_now.choose_mut(&mut rand::thread_rng()) else {
                        continue;
                    };
                    let amount = {
                        let mut rng = rand::thread_rng();
                        match rng.gen_range(0..10) {
                            // More than is left, on purpose: Stripe's refusal.
                            0..=1 => Some(payment.left + 100),
                            2..=3 => None,
                            _ => Some(rng.gen_range(1..=(payment.left / 2).max(1))),
                        }
                    };
                    let mut body =
                        json!({"payment_intent": payment.id, "reason": "requested_by_customer"});
                    if let Some(amount) = amount {
                        body["amount"] = json!(amount);
                    }
                    stats().sync_refunds.fetch_add(1, Ordering::Relaxed);
                    let told = client
                        .request(Route::SyncRefund, "/api/refunds", None, body, false, twice)
                        .await;
                    match told {
                        Some((200, made)) => {
                            payment.left -= made["refund"]["amount"].as_i64().unwrap_or_default();
                        }
                        _ => {
                            stats().sync_refunds_refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                84..=95 => {
                    to_queue.retain(|p| p.left > 0);
                    let Some(payment) = to_queue.choose_mut(&mut rand::thread_rng()) else {
                        continue;
                    };
                    // The rest, or a part of what is left by what we asked:
                    // never more than Stripe will have left when the worker
                    // gets to it (one payment's commands run in order).
                    let amount = if payment.left < 2 || rand::thread_rng().gen_bool(0.4) {
                        None
                    } else {
                        Some(rand::thread_rng().gen_range(1..=payment.left / 2))
                    };
                    payment.left -= amount.unwrap_or(payment.left);
                    let mut body =
                        json!({"payment_intent": payment.id, "reason": "requested_by_customer"});
                    if let Some(amount) = amount {
                        body["amount"] = json!(amount);
                    }
                    stats().queued_refunds.fetch_add(1, Ordering::Relaxed);
                    let told = client
                        .request(
                            Route::QueuedRefund,
                            "/api/refund-requests",
                            None,
                            body,
                            false,
                            twice,
                        )
                        .await;
                    if let Some((202, queued)) = told {
                        let index = self.deliveries.expected().payments.sent.len() - 1;
                        let id = queued["request_id"].as_str().unwrap_or_default().to_owned();
                        pollers.push(tokio::spawn(client.clone().poll(index, id)));
                    }
                }
                _ => {
                    // A new default card: one in four declines.
                    let pm = if rand::thread_rng().gen_bool(0.25) {
                        "pm_card_chargeCustomerFail"
                    } else {
                        "pm_card_visa"
                    };
                    save_card(&client, customer, pm, twice).await;
                }
            }
        }
        for poller in pollers {
            poller.await?;
        }
        Ok(())
    }

    /// Customers of the money load's own (apart from those the customer
    /// load renames), each with a saved card once Stripe has it; the first
    /// of every four saves a card that Stripe declines.
    async fn make_customers(&self, client: &Client) -> Vec<Uuid> {
        let mut made = Vec::new();
        let mut n = 0;
        while made.len() < self.customers && n < self.customers * 20 {
            n += 1;
            self.deliveries.expected().api_writes_sent += 1;
            let body =
                json!({"name": format!("pay{n}"), "email": format!("chaos-pay-{n}@example.com")});
            let answer = client
                .http
                .post(format!("{}/api/customers", client.base))
                .bearer_auth(&client.token)
                .json(&body)
                .send()
                .await;
            match answer {
                Ok(a) if a.status() == 201 => {
                    let created: Value = a.json().await.unwrap_or_default();
                    if let Some(id) = created["id"].as_str().and_then(|id| id.parse().ok()) {
                        made.push(id);
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let mut ready = Vec::new();
        for (i, customer) in made.into_iter().enumerate() {
            let pm = if i % 4 == 0 {
                "pm_card_chargeCustomerFail"
            } else {
                "pm_card_visa"
            };
            if save_card(client, customer, pm, false).await {
                ready.push(customer);
            }
        }
        ready
    }
}

/// Saves `pm` as the customer's default card; whether serve said it did.
async fn save_card(client: &Client, customer: Uuid, pm: &str, twice: bool) -> bool {
    client
        .deliveries
        .stats()
        .payments
        .card_saves
        .fetch_add(1, Ordering::Relaxed);
    let path = format!("/api/customers/{customer}/payment-methods");
    let body = json!({ "payment_method": pm });
    let told = client
        .request(Route::CardSave, &path, Some(customer), body, false, twice)
        .await;
    matches!(told, Some((200, _)))
}

/// The money load's rows in the soak's table.
pub fn stats_rows(s: &Stats) -> Vec<(String, String)> {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    vec![
        (
            "credit purchases (declined at Stripe)".into(),
            format!("{} ({})", n(&s.purchases), n(&s.purchases_declined)),
        ),
        (
            "credit spends (refused: balance short)".into(),
            format!("{} ({})", n(&s.spends), n(&s.spends_refused)),
        ),
        (
            "payment intents confirmed (declined)".into(),
            format!("{} ({})", n(&s.intents), n(&s.intents_declined)),
        ),
        (
            "refunds sync (refused) / queued".into(),
            format!(
                "{} ({}) / {}",
                n(&s.sync_refunds),
                n(&s.sync_refunds_refused),
                n(&s.queued_refunds)
            ),
        ),
        (
            "cards saved; money requests sent twice; retries".into(),
            format!(
                "{}; {}; {}",
                n(&s.card_saves),
                n(&s.sent_twice),
                n(&s.retries)
            ),
        ),
    ]
}
