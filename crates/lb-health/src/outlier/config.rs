//! Outlier detection settings, with Envoy's defaults.

use core::time::Duration;

/// The success-rate detector: ejects hosts whose success rate falls more
/// than `stdev_factor / 1000` standard deviations below the mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuccessRate {
    /// Hosts with at least `request_volume` requests must number this many (default 5).
    pub minimum_hosts: u32,
    /// Requests a host needs in the interval to be judged (default 100).
    pub request_volume: u32,
    /// Thousandths of a standard deviation (default 1900, i.e. 1.9).
    pub stdev_factor: u32,
}

impl Default for SuccessRate {
    fn default() -> Self {
        SuccessRate { minimum_hosts: 5, request_volume: 100, stdev_factor: 1900 }
    }
}

/// The failure-percentage detector: ejects hosts failing at least
/// `threshold` percent of their requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePercentage {
    /// Failure percentage that ejects (default 85).
    pub threshold: u32,
    /// Hosts with enough volume must number this many (default 5).
    pub minimum_hosts: u32,
    /// Requests a host needs in the interval to be judged (default 50).
    pub request_volume: u32,
}

impl Default for FailurePercentage {
    fn default() -> Self {
        FailurePercentage { threshold: 85, minimum_hosts: 5, request_volume: 50 }
    }
}

/// How an [`OutlierDetector`](crate::OutlierDetector) judges endpoints.
///
/// The defaults are Envoy's `outlier_detection` defaults, counting only the
/// detectors Envoy enforces by default (consecutive 5xx and success rate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// How often the interval detectors run and ejection multipliers decay (10 s).
    pub interval: Duration,
    /// Ejection time per time ejected (30 s).
    pub base_ejection_time: Duration,
    /// Longest ejection (300 s; never below `base_ejection_time`).
    pub max_ejection_time: Duration,
    /// At most this percentage of endpoints is ejected at once (10), though
    /// one endpoint may always be.
    pub max_ejection_percent: u32,
    /// Eject after this many consecutive 5xx (5).
    pub consecutive_5xx: Option<u32>,
    /// Eject after this many consecutive 502/503/504 (off: Envoy does not enforce it by default).
    pub consecutive_gateway_failure: Option<u32>,
    /// Eject after this many consecutive local-origin failures (5); counted
    /// only with `split_local_origin`.
    pub consecutive_local_origin_failure: Option<u32>,
    /// Count connect errors, timeouts and resets apart (Envoy's
    /// `split_external_local_origin_errors`). When off (the default) they
    /// count as 5xx and gateway errors.
    pub split_local_origin: bool,
    /// The success-rate detector (on).
    pub success_rate: Option<SuccessRate>,
    /// The failure-percentage detector (off: Envoy does not enforce it by default).
    pub failure_percentage: Option<FailurePercentage>,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            consecutive_5xx: Some(5),
            consecutive_gateway_failure: None,
            consecutive_local_origin_failure: Some(5),
            split_local_origin: false,
            success_rate: Some(SuccessRate::default()),
            failure_percentage: None,
        }
    }
}

impl OutlierConfig {
    /// Envoy's defaults; the same as `default()`.
    pub fn envoy() -> Self {
        OutlierConfig::default()
    }

    /// "More than 5 failures in a row remove the backend for a while": the
    /// sixth consecutive failure of any kind (5xx, connect error, timeout,
    /// reset) ejects it for 30 s, longer if it keeps failing.
    pub fn more_than_five_failures() -> Self {
        OutlierConfig::consecutive_failures(6)
    }

    /// Ejects an endpoint after `n` consecutive failures of any kind, and
    /// nothing else.
    pub fn consecutive_failures(n: u32) -> Self {
        OutlierConfig {
            consecutive_5xx: Some(n.max(1)),
            consecutive_gateway_failure: None,
            consecutive_local_origin_failure: None,
            split_local_origin: false,
            success_rate: None,
            failure_percentage: None,
            ..OutlierConfig::default()
        }
    }

    /// How long the `times`-th ejection lasts: base × times, capped.
    pub fn ejection_time(&self, times: u32) -> Duration {
        let cap = self.max_ejection_time.max(self.base_ejection_time);
        self.base_ejection_time.saturating_mul(times.max(1)).min(cap)
    }
}
