//! The guard in front of one endpoint: its circuit breaker, its limit of
//! requests in flight, and an operator's drain.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use lb_core::{Outcome, Timestamp};
use lb_health::{CircuitBreaker, Settings, State, Ticket, Verdict};

/// One endpoint's circuit breaker (if it has one) and in-flight limit.
/// Lives as long as the endpoint, across generations.
#[derive(Debug)]
pub struct EndpointGuard {
    breaker: Option<CircuitBreaker>,
    /// Requests allowed in flight at once (`u32::MAX`: no limit).
    max_in_flight: u32,
    /// The breaker state last reported by [`record`](EndpointGuard::record).
    published: AtomicU8,
    /// Taken out of rotation by an operator: admits nothing until undrained.
    drained: AtomicBool,
}

/// Proof of admission by an endpoint's breaker, handed back with the outcome.
#[derive(Debug, Clone, Copy)]
pub struct Admission(Option<Ticket>);

impl EndpointGuard {
    /// A guard with a breaker of `breaker`'s settings (none for `None`) that
    /// admits at most `max_in_flight` requests at once (no limit for `None`).
    pub fn new(breaker: Option<Settings>, max_in_flight: Option<u32>) -> Self {
        EndpointGuard {
            breaker: breaker.map(CircuitBreaker::new),
            max_in_flight: max_in_flight.unwrap_or(u32::MAX),
            published: AtomicU8::new(State::Closed.gauge_value()),
            drained: AtomicBool::new(false),
        }
    }

    /// Admits a request that would make `in_flight` requests at once: `None`
    /// when the endpoint is drained, that is over the limit, or the breaker
    /// refuses (open, or its half-open trials are taken).
    #[inline]
    pub fn admit(&self, now: Timestamp, in_flight: u32) -> Option<Admission> {
        if in_flight > self.max_in_flight || self.drained.load(Ordering::Relaxed) {
            return None;
        }
        match &self.breaker {
            None => Some(Admission(None)),
            Some(breaker) => breaker.allow(now).ok().map(|ticket| Admission(Some(ticket))),
        }
    }

    /// Tells the breaker how an admitted request ended. Returns the
    /// breaker's new gauge value when its state differs from the one last
    /// returned, so a caller can publish changes once.
    #[inline]
    pub fn record(&self, admission: Admission, outcome: Outcome, at: Timestamp) -> Option<u8> {
        let (Some(breaker), Some(ticket)) = (&self.breaker, admission.0) else { return None };
        breaker.record(ticket, outcome, at);
        let state = breaker.state(at).gauge_value();
        (self.published.swap(state, Ordering::Relaxed) != state).then_some(state)
    }

    /// Gives back an admission whose request was cancelled or failed on the
    /// caller's side: neither success nor failure, so a half-open breaker
    /// gets its trial permit back.
    pub fn release(&self, admission: Admission, at: Timestamp) {
        if let (Some(breaker), Some(ticket)) = (&self.breaker, admission.0) {
            breaker.record_verdict(ticket, Verdict::Excluded, at);
        }
    }

    /// Takes the endpoint out of rotation (`true`) or puts it back: an
    /// operator's drain. Requests already admitted finish; new ones go to
    /// other endpoints as if this one were full.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }

    /// Whether an operator drained the endpoint.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Whether this endpoint has a breaker at all.
    pub fn has_breaker(&self) -> bool {
        self.breaker.is_some()
    }

    /// The breaker's state (closed when there is no breaker).
    pub fn breaker_state(&self, now: Timestamp) -> State {
        self.breaker.as_ref().map_or(State::Closed, |b| b.state(now))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn trips_at_once() -> EndpointGuard {
        let settings =
            Settings::new("t").ready_to_trip(|c| c.consecutive_failures >= 1).timeout(Duration::from_secs(5));
        EndpointGuard::new(Some(settings), None)
    }

    #[test]
    fn a_drained_endpoint_admits_nothing_until_undrained() {
        let guard = EndpointGuard::new(None, None);
        assert!(guard.admit(Timestamp::ZERO, 1).is_some());
        guard.set_drained(true);
        assert!(guard.is_drained());
        assert!(guard.admit(Timestamp::ZERO, 1).is_none());
        guard.set_drained(false);
        assert!(guard.admit(Timestamp::ZERO, 1).is_some());
    }

    #[test]
    fn a_failure_opens_the_breaker_and_the_change_is_reported_once() {
        let guard = trips_at_once();
        assert!(guard.has_breaker());
        let now = Timestamp::ZERO;
        let admission = guard.admit(now, 1).unwrap();
        assert_eq!(guard.record(admission, Outcome::ConnectError, now), Some(State::Open.gauge_value()));
        assert!(guard.admit(now, 1).is_none(), "open refuses");
        let later = now + Duration::from_secs(5);
        let trial = guard.admit(later, 1).expect("half-open admits a trial");
        assert!(guard.admit(later, 1).is_none(), "one trial at a time");
        guard.release(trial, later);
        let trial = guard.admit(later, 1).expect("a released trial permit comes back");
        assert_eq!(guard.record(trial, Outcome::Success, later), Some(State::Closed.gauge_value()));
        let admission = guard.admit(later, 1).unwrap();
        assert_eq!(guard.record(admission, Outcome::Success, later), None, "no change, nothing to publish");
    }

    #[test]
    fn the_limit_counts_the_request_itself() {
        let guard = EndpointGuard::new(None, Some(2));
        assert!(guard.admit(Timestamp::ZERO, 2).is_some());
        assert!(guard.admit(Timestamp::ZERO, 3).is_none());
        assert!(!guard.has_breaker());
        assert_eq!(guard.breaker_state(Timestamp::ZERO), State::Closed);
    }
}
