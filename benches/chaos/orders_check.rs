//! The paid-orders check: emails counted at the SMTP server against the
//! sessions the load made and the notifier's rows, and the export's
//! acknowledged batches against the mirror's paid sessions. Its self-test
//! plants one defect of each kind, each on its own, and reports the kinds
//! it missed.
//!
//! One duplicate is allowed by design, and counted on its own row: the
//! engine cannot record an outcome it never heard, so a notifier killed
//! between the server's acceptance and its record of it, or a server
//! killed after keeping a message and before answering it (an unknown
//! outcome, tried again after `NOTIFY_UNKNOWN_OUTCOME_WAIT_MS`), sends that
//! email again, with the same `Message-ID`. A second copy counts as that
//! only when its first copy reached the server at most 3 s before such a
//! kill (or 0.5 s after: clocks of the same machine, a file written
//! late); any other second copy, and any third, is a failure. Pauses and
//! Postgres restarts can not explain one: the soak's lease outlasts them
//! (see `orders::LEASE_MS`).

use std::collections::{HashMap, HashSet};
use std::time::{Instant, UNIX_EPOCH};

use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::check::Verdict;
use stripe_sync::ops::dlq::DeadLetter;

use crate::orders::{Orders, Received, SessionKind};
use crate::orders_export::{ExportLog, Receipt};

/// Everything the check reads besides the database.
#[derive(Clone)]
pub struct OrdersRecord {
    pub sessions: HashMap<String, SessionKind>,
    /// Unix seconds of each kill of a notifier or stop of the server.
    pub disruptions: Vec<(f64, String)>,
    pub refusals_planted: usize,
    pub received: Vec<Received>,
    pub export: ExportLog,
    /// Event ids of the refused emails found on the notifier's dead-letter
    /// topic.
    pub refused_dead_letters: Vec<String>,
}

/// What the orders load and its faults did, for the report.
#[derive(Default, Debug, Clone, serde::Serialize)]
pub struct OrdersLoad {
    pub sessions: usize,
    pub export_polls: u64,
    pub export_half_read_drops: u64,
    pub export_redeliveries: u64,
    pub export_in_flight_answers: u64,
    pub export_second_poller_stretches: u64,
    pub smtp_unplanned_restarts: u64,
}

/// What the check found; the counts marked so must be 0.
#[derive(Default, Debug, Clone, serde::Serialize)]
pub struct OrdersVerdict {
    pub load: OrdersLoad,
    /// From the general drain's end until no email was pending and the
    /// export had every paid session acknowledged.
    pub drain_secs: f64,
    pub paid_orders: usize,
    pub sessions_not_to_email: usize,
    pub emails_received: usize,
    /// Must be 0.
    pub emails_sent_twice: usize,
    pub emails_sent_twice_by_design: usize,
    /// Must be 0.
    pub orders_not_emailed: usize,
    pub orders_failed_for_good: usize,
    /// Must be 0: failed with another reason than the refusal the soak
    /// planted, or more failures than refusals.
    pub failures_unexplained: usize,
    pub refused_dead_lettered: usize,
    /// Must be 0.
    pub emails_unwanted: usize,
    /// Must be 0: a row not final, or its status not what the server got.
    pub notifications_disagreeing: usize,
    pub export_sessions_owed: usize,
    pub export_batches_acknowledged: usize,
    /// Must be 0.
    pub export_sessions_lost: usize,
    /// Must be 0.
    pub export_sessions_in_two_batches: usize,
    /// Must be 0.
    pub export_sessions_after_ack: usize,
    /// Must be 0.
    pub export_sessions_not_paid: usize,
    /// Must be 0.
    pub export_errors: usize,
}

impl OrdersVerdict {
    pub fn failures(&self) -> usize {
        self.emails_sent_twice
            + self.orders_not_emailed
            + self.failures_unexplained
            + self.emails_unwanted
            + self.notifications_disagreeing
            + self.export_sessions_lost
            + self.export_sessions_in_two_batches
            + self.export_sessions_after_ack
            + self.export_sessions_not_paid
            + self.export_errors
    }

