//! The rules of a Consul blocking-query loop: index handling, timeouts,
//! pacing and backoff. Pure functions and small state, tested without I/O.
//!
//! Source: Consul's "Blocking Queries" documentation (implementation details).

use std::time::Duration;

use tokio::time::Instant;

/// The longest `wait` Consul honours (10 minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The shortest `wait` sent: Consul reads `wait=0s` as its 5-minute default,
/// which would outlast our client timeout.
pub const MIN_WAIT: Duration = Duration::from_millis(10);

/// The index to remember after an answer carrying `returned`, having sent
/// `previous`: an index that went backwards (a snapshot restore, a new
/// leader) resets to 0, so the next query fetches the current state at once.
pub fn next_index(previous: u64, returned: u64) -> u64 {
    if returned < previous { 0 } else { returned }
}

/// The index to send in a loop: never 0, because `index=0` returns at once
/// and a server stuck at 0 would spin the loop.
pub fn index_to_send(remembered: u64) -> u64 {
    remembered.max(1)
}

/// The client-side timeout for a query with `wait`: Consul adds up to
/// `wait / 16` of jitter, so anything at or under `wait * 17 / 16` could cut
/// a healthy answer short; `slack` covers the network and the agent.
pub fn request_timeout(wait: Duration, slack: Duration) -> Duration {
    wait + wait / 16 + slack
}

/// Consul's duration syntax (Go's): `300ms`, `5s`.
pub fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) { format!("{}s", millis / 1000) } else { format!("{millis}ms") }
}

/// A rate limit on the query loop: one query per `interval` on average,
/// with bursts of up to `burst` (the generic cell rate algorithm).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// When the next query would be due if queries came at exactly the rate.
    theoretical_arrival: Option<Instant>,
}

impl RateLimiter {
    /// At most `burst` queries at once, then one per `interval`.
    pub fn new(interval: Duration, burst: u32) -> Self {
        RateLimiter { interval, burst: burst.max(1), theoretical_arrival: None }
    }

    /// Books one query at `now` and returns how long to wait before sending it.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let arrival = self.theoretical_arrival.map_or(now, |t| t.max(now));
        let tolerance = self.interval * (self.burst - 1);
        let ready_at = arrival.checked_sub(tolerance).map_or(now, |t| t.max(now));
        self.theoretical_arrival = Some(arrival + self.interval);
        ready_at - now
    }
}

/// Exponential backoff with "equal jitter": the n-th consecutive failure
/// waits `t/2 + U(0, t/2)` with `t = min(max, base * 2^(n-1))`, so retries
/// spread out but never come sooner than half the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first step.
    pub base: Duration,
    /// The largest step.
    pub max: Duration,
}

impl Backoff {
    /// The pause after `failures` consecutive failures (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let step = self.base.saturating_mul(1 << doublings).min(self.max);
        let half = step / 2;
        let jitter_nanos = fastrand::u64(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX));
        half + Duration::from_nanos(jitter_nanos)
    }
}

impl Default for Backoff {
    /// 500 ms doubling to 30 s.
    fn default() -> Self {
        Backoff { base: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backwards_index_resets_and_zero_is_never_sent() {
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(10, 10), 10, "a wait timeout keeps the index");
        assert_eq!(next_index(10, 3), 0, "backwards resets");
        assert_eq!(index_to_send(0), 1);
        assert_eq!(index_to_send(next_index(10, 3)), 1);
        assert_eq!(index_to_send(42), 42);
    }

    #[test]
    fn the_timeout_exceeds_the_wait_plus_consul_jitter() {
        let wait = Duration::from_secs(32);
        assert!(request_timeout(wait, Duration::ZERO) >= wait * 17 / 16);
        assert_eq!(request_timeout(wait, Duration::from_secs(1)), Duration::from_secs(35));
    }

    #[test]
    fn durations_use_consul_syntax() {
        assert_eq!(go_duration(Duration::from_secs(300)), "300s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn the_rate_limit_allows_a_burst_of_two_then_paces() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut limiter = RateLimiter::new(second, 2);
        assert_eq!(limiter.reserve(start), Duration::ZERO);
        assert_eq!(limiter.reserve(start), Duration::ZERO);
        assert_eq!(limiter.reserve(start), second, "the third waits one interval");
        assert_eq!(limiter.reserve(start + second), second, "still one interval behind");
        // After a long quiet spell the full burst is back, no more.
        let later = start + Duration::from_secs(60);
        assert_eq!(limiter.reserve(later), Duration::ZERO);
        assert_eq!(limiter.reserve(later), Duration::ZERO);
        assert_eq!(limiter.reserve(later), second);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        for _ in 0..200 {
            let first = backoff.delay(1);
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first), "{first:?}");
            let third = backoff.delay(3);
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third), "{third:?}");
            let capped = backoff.delay(50);
            assert!((Duration::from_millis(500)..=Duration::from_secs(1)).contains(&capped), "{capped:?}");
        }
    }
}
