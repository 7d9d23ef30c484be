//! Metric handles registered once per endpoint, so a request only bumps atomics.
//!
//! The names are shared with `lb-client`; dashboards work for both.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use http::StatusCode;
use lb_core::{ErrorType, Outcome};
use lb_engine::names;

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};

mod histogram;

pub(crate) use histogram::DEFAULT_BUCKETS;
use histogram::{Family, Histogram};

/// `request_duration_seconds{backend}`, as the user's guide names it.
static REQUEST_DURATION: LazyLock<Family> = LazyLock::new(|| {
    Family::new(
        names::REQUEST_DURATION_SECONDS,
        "Time from picking an endpoint to the end of its response, per endpoint.",
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

/// Statuses common enough to keep a handle for once seen (others are looked up each time).
const COMMON_STATUSES: [u16; 16] =
    [200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 499, 500, 502, 503, 504];

/// The label value of metrics about the proxy's own answers, when no endpoint was picked
/// (nginx's `$upstream_addr` is `-` then too).
const NO_BACKEND: &str = "-";

/// Counters of one `{upstream, backend}` pair, each registered the first time it counts,
/// so a scrape shows only series that happened.
#[derive(Debug)]
struct Counts {
    upstream: String,
    backend: String,
    errors: [OnceLock<Counter>; ErrorType::ALL.len()],
    statuses: [OnceLock<Counter>; COMMON_STATUSES.len()],
}

impl Counts {
    fn new(upstream: &str, backend: &str) -> Self {
        Counts {
            upstream: upstream.to_string(),
            backend: backend.to_string(),
            errors: Default::default(),
            statuses: Default::default(),
        }
    }

    fn error(&self, kind: ErrorType) {
        self.errors[kind as usize]
            .get_or_init(|| counter!(names::REQUEST_ERRORS_TOTAL, "backend" => self.backend.clone(), "error_type" => kind.label()))
            .increment(1);
    }

    fn status(&self, code: u16) {
        let register = || {
            counter!(names::REQUESTS_TOTAL, "upstream" => self.upstream.clone(),
                "backend" => self.backend.clone(), "status" => code.to_string())
        };
        match COMMON_STATUSES.iter().position(|&s| s == code) {
            Some(i) => self.statuses[i].get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }
}

/// Every metric of one endpoint of one upstream.
#[derive(Debug)]
pub(crate) struct BackendMetrics {
    counts: Counts,
    duration: Arc<Histogram>,
    in_flight: Gauge,
    pub(crate) healthy: Gauge,
    pub(crate) breaker_state: Gauge,
    ejections: OnceLock<Counter>,
}

impl BackendMetrics {
    /// The handles for `backend` (its address) in `upstream`; `buckets` bound its latency histogram.
    pub(crate) fn new(upstream: &str, backend: &str, buckets: &[f64]) -> Self {
        let (u, b) = (upstream.to_string(), backend.to_string());
        BackendMetrics {
            duration: REQUEST_DURATION.get(format!("backend=\"{}\"", label_value(&b)), buckets),
            in_flight: gauge!(names::REQUESTS_IN_FLIGHT, "upstream" => u.clone(), "backend" => b.clone()),
            healthy: gauge!(names::ENDPOINT_HEALTHY, "upstream" => u.clone(), "backend" => b.clone()),
            breaker_state: gauge!(names::BREAKER_STATE, "upstream" => u, "backend" => b),
            ejections: OnceLock::new(),
            counts: Counts::new(upstream, backend),
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
            self.counts.error(kind);
        }
        self.counts.status(status.as_u16());
    }

    /// The request ended on the client's side before the endpoint answered
    /// (499 when it went away): counted under `status`, never as the endpoint's error.
    pub(crate) fn cancelled(&self, status: StatusCode) {
        self.in_flight.decrement(1.0);
        self.counts.status(status.as_u16());
    }

    /// The outlier detector ejected the endpoint.
    pub(crate) fn ejected(&self) {
        let Counts { upstream, backend, .. } = &self.counts;
        self.ejections
            .get_or_init(
                || counter!(names::EJECTIONS_TOTAL, "upstream" => upstream.clone(), "backend" => backend.clone()),
            )
            .increment(1);
    }
}

/// Metrics of one upstream as a whole.
#[derive(Debug)]
pub(crate) struct UpstreamMetrics {
    pub(crate) retries: Counter,
    panic_picks: OnceLock<Counter>,
    upstream: String,
    /// The proxy's own refusals, under `backend="-"`.
    refusals: Counts,
}

impl UpstreamMetrics {
    pub(crate) fn new(upstream: &str) -> Self {
        UpstreamMetrics {
            retries: counter!(names::RETRIES_TOTAL, "upstream" => upstream.to_string()),
            panic_picks: OnceLock::new(),
            upstream: upstream.to_string(),
            refusals: Counts::new(upstream, NO_BACKEND),
        }
    }

    /// The proxy answered 503 itself: every breaker refused, no endpoint is
    /// healthy, or `max_in_flight` is reached. Counted as a `rejected` error.
    pub(crate) fn refused(&self) {
        self.refusals.error(ErrorType::Rejected);
        self.refusals.status(StatusCode::SERVICE_UNAVAILABLE.as_u16());
    }

    /// A request was balanced in panic mode, over every endpoint.
    pub(crate) fn panicked(&self) {
        self.panic_picks
            .get_or_init(|| counter!("panic_requests_total", "upstream" => self.upstream.clone()))
            .increment(1);
    }

    /// The proxy answered `status` itself for the client's fault (413): counted, never as an error.
    pub(crate) fn answered(&self, status: StatusCode) {
        self.refusals.status(status.as_u16());
    }
}

/// The client connections a listener holds, and the ones it closed at once for being over its cap.
pub(crate) fn connection_metrics(listener: &str) -> (Gauge, Counter) {
    (
        gauge!("client_connections", "listener" => listener.to_string()),
        counter!("client_connections_refused_total", "listener" => listener.to_string()),
    )
}

/// Gives every metric of the proxy its HELP text; call once the recorder is installed.
pub(crate) fn describe() {
    describe_counter!(
        names::REQUESTS_TOTAL,
        "Requests answered, by upstream, endpoint (\"-\" when the proxy answered itself) and status."
    );
    describe_counter!(
        names::REQUEST_ERRORS_TOTAL,
        "Failed requests by endpoint and error type (connect, timeout, reset, http_5xx, rejected)."
    );
    describe_counter!(names::RETRIES_TOTAL, "Retries made, by upstream.");
    describe_counter!(names::EJECTIONS_TOTAL, "Times an endpoint was ejected by outlier detection.");
    describe_counter!(
        "panic_requests_total",
        "Requests balanced over every endpoint because fewer than panic_threshold were healthy (Envoy's lb_healthy_panic)."
    );
    describe_gauge!(names::REQUESTS_IN_FLIGHT, "Requests in flight to an endpoint.");
    describe_gauge!("client_connections", "Client connections open on a listener.");
    describe_counter!(
        "client_connections_refused_total",
        "Client connections closed at once because the listener was at max_connections."
    );
    describe_gauge!(
        names::ENDPOINT_HEALTHY,
        "1 when an endpoint can be picked, 0 when a health mechanism took it out."
    );
    describe_gauge!(names::BREAKER_STATE, "An endpoint's circuit breaker: 0 closed, 1 open, 2 half-open.");
}
