//! `stripe-sync webhooks install|status`: the Stripe webhook endpoint
//! serve's events come from, set up and checked from the command line
//! (the logic is `stripe::webhook_endpoints`).

use std::path::PathBuf;

use clap::Subcommand;

use crate::config::{Env, StripeApiConfig};
use crate::registry;
use crate::stripe::webhook_endpoints::{self, EndpointStatus, Installed, Wanted, SECRET_VARIABLE};

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Create the webhook endpoint with exactly the event types the engine
    /// handles, or bring an existing one of the URL to them; the signing
    /// secret of a new one is written to a file, never printed. Running it
    /// again changes nothing.
    Install {
        /// Where Stripe sends events: serve's `/webhooks/stripe`.
        #[arg(long, value_parser = parse_url)]
        url: String,
        /// The connected accounts' events (a Connect endpoint) instead of
        /// the account's own.
        #[arg(long)]
        connect: bool,
        /// Where a new endpoint's secret goes: a `.env` file gets it as
        /// STRIPE_WEBHOOK_SECRET (first, older secrets kept), any other
        /// file holds it alone.
        #[arg(long, default_value = ".env")]
        secret_file: PathBuf,
    },
    /// What the endpoints of a URL lack or send beyond the handled events.
    Status {
        #[arg(long, value_parser = parse_url)]
        url: String,
        #[arg(long)]
        connect: bool,
        #[arg(long)]
        json: bool,
        /// Exit with status 1 unless exactly one endpoint matches exactly.
        #[arg(long)]
        exit_code: bool,
    },
}

fn parse_url(raw: &str) -> Result<String, String> {
    match reqwest::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(raw.to_owned())
        }
        _ => Err(format!("{raw:?} is not an http(s) URL")),
    }
}

pub async fn run(command: WebhooksCommand, env: &Env) -> anyhow::Result<()> {
    let cfg = StripeApiConfig::load(env)?;
    let client = cfg.client()?;
    let wanted = |url: String, connect: bool| Wanted {
        url,
        connect,
        api_version: cfg.api_version.clone(),
        events: registry::handled_event_types(),
    };
    match command {
        WebhooksCommand::Install {
            url,
            connect,
            secret_file,
        } => {
            let wanted = wanted(url, connect);
            let (installed, found) =
                webhook_endpoints::install(&client, &wanted, &secret_file).await?;
            let n = wanted.events.len();
            match installed {
                Installed::Created { id, secret_file } => say!(
                    "created {id} for {} ({n} event types, API version {}); its signing secret \
                     is in {} as {SECRET_VARIABLE}: restart serve to read it",
                    wanted.url,
                    wanted.api_version,
                    secret_file.display()
                ),
                Installed::Updated { id, before } => say!(
                    "updated {id}: {} event types added, {} removed{}; its signing secret is unchanged",
                    before.missing.len(),
                    before.extra.len(),
                    if before.endpoint.status == "enabled" { "" } else { ", enabled again" }
                ),
                Installed::Unchanged { id } => say!("{id} is up to date ({n} event types)"),
            }
            warn_about(&found);
            Ok(())
        }
        WebhooksCommand::Status {
            url,
            connect,
            json,
            exit_code,
        } => {
            let wanted = wanted(url, connect);
            let found = webhook_endpoints::status(&client, &wanted).await?;
            if json {
                say!("{}", serde_json::to_string_pretty(&found)?);
            } else if found.is_empty() {
                say!(
                    "no endpoint sends {} its events: run `stripe-sync webhooks install --url {}{}`",
                    wanted.url,
                    wanted.url,
                    if connect { " --connect" } else { "" }
                );
            } else {
                for status in &found {
                    describe(status, wanted.events.len());
                }
                warn_about(&found);
            }
            let exact = found.len() == 1 && found[0].is_exact();
            if exit_code && !exact {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn describe(status: &EndpointStatus, handled: usize) {
    let e = &status.endpoint;
    say!(
        "{} {} {}, API version {}, {} of {handled} handled event types",
        e.id,
        e.url,
        e.status,
        e.api_version.as_deref().unwrap_or("the account's default"),
        handled - status.missing.len()
    );
    if !status.missing.is_empty() {
        say!("  missing: {}", status.missing.join(", "));
    }
    if !status.extra.is_empty() {
        say!(
            "  extra (ignored by the engine): {}",
            status.extra.join(", ")
        );
    }
}

/// What install cannot fix by itself.
fn warn_about(found: &[EndpointStatus]) {
    if let Some(first) = found.first() {
        if first.version_differs {
            say!(
                "warning: {} renders events in API version {}, not the engine's; Stripe cannot \
                 change an endpoint's version: delete it and install again",
                first.endpoint.id,
                first.endpoint.api_version.as_deref().unwrap_or("?")
            );
        }
    }
    for extra in found.iter().skip(1) {
        say!(
            "warning: {} also sends events to this URL (each event arrives twice, harmlessly, \
             but costs twice): delete it in Stripe",
            extra.endpoint.id
        );
    }
}
