//! Publishes outbox rows (local changes) to `customers.changes.v1`.

use stripe_sync::{config, relay, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = config::Env::load();
    telemetry::init();
    let cfg = config::RelayConfig::load(&env)?;
    relay::run(cfg, shutdown::on_signals(config::shutdown_grace(&env)?)).await
}
