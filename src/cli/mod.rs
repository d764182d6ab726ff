//! The `stripe-sync` command line: argument definitions and dispatch to
//! the library. Each command's logic lives in its own module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::apps::orders::{self, export, notifications};
use crate::kafka::EventProducer;
use crate::ops::topics::TailFrom;
use crate::ops::{commands, prune, Inventory};
use crate::{config, db, registry, serve, shutdown, telemetry};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// A line of a command's answer on stdout. A reader that has gone (`| head`)
/// ends the output, not the command: a failed write is dropped, where
/// `println!` would panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod pull;
mod webhooks;

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
    #[command(flatten)]
    Pull(pull::PullCommand),
    /// The Stripe webhook endpoint serve's events come from: install it
    /// with exactly the events the engine handles, or check it.
    Webhooks {
        #[command(subcommand)]
        command: webhooks::WebhooksCommand,
    },
    /// The resource registry: what is mirrored, and the SQL of its relations.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Inspect our Kafka topics without disturbing any worker.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Inspect and replay dead-lettered messages.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Delete ledger rows, delivered outbox rows, sent notifications and
    /// acknowledged export batches older than an age (at least 30 days, so deduplication still holds).
    Prune {
        /// The age: 90d, 2160h, … (30d at least).
        #[arg(long, default_value = "90d", value_parser = prune::parse_duration)]
        older_than: Duration,
        /// Keep running, pruning at this interval (12h, 1d, …) until SIGTERM.
        #[arg(long, value_parser = prune::parse_duration)]
        every: Option<Duration>,
    },
    /// Exports read from the mirror.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// The order notifier's emails: list them, send a failed one again.
    Notifications {
        #[command(subcommand)]
        command: NotificationsCommand,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// Write the checkout sessions that became paid since this export's last
    /// run to DIR/paid_sessions_YYYY-MM-DD_HH-MM-SS.json (UTC); no file when
    /// there are none.
    PaidSessions {
        /// Only sessions of this payment link (repeatable); all by default.
        #[arg(long = "payment-link", value_parser = parse_payment_link)]
        payment_links: Vec<String>,
        /// The export's name: each name keeps its own watermark.
        #[arg(long, default_value = export::DEFAULT_NAME, value_parser = parse_export_name)]
        name: String,
        /// Where the files go.
        #[arg(long, default_value = ".")]
        out: std::path::PathBuf,
        /// Only sessions created at or after this time (RFC 3339, YYYY-MM-DD or unix seconds).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
    },
}

