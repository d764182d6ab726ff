//! localstripe (PyPI): a stateful Stripe fake that sends signed webhooks.
//! One instance per test, on its own port, started from scratch.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct LocalStripe {
    pub port: u16,
    child: Option<Child>,
    http: reqwest::Client,
}

pub const API_KEY: &str = "sk_test_localstripe";

impl LocalStripe {
    pub async fn start() -> Self {
        let port = super::free_port();
        let mut ls = Self {
            port,
            child: None,
            http: reqwest::Client::new(),
        };
        ls.resume().await;
        ls
    }

    /// Starts the process (again). The store lives in memory, so a restart
    /// begins empty: only use after `stop` when that is what the test wants.
    pub async fn resume(&mut self) {
        let child = Command::new(super::required_env("STRIPE_SYNC_PYTHON"))
            .args([
                "-m",
                "localstripe",
                "--port",
                &self.port.to_string(),
                "--from-scratch",
            ])
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
    pub async fn register_webhook(&self, url: &str, secret: &str) {
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

    async fn call(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
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
    }
}
