//! Integration tests against real Postgres, a real Kafka-protocol broker
//! (nisshi) and localstripe. Run them through `scripts/test`.

mod support;

mod api;
mod api_fields;
mod apply;
mod catalog;
mod console;
mod consume;
mod crash;
mod credits;
mod docs;
mod fuzz;
mod fuzz_http;
mod idmap;
mod inbound;
mod localstripe_e2e;
mod ops;
mod orders;
mod outbound;
mod payments;
mod plans;
mod prune;
mod pull;
mod row_lock;
mod salesforce;
mod salesforce_inbound;
mod salesforce_races;
mod shutdown;
mod signature_oracle;
mod startup;
mod statuses;
mod tombstone;
mod webhook;
mod webhook_endpoints;
