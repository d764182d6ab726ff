//! localstripe (PyPI): a stateful Stripe fake that sends signed webhooks.
//! One instance per test, on its own port, started from scratch.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct LocalStripe {
    pub port: u16,
    child: Option<Child>,
    http: reqwest::Client,
    state: std::path::PathBuf,
    started_once: bool,
    webhook: Option<(String, String)>,
}

pub const API_KEY: &str = "sk_test_localstripe";

impl LocalStripe {
    pub async fn start() -> Self {
        let port = super::free_port();
        let mut ls = Self {
            port,
            child: None,
            http: reqwest::Client::new(),
            state: std::env::temp_dir()
                .join(super::unique("localstripe"))
                .with_extension("pickle"),
            started_once: false,
            webhook: None,
        };
        ls.resume().await;
        ls
    }

    /// Starts the process (again). After a `stop` it resumes from its own
    /// state file, with the webhook registered again.
    pub async fn resume(&mut self) {
        let launcher = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/localstripe_at.py");
        let mut args = vec![launcher.to_owned(), "--port".into(), self.port.to_string()];
        if !self.started_once {
            args.push("--from-scratch".into());
        }
        self.started_once = true;
        let child = Command::new(super::required_env("STRIPE_SYNC_PYTHON"))
            .args(&args)
            .env("LOCALSTRIPE_STATE", &self.state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start localstripe");
        self.child = Some(child);
        let http = self.http.clone();
        let url = format!("{}/v1/customers", self.base());
        super::wait_for(Duration::from_secs(30), "localstripe to answer", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(url).bearer_auth(API_KEY).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        if let Some((url, secret)) = self.webhook.clone() {
            self.register_webhook(&url, &secret).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes localstripe send signed webhooks for every event to `url`.
    pub async fn register_webhook(&mut self, url: &str, secret: &str) {
        self.webhook = Some((url.to_owned(), secret.to_owned()));
        let r = self
            .http
            .post(format!("{}/_config/webhooks/stripe-sync", self.base()))
            .form(&[("url", url), ("secret", secret)])
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "webhook registration failed: {}",
            r.status()
        );
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base()))
            .bearer_auth(API_KEY)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    pub async fn create_customer(&self, form: &[(&str, &str)]) -> Value {
        self.call(reqwest::Method::POST, "/v1/customers", form)
            .await
    }

    pub async fn update_customer(&self, id: &str, form: &[(&str, &str)]) -> Value {
        self.call(reqwest::Method::POST, &format!("/v1/customers/{id}"), form)
            .await
    }

    pub async fn delete_customer(&self, id: &str) -> Value {
        self.call(reqwest::Method::DELETE, &format!("/v1/customers/{id}"), &[])
            .await
    }

    /// How many events localstripe has emitted whose type starts with `prefix`.
    pub async fn event_count(&self, prefix: &str) -> usize {
        let page = self
            .call(reqwest::Method::GET, "/v1/events?limit=100", &[])
            .await;
        let events = page["data"].as_array().unwrap();
        assert!(
            page["has_more"] != Value::Bool(true),
            "more than 100 events; page through them"
        );
        events
            .iter()
            .filter(|e| e["type"].as_str().unwrap_or_default().starts_with(prefix))
            .count()
    }

    /// Every live customer, following `has_more` pages.
    pub async fn list_customers(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = "/v1/customers?limit=100".to_owned();
            if let Some(a) = &after {
                path.push_str(&format!("&starting_after={a}"));
            }
            let page = self.call(reqwest::Method::GET, &path, &[]).await;
            let data = page["data"].as_array().unwrap().clone();
            after = data
                .last()
                .and_then(|c| c["id"].as_str())
                .map(str::to_owned);
            all.extend(data);
            if page["has_more"] != Value::Bool(true) || after.is_none() {
                return all;
            }
        }
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.state);
    }
}
