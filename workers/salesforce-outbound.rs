//! Applies local customer changes from `customers.changes.v1` to Salesforce
//! Contacts (only when `SALESFORCE_INSTANCE_URL` is set).

use stripe_sync::{config, salesforce, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = config::Env::load();
    telemetry::init();
    let cfg = config::SalesforceOutboundConfig::load(&env)?;
    salesforce::run(cfg, shutdown::on_signals(config::shutdown_grace(&env)?)).await
}