    /// The report's rows.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let n = |v: usize| v.to_string();
        let l = &self.load;
        vec![
            (
                "checkout sessions generated (paid, other product, unpaid)",
                n(l.sessions),
            ),
            (
                "orders drain (emails final, export acknowledged)",
                format!("{:.1} s", self.drain_secs),
            ),
            (
                "export polls / dropped half-read / redelivered / in flight",
                format!(
                    "{} / {} / {} / {}",
                    l.export_polls,
                    l.export_half_read_drops,
                    l.export_redeliveries,
                    l.export_in_flight_answers
                ),
            ),
            (
                "export: stretches with a second poller of the name",
                l.export_second_poller_stretches.to_string(),
            ),
            (
                "SMTP server exits it did not cause (restarted)",
                l.smtp_unplanned_restarts.to_string(),
            ),
            (
                "paid orders to email (+ sessions not to)",
                format!("{} (+ {})", self.paid_orders, self.sessions_not_to_email),
            ),
            (
                "emails received at the SMTP server",
                n(self.emails_received),
            ),
            ("DUPLICATED: an email sent twice", n(self.emails_sent_twice)),
            (
                "  sent twice by design (kill between 250 and record)",
                n(self.emails_sent_twice_by_design),
            ),
            ("paid orders never emailed", n(self.orders_not_emailed)),
            (
                "orders failed for good (planted 550, dead-lettered)",
                format!(
                    "{} ({})",
                    self.orders_failed_for_good, self.refused_dead_lettered
                ),
            ),
            (
                "failures without a planted refusal",
                n(self.failures_unexplained),
            ),
            (
                "emails for unpaid or other-product sessions",
                n(self.emails_unwanted),
            ),
            (
                "notification rows not final or not as the server got",
                n(self.notifications_disagreeing),
            ),
            (
                "export: paid sessions owed / batches acknowledged",
                format!(
                    "{} / {}",
                    self.export_sessions_owed, self.export_batches_acknowledged
                ),
            ),
            (
                "export: sessions in no acknowledged batch",
                n(self.export_sessions_lost),
            ),
            (
                "export: sessions in two acknowledged batches",
                n(self.export_sessions_in_two_batches),
            ),
            (
                "export: sessions offered after their ack",
                n(self.export_sessions_after_ack),
            ),
            (
                "export: sessions exported but not paid",
                n(self.export_sessions_not_paid),
            ),
            ("export: refused polls or acks", n(self.export_errors)),
        ]
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    session_id: String,
    #[diesel(sql_type = Text)]
    message_id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    last_error: String,
    #[diesel(sql_type = Text)]
    event_id: String,
}

fn rows(conn: &mut PgConnection) -> QueryResult<Vec<Row>> {
    diesel::sql_query(
        "SELECT session_id, message_id, status, coalesce(last_error, '') AS last_error, event_id
         FROM orders.notifications",
    )
    .load(conn)
}

/// Events of the notifications that failed for good: their dead letters
/// are this check's, not strays.
pub fn failed_event_ids(conn: &mut PgConnection) -> anyhow::Result<HashSet<String>> {
    Ok(rows(conn)?
        .into_iter()
        .filter(|r| r.status == "failed")
        .map(|r| r.event_id)
        .collect())
}

/// The `Message-ID` the notifier gives a session's email.
pub fn message_id_of(session: &str) -> String {
    stripe_sync::apps::orders::email::message_id(
        &stripe_sync::stripe::AccountId::PLATFORM,
        &format!("checkout_session:{session}"),
        "shop.example",
    )
}

fn note(examples: &mut Vec<String>, finding: String) {
    if examples.len() < 40 {
        examples.push(finding);
    }
}

