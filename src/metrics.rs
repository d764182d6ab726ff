//! Prometheus metrics, one place. Every process serves its registry at
//! `GET /metrics` (the server on its own port, each worker on METRICS_ADDR).

use std::sync::LazyLock;

use prometheus::{
    register_gauge_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, GaugeVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    TextEncoder,
};

/// The last error a process met that an operator would want to see
/// (a retried failure, a dead letter), for `/readyz` and the console.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LastError {
    pub at: chrono::DateTime<chrono::Utc>,
    pub message: String,
}

static LAST_ERROR: std::sync::Mutex<Option<LastError>> = std::sync::Mutex::new(None);

/// Records `message` as the process's last error.
pub fn note_error(message: impl Into<String>) {
    let noted = LastError {
        at: chrono::Utc::now(),
        message: message.into(),
    };
    *LAST_ERROR.lock().unwrap_or_else(|p| p.into_inner()) = Some(noted);
}

/// The process's last error, if it met one since it started.
pub fn last_error() -> Option<LastError> {
    LAST_ERROR.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Webhooks by result (`accepted`, `rejected`, `unavailable`) and reason.
pub static WEBHOOKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "stripe_sync_webhooks_total",
        "Stripe webhooks received",
        &["result", "reason"]
    )
    .unwrap()
});

/// Time from a verified webhook to Kafka's acknowledgement.
pub static PRODUCE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "stripe_sync_produce_seconds",
        "Kafka produce latency (until acknowledged)",
        &["topic"],
        vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]
    )
    .unwrap()
});

/// Events by type and ledger outcome (`upserted`, `duplicate`, `stale`, ...).
pub static EVENTS_APPLIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "stripe_sync_events_applied_total",
        "Events applied by the inbound worker",
        &["type", "outcome"]
    )
    .unwrap()
});

/// Events Stripe sent back for writes of our own (the ledger's `echo`), by
/// type: the loop-prevention at work. A steady rate is normal; echoes that
/// stop while local changes flow mean Stripe no longer reports our keys.
pub static ECHOES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "stripe_sync_echoes_total",
        "Events applied that echo a write of our own",
        &["type"]
    )
    .unwrap()
});

/// Consumer lag per topic and partition, as last measured by the worker.
pub static CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "stripe_sync_consumer_lag",
        "Messages behind the high watermark",
        &["group", "topic", "partition"]
    )
    .unwrap()
});

/// How long the oldest message this worker has not applied yet has been
/// waiting, per topic and partition (zero when caught up): the lag in time,
/// which offsets alone do not tell.
pub static CONSUMER_LAG_SECONDS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "stripe_sync_consumer_lag_seconds",
        "Age of the oldest message not applied yet",
        &["group", "topic", "partition"]
    )
    .unwrap()
});

pub static OUTBOX_BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "stripe_sync_outbox_backlog",
        "Outbox rows not yet published"
    )
    .unwrap()
});

pub static OUTBOX_OLDEST_AGE_SECONDS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "stripe_sync_outbox_oldest_age_seconds",
        "Age of the oldest unpublished outbox row"
    )
    .unwrap()
});

/// Stripe API calls by endpoint (method and path pattern) and status.
pub static STRIPE_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "stripe_sync_stripe_api_calls_total",
        "Stripe API calls",
        &["endpoint", "status"]
    )
    .unwrap()
});

/// Transient failures retried by the consume loop, by `component`: the
/// topic being consumed.
pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "stripe_sync_retries_total",
        "Transient failures retried",
        &["component"]
    )
    .unwrap()
});

pub static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "stripe_sync_dead_letters_total",
        "Messages sent to a dead-letter topic",
        &["topic"]
    )
    .unwrap()
});

static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "stripe_sync_build_info",
        "Always 1; labels name the process and version",
        &["process", "version"]
    )
    .unwrap()
});

/// Order emails by outcome: `claimed` (a new paid order), `sent`,
/// `retry` (a transient failure), `failed` (refused for good),
/// `lease_lost` (a sender held up past its lease left the email to the
/// sender that took it over: not sent, or its outcome not recorded).
pub static NOTIFICATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "stripe_sync_notifications_total",
        "Order notifications by outcome",
        &["outcome"]
    )
    .unwrap()
});

/// Webhooks rendered in another Stripe API version than
/// `STRIPE_API_VERSION`, by the version received.
pub static API_VERSION_MISMATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "stripe_sync_event_api_version_mismatches_total",
        "Events rendered in another Stripe API version than STRIPE_API_VERSION, by version",
        &["api_version"]
    )
    .unwrap()
});

/// Registers every metric up front, so a scrape right after start shows
/// the full set (vectors appear once they have a first label set).
pub fn init(process: &str) {
    BUILD_INFO
        .with_label_values(&[process, env!("CARGO_PKG_VERSION")])
        .set(1);
    LazyLock::force(&WEBHOOKS);
    LazyLock::force(&PRODUCE_SECONDS);
    LazyLock::force(&EVENTS_APPLIED);
    LazyLock::force(&ECHOES);
    LazyLock::force(&CONSUMER_LAG);
    LazyLock::force(&CONSUMER_LAG_SECONDS);
    LazyLock::force(&OUTBOX_BACKLOG);
    LazyLock::force(&OUTBOX_OLDEST_AGE_SECONDS);
    LazyLock::force(&STRIPE_CALLS);
    LazyLock::force(&RETRIES);
    LazyLock::force(&DEAD_LETTERS);
    LazyLock::force(&NOTIFICATIONS);
}

/// The whole registry in Prometheus' text format.
pub fn render() -> String {
    TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_else(|e| format!("# failed to encode metrics: {e}\n"))
}

/// Stripe endpoints as low-cardinality labels: ids become `{id}`.
pub fn endpoint_label(method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let pattern: Vec<&str> = path
        .split('/')
        .map(|seg| {
            if seg.contains('_') && seg.len() > 8 {
                "{id}"
            } else {
                seg
            }
        })
        .collect();
    format!("{method} {}", pattern.join("/"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoint_labels_hide_ids() {
        assert_eq!(
            super::endpoint_label("GET", "/v1/customers/cus_QXg1o8vcGmoR32"),
            "GET /v1/customers/{id}"
        );
        assert_eq!(
            super::endpoint_label("GET", "/v1/customers?limit=100"),
            "GET /v1/customers"
        );
    }
}
