//! Metric names, labels and HELP texts, shared with `lb-proxy` so dashboards
//! work for both.
//!
//! Everything goes through the [`metrics`] facade: install any recorder (the
//! Prometheus exporter, say) and these appear; without one they cost a few
//! relaxed loads. Every pool, balancer and channel calls [`describe`] when it
//! is built, so the recorder has a HELP text for each metric; call it
//! yourself if you install the recorder later.
//!
//! Series appear when they first happen: no zero series are registered for
//! statuses or error types an endpoint never had. Each endpoint keeps the
//! handles of its series once registered (the common statuses included), so
//! recording a request builds no key and allocates nothing.
//!
//! With `metrics-exporter-prometheus`, give `request_duration_seconds`
//! buckets (for example [`DURATION_BUCKETS`], the proxy's) to have it
//! rendered as a histogram, as the proxy renders it; without buckets that
//! exporter renders histograms as summaries.
//!
//! ```
//! use lb_client::telemetry;
//!
//! assert_eq!(telemetry::help(telemetry::RETRIES_TOTAL), Some("Retries made (hedged copies included), by upstream."));
//! assert!(telemetry::NAMES.iter().all(|name| telemetry::help(name).is_some()));
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lb_core::{ErrorType, Outcome};
use metrics::{Counter, Gauge, Histogram, SharedString, Unit};

pub use lb_engine::names::{
    BREAKER_STATE, EJECTIONS_TOTAL, ENDPOINT_HEALTHY, REQUEST_DURATION_SECONDS, REQUEST_ERRORS_TOTAL,
    REQUESTS_IN_FLIGHT, REQUESTS_TOTAL, RETRIES_TOTAL,
};

/// Every metric name above.
pub const NAMES: [&str; 8] = [
    REQUEST_DURATION_SECONDS,
    REQUEST_ERRORS_TOTAL,
    REQUESTS_TOTAL,
    REQUESTS_IN_FLIGHT,
    ENDPOINT_HEALTHY,
    BREAKER_STATE,
    RETRIES_TOTAL,
    EJECTIONS_TOTAL,
];

/// The `backend` label of a request the client refused itself, before any
/// endpoint was picked (as the proxy labels its own answers; nginx's
/// `$upstream_addr` is `-` then too).
pub const NO_BACKEND: &str = "-";

/// The `status` of a request whose caller gave up on it (dropped its future,
/// or its request body failed) before the endpoint answered: nginx's
/// "client closed request", as the proxy counts it. Never an endpoint's error.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Prometheus' default buckets in seconds (client libraries' `DefBuckets`),
/// the proxy's buckets for `request_duration_seconds`.
pub const DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The HELP text of each metric, as [`describe`] registers it.
pub fn help(name: &str) -> Option<&'static str> {
    Some(match name {
        REQUEST_DURATION_SECONDS => {
            "Time from picking an endpoint to its response head (or failure), per endpoint, in seconds."
        }
        REQUEST_ERRORS_TOTAL => {
            "Failed requests by endpoint and error type (connect, timeout, reset, http_5xx, rejected)."
        }
        REQUESTS_TOTAL => {
            "Requests sent, by upstream, endpoint (\"-\" when the client refused the request itself) and status \
             (HTTP status, error without one, 499 when the caller gave up first)."
        }
        REQUESTS_IN_FLIGHT => "Requests in flight to an endpoint.",
        ENDPOINT_HEALTHY => "1 when an endpoint can be picked, 0 when a health mechanism took it out.",
        BREAKER_STATE => "An endpoint's circuit breaker: 0 closed, 1 open, 2 half-open.",
        RETRIES_TOTAL => "Retries made (hedged copies included), by upstream.",
        EJECTIONS_TOTAL => "Times an endpoint was ejected by outlier detection.",
        _ => return None,
    })
}

/// Gives the installed recorder the kind, unit and HELP text of every
/// metric. Idempotent: describing again replaces the text with the same.
/// Pools, balancers and channels call it when built.
pub fn describe() {
    let text = |name: &str| SharedString::const_str(help(name).unwrap_or_default());
    metrics::describe_histogram!(REQUEST_DURATION_SECONDS, Unit::Seconds, text(REQUEST_DURATION_SECONDS));
    metrics::describe_counter!(REQUEST_ERRORS_TOTAL, Unit::Count, text(REQUEST_ERRORS_TOTAL));
    metrics::describe_counter!(REQUESTS_TOTAL, Unit::Count, text(REQUESTS_TOTAL));
    metrics::describe_gauge!(REQUESTS_IN_FLIGHT, Unit::Count, text(REQUESTS_IN_FLIGHT));
    metrics::describe_gauge!(ENDPOINT_HEALTHY, text(ENDPOINT_HEALTHY));
    metrics::describe_gauge!(BREAKER_STATE, text(BREAKER_STATE));
    metrics::describe_counter!(RETRIES_TOTAL, Unit::Count, text(RETRIES_TOTAL));
    metrics::describe_counter!(EJECTIONS_TOTAL, Unit::Count, text(EJECTIONS_TOTAL));
}

