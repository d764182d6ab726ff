//! The Salesforce adapter: local customers as Salesforce Contacts.
//!
//! Off unless `SALESFORCE_INSTANCE_URL` is set. Outbound, local customer
//! changes reach Salesforce through `workers/salesforce-outbound`, its own
//! consumer group on `customers.changes.v1`, the same handler as Stripe's
//! ([`crate::outbound`]) with [`SalesforceOutbound`]; links are
//! `id_map` rows (`salesforce`, org id, `contact`, `003…`).

pub mod client;
pub mod contact;
pub mod outbound;

pub use client::{SalesforceClient, SalesforceError};
pub use outbound::{run, SalesforceOutbound};
