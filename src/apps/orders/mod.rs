//! Paid orders: an export of newly paid checkout sessions read from the
//! mirror ([`export`]; over HTTP in acknowledged [`batches`]), and one
//! email per paid order from a worker on
//! `stripe.events.v1` ([`notifier`]). Both work on Postgres's `orders`
//! schema; what a paid order is and what it holds lives in [`order`].

pub mod batches;
pub mod commands;
pub mod email;
pub mod export;
pub mod notifications;
pub mod notifier;
pub mod order;
pub mod settings;
pub mod smtp;
