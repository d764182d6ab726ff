//! `stripe-sync webhooks install|status`: the Stripe webhook endpoint that
//! feeds `serve`, made and kept through Stripe's webhook endpoint API
//! instead of the dashboard. It subscribes to exactly the event types the
//! registry handles ([`crate::registry::handled_event_types`]).
//!
//! Install is idempotent: an endpoint of the same URL (and the same reach:
//! the account's own events, or its connected accounts' with `connect`) is
//! updated if its events differ and left alone if not; otherwise one is
//! created, under an `Idempotency-Key` derived from what is asked, so a
//! create whose answer was lost and is sent again makes one endpoint.
//! Stripe shows an endpoint's signing secret once, in the create's answer:
//! it is written to a file (never printed), which is checked to be
//! writable before the endpoint is created.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{AccountId, ObjectId, StripeClient, StripeError};
use crate::retry::Backoff;

const COLLECTION: &str = "webhook_endpoints";
/// What `serve` reads its signing secrets from.
pub const SECRET_VARIABLE: &str = "STRIPE_WEBHOOK_SECRET";
/// The `metadata` key marking the endpoints this command made.
const MANAGED_BY: &str = "managed_by";

/// The endpoint asked for.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub url: String,
    /// Events of the connected accounts instead of the account's own.
    pub connect: bool,
    /// The version Stripe renders the endpoint's events in: the engine's.
    pub api_version: String,
    pub events: Vec<&'static str>,
}

/// A webhook endpoint as Stripe returns it (the fields we read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub enabled_events: BTreeSet<String>,
    pub api_version: Option<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Set on an endpoint of connected accounts' events.
    pub connect: bool,
}

impl Endpoint {
    fn parse(v: &Value) -> Option<Self> {
        Some(Self {
            id: v.get("id")?.as_str()?.to_owned(),
            url: v.get("url")?.as_str()?.to_owned(),
            enabled_events: v
                .get("enabled_events")?
                .as_array()?
                .iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect(),
            api_version: v
                .get("api_version")
                .and_then(Value::as_str)
                .map(str::to_owned),
            status: v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("enabled")
                .to_owned(),
            connect: v.get("application").is_some_and(|a| !a.is_null()),
        })
    }
}

/// How one endpoint differs from what is wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointStatus {
    pub endpoint: Endpoint,
    /// Handled event types it does not send.
    pub missing: Vec<String>,
    /// Event types it sends that the engine ignores (`*` stands for all).
    pub extra: Vec<String>,
    /// Its events are rendered in another version than the engine's.
    pub version_differs: bool,
}

impl EndpointStatus {
    fn of(endpoint: Endpoint, wanted: &Wanted) -> Self {
        let want: BTreeSet<String> = wanted.events.iter().map(|e| e.to_string()).collect();
        let every = endpoint.enabled_events.contains("*");
        Self {
            missing: if every {
                Vec::new()
            } else {
                want.difference(&endpoint.enabled_events).cloned().collect()
            },
            extra: endpoint.enabled_events.difference(&want).cloned().collect(),
            version_differs: endpoint
                .api_version
                .as_deref()
                .is_some_and(|v| v != wanted.api_version),
            endpoint,
        }
    }

    pub fn is_exact(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && !self.version_differs
            && self.endpoint.status == "enabled"
    }
}

/// Every endpoint of `wanted.url` with its reach, compared with what is
/// wanted (the first is the one `install` keeps).
pub async fn status(client: &StripeClient, wanted: &Wanted) -> anyhow::Result<Vec<EndpointStatus>> {
    let mut ours: Vec<Endpoint> = list(client)
        .await?
        .into_iter()
        .filter(|e| e.url == wanted.url && e.connect == wanted.connect)
        .collect();
    ours.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(ours
        .into_iter()
        .map(|e| EndpointStatus::of(e, wanted))
        .collect())
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Created { id: String, secret_file: PathBuf },
    Updated { id: String, before: EndpointStatus },
    Unchanged { id: String },
}

/// Makes the endpoint match `wanted`; the secret of a new one goes to
/// `secret_file`.
pub async fn install(
    client: &StripeClient,
    wanted: &Wanted,
    secret_file: &Path,
) -> anyhow::Result<(Installed, Vec<EndpointStatus>)> {
    let found = status(client, wanted).await?;
    let events_form = || {
        wanted
            .events
            .iter()
            .map(|e| ("enabled_events[]".to_owned(), e.to_string()))
    };
    let Some(first) = found.first() else {
        // Fail before Stripe makes a secret that could not be kept.
        check_writable(secret_file)?;
        let mut form = vec![
            ("url".to_owned(), wanted.url.clone()),
            ("api_version".to_owned(), wanted.api_version.clone()),
            ("description".to_owned(), "stripe-sync".to_owned()),
            (format!("metadata[{MANAGED_BY}]"), "stripe-sync".to_owned()),
        ];
        if wanted.connect {
            form.push(("connect".to_owned(), "true".to_owned()));
        }
        form.extend(events_form());
        let key = idempotency_key("create", &form);
        let created = post(client, &format!("/v1/{COLLECTION}"), &form, &key).await?;
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        let secret = created["secret"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("Stripe created {id} but sent no signing secret"))?;
        write_secret(secret_file, secret).map_err(|e| {
            anyhow::anyhow!(
                "created {id}, but its signing secret could not be written to {}: {e:#}; \
                 delete the endpoint and run install again",
                secret_file.display()
            )
        })?;
        return Ok((
            Installed::Created {
                id,
                secret_file: secret_file.to_owned(),
            },
            found,
        ));
    };
    let id = first.endpoint.id.clone();
    let events_differ = !first.missing.is_empty() || !first.extra.is_empty();
    if !events_differ && first.endpoint.status == "enabled" {
        return Ok((Installed::Unchanged { id }, found));
    }
    let mut form = vec![("disabled".to_owned(), "false".to_owned())];
    form.extend(events_form());
    let key = idempotency_key(&id, &form);
    let path = format!(
        "/v1/{COLLECTION}/{}",
        ObjectId::of_kind(&id, "we_")
            .ok_or_else(|| anyhow::anyhow!("Stripe listed an endpoint id {id:?}"))?
    );
    post(client, &path, &form, &key).await?;
    Ok((
        Installed::Updated {
            id,
            before: first.clone(),
        },
        found,
    ))
}