/// What `requests_total` counts one attempt under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// The endpoint answered with this HTTP status.
    Code(u16),
    /// A success with no HTTP status (a non-HTTP tower service).
    Ok,
    /// No answer: the connection failed or timed out.
    Error,
}

impl Status {
    /// The status of a transport result: its HTTP code when there is one.
    pub(crate) fn of(code: Option<u16>, outcome: Outcome) -> Self {
        match code {
            Some(code) => Status::Code(code),
            None if outcome.is_success() => Status::Ok,
            None => Status::Error,
        }
    }

    /// The `status` label value.
    fn label(self) -> SharedString {
        match self {
            Status::Ok => SharedString::const_str("ok"),
            Status::Error => SharedString::const_str("error"),
            Status::Code(code) => match COMMON_STATUSES.iter().position(|&c| c == code) {
                Some(i) => SharedString::const_str(COMMON_LABELS[i]),
                None => SharedString::from(code.to_string()),
            },
        }
    }

    /// The slot of its cached counter, if it is common enough to have one.
    fn slot(self) -> Option<usize> {
        match self {
            Status::Ok => Some(COMMON_STATUSES.len()),
            Status::Error => Some(COMMON_STATUSES.len() + 1),
            Status::Code(code) => COMMON_STATUSES.iter().position(|&c| c == code),
        }
    }
}

/// Statuses whose counter an endpoint keeps once it has seen them.
const COMMON_STATUSES: [u16; 18] =
    [200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 409, 429, 499, 500, 502, 503, 504];
const COMMON_LABELS: [&str; 18] = [
    "200", "201", "202", "204", "301", "302", "304", "400", "401", "403", "404", "409", "429", "499", "500",
    "502", "503", "504",
];
/// The common statuses, then `ok` and `error`.
const STATUS_SLOTS: usize = COMMON_STATUSES.len() + 2;

/// The series of one endpoint, each registered the first time it is used.
#[derive(Debug, Default)]
struct Series {
    in_flight: OnceLock<Gauge>,
    duration: OnceLock<Histogram>,
    healthy: OnceLock<Gauge>,
    breaker: OnceLock<Gauge>,
    ejections: OnceLock<Counter>,
    errors: [OnceLock<Counter>; ErrorType::ALL.len()],
    statuses: [OnceLock<Counter>; STATUS_SLOTS],
}

/// The labels and series of one endpoint of one upstream; cloning bumps three
/// reference counts.
///
/// A series is registered with the recorder the first time it records, so
/// install the recorder before sending (as the `metrics` crate expects of
/// handles).
#[derive(Debug, Clone)]
pub(crate) struct EndpointLabels {
    upstream: Arc<str>,
    backend: Arc<str>,
    series: Arc<Series>,
}

impl EndpointLabels {
    pub(crate) fn new(upstream: &Arc<str>, backend: &str) -> Self {
        EndpointLabels { upstream: Arc::clone(upstream), backend: Arc::from(backend), series: Arc::default() }
    }

    fn upstream(&self) -> SharedString {
        SharedString::from(Arc::clone(&self.upstream))
    }

    fn backend(&self) -> SharedString {
        SharedString::from(Arc::clone(&self.backend))
    }

    /// The endpoint's label value (its address).
    pub(crate) fn backend_name(&self) -> &str {
        &self.backend
    }

    fn in_flight(&self) -> &Gauge {
        self.series.in_flight.get_or_init(
            || metrics::gauge!(REQUESTS_IN_FLIGHT, "upstream" => self.upstream(), "backend" => self.backend()),
        )
    }

