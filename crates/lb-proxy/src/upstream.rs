//! One upstream at run time: its current generation of endpoints (lb-engine's,
//! swapped atomically), and the per-endpoint state that outlives generations
//! (the endpoint guard, metric handles, the keep-alive connection pool).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use http::uri::Authority;
use lb_core::{Balancer, Clock, HealthStatus, Member, Outcome, Timestamp};
use lb_engine::{EndpointGuard, Extra, JitterSeeds, Live};
use lb_health::RetryBudget;

use crate::balancing::{Algorithm, AlgorithmChoice};
use crate::config;
use crate::pool::{Connections, UpstreamTls};
use crate::retry;
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
    /// TLS to the endpoints; none: plain TCP.
    pub(crate) tls: Option<UpstreamTls>,
}

/// One endpoint's forwarding data; outlives generations while the endpoint
/// stays (same id, same address).
#[derive(Debug)]
pub(crate) struct Backend {
    /// Where requests go, ready to put in a URI.
    pub(crate) authority: Authority,
    pub(crate) metrics: BackendMetrics,
    /// Its circuit breaker and in-flight limit.
    pub(crate) guard: EndpointGuard,
    /// Keep-alive connections to this endpoint.
    pub(crate) pool: Connections,
}

/// A shared [`Backend`]: the proxy's per-endpoint [`Extra`] in lb-engine's generations.
#[derive(Debug, Clone)]
pub(crate) struct BackendRef(pub(crate) Arc<Backend>);

impl std::ops::Deref for BackendRef {
    type Target = Backend;
    fn deref(&self) -> &Backend {
        &self.0
    }
}

impl Extra for BackendRef {
    type Status = StatusCode;

    fn guard(&self) -> &EndpointGuard {
        &self.guard
    }
    fn started(&self) {
        self.metrics.started();
    }
    fn finished(&self, outcome: Outcome, status: StatusCode, latency: Duration) {
        self.metrics.finished(status, outcome, latency);
    }
    fn cancelled(&self, status: Option<StatusCode>) {
        self.metrics.cancelled(status.unwrap_or(crate::telemetry::CLIENT_CLOSED_REQUEST));
    }
    fn ejected(&self) {
        self.metrics.ejected();
        tracing::warn!(backend = %self.authority, "endpoint ejected by outlier detection");
    }
}

/// Where an endpoint stands, and which mechanism put it there; the first that applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// An operator drained it (the admin listener's `.../drain`).
    Drained,
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
        if backend.guard.is_drained() {
            return Standing::Drained;
        }
        match (status, backend.guard.breaker_state(now)) {
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
            Standing::Drained => "drained",
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
            Standing::Drained => Some("operator"),
            Standing::Unhealthy => Some("active_check"),
            Standing::Ejected => Some("outlier_detection"),
            Standing::BreakerOpen | Standing::BreakerHalfOpen => Some("circuit_breaker"),
            Standing::Degraded => Some("discovery"),
            Standing::Healthy => None,
        }
    }
}

/// Makes the backend of an endpoint seen for the first time: its metric
/// handles, its guard (the `[circuit_breaker]` section and
/// `max_in_flight_per_endpoint`) and its connection pool.
fn backend_maker(
    name: &str,
    cfg: &config::Upstream,
    settings: &Settings,
    clock: &Arc<dyn Clock>,
) -> impl Fn(&Member) -> BackendRef + Send + Sync + 'static {
    let (name, breaker, settings) = (name.to_string(), cfg.circuit_breaker.clone(), settings.clone());
    let clock = Arc::clone(clock);
    move |member| {
        let address = member.endpoint().address().to_string();
        let authority = Authority::try_from(address.as_str())
            .unwrap_or_else(|_| Authority::from_static("invalid.endpoint.address:1"));
        let limit = settings.limits.max_in_flight_per_endpoint;
        let breaker = breaker.as_ref().map(|b| crate::health::breaker_settings(&name, &address, b));
        BackendRef(Arc::new(Backend {
            metrics: BackendMetrics::new(&name, &address, &settings.histogram_buckets),
            guard: EndpointGuard::new(breaker, (limit != 0).then_some(limit)),
            pool: Connections::new(
                settings.protocol,
                settings.workers,
                settings.limits.max_idle_connections_per_endpoint,
                settings.timeouts.idle,
                settings.timeouts.connect,
                settings.tls.clone(),
                Arc::clone(&clock),
            ),
            authority,
        }))
    }
}

