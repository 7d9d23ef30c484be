//! Hedging (gRFC A6): send another copy of a slow request, keep the first
//! good answer.

use core::time::Duration;

use lb_core::{Outcome, Timestamp};

use super::gate::RetryGate;
use super::policy::{MAX_ATTEMPTS, RetryOn};

/// When to send extra copies of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hedging {
    /// Wait this long for an answer before sending the next copy.
    pub delay: Duration,
    /// Copies in total, the first included; clamped to 2..=5 as in gRPC.
    pub max_attempts: u32,
    /// Failures that send the next copy at once; any other failure is fatal:
    /// it is returned to the caller and cancels the copies still out.
    pub non_fatal: RetryOn,
}

impl Default for Hedging {
    /// Up to 3 copies, 50 ms apart; [`RetryOn::default`] failures are non-fatal.
    fn default() -> Self {
        Hedging { delay: Duration::from_millis(50), max_attempts: 3, non_fatal: RetryOn::default() }
    }
}

impl Hedging {
    /// Starts hedging one request whose first copy is sent at `now`.
    pub fn start(&self, now: Timestamp) -> Hedge<'_> {
        Hedge {
            hedging: self,
            sent: 1,
            outstanding: 1,
            next_at: now + self.delay,
            throttled: false,
            done: false,
        }
    }

    fn limit(&self) -> u32 {
        self.max_attempts.clamp(2, MAX_ATTEMPTS)
    }
}

/// What a hedged request should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeStep {
    /// Send another copy now.
    Send,
    /// Nothing to send before this time (unless an answer comes).
    WaitUntil(Timestamp),
    /// All copies are out; wait for answers.
    AwaitAnswers,
    /// Finished: an answer was committed, or every copy failed.
    Done,
}

/// What to do with an answer to one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeDecision {
    /// Return this answer and cancel the copies still out.
    Commit,
    /// Ignore it and carry on (the next copy, if any, is due now).
    Continue,
    /// Every copy failed; return this last failure.
    Exhausted,
}

/// The hedging state of one request.
///
/// ```
/// use core::time::Duration;
/// use lb_core::{Outcome, Timestamp};
/// use lb_health::{HedgeDecision, HedgeStep, Hedging};
///
/// let hedging = Hedging::default();
/// let t0 = Timestamp::ZERO;
/// let mut hedge = hedging.start(t0);
/// assert_eq!(hedge.poll(t0), HedgeStep::WaitUntil(t0 + Duration::from_millis(50)));
/// assert_eq!(hedge.poll(t0 + Duration::from_millis(50)), HedgeStep::Send);
/// assert_eq!(hedge.on_answer(Outcome::Success, t0), HedgeDecision::Commit);
/// assert_eq!(hedge.poll(t0), HedgeStep::Done);
/// ```
#[derive(Debug, Clone)]
pub struct Hedge<'h> {
    hedging: &'h Hedging,
    sent: u32,
    outstanding: u32,
    next_at: Timestamp,
    /// A gate refused a copy: no more are sent.
    throttled: bool,
    done: bool,
}

