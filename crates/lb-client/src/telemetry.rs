//! Metric names and labels, shared with `lb-proxy` so dashboards work for both.
//!
//! Everything goes through the [`metrics`] facade: install any recorder (the
//! Prometheus exporter, say) and these appear; without one they cost a few
//! relaxed loads.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lb_core::{ErrorType, Outcome};

/// Histogram of request latency in seconds, labelled `backend`.
pub const REQUEST_DURATION_SECONDS: &str = "request_duration_seconds";
/// Counter of failed requests, labelled `backend` and `error_type`.
pub const REQUEST_ERRORS_TOTAL: &str = "request_errors_total";
/// Counter of finished requests, labelled `upstream`, `backend` and `status`.
pub const REQUESTS_TOTAL: &str = "requests_total";
/// Gauge of requests sent and not yet answered, labelled `upstream` and `backend`.
pub const REQUESTS_IN_FLIGHT: &str = "requests_in_flight";
/// Gauge of each endpoint's circuit breaker (0 closed, 1 open, 2 half-open),
/// labelled `upstream` and `backend`.
pub const BREAKER_STATE: &str = "breaker_state";
/// Counter of retries, labelled `upstream`.
pub const RETRIES_TOTAL: &str = "retries_total";
/// Counter of outlier ejections, labelled `upstream` and `backend`.
pub const EJECTIONS_TOTAL: &str = "ejections_total";

/// The series every request to one endpoint touches, registered once so a
/// request records without building keys or allocating.
#[derive(Debug)]
struct Handles {
    in_flight: metrics::Gauge,
    duration: metrics::Histogram,
    answered_200: metrics::Counter,
}

/// The labels of one endpoint of one upstream; cloning bumps three reference counts.
///
/// The per-request series are registered with the recorder on the
/// endpoint's first request, so install the recorder before sending (as
/// the `metrics` crate expects of handles).
#[derive(Debug, Clone)]
pub(crate) struct EndpointLabels {
    upstream: Arc<str>,
    backend: Arc<str>,
    handles: Arc<OnceLock<Handles>>,
}

impl EndpointLabels {
    pub(crate) fn new(upstream: &Arc<str>, backend: &str) -> Self {
        EndpointLabels {
            upstream: Arc::clone(upstream),
            backend: Arc::from(backend),
            handles: Arc::default(),
        }
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| Handles {
            in_flight: metrics::gauge!(REQUESTS_IN_FLIGHT, "upstream" => self.upstream(), "backend" => self.backend()),
            duration: metrics::histogram!(REQUEST_DURATION_SECONDS, "backend" => self.backend()),
            answered_200: metrics::counter!(
                REQUESTS_TOTAL, "upstream" => self.upstream(), "backend" => self.backend(), "status" => "200"
            ),
        })
    }

    fn upstream(&self) -> metrics::SharedString {
        metrics::SharedString::from(Arc::clone(&self.upstream))
    }

    /// The endpoint's label value (its address).
    pub(crate) fn backend_name(&self) -> &str {
        &self.backend
    }

    fn backend(&self) -> metrics::SharedString {
        metrics::SharedString::from(Arc::clone(&self.backend))
    }

    /// A request was sent to this endpoint.
    pub(crate) fn started(&self) {
        self.handles().in_flight.increment(1.0);
    }

    /// A request to this endpoint was cancelled before it ended.
    pub(crate) fn cancelled(&self) {
        self.handles().in_flight.decrement(1.0);
    }

    /// A request to this endpoint ended; `status` is the HTTP status code or
    /// a word such as `error`.
    pub(crate) fn finished(&self, outcome: Outcome, status: metrics::SharedString, latency: Duration) {
        let handles = self.handles();
        handles.in_flight.decrement(1.0);
        handles.duration.record(latency.as_secs_f64());
        if &*status == "200" {
            handles.answered_200.increment(1);
        } else {
            metrics::counter!(REQUESTS_TOTAL, "upstream" => self.upstream(), "backend" => self.backend(), "status" => status)
                .increment(1);
        }
        if let Some(kind) = outcome.error_type().map(ErrorType::label) {
            metrics::counter!(REQUEST_ERRORS_TOTAL, "backend" => self.backend(), "error_type" => kind)
                .increment(1);
        }
    }

    /// The endpoint's breaker moved to `state` (0 closed, 1 open, 2 half-open).
    pub(crate) fn breaker_state(&self, state: f64) {
        metrics::gauge!(BREAKER_STATE, "upstream" => self.upstream(), "backend" => self.backend()).set(state);
    }

    /// The outlier detector ejected this endpoint.
    pub(crate) fn ejected(&self) {
        metrics::counter!(EJECTIONS_TOTAL, "upstream" => self.upstream(), "backend" => self.backend())
            .increment(1);
    }
}

/// One retry of a request to `upstream`.
pub(crate) fn retried(upstream: &Arc<str>) {
    metrics::counter!(RETRIES_TOTAL, "upstream" => metrics::SharedString::from(Arc::clone(upstream)))
        .increment(1);
}

/// The `status` label for an HTTP status code, without allocating for the common ones.
pub(crate) fn status_label(code: u16) -> metrics::SharedString {
    let known = match code {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => return metrics::SharedString::from(code.to_string()),
    };
    metrics::SharedString::const_str(known)
}

/// The `status` label: the HTTP status when there is one, else `ok` or `error`.
pub(crate) fn status_or_outcome(status: Option<u16>, outcome: Outcome) -> metrics::SharedString {
    match status {
        Some(code) => status_label(code),
        None if outcome.is_success() => metrics::SharedString::const_str("ok"),
        None => metrics::SharedString::const_str("error"),
    }
}
