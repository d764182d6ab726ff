//! The money check: the credit ledger against what Stripe charged, the
//! refunds Stripe made against the requests that asked for them, and both
//! against what each client was told (`payments.rs`). Stripe's side is the
//! fake's own record, not the mirror, so a write the engine never heard of
//! still counts.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use serde_json::Value;
use stripe_sync::apps::payments::command_worker;
use stripe_sync::http::idempotency;

use crate::payments::{is_final, Expected, Route, Sent, FINAL};
use crate::payments_stripe::Money;

/// What the money check found; every count but the totals must be 0.
#[derive(Default, Debug, serde::Serialize)]
pub struct PaymentsVerdict {
    pub purchases_checked: usize,
    pub purchases_credited_twice: usize,
    pub intents_crediting_two_purchases: usize,
    pub purchases_charged_twice: usize,
    pub purchases_charged_not_credited: usize,
    pub purchases_credited_not_charged: usize,
    pub balances_checked: usize,
    pub balances_off_ledger: usize,
    pub balances_negative: usize,
    pub spends_checked: usize,
    pub spends_divergent: usize,
    pub refunds_at_stripe: usize,
    pub refunds_done_twice: usize,
    pub charges_over_refunded: usize,
    pub queued_refunds_checked: usize,
    pub queued_refunds_not_final: usize,
    pub queued_refunds_diverging: usize,
    pub answers_contradicting_stripe: usize,
    pub answers_differing_for_one_key: usize,
    pub requests_unanswered: usize,
    pub stripe_payment_writes: u64,
    pub stripe_payment_writes_unexplained: usize,
    #[serde(skip)]
    pub examples: Vec<String>,
}

impl PaymentsVerdict {
    pub fn failures(&self) -> usize {
        self.purchases_credited_twice
            + self.intents_crediting_two_purchases
            + self.purchases_charged_twice
            + self.purchases_charged_not_credited
            + self.purchases_credited_not_charged
            + self.balances_off_ledger
            + self.balances_negative
            + self.spends_divergent
            + self.refunds_done_twice
            + self.charges_over_refunded
            + self.queued_refunds_not_final
            + self.queued_refunds_diverging
            + self.answers_contradicting_stripe
            + self.answers_differing_for_one_key
            + self.requests_unanswered
            + self.stripe_payment_writes_unexplained
    }

    fn note(&mut self, finding: String) {
        if self.examples.len() < 10 {
            self.examples.push(finding);
        }
    }

    /// The table's rows.
    pub fn rows(&self) -> Vec<(String, String)> {
        [
            (
                "purchases checked (ledger, Stripe, answers)",
                self.purchases_checked,
            ),
            ("PURCHASES CREDITED TWICE", self.purchases_credited_twice),
            (
                "payment intents crediting two purchases",
                self.intents_crediting_two_purchases,
            ),
            (
                "purchases charged twice at Stripe",
                self.purchases_charged_twice,
            ),
            (
                "purchases charged, not credited",
                self.purchases_charged_not_credited,
            ),
            (
                "purchases credited, not charged (declined)",
                self.purchases_credited_not_charged,
            ),
            ("credit balances checked", self.balances_checked),
            (
                "balances differing from their ledger",
                self.balances_off_ledger,
            ),
            ("balances below zero", self.balances_negative),
            ("spends checked", self.spends_checked),
            ("spends differing from their answer", self.spends_divergent),
            ("refunds made at Stripe", self.refunds_at_stripe),
            ("REFUNDS DONE TWICE at Stripe", self.refunds_done_twice),
            (
                "charges refunded beyond their amount",
                self.charges_over_refunded,
            ),
            ("queued refunds checked", self.queued_refunds_checked),
            ("queued refunds not final", self.queued_refunds_not_final),
            (
                "queued refunds differing from Stripe",
                self.queued_refunds_diverging,
            ),
            (
                "money answers contradicting Stripe",
                self.answers_contradicting_stripe,
            ),
            (
                "one key answered two ways",
                self.answers_differing_for_one_key,
            ),
            (
                "money requests unanswered in 2 min",
                self.requests_unanswered,
            ),
            ("Stripe payment writes", self.stripe_payment_writes as usize),
            (
                "Stripe payment writes no request explains",
                self.stripe_payment_writes_unexplained,
            ),
        ]
        .into_iter()
        .map(|(label, n)| (label.to_owned(), n.to_string()))
        .collect()
    }
}

