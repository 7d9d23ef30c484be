//! An upstream's `[retry]` section as lb-health's [`RetryPolicy`]: the one
//! retry engine the proxy and the client share (which failures go again, the
//! idempotency rule, the attempt limit, the deadline, the budget, and the
//! backoff, skipped after a connect error). Each request's retry state is
//! lb-engine's `Retries`.

use lb_health::{Backoff, Jitter, RetryOn as Failures, RetryPolicy};

use crate::config::{BackoffKind, Retry, RetryOn};

/// gRPC's default `backoffMultiplier` (gRFC A6).
const GRPC_MULTIPLIER: f64 = 1.6;

/// The backoff schedule a retry section describes.
pub(crate) fn schedule(retry: &Retry) -> Backoff {
    let (base, cap) = (*retry.backoff_base.get_ref(), *retry.backoff_max.get_ref());
    match retry.backoff {
        BackoffKind::FullJitter => Backoff::Exponential { base, cap, jitter: Jitter::Full },
        BackoffKind::EqualJitter => Backoff::Exponential { base, cap, jitter: Jitter::Equal },
        BackoffKind::Decorrelated => Backoff::Decorrelated { base, cap },
        BackoffKind::Grpc => Backoff::Grpc { initial: base, multiplier: GRPC_MULTIPLIER, max: cap },
        BackoffKind::None => Backoff::Immediate,
    }
}

/// The policy a retry section describes. The deadline is left to the
/// caller ([`Attempts::until`](lb_health::Attempts::until)), since the
/// proxy counts it from when the request head arrived; the per-try timeout
/// too, since it bounds connect and the wait for a head, not an upload.
pub(crate) fn policy(retry: &Retry) -> RetryPolicy {
    let chosen = |wanted: RetryOn| retry.retry_on.contains(&wanted);
    RetryPolicy {
        max_attempts: *retry.attempts.get_ref(),
        per_try_timeout: None,
        deadline: None,
        retry_on: Failures {
            connect_error: chosen(RetryOn::ConnectError),
            reset: chosen(RetryOn::Reset),
            timeout: chosen(RetryOn::Timeout),
            any_5xx: chosen(RetryOn::Http5xx),
            gateway_error: chosen(RetryOn::GatewayError),
            statuses: Vec::new(),
        },
        retry_non_idempotent: retry.non_idempotent,
        backoff: schedule(retry),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    const MS: Duration = Duration::from_millis(1);

    fn retry_section(extra: &str) -> Retry {
        let text = format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n\
             [upstreams.web]\ndiscovery.static.endpoints = [\"127.0.0.1:9\"]\n[upstreams.web.retry]\n{extra}\n"
        );
        let config = Config::parse(&text, "lb.toml").unwrap_or_else(|e| panic!("{e}"));
        config.upstreams["web"].get_ref().retry.clone()
    }

    #[test]
    fn the_default_is_envoys_full_jitter_from_25ms_to_250ms() {
        let schedule = schedule(&retry_section(""));
        assert_eq!(schedule, Backoff::default());
        assert_eq!(schedule, Backoff::Exponential { base: 25 * MS, cap: 250 * MS, jitter: Jitter::Full });
    }

    #[test]
    fn each_kind_maps_to_its_schedule() {
        let section = |kind: &str| {
            schedule(&retry_section(&format!(
                "backoff = \"{kind}\"\nbackoff_base = \"10ms\"\nbackoff_max = \"1s\""
            )))
        };
        let (base, cap) = (10 * MS, Duration::from_secs(1));
        assert_eq!(section("equal_jitter"), Backoff::Exponential { base, cap, jitter: Jitter::Equal });
        assert_eq!(section("decorrelated"), Backoff::Decorrelated { base, cap });
        assert_eq!(section("grpc"), Backoff::Grpc { initial: base, multiplier: 1.6, max: cap });
        assert_eq!(section("none"), Backoff::Immediate);
    }

    #[test]
    fn the_section_maps_to_the_shared_policy() {
        let p = policy(&retry_section(
            "attempts = 4
retry_on = [\"connect_error\", \"timeout\", \"gateway_error\"]
non_idempotent = true",
        ));
        assert_eq!(p.max_attempts, 4);
        assert!(p.retry_non_idempotent);
        let f = &p.retry_on;
        assert!(f.connect_error && f.timeout && f.gateway_error, "{f:?}");
        assert!(!f.reset && !f.any_5xx && f.statuses.is_empty(), "{f:?}");
        assert_eq!((p.deadline, p.per_try_timeout), (None, None), "the proxy sets both per request");
        let default = policy(&retry_section(""));
        assert_eq!(default.max_attempts, 2);
        let f = &default.retry_on;
        assert!(f.connect_error && f.reset && !f.timeout && !f.gateway_error && !f.any_5xx, "{f:?}");
        assert!(!default.retry_non_idempotent);
    }
}
