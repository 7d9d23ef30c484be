//! One try at one endpoint, from its pick to its end, as a guard.
//!
//! A request can be dropped at any await (its caller went away, a drain ran
//! out of time, a hedge lost), and dropping it must still give back what it
//! holds: the breaker's half-open permit and the endpoint's in-flight count.

use std::sync::Arc;

use lb_core::{Balancer, Clock, Endpoint, Exclusions, Outcome, OwnedPick, PickContext, Report, Timestamp};

use crate::generation::{Extra, Generation};
use crate::guard::Admission;

/// A try in progress. Finish it with [`Attempt::finish`]; dropped unfinished,
/// it counts as cancelled: not the endpoint's fault, so the breaker gets its
/// permit back and the balancer and the outlier detector learn nothing.
pub struct Attempt<B: Balancer, E: Extra> {
    /// Until finished or dropped.
    held: Option<(OwnedPick<Generation<B, E>>, Admission)>,
    started: Timestamp,
    clock: Arc<dyn Clock>,
}

impl<B: Balancer, E: Extra> Attempt<B, E> {
    /// Picks an endpoint of `generation` that was not `tried`, is under its
    /// in-flight limit and whose breaker admits the request (see
    /// [`Generation::pick_admitted`]), and starts a try on it at `now`.
    pub fn start(
        generation: &Arc<Generation<B, E>>,
        ctx: PickContext<'_>,
        tried: &Exclusions,
        clock: &Arc<dyn Clock>,
        now: Timestamp,
    ) -> Option<Self> {
        let (pick, admission) = generation.pick_admitted(ctx, tried, now)?;
        generation.extra(pick.index()).started();
        Some(Attempt { held: Some((pick, admission)), started: now, clock: Arc::clone(clock) })
    }

    fn pick(&self) -> &OwnedPick<Generation<B, E>> {
        let Some((pick, _)) = &self.held else { unreachable!("an attempt holds its pick until it ends") };
        pick
    }

    /// The endpoint's index in the generation it was picked from.
    pub fn index(&self) -> usize {
        self.pick().index()
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.pick().endpoint()
    }

    /// The generation the endpoint was picked from.
    pub fn generation(&self) -> &Arc<Generation<B, E>> {
        self.pick().balancer()
    }

    /// The endpoint's extra.
    pub fn extra(&self) -> &E {
        self.generation().extra(self.index())
    }

    /// When the try started.
    pub fn started(&self) -> Timestamp {
        self.started
    }

    /// The time now, on the clock the attempt was started with.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Reports how the try ended to everyone who learns from it: the
    /// breaker, the extra's metrics, the outlier detector and the balancer.
    /// An [`Outcome::LocallyRejected`] try failed on the caller's side (its
    /// request body, say): it ends like a cancelled one, blaming nobody.
    pub fn finish(self, outcome: Outcome, status: E::Status) {
        let now = self.clock.now();
        self.finish_at(outcome, status, now);
    }

    /// [`finish`](Self::finish) at `now`, read from the attempt's clock
    /// ([`now`](Self::now)) by a caller that stamps something else with it too.
    pub fn finish_at(mut self, outcome: Outcome, status: E::Status, now: Timestamp) {
        if outcome == Outcome::LocallyRejected {
            self.release(Some(status));
            return;
        }
        let Some((pick, admission)) = self.held.take() else { return };
        let report = Report { outcome, latency: now.saturating_since(self.started), at: now };
        let generation = pick.balancer();
        let extra = generation.extra(pick.index());
        if let Some(gauge) = extra.guard().record(admission, outcome, now) {
            extra.breaker_changed(gauge);
        }
        extra.finished(outcome, status, report.latency);
        generation.observe_outlier(pick.index(), &report);
        pick.complete(report);
    }

    /// Ends the try for a reason on the caller's side, counted under
    /// `status`: the endpoint is not to blame.
    pub fn cancel(mut self, status: E::Status) {
        self.release(Some(status));
    }

    fn release(&mut self, status: Option<E::Status>) {
        if let Some((pick, admission)) = self.held.take() {
            let extra = pick.balancer().extra(pick.index());
            extra.guard().release(admission, self.clock.now());
            extra.cancelled(status);
            // Dropping the pick ends its in-flight count without a report.
        }
    }
}

impl<B: Balancer, E: Extra> Drop for Attempt<B, E> {
    fn drop(&mut self) {
        self.release(None);
    }
}