    fn count_status(&self, status: Status) {
        let register = || {
            metrics::counter!(REQUESTS_TOTAL, "upstream" => self.upstream(), "backend" => self.backend(),
                "status" => status.label())
        };
        match status.slot() {
            Some(slot) => self.series.statuses[slot].get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }

    /// A request was sent to this endpoint.
    #[inline]
    pub(crate) fn started(&self) {
        self.in_flight().increment(1.0);
    }

    /// A request to this endpoint ended on the caller's side before the
    /// endpoint answered (its future dropped, its body failed, a hedged copy
    /// lost): counted as [`CLIENT_CLOSED_REQUEST`], never as the endpoint's error.
    pub(crate) fn cancelled(&self) {
        self.in_flight().decrement(1.0);
        self.count_status(Status::Code(CLIENT_CLOSED_REQUEST));
    }

    /// A request to this endpoint ended with `outcome` and `status` after `latency`.
    #[inline]
    pub(crate) fn finished(&self, outcome: Outcome, status: Status, latency: Duration) {
        self.in_flight().decrement(1.0);
        self.series
            .duration
            .get_or_init(|| metrics::histogram!(REQUEST_DURATION_SECONDS, "backend" => self.backend()))
            .record(latency.as_secs_f64());
        self.count_status(status);
        if let Some(kind) = outcome.error_type() {
            self.series.errors[kind as usize]
                .get_or_init(|| {
                    metrics::counter!(REQUEST_ERRORS_TOTAL, "backend" => self.backend(), "error_type" => kind.label())
                })
                .increment(1);
        }
    }

    /// The endpoint's breaker moved to `state` (0 closed, 1 open, 2 half-open).
    pub(crate) fn breaker_state(&self, state: f64) {
        self.series
            .breaker
            .get_or_init(
                || metrics::gauge!(BREAKER_STATE, "upstream" => self.upstream(), "backend" => self.backend()),
            )
            .set(state);
    }

    /// Whether the endpoint may be picked now.
    pub(crate) fn healthy(&self, eligible: bool) {
        self.series
            .healthy
            .get_or_init(
                || metrics::gauge!(ENDPOINT_HEALTHY, "upstream" => self.upstream(), "backend" => self.backend()),
            )
            .set(if eligible { 1.0 } else { 0.0 });
    }

    /// The outlier detector ejected this endpoint.
    pub(crate) fn ejected(&self) {
        self.healthy(false);
        self.series
            .ejections
            .get_or_init(
                || metrics::counter!(EJECTIONS_TOTAL, "upstream" => self.upstream(), "backend" => self.backend()),
            )
            .increment(1);
    }
}

/// The series of one upstream as a whole.
#[derive(Debug)]
pub(crate) struct UpstreamLabels {
    upstream: Arc<str>,
    retries: OnceLock<Counter>,
    refused_requests: OnceLock<Counter>,
    refused_errors: OnceLock<Counter>,
}

impl UpstreamLabels {
    pub(crate) fn new(upstream: &Arc<str>) -> Self {
        UpstreamLabels {
            upstream: Arc::clone(upstream),
            retries: OnceLock::new(),
            refused_requests: OnceLock::new(),
            refused_errors: OnceLock::new(),
        }
    }

    /// One retry (or hedged copy) of a request.
    pub(crate) fn retried(&self) {
        self.retries
            .get_or_init(|| {
                metrics::counter!(RETRIES_TOTAL, "upstream" => SharedString::from(Arc::clone(&self.upstream)))
            })
            .increment(1);
    }

    /// The client refused a request itself: no endpoint could take it (none
    /// known, all taken out by health checks or ejection, every breaker
    /// open, every endpoint at its in-flight limit). Counted under
    /// `backend="-"` as a `rejected` error, as the proxy counts its own 503s.
    pub(crate) fn refused(&self) {
        self.refused_errors
            .get_or_init(|| {
                metrics::counter!(REQUEST_ERRORS_TOTAL, "backend" => NO_BACKEND,
                    "error_type" => ErrorType::Rejected.label())
            })
            .increment(1);
        self.refused_requests
            .get_or_init(|| {
                metrics::counter!(REQUESTS_TOTAL, "upstream" => SharedString::from(Arc::clone(&self.upstream)),
                    "backend" => NO_BACKEND, "status" => Status::Error.label())
            })
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_statuses_have_static_labels_and_slots() {
        for (code, label) in COMMON_STATUSES.iter().zip(COMMON_LABELS) {
            assert_eq!(code.to_string(), label);
            assert_eq!(&*Status::Code(*code).label(), label);
            assert!(Status::Code(*code).slot().is_some());
        }
        assert_eq!(&*Status::Code(418).label(), "418");
        assert_eq!(Status::Code(418).slot(), None, "a rare status is looked up each time");
        assert_ne!(Status::Ok.slot(), Status::Error.slot());
        assert!(Status::Error.slot() < Some(STATUS_SLOTS));
        assert_eq!(Status::of(None, Outcome::Timeout), Status::Error);
        assert_eq!(Status::of(None, Outcome::Success), Status::Ok);
        assert_eq!(Status::of(Some(503), Outcome::Http5xx(503)), Status::Code(503));
    }
}