/// Checks the paid-orders path; findings go to `examples`.
pub fn verify(
    conn: &mut PgConnection,
    r: &OrdersRecord,
    examples: &mut Vec<String>,
) -> anyhow::Result<OrdersVerdict> {
    let mut v = OrdersVerdict {
        emails_received: r.received.len(),
        refused_dead_lettered: r.refused_dead_letters.len(),
        ..OrdersVerdict::default()
    };
    let mut by_message: HashMap<&str, Vec<&Received>> = HashMap::new();
    for m in &r.received {
        by_message.entry(&m.message_id).or_default().push(m);
    }
    let rows = rows(conn)?;
    let row_of: HashMap<&str, &Row> = rows
        .iter()
        .map(|row| (row.message_id.as_str(), row))
        .collect();
    let mut failed = 0;
    for row in &rows {
        let copies = by_message.get(row.message_id.as_str()).map_or(0, Vec::len);
        if r.sessions.get(&row.session_id) != Some(&SessionKind::Paid) {
            v.notifications_disagreeing += 1;
            note(
                examples,
                format!(
                    "a notification for {}, which is not a paid order of the product",
                    row.session_id
                ),
            );
            continue;
        }
        match row.status.as_str() {
            "sent" if copies == 0 => {
                v.notifications_disagreeing += 1;
                note(
                    examples,
                    format!(
                        "{} is marked sent; the SMTP server has no email for it",
                        row.session_id
                    ),
                );
            }
            "sent" => {}
            "failed" => {
                failed += 1;
                if !row.last_error.contains("550") {
                    v.failures_unexplained += 1;
                    note(
                        examples,
                        format!(
                            "{} failed for good without a planted refusal: {:?}",
                            row.session_id, row.last_error
                        ),
                    );
                }
                if copies > 0 {
                    v.notifications_disagreeing += 1;
                    note(
                        examples,
                        format!(
                            "{} is marked failed; the SMTP server has it",
                            row.session_id
                        ),
                    );
                }
            }
            other => {
                v.notifications_disagreeing += 1;
                note(
                    examples,
                    format!("{} is still {other}: {:?}", row.session_id, row.last_error),
                );
            }
        }
    }
    v.orders_failed_for_good = failed;
    if failed > r.refusals_planted {
        v.failures_unexplained += failed - r.refusals_planted;
        note(
            examples,
            format!(
                "{failed} notifications failed for good; {} refusals were planted",
                r.refusals_planted
            ),
        );
    }
    for (message_id, copies) in &by_message {
        let session = &copies[0].session_id;
        if r.sessions.get(session) != Some(&SessionKind::Paid)
            || *message_id != message_id_of(session)
        {
            v.emails_unwanted += 1;
            note(examples, format!("an email {message_id} about {session}, which is not a paid order of the product"));
            continue;
        }
        if !row_of.contains_key(message_id) {
            v.notifications_disagreeing += 1;
            note(
                examples,
                format!("an email about {session} that no notification row explains"),
            );
        }
        if copies.len() > 1 {
            let first = copies
                .iter()
                .map(|m| m.received_at)
                .fold(f64::INFINITY, f64::min);
            let cause = r
                .disruptions
                .iter()
                .find(|(at, _)| first >= at - 3.0 && first <= at + 0.5);
            match cause {
                Some((at, what)) if copies.len() == 2 => {
                    v.emails_sent_twice_by_design += 1;
                    note(examples, format!("(by design) {session} emailed twice: its first copy was accepted {:.2} s before {what}", at - first));
                }
                _ => {
                    v.emails_sent_twice += 1;
                    note(
                        examples,
                        format!(
                            "{session} was emailed {} times ({message_id})",
                            copies.len()
                        ),
                    );
                }
            }
        }
    }
    for (session, kind) in &r.sessions {
        if *kind != SessionKind::Paid {
            v.sessions_not_to_email += 1;
            continue;
        }
        v.paid_orders += 1;
        let id = message_id_of(session);
        let emailed = by_message.contains_key(id.as_str());
        let failed = row_of
            .get(id.as_str())
            .is_some_and(|row| row.status == "failed");
        if !emailed && !failed {
            v.orders_not_emailed += 1;
            note(examples, format!("paid order {session} was never emailed"));
        }
    }
    check_export(conn, &r.export, &mut v, examples)?;
    Ok(v)
}

