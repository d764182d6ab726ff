//! The pull commands: backfill, reconcile, refresh, diff and resync. Each
//! reads Stripe and publishes what it finds onto the events topic, the one
//! way into the mirror.

use std::time::Duration;

use clap::Subcommand;

use super::parse_time;
use crate::config::{self, Env};
use crate::pull::{
    backfill, diff, reconcile, refresh, resync, AccountChoice, PullConfig, PullContext,
};
use crate::stripe::AccountId;
use crate::{registry, shutdown};

#[derive(Subcommand)]
pub enum PullCommand {
    /// Publish every existing Stripe object of the given types as snapshot
    /// events (list API), resuming an interrupted run per (account, type).
    /// Costs one API call per 100 objects.
    Backfill {
        /// Object types (`invoice`, `checkout.session`) or relations
        /// (`invoices`); `all` for every type. `catalog types` lists them.
        #[arg(required = true, value_name = "TYPE")]
        types: Vec<String>,
        /// Start from the first page even if an earlier run was interrupted.
        #[arg(long)]
        restart: bool,
        /// Only objects created at or after this time (RFC 3339 or unix seconds).
        #[arg(long, value_parser = parse_time)]
        created_since: Option<i64>,
        /// Objects per list call (at most 100).
        #[arg(long, default_value_t = backfill::MAX_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=100))]
        page_size: u32,
        /// List calls in flight at once, over all the types (and `created`
        /// slices of one large type); all share STRIPE_RATE_LIMIT.
        #[arg(long, default_value_t = backfill::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..=64))]
        concurrency: u32,
        /// Account (`platform`, acct_… or `auto`), repeatable; STRIPE_ACCOUNTS by default.
        #[arg(long = "account", value_parser = AccountChoice::parse)]
        accounts: Vec<AccountChoice>,
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
        /// Account (`platform`, acct_… or `auto`), repeatable; STRIPE_ACCOUNTS by default.
        #[arg(long = "account", value_parser = AccountChoice::parse)]
        accounts: Vec<AccountChoice>,
    },
    /// Keep the types Stripe sends no events for current by pulling them:
    /// a type listed whole is diffed and repaired, balance transactions are
    /// listed from a cursor. Costs one API call per 100 objects listed.
    Refresh {
        /// Object types or relations; every type without events by default.
        #[arg(value_name = "TYPE")]
        types: Vec<String>,
        /// Keep running, one pass every SECONDS.
        #[arg(long, value_name = "SECONDS")]
        every: Option<u64>,
        /// Account (`platform`, acct_… or `auto`), repeatable; STRIPE_ACCOUNTS by default.
        #[arg(long = "account", value_parser = AccountChoice::parse)]
        accounts: Vec<AccountChoice>,
    },
    /// Compare the mirror with Stripe; --repair publishes fresh snapshots for
    /// what differs. Costs one API call per 100 objects (+1 per object only
    /// in the mirror, with --repair).
    Diff {
        /// Object types or relations; every listable type by default.
        #[arg(value_name = "TYPE", default_value = "all")]
        types: Vec<String>,
        #[arg(long)]
        repair: bool,
        /// Exit with status 1 when differences are found.
        #[arg(long)]
        exit_code: bool,
        /// Account (`platform`, acct_… or `auto`), repeatable; STRIPE_ACCOUNTS by default.
        #[arg(long = "account", value_parser = AccountChoice::parse)]
        accounts: Vec<AccountChoice>,
    },
    /// Read objects by id, now, and publish each as a snapshot event: it
    /// goes through the ledger and ordering like any event. An object
    /// Stripe no longer has is published deleted. One API call per id.
    Resync {
        /// Object ids (`prod_…`, `in_…`); the prefix names the type.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// The type (object or relation), where the prefix does not name
        /// one: coupons, plans, or a prefix two types share.
        #[arg(long = "type", value_name = "TYPE")]
        type_name: Option<String>,
        /// The account the objects belong to (`platform` or acct_…).
        #[arg(long, default_value = "platform", value_parser = parse_account)]
        account: AccountId,
    },
}

fn parse_account(raw: &str) -> Result<AccountId, String> {
    AccountId::parse(raw).map_err(|e| e.to_string())
}

