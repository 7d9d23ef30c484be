//! One try at one endpoint (lb-engine's [`Attempt`](lb_engine::Attempt)
//! over the proxy's backends), and what runs when a forwarded response's
//! body ends.
//!
//! Both are guards. A request can be dropped at any await (the client went
//! away, a drain ran out of time), and dropping it must still give back what
//! it holds: the breaker's half-open permit, the endpoint's in-flight count
//! and gauge, and the upstream's in-flight count.

use http::StatusCode;
use lb_core::Outcome;

use crate::balancing::AnyBalancer;
use crate::body::{BodyEnd, OnEnd};
use crate::otel::RequestSpan;
use crate::upstream::{BackendRef, InFlight};

/// A try in progress. Finish it with `finish`; dropped unfinished, it counts
/// as cancelled (499): not the endpoint's fault, so the breaker gets its
/// permit back and the balancer and the outlier detector learn nothing.
pub(crate) type Attempt = lb_engine::Attempt<AnyBalancer, BackendRef>;

/// What runs when a forwarded response's body ends or is dropped (the HTTP/2 front).
pub(crate) struct Finish {
    attempt: Option<Attempt>,
    status: StatusCode,
    /// Held until the body ends: the request counts against the upstream until then.
    _in_flight: InFlight,
    /// Ended with the body.
    pub(crate) span: Option<RequestSpan>,
}

impl Finish {
    /// The end of `attempt`'s response.
    pub(crate) fn new(attempt: Attempt, status: StatusCode, in_flight: InFlight) -> Finish {
        Finish { attempt: Some(attempt), status, _in_flight: in_flight, span: None }
    }
}

impl OnEnd for Finish {
    fn on_end(mut self, end: BodyEnd) {
        if let Some(span) = self.span.take() {
            span.end(self.status, end);
        }
        let outcome =
            if end == BodyEnd::Failed { Outcome::Reset } else { Outcome::from_status(self.status.as_u16()) };
        if let Some(attempt) = self.attempt.take() {
            attempt.finish(outcome, self.status);
        }
    }
}