impl Hedge<'_> {
    /// Copies sent so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Whether more copies may still be sent.
    fn may_send(&self) -> bool {
        !self.throttled && self.sent < self.hedging.limit()
    }

    /// Whether to send a copy at `now`; a `Send` counts the copy as sent.
    pub fn poll(&mut self, now: Timestamp) -> HedgeStep {
        if self.done {
            HedgeStep::Done
        } else if self.may_send() {
            if now < self.next_at {
                return HedgeStep::WaitUntil(self.next_at);
            }
            self.sent += 1;
            self.outstanding += 1;
            self.next_at = now + self.hedging.delay;
            HedgeStep::Send
        } else if self.outstanding > 0 {
            HedgeStep::AwaitAnswers
        } else {
            HedgeStep::Done
        }
    }

    /// Like [`poll`](Self::poll), but a copy also needs `gate`'s consent (a
    /// retry throttle or budget); once refused, no further copies are sent,
    /// as gRFC A6 does with throttled hedges.
    pub fn poll_gated<G: RetryGate + ?Sized>(&mut self, now: Timestamp, gate: &G) -> HedgeStep {
        if !self.done && self.may_send() && now >= self.next_at && !gate.try_retry(now) {
            self.throttled = true;
        }
        self.poll(now)
    }

    /// Takes the answer of one copy.
    pub fn on_answer(&mut self, outcome: Outcome, now: Timestamp) -> HedgeDecision {
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.done {
            return HedgeDecision::Continue;
        }
        if outcome.is_success() || !self.hedging.non_fatal.matches(outcome) {
            self.done = true;
            return HedgeDecision::Commit;
        }
        if !self.may_send() && self.outstanding == 0 {
            self.done = true;
            return HedgeDecision::Exhausted;
        }
        self.next_at = now; // A non-fatal failure sends the next copy at once.
        HedgeDecision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn copies_are_spaced_and_limited() {
        let h = Hedging { delay: 10 * MS, max_attempts: 99, non_fatal: RetryOn::default() };
        let t0 = Timestamp::ZERO;
        let mut hedge = h.start(t0);
        let mut now = t0;
        let mut sends = 0;
        for _ in 0..100 {
            match hedge.poll(now) {
                HedgeStep::Send => sends += 1,
                HedgeStep::WaitUntil(t) => now = t,
                HedgeStep::AwaitAnswers | HedgeStep::Done => break,
            }
        }
        assert_eq!((sends + 1, hedge.sent()), (5, 5), "clamped to 5 copies");
        assert_eq!(now, t0 + 40 * MS);
        for _ in 0..4 {
            assert_eq!(hedge.on_answer(Outcome::Http5xx(503), now), HedgeDecision::Continue);
        }
        assert_eq!(hedge.on_answer(Outcome::ConnectError, now), HedgeDecision::Exhausted);
        assert_eq!(hedge.poll(now), HedgeStep::Done);
    }

    #[test]
    fn a_throttled_hedge_stops_further_copies() {
        let h = Hedging::default();
        let t0 = Timestamp::ZERO;
        let throttle = crate::RetryThrottle::new(2, 1.0).unwrap();
        let mut hedge = h.start(t0);
        assert_eq!(hedge.poll_gated(t0 + 50 * MS, &throttle), HedgeStep::Send);
        throttle.on_failure();
        assert_eq!(hedge.poll_gated(t0 + 100 * MS, &throttle), HedgeStep::AwaitAnswers);
        assert_eq!(hedge.sent(), 2, "2 copies are out, no more come");
        assert_eq!(hedge.on_answer(Outcome::Reset, t0), HedgeDecision::Continue);
        assert_eq!(hedge.on_answer(Outcome::Reset, t0), HedgeDecision::Exhausted);
    }

    #[test]
    fn a_hedge_throttled_with_no_copy_out_is_done_not_waiting() {
        let h = Hedging::default();
        let t0 = Timestamp::ZERO;
        let throttle = crate::RetryThrottle::new(2, 1.0).unwrap();
        throttle.on_failure();
        let mut hedge = h.start(t0);
        assert_eq!(hedge.on_answer(Outcome::Http5xx(503), t0 + MS), HedgeDecision::Continue);
        // The copy that failure would send is refused, and no answer is left to wait for.
        assert_eq!(hedge.poll_gated(t0 + MS, &throttle), HedgeStep::Done);
    }

    #[test]
    fn a_non_fatal_failure_hedges_at_once_and_a_fatal_one_commits() {
        let h = Hedging::default();
        let t0 = Timestamp::ZERO;
        let mut hedge = h.start(t0);
        assert_eq!(hedge.on_answer(Outcome::Http5xx(503), t0 + MS), HedgeDecision::Continue);
        assert_eq!(hedge.poll(t0 + MS), HedgeStep::Send, "no need to wait for the delay");
        assert_eq!(hedge.on_answer(Outcome::Http5xx(500), t0 + MS), HedgeDecision::Commit, "500 is fatal");
        assert_eq!(hedge.poll(t0 + Duration::from_secs(1)), HedgeStep::Done);
    }
}
