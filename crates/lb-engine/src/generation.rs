//! An upstream's current generation, rebuilt off the hot path whenever its
//! endpoint set changes and swapped in atomically.

use arc_swap::ArcSwap;
use lb_core::{Balancer, Build, EndpointSet, Exclusions, Member, OwnedPick, PickContext, Report, Timestamp};
use lb_health::{OutlierConfig, OutlierDetector};
use std::sync::Arc;

use crate::guard::{Admission, EndpointGuard};

/// What a product keeps per endpoint beside the engine's state: its guard,
/// and where its per-endpoint metrics go. Cloned into the next generation
/// when the endpoint stays, so breakers, connections and metric handles
/// outlive a discovery update.
pub trait Extra: Clone + Send + Sync + 'static {
    /// How the product labels a finished request (an HTTP status, say).
    type Status: Copy;

    /// The endpoint's breaker and in-flight limit.
    fn guard(&self) -> &EndpointGuard;
    /// A try started on this endpoint.
    fn started(&self) {}
    /// A try ended with `outcome` after `latency`, reported to everyone who learns from it.
    fn finished(&self, _outcome: lb_core::Outcome, _status: Self::Status, _latency: core::time::Duration) {}
    /// A try ended for a reason on the caller's side, counted under `status`
    /// (`None`: the caller went away). Nobody is blamed.
    fn cancelled(&self, _status: Option<Self::Status>) {}
    /// Outlier detection ejected the endpoint.
    fn ejected(&self) {}
    /// The endpoint's breaker moved to another state (its gauge value).
    fn breaker_changed(&self, _gauge: u8) {}
    /// Every upkeep round: whether the endpoint may be picked now (not
    /// ejected, not failing its active checks).
    fn eligibility(&self, _eligible: bool) {}
}

/// One immutable generation: a balancer over one endpoint set, each
/// endpoint's [`Extra`] (index-aligned with the set), and the passive
/// outlier detector over the same set. Requests in flight keep the
/// generation they picked from.
pub struct Generation<B, E> {
    balancer: B,
    extras: Vec<E>,
    outlier: Option<OutlierDetector>,
}

impl<B: Balancer, E: Extra> Generation<B, E> {
    /// A generation over `balancer`'s set with its extras.
    ///
    /// # Panics
    /// When `extras` is not index-aligned with the balancer's set.
    pub fn new(balancer: B, extras: Vec<E>, outlier: Option<OutlierDetector>) -> Self {
        assert_eq!(balancer.endpoints().len(), extras.len(), "one extra per endpoint");
        Generation { balancer, extras, outlier }
    }

    /// The balancer.
    pub fn balancer(&self) -> &B {
        &self.balancer
    }

    /// The extras, index-aligned with the endpoint set.
    pub fn extras(&self) -> &[E] {
        &self.extras
    }

    /// The extra of the endpoint at `index`.
    pub fn extra(&self, index: usize) -> &E {
        &self.extras[index]
    }

    /// The outlier detector, if passive health checking is on.
    pub fn outlier(&self) -> Option<&OutlierDetector> {
        self.outlier.as_ref()
    }

    /// Whether at least one endpoint may be picked; relaxed loads only.
    pub fn any_eligible(&self) -> bool {
        self.endpoints().iter().any(|m| m.state().is_eligible())
    }

    /// Picks an endpoint that is under its in-flight limit and whose breaker
    /// admits the request, falling back through candidates as
    /// [`lb_core::pick_admitted`] does: a `tried` endpoint again only when no
    /// other is left, a refusing one never.
    pub fn pick_admitted(
        self: &Arc<Self>,
        ctx: PickContext<'_>,
        tried: &Exclusions,
        now: Timestamp,
    ) -> Option<(OwnedPick<Self>, Admission)> {
        lb_core::pick_admitted(self, ctx, tried, |pick| {
            // The pick itself counts, so this is the load including this request.
            let in_flight = self.endpoints().members()[pick.index()].state().in_flight();
            self.extras[pick.index()].guard().admit(now, in_flight)
        })
    }

    /// Feeds one finished try to the outlier detector; tells the extra when
    /// it ejected the endpoint.
    pub fn observe_outlier(&self, index: usize, report: &Report) {
        if let Some(outlier) = &self.outlier
            && outlier.record(index, report)
        {
            self.extras[index].ejected();
        }
    }

    /// Runs the outlier detector's timer (ending ejections, running the
    /// interval detectors) and tells the extras of the endpoints it ejected.
    fn tick_outlier(&self, now: Timestamp) {
        let Some(detector) = &self.outlier else { return };
        let before: Vec<bool> = (0..self.extras.len()).map(|i| detector.is_ejected(i)).collect();
        detector.tick(now);
        for (i, extra) in self.extras.iter().enumerate() {
            if !before[i] && detector.is_ejected(i) {
                extra.ejected();
            }
        }
    }
}

