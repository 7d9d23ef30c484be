//! One try at one endpoint, from its pick to its end, and what runs when a
//! forwarded response's body ends.
//!
//! Both are guards. A request can be dropped at any await (the client went
//! away, a drain ran out of time), and dropping it must still give back what
//! it holds: the breaker's half-open permit, the endpoint's in-flight count
//! and gauge, and the upstream's in-flight count.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use lb_core::{Clock, Outcome, OwnedPick, Report};

use crate::body::{BodyEnd, OnEnd};
use crate::health::Admission;
use crate::otel::RequestSpan;
use crate::upstream::{Backend, InFlight, Snapshot};

/// A try in progress. Finish it with [`Attempt::finish`]; dropped unfinished,
/// it counts as cancelled: not the endpoint's fault, so the breaker gets its
/// permit back and the balancer and the outlier detector learn nothing.
pub(crate) struct Attempt {
    /// Until finished or dropped.
    held: Option<(OwnedPick<Snapshot>, Admission)>,
    started: Instant,
    clock: Arc<dyn Clock>,
}

impl Attempt {
    /// Starts a try on the picked endpoint the breaker admitted.
    pub(crate) fn start(pick: OwnedPick<Snapshot>, admission: Admission, clock: &Arc<dyn Clock>) -> Attempt {
        pick.balancer().backends[pick.index()].metrics.started();
        Attempt { held: Some((pick, admission)), started: Instant::now(), clock: Arc::clone(clock) }
    }

    fn pick(&self) -> &OwnedPick<Snapshot> {
        let Some((pick, _)) = &self.held else { unreachable!("an attempt holds its pick until it ends") };
        pick
    }

    /// The endpoint's index in its snapshot.
    pub(crate) fn index(&self) -> usize {
        self.pick().index()
    }

    /// The endpoint's forwarding data.
    pub(crate) fn backend(&self) -> &Backend {
        let pick = self.pick();
        &pick.balancer().backends[pick.index()]
    }

    /// The endpoint's forwarding data, shared (for a body that outlives the attempt's borrow).
    pub(crate) fn backend_arc(&self) -> Arc<Backend> {
        let pick = self.pick();
        Arc::clone(&pick.balancer().backends[pick.index()])
    }

    /// When the try started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Reports the try everywhere it counts: breaker, metrics, outlier
    /// detector and balancer.
    pub(crate) fn finish(mut self, outcome: Outcome, status: StatusCode) {
        let Some((pick, admission)) = self.held.take() else { return };
        let now = self.clock.now();
        let latency = self.started.elapsed();
        let snapshot = pick.balancer();
        let backend = &snapshot.backends[pick.index()];
        backend.guards.record(admission, outcome, now);
        backend.metrics.finished(status, outcome, latency);
        let report = Report { outcome, latency, at: now };
        snapshot.observe_outlier(pick.index(), &report);
        pick.complete(report);
    }
}

impl Attempt {
    /// Ends the try for a reason on the client's side (it went away, its body
    /// was malformed or too large), counted under `status`: the endpoint is
    /// not to blame, so the breaker gets its permit back and the balancer and
    /// the outlier detector learn nothing.
    pub(crate) fn cancel(mut self, status: StatusCode) {
        self.release(status);
    }

    fn release(&mut self, status: StatusCode) {
        if let Some((pick, admission)) = self.held.take() {
            let backend = &pick.balancer().backends[pick.index()];
            // A local rejection is excluded by the breaker: its half-open permit comes back.
            backend.guards.record(admission, Outcome::LocallyRejected, self.clock.now());
            backend.metrics.cancelled(status);
            // Dropping the pick ends its in-flight count without a report.
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.release(crate::telemetry::CLIENT_CLOSED_REQUEST);
    }
}

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
