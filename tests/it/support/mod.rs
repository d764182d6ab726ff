//! Shared test harness: real Postgres, a real Kafka-protocol broker and
//! localstripe, each test with its own database, topics and group.
//! `scripts/test` starts the services and exports where they are.

pub mod broker;
pub mod catalog_stripe;
pub mod db;
pub mod fake_salesforce;
pub mod fake_stripe;
pub mod fixtures;
pub mod localstripe;
pub mod smtp;
pub mod stack;
pub mod stripe_proxy;
mod waiting;

pub use waiting::{unique, wait_for};

/// A variable `scripts/test` exports; a clear message if run bare.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite through scripts/test, which starts the services")
    })
}

/// Transient failures the consume loop has retried on `topic` in this
/// process (each test's topics are its own).
pub fn retries_on(topic: &str) -> u64 {
    stripe_sync::metrics::RETRIES
        .with_label_values(&[topic])
        .get()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a built binary of ours (`env!("CARGO_BIN_EXE_…")`) with `args`
/// and exactly `env` (plus `PATH`), warnings and errors on the test's
/// stderr: a real process the test can SIGKILL.
pub fn spawn_binary(
    binary: &str,
    args: &[&str],
    env: &stripe_sync::config::Env,
) -> std::process::Child {
    std::process::Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env.vars())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e}"))
}

/// Sends `request` and reads its answer as JSON, whatever its status.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

pub fn init_logs() {
    stripe_sync::telemetry::init();
}