#[derive(Subcommand)]
enum NotificationsCommand {
    /// Notifications, newest first.
    List {
        /// Only this status: pending, sent or failed.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(notifications::NotificationStatus::NAMES))]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Queue a failed notification again (once its cause is fixed).
    Retry { id: i64 },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Every mirrored Stripe type: object, relation, how it stays current
    /// (events or pull), delete semantics, child lists and typed columns.
    Types,
    /// The SQL creating the relations of the given types (for a new type's
    /// migration), or of a child list added to a type that has its relation.
    Ddl {
        /// Object types (`invoice`), relations (`invoices`) or child lists
        /// (`invoice_line_items`); `all` for every type.
        #[arg(required = true)]
        types: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Every topic of ours with partitions, watermarks and message counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Committed offset, high watermark and lag per partition, per group.
    Lag {
        /// Only this consumer group (default: the inbound and outbound groups).
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print messages (key, partition, offset, timestamp, headers, JSON).
    Tail {
        topic: String,
        /// From the oldest retained message.
        #[arg(long, conflicts_with = "last")]
        from_beginning: bool,
        /// The last N messages of each partition.
        #[arg(long, default_value_t = 10)]
        last: i64,
        /// Only messages with this key (e.g. a cus_… id or a local customer id).
        #[arg(long)]
        key: Option<String>,
        /// Keep printing new messages until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead letters not yet replayed (with --all, also replayed ones).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One dead letter with its error and message.
    Show {
        /// topic:partition:offset, as `dlq list` prints it.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on their source topic.
    Replay {
        /// Dead letters to replay (repeatable).
        #[arg(long = "id", required_unless_present = "all")]
        ids: Vec<String>,
        /// Every dead letter not replayed yet.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

fn parse_payment_link(raw: &str) -> Result<String, String> {
    if raw.starts_with("plink_") && raw.len() > 6 {
        Ok(raw.to_owned())
    } else {
        Err(format!("{raw:?} is not a payment link id (plink_…)"))
    }
}

fn parse_export_name(raw: &str) -> Result<String, String> {
    export::valid_name(raw).map(str::to_owned)
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

/// Parses the command line and runs the command.
pub async fn run() -> anyhow::Result<()> {
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
                say!("database is up to date");
            }
            for name in applied {
                say!("applied {name}");
            }
            Ok(())
        }
        Command::Pull(command) => pull::run(command, &env).await,
        Command::Webhooks { command } => webhooks::run(command, &env).await,
        Command::Catalog { command } => {
            match command {
                CatalogCommand::Types => say!("{}", registry::describe().trim_end()),
                CatalogCommand::Ddl { types } => {
                    say!("{}", registry::ddl::for_names(&types)?)
                }
            }
            Ok(())
        }
        Command::Topics { command } => {
            let inv = Inventory::load(&env)?;
            let output = match command {
                TopicsCommand::List { json } => {
                    tokio::task::spawn_blocking(move || commands::topics_list(&inv, json)).await??
                }
                TopicsCommand::Lag { group, json } => {
                    tokio::task::spawn_blocking(move || {
                        commands::topics_lag(&inv, group.as_deref(), json)
                    })
                    .await??
                }
                TopicsCommand::Tail {
                    topic,
                    from_beginning,
                    last,
                    key,
                    follow,
                    json,
                } => {
                    let req = commands::TailRequest {
                        topic,
                        from: if from_beginning {
                            TailFrom::Beginning
                        } else {
                            TailFrom::Last(last)
                        },
                        key,
                        follow,
                        json,
                    };
                    let stop = Arc::new(AtomicBool::new(false));
                    let token = shutdown::on_signals(config::shutdown_grace(&env)?);
                    let flag = stop.clone();
                    tokio::spawn(async move {
                        token.cancelled().await;
                        flag.store(true, Ordering::Relaxed);
                    });
                    tokio::task::spawn_blocking(move || {
                        commands::topics_tail(&inv, &req, &stop, &mut std::io::stdout())
                    })
                    .await??;
                    return Ok(());
                }
            };
            say!("{output}");
            Ok(())
        }
        Command::Dlq { command } => {
            let inv = Inventory::load(&env)?;
            let pool = db::pool(&config::DatabaseConfig::load(&env)?);
            match command {
                DlqCommand::List { all, json } => {
                    say!(
                        "{}",
                        tokio::task::spawn_blocking(move || commands::dlq_list(
                            &inv, &pool, all, json
                        ))
                        .await??
                    )
                }
                DlqCommand::Show { id, json } => {
                    say!(
                        "{}",
                        tokio::task::spawn_blocking(move || commands::dlq_show(
                            &inv, &pool, &id, json
                        ))
                        .await??
                    )
                }
                DlqCommand::Replay { ids, all } => {
                    let kafka = config::KafkaConfig::load(&env)?;
                    let producer = EventProducer::for_config(&kafka)?;
                    let selection = if all {
                        commands::Selection::AllPending
                    } else {
                        commands::Selection::Ids(ids)
                    };
                    let done = commands::dlq_replay(&inv, &pool, &producer, selection).await?;
                    producer.flush(Duration::from_secs(5));
                    say!("replayed {} dead letter(s)", done.len());
                    for id in done {
                        say!("  {id}");
                    }
                }
            }
            Ok(())
        }
        Command::Export {
            command:
                ExportCommand::PaidSessions {
                    payment_links,
                    name,
                    out,
                    since,
                },
        } => {
            let spec = export::ExportSpec {
                name,
                payment_links,
                since: since.and_then(|s| chrono::DateTime::from_timestamp(s, 0)),
                limit: None,
            };
            let pool = db::pool(&config::DatabaseConfig::load(&env)?);
            let said = tokio::task::spawn_blocking(move || {
                orders::commands::export_paid_sessions(&mut *pool.get()?, &spec, &out)
            })
            .await??;
            say!("{said}");
            Ok(())
        }
        Command::Prune { older_than, every } => {
            let pool = db::pool(&config::DatabaseConfig::load(&env)?);
            let events_retention = config::events_retention(&env)?;
            let shutdown = shutdown::on_signals(config::shutdown_grace(&env)?);
            loop {
                let pool = pool.clone();
                let pruned = tokio::task::spawn_blocking(move || {
                    anyhow::Ok(prune::prune(
                        &mut *pool.get()?,
                        older_than,
                        events_retention,
                    )?)
                })
                .await??;
                say!("{pruned}");
                let Some(every) = every else { return Ok(()) };
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(every) => {}
                }
            }
        }
        Command::Notifications { command } => {
            let pool = db::pool(&config::DatabaseConfig::load(&env)?);
            let said = tokio::task::spawn_blocking(move || {
                let conn = &mut *pool.get()?;
                match command {
                    NotificationsCommand::List {
                        status,
                        limit,
                        json,
                    } => orders::commands::list(conn, status.as_deref(), limit, json),
                    NotificationsCommand::Retry { id } => orders::commands::retry(conn, id),
                }
            })
            .await??;
            say!("{said}");
            Ok(())
        }
    }
}