impl<B: Balancer, E: Extra> Balancer for Generation<B, E> {
    fn endpoints(&self) -> &EndpointSet {
        self.balancer.endpoints()
    }
    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        self.balancer.select(ctx)
    }
    fn observe(&self, index: usize, report: &Report) {
        self.balancer.observe(index, report)
    }
    /// The time-driven upkeep of the balancer (slow start ramps, peak-EWMA
    /// decay) and of the outlier detector.
    fn tick(&self, now: Timestamp) {
        self.balancer.tick(now);
        self.tick_outlier(now);
    }
}

/// The swapped-in generation of one upstream plus what rebuilds it.
pub struct Live<A: Build, E> {
    current: ArcSwap<Generation<A::Output, E>>,
    algorithm: A,
    new_extra: Box<dyn Fn(&Member) -> E + Send + Sync>,
}

impl<A: Build, E: Extra> Live<A, E> {
    /// The first generation over `set`; `new_extra` makes the extra of each
    /// endpoint seen for the first time.
    pub fn new(
        algorithm: A,
        set: EndpointSet,
        new_extra: impl Fn(&Member) -> E + Send + Sync + 'static,
        outlier: Option<OutlierConfig>,
    ) -> Self {
        let extras = set.iter().map(&new_extra).collect();
        let outlier = outlier.map(|config| OutlierDetector::new(config, set.clone()));
        let balancer = algorithm.build(set);
        Live {
            current: ArcSwap::from_pointee(Generation::new(balancer, extras, outlier)),
            algorithm,
            new_extra: Box::new(new_extra),
        }
    }

    /// The current generation: one lock-free load.
    #[inline]
    pub fn load(&self) -> Arc<Generation<A::Output, E>> {
        self.current.load_full()
    }

