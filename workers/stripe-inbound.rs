//! Consumes `stripe.events.v1` and applies each event to Postgres.

use stripe_sync::{config, inbound, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = config::Env::load();
    telemetry::init();
    let cfg = config::InboundConfig::load(&env)?;
    inbound::run(cfg, shutdown::on_signals(config::shutdown_grace(&env)?)).await
}
