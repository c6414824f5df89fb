//! `--rate`: a token bucket shared by all clients, as pure arithmetic on times the caller reads.
//!
//! It works by reservation (like Go's `rate.Limiter.Wait`, which etcd's benchmark uses): each
//! operation takes a token at once, possibly driving the balance negative, and is told how long
//! to wait for it. Waiting callers therefore queue in arrival order without holding a lock while
//! they sleep, and the long-run rate is exact however coarse the sleeps are.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens per second.
    rate: f64,
    /// Most tokens saved up while idle; 1 means no bursts above the rate (etcd's choice).
    burst: f64,
    /// Negative when operations have reserved tokens that are not there yet.
    tokens: f64,
    /// When `tokens` was last brought up to date (time since the run's start).
    updated: Duration,
}

impl TokenBucket {
    /// A bucket of `rate` operations per second that starts full.
    pub fn new(rate: u64) -> TokenBucket {
        assert!(rate > 0, "an unlimited rate has no bucket");
        TokenBucket { rate: rate as f64, burst: 1.0, tokens: 1.0, updated: Duration::ZERO }
    }

    /// Takes a token at `now` and returns how long the caller must wait before using it.
    pub fn reserve(&mut self, now: Duration) -> Duration {
        // Callers read the clock before taking the lock, so `now` can be slightly older than
        // `updated`; time never runs backwards for the bucket.
        if now > self.updated {
            let refill = (now - self.updated).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.updated = now;
        }
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            // From `now`, the deficit takes -tokens / rate to refill; measured from `updated`
            // (which may be later than `now`) plus the gap.
            Duration::from_secs_f64(-self.tokens / self.rate) + self.updated.saturating_sub(now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn back_to_back_reservations_are_spaced_by_the_rate() {
        let mut b = TokenBucket::new(10);
        assert_eq!(b.reserve(Duration::ZERO), Duration::ZERO);
        assert_eq!(b.reserve(Duration::ZERO), 100 * MS);
        assert_eq!(b.reserve(Duration::ZERO), 200 * MS);
        // 150 ms later the second reservation is paid; the third is due in 50 ms, this one 150.
        assert_eq!(b.reserve(150 * MS), 150 * MS);
    }

    #[test]
    fn idle_time_saves_at_most_the_burst() {
        let mut b = TokenBucket::new(1000);
        assert_eq!(b.reserve(Duration::ZERO), Duration::ZERO);
        // A long pause refills one token, not thousands.
        assert_eq!(b.reserve(Duration::from_secs(10)), Duration::ZERO);
        assert_eq!(b.reserve(Duration::from_secs(10)), MS);
    }

    #[test]
    fn a_stale_clock_reading_does_not_refill_or_rewind() {
        let mut b = TokenBucket::new(10);
        b.reserve(Duration::ZERO);
        assert_eq!(b.reserve(200 * MS), Duration::ZERO);
        // A caller that read the clock at 150 ms (before the one above took the lock) waits
        // until 300 ms, i.e. 150 ms from its own reading.
        assert_eq!(b.reserve(150 * MS), 150 * MS);
    }

    #[test]
    fn long_run_rate_is_exact() {
        let mut b = TokenBucket::new(1000);
        // Callers that wait exactly as told: the 10,001st op starts at 10 s.
        let mut now = Duration::ZERO;
        for _ in 0..10_000 {
            now += b.reserve(now);
        }
        let last = now + b.reserve(now);
        assert!((last.as_secs_f64() - 10.0).abs() < 1e-4, "{last:?}");
    }
}