/// The TLS connector of every upstream that has a `tls` table, its files
/// read; only [`read`](Self::read) makes one, so none is ever missing.
#[derive(Debug, Default)]
pub(crate) struct UpstreamConnectors(HashMap<String, lb_tls::TlsConnector>);

impl UpstreamConnectors {
    /// Reads every upstream's TLS files, offering its protocol over ALPN.
    pub(crate) fn read(config: &config::Config) -> Result<Self, crate::server::StartError> {
        let mut connectors = HashMap::new();
        for (name, upstream) in &config.upstreams {
            let upstream = upstream.get_ref();
            let Some(tls) = &upstream.tls else { continue };
            let connector =
                tls.get_ref().to_client_tls().connector(&[upstream.protocol.alpn()]).map_err(|e| {
                    crate::server::StartError::Upstream { upstream: name.clone(), reason: e.to_string() }
                })?;
            connectors.insert(name.clone(), connector);
        }
        Ok(UpstreamConnectors(connectors))
    }

    /// The connector of upstream `name`; none when it has no `tls`.
    pub(crate) fn get(&self, name: &str) -> Option<&lb_tls::TlsConnector> {
        self.0.get(name)
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

/// One upstream.
pub(crate) struct Upstream {
    pub(crate) name: Arc<str>,
    pub(crate) settings: Settings,
    /// The current generation (a balancer over one endpoint set, each
    /// endpoint's backend, the outlier detector), rebuilt by
    /// [`install`](Upstream::install); requests in flight keep the one they picked from.
    pub(crate) current: Live<Algorithm, BackendRef>,
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
        tls: Option<lb_tls::TlsConnector>,
        clock: &Arc<dyn Clock>,
    ) -> Self {
        let settings = Settings {
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
            tls,
        };
        let outlier = cfg.outlier_detection.as_ref().map(crate::health::outlier_config);
        let new_backend = backend_maker(name, cfg, &settings, clock);
        Upstream {
            name: Arc::from(name),
            current: Live::new(choice.algorithm, lb_core::EndpointSet::empty(), new_backend, outlier),
            settings,
            in_flight: AtomicU32::new(0),
            panic: AtomicBool::new(false),
            discovery: Mutex::new(None),
            upkeep_rounds: AtomicU64::new(0),
            metrics: UpstreamMetrics::new(name),
            retry_policy: retry::policy(&cfg.retry),
            jitter: JitterSeeds::random(),
            budget: retry_budget(&cfg.retry).unwrap_or_default(),
        }
    }

    /// Builds a generation for `set` off the hot path and swaps it in.
    /// Requests in flight keep the snapshot they picked from.
    pub(crate) fn install(&self, set: lb_core::EndpointSet) {
        self.current.update(set);
        self.update_panic();
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
            .zip(snapshot.extras())
            .map(|(member, backend)| {
                (Arc::clone(&backend.0), Standing::of(member.state().status(), backend, now))
            })
            .collect()
    }

    /// Logs every endpoint whose standing changed since `last` (keyed by the
    /// endpoint's `Backend`), once, with its cause. Allocates only when
    /// endpoints come or go.
    pub(crate) fn log_health_changes(&self, last: &mut HashMap<usize, Standing>, now: Timestamp) {
        let snapshot = self.current.load();
        let key = |backend: &BackendRef| Arc::as_ptr(&backend.0) as usize;
        for (member, backend) in snapshot.endpoints().iter().zip(snapshot.extras()) {
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
        if last.len() > snapshot.extras().len() {
            last.retain(|k, _| snapshot.extras().iter().any(|b| key(b) == *k));
        }
    }

    /// Refreshes the gauges that mirror state (health, breaker) for `/metrics`.
    pub(crate) fn refresh_gauges(&self, clock: &dyn Clock) {
        let snapshot = self.current.load();
        let now = clock.now();
        for (member, backend) in snapshot.endpoints().iter().zip(snapshot.extras()) {
            backend.metrics.healthy.set(if member.state().is_eligible() { 1.0 } else { 0.0 });
            backend.metrics.breaker_state.set(f64::from(backend.guard.breaker_state(now).gauge_value()));
        }
    }

    /// The per-try timeout, bounded by what is left of the request's deadline.
    pub(crate) fn try_timeout(&self, left: Duration) -> Duration {
        self.settings.timeouts.per_try.min(left)
    }
}