async fn list(client: &StripeClient) -> anyhow::Result<Vec<Endpoint>> {
    let mut backoff = backoff();
    let listed = loop {
        match client.list_all(&AccountId::PLATFORM, COLLECTION, &[]).await {
            Err(e) if e.is_transient() && backoff.attempts() < 5 => {
                tokio::time::sleep(backoff.next_delay(e.retry_after())).await
            }
            other => break other?,
        }
    };
    Ok(listed.iter().filter_map(Endpoint::parse).collect())
}

/// A POST retried on 429, 5xx and network errors under the same key, so a
/// request whose answer was lost is answered from Stripe's record of it.
async fn post(
    client: &StripeClient,
    path: &str,
    form: &[(String, String)],
    key: &str,
) -> anyhow::Result<Value> {
    let mut backoff = backoff();
    loop {
        match client.post(&AccountId::PLATFORM, path, form, key).await {
            Err(e) if e.is_transient() && backoff.attempts() < 5 => {
                tokio::time::sleep(backoff.next_delay(e.retry_after())).await
            }
            Err(StripeError::Api {
                status, message, ..
            }) => {
                anyhow::bail!("Stripe refused {path} ({status}): {message}")
            }
            other => return Ok(other?),
        }
    }
}

fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(300), Duration::from_secs(10))
}

/// The same request asked again (a rerun after a lost answer) gets the
/// same key; anything different, a new one.
fn idempotency_key(what: &str, form: &[(String, String)]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(what.as_bytes());
    for (k, v) in form {
        hasher.update([0]);
        hasher.update(k.as_bytes());
        hasher.update([1]);
        hasher.update(v.as_bytes());
    }
    format!(
        "stripe-sync-webhooks-{}",
        hex::encode(&hasher.finalize()[..16])
    )
}

/// A `.env` file (its name ends in `.env`) gets the secret as
/// `STRIPE_WEBHOOK_SECRET`, first in the list, the secrets it held kept
/// after it (serve accepts any of them, so events still signed with an
/// older endpoint's secret verify); any other file holds the secret alone.
/// Written whole to a new file and renamed over the old, readable by its
/// owner only.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let is_env = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".env"));
    let text = if is_env {
        let old = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        with_secret(&old, secret)
    } else {
        format!("{secret}\n")
    };
    let tmp = path.with_extension("stripe-sync-tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `.env` text with `secret` first in `STRIPE_WEBHOOK_SECRET`.
fn with_secret(env: &str, secret: &str) -> String {
    let prefix = format!("{SECRET_VARIABLE}=");
    let mut found = false;
    let mut lines: Vec<String> = env
        .lines()
        .map(|line| match line.strip_prefix(&prefix) {
            Some(old) if !found => {
                found = true;
                let old = old.trim().trim_matches('"');
                let kept = old
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && *s != secret);
                let all: Vec<&str> = std::iter::once(secret).chain(kept).collect();
                format!("{prefix}{}", all.join(","))
            }
            _ => line.to_owned(),
        })
        .collect();
    if !found {
        lines.push(format!("{prefix}{secret}"));
    }
    lines.join("\n") + "\n"
}

fn check_writable(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let probe = dir.join(".stripe-sync-write-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| anyhow::anyhow!("cannot write the secret into {}: {e}", dir.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        anyhow::ensure!(
            !meta.permissions().readonly(),
            "{} is read-only",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_file_gets_the_new_secret_first_and_keeps_the_rest() {
        assert_eq!(
            with_secret("A=1\nSTRIPE_WEBHOOK_SECRET=whsec_old\nB=2", "whsec_new"),
            "A=1\nSTRIPE_WEBHOOK_SECRET=whsec_new,whsec_old\nB=2\n"
        );
        assert_eq!(
            with_secret("", "whsec_new"),
            "STRIPE_WEBHOOK_SECRET=whsec_new\n"
        );
        assert_eq!(
            with_secret("STRIPE_WEBHOOK_SECRET=whsec_new,whsec_old\n", "whsec_new"),
            "STRIPE_WEBHOOK_SECRET=whsec_new,whsec_old\n",
            "written twice, kept once"
        );
    }

    #[test]
    fn a_request_asked_again_has_the_same_key() {
        let form = vec![("url".to_owned(), "https://x".to_owned())];
        assert_eq!(
            idempotency_key("create", &form),
            idempotency_key("create", &form)
        );
        let other = vec![("url".to_owned(), "https://y".to_owned())];
        assert_ne!(
            idempotency_key("create", &form),
            idempotency_key("create", &other)
        );
    }
}
