//! The test suite's real SMTP server (aiosmtpd, `tests/py/smtp_sink.py`),
//! driven by the suite's own handle on it (`tests/it/support/smtp.rs`),
//! with the few helpers that handle expects of its parent module.

use std::future::Future;
use std::time::{Duration, Instant};

#[path = "../../tests/it/support/smtp.rs"]
#[allow(dead_code)]
pub mod smtp;

fn required_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the soak through scripts/chaos"))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

fn free_port() -> u16 {
    crate::common::free_port().expect("a free port")
}

async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
