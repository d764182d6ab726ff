//! The Salesforce adapter: local customers as Salesforce Contacts, both
//! ways.
//!
//! Off unless `SALESFORCE_INSTANCE_URL` is set.
//! - Outbound, local customer changes reach Salesforce through
//!   `workers/salesforce-outbound`, its own consumer group on
//!   `customers.changes.v1`, the same handler as Stripe's
//!   ([`crate::outbound`]) with [`SalesforceOutbound`].
//! - Inbound, Contact versions reach `salesforce.events.v1` from the
//!   [`poll`]er and from a relay (`POST /webhooks/salesforce`), and
//!   `workers/salesforce-inbound` applies them ([`apply`]).
//!
//! Links are `id_map` rows (`salesforce`, org id, `contact`, `003…`).

pub mod apply;
pub mod client;
pub mod contact;
pub mod event;
pub mod inbound;
pub mod outbound;
pub mod poll;
pub mod written;

pub use client::{SalesforceClient, SalesforceError};
pub use outbound::{run, SalesforceOutbound};
