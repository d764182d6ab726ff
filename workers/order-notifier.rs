//! Consumes `stripe.events.v1` in its own group and sends one email per
//! paid order over SMTP.

use stripe_sync::apps::orders::notifier;
use stripe_sync::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = config::Env::load();
    telemetry::init();
    let cfg = config::NotifierConfig::load(&env)?;
    notifier::run(cfg, shutdown::on_signals(config::shutdown_grace(&env)?)).await
}
