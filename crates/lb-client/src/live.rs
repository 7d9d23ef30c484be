//! The current balancer and its per-endpoint extras, rebuilt off the hot path
//! whenever discovery publishes a new [`EndpointSet`], and swapped in atomically.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use lb_core::{Balancer, Build, EndpointSet};
use lb_health::{OutlierConfig, OutlierDetector};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One immutable generation: a balancer and, index-aligned with its
/// endpoints, whatever the caller keeps per endpoint (a base URL, a breaker,
/// a tower service). Requests in flight keep the generation they picked from.
pub(crate) struct Generation<B, E> {
    pub(crate) balancer: Arc<B>,
    pub(crate) extras: Vec<E>,
    /// The passive outlier detector over this generation's set, if enabled.
    pub(crate) outlier: Option<OutlierDetector>,
}

impl<B: Balancer, E> Generation<B, E> {
    /// Whether at least one endpoint may be picked; relaxed loads only.
    pub(crate) fn any_eligible(&self) -> bool {
        self.balancer.endpoints().iter().any(|m| m.state().is_eligible())
    }
}

/// Makes the extras of a new generation, reusing the previous generation's
/// (matched by endpoint id) so breakers and connections survive an update.
pub(crate) type MakeExtras<E> = dyn Fn(&EndpointSet, Option<(&EndpointSet, &[E])>) -> Vec<E> + Send + Sync;

/// The swapped-in generation plus what rebuilds it.
pub(crate) struct Live<A: Build, E> {
    current: ArcSwap<Generation<A::Output, E>>,
    algorithm: A,
    make_extras: Box<MakeExtras<E>>,
}

impl<A: Build, E: Send + Sync + 'static> Live<A, E> {
    pub(crate) fn new(
        algorithm: A,
        set: EndpointSet,
        make_extras: Box<MakeExtras<E>>,
        outlier: Option<OutlierConfig>,
    ) -> Self {
        let extras = make_extras(&set, None);
        let outlier = outlier.map(|config| OutlierDetector::new(config, set.clone()));
        let balancer = Arc::new(algorithm.build(set));
        Live {
            current: ArcSwap::from_pointee(Generation { balancer, extras, outlier }),
            algorithm,
            make_extras,
        }
    }

    /// The current generation: one lock-free load.
    #[inline]
    pub(crate) fn load(&self) -> Arc<Generation<A::Output, E>> {
        self.current.load_full()
    }

    /// Builds a generation for `set` and swaps it in.
    pub(crate) fn update(&self, set: EndpointSet) {
        let before = self.current.load();
        let extras = (self.make_extras)(&set, Some((before.balancer.endpoints(), &before.extras)));
        // Endpoints that stay keep their failure counts and ejections.
        let outlier = before.outlier.as_ref().map(|detector| detector.with_set(set.clone()));
        let balancer = Arc::new(self.algorithm.build(set));
        self.current.store(Arc::new(Generation { balancer, extras, outlier }));
    }
}

/// Follows `endpoints`, rebuilding `live` on every published set, until the
/// sender goes away or `live` is dropped. Returns the task, to abort on drop.
pub(crate) fn follow<A, E>(
    live: &Arc<Live<A, E>>,
    mut endpoints: watch::Receiver<EndpointSet>,
) -> JoinHandle<()>
where
    A: Build + 'static,
    E: Send + Sync + 'static,
{
    let weak: Weak<Live<A, E>> = Arc::downgrade(live);
    tokio::spawn(async move {
        while endpoints.changed().await.is_ok() {
            let set = endpoints.borrow_and_update().clone();
            let Some(live) = weak.upgrade() else { break };
            live.update(set);
        }
    })
}

/// Aborts a background task when the owner is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Finds the extras the previous generation kept for the endpoint with the
/// same id as `set`'s member `index`.
pub(crate) fn previous<'a, E>(
    set: &EndpointSet,
    index: usize,
    previous: Option<(&EndpointSet, &'a [E])>,
) -> Option<&'a E> {
    let (old_set, old_extras) = previous?;
    let id = set.get(index)?.endpoint().id();
    let old = old_set.index_of(id)?;
    // Reuse only when the address is unchanged: a moved endpoint needs a new connection.
    (old_set.get(old)?.endpoint().address() == set.get(index)?.endpoint().address())
        .then(|| old_extras.get(old))
        .flatten()
}

#[cfg(test)]
mod tests {
    use lb_algorithms::Algorithm;
    use lb_core::{Endpoint, HealthStatus, Outcome, Report, Timestamp};

    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(std::net::SocketAddr::from(([10, 0, 0, 1], port)))
    }

    /// Extras that remember which generation made them.
    fn numbered() -> Box<MakeExtras<(u16, u32)>> {
        let made = std::sync::atomic::AtomicU32::new(0);
        Box::new(move |set, before| {
            let generation = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (0..set.len())
                .map(|i| {
                    *previous(set, i, before)
                        .unwrap_or(&(set.members()[i].endpoint().address().port(), generation))
                })
                .collect()
        })
    }

    #[test]
    fn extras_and_ejections_survive_an_update_by_id() {
        let config = OutlierConfig::consecutive_failures(1);
        let live = Live::new(
            Algorithm::RoundRobin,
            EndpointSet::new([ep(1), ep(2)], Timestamp::ZERO),
            numbered(),
            Some(config),
        );
        let first = live.load();
        let failure = Report {
            outcome: Outcome::ConnectError,
            latency: std::time::Duration::ZERO,
            at: Timestamp::ZERO,
        };
        assert!(first.outlier.as_ref().unwrap().record(0, &failure));

        live.update(first.balancer.endpoints().replaced([ep(1), ep(2), ep(3)], Timestamp::ZERO));
        let second = live.load();
        assert_eq!(second.extras, [(1, 0), (2, 0), (3, 1)], "kept extras for endpoints that stayed");
        assert_eq!(second.balancer.endpoints().get(0).unwrap().state().status(), HealthStatus::Ejected);
        assert!(second.outlier.as_ref().unwrap().is_ejected(0), "the detector carried the ejection over");
        assert!(first.balancer.endpoints().len() == 2, "the old generation is untouched");

        // Same id, new address: a new endpoint as far as connections go.
        let moved = ep(9).with_id(ep(2).id().as_str());
        live.update(second.balancer.endpoints().replaced([ep(1), moved], Timestamp::ZERO));
        assert_eq!(live.load().extras, [(1, 0), (9, 2)]);
    }
}
