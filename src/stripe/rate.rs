//! A token bucket shared by every call of one Stripe client, so bulk jobs
//! (backfill, reconcile, diff) stay under the account's rate limit instead
//! of provoking 429 storms. A 429's `Retry-After` pauses every caller.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last_refill: Instant,
    paused_until: Option<Instant>,
    /// When the requests of the last second were let through.
    granted: std::collections::VecDeque<Instant>,
}

impl RateLimiter {
    /// `per_second` requests per second, with no burst beyond one request:
    /// the spacing is even, so any one-second window stays within the rate.
    pub fn new(per_second: f64) -> Self {
        assert!(per_second > 0.0, "rate must be positive");
        Self {
            per_second,
            state: Mutex::new(State {
                tokens: 1.0,
                last_refill: Instant::now(),
                paused_until: None,
                granted: std::collections::VecDeque::new(),
            }),
        }
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Waits until a request may be sent.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => until - now,
                    _ => {
                        s.paused_until = None;
                        let elapsed = now.duration_since(s.last_refill).as_secs_f64();
                        s.tokens = (s.tokens + elapsed * self.per_second).min(1.0);
                        s.last_refill = now;
                        if s.tokens >= 1.0 {
                            s.tokens -= 1.0;
                            s.granted.push_back(now);
                            forget_before(&mut s.granted, now);
                            return;
                        }
                        Duration::from_secs_f64((1.0 - s.tokens) / self.per_second)
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Whether the last second used nine tenths of the budget or more (or
    /// a 429 pauses everyone): more requests in flight would only queue.
    pub async fn saturated(&self) -> bool {
        let mut s = self.state.lock().await;
        let now = Instant::now();
        forget_before(&mut s.granted, now);
        s.granted.len() as f64 >= 0.9 * self.per_second || s.paused_until.is_some_and(|p| p > now)
    }

    /// Holds every caller back for `wait` (Stripe's `Retry-After`).
    pub async fn pause(&self, wait: Duration) {
        let mut s = self.state.lock().await;
        let until = Instant::now() + wait;
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }
}

/// Drops the grants older than a second.
fn forget_before(granted: &mut std::collections::VecDeque<Instant>, now: Instant) {
    while granted
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        granted.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_evenly_and_pauses() {
        let limiter = RateLimiter::new(10.0);
        let start = Instant::now();
        for _ in 0..21 {
            limiter.acquire().await;
        }
        // The first is free; twenty more need two seconds at 10/s.
        assert_eq!(start.elapsed().as_millis(), 2000);
        assert!(limiter.saturated().await, "ten in the last second, of ten");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!limiter.saturated().await, "five in the last second");
        limiter.pause(Duration::from_secs(3)).await;
        let before = Instant::now();
        limiter.acquire().await;
        assert!(before.elapsed() >= Duration::from_secs(3));
    }
}
