//! The soak's table and its JSON (target/chaos/latest.json).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::check::Verdict;
use crate::faults::{FaultKind, Injected};
use crate::load::LoadStats;

pub struct Report<'a> {
    pub quick: bool,
    pub duration_secs: f64,
    pub settle_secs: f64,
    pub load: &'a LoadStats,
    pub faults: &'a [Injected],
    pub unplanned_exits: u64,
    pub stripe_faulted_answers: u64,
    pub verdict: &'a Verdict,
    /// Planted defects the check did not catch (see `check::self_test`).
    pub self_test_missed: &'a [&'static str],
}

impl Report<'_> {
    pub fn pass(&self) -> bool {
        self.verdict.failures() == 0 && self.self_test_missed.is_empty()
    }

    pub fn rows(&self) -> Vec<(String, String)> {
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
        let mut rows = vec![
            (
                "soak duration (load on)".into(),
                format!("{:.0} s", self.duration_secs),
            ),
            (
                "drain after the load".into(),
                format!("{:.1} s", self.settle_secs),
            ),
            (
                "events generated (+ Stripe echoes)".into(),
                format!("{} (+ {})", n(&self.load.events), n(&self.load.echoes)),
            ),
            (
                "webhook deliveries posted (1-3 per event, shuffled)".into(),
                n(&self.load.posts),
            ),
            (
                "  of them refused or failed, then retried".into(),
                n(&self.load.posts_refused),
            ),
            (
                "API creations / updates (retries)".into(),
                format!(
                    "{} / {} ({})",
                    n(&self.load.api_creates),
                    n(&self.load.api_updates),
                    n(&self.load.api_retries)
                ),
            ),
            (
                "Stripe answers faulted (503, 429, lost)".into(),
                self.stripe_faulted_answers.to_string(),
            ),
        ];
        rows.extend(crate::payments::stats_rows(&self.load.payments));
        let mut by_kind: BTreeMap<FaultKind, usize> = BTreeMap::new();
        for f in self.faults {
            *by_kind.entry(f.kind).or_default() += 1;
        }
        for (kind, count) in by_kind {
            rows.push((format!("fault: {}", kind.label()), count.to_string()));
        }
        rows.push((
            "processes that exited by themselves (restarted)".into(),
            self.unplanned_exits.to_string(),
        ));
        let worst = self
            .faults
            .iter()
            .filter_map(|f| f.catch_up_secs)
            .fold(None, |w: Option<f64>, c| Some(w.map_or(c, |w| w.max(c))));
        let stuck = self
            .faults
            .iter()
            .filter(|f| f.catch_up_secs.is_none())
            .count();
        rows.push((
            "worst catch-up after a fault healed".into(),
            match (worst, stuck) {
                (_, s) if s > 0 => format!("{s} fault(s) not caught up within 120 s"),
                (Some(w), _) => format!("{w:.1} s"),
                (None, _) => "-".into(),
            },
        ));
        let v = self.verdict;
        for (label, value) in [
            ("events acknowledged (checked)", v.events_acknowledged),
            ("LOST: acknowledged, not in the ledger", v.events_lost),
            (
                "DUPLICATED: an event applied by two transactions",
                v.events_applied_twice,
            ),
            (
                "objects checked against their newest version",
                v.objects_checked,
            ),
            (
                "DIVERGENT: mirror differs from the newest version",
                v.objects_divergent,
            ),
            (
                "tombstones broken (deleted, live again)",
                v.tombstones_broken,
            ),
            (
                "API customers checked (local and Stripe)",
                v.api_customers_checked,
            ),
            ("API customers divergent", v.api_customers_divergent),
            (
                "Stripe customers created twice for one local",
                v.stripe_customers_duplicated,
            ),
            ("outbox rows (local changes)", v.outbox_rows),
            (
                "outbox rows not done exactly once at Stripe",
                v.outbox_rows_not_at_stripe,
            ),
            (
                "Stripe writes no outbox row explains",
                v.stripe_writes_unexplained,
            ),
            (
                "outbox rows beyond the API writes (ping-pong)",
                v.outbox_rows_unexplained,
            ),
            ("injected poison dead-lettered", v.poison_dead_lettered),
            (
                "injected poison missing from the DLQ",
                v.poison_missing_from_dlq,
            ),
            (
                "dead letters other than the poison",
                v.unexpected_dead_letters,
            ),
        ] {
            rows.push((label.into(), value.to_string()));
        }
        rows.extend(v.orders.rows().into_iter().map(|(l, n)| (l.into(), n)));
        rows.extend(v.salesforce.rows());
        rows.extend(v.payments.rows());
        rows.push((
            "the check's self-test: planted defects missed".into(),
            if self.self_test_missed.is_empty() {
                format!(
                    "0 of {}",
                    6 + crate::orders_selftest::PLANTS
                        + crate::salesforce_check::PLANTED
                        + crate::payments_selftest::PLANTS
                )
            } else {
                self.self_test_missed.join(", ")
            },
        ));
        rows
    }

    pub fn print(&self) {
        let cells: Vec<Vec<String>> = self.rows().into_iter().map(|(a, b)| vec![a, b]).collect();
        println!(
            "{}",
            stripe_sync::ops::table(&["CHAOS SOAK", "VALUE"], &cells)
        );
        if !self.verdict.examples.is_empty() {
            println!("findings:");
            for e in &self.verdict.examples {
                println!("  {e}");
            }
        }
        if self.quick {
            println!("(--quick smoke run: every fault once, short and small)");
        }
        println!("result: {}", if self.pass() { "PASS" } else { "FAIL" });
        println!("machine: {}", crate::common::machine());
    }

    pub fn json(&self) -> Value {
        json!({
            "quick": self.quick,
            "duration_secs": self.duration_secs,
            "settle_secs": self.settle_secs,
            "load": self.load,
            "faults": self.faults,
            "unplanned_exits": self.unplanned_exits,
            "stripe_faulted_answers": self.stripe_faulted_answers,
            "verdict": self.verdict,
            "self_test_missed": self.self_test_missed,
            "pass": self.pass(),
            "machine": crate::common::machine(),
        })
    }
}
