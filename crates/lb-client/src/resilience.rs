//! The health machinery of one upstream, wired from `lb-health`: a circuit
//! breaker per endpoint, passive outlier ejection, a retry budget shared by
//! every request. (Which requests are retried, and the backoff, are the
//! pool's `lb_health::RetryPolicy`.)

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Build, Clock, Timestamp};
use lb_engine::{EndpointGuard, JitterSeeds, Live, Upkeep};
use lb_health::prober::Prober;
use lb_health::{ActiveCheckConfig, OutlierConfig, RetryBudget, Settings};

use crate::Error;
use crate::live::AbortOnDrop;
use crate::telemetry::UpstreamLabels;

/// The retry budget's parameters (Finagle's `RetryBudget`; defaults 10 s,
/// 10 retries per second of reserve, 20 % of requests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// The window deposits and withdrawals are counted over (1 s to 60 s).
    pub ttl: Duration,
    /// Retries per second always allowed, even with no traffic.
    pub min_per_sec: u32,
    /// Retries allowed as a fraction of requests (0.2 = 20 %).
    pub percent: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { ttl: Duration::from_secs(10), min_per_sec: 10, percent: 0.2 }
    }
}

/// How an upstream protects itself and its endpoints. Every mechanism is
/// `lb-health`'s; this says which are on and how they are tuned.
#[derive(Debug, Clone)]
pub struct ResilienceConfig {
    /// One breaker per endpoint with these settings (default: gobreaker's,
    /// trip after more than 5 consecutive failures, but open for 10 s
    /// rather than 60 s). `None` turns breakers off.
    pub breaker: Option<Settings>,
    /// Passive outlier ejection over the upstream's endpoints (default:
    /// [`ResilienceConfig::guide_outlier`], the user's guide's "more than 5
    /// failures": the 6th consecutive failure of any kind ejects for 30 s, at
    /// most 10 % of the endpoints but always one). `None` turns it off.
    pub outlier: Option<OutlierConfig>,
    /// At most this many requests in flight to one endpoint at once
    /// (default 1024; `None`: no limit). With HTTP/1.1 this also bounds the
    /// connections open to it. A request over the limit goes to another
    /// endpoint, or fails at once with `NoEndpoint` when all are full
    /// (Envoy's `max_requests` overflow).
    pub max_in_flight_per_endpoint: Option<u32>,
    /// Active HTTP health checks, one task per endpoint (default off).
    pub active_check: Option<ActiveCheckConfig>,
    /// The retry budget shared by every request of the upstream.
    pub budget: BudgetConfig,
    /// How often ejections are reviewed and the interval detectors run (default 1 s).
    pub sweep_every: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            breaker: Some(Settings::new("endpoint").timeout(Duration::from_secs(10))),
            outlier: Some(ResilienceConfig::guide_outlier()),
            max_in_flight_per_endpoint: Some(1024),
            active_check: None,
            budget: BudgetConfig::default(),
            sweep_every: Duration::from_secs(1),
        }
    }
}

impl ResilienceConfig {
    /// The default outlier detection: the user's guide's passive check
    /// (`if failures > 5 { remove the backend for a while }`) on Envoy's
    /// machinery, as `lb_health::OutlierConfig::more_than_five_failures` and
    /// the proxy's `preset = "guide"` define it. A streak ejects when it
    /// reaches its threshold, and the threshold is 6: five failures in a row
    /// leave the endpoint in, the sixth ejects it. Failures of any kind count
    /// in one streak (5xx answers, refused connections, timeouts, resets)
    /// and any other answer ends it; a failure on the caller's side (its
    /// request dropped, its body broken) counts for nothing. Ejections last
    /// 30 s, growing with repeats up to 300 s, and take at most 10 % of the
    /// endpoints out, but always one. Envoy's interval detectors (success
    /// rate, failure percentage) are off, as in the proxy; set them on the
    /// returned value to use them.
    pub fn guide_outlier() -> OutlierConfig {
        OutlierConfig::more_than_five_failures()
    }
}

/// The live health machinery of one upstream.
pub(crate) struct Resilience {
    config: ResilienceConfig,
    budget: RetryBudget,
    /// Seeds for the jitter of each request's backoff.
    jitter: JitterSeeds,
    prober: Option<Prober>,
    clock: Arc<dyn Clock>,
    labels: UpstreamLabels,
}

