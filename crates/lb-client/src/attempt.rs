//! What the client keeps per endpoint for lb-engine's attempts: its metric
//! labels and its guard. The attempt itself ([`lb_engine::Attempt`]: pick
//! with exclusions, admit, report the outcome to the balancer, the breaker,
//! the outlier detector and these metrics) is shared with the proxy.

use std::sync::Arc;
use std::time::Duration;

use lb_core::{Member, Outcome};
use lb_engine::{EndpointGuard, Extra};

use crate::resilience::Resilience;
use crate::telemetry::{EndpointLabels, Status};

/// What every kind of caller keeps per endpoint: its metric labels and its guard.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) labels: EndpointLabels,
    pub(crate) health: Arc<EndpointGuard>,
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

impl Extra for Guard {
    type Status = Status;

    fn guard(&self) -> &EndpointGuard {
        &self.health
    }
    fn started(&self) {
        self.labels.started();
    }
    fn finished(&self, outcome: Outcome, status: Status, latency: Duration) {
        self.labels.finished(outcome, status, latency);
    }
    /// Counted as 499 (client closed request), whatever failed on the caller's side.
    fn cancelled(&self, _status: Option<Status>) {
        self.labels.cancelled();
    }
    fn ejected(&self) {
        self.labels.ejected();
    }
    fn breaker_changed(&self, gauge: u8) {
        self.labels.breaker_state(f64::from(gauge));
    }
    fn eligibility(&self, eligible: bool) {
        self.labels.healthy(eligible);
    }
}

/// The pick context for a request with hash key `key`.
pub(crate) fn keyed(key: Option<&[u8]>) -> lb_core::PickContext<'_> {
    let ctx = lb_core::PickContext::new();
    match key {
        Some(key) => ctx.with_key(key),
        None => ctx,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lb_algorithms::{Algorithm, AnyBalancer};
    use lb_core::{
        Balancer, Build, Clock, Endpoint, EndpointSet, Exclusions, ManualClock, PickContext, Timestamp,
    };
    use lb_engine::{Attempt, Generation};
    use lb_health::Settings;

    use super::*;
    use crate::resilience::ResilienceConfig;

    fn generation(n: u16, resilience: &Resilience) -> Arc<Generation<AnyBalancer, Guard>> {
        let set = EndpointSet::new(
            (1..=n).map(|p| Endpoint::new(std::net::SocketAddr::from(([10, 0, 0, 1], p)))),
            Timestamp::ZERO,
        );
        let service: Arc<str> = Arc::from("test");
        let extras = set.iter().map(|m| Guard::new(&service, m, resilience)).collect();
        Arc::new(Generation::new(Algorithm::RoundRobin.build(set), extras, None))
    }

    /// Starts an attempt at the clock's time, avoiding `tried`.
    fn start(
        generation: &Arc<Generation<AnyBalancer, Guard>>,
        tried: &Exclusions,
        clock: &Arc<ManualClock>,
    ) -> Option<Attempt<AnyBalancer, Guard>> {
        let dyn_clock: Arc<dyn Clock> = Arc::clone(clock) as Arc<dyn Clock>;
        Attempt::start(generation, PickContext::new(), tried, &dyn_clock, clock.now())
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
        let clock = Arc::new(ManualClock::new());
        let resilience = trips_at_once();
        let generation = generation(2, &resilience);
        let first = start(&generation, &Exclusions::new(), &clock).unwrap();
        let tripped = first.index();
        first.finish(Outcome::ConnectError, Status::Error);
        for _ in 0..4 {
            let attempt = start(&generation, &Exclusions::new(), &clock).unwrap();
            assert_ne!(attempt.index(), tripped, "the open breaker refuses");
            attempt.finish(Outcome::Success, Status::Code(200));
        }
        let other = 1 - tripped;
        let second = start(&generation, &Exclusions::new(), &clock).unwrap();
        assert_eq!(second.index(), other);
        second.finish(Outcome::Timeout, Status::Error);
        assert!(start(&generation, &Exclusions::new(), &clock).is_none());
        let in_flight: u32 = generation.endpoints().iter().map(|m| m.state().in_flight()).sum();
        assert_eq!(in_flight, 0, "refused picks end their in-flight count");
        clock.advance(Duration::from_secs(5));
        assert!(start(&generation, &Exclusions::new(), &clock).is_some(), "half-open admits a trial");
    }

    #[test]
    fn an_attempt_failed_by_the_caller_blames_nobody() {
        let clock = Arc::new(ManualClock::new());
        let resilience = trips_at_once();
        let generation = generation(1, &resilience);
        for _ in 0..3 {
            let attempt = start(&generation, &Exclusions::new(), &clock)
                .expect("the breaker was never tripped by the caller's failures");
            attempt.finish(Outcome::LocallyRejected, Status::Error);
        }
        let state = generation.endpoints().get(0).unwrap().state();
        assert_eq!(state.in_flight(), 0, "the in-flight count ended");
        assert!(state.is_eligible());
        let attempt = start(&generation, &Exclusions::new(), &clock).unwrap();
        attempt.finish(Outcome::Reset, Status::Error);
        assert!(
            start(&generation, &Exclusions::new(), &clock).is_none(),
            "an endpoint's own failure still trips its breaker"
        );
    }

    #[test]
    fn a_full_endpoint_is_passed_over() {
        let clock = Arc::new(ManualClock::new());
        let config = ResilienceConfig { max_in_flight_per_endpoint: Some(1), ..ResilienceConfig::default() };
        let resilience = Resilience::new(config, Arc::new(ManualClock::new()), &Arc::from("test")).unwrap();
        let generation = generation(2, &resilience);
        let a = start(&generation, &Exclusions::new(), &clock).unwrap();
        let b = start(&generation, &Exclusions::new(), &clock).unwrap();
        assert_ne!(a.index(), b.index(), "the busy endpoint is full");
        assert!(start(&generation, &Exclusions::new(), &clock).is_none(), "both are full");
        a.finish(Outcome::Success, Status::Code(200));
        assert!(start(&generation, &Exclusions::new(), &clock).is_some());
    }

    #[test]
    fn a_tried_endpoint_is_reused_only_when_nothing_else_is_left() {
        let clock = Arc::new(ManualClock::new());
        let resilience =
            Resilience::new(ResilienceConfig::default(), Arc::new(ManualClock::new()), &Arc::from("test"))
                .unwrap();
        let generation = generation(2, &resilience);
        let mut excluded = Exclusions::new();
        let a = start(&generation, &excluded, &clock).unwrap();
        excluded.push(a.index());
        let b = start(&generation, &excluded, &clock).unwrap();
        assert_ne!(a.index(), b.index());
        excluded.push(b.index());
        assert!(start(&generation, &excluded, &clock).is_some(), "reuse beats failing");
    }
}
