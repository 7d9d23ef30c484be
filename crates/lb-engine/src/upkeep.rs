//! The time-driven upkeep of an upstream, off the request path: the
//! balancer's timers (slow start ramps, peak-EWMA idle decay), the outlier
//! detector's (ending ejections, interval detectors), and active health
//! checks that follow the endpoint set.

use std::ops::ControlFlow;
use std::time::Duration;

use lb_core::{Balancer, EndpointSet, Timestamp};
use lb_health::prober::{ProbeSet, Prober};

use crate::generation::{Extra, Generation};

/// What one upstream's upkeep keeps between rounds: its active checks.
#[derive(Debug, Default)]
pub struct Upkeep {
    prober: Option<Prober>,
    /// The probe tasks and the set they follow.
    probes: Option<(ProbeSet, EndpointSet)>,
}

impl Upkeep {
    /// An upkeep that runs active checks with `prober`, if given.
    pub fn new(prober: Option<Prober>) -> Self {
        Upkeep { prober, probes: None }
    }

    /// One round at `now`: ticks the generation (balancer and outlier
    /// detector; extras hear of interval ejections) and moves the active
    /// checks to its endpoint set (one probe task per endpoint, kept for
    /// endpoints that stay, stopped for those that left). Then tells each
    /// extra whether its endpoint may be picked.
    pub fn round<B: Balancer, E: Extra>(&mut self, generation: &Generation<B, E>, now: Timestamp) {
        generation.tick(now);
        self.follow_set(generation.endpoints());
        for (member, extra) in generation.endpoints().iter().zip(generation.extras()) {
            extra.eligibility(member.state().is_eligible());
        }
    }

    fn follow_set(&mut self, set: &EndpointSet) {
        let Some(prober) = &self.prober else { return };
        match &mut self.probes {
            Some((_, seen)) if seen.same_snapshot(set) => {}
            Some((probes, seen)) => {
                probes.update(set);
                *seen = set.clone();
            }
            None => self.probes = Some((prober.watch(set), set.clone())),
        }
    }
}

/// Calls `round` every `period` (a late round delays the next rather than
/// bunching them) until it breaks. The first round runs at once.
pub async fn every(period: Duration, mut round: impl FnMut() -> ControlFlow<()>) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if round().is_break() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use lb_core::{Endpoint, HealthStatus, Member};
    use lb_health::ActiveCheckConfig;

    use super::*;
    use crate::{EndpointGuard, Live};

    #[derive(Clone)]
    struct Plain(Arc<EndpointGuard>);

    impl Extra for Plain {
        type Status = u16;
        fn guard(&self) -> &EndpointGuard {
            &self.0
        }
    }

    /// A loopback address nothing listens on: bound, then released.
    fn refused() -> Endpoint {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Endpoint::new(listener.local_addr().unwrap())
    }

    /// Waits (at most 5 s) until endpoint `index` of the current generation is unhealthy.
    async fn until_unhealthy(live: &Live<lb_algorithms::Algorithm, Plain>, index: usize) {
        for _ in 0..500 {
            if live.load().endpoints().members()[index].state().status() == HealthStatus::Unhealthy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("endpoint {index} was never checked");
    }

    #[tokio::test]
    async fn rounds_check_the_current_set_and_follow_it_when_it_changes() {
        let config = ActiveCheckConfig {
            interval: Duration::from_millis(10),
            jitter: Duration::ZERO,
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
            ..ActiveCheckConfig::default()
        };
        let first = refused();
        let set = EndpointSet::new([first.clone()], Timestamp::ZERO);
        let live = Live::new(
            lb_algorithms::Algorithm::RoundRobin,
            set,
            |_: &Member| Plain(Arc::new(EndpointGuard::new(None, None))),
            None,
        );
        let mut upkeep = Upkeep::new(Some(Prober::new(config).unwrap()));
        upkeep.round(&live.load(), Timestamp::ZERO);
        until_unhealthy(&live, 0).await;

        live.update(live.load().endpoints().replaced([first, refused()], Timestamp::ZERO));
        upkeep.round(&live.load(), Timestamp::ZERO);
        until_unhealthy(&live, 1).await;
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_come_every_period_until_one_breaks() {
        let rounds = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&rounds);
        let started = tokio::time::Instant::now();
        every(Duration::from_secs(1), move || {
            let n = counted.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
        .await;
        assert_eq!(rounds.load(Ordering::Relaxed), 3);
        assert_eq!(started.elapsed(), Duration::from_secs(2), "at once, then one per period");
    }
}
