//! The Stripe API version an event's object is shaped by, against the one
//! this deployment is configured for (`STRIPE_API_VERSION`).
//!
//! Stripe renders a webhook's object in the API version of the endpoint
//! (or, without one, of the account), which may differ from the version our
//! reads ask for. The mirror's typed columns read every known path of a
//! field (see `registry::Column::moved`), so a newer or older shape still
//! fills them; a version we were not told about is reported here rather
//! than left to show up as empty columns.

use std::collections::HashSet;
use std::sync::Mutex;

use super::StripeEvent;

/// Counts and logs events shaped by another API version than `expected`.
#[derive(Debug)]
pub struct VersionCheck {
    expected: String,
    /// Versions already logged: each is logged once per process, counted
    /// every time.
    logged: Mutex<HashSet<String>>,
}

impl VersionCheck {
    pub fn new(expected: &str) -> Self {
        Self {
            expected: expected.to_owned(),
            logged: Mutex::default(),
        }
    }

    /// Whether `event` was rendered in another version than expected; if
    /// so it is counted (`stripe_sync_event_api_version_mismatches_total`)
    /// and, the first time for that version, logged. Events we build
    /// ourselves (snapshots) carry no version and are not checked.
    pub fn note(&self, event: &StripeEvent) -> bool {
        let Some(version) = event.api_version.as_deref() else {
            return false;
        };
        if version == self.expected {
            return false;
        }
        crate::metrics::API_VERSION_MISMATCHES
            .with_label_values(&[version])
            .inc();
        let first = self
            .logged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(version.to_owned());
        if first {
            tracing::warn!(
                received = version,
                expected = %self.expected,
                stripe.event_id = %event.id,
                "a webhook was rendered in another Stripe API version than STRIPE_API_VERSION; \
                 typed columns read the fields' known paths in every version, but set the \
                 webhook endpoint's version (or STRIPE_API_VERSION) so they agree"
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: Option<&str>) -> StripeEvent {
        let body = serde_json::json!({
            "id": "evt_v", "type": "invoice.paid", "created": 1, "api_version": version,
            "data": {"object": {"id": "in_1", "object": "invoice"}},
        });
        StripeEvent::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    #[test]
    fn another_version_is_counted_each_time() {
        let check = VersionCheck::new("2024-06-20");
        let counted = || {
            crate::metrics::API_VERSION_MISMATCHES
                .with_label_values(&["2099-01-01.test"])
                .get()
        };
        let before = counted();
        assert!(!check.note(&event(Some("2024-06-20"))));
        assert!(!check.note(&event(None)), "a snapshot has no version");
        assert!(check.note(&event(Some("2099-01-01.test"))));
        assert!(check.note(&event(Some("2099-01-01.test"))));
        assert_eq!(counted() - before, 2);
    }
}
