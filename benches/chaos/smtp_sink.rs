//! The test suite's real SMTP server (aiosmtpd, `tests/py/smtp_sink.py`),
//! driven by the suite's own handle on it (`tests/it/support/smtp.rs`),
//! with the few helpers that handle expects of its parent module.

#[path = "../../tests/it/support/smtp.rs"]
#[allow(dead_code)]
pub mod smtp;
#[path = "../../tests/it/support/waiting.rs"]
mod waiting;

use waiting::{unique, wait_for};

fn required_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the soak through scripts/chaos"))
}

fn free_port() -> u16 {
    crate::common::free_port().expect("a free port")
}
