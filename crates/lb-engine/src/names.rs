//! The metric names the proxy and the client both publish, so one
//! dashboard reads either. Labels: `upstream` (the proxy's upstream or the
//! client's service), `backend` (an endpoint's address), `status`,
//! `error_type`.

/// Histogram of request latency in seconds, labelled `backend`.
pub const REQUEST_DURATION_SECONDS: &str = "request_duration_seconds";
/// Counter of failed requests, labelled `backend` and `error_type` (`connect`,
/// `timeout`, `reset`, `http_5xx`, `rejected`).
pub const REQUEST_ERRORS_TOTAL: &str = "request_errors_total";
/// Counter of finished requests, labelled `upstream`, `backend` and `status`.
pub const REQUESTS_TOTAL: &str = "requests_total";
/// Gauge of requests sent and not yet answered, labelled `upstream` and `backend`.
pub const REQUESTS_IN_FLIGHT: &str = "requests_in_flight";
/// Gauge, 1 while an endpoint may be picked (not ejected, not failing its
/// active checks), labelled `upstream` and `backend`.
pub const ENDPOINT_HEALTHY: &str = "endpoint_healthy";
/// Gauge of an endpoint's circuit breaker: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "breaker_state";
/// Counter of retries, labelled `upstream`.
pub const RETRIES_TOTAL: &str = "retries_total";
/// Counter of outlier ejections, labelled `upstream` and `backend`.
pub const EJECTIONS_TOTAL: &str = "ejections_total";

/// The span attributes both products put on a request's span.
pub mod span {
    /// The upstream (proxy) or service (client) the request went to.
    pub const UPSTREAM: &str = "lb.upstream";
    /// The endpoint that answered, as `host:port`.
    pub const BACKEND: &str = "backend";
    /// On a retry event: the number of the try that failed, from 1.
    pub const TRY: &str = "lb.try";
    /// What a failed try ended with, on a retry event.
    pub const ERROR_TYPE: &str = "error.type";
    /// The event recorded for every retry.
    pub const RETRY_EVENT: &str = "retry";
}
