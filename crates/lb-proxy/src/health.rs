//! The health settings the proxy's config describes, mapped onto
//! `lb-health`'s machines: the circuit breaker each endpoint's guard holds,
//! outlier ejection, active checks.

use lb_health::{ActiveCheckConfig, OutlierConfig};

use crate::config;

/// The breaker settings of a `[circuit_breaker]` section for the endpoint at
/// `address` of `upstream`.
pub(crate) fn breaker_settings(
    upstream: &str,
    address: &str,
    breaker: &config::CircuitBreaker,
) -> lb_health::Settings {
    let rules = breaker.rules();
    let consecutive = u64::from(rules.consecutive_failures);
    let ratio = rules.ratio.map(|(min, ratio)| (u64::from(min), ratio));
    lb_health::Settings::new(format!("{upstream}/{address}"))
        .max_requests(rules.half_open_requests)
        .timeout(rules.open_timeout)
        .interval(rules.interval)
        // Checked after each failure, as gobreaker does; 0 turns the consecutive rule off.
        .ready_to_trip(move |counts| {
            (consecutive > 0 && counts.consecutive_failures >= consecutive)
                || ratio.is_some_and(|(min, ratio)| counts.requests >= min && counts.failure_ratio() >= ratio)
        })
        .on_state_change(|name, from, to| tracing::warn!(breaker = name, %from, %to, "circuit breaker"))
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
        http2: protocol.is_http2(),
        interval: c.interval,
        jitter: c.interval / 10,
        timeout: c.timeout,
        path: c.path.clone(),
        rise: *c.rise.get_ref(),
        fall: *c.fall.get_ref(),
        grpc_service: c.grpc_service.as_ref().map(|s| s.get_ref().clone()),
        ..ActiveCheckConfig::default()
    }
}