impl Resilience {
    pub(crate) fn new(
        config: ResilienceConfig,
        clock: Arc<dyn Clock>,
        service: &Arc<str>,
    ) -> Result<Self, Error> {
        let BudgetConfig { ttl, min_per_sec, percent } = config.budget;
        let budget = RetryBudget::new(ttl, min_per_sec, percent).map_err(|e| Error::Config(e.to_string()))?;
        let prober = match &config.active_check {
            Some(check) => Some(Prober::new(check.clone()).map_err(|e| Error::Config(e.to_string()))?),
            None => None,
        };
        if config.sweep_every.is_zero() {
            return Err(Error::Config("sweep_every must be longer than zero".to_string()));
        }
        let jitter = JitterSeeds::random();
        Ok(Resilience { config, budget, jitter, prober, clock, labels: UpstreamLabels::new(service) })
    }

    /// Active checks over TLS with `tls`, the settings the traffic uses (an https pool).
    pub(crate) fn checking_over(mut self, tls: &lb_tls::ClientTls) -> Result<Self, Error> {
        if let Some(prober) = self.prober.take() {
            let http2 = prober.config().http2 || prober.config().grpc_service.is_some();
            let alpn: &[u8] = if http2 { b"h2" } else { b"http/1.1" };
            self.prober = Some(prober.with_tls(tls.connector(&[alpn])?));
        }
        Ok(self)
    }

    /// The guard of a newly discovered endpoint: its breaker and in-flight limit.
    pub(crate) fn new_endpoint(&self) -> Arc<EndpointGuard> {
        Arc::new(EndpointGuard::new(self.config.breaker.clone(), self.config.max_in_flight_per_endpoint))
    }

    /// Counts a new request (not a retry) toward the retry budget.
    #[inline]
    pub(crate) fn deposit(&self, now: Timestamp) {
        self.budget.deposit(now);
    }

    /// Takes one retry from the budget, if there is one.
    pub(crate) fn withdraw(&self, now: Timestamp) -> bool {
        self.budget.try_withdraw(now)
    }

    /// The upstream's own series: retries, refused requests.
    pub(crate) fn labels(&self) -> &UpstreamLabels {
        &self.labels
    }

    /// Seeds for the jitter of each request's backoff.
    pub(crate) fn jitter(&self) -> &JitterSeeds {
        &self.jitter
    }

    /// The retry budget, the gate every retry passes.
    pub(crate) fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Starts the periodic work, off the hot path: the balancer's tick (slow
    /// start, peak-EWMA decay), the outlier detector's tick (ending
    /// ejections, running the interval detectors) and the active checks,
    /// which follow the endpoint set.
    pub(crate) fn spawn_sweeper<A, E>(&self, live: Arc<Live<A, E>>) -> Vec<AbortOnDrop>
    where
        A: Build + Send + Sync + 'static,
        E: lb_engine::Extra,
    {
        let clock = Arc::clone(&self.clock);
        let mut upkeep = Upkeep::new(self.prober.clone());
        let live = Arc::downgrade(&live);
        let task = tokio::spawn(lb_engine::upkeep::every(self.config.sweep_every, move || {
            let Some(live) = live.upgrade() else { return ControlFlow::Break(()) };
            // Extras mirror ejections and active checks in `endpoint_healthy`.
            upkeep.round(&live.load(), clock.now());
            ControlFlow::Continue(())
        }));
        vec![AbortOnDrop(task)]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lb_core::{Endpoint, EndpointSet, Outcome, Report, Timestamp};
    use lb_health::OutlierDetector;

    use super::*;

    fn failure(outcome: Outcome) -> Report {
        Report { outcome, latency: Duration::from_millis(1), at: Timestamp::ZERO }
    }

    #[test]
    fn the_default_ejects_on_the_sixth_consecutive_failure_of_any_kind() {
        let config = ResilienceConfig::default().outlier.expect("outlier detection is on by default");
        assert_eq!(config, ResilienceConfig::guide_outlier());
        assert_eq!((config.consecutive_5xx, config.split_local_origin), (Some(6), false));
        let set = EndpointSet::new(
            (1..=2).map(|p| Endpoint::new(std::net::SocketAddr::from(([10, 0, 0, 1], p)))),
            Timestamp::ZERO,
        );
        let detector = OutlierDetector::new(config, set);
        let kinds = [Outcome::Http5xx(500), Outcome::ConnectError, Outcome::Timeout, Outcome::Reset];
        for i in 0..5 {
            assert!(!detector.record(0, &failure(kinds[i % kinds.len()])), "failure {} leaves it in", i + 1);
        }
        assert!(!detector.record(0, &failure(Outcome::Success)), "a success ends the streak");
        for i in 0..5 {
            assert!(!detector.record(0, &failure(kinds[i % kinds.len()])));
        }
        assert!(detector.record(0, &failure(Outcome::Http5xx(503))), "the sixth in a row ejects");
        assert!(detector.is_ejected(0));
    }
}
