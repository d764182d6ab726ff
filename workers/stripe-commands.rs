//! Consumes `stripe.commands.v1` and carries out the refunds queued
//! through the API.

use stripe_sync::apps::payments::command_worker;
use stripe_sync::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = config::Env::load();
    telemetry::init();
    let cfg = config::CommandsWorkerConfig::load(&env)?;
    command_worker::run(cfg, shutdown::on_signals(config::shutdown_grace(&env)?)).await
}
