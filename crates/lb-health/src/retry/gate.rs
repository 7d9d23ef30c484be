//! What may veto a retry: budgets and throttles, alone or together.

use lb_core::Timestamp;

use super::budget::RetryBudget;
use super::throttle::RetryThrottle;

/// Something that may veto a retry at `now`.
pub trait RetryGate {
    /// Whether a retry may go ahead; a budget also withdraws it.
    fn try_retry(&self, now: Timestamp) -> bool;
}

/// No gate: every retry may go ahead.
impl RetryGate for () {
    fn try_retry(&self, _now: Timestamp) -> bool {
        true
    }
}

impl RetryGate for RetryBudget {
    fn try_retry(&self, now: Timestamp) -> bool {
        self.try_withdraw(now)
    }
}

impl RetryGate for RetryThrottle {
    fn try_retry(&self, _now: Timestamp) -> bool {
        self.is_retry_allowed()
    }
}

impl<G: RetryGate + ?Sized> RetryGate for &G {
    fn try_retry(&self, now: Timestamp) -> bool {
        (**self).try_retry(now)
    }
}

/// Both must agree; the first is asked first, so put the throttle (which
/// only looks) before the budget (which withdraws).
impl<A: RetryGate, B: RetryGate> RetryGate for (A, B) {
    fn try_retry(&self, now: Timestamp) -> bool {
        self.0.try_retry(now) && self.1.try_retry(now)
    }
}
