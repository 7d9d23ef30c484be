//! Active health checks: settings, response classification and the
//! rise/fall state machine (HAProxy semantics). The HTTP prober that drives
//! it lives in [`prober`](crate::prober) under the `tokio` feature.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::RangeInclusive;
use core::time::Duration;

use lb_core::{EndpointState, HealthFlag};

use crate::rng::Rng;

/// Which statuses pass a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedStatus {
    /// Any status in the range (HAProxy's default is 200..=399).
    Range(RangeInclusive<u16>),
    /// Exactly these statuses.
    Set(Vec<u16>),
}

impl ExpectedStatus {
    /// Whether `status` passes.
    pub fn contains(&self, status: u16) -> bool {
        match self {
            ExpectedStatus::Range(r) => r.contains(&status),
            ExpectedStatus::Set(s) => s.contains(&status),
        }
    }
}

/// How a response becomes a [`CheckResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Classification {
    /// Passing if the status is expected (and the body holds the expected text), else critical.
    Expected,
    /// Consul's rule: 2xx passing, 429 warning, anything else critical. The
    /// expected body, if set, still applies to passing answers.
    Consul,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckResult {
    /// Healthy.
    Passing,
    /// Up, but degraded (Consul's 429); counts as a pass for rise/fall.
    Warning,
    /// Failed: bad status, missing body text, timeout or connection failure.
    Critical,
}

/// Whether an endpoint starts up or down before its first checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InitialState {
    /// Starts taking traffic; `fall` failures take it down (HAProxy's default).
    Healthy,
    /// Starts out of the pick set; `rise` passes bring it in.
    Unhealthy,
}

/// Why an [`ActiveCheckConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActiveCheckError {
    /// `rise` and `fall` must be at least 1.
    #[error("rise and fall must be at least 1 (got rise {rise}, fall {fall})")]
    BadThresholds {
        /// The rise given.
        rise: u32,
        /// The fall given.
        fall: u32,
    },
    /// Interval and timeout must be positive.
    #[error("interval and timeout must be positive")]
    ZeroTime,
    /// The path must start with `/`.
    #[error("health check path `{0}` must start with `/`")]
    BadPath(String),
    /// The method is not a valid HTTP token.
    #[error("`{0}` is not an HTTP method")]
    BadMethod(String),
}

/// Settings of an active HTTP health check; HAProxy's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheckConfig {
    /// Time between checks (2 s).
    pub interval: Duration,
    /// Each interval is moved by up to ± this much, so checks spread out (200 ms).
    pub jitter: Duration,
    /// Bound on one check, connect to last body byte (1 s).
    pub timeout: Duration,
    /// Request path ("/").
    pub path: String,
    /// Request method ("GET").
    pub method: String,
    /// `Host` header; the endpoint's address when `None`.
    pub host: Option<String>,
    /// Statuses that pass (200..=399).
    pub expected_status: ExpectedStatus,
    /// Text the body must contain, if any.
    pub expected_body: Option<String>,
    /// Consecutive passes that bring a down endpoint up (2).
    pub rise: u32,
    /// Consecutive failures that take an up endpoint down (3).
    pub fall: u32,
    /// Up or down before the first checks (up).
    pub initial: InitialState,
    /// How responses are classified.
    pub classification: Classification,
    /// Check over HTTP/2 in cleartext with prior knowledge (h2c), for
    /// servers that speak only HTTP/2, such as gRPC servers (off: HTTP/1.1).
    pub http2: bool,
    /// Speak the gRPC health protocol instead of an HTTP request: call
    /// `grpc.health.v1.Health/Check` over h2c for this service (`""` asks
    /// about the whole server), as Envoy and grpc-go do. Passing means
    /// `grpc-status: 0` and `SERVING`; `path`, `method`, `host` and the
    /// expected status and body do not apply.
    pub grpc_service: Option<String>,
}

impl Default for ActiveCheckConfig {
    fn default() -> Self {
        ActiveCheckConfig {
            interval: Duration::from_secs(2),
            jitter: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
            path: String::from("/"),
            method: String::from("GET"),
            host: None,
            expected_status: ExpectedStatus::Range(200..=399),
            expected_body: None,
            rise: 2,
            fall: 3,
            initial: InitialState::Healthy,
            classification: Classification::Expected,
            http2: false,
            grpc_service: None,
        }
    }
}