#[derive(QueryableByName)]
struct PurchaseRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    request_key: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    payment_intent: Option<String>,
    #[diesel(sql_type = BigInt)]
    credits: i64,
    #[diesel(sql_type = BigInt)]
    entries: i64,
    #[diesel(sql_type = BigInt)]
    credited: i64,
}

#[derive(QueryableByName)]
struct Pair {
    #[diesel(sql_type = Text)]
    a: String,
    #[diesel(sql_type = Nullable<Text>)]
    b: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    m: Option<i64>,
}

fn final_answers(sent: &[Sent], route: Route) -> impl Iterator<Item = (&Sent, u16, &Value)> {
    sent.iter()
        .filter(move |s| s.route == route)
        .filter_map(|s| s.told().map(|(status, body)| (s, *status, body)))
}

/// The Stripe key serve sends for a client's key.
fn stripe_key(s: &Sent) -> String {
    idempotency::stripe_key(&s.key)
}

pub fn verify(
    conn: &mut PgConnection,
    expected: &Expected,
    money: &Money,
) -> anyhow::Result<PaymentsVerdict> {
    let mut v = PaymentsVerdict::default();
    check_purchases(conn, expected, money, &mut v)?;
    check_balances_and_spends(conn, expected, &mut v)?;
    check_refunds(conn, expected, money, &mut v)?;
    check_answers_and_writes(expected, money, &mut v);
    Ok(v)
}

/// Each purchase is credited once if Stripe charged it, never if it did
/// not; no payment intent credits two purchases; each answer agrees.
fn check_purchases(
    conn: &mut PgConnection,
    expected: &Expected,
    money: &Money,
    v: &mut PaymentsVerdict,
) -> anyhow::Result<()> {
    let purchases = diesel::sql_query(
        "SELECT p.id::text AS id, p.request_key, p.status, p.payment_intent, p.credits,
             (SELECT count(*) FROM credits.ledger l WHERE l.purchase_id = p.id AND l.kind = 'purchase') AS entries,
             (SELECT coalesce(sum(l.credits), 0)::bigint FROM credits.ledger l
              WHERE l.purchase_id = p.id AND l.kind = 'purchase') AS credited
         FROM credits.purchases p",
    )
    .load::<PurchaseRow>(conn)?;
    // Stripe's intents by the purchase their metadata names.
    let mut charged: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut attempted: HashSet<&str> = HashSet::new();
    for intent in money.intents.values() {
        if let Some(p) = intent["metadata"]["stripe_sync_purchase"].as_str() {
            attempted.insert(p);
            if intent["status"] == "succeeded" {
                charged
                    .entry(p)
                    .or_default()
                    .push(intent["id"].as_str().unwrap_or_default());
            }
        }
    }
    let known: HashSet<&str> = purchases.iter().map(|p| p.id.as_str()).collect();
    for (p, intents) in &charged {
        if !known.contains(p) {
            v.purchases_charged_not_credited += 1;
            v.note(format!(
                "Stripe charged {intents:?} for purchase {p}, which we do not have"
            ));
        }
    }
    for p in &purchases {
        v.purchases_checked += 1;
        let paid = charged.get(p.id.as_str()).cloned().unwrap_or_default();
        if p.entries > 1 {
            v.purchases_credited_twice += 1;
            v.note(format!(
                "purchase {} has {} credit entries",
                p.id, p.entries
            ));
        }
        if paid.len() > 1 {
            v.purchases_charged_twice += 1;
            v.note(format!("purchase {} was charged by {paid:?}", p.id));
        }
        match paid.first() {
            Some(pi) => {
                let credited_for_it = p.payment_intent.as_deref() == Some(*pi)
                    && p.status == "succeeded"
                    && p.entries >= 1
                    && p.credited == p.credits * p.entries;
                if !credited_for_it {
                    v.purchases_charged_not_credited += 1;
                    v.note(format!(
                        "purchase {} charged by {pi}: status {}, intent {:?}, {} entries",
                        p.id, p.status, p.payment_intent, p.entries
                    ));
                }
            }
            None if p.entries > 0 || p.status == "succeeded" => {
                v.purchases_credited_not_charged += 1;
                v.note(format!(
                    "purchase {} is credited ({}), but Stripe charged nothing for it (attempted: {})",
                    p.id,
                    p.status,
                    attempted.contains(p.id.as_str())
                ));
            }
            None => {}
        }
    }
    let shared = diesel::sql_query(
        "SELECT p.payment_intent AS a, NULL::text AS b, count(DISTINCT l.purchase_id) AS n, NULL::bigint AS m
         FROM credits.ledger l JOIN credits.purchases p ON p.id = l.purchase_id
         WHERE l.kind = 'purchase' AND p.payment_intent IS NOT NULL
         GROUP BY p.payment_intent HAVING count(DISTINCT l.purchase_id) > 1",
    )
    .load::<Pair>(conn)?;
    v.intents_crediting_two_purchases = shared.len();
    for s in shared.iter().take(3) {
        v.note(format!("{} credits {:?} purchases", s.a, s.n));
    }
    // What each purchase request was told, against the purchase.
    let by_key: HashMap<&str, &PurchaseRow> = purchases
        .iter()
        .map(|p| (p.request_key.as_str(), p))
        .collect();
    for (sent, status, body) in final_answers(&expected.sent, Route::Purchase) {
        let key = stripe_key(sent);
        let row = by_key.get(key.as_str());
        let paid = row.map_or(0, |p| charged.get(p.id.as_str()).map_or(0, Vec::len));
        let agrees = match (status, row) {
            (201, Some(p)) => {
                body["purchase_id"] == p.id.as_str() && p.status == "succeeded" && paid == 1
            }
            (402, Some(p)) => p.status == "failed" && paid == 0 && p.entries == 0,
            _ => false,
        };
        if !agrees {
            v.answers_contradicting_stripe += 1;
            v.note(format!(
                "purchase {} was told {status} {body}; recorded: {:?}, charged {paid} times",
                sent.key,
                row.map(|p| (&p.status, p.entries))
            ));
        }
    }
    Ok(())
}

