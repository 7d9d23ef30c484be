//! Building a [`Balance`], directly or as a tower [`Layer`].

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{Build, Clock, Endpoint, EndpointSet, Member, MonotonicClock};
use tokio::sync::watch;
use tower::Layer;

use super::{Balance, MakeEndpoint, NoKey, Shared, Slot};
use crate::Error;
use crate::attempt::Guard;
use crate::live::{self, AbortOnDrop};
use crate::resilience::{Resilience, ResilienceConfig};
use lb_engine::Live;

/// Where the endpoints come from.
#[derive(Clone)]
enum Source {
    Static(Vec<Endpoint>),
    Watch(watch::Receiver<EndpointSet>),
}

/// Configures a [`Balance`]; start with [`Balance::builder`].
#[must_use = "a builder does nothing until built"]
#[derive(Clone)]
pub struct BalanceBuilder<A, K> {
    service: String,
    algorithm: A,
    source: Source,
    resilience: ResilienceConfig,
    clock: Arc<dyn Clock>,
    key: K,
    recheck: Duration,
}

impl<A, K> std::fmt::Debug for BalanceBuilder<A, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceBuilder").field("service", &self.service).finish_non_exhaustive()
    }
}

impl<A, K> std::fmt::Debug for BalanceLayer<A, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceLayer").field("builder", &self.builder).finish()
    }
}

impl<A: Build + 'static> BalanceBuilder<A, NoKey> {
    pub(crate) fn new(service: &str, algorithm: A) -> Self {
        BalanceBuilder {
            service: service.to_string(),
            algorithm,
            source: Source::Static(Vec::new()),
            resilience: ResilienceConfig::default(),
            clock: Arc::new(MonotonicClock::new()),
            key: NoKey,
            recheck: Duration::from_millis(50),
        }
    }
}

impl<A: Build + 'static, K: Send + Sync + 'static> BalanceBuilder<A, K> {
    /// A fixed list of endpoints.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        self.source = Source::Static(endpoints.into_iter().collect());
        self
    }

    /// Follows a discovery channel (see `lb_discovery::watch_snapshots`).
    pub fn discovery(mut self, endpoints: watch::Receiver<EndpointSet>) -> Self {
        self.source = Source::Watch(endpoints);
        self
    }

    /// Replaces the resilience settings.
    pub fn resilience(mut self, config: ResilienceConfig) -> Self {
        self.resilience = config;
        self
    }

    /// The clock health state machines read (default: the monotonic clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How often a balancer with no eligible endpoint looks again (default 50 ms).
    pub fn recheck_every(mut self, every: Duration) -> Self {
        self.recheck = every;
        self
    }

    /// Takes each request's affinity key with `key` (see [`super::HeaderKey`]).
    pub fn key<K2>(self, key: K2) -> BalanceBuilder<A, K2> {
        BalanceBuilder {
            service: self.service,
            algorithm: self.algorithm,
            source: self.source,
            resilience: self.resilience,
            clock: self.clock,
            key,
            recheck: self.recheck,
        }
    }

    /// Builds the balancer over the services `make` creates per endpoint.
    /// Background tasks (following discovery, sweeping ejections) start at
    /// the first `poll_ready`, so this needs no runtime.
    pub fn build<M>(self, make: M) -> Result<Balance<A, M::Service, K>, Error>
    where
        M: MakeEndpoint,
        M::Service: Clone + Send + Sync + 'static,
    {
        self.validate()?;
        let service: Arc<str> = Arc::from(self.service.as_str());
        let outlier = self.resilience.outlier.clone();
        let resilience = Arc::new(Resilience::new(self.resilience, Arc::clone(&self.clock), &service)?);
        crate::telemetry::describe();
        let (set, follow) = match self.source {
            Source::Static(endpoints) => (EndpointSet::new(endpoints, self.clock.now()), None),
            Source::Watch(rx) => {
                let set = rx.borrow().clone();
                (set, Some(rx))
            }
        };
        let new_slot = {
            let service = Arc::clone(&service);
            let resilience = Arc::clone(&resilience);
            move |member: &Member| Slot {
                service: make.make(member.endpoint()),
                guard: Guard::new(&service, member, &resilience),
            }
        };
        let live = Arc::new(Live::new(self.algorithm, set, new_slot, outlier));
        let starter = {
            let live = Arc::clone(&live);
            let resilience = Arc::clone(&resilience);
            move || {
                let mut tasks: Vec<AbortOnDrop> =
                    follow.map(|rx| live::follow(&live, rx)).into_iter().collect();
                tasks.extend(resilience.spawn_sweeper(live));
                tasks
            }
        };
        Ok(Balance {
            shared: Arc::new(Shared {
                service,
                live,
                resilience,
                clock: self.clock,
                key: self.key,
                recheck: self.recheck,
                started: AtomicBool::new(false),
                starter: Mutex::new(Some(Box::new(starter))),
                tasks: Mutex::new(Vec::new()),
            }),
            recheck: None,
        })
    }

    /// A tower layer that builds this balancer over the per-endpoint
    /// service maker it wraps.
    pub fn into_layer(self) -> Result<BalanceLayer<A, K>, Error> {
        self.validate()?;
        Ok(BalanceLayer { builder: self })
    }

    /// Every check `build` makes, so a layer built from valid settings cannot fail.
    fn validate(&self) -> Result<(), Error> {
        if self.recheck.is_zero() {
            return Err(Error::Config("recheck_every must be longer than zero".to_string()));
        }
        Resilience::new(self.resilience.clone(), Arc::clone(&self.clock), &Arc::from(self.service.as_str()))
            .map(drop)
    }
}

/// A tower [`Layer`] turning a per-endpoint service maker into a [`Balance`]:
/// `ServiceBuilder::new().layer(layer).service(|e: &Endpoint| make_client(e))`.
#[derive(Clone)]
pub struct BalanceLayer<A, K = NoKey> {
    builder: BalanceBuilder<A, K>,
}

impl<A, K, M> Layer<M> for BalanceLayer<A, K>
where
    A: Build + Clone + 'static,
    K: Clone + Send + Sync + 'static,
    M: MakeEndpoint,
    M::Service: Clone + Send + Sync + 'static,
{
    type Service = Balance<A, M::Service, K>;

    fn layer(&self, make: M) -> Self::Service {
        // Every setting was checked by `into_layer`, so this cannot fail.
        match self.builder.clone().build(make) {
            Ok(balance) => balance,
            Err(error) => unreachable!("settings were validated by into_layer: {error}"),
        }
    }
}
