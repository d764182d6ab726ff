//! Links between local entities and external services.
//!
//! `id_map` is keyed per service: `(service, account, entity, external_id)`
//! ↔ `(service, entity, local_id)`, unique both ways. Stripe uses it today;
//! another service (Salesforce) adds rows with its own `service` value and
//! needs no schema change.

pub mod adapter;
pub mod cursor;
pub mod idmap;

/// Service names as stored in `id_map.service` and `event_ledger.service`.
pub mod service {
    pub const STRIPE: &str = "stripe";
    pub const SALESFORCE: &str = "salesforce";
}

/// Entity names as stored in `id_map.entity`.
pub mod entity {
    pub const CUSTOMER: &str = "customer";
    /// A customer's counterpart in Salesforce.
    pub const CONTACT: &str = "contact";
    /// A refund queued through the payments API (outbox rows only).
    pub const REFUND_REQUEST: &str = "refund_request";
}
