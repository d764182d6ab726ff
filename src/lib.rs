//! stripe-sync: keeps Postgres in sync with Stripe, with Kafka as the
//! durable spine. See `docs/src/architecture.md` for the data flow and where
//! each invariant is enforced.

pub mod apply;
pub mod apps;
pub mod cli;
pub mod config;
pub mod console;
pub mod customers;
pub mod db;
pub mod health;
pub mod http;
pub mod inbound;
pub mod ingest;
pub mod input;
pub mod kafka;
pub mod metrics;
pub mod mirror;
pub mod ops;
pub mod outbound;
pub mod outbox;
pub mod pull;
pub mod registry;
pub mod relay;
pub mod retry;
pub mod salesforce;
pub mod serve;
pub mod shutdown;
pub mod stripe;
pub mod sync;
pub mod telemetry;
pub mod worker;
