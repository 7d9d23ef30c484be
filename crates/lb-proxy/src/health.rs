//! The per-endpoint guards the forwarding path consults: the circuit breaker
//! from `lb-health`, fed with the same outcome the balancer learns from.

use std::sync::Arc;

use lb_core::{Outcome, Timestamp};
use lb_health::{ActiveCheckConfig, CircuitBreaker, OutlierConfig, Rejected, State, Ticket};

use crate::config;

/// How to build the guards of each endpoint of one upstream.
#[derive(Debug, Clone)]
pub(crate) struct GuardConfig {
    upstream: String,
    breaker: Option<config::CircuitBreaker>,
}

impl GuardConfig {
    pub(crate) fn from_upstream(name: &str, cfg: &config::Upstream) -> Self {
        GuardConfig { upstream: name.to_string(), breaker: cfg.circuit_breaker.clone() }
    }

    /// Fresh guards for the endpoint at `address`.
    pub(crate) fn guards_for(&self, address: &str) -> Guards {
        let breaker = self.breaker.as_ref().map(|b| {
            let rules = b.rules();
            let consecutive = u64::from(rules.consecutive_failures);
            let ratio = rules.ratio.map(|(min, ratio)| (u64::from(min), ratio));
            let settings = lb_health::Settings::new(format!("{}/{address}", self.upstream))
                .max_requests(rules.half_open_requests)
                .timeout(rules.open_timeout)
                .interval(rules.interval)
                // Checked after each failure, as gobreaker does; 0 turns the consecutive rule off.
                .ready_to_trip(move |counts| {
                    (consecutive > 0 && counts.consecutive_failures >= consecutive)
                        || ratio.is_some_and(|(min, ratio)| {
                            counts.requests >= min && counts.failure_ratio() >= ratio
                        })
                })
                .on_state_change(
                    |name, from, to| tracing::warn!(breaker = name, %from, %to, "circuit breaker"),
                );
            Arc::new(CircuitBreaker::new(settings))
        });
        Guards { breaker }
    }
}

/// The guards of one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Guards {
    breaker: Option<Arc<CircuitBreaker>>,
}

/// Permission to send one request, to hand back with its outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    ticket: Option<Ticket>,
}

impl Guards {
    /// Asks the breaker whether a request may go to this endpoint now.
    #[inline]
    pub(crate) fn admit(&self, now: Timestamp) -> Result<Admission, Rejected> {
        match &self.breaker {
            None => Ok(Admission { ticket: None }),
            Some(b) => b.allow(now).map(|t| Admission { ticket: Some(t) }),
        }
    }

    /// Tells the breaker how an admitted request ended.
    #[inline]
    pub(crate) fn record(&self, admission: Admission, outcome: Outcome, now: Timestamp) {
        if let (Some(b), Some(ticket)) = (&self.breaker, admission.ticket) {
            b.record(ticket, outcome, now);
        }
    }

    /// The breaker's state (closed when there is no breaker).
    pub(crate) fn breaker_state(&self, now: Timestamp) -> State {
        self.breaker.as_ref().map_or(State::Closed, |b| b.state(now))
    }

    /// The breaker state as the `breaker_state` gauge encodes it: 0 closed, 1 open, 2 half-open.
    pub(crate) fn breaker_code(&self, now: Timestamp) -> f64 {
        f64::from(self.breaker_state(now).gauge_value())
    }
}

/// The outlier detector's settings for an `[outlier_detection]` section:
/// Envoy's consecutive detectors, local-origin failures counted apart.
pub(crate) fn outlier_config(o: &config::OutlierDetection) -> OutlierConfig {
    let (five_xx, local_origin) = o.consecutive();
    OutlierConfig {
        interval: o.interval,
        base_ejection_time: o.base_ejection_time,
        max_ejection_time: o.max_ejection_time,
        max_ejection_percent: u32::from(*o.max_ejection_percent.get_ref()),
        consecutive_5xx: (five_xx > 0).then_some(five_xx),
        consecutive_gateway_failure: None,
        consecutive_local_origin_failure: (local_origin > 0).then_some(local_origin),
        split_local_origin: local_origin > 0,
        success_rate: None,
        failure_percentage: None,
    }
}

/// The active checker's settings for a `[health_check]` section.
/// The checks of an upstream's `[health_check]` section; they speak the upstream's protocol.
pub(crate) fn active_check_config(
    c: &config::HealthCheck,
    protocol: config::UpstreamProtocol,
) -> ActiveCheckConfig {
    ActiveCheckConfig {
        http2: protocol == config::UpstreamProtocol::H2c,
        interval: c.interval,
        jitter: c.interval / 10,
        timeout: c.timeout,
        path: c.path.clone(),
        rise: *c.rise.get_ref(),
        fall: *c.fall.get_ref(),
        ..ActiveCheckConfig::default()
    }
}