pub async fn run(command: PullCommand, env: &Env) -> anyhow::Result<()> {
    match command {
        PullCommand::Backfill {
            types,
            restart,
            created_since,
            page_size,
            concurrency,
            accounts,
        } => {
            let resources = registry::resolve(&types)?;
            let cfg = PullConfig::load(env)?;
            let ctx = PullContext::build(&cfg).await?;
            let stop = shutdown::on_signals(config::shutdown_grace(env)?);
            let mut failed = 0;
            for account in cfg.accounts_or(&accounts).resolve(&ctx).await? {
                if stop.is_cancelled() {
                    break;
                }
                let runs = resources
                    .iter()
                    .map(|&resource| backfill::BackfillOptions {
                        restart,
                        created_since,
                        page_size,
                        account: account.clone(),
                        ..backfill::BackfillOptions::new(resource)
                    })
                    .collect();
                let reports = backfill::run_all(&ctx, runs, concurrency as usize, &stop).await;
                for (resource, report) in resources.iter().zip(reports) {
                    match report {
                        Ok(report) => say!("{account} {:<34} {}", resource.object, report),
                        Err(e) => {
                            failed += 1;
                            say!("{account} {:<34} failed: {e:#}", resource.object);
                        }
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} backfill(s) failed; run again to resume them");
            }
            Ok(())
        }
        PullCommand::Reconcile {
            every,
            since,
            accounts,
        } => {
            let cfg = PullConfig::load(env)?;
            let ctx = PullContext::build(&cfg).await?;
            let stop = shutdown::on_signals(config::shutdown_grace(env)?);
            let accounts = cfg.accounts_or(&accounts);
            match every {
                Some(secs) => {
                    let every = Duration::from_secs(secs.max(1));
                    reconcile::run_every(&ctx, &accounts, since, every, &stop).await
                }
                None => {
                    for account in accounts.resolve(&ctx).await? {
                        let opts = reconcile::ReconcileOptions { account, since };
                        let r = reconcile::run_once(&ctx, &opts).await?;
                        say!(
                        "{}: {} events since {} ({} API calls), {} not in the ledger published; cursor now {}",
                        opts.account, r.seen, r.from, r.pages, r.published, r.cursor
                    );
                    }
                    Ok(())
                }
            }
        }
        PullCommand::Refresh {
            types,
            every,
            accounts,
        } => {
            let resources = if types.is_empty() {
                refresh::default_types()
            } else {
                registry::resolve(&types)?
            };
            let cfg = PullConfig::load(env)?;
            let ctx = PullContext::build(&cfg).await?;
            let stop = shutdown::on_signals(config::shutdown_grace(env)?);
            let accounts = cfg.accounts_or(&accounts);
            if let Some(secs) = every {
                let every = Duration::from_secs(secs.max(1));
                refresh::run_every(&ctx, &resources, &accounts, every, &stop).await;
                return Ok(());
            }
            for account in &accounts.resolve(&ctx).await? {
                for &resource in &resources {
                    if stop.is_cancelled() {
                        return Ok(());
                    }
                    let report = refresh::run_once(&ctx, resource, account, &stop).await?;
                    say!("[{account}] {}: {report}", resource.relation);
                }
            }
            Ok(())
        }
        PullCommand::Diff {
            types,
            repair,
            exit_code,
            accounts,
        } => {
            let resources = registry::resolve(&types)?;
            let cfg = PullConfig::load(env)?;
            let ctx = PullContext::build(&cfg).await?;
            let mut clean = true;
            for account in cfg.accounts_or(&accounts).resolve(&ctx).await? {
                for &resource in &resources {
                    if resource.listing == registry::Listing::None {
                        continue;
                    }
                    let report = diff::run(&ctx, resource, &account, repair).await?;
                    say!("[{account}]\n{report}\n");
                    clean &= report.is_clean();
                }
            }
            if exit_code && !clean {
                std::process::exit(1);
            }
            Ok(())
        }
        PullCommand::Resync {
            ids,
            type_name,
            account,
        } => {
            let targets = resync::plan(&ids, type_name.as_deref(), &account)?;
            let cfg = PullConfig::load(env)?;
            let ctx = PullContext::build(&cfg).await?;
            let results =
                resync::run(&ctx.stripe, &ctx.producer, &ctx.topic, &ctx.pool, &targets).await;
            let mut failed = 0;
            for result in results {
                match result {
                    Ok(r) => say!(
                        "{} {} [{}] {} → {}",
                        r.id,
                        r.object,
                        r.account,
                        r.state,
                        r.event_id
                    ),
                    Err(f) => {
                        failed += 1;
                        say!("{} failed: {}", f.id, f.error);
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} objects not resynced", targets.len());
            }
            Ok(())
        }
    }
}
