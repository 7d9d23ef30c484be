//! One attempt at one endpoint, shared by the pool, the tower balancer and
//! the gRPC channel: pick with exclusions, ask the breaker, and afterwards
//! report the outcome to the balancer, the breaker, the outlier detector and
//! the metrics.

use std::sync::Arc;

use lb_core::{
    Balancer, Clock, Endpoint, Exclusions, Member, Outcome, OwnedPick, PickContext, Report, Timestamp,
};

use crate::live::Generation;
use crate::resilience::{Admission, EndpointHealth, Resilience};
use crate::telemetry::{EndpointLabels, Status};

/// What every kind of caller keeps per endpoint: its metric labels and its health.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) labels: EndpointLabels,
    pub(crate) health: Arc<EndpointHealth>,
}

impl Guard {
    pub(crate) fn new(service: &Arc<str>, member: &Member, resilience: &Resilience) -> Self {
        let guard = Guard {
            labels: EndpointLabels::new(service, &member.endpoint().address().to_string()),
            health: resilience.new_endpoint(),
        };
        // Dashboards see every endpoint's health and breaker from the start.
        guard.labels.healthy(member.state().is_eligible());
        if guard.health.has_breaker() {
            guard.labels.breaker_state(0.0);
        }
        guard
    }
}

/// A request under way at one endpoint.
#[derive(Debug)]
pub(crate) struct Attempt<B: Balancer> {
    /// `None` once finished.
    pick: Option<OwnedPick<B>>,
    guard: Guard,
    admission: Admission,
    started: Timestamp,
}

impl<B: Balancer> Attempt<B> {
    /// Picks an endpoint that was not `tried`, is under its in-flight limit
    /// and whose breaker admits the request, falling back through candidates
    /// as [`lb_core::pick_admitted`] does (the proxy's attempts share it):
    /// a tried endpoint again only when no other is left, a refusing one never.
    pub(crate) fn start<E: AsRef<Guard>>(
        generation: &Generation<B, E>,
        key: Option<&[u8]>,
        tried: &Exclusions,
        clock: &dyn Clock,
    ) -> Option<Self> {
        let ctx = PickContext::new();
        let ctx = match key {
            Some(key) => ctx.with_key(key),
            None => ctx,
        };
        let now = clock.now();
        let (pick, admission) = lb_core::pick_admitted(&generation.balancer, ctx, tried, |pick| {
            let guard = generation.extras[pick.index()].as_ref();
            // The pick itself counts, so this is the load including this request.
            let in_flight =
                generation.balancer.endpoints().get(pick.index()).map_or(0, |m| m.state().in_flight());
            guard.health.admit(now, in_flight)
        })?;
        let guard = generation.extras[pick.index()].as_ref();
        guard.labels.started();
        Some(Attempt { pick: Some(pick), guard: guard.clone(), admission, started: now })
    }

    fn pick(&self) -> &OwnedPick<B> {
        self.pick.as_ref().expect("an unfinished attempt holds its pick")
    }

    /// The endpoint's index in the generation it was picked from.
    pub(crate) fn index(&self) -> usize {
        self.pick().index()
    }

    /// The endpoint to send to.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        self.pick().endpoint()
    }

    /// Reports how the attempt ended to everyone who learns from it. An
    /// [`Outcome::LocallyRejected`] attempt failed on the caller's side (its
    /// request body, a request reqwest would not send): it ends like a
    /// cancelled one, blaming nobody.
    pub(crate) fn finish<E>(
        mut self,
        generation: &Generation<B, E>,
        resilience: &Resilience,
        outcome: Outcome,
        status: Status,
        clock: &dyn Clock,
    ) {
        if outcome == Outcome::LocallyRejected {
            // Dropping `self` releases everything it holds.
            return;
        }
        let Some(pick) = self.pick.take() else { return };
        let now = clock.now();
        let report = Report { outcome, latency: now.saturating_since(self.started), at: now };
        self.guard.labels.finished(outcome, status, report.latency);
        resilience.record(generation.outlier.as_ref(), pick.index(), &self.guard, self.admission, &report);
        pick.complete(report);
    }
}

impl<B: Balancer> Drop for Attempt<B> {
    /// A cancelled attempt (its future dropped: a caller's timeout, a
    /// losing hedge; or its request body failed) blames nobody: the
    /// in-flight counts end, a half-open breaker gets its trial permit back,
    /// and `requests_total` counts it as 499 (client closed request).
    fn drop(&mut self) {
        if self.pick.take().is_some() {
            self.guard.labels.cancelled();
            self.guard.health.release(self.admission, self.started);
        }
    }
}

