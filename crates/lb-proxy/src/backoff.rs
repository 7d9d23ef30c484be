//! The wait between retries of one request.
//!
//! A connect error (refused or timed out before anything was sent) is
//! retried at once: the failure belongs to that endpoint, the next try goes
//! to another one, and nothing reached a backend that a pause would spare.
//! Every other retry (a reset, a timeout, a retryable status) waits the
//! upstream's backoff first, so a struggling backend is not hit again at
//! once. A wait that would end past the request's deadline is not taken.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lb_health::{Backoff, Jitter, SplitMix64};

use crate::config::{BackoffKind, Retry};

/// gRPC's default `backoffMultiplier` (gRFC A6).
const GRPC_MULTIPLIER: f64 = 1.6;

/// SplitMix64's increment: consecutive seeds give unrelated sequences.
const SEED_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

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

/// One upstream's backoff and the seeds for its requests' jitter: an
/// atomic counter, so no lock and no system call per request.
#[derive(Debug)]
pub(crate) struct Pacer {
    schedule: Backoff,
    seeds: AtomicU64,
}

impl Pacer {
    /// A pacer for `schedule` whose seeds start at `seed`.
    pub(crate) fn new(schedule: Backoff, seed: u64) -> Self {
        Pacer { schedule, seeds: AtomicU64::new(seed) }
    }

    /// The waits of one request; takes a seed only when a retry needs one.
    pub(crate) fn start(&self) -> Waits<'_> {
        Waits { pacer: self, rng: None, retries: 0, previous: Duration::ZERO }
    }
}

/// The waits between the tries of one request.
#[derive(Debug)]
pub(crate) struct Waits<'a> {
    pacer: &'a Pacer,
    rng: Option<SplitMix64>,
    /// Retries that waited so far.
    retries: u32,
    previous: Duration,
}

impl Waits<'_> {
    /// How long to wait before the next try, or `None` when the wait would
    /// end at or past `deadline` (the request gives up instead).
    pub(crate) fn next(&mut self, connect_error: bool, now: Instant, deadline: Instant) -> Option<Duration> {
        if connect_error {
            return (now < deadline).then_some(Duration::ZERO);
        }
        let pacer = self.pacer;
        let rng = self
            .rng
            .get_or_insert_with(|| SplitMix64::new(pacer.seeds.fetch_add(SEED_STEP, Ordering::Relaxed)));
        self.retries += 1;
        let wait = pacer.schedule.delay(self.retries, self.previous, rng);
        self.previous = wait;
        let ends = now.checked_add(wait)?;
        (ends < deadline).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
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
    fn connect_errors_go_again_at_once_and_other_failures_wait() {
        let pacer =
            Pacer::new(Backoff::Exponential { base: 100 * MS, cap: 400 * MS, jitter: Jitter::Equal }, 7);
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let mut waits = pacer.start();
        assert_eq!(waits.next(true, now, deadline), Some(Duration::ZERO));
        let first = waits.next(false, now, deadline).unwrap();
        assert!((50 * MS..=100 * MS).contains(&first), "{first:?}");
        let second = waits.next(false, now, deadline).unwrap();
        assert!((100 * MS..=200 * MS).contains(&second), "the exponent counts waited retries: {second:?}");
        assert_eq!(waits.next(true, now, deadline), Some(Duration::ZERO));
    }

    #[test]
    fn a_wait_past_the_deadline_gives_up() {
        let pacer = Pacer::new(Backoff::Constant(Duration::from_secs(5)), 1);
        let now = Instant::now();
        let mut waits = pacer.start();
        assert_eq!(waits.next(false, now, now + Duration::from_secs(5)), None);
        assert_eq!(waits.next(false, now, now + Duration::from_secs(6)), Some(Duration::from_secs(5)));
        assert_eq!(waits.next(true, now, now), None, "no time left even for an immediate retry");
    }

    #[test]
    fn requests_draw_different_jitter_from_the_same_upstream() {
        let pacer = Pacer::new(
            Backoff::Exponential {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(1),
                jitter: Jitter::Full,
            },
            3,
        );
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let firsts: Vec<Duration> =
            (0..8).map(|_| pacer.start().next(false, now, deadline).unwrap()).collect();
        let mut distinct = firsts.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), firsts.len(), "{firsts:?}");
    }
}
