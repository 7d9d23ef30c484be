//! Per-endpoint atomics the hot path writes.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use lb_core::{Outcome, Timestamp};

use super::config::OutlierConfig;

/// `ejected_at` when the endpoint is in the pick set.
pub(super) const NOT_EJECTED: u64 = u64::MAX;

/// What the detector knows about one endpoint; shared across detector
/// rebuilds while the endpoint stays in the set.
#[derive(Debug)]
pub(super) struct Counters {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    successes: AtomicU32,
    failures: AtomicU32,
    /// When the current ejection began, or `NOT_EJECTED`.
    pub(super) ejected_at: AtomicU64,
    /// Times ejected, decaying by one per healthy interval (gRFC A50).
    pub(super) multiplier: AtomicU32,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_at: AtomicU64::new(NOT_EJECTED),
            multiplier: AtomicU32::new(0),
        }
    }
}

/// Bumps a streak if `hit`, else clears it; returns the new length.
#[inline]
fn streak(counter: &AtomicU32, hit: bool) -> u32 {
    if hit {
        counter.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    } else {
        if counter.load(Ordering::Relaxed) != 0 {
            counter.store(0, Ordering::Relaxed);
        }
        0
    }
}

impl Counters {
    pub(super) fn is_ejected(&self) -> bool {
        self.ejected_at.load(Ordering::Acquire) != NOT_EJECTED
    }

    /// Counts one outcome; true if a consecutive-failure detector fired.
    #[inline]
    pub(super) fn count(&self, outcome: Outcome, config: &OutlierConfig) -> bool {
        if outcome == Outcome::LocallyRejected {
            return false;
        }
        let tally = if outcome.is_success() { &self.successes } else { &self.failures };
        tally.fetch_add(1, Ordering::Relaxed);
        let local = outcome.is_local_origin();
        let fired = |n: u32, limit: Option<u32>| limit.is_some_and(|l| n >= l);
        if config.split_local_origin {
            // Split: local-origin failures have their own streak, which any answer ends.
            let run = streak(&self.consecutive_local, local);
            if local {
                return fired(run, config.consecutive_local_origin_failure);
            }
        }
        // Not split, a local-origin failure counts as a 5xx and a gateway error (Envoy maps them to 503/504).
        let five = streak(&self.consecutive_5xx, local || outcome.is_5xx());
        let gateway = streak(&self.consecutive_gateway, local || outcome.is_gateway_error());
        fired(five, config.consecutive_5xx) || fired(gateway, config.consecutive_gateway_failure)
    }

    /// Starts over: after an ejection, and when it ends.
    pub(super) fn clear_streaks(&self) {
        for c in [&self.consecutive_5xx, &self.consecutive_gateway, &self.consecutive_local] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// This interval's `(successes, failures)`, leaving zeros behind.
    pub(super) fn take_interval(&self) -> (u32, u32) {
        (self.successes.swap(0, Ordering::Relaxed), self.failures.swap(0, Ordering::Relaxed))
    }

    pub(super) fn ejected_since(&self) -> Option<Timestamp> {
        match self.ejected_at.load(Ordering::Acquire) {
            NOT_EJECTED => None,
            at => Some(Timestamp::from_nanos(at)),
        }
    }
}
