//! The request budget shared by every call of one Stripe client, so bulk
//! jobs (backfill, reconcile, diff) stay under the account's rate limit
//! instead of provoking 429 storms. A 429's `Retry-After` pauses every
//! caller.
//!
//! The promise is Stripe's own: never more than the rate in any one-second
//! window, as sent from here: requests that reach Stripe more than the
//! margin (30 ms) closer together than they left can still meet a 429,
//! which pauses everyone for its `Retry-After`. It is kept by counting what
//! was sent in the last window, not by
//! spacing requests evenly: with even spacing every late wake-up of a
//! waiter is lost for good (a few milliseconds of each 40 ms slot at 25/s),
//! while a window's slot frees at a fixed time after its earlier grant.
//! The window is a little longer than a second, for the network's jitter
//! between our clock and the server's, and grants are at least half the
//! even spacing apart, so a budget that was idle goes out as a short ramp
//! rather than one burst.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The margin added to a window, for requests that travel at different
/// speeds (the server counts arrivals, we count sends).
const JITTER: Duration = Duration::from_millis(30);

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    /// Grants allowed in one `window`.
    per_window: usize,
    /// A second and [`JITTER`] (longer for a rate below one a second).
    window: Duration,
    /// The least time between two grants: half the even spacing.
    gap: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    paused_until: Option<Instant>,
    /// When the requests of the last window were let through, oldest first.
    granted: VecDeque<Instant>,
}

impl RateLimiter {
    /// `per_second` requests in any one-second window.
    pub fn new(per_second: f64) -> Self {
        assert!(per_second > 0.0, "rate must be positive");
        let per_window = (per_second.floor() as usize).max(1);
        let seconds = (per_window as f64 / per_second).max(1.0);
        Self {
            per_second,
            per_window,
            window: Duration::from_secs_f64(seconds) + JITTER,
            gap: Duration::from_secs_f64(0.5 / per_second),
            state: Mutex::new(State {
                paused_until: None,
                granted: VecDeque::new(),
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
                        self.forget_before(&mut s.granted, now);
                        match self.next_slot(&s.granted) {
                            Some(at) if at > now => at - now,
                            _ => {
                                s.granted.push_back(now);
                                return;
                            }
                        }
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// When the next grant may go, given the grants of the last window:
    /// once the oldest leaves the window if it is full, and a gap after
    /// the newest. `None`: now.
    fn next_slot(&self, granted: &VecDeque<Instant>) -> Option<Instant> {
        let after_newest = granted.back().map(|t| *t + self.gap);
        let window_frees = (granted.len() >= self.per_window)
            .then(|| granted[granted.len() - self.per_window] + self.window);
        after_newest.max(window_frees)
    }

    /// Whether the last window used nine tenths of the budget or more (or
    /// a 429 pauses everyone): more requests in flight would only queue.
    pub async fn saturated(&self) -> bool {
        let mut s = self.state.lock().await;
        let now = Instant::now();
        self.forget_before(&mut s.granted, now);
        s.granted.len() as f64 >= 0.9 * self.per_window as f64
            || s.paused_until.is_some_and(|p| p > now)
    }

    /// Holds every caller back for `wait` (Stripe's `Retry-After`).
    pub async fn pause(&self, wait: Duration) {
        let mut s = self.state.lock().await;
        let until = Instant::now() + wait;
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }

    /// Drops the grants that have left the window.
    fn forget_before(&self, granted: &mut VecDeque<Instant>, now: Instant) {
        while granted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            granted.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grant times, in milliseconds from the start, of `n` acquires by
    /// `callers` tasks at once.
    async fn grants(limiter: Arc<RateLimiter>, n: usize, callers: usize) -> Vec<u128> {
        let start = Instant::now();
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (limiter, times) = (limiter.clone(), times.clone());
                tokio::spawn(async move {
                    loop {
                        limiter.acquire().await;
                        let mut t = times.lock().unwrap();
                        if t.len() == n {
                            return;
                        }
                        t.push(start.elapsed().as_millis());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let mut t = times.lock().unwrap().clone();
        t.sort_unstable();
        t
    }

    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_rate_in_any_second_and_no_time_lost_to_spacing() {
        let limiter = Arc::new(RateLimiter::new(10.0));
        let times = grants(limiter.clone(), 40, 8).await;
        // Any one-second window holds at most ten grants.
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < t + 1_000).count();
            assert!(
                in_window <= 10,
                "{in_window} grants in the second from {t} ms"
            );
        }
        // Half the even spacing apart at least: a ramp, not one burst.
        assert!(times.windows(2).all(|w| w[1] - w[0] >= 50), "{times:?}");
        // Forty grants take four windows less one: the fifth ten start
        // when the first ten's window ends, not later.
        let window = 1_000 + JITTER.as_millis();
        assert_eq!(times[10], window);
        assert_eq!(times[30], 3 * window);
        assert!(limiter.saturated().await, "ten in the last window, of ten");
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(!limiter.saturated().await, "the window has moved on");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_below_one_a_second_is_kept_too() {
        let times = grants(Arc::new(RateLimiter::new(0.5)), 3, 2).await;
        let window = 2_000 + JITTER.as_millis();
        assert_eq!(times, [0, window, 2 * window]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_holds_everyone_back() {
        let limiter = Arc::new(RateLimiter::new(10.0));
        limiter.acquire().await;
        limiter.pause(Duration::from_secs(3)).await;
        assert!(limiter.saturated().await, "paused is saturated");
        // Four callers at once: none goes before the pause ends, and then
        // they go as the rate allows.
        let times = grants(limiter, 4, 4).await;
        assert!(times.iter().all(|t| *t >= 3_000), "{times:?}");
        assert_eq!(times[0], 3_000);
        assert!(times.windows(2).all(|w| w[1] - w[0] >= 50), "{times:?}");
    }
}
