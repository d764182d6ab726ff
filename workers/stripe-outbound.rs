//! Applies local customer changes from `customers.changes.v1` to Stripe.

use stripe_sync::{config, outbound, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = config::Env::load();
    telemetry::init();
    let cfg = config::OutboundConfig::load(&env)?;
    outbound::run(cfg, shutdown::on_signals(config::shutdown_grace(&env)?)).await
}