/// Every balance is the sum of its ledger and not below zero (nor was
/// any answered); every spend did what its answer said, and no other.
fn check_balances_and_spends(
    conn: &mut PgConnection,
    expected: &Expected,
    v: &mut PaymentsVerdict,
) -> anyhow::Result<()> {
    let balances = diesel::sql_query(
        "SELECT coalesce(b.customer_id, l.customer_id)::text AS a, NULL::text AS b,
                b.balance AS n, coalesce(l.total, 0)::bigint AS m
         FROM credits.balances b FULL JOIN
              (SELECT customer_id, sum(credits) AS total FROM credits.ledger GROUP BY customer_id) l
              ON l.customer_id = b.customer_id",
    )
    .load::<Pair>(conn)?;
    for b in &balances {
        v.balances_checked += 1;
        let (balance, ledger) = (b.n.unwrap_or(0), b.m.unwrap_or(0));
        if balance != ledger {
            v.balances_off_ledger += 1;
            v.note(format!(
                "customer {}: balance {balance}, ledger sums to {ledger}",
                b.a
            ));
        }
        if balance < 0 {
            v.balances_negative += 1;
            v.note(format!("customer {}: balance {balance}", b.a));
        }
    }
    for sent in &expected.sent {
        for (status, body) in &sent.answers {
            if (200..300).contains(status) && body["balance"].as_i64().is_some_and(|b| b < 0) {
                v.balances_negative += 1;
                v.note(format!(
                    "{} was answered a balance of {}",
                    sent.key, body["balance"]
                ));
            }
        }
    }
    let spends: HashMap<String, i64> = diesel::sql_query(
        "SELECT source AS a, NULL::text AS b, credits AS n, NULL::bigint AS m
         FROM credits.ledger WHERE kind = 'spend'",
    )
    .load::<Pair>(conn)?
    .into_iter()
    .map(|r| (r.a, r.n.unwrap_or(0)))
    .collect();
    let mut ours = HashSet::new();
    for sent in expected.sent.iter().filter(|s| s.route == Route::Spend) {
        let source = format!(
            "spend:{}:{}",
            sent.customer.map(|c| c.to_string()).unwrap_or_default(),
            sent.key
        );
        let posted = spends.get(&source).copied();
        ours.insert(source);
        let Some((status, _)) = sent.told() else {
            continue;
        };
        v.spends_checked += 1;
        let asked = sent.body["credits"].as_i64().unwrap_or_default();
        let agrees = match status {
            201 => posted == Some(-asked) && !sent.must_refuse,
            409 => posted.is_none(),
            _ => false,
        };
        if !agrees {
            v.spends_divergent += 1;
            v.note(format!(
                "spend {} of {asked} was told {status}; the ledger holds {posted:?}",
                sent.key
            ));
        }
    }
    for source in spends.keys().filter(|s| !ours.contains(*s)) {
        v.spends_divergent += 1;
        v.note(format!(
            "the ledger holds a spend no request made: {source}"
        ));
    }
    Ok(())
}

