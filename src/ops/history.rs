//! The last hour of the pipeline's lag and throughput, sampled by serve
//! and kept in memory for the console's charts: nothing to store, and a
//! restart starts a new hour.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{topics, Inventory};

/// How often serve samples.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour at [`INTERVAL`].
const KEPT: usize = 360;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// Messages not yet committed, summed over every worker group.
    pub lag: i64,
    /// High watermarks of the events topic, summed: what ingest has
    /// published so far.
    pub events_in: i64,
    /// The inbound group's committed offsets on the events topic, summed:
    /// what stripe-inbound has applied so far.
    pub applied: i64,
}

/// Events per second between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    pub at: DateTime<Utc>,
    pub events_in_per_sec: f64,
    pub applied_per_sec: f64,
}

/// Shared by the sampler and the readers; clones share it.
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Mutex<VecDeque<Sample>>>);

impl History {
    pub fn push(&self, sample: Sample) {
        let mut samples = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// The rate between each pair of neighbouring samples. Offsets that
    /// went backwards (a topic recreated) give no rate for that pair.
    pub fn rates(&self) -> Vec<Rates> {
        self.samples()
            .windows(2)
            .filter_map(|w| {
                let secs = (w[1].at - w[0].at).num_milliseconds() as f64 / 1000.0;
                let events = w[1].events_in - w[0].events_in;
                let applied = w[1].applied - w[0].applied;
                (secs > 0.0 && events >= 0 && applied >= 0).then(|| Rates {
                    at: w[1].at,
                    events_in_per_sec: events as f64 / secs,
                    applied_per_sec: applied as f64 / secs,
                })
            })
            .collect()
    }
}

/// Reads one sample from Kafka (blocking).
pub fn sample(inv: &Inventory) -> anyhow::Result<Sample> {
    let rows = topics::lag(&inv.brokers, inv.fetch_max_bytes, &inv.groups())?;
    let lag = rows.iter().map(|r| r.lag).sum();
    let inbound: Vec<&topics::LagRow> = rows
        .iter()
        .filter(|r| r.group == inv.inbound_group && r.topic == inv.events_topic)
        .collect();
    Ok(Sample {
        at: Utc::now(),
        lag,
        events_in: inbound.iter().map(|r| r.high).sum(),
        applied: inbound.iter().map(|r| r.high - r.lag).sum(),
    })
}

/// Samples every [`INTERVAL`] until `shutdown`. A failed read leaves a gap
/// and is logged; the next one tries again.
pub async fn run(inv: Inventory, history: History, shutdown: CancellationToken) {
    // The first sample one interval after start: a short-lived serve (a
    // test's) reads nothing, and a rate needs two samples anyway.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let inv = inv.clone();
        match tokio::task::spawn_blocking(move || sample(&inv)).await {
            Ok(Ok(s)) => history.push(s),
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "console: cannot sample lag"),
            Err(e) => tracing::warn!(error = %e, "console: lag sampler panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, events_in: i64, applied: i64) -> Sample {
        Sample {
            at: DateTime::from_timestamp(secs, 0).unwrap(),
            lag: events_in - applied,
            events_in,
            applied,
        }
    }

    #[test]
    fn keeps_an_hour_and_rates_skip_offsets_that_went_back() {
        let h = History::default();
        for i in 0..(KEPT as i64 + 5) {
            h.push(at(i * 10, i * 100, i * 50));
        }
        let samples = h.samples();
        assert_eq!(samples.len(), KEPT);
        assert_eq!(samples[0].at.timestamp(), 50, "oldest dropped first");
        let rates = h.rates();
        assert_eq!(rates.len(), KEPT - 1);
        assert_eq!(rates[0].events_in_per_sec, 10.0);
        assert_eq!(rates[0].applied_per_sec, 5.0);
        let h = History::default();
        h.push(at(0, 500, 500));
        h.push(at(10, 20, 20));
        assert!(h.rates().is_empty(), "a recreated topic gives no rate");
    }
}
