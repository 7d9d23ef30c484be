//! gRPC retry throttling (gRFC A6): a token bucket per server that stops
//! retries and hedges while the server is failing.

use core::sync::atomic::{AtomicU32, Ordering};

use lb_core::Outcome;

/// Why a [`RetryThrottle`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThrottleError {
    /// gRPC allows `maxTokens` in (0, 1000].
    #[error("max_tokens must be in 1..=1000, not {0}")]
    BadMaxTokens(u32),
    /// gRPC allows `tokenRatio` > 0 (three decimals are kept).
    #[error("token_ratio must be at least 0.001, not {0}")]
    BadRatio(f64),
}

/// Thousandths of a token: gRPC keeps three decimals of `tokenRatio`.
const MILLI: u32 = 1000;

/// gRPC's retry throttle: starts with `max_tokens`; a failure takes one
/// token, a success gives back `token_ratio`; retries are allowed only
/// while more than half the tokens remain.
///
/// ```
/// use lb_core::Outcome;
/// use lb_health::RetryThrottle;
///
/// let throttle = RetryThrottle::new(10, 0.1).unwrap();
/// for _ in 0..5 { throttle.record(Outcome::Http5xx(503)); }
/// assert!(!throttle.is_retry_allowed(), "5 tokens left is not more than half");
/// throttle.record(Outcome::Success);
/// assert!(throttle.is_retry_allowed());
/// ```
#[derive(Debug)]
pub struct RetryThrottle {
    max: u32,
    ratio: u32,
    tokens: AtomicU32,
}

impl RetryThrottle {
    /// A full bucket of `max_tokens`.
    pub fn new(max_tokens: u32, token_ratio: f64) -> Result<Self, ThrottleError> {
        if !(1..=1000).contains(&max_tokens) {
            return Err(ThrottleError::BadMaxTokens(max_tokens));
        }
        let ratio = libm::trunc(token_ratio * f64::from(MILLI));
        if !(1.0..=f64::from(max_tokens * MILLI)).contains(&ratio) {
            return Err(ThrottleError::BadRatio(token_ratio));
        }
        let max = max_tokens * MILLI;
        Ok(RetryThrottle { max, ratio: ratio as u32, tokens: AtomicU32::new(max) })
    }

    /// Counts a response: success adds `token_ratio`, failure takes one
    /// token, a local rejection is nobody's verdict.
    pub fn record(&self, outcome: Outcome) {
        if outcome.is_success() {
            self.on_success();
        } else if outcome.is_failure() {
            self.on_failure();
        }
    }

    /// A successful response.
    pub fn on_success(&self) {
        let _ = self.tokens.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
            (t < self.max).then(|| (t + self.ratio).min(self.max))
        });
    }

    /// A failed response.
    pub fn on_failure(&self) {
        let _ = self.tokens.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(MILLI));
    }

    /// Whether a retry or hedge may be sent: more than half the tokens remain.
    pub fn is_retry_allowed(&self) -> bool {
        self.tokens.load(Ordering::Acquire) > self.max / 2
    }

    /// The tokens left, with three decimals.
    pub fn tokens(&self) -> f64 {
        f64::from(self.tokens.load(Ordering::Acquire)) / f64::from(MILLI)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_stay_between_zero_and_max() {
        let t = RetryThrottle::new(3, 0.5).unwrap();
        for _ in 0..10 {
            t.on_failure();
        }
        assert_eq!(t.tokens(), 0.0);
        for _ in 0..3 {
            t.on_success();
        }
        assert_eq!(t.tokens(), 1.5);
        assert!(!t.is_retry_allowed(), "1.5 is not more than 1.5");
        t.on_success();
        assert!(t.is_retry_allowed());
        for _ in 0..10 {
            t.on_success();
        }
        assert_eq!(t.tokens(), 3.0);
        t.record(Outcome::LocallyRejected);
        assert_eq!(t.tokens(), 3.0);
        t.record(Outcome::Reset);
        assert_eq!(t.tokens(), 2.0, "a failure takes a token");
        t.record(Outcome::Success);
        assert_eq!(t.tokens(), 2.5, "a success gives the ratio back");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert_eq!(RetryThrottle::new(0, 0.1).unwrap_err(), ThrottleError::BadMaxTokens(0));
        assert_eq!(RetryThrottle::new(1001, 0.1).unwrap_err(), ThrottleError::BadMaxTokens(1001));
        assert_eq!(RetryThrottle::new(10, 0.0001).unwrap_err(), ThrottleError::BadRatio(0.0001));
        assert_eq!(RetryThrottle::new(10, 0.1234).unwrap().ratio, 123, "three decimals are kept");
    }
}