/// Each refund at Stripe was made once, for one request of ours; no charge
/// is refunded beyond its amount; each queued request ended as its refund
/// did at Stripe, and the client saw it end so.
fn check_refunds(
    conn: &mut PgConnection,
    expected: &Expected,
    money: &Money,
    v: &mut PaymentsVerdict,
) -> anyhow::Result<()> {
    let mut by_mark: HashMap<String, Vec<&Value>> = HashMap::new();
    let mut per_charge: HashMap<&str, i64> = HashMap::new();
    for refund in money.refunds.values() {
        v.refunds_at_stripe += 1;
        let meta = &refund["metadata"];
        let mark = meta[intents_key()]
            .as_str()
            .or(meta[command_worker::REQUEST_METADATA].as_str())
            .unwrap_or_default();
        by_mark.entry(mark.to_owned()).or_default().push(refund);
        if refund["status"] != "failed" && refund["status"] != "canceled" {
            *per_charge
                .entry(refund["charge"].as_str().unwrap_or_default())
                .or_default() += refund["amount"].as_i64().unwrap_or_default();
        }
    }
    for (mark, refunds) in &by_mark {
        if refunds.len() > 1 {
            v.refunds_done_twice += 1;
            v.note(format!("{} refunds at Stripe for {mark:?}", refunds.len()));
        }
    }
    for (charge, refunded) in per_charge {
        let amount = money
            .charges
            .get(charge)
            .and_then(|c| c["amount"].as_i64())
            .unwrap_or(0);
        if refunded > amount {
            v.charges_over_refunded += 1;
            v.note(format!("{charge} of {amount} was refunded {refunded}"));
        }
    }
    let mut marks_ours: HashSet<String> = HashSet::new();
    for (sent, status, body) in final_answers(&expected.sent, Route::SyncRefund) {
        let mark = stripe_key(sent);
        let at_stripe = by_mark.get(&mark).and_then(|r| r.first());
        let agrees = match (status, at_stripe) {
            (200, Some(r)) => {
                r["id"] == body["refund"]["id"] && r["amount"] == body["refund"]["amount"]
            }
            (400 | 404, None) => true,
            _ => false,
        };
        if !agrees {
            v.answers_contradicting_stripe += 1;
            v.note(format!(
                "refund {} was told {status} {body}; Stripe has {at_stripe:?}",
                sent.key
            ));
        }
    }
    for sent in expected
        .sent
        .iter()
        .filter(|s| s.route == Route::SyncRefund)
    {
        marks_ours.insert(stripe_key(sent));
    }
    let requests: HashMap<String, (String, Option<String>, Option<i64>)> = diesel::sql_query(
        "SELECT id AS a, status || ' ' || coalesce(refund_id, '') AS b, amount AS n, NULL::bigint AS m
         FROM payments.refund_requests",
    )
    .load::<Pair>(conn)?
    .into_iter()
    .map(|r| {
        let (status, refund) = r.b.as_deref().unwrap_or_default().split_once(' ').unwrap_or_default();
        let refund = (!refund.is_empty()).then(|| refund.to_owned());
        (r.a, (status.to_owned(), refund, r.n))
    })
    .collect();
    for sent in expected
        .sent
        .iter()
        .filter(|s| s.route == Route::QueuedRefund)
    {
        let id = idempotency::derived_request_id(&sent.key);
        marks_ours.insert(id.clone());
        if !matches!(sent.told(), Some((202, _))) {
            continue;
        }
        v.queued_refunds_checked += 1;
        let seen = sent
            .polled
            .as_ref()
            .and_then(|p| p["status"].as_str())
            .unwrap_or("never seen");
        let Some((status, refund_id, amount)) = requests.get(&id) else {
            v.queued_refunds_not_final += 1;
            v.note(format!(
                "queued refund {id} is not in payments.refund_requests"
            ));
            continue;
        };
        if !FINAL.contains(&status.as_str()) || !FINAL.contains(&seen) {
            v.queued_refunds_not_final += 1;
            v.note(format!(
                "queued refund {id}: {status}, the client last saw {seen}"
            ));
            continue;
        }
        let at_stripe = by_mark.get(&id).and_then(|r| r.first());
        let agrees = match (refund_id, at_stripe) {
            (Some(refund_id), Some(r)) => {
                r["id"] == refund_id.as_str()
                    && Some(r["amount"].as_i64().unwrap_or_default()) == *amount
                    && r["status"] == status.as_str()
            }
            // Refused before Stripe made anything.
            (None, None) => status == "failed",
            _ => false,
        } && seen == status;
        if !agrees {
            v.queued_refunds_diverging += 1;
            v.note(format!(
                "queued refund {id}: {status} {refund_id:?} {amount:?} (client saw {seen}); Stripe has {at_stripe:?}"
            ));
        }
    }
    for id in requests.keys().filter(|id| !marks_ours.contains(*id)) {
        v.queued_refunds_diverging += 1;
        v.note(format!("refund request {id} was not queued by the load"));
    }
    for (mark, refunds) in &by_mark {
        if !marks_ours.contains(mark) {
            v.stripe_payment_writes_unexplained += refunds.len();
            v.note(format!(
                "Stripe holds refunds no request of ours asked for: {mark:?}"
            ));
        }
    }
    Ok(())
}

