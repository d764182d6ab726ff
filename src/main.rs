use anyhow::Context;
use clap::{Parser, Subcommand};
use stripe_sync::{config, db, serve, shutdown, telemetry};

/// Keeps Postgres in sync with Stripe, with Kafka as the durable spine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (Stripe webhooks, health).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = config::Env::load();
    telemetry::init();
    match cli.command {
        Command::Serve => {
            let cfg = config::ServeConfig::load(&env)?;
            serve::run(cfg, shutdown::on_signals(config::shutdown_grace(&env)?)).await
        }
        Command::Migrate => {
            let pool = db::pool(&config::DatabaseConfig::load(&env)?);
            let applied = tokio::task::spawn_blocking(move || db::run_migrations(&pool))
                .await
                .context("migration task failed")??;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for name in applied {
                println!("applied {name}");
            }
            Ok(())
        }
    }
}
