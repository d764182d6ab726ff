//! Shared test harness: real Postgres, a real Kafka-protocol broker and
//! localstripe, each test with its own database, topics and group.
//! `scripts/test` starts the services and exports where they are.

pub mod broker;
pub mod browser;
pub mod catalog_stripe;
pub mod db;
pub mod fake_salesforce;
pub mod fake_stripe;
pub mod fake_webhook_endpoints;
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
/// and exactly `env` (plus `PATH`): a real process the test can SIGKILL,
/// its warnings and errors in the test's captured output.
pub fn spawn_binary(
    binary: &str,
    args: &[&str],
    env: &stripe_sync::config::Env,
) -> std::process::Child {
    spawn_captured(
        std::process::Command::new(binary)
            .args(args)
            .env_clear()
            .envs(env.vars())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null()),
    )
}

/// Starts `command` with its stderr copied, line by line, into the test's
/// captured output: the test harness hands a thread started from a test
/// that test's capture, so the lines are shown with its report should it
/// fail, and dropped should it pass.
pub fn spawn_captured(command: &mut std::process::Command) -> std::process::Child {
    use std::io::BufRead;
    let name = std::path::Path::new(command.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = command
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stderr);
        let mut line = Vec::new();
        // Bytes, not `lines()`: a line that is not UTF-8 must not stop the
        // copying, or the child would block once the pipe fills.
        while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            eprint!("[{name}] {}", String::from_utf8_lossy(&line));
            line.clear();
        }
    });
    child
}

/// Sends `request` and reads its answer as JSON, whatever its status.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The engine's logs, as a process of ours writes them, but into the
/// test's captured output: a passing test's logs are dropped and a failing
/// one's are printed with its report. `RUST_LOG` filters them (default
/// `info`); `cargo test -- --nocapture` shows them all as they come.
pub fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    // One subscriber for the whole test binary; the first test sets it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
