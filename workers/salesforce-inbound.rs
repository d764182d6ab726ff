//! Applies Salesforce Contact versions from `salesforce.events.v1` to the
//! local customers, and polls Salesforce for them (only when
//! `SALESFORCE_INSTANCE_URL` is set).

use stripe_sync::{config, salesforce, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = config::Env::load();
    telemetry::init();
    let cfg = config::SalesforceInboundConfig::load(&env)?;
    salesforce::inbound::run(cfg, shutdown::on_signals(config::shutdown_grace(&env)?)).await
}
