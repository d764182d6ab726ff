//! The orders check's self-test: each defect the check looks for,
//! planted on its own in a copy of the record (the SMTP server's messages,
//! the export's log) or in a transaction rolled back, must raise its count
//! above the real run's.

use std::collections::HashSet;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::orders::{Received, SessionKind};
use crate::orders_check::{message_id_of, verify, OrdersRecord, OrdersVerdict};
use crate::orders_export::Receipt;

/// Plants each defect on its own (in copies of the record, or in a
/// transaction rolled back) and returns the kinds the check missed: a
/// plant is caught when its count rises above the real run's.
pub fn self_test(
    conn: &mut PgConnection,
    record: &OrdersRecord,
    real: &OrdersVerdict,
) -> anyhow::Result<Vec<&'static str>> {
    let paid_emailed: Vec<&Received> = record
        .received
        .iter()
        .filter(|m| record.sessions.get(&m.session_id) == Some(&SessionKind::Paid))
        .collect();
    let mut missed = Vec::new();
    type Plant<'a> = (
        &'static str,
        Box<dyn Fn(&mut OrdersRecord) + 'a>,
        &'static str,
        fn(&OrdersVerdict) -> usize,
    );
    let plants: Vec<Plant> = vec![
        ("an email sent twice", Box::new(|r: &mut OrdersRecord| {
            if let Some(m) = paid_emailed.first() {
                // Long before any kill: nothing explains it.
                r.received.push(Received { received_at: 1.0, ..(*m).clone() });
            }
        }), "", |v| v.emails_sent_twice),
        ("a paid order's email missing", Box::new(|r: &mut OrdersRecord| {
            if let Some(m) = paid_emailed.last() {
                r.received.retain(|x| x.message_id != m.message_id);
            }
        }), "", |v| v.orders_not_emailed),
        ("an email for an unpaid session", Box::new(|r: &mut OrdersRecord| {
            if let Some((s, _)) = r.sessions.iter().find(|(_, k)| **k == SessionKind::Unpaid) {
                let s = s.clone();
                r.received.push(Received { message_id: message_id_of(&s), session_id: s, received_at: 1.0 });
            }
        }), "", |v| v.emails_unwanted),
        ("a notification marked sent with no email", Box::new(|_: &mut OrdersRecord| {}),
            "INSERT INTO orders.notifications (account, order_key, session_id, event_id, event, order_data, message_id, status)
             SELECT account, order_key || '.planted', session_id, event_id, event, order_data, message_id || '.planted', 'sent'
             FROM orders.notifications WHERE status = 'sent' LIMIT 1;",
            |v| v.notifications_disagreeing),
        ("a failure with no planted refusal", Box::new(|_: &mut OrdersRecord| {}),
            "UPDATE orders.notifications SET status = 'failed', last_error = 'planted'
             WHERE id = (SELECT min(id) FROM orders.notifications WHERE status = 'sent');",
            |v| v.failures_unexplained),
        ("a paid session missing from the acknowledged export", Box::new(|r: &mut OrdersRecord| {
            let acked: HashSet<String> = r.export.acks.iter().map(|a| a.batch.clone()).collect();
            if let Some(receipt) = r.export.receipts.iter_mut().find(|x| acked.contains(&x.batch) && !x.sessions.is_empty()) {
                let gone = receipt.sessions.remove(0);
                for x in r.export.receipts.iter_mut() {
                    x.sessions.retain(|s| *s != gone);
                }
            }
        }), "", |v| v.export_sessions_lost),
        ("a session offered again after its ack", Box::new(|r: &mut OrdersRecord| {
            let acked: HashSet<String> = r.export.acks.iter().map(|a| a.batch.clone()).collect();
            if let Some(s) = r.export.receipts.iter().filter(|x| acked.contains(&x.batch)).flat_map(|x| x.sessions.first()).next() {
                let planted = Receipt { batch: "planted".into(), sessions: vec![s.clone()], asked_at: Instant::now() };
                r.export.receipts.push(planted);
            }
        }), "", |v| v.export_sessions_after_ack),
    ];
    const ROLLED_BACK: &str = "the planted defect is rolled back";
    for (kind, plant, sql, count) in plants {
        let mut copy = record.clone();
        plant(&mut copy);
        let mut caught = false;
        let outcome = conn.transaction::<(), anyhow::Error, _>(|conn| {
            if !sql.is_empty() {
                conn.batch_execute(sql)?;
            }
            let v = verify(conn, &copy, &mut Vec::new())?;
            caught = count(&v) > count(real);
            Err(anyhow::anyhow!(ROLLED_BACK))
        });
        match outcome {
            Err(e) if e.to_string() == ROLLED_BACK => {}
            Err(e) => return Err(e),
            Ok(()) => unreachable!("the transaction always rolls back"),
        }
        if !caught {
            missed.push(kind);
        }
    }
    Ok(missed)
}

/// How many defects the self-test plants.
pub const PLANTS: usize = 7;