    /// Builds a generation for `set` and swaps it in. Endpoints that stay
    /// (same id, same address) keep their extras and their outlier counters
    /// and ejections; an endpoint whose address moved is new.
    pub fn update(&self, set: EndpointSet) {
        let before = self.current.load();
        let old_set = before.endpoints();
        let extras = set
            .iter()
            .map(|member| {
                let endpoint = member.endpoint();
                let kept = old_set
                    .index_of(endpoint.id())
                    .filter(|&old| old_set.members()[old].endpoint().address() == endpoint.address());
                match kept {
                    Some(old) => before.extras[old].clone(),
                    None => (self.new_extra)(member),
                }
            })
            .collect();
        let outlier = before.outlier.as_ref().map(|detector| detector.with_set(set.clone()));
        let balancer = self.algorithm.build(set);
        self.current.store(Arc::new(Generation::new(balancer, extras, outlier)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use lb_algorithms::Algorithm;
    use lb_core::{Endpoint, HealthStatus, Outcome};

    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(std::net::SocketAddr::from(([10, 0, 0, 1], port)))
    }

    /// An extra that remembers its port and which call made it, and counts ejections.
    #[derive(Clone)]
    struct Numbered {
        port: u16,
        made: u32,
        guard: Arc<EndpointGuard>,
        ejections: Arc<AtomicU32>,
    }

    impl Extra for Numbered {
        type Status = u16;
        fn guard(&self) -> &EndpointGuard {
            &self.guard
        }
        fn ejected(&self) {
            self.ejections.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn numbered() -> impl Fn(&Member) -> Numbered + Send + Sync + 'static {
        let made = AtomicU32::new(0);
        move |member| Numbered {
            port: member.endpoint().address().port(),
            made: made.fetch_add(1, Ordering::Relaxed),
            guard: Arc::new(EndpointGuard::new(None, None)),
            ejections: Arc::new(AtomicU32::new(0)),
        }
    }

    fn ids(generation: &Generation<lb_algorithms::AnyBalancer, Numbered>) -> Vec<(u16, u32)> {
        generation.extras().iter().map(|e| (e.port, e.made)).collect()
    }

    fn failure() -> Report {
        Report { outcome: Outcome::ConnectError, latency: Duration::ZERO, at: Timestamp::ZERO }
    }

    #[test]
    fn extras_and_ejections_survive_an_update_by_id_and_address() {
        let live = Live::new(
            Algorithm::RoundRobin,
            EndpointSet::new([ep(1), ep(2)], Timestamp::ZERO),
            numbered(),
            Some(OutlierConfig::consecutive_failures(1)),
        );
        let first = live.load();
        first.observe_outlier(0, &failure());
        assert_eq!(first.extra(0).ejections.load(Ordering::Relaxed), 1, "the extra heard of its ejection");

        live.update(first.endpoints().replaced([ep(1), ep(2), ep(3)], Timestamp::ZERO));
        let second = live.load();
        assert_eq!(ids(&second), [(1, 0), (2, 1), (3, 2)], "kept extras for endpoints that stayed");
        assert_eq!(second.endpoints().get(0).unwrap().state().status(), HealthStatus::Ejected);
        assert!(second.outlier().unwrap().is_ejected(0), "the detector carried the ejection over");
        assert_eq!(first.endpoints().len(), 2, "the old generation is untouched");

        // Same id, new address: a new endpoint as far as connections go.
        let moved = ep(9).with_id(ep(2).id().as_str());
        live.update(second.endpoints().replaced([ep(1), moved], Timestamp::ZERO));
        assert_eq!(ids(&live.load()), [(1, 0), (9, 3)]);
    }

    #[test]
    fn the_tick_reports_endpoints_the_interval_detectors_ejected() {
        let config = OutlierConfig {
            failure_percentage: Some(lb_health::FailurePercentage {
                threshold: 50,
                minimum_hosts: 1,
                request_volume: 1,
            }),
            consecutive_5xx: None,
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        };
        let live = Live::new(
            Algorithm::RoundRobin,
            EndpointSet::new([ep(1), ep(2)], Timestamp::ZERO),
            numbered(),
            Some(config),
        );
        let generation = live.load();
        generation.tick(Timestamp::ZERO); // The first tick starts the detector's interval.
        generation.observe_outlier(1, &failure());
        generation.observe_outlier(0, &Report { outcome: Outcome::Success, ..failure() });
        assert_eq!(generation.extra(1).ejections.load(Ordering::Relaxed), 0, "not before the interval");
        generation.tick(Timestamp::ZERO + Duration::from_secs(60));
        assert!(generation.outlier().unwrap().is_ejected(1));
        assert_eq!(generation.extra(1).ejections.load(Ordering::Relaxed), 1);
        assert_eq!(generation.extra(0).ejections.load(Ordering::Relaxed), 0);
    }

    /// A balancer that picks the first eligible endpoint and writes down what it observes.
    struct Observing(EndpointSet, std::sync::Mutex<Vec<(usize, Outcome)>>);

    impl Balancer for Observing {
        fn endpoints(&self) -> &EndpointSet {
            &self.0
        }
        fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
            (0..self.0.len()).find(|&i| self.0.is_eligible(i, ctx))
        }
        fn observe(&self, index: usize, report: &Report) {
            self.1.lock().unwrap().push((index, report.outcome));
        }
    }

    #[test]
    fn the_generation_passes_reports_to_its_balancer_and_knows_when_none_is_eligible() {
        let set = EndpointSet::new([ep(1), ep(2)], Timestamp::ZERO);
        let extras = set.iter().map(numbered()).collect();
        let outlier = OutlierConfig { max_ejection_percent: 100, ..OutlierConfig::consecutive_failures(1) };
        let detector = OutlierDetector::new(outlier, set.clone());
        let generation = Arc::new(Generation::new(
            Observing(set, std::sync::Mutex::new(Vec::new())),
            extras,
            Some(detector),
        ));
        let (pick, _) =
            generation.pick_admitted(PickContext::new(), &Exclusions::new(), Timestamp::ZERO).unwrap();
        pick.complete(Report { outcome: Outcome::Timeout, ..failure() });
        assert_eq!(*generation.balancer().1.lock().unwrap(), [(0, Outcome::Timeout)]);
        assert!(generation.any_eligible());
        generation.observe_outlier(0, &failure());
        generation.observe_outlier(1, &failure());
        assert!(!generation.any_eligible(), "both ejected");
    }

    #[test]
    fn a_pick_passes_over_full_and_refusing_endpoints() {
        let limited = |_: &Member| Numbered {
            port: 0,
            made: 0,
            guard: Arc::new(EndpointGuard::new(None, Some(1))),
            ejections: Arc::new(AtomicU32::new(0)),
        };
        let live = Live::new(
            Algorithm::RoundRobin,
            EndpointSet::new([ep(1), ep(2)], Timestamp::ZERO),
            limited,
            None,
        );
        let generation = live.load();
        let none = Exclusions::new();
        let (a, _) = generation.pick_admitted(PickContext::new(), &none, Timestamp::ZERO).unwrap();
        let (b, _) = generation.pick_admitted(PickContext::new(), &none, Timestamp::ZERO).unwrap();
        assert_ne!(a.index(), b.index(), "the busy endpoint is full");
        assert!(generation.pick_admitted(PickContext::new(), &none, Timestamp::ZERO).is_none());
        drop(a);
        assert!(generation.pick_admitted(PickContext::new(), &none, Timestamp::ZERO).is_some());
    }
}
