//! Metric handles registered once per endpoint, so a request only bumps atomics.
//!
//! The names are shared with `lb-client`; dashboards work for both.

use std::time::Duration;

use http::StatusCode;
use lb_core::{ErrorType, Outcome};
use std::sync::{Arc, LazyLock};

use metrics::{Counter, Gauge, counter, gauge};

mod histogram;

use histogram::{DEFAULT_BUCKETS, Family, Histogram};

/// `request_duration_seconds{backend}`, as the user's guide names it.
static REQUEST_DURATION: LazyLock<Family> = LazyLock::new(|| {
    Family::new(
        "request_duration_seconds",
        "Time from picking an endpoint to the end of its response, per endpoint.",
        &DEFAULT_BUCKETS,
    )
});

/// Appends the histograms the proxy keeps itself to a Prometheus exposition.
pub(crate) fn render_histograms(out: &mut String) {
    REQUEST_DURATION.render(out);
}

/// A Prometheus label value: `"` and `\` escaped, line breaks as `\n`.
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// nginx's "client closed request".
pub(crate) const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// Statuses common enough to get a pre-registered counter.
const COMMON_STATUSES: [u16; 16] =
    [200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504, 499];

/// Every metric of one endpoint of one upstream.
#[derive(Debug)]
pub(crate) struct BackendMetrics {
    upstream: String,
    backend: String,
    duration: Arc<Histogram>,
    in_flight: Gauge,
    pub(crate) healthy: Gauge,
    pub(crate) breaker_state: Gauge,
    pub(crate) ejections: Counter,
    errors: [Counter; 5],
    statuses: [(u16, Counter); COMMON_STATUSES.len()],
}

impl BackendMetrics {
    /// Registers the handles for `backend` (its address) in `upstream`.
    pub(crate) fn new(upstream: &str, backend: &str) -> Self {
        let (u, b) = (upstream.to_string(), backend.to_string());
        BackendMetrics {
            duration: REQUEST_DURATION.get(format!("backend=\"{}\"", label_value(&b))),
            in_flight: gauge!("requests_in_flight", "upstream" => u.clone(), "backend" => b.clone()),
            healthy: gauge!("endpoint_healthy", "upstream" => u.clone(), "backend" => b.clone()),
            breaker_state: gauge!("breaker_state", "upstream" => u.clone(), "backend" => b.clone()),
            ejections: counter!("ejections_total", "upstream" => u.clone(), "backend" => b.clone()),
            errors: ErrorType::ALL
                .map(|k| counter!("request_errors_total", "backend" => b.clone(), "error_type" => k.label())),
            statuses: COMMON_STATUSES.map(|s| {
                (s, counter!("requests_total", "upstream" => u.clone(), "backend" => b.clone(), "status" => s.to_string()))
            }),
            upstream: u,
            backend: b,
        }
    }

    /// A request started.
    #[inline]
    pub(crate) fn started(&self) {
        self.in_flight.increment(1.0);
    }

    /// A request ended with `status` (as the client saw it) after `latency`.
    pub(crate) fn finished(&self, status: StatusCode, outcome: Outcome, latency: Duration) {
        self.in_flight.decrement(1.0);
        self.duration.record(latency);
        if let Some(kind) = outcome.error_type() {
            self.errors[kind as usize].increment(1);
        }
        self.count_status(status.as_u16());
    }

    /// The request ended on the client's side before the endpoint answered
    /// (499 when it went away): counted under `status`, never as the endpoint's error.
    pub(crate) fn cancelled(&self, status: StatusCode) {
        self.in_flight.decrement(1.0);
        self.count_status(status.as_u16());
    }

    fn count_status(&self, code: u16) {
        match self.statuses.iter().find(|(s, _)| *s == code) {
            Some((_, c)) => c.increment(1),
            None => counter!("requests_total", "upstream" => self.upstream.clone(),
                "backend" => self.backend.clone(), "status" => code.to_string())
            .increment(1),
        }
    }
}

/// Counts a retry in `upstream`.
pub(crate) fn retry_counter(upstream: &str) -> Counter {
    counter!("retries_total", "upstream" => upstream.to_string())
}
