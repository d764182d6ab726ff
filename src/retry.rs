//! Exponential backoff with jitter, shared by every retry loop.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Waits `wait` unless shutdown comes first: the pause of every retry
/// loop that must not hold up a stop. True when shutdown was requested
/// during the wait.
pub async fn sleep_or_shutdown(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempts: 0,
        }
    }

    /// The wait before the next attempt. A server-given `Retry-After` wins
    /// over our own schedule (capped at `max` so a bogus value cannot stall
    /// a worker for hours).
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        if let Some(wait) = retry_after {
            return wait.min(self.max);
        }
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempts.min(16).saturating_sub(1));
        let cap = exp.min(self.max);
        // Half fixed, half random: workers do not retry in lockstep, and
        // the wait still grows with every attempt.
        let half = cap / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay(None);
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        for _ in 0..20 {
            assert!(b.next_delay(None) <= Duration::from_secs(2));
        }
        assert!(b.next_delay(None) >= Duration::from_secs(1));
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
        b.reset();
        assert!(b.next_delay(None) <= Duration::from_millis(100));
    }
}
