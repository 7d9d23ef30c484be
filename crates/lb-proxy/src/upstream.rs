//! One upstream at run time: its current snapshot of endpoints (swapped
//! atomically), and the per-endpoint state that outlives snapshots (health
//! guards, metric handles, the keep-alive connection pool).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use lb_core::{
    Balancer, Build, Clock, EndpointId, EndpointSet, HealthStatus, PickContext, Report, Timestamp,
};
use lb_health::{OutlierDetector, RetryBudget};

use crate::balancing::{Algorithm, AlgorithmChoice, AnyBalancer};
use crate::config;
use crate::health::Guards;
use crate::pool::Connections;
use crate::retry::{self, JitterSeeds};
use crate::telemetry::{BackendMetrics, UpstreamMetrics};

/// The per-upstream settings the forwarding path reads.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) protocol: config::UpstreamProtocol,
    /// Worker threads, each with its own pooled connections.
    pub(crate) workers: usize,
    /// Upper bounds of the latency histogram's buckets, in seconds.
    pub(crate) histogram_buckets: Arc<[f64]>,
    /// Below this share of healthy endpoints (percent), picks ignore health; 0: never.
    pub(crate) panic_threshold: u8,
    pub(crate) hash_key: Option<config::HashKey>,
    pub(crate) host_header: config::HostHeader,
    pub(crate) forwarded_header: bool,
    pub(crate) upgrade_protocols: Vec<String>,
    pub(crate) retry: config::Retry,
    pub(crate) timeouts: config::Timeouts,
    pub(crate) limits: config::Limits,
}

/// One endpoint's forwarding data, index-aligned with the snapshot's set.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Where requests go, ready to put in a URI.
    pub(crate) authority: Authority,
    pub(crate) metrics: BackendMetrics,
    pub(crate) guards: Guards,
    /// Keep-alive connections to this endpoint; outlives snapshots with the backend.
    pub(crate) pool: Connections,
}

/// An immutable view of an upstream: a balancer over one endpoint set plus
/// each endpoint's backend data. Swapped whole when discovery changes.
pub(crate) struct Snapshot {
    balancer: AnyBalancer,
    pub(crate) backends: Vec<Arc<Backend>>,
    /// Passive health over the same set; counters carry over between snapshots.
    pub(crate) outlier: Option<OutlierDetector>,
}

impl Snapshot {
    /// Feeds one finished try to the outlier detector; counts an ejection.
    pub(crate) fn observe_outlier(&self, index: usize, report: &Report) {
        if let Some(outlier) = &self.outlier
            && outlier.record(index, report)
        {
            self.backends[index].metrics.ejected();
            tracing::warn!(backend = %self.backends[index].authority, "endpoint ejected by outlier detection");
        }
    }
}

impl Balancer for Snapshot {
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
    /// The upstream's time-driven upkeep: slow start ramps, peak-EWMA decay,
    /// the return of endpoints whose ejection time is over, and closing idle
    /// connections.
    fn tick(&self, now: Timestamp) {
        self.balancer.tick(now);
        if let Some(outlier) = &self.outlier {
            outlier.tick(now);
        }
        for backend in &self.backends {
            backend.pool.evict_expired();
        }
    }
}

/// Where an endpoint stands, and which mechanism put it there; the first that applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// A failing active health check took it out.
    Unhealthy,
    /// Outlier detection ejected it for a while.
    Ejected,
    /// Its circuit breaker is open.
    BreakerOpen,
    /// Its circuit breaker lets trial requests through.
    BreakerHalfOpen,
    /// Discovery or the active check reports a warning; it still takes traffic.
    Degraded,
    Healthy,
}

impl Standing {
    fn of(status: HealthStatus, backend: &Backend, now: Timestamp) -> Standing {
        match (status, backend.guards.breaker_state(now)) {
            (HealthStatus::Unhealthy, _) => Standing::Unhealthy,
            (HealthStatus::Ejected, _) => Standing::Ejected,
            (_, lb_health::State::Open) => Standing::BreakerOpen,
            (_, lb_health::State::HalfOpen) => Standing::BreakerHalfOpen,
            (HealthStatus::Degraded, _) => Standing::Degraded,
            (HealthStatus::Healthy, _) => Standing::Healthy,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Standing::Unhealthy => "unhealthy",
            Standing::Ejected => "ejected",
            Standing::BreakerOpen => "breaker_open",
            Standing::BreakerHalfOpen => "breaker_half_open",
            Standing::Degraded => "degraded",
            Standing::Healthy => "healthy",
        }
    }