/// The acknowledged batches hold every paid session of the mirror once;
/// none comes again once its batch is acknowledged.
fn check_export(
    conn: &mut PgConnection,
    log: &ExportLog,
    v: &mut OrdersVerdict,
    examples: &mut Vec<String>,
) -> anyhow::Result<()> {
    let owed: HashSet<String> = crate::orders::paid_in_mirror(conn)?.into_iter().collect();
    v.export_sessions_owed = owed.len();
    let mut acked_at: HashMap<&str, Instant> = HashMap::new();
    for a in &log.acks {
        let at = acked_at.entry(&a.batch).or_insert(a.answered_at);
        *at = (*at).min(a.answered_at);
    }
    v.export_batches_acknowledged = acked_at.len();
    let mut batch_sessions: HashMap<&str, &Receipt> = HashMap::new();
    for receipt in &log.receipts {
        batch_sessions.entry(&receipt.batch).or_insert(receipt);
    }
    let mut delivered: HashMap<&str, Vec<&str>> = HashMap::new();
    for batch in acked_at.keys() {
        for s in batch_sessions.get(batch).map_or(&[][..], |r| &r.sessions) {
            delivered.entry(s).or_default().push(batch);
        }
    }
    for s in &owed {
        if !delivered.contains_key(s.as_str()) {
            v.export_sessions_lost += 1;
            note(
                examples,
                format!("export: paid session {s} is in no acknowledged batch"),
            );
        }
    }
    for (s, batches) in &delivered {
        if batches.len() > 1 {
            v.export_sessions_in_two_batches += 1;
            note(
                examples,
                format!("export: {s} is in {} acknowledged batches", batches.len()),
            );
        }
        if !owed.contains(*s) {
            v.export_sessions_not_paid += 1;
            note(
                examples,
                format!("export: {s} was exported, and the mirror does not hold it paid"),
            );
        }
    }
    let mut again: HashSet<(&str, &str)> = HashSet::new();
    for (batch, at) in &acked_at {
        let Some(acked) = batch_sessions.get(batch) else {
            continue;
        };
        let acked: HashSet<&String> = acked.sessions.iter().collect();
        for later in log.receipts.iter().filter(|r| r.asked_at > *at) {
            for s in later.sessions.iter().filter(|s| acked.contains(s)) {
                if again.insert((s, &later.batch)) {
                    note(examples, format!("export: {s} came again in batch {} after batch {batch} was acknowledged", later.batch));
                }
            }
        }
    }
    v.export_sessions_after_ack = again.len();
    v.export_errors = log.errors.len();
    for e in log.errors.iter().take(5) {
        note(examples, format!("export: {e}"));
    }
    Ok(())
}

/// Splits the dead letters: those of emails refused for good (on the
/// notifier's topic, of a failed notification's event) are this check's,
/// returned by event id; every other stays the general check's.
pub fn split_dead_letters(
    conn: &mut PgConnection,
    events_topic: &str,
    dead: Vec<DeadLetter>,
) -> anyhow::Result<(Vec<String>, Vec<DeadLetter>)> {
    let failed = failed_event_ids(conn)?;
    let topic = format!(
        "{}:",
        stripe_sync::kafka::topics::notifier_dead_letters(events_topic)
    );
    let (refused, rest): (Vec<_>, Vec<_>) = dead.into_iter().partition(|d| {
        d.id.starts_with(&topic) && d.event_id.as_ref().is_some_and(|e| failed.contains(e))
    });
    Ok((
        refused.into_iter().filter_map(|d| d.event_id).collect(),
        rest,
    ))
}

/// Runs the orders check and its self-test once the soak has drained:
/// the verdict goes into the soak's (its failures count there, its
/// findings join the examples); returns the planted defects missed.
pub async fn check(
    orders: &Orders,
    conn: &mut PgConnection,
    refused_dead_letters: Vec<String>,
    drain_secs: f64,
    verdict: &mut Verdict,
) -> anyhow::Result<Vec<&'static str>> {
    let received = orders.received().await;
    let record = {
        let state = orders.state();
        OrdersRecord {
            sessions: state.sessions.clone(),
            disruptions: state
                .disruptions
                .iter()
                .map(|(at, what)| {
                    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default();
                    (secs.as_secs_f64(), what.clone())
                })
                .collect(),
            refusals_planted: state.refusals_planted,
            received,
            export: orders.export.log(),
            refused_dead_letters,
        }
    };
    let mut findings = Vec::new();
    let mut v = verify(conn, &record, &mut findings)?;
    let missed = crate::orders_selftest::self_test(conn, &record, &v)?;
    v.drain_secs = drain_secs;
    v.load = orders.load_figures();
    verdict.orders = v;
    for e in findings {
        if verdict.examples.len() < 30 {
            verdict.examples.push(e);
        }
    }
    Ok(missed)
}