impl ActiveCheckConfig {
    /// Checks the settings make sense.
    pub fn validate(&self) -> Result<(), ActiveCheckError> {
        if self.rise == 0 || self.fall == 0 {
            return Err(ActiveCheckError::BadThresholds { rise: self.rise, fall: self.fall });
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err(ActiveCheckError::ZeroTime);
        }
        if !self.path.starts_with('/') {
            return Err(ActiveCheckError::BadPath(self.path.clone()));
        }
        Ok(())
    }

    /// Classifies a response by status and body.
    pub fn classify(&self, status: u16, body: &[u8]) -> CheckResult {
        let body_ok = self.expected_body.as_ref().is_none_or(|needle| contains(body, needle.as_bytes()));
        match self.classification {
            Classification::Expected if self.expected_status.contains(status) && body_ok => {
                CheckResult::Passing
            }
            Classification::Consul if (200..300).contains(&status) && body_ok => CheckResult::Passing,
            Classification::Consul if status == 429 => CheckResult::Warning,
            _ => CheckResult::Critical,
        }
    }

    /// The wait before the next check: `interval ± U(0, jitter)`.
    pub fn next_delay(&self, rng: &mut impl Rng) -> Duration {
        let jitter = self.jitter.min(self.interval);
        let offset = jitter.mul_f64(rng.unit());
        if rng.next_u64() & 1 == 0 { self.interval + offset } else { self.interval - offset }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A change of verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// The endpoint came up.
    Up,
    /// The endpoint went down.
    Down,
}

/// The rise/fall state machine of one endpoint: `fall` consecutive failures
/// take an up endpoint down, `rise` consecutive passes bring it back.
///
/// ```
/// use lb_health::{ActiveCheckConfig, CheckResult, RiseFall, Transition};
///
/// let mut rf = RiseFall::new(&ActiveCheckConfig::default()); // rise 2, fall 3, starts up
/// assert_eq!(rf.observe(CheckResult::Critical), None);
/// assert_eq!(rf.observe(CheckResult::Critical), None);
/// assert_eq!(rf.observe(CheckResult::Critical), Some(Transition::Down));
/// assert_eq!(rf.observe(CheckResult::Passing), None);
/// assert_eq!(rf.observe(CheckResult::Warning), Some(Transition::Up));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    healthy: bool,
    run: u32,
    degraded: bool,
}

impl RiseFall {
    /// A machine with the config's thresholds and initial state.
    pub fn new(config: &ActiveCheckConfig) -> Self {
        RiseFall::with(config.rise, config.fall, config.initial)
    }

