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

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use super::*;

    /// A gate that answers `allow` and counts how often it was asked.
    struct Counting {
        allow: bool,
        asked: Cell<u32>,
    }

    impl Counting {
        fn new(allow: bool) -> Self {
            Counting { allow, asked: Cell::new(0) }
        }
    }

    impl RetryGate for Counting {
        fn try_retry(&self, _now: Timestamp) -> bool {
            self.asked.set(self.asked.get() + 1);
            self.allow
        }
    }

    #[test]
    fn a_pair_allows_only_when_both_do_and_asks_the_second_only_after_a_yes() {
        for (first, second) in [(true, true), (true, false), (false, true), (false, false)] {
            let pair = (Counting::new(first), Counting::new(second));
            assert_eq!(pair.try_retry(Timestamp::ZERO), first && second, "{first} and {second}");
            assert_eq!(pair.0.asked.get(), 1);
            // A budget second is not withdrawn from when the throttle said no.
            assert_eq!(pair.1.asked.get(), u32::from(first));
        }
        assert!(().try_retry(Timestamp::ZERO), "no gate allows");
    }

    #[test]
    fn a_borrowed_gate_answers_as_the_gate() {
        fn ask(gate: impl RetryGate) -> bool {
            gate.try_retry(Timestamp::ZERO)
        }
        for allow in [true, false] {
            let gate = Counting::new(allow);
            assert_eq!(ask(&gate), allow);
            assert_eq!(gate.asked.get(), 1, "the borrowed gate itself was asked");
        }
    }
}
