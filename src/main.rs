use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stripe_sync::pull::{backfill, diff, reconcile, ObjectKind, PullConfig, PullContext};
use stripe_sync::stripe::PLATFORM_ACCOUNT;
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
    /// Run the HTTP server (Stripe webhooks, /api/customers, health).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Publish every existing Stripe object as a snapshot event (list API),
    /// resuming an interrupted run. Costs one API call per 100 objects.
    Backfill {
        /// Object type to backfill.
        #[arg(value_enum)]
        objects: ObjectKind,
        /// Start from the first page even if an earlier run was interrupted.
        #[arg(long)]
        restart: bool,
        /// Only objects created at or after this time (RFC 3339 or unix seconds).
        #[arg(long, value_parser = parse_time)]
        created_since: Option<i64>,
        /// Objects per list call (at most 100).
        #[arg(long, default_value_t = backfill::MAX_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=100))]
        page_size: u32,
        /// Connected account (acct_…); the platform account by default.
        #[arg(long, default_value = PLATFORM_ACCOUNT)]
        account: String,
    },
    /// Publish events from Stripe's Events API that the ledger has not seen
    /// (webhooks missed during an outage). Costs one API call per 100 events.
    Reconcile {
        /// Keep running, one pass every SECONDS.
        #[arg(long, value_name = "SECONDS")]
        every: Option<u64>,
        /// Start at this time instead of the saved cursor (RFC 3339 or unix seconds).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
        #[arg(long, default_value = PLATFORM_ACCOUNT)]
        account: String,
    },
    /// Compare the mirror with Stripe; --repair publishes fresh snapshots for
    /// what differs. Costs one API call per 100 objects (+1 per object only
    /// in the mirror, with --repair).
    Diff {
        #[arg(value_enum, default_value = "customers")]
        objects: ObjectKind,
        #[arg(long)]
        repair: bool,
        /// Exit with status 1 when differences are found.
        #[arg(long)]
        exit_code: bool,
        #[arg(long, default_value = PLATFORM_ACCOUNT)]
        account: String,
    },
}

fn parse_time(raw: &str) -> Result<i64, String> {
    if let Ok(secs) = raw.parse::<i64>() {
        return Ok(secs);
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp())
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").map(|d| {
                d.and_hms_opt(0, 0, 0)
                    .unwrap_or_default()
                    .and_utc()
                    .timestamp()
            })
        })
        .map_err(|_| format!("{raw:?} is not a time: use RFC 3339, YYYY-MM-DD or unix seconds"))
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
        Command::Backfill {
            objects,
            restart,
            created_since,
            page_size,
            account,
        } => {
            let ctx = PullContext::build(&PullConfig::load(&env)?).await?;
            let opts = backfill::BackfillOptions {
                restart,
                created_since,
                page_size,
                account,
                ..backfill::BackfillOptions::new(objects)
            };
            let report = backfill::run(
                &ctx,
                &opts,
                &shutdown::on_signals(config::shutdown_grace(&env)?),
            )
            .await?;
            println!(
                "{} {} objects in {} pages ({} API calls){}",
                if report.complete {
                    "backfilled"
                } else {
                    "interrupted after"
                },
                report.objects,
                report.pages,
                report.pages,
                if report.resumed {
                    ", resumed from the last checkpoint"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Reconcile {
            every,
            since,
            account,
        } => {
            let ctx = PullContext::build(&PullConfig::load(&env)?).await?;
            let opts = reconcile::ReconcileOptions { account, since };
            match every {
                Some(secs) => {
                    let stop = shutdown::on_signals(config::shutdown_grace(&env)?);
                    reconcile::run_every(&ctx, &opts, Duration::from_secs(secs.max(1)), &stop).await
                }
                None => {
                    let r = reconcile::run_once(&ctx, &opts).await?;
                    println!(
                        "{} events since {} ({} API calls), {} not in the ledger published; cursor now {}",
                        r.seen, r.from, r.pages, r.published, r.cursor
                    );
                    Ok(())
                }
            }
        }
        Command::Diff {
            objects,
            repair,
            exit_code,
            account,
        } => {
            let ctx = PullContext::build(&PullConfig::load(&env)?).await?;
            let report = diff::run(&ctx, objects, &account, repair).await?;
            println!("{report}");
            if exit_code && !report.is_clean() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