    /// A machine with explicit thresholds (0 is taken as 1).
    pub fn with(rise: u32, fall: u32, initial: InitialState) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: initial == InitialState::Healthy,
            run: 0,
            degraded: false,
        }
    }

    /// Whether the endpoint is up.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Whether the last passing check was a warning.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// Takes one check result; returns the transition it caused, if any.
    pub fn observe(&mut self, result: CheckResult) -> Option<Transition> {
        let passed = result != CheckResult::Critical;
        if passed {
            self.degraded = result == CheckResult::Warning;
        }
        if passed == self.healthy {
            self.run = 0;
            return None;
        }
        self.run += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.run < needed {
            return None;
        }
        self.run = 0;
        self.healthy = passed;
        Some(if passed { Transition::Up } else { Transition::Down })
    }

    /// Writes the verdict onto the endpoint: [`HealthFlag::ActiveCheckFailed`]
    /// while down, [`HealthFlag::CheckWarning`] after a warning. Call once at
    /// start so an initially unhealthy endpoint is kept out.
    pub fn apply_to(&self, state: &EndpointState) {
        state.set_flag(HealthFlag::ActiveCheckFailed, !self.healthy);
        state.set_flag(HealthFlag::CheckWarning, self.healthy && self.degraded);
    }

    /// [`observe`](Self::observe) then [`apply_to`](Self::apply_to).
    pub fn record(&mut self, result: CheckResult, state: &EndpointState) -> Option<Transition> {
        let transition = self.observe(result);
        self.apply_to(state);
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use lb_core::{HealthStatus, Timestamp};

    #[test]
    fn classification_by_status_body_and_consul_rules() {
        let mut c = ActiveCheckConfig::default();
        assert_eq!(c.classify(200, b""), CheckResult::Passing);
        assert_eq!(c.classify(302, b""), CheckResult::Passing);
        assert_eq!(c.classify(404, b""), CheckResult::Critical);
        c.expected_body = Some("\"status\":\"up\"".into());
        assert_eq!(c.classify(200, b"{\"status\":\"down\"}"), CheckResult::Critical);
        assert_eq!(c.classify(200, b"{\"status\":\"up\"}"), CheckResult::Passing);
        c.expected_status = ExpectedStatus::Set(alloc::vec![204]);
        assert_eq!(c.classify(200, b"\"status\":\"up\""), CheckResult::Critical);
        let consul =
            ActiveCheckConfig { classification: Classification::Consul, ..ActiveCheckConfig::default() };
        assert_eq!(consul.classify(299, b""), CheckResult::Passing);
        assert_eq!(consul.classify(301, b""), CheckResult::Critical);
        assert_eq!(consul.classify(429, b""), CheckResult::Warning);
        assert_eq!(consul.classify(503, b""), CheckResult::Critical);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(ActiveCheckConfig::default().validate().is_ok());
        let c = ActiveCheckConfig { fall: 0, ..ActiveCheckConfig::default() };
        assert_eq!(c.validate(), Err(ActiveCheckError::BadThresholds { rise: 2, fall: 0 }));
        let c = ActiveCheckConfig { timeout: Duration::ZERO, ..ActiveCheckConfig::default() };
        assert_eq!(c.validate(), Err(ActiveCheckError::ZeroTime));
        let c = ActiveCheckConfig { path: "health".into(), ..ActiveCheckConfig::default() };
        assert_eq!(c.validate(), Err(ActiveCheckError::BadPath("health".into())));
    }

    #[test]
    fn delays_spread_around_the_interval() {
        let c = ActiveCheckConfig::default();
        let mut rng = SplitMix64::new(3);
        let delays: Vec<Duration> = (0..1000).map(|_| c.next_delay(&mut rng)).collect();
        assert!(
            delays.iter().all(|d| *d >= Duration::from_millis(1800) && *d <= Duration::from_millis(2200))
        );
        assert!(delays.iter().any(|d| *d < c.interval) && delays.iter().any(|d| *d > c.interval));
    }

    #[test]
    fn rise_and_fall_need_unbroken_runs_and_drive_the_flags() {
        let state = EndpointState::new(Timestamp::ZERO);
        let mut rf = RiseFall::with(2, 3, InitialState::Unhealthy);
        rf.apply_to(&state);
        assert_eq!(state.status(), HealthStatus::Unhealthy);
        assert!(!rf.is_healthy());
        assert_eq!(rf.record(CheckResult::Passing, &state), None);
        assert_eq!(rf.record(CheckResult::Critical, &state), None, "the run broke");
        assert_eq!(rf.record(CheckResult::Passing, &state), None);
        assert!(!rf.is_degraded());
        assert_eq!(rf.record(CheckResult::Warning, &state), Some(Transition::Up));
        assert_eq!(state.status(), HealthStatus::Degraded);
        assert!(rf.is_degraded());
        assert_eq!(rf.record(CheckResult::Passing, &state), None);
        assert_eq!(state.status(), HealthStatus::Healthy);
        assert!(!rf.is_degraded());
        for _ in 0..2 {
            rf.record(CheckResult::Critical, &state);
        }
        rf.record(CheckResult::Passing, &state);
        for _ in 0..2 {
            rf.record(CheckResult::Critical, &state);
        }
        assert!(rf.is_healthy());
        assert_eq!(rf.record(CheckResult::Critical, &state), Some(Transition::Down));
        assert_eq!(state.status(), HealthStatus::Unhealthy);
        assert!(!rf.is_healthy());
        state.set_flag(HealthFlag::Ejected, true);
        rf.record(CheckResult::Passing, &state);
        rf.record(CheckResult::Passing, &state);
        assert_eq!(state.status(), HealthStatus::Ejected, "never clears another mechanism's flag");
    }
}