impl<B: Balancer, E: Extra> std::fmt::Debug for Attempt<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let index = self.held.as_ref().map(|(pick, _)| pick.index());
        f.debug_struct("Attempt").field("index", &index).field("started", &self.started).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use lb_algorithms::{Algorithm, AnyBalancer};
    use lb_core::{EndpointSet, ManualClock, Member};
    use lb_health::Settings;

    use super::*;
    use crate::generation::Live;
    use crate::guard::EndpointGuard;

    /// An extra that writes down what it was told.
    #[derive(Clone)]
    struct Recorded {
        guard: Arc<EndpointGuard>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Extra for Recorded {
        type Status = u16;
        fn guard(&self) -> &EndpointGuard {
            &self.guard
        }
        fn started(&self) {
            self.log.lock().unwrap().push("started".into());
        }
        fn finished(&self, outcome: Outcome, status: u16, latency: Duration) {
            self.log.lock().unwrap().push(format!("finished {outcome:?} {status} {latency:?}"));
        }
        fn cancelled(&self, status: Option<u16>) {
            self.log.lock().unwrap().push(format!("cancelled {status:?}"));
        }
        fn breaker_changed(&self, gauge: u8) {
            self.log.lock().unwrap().push(format!("breaker {gauge}"));
        }
    }

    fn live(log: &Arc<Mutex<Vec<String>>>) -> Live<Algorithm, Recorded> {
        live_of(log, 1)
    }

    fn live_of(log: &Arc<Mutex<Vec<String>>>, n: u16) -> Live<Algorithm, Recorded> {
        let log = Arc::clone(log);
        let settings = || Settings::new("t").ready_to_trip(|c| c.consecutive_failures >= 1);
        let set = EndpointSet::new(
            (1..=n).map(|port| lb_core::Endpoint::new(std::net::SocketAddr::from(([10, 0, 0, 1], port)))),
            Timestamp::ZERO,
        );
        let new_extra = move |_: &Member| Recorded {
            guard: Arc::new(EndpointGuard::new(Some(settings()), None)),
            log: Arc::clone(&log),
        };
        Live::new(Algorithm::RoundRobin, set, new_extra, None)
    }

    fn start(
        generation: &Arc<Generation<AnyBalancer, Recorded>>,
        clock: &Arc<ManualClock>,
    ) -> Option<Attempt<AnyBalancer, Recorded>> {
        let dyn_clock: Arc<dyn Clock> = Arc::clone(clock) as Arc<dyn Clock>;
        Attempt::start(generation, PickContext::new(), &Exclusions::new(), &dyn_clock, clock.now())
    }

    #[test]
    fn a_finished_try_is_reported_with_its_latency_and_trips_the_breaker() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let generation = live(&log).load();
        let clock = Arc::new(ManualClock::new());
        let attempt = start(&generation, &clock).unwrap();
        assert_eq!(generation.endpoints().members()[0].state().in_flight(), 1);
        clock.advance(Duration::from_millis(7));
        attempt.finish(Outcome::Http5xx(503), 503);
        assert_eq!(*log.lock().unwrap(), ["started", "breaker 1", "finished Http5xx(503) 503 7ms"]);
        assert_eq!(generation.endpoints().members()[0].state().in_flight(), 0);
        assert!(start(&generation, &clock).is_none(), "the open breaker refuses");
    }

    #[test]
    fn an_attempt_knows_its_endpoint_and_when_it_started() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let generation = live_of(&log, 2).load();
        let clock = Arc::new(ManualClock::new());
        clock.advance(Duration::from_secs(3));
        let mut tried = Exclusions::new();
        tried.push(0);
        let dyn_clock: Arc<dyn Clock> = Arc::clone(&clock) as Arc<dyn Clock>;
        let attempt =
            Attempt::start(&generation, PickContext::new(), &tried, &dyn_clock, clock.now()).unwrap();
        assert_eq!(attempt.index(), 1, "the tried endpoint was passed over");
        assert_eq!(attempt.endpoint().address().port(), 2);
        assert_eq!(attempt.started(), Timestamp::ZERO + Duration::from_secs(3));
        assert!(format!("{attempt:?}").contains("index: Some(1)"));
    }

    #[test]
    fn a_dropped_or_locally_failed_try_blames_nobody() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let generation = live(&log).load();
        let clock = Arc::new(ManualClock::new());
        drop(start(&generation, &clock).unwrap());
        start(&generation, &clock).unwrap().finish(Outcome::LocallyRejected, 400);
        start(&generation, &clock).unwrap().cancel(413);
        assert_eq!(
            *log.lock().unwrap(),
            ["started", "cancelled None", "started", "cancelled Some(400)", "started", "cancelled Some(413)"]
        );
        assert_eq!(generation.endpoints().members()[0].state().in_flight(), 0);
        assert!(start(&generation, &clock).is_some(), "the breaker was never tripped");
    }
}