    /// The mechanism that took the endpoint out (or limits it), if one did.
    pub(crate) fn cause(self) -> Option<&'static str> {
        match self {
            Standing::Unhealthy => Some("active_check"),
            Standing::Ejected => Some("outlier_detection"),
            Standing::BreakerOpen | Standing::BreakerHalfOpen => Some("circuit_breaker"),
            Standing::Degraded => Some("discovery"),
            Standing::Healthy => None,
        }
    }
}

/// One request counted against its upstream's `max_in_flight`. A guard, so a
/// request dropped at any point (the client left, a drain ended) still ends its count.
pub(crate) struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The retry budget a retry section describes.
pub(crate) fn retry_budget(retry: &config::Retry) -> Result<RetryBudget, lb_health::BudgetError> {
    let percent = f64::from(*retry.budget_percent.get_ref()) / 100.0;
    RetryBudget::new(retry.budget_window, retry.budget_min_per_second, percent)
}

/// A seed for an upstream's jitter that differs between upstreams and
/// processes (std's per-thread random hash keys; no system call after the first).
fn first_seed(name: &str) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(name)
}

/// One upstream.
pub(crate) struct Upstream {
    pub(crate) name: Arc<str>,
    pub(crate) settings: Settings,
    pub(crate) current: ArcSwap<Snapshot>,
    pub(crate) in_flight: AtomicU32,
    /// Panic mode, set by the tick from the share of healthy endpoints.
    panic: AtomicBool,
    /// How its discovery source is doing; `None` for a static list.
    pub(crate) discovery: Mutex<Option<lb_discovery::SourceStatus>>,
    /// Upkeep rounds finished, so a caller can wait until the upkeep has
    /// seen a change (a clock moved, an endpoint failed) instead of sleeping.
    pub(crate) upkeep_rounds: AtomicU64,
    pub(crate) metrics: UpstreamMetrics,
    /// Which failed tries go again, and when (lb-health's engine, shared with the client).
    pub(crate) retry_policy: lb_health::RetryPolicy,
    /// Seeds for the jitter of each request's waits.
    pub(crate) jitter: JitterSeeds,
    budget: RetryBudget,
    algorithm: Algorithm,
    guard_config: crate::health::GuardConfig,
    /// Backends by endpoint id, so a rebuild keeps metrics handles and breakers.
    known: Mutex<HashMap<EndpointId, Arc<Backend>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Upstream {
    /// An upstream with no endpoints yet; [`install`](Upstream::install) adds them.
    pub(crate) fn new(
        name: &str,
        cfg: &config::Upstream,
        choice: AlgorithmChoice,
        process: &config::Config,
    ) -> Self {
        Upstream {
            name: Arc::from(name),
            settings: Settings {
                protocol: cfg.protocol,
                workers: *process.global.worker_threads.get_ref(),
                histogram_buckets: Arc::from(process.admin.histogram_buckets.get_ref().as_slice()),
                panic_threshold: *cfg.panic_threshold.get_ref(),
                hash_key: cfg.hash_key.clone(),
                host_header: cfg.host_header.clone(),
                forwarded_header: cfg.forwarded_header,
                upgrade_protocols: cfg.upgrade_protocols.clone(),
                retry: cfg.retry.clone(),
                timeouts: cfg.timeouts.clone(),
                limits: cfg.limits.clone(),
            },
            current: ArcSwap::from_pointee(Snapshot {
                balancer: choice.algorithm.build(EndpointSet::empty()),
                backends: Vec::new(),
                outlier: cfg
                    .outlier_detection
                    .as_ref()
                    .map(|o| OutlierDetector::new(crate::health::outlier_config(o), EndpointSet::empty())),
            }),
            in_flight: AtomicU32::new(0),
            panic: AtomicBool::new(false),
            discovery: Mutex::new(None),
            upkeep_rounds: AtomicU64::new(0),
            metrics: UpstreamMetrics::new(name),
            retry_policy: retry::policy(&cfg.retry),
            jitter: JitterSeeds::new(first_seed(name)),
            budget: retry_budget(&cfg.retry).unwrap_or_default(),
            algorithm: choice.algorithm,
            guard_config: crate::health::GuardConfig::from_upstream(name, cfg),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Builds a balancer for `set` off the hot path and swaps it in.
    /// Requests in flight keep the snapshot they picked from.
    pub(crate) fn install(&self, set: EndpointSet) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut backends = Vec::with_capacity(set.len());
        let mut kept = HashMap::with_capacity(set.len());
        for member in &set {
            let endpoint = member.endpoint();
            let address = endpoint.address().to_string();
            let backend = match known.get(endpoint.id()) {
                Some(b) if b.authority.as_str() == address => Arc::clone(b),
                _ => Arc::new(self.new_backend(&address)),
            };
            kept.insert(endpoint.id().clone(), Arc::clone(&backend));
            backends.push(backend);
        }
        *known = kept;
        let outlier = self.current.load().outlier.as_ref().map(|o| o.with_set(set.clone()));
        let balancer = self.algorithm.build(set);
        self.current.store(Arc::new(Snapshot { balancer, backends, outlier }));
        drop(known);
        self.update_panic();
    }

    fn new_backend(&self, address: &str) -> Backend {
        let authority = Authority::try_from(address)
            .unwrap_or_else(|_| Authority::from_static("invalid.endpoint.address:1"));
        Backend {
            metrics: BackendMetrics::new(&self.name, address, &self.settings.histogram_buckets),
            guards: self.guard_config.guards_for(address),
            pool: Connections::new(
                self.settings.protocol,
                self.settings.workers,
                self.settings.limits.max_idle_connections_per_endpoint,
                self.settings.timeouts.idle,
                self.settings.timeouts.connect,
            ),
            authority,
        }
    }

    /// Counts a request against the upstream's in-flight limit until the
    /// returned guard drops; `None` when the upstream is full.
    #[inline]
    pub(crate) fn admit(self: &Arc<Self>) -> Option<InFlight> {
        let limit = self.settings.limits.max_in_flight;
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        if limit != 0 && before >= limit {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlight(Arc::clone(self)))
    }

    /// The retry budget, the gate every retry passes last.
    pub(crate) fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Whether fewer than `panic_threshold` of the endpoints are healthy, so
    /// picks ignore health (Envoy's panic mode).
    #[inline]
    pub(crate) fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Re-reads the share of healthy endpoints off the request path (the
    /// upstream's tick): enters or leaves panic mode, saying so once.
    pub(crate) fn update_panic(&self) {
        let threshold = f64::from(self.settings.panic_threshold) / 100.0;
        let snapshot = self.current.load();
        let set = snapshot.endpoints();
        let share = set.eligible_share();
        let panic = threshold > 0.0 && !set.is_empty() && share < threshold;
        if self.panic.swap(panic, Ordering::Relaxed) != panic {
            let healthy = set.eligible_count();
            if panic {
                tracing::warn!(upstream = %self.name, healthy, of = set.len(), "panic mode: fewer than panic_threshold endpoints are healthy, balancing over all of them");
            } else {
                tracing::info!(upstream = %self.name, healthy, of = set.len(), "panic mode over");
            }
        }
    }

    /// Each endpoint's standing, with what took it out.
    pub(crate) fn standings(&self, now: Timestamp) -> Vec<(Arc<Backend>, Standing)> {
        let snapshot = self.current.load();
        snapshot
            .endpoints()
            .iter()
            .zip(&snapshot.backends)
            .map(|(member, backend)| {
                (Arc::clone(backend), Standing::of(member.state().status(), backend, now))
            })
            .collect()
    }

    /// Logs every endpoint whose standing changed since `last` (keyed by the
    /// endpoint's `Backend`), once, with its cause. Allocates only when
    /// endpoints come or go.
    pub(crate) fn log_health_changes(&self, last: &mut HashMap<usize, Standing>, now: Timestamp) {
        let snapshot = self.current.load();
        let key = |backend: &Arc<Backend>| Arc::as_ptr(backend) as usize;
        for (member, backend) in snapshot.endpoints().iter().zip(&snapshot.backends) {
            let standing = Standing::of(member.state().status(), backend, now);
            let before = last.insert(key(backend), standing).unwrap_or(Standing::Healthy);
            if before != standing {
                let (address, from, to) = (&backend.authority, before.label(), standing.label());
                match standing.cause() {
                    Some(cause) => {
                        tracing::warn!(upstream = %self.name, backend = %address, from, to, cause, "endpoint health changed")
                    }
                    None => {
                        tracing::info!(upstream = %self.name, backend = %address, from, to, "endpoint health changed")
                    }
                }
            }
        }
        if last.len() > snapshot.backends.len() {
            last.retain(|k, _| snapshot.backends.iter().any(|b| key(b) == *k));
        }
    }

    /// Refreshes the gauges that mirror state (health, breaker) for `/metrics`.
    pub(crate) fn refresh_gauges(&self, clock: &dyn Clock) {
        let snapshot = self.current.load();
        let now = clock.now();
        for (member, backend) in snapshot.endpoints().iter().zip(&snapshot.backends) {
            backend.metrics.healthy.set(if member.state().is_eligible() { 1.0 } else { 0.0 });
            backend.metrics.breaker_state.set(backend.guards.breaker_code(now));
        }
    }

    /// The per-try timeout, bounded by what is left of the request's deadline.
    pub(crate) fn try_timeout(&self, left: Duration) -> Duration {
        self.settings.timeouts.per_try.min(left)
    }
}