impl AsRef<Guard> for Guard {
    fn as_ref(&self) -> &Guard {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lb_algorithms::Algorithm;
    use lb_core::{Build, EndpointSet, ManualClock, Outcome, Timestamp};
    use lb_health::Settings;

    use super::*;
    use crate::resilience::ResilienceConfig;

    fn generation(n: u16, resilience: &Resilience) -> Generation<lb_algorithms::AnyBalancer, Guard> {
        let set = EndpointSet::new(
            (1..=n).map(|p| Endpoint::new(std::net::SocketAddr::from(([10, 0, 0, 1], p)))),
            Timestamp::ZERO,
        );
        let service: Arc<str> = Arc::from("test");
        let extras = set.iter().map(|m| Guard::new(&service, m, resilience)).collect();
        Generation { balancer: Arc::new(Algorithm::RoundRobin.build(set)), extras, outlier: None }
    }

    fn trips_at_once() -> Resilience {
        let config = ResilienceConfig {
            breaker: Some(
                Settings::new("t")
                    .ready_to_trip(|c| c.consecutive_failures >= 1)
                    .timeout(Duration::from_secs(5)),
            ),
            outlier: None,
            ..ResilienceConfig::default()
        };
        Resilience::new(config, Arc::new(ManualClock::new()), &Arc::from("test")).unwrap()
    }

    #[test]
    fn an_open_breaker_sends_the_request_elsewhere_and_all_open_means_none() {
        let clock = ManualClock::new();
        let resilience = trips_at_once();
        let generation = generation(2, &resilience);
        let first = Attempt::start(&generation, None, &Exclusions::new(), &clock).unwrap();
        let tripped = first.index();
        first.finish(&generation, &resilience, Outcome::ConnectError, Status::Error, &clock);
        for _ in 0..4 {
            let attempt = Attempt::start(&generation, None, &Exclusions::new(), &clock).unwrap();
            assert_ne!(attempt.index(), tripped, "the open breaker refuses");
            attempt.finish(&generation, &resilience, Outcome::Success, Status::Code(200), &clock);
        }
        let other = 1 - tripped;
        let second = Attempt::start(&generation, None, &Exclusions::new(), &clock).unwrap();
        assert_eq!(second.index(), other);
        second.finish(&generation, &resilience, Outcome::Timeout, Status::Error, &clock);
        assert!(Attempt::start(&generation, None, &Exclusions::new(), &clock).is_none());
        let in_flight: u32 = generation.balancer.endpoints().iter().map(|m| m.state().in_flight()).sum();
        assert_eq!(in_flight, 0, "refused picks end their in-flight count");
        clock.advance(Duration::from_secs(5));
        assert!(
            Attempt::start(&generation, None, &Exclusions::new(), &clock).is_some(),
            "half-open admits a trial"
        );
    }

    #[test]
    fn an_attempt_failed_by_the_caller_blames_nobody() {
        let clock = ManualClock::new();
        let resilience = trips_at_once();
        let generation = generation(1, &resilience);
        for _ in 0..3 {
            let attempt = Attempt::start(&generation, None, &Exclusions::new(), &clock)
                .expect("the breaker was never tripped by the caller's failures");
            attempt.finish(&generation, &resilience, Outcome::LocallyRejected, Status::Error, &clock);
        }
        let state = generation.balancer.endpoints().get(0).unwrap().state();
        assert_eq!(state.in_flight(), 0, "the in-flight count ended");
        assert!(state.is_eligible());
        let attempt = Attempt::start(&generation, None, &Exclusions::new(), &clock).unwrap();
        attempt.finish(&generation, &resilience, Outcome::Reset, Status::Error, &clock);
        assert!(
            Attempt::start(&generation, None, &Exclusions::new(), &clock).is_none(),
            "an endpoint's own failure still trips its breaker"
        );
    }

    #[test]
    fn a_full_endpoint_is_passed_over() {
        let clock = ManualClock::new();
        let config = ResilienceConfig { max_in_flight_per_endpoint: Some(1), ..ResilienceConfig::default() };
        let resilience = Resilience::new(config, Arc::new(ManualClock::new()), &Arc::from("test")).unwrap();
        let generation = generation(2, &resilience);
        let a = Attempt::start(&generation, None, &Exclusions::new(), &clock).unwrap();
        let b = Attempt::start(&generation, None, &Exclusions::new(), &clock).unwrap();
        assert_ne!(a.index(), b.index(), "the busy endpoint is full");
        assert!(Attempt::start(&generation, None, &Exclusions::new(), &clock).is_none(), "both are full");
        a.finish(&generation, &resilience, Outcome::Success, Status::Code(200), &clock);
        assert!(Attempt::start(&generation, None, &Exclusions::new(), &clock).is_some());
    }

    #[test]
    fn a_tried_endpoint_is_reused_only_when_nothing_else_is_left() {
        let clock = ManualClock::new();
        let resilience =
            Resilience::new(ResilienceConfig::default(), Arc::new(ManualClock::new()), &Arc::from("test"))
                .unwrap();
        let generation = generation(2, &resilience);
        let mut excluded = Exclusions::new();
        let a = Attempt::start(&generation, None, &excluded, &clock).unwrap();
        excluded.push(a.index());
        let b = Attempt::start(&generation, None, &excluded, &clock).unwrap();
        assert_ne!(a.index(), b.index());
        excluded.push(b.index());
        assert!(Attempt::start(&generation, None, &excluded, &clock).is_some(), "reuse beats failing");
    }
}