fn intents_key() -> &'static str {
    stripe_sync::apps::payments::intents::KEY_METADATA
}

/// Every answer agrees with itself and with what Stripe holds under its
/// key; every write Stripe did was one request of ours, done once.
fn check_answers_and_writes(expected: &Expected, money: &Money, v: &mut PaymentsVerdict) {
    let mut ours: HashSet<String> = HashSet::new();
    for sent in &expected.sent {
        match sent.route {
            Route::CardSave => {
                ours.insert(format!("{}-attach", stripe_key(sent)));
                ours.insert(format!("{}-default", stripe_key(sent)));
            }
            Route::Purchase | Route::Intent | Route::SyncRefund => {
                ours.insert(stripe_key(sent));
            }
            Route::QueuedRefund => {
                let id = idempotency::derived_request_id(&sent.key);
                ours.insert(command_worker::idempotency_key(&id));
            }
            Route::Spend => {}
        }
        if sent.answers.is_empty() {
            v.requests_unanswered += 1;
            v.note(format!("{:?} {} got no answer", sent.route, sent.key));
        }
        let replayed: Vec<&(u16, Value)> = sent
            .answers
            .iter()
            .filter(|a| is_final(sent.route, a))
            .collect();
        if replayed.windows(2).any(|w| w[0] != w[1]) {
            v.answers_differing_for_one_key += 1;
            v.note(format!("{} was answered {:?}", sent.key, sent.answers));
        }
    }
    for (sent, status, body) in final_answers(&expected.sent, Route::Intent) {
        let made = money
            .made_under
            .get(&stripe_key(sent))
            .and_then(|id| money.intents.get(id));
        let agrees = match (status, made) {
            (201, Some(pi)) => {
                pi["id"] == body["id"]
                    && pi["amount"] == body["amount"]
                    && pi["status"] == body["status"]
            }
            (402, Some(pi)) => pi["status"] == "requires_payment_method",
            _ => false,
        };
        if !agrees {
            v.answers_contradicting_stripe += 1;
            v.note(format!(
                "payment intent {} was told {status} {body}; Stripe made {made:?}",
                sent.key
            ));
        }
    }
    v.stripe_payment_writes =
        money.performed.values().map(|n| u64::from(*n)).sum::<u64>() + money.keyless_writes;
    v.stripe_payment_writes_unexplained += money.keyless_writes as usize;
    for (key, n) in &money.performed {
        if !ours.contains(key) || *n != 1 {
            v.stripe_payment_writes_unexplained += 1;
            v.note(format!(
                "Stripe did {n} write(s) under {key}, which no request of ours explains"
            ));
        }
    }
}
