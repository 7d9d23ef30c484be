//! Live per-endpoint state: health flags, in-flight count and latency estimate.
//!
//! Every field is an atomic, so health checkers and feedback write it off the
//! hot path while picks read it without a lock.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::clock::Timestamp;

/// How healthy an endpoint is, as the balancers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Takes traffic.
    Healthy,
    /// Takes traffic, but something is off (a warning check, say).
    Degraded,
    /// Taken out for a while by passive outlier detection.
    Ejected,
    /// Taken out by a failing active health check.
    Unhealthy,
}

impl HealthStatus {
    /// Whether a balancer may pick the endpoint.
    pub const fn is_eligible(self) -> bool {
        matches!(self, HealthStatus::Healthy | HealthStatus::Degraded)
    }
}

/// One independent opinion about an endpoint's health.
///
/// Each mechanism owns its flag, so the active checker clearing its verdict
/// never undoes an ejection by the outlier detector, and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HealthFlag {
    /// The active health check says the endpoint is down.
    ActiveCheckFailed = 1,
    /// The outlier detector has ejected the endpoint.
    Ejected = 2,
    /// Discovery reports a warning (Consul's `warning` state); the endpoint
    /// stays eligible. Only discovery sets it.
    DiscoveryWarning = 4,
    /// The last passing active check was a warning; the endpoint stays
    /// eligible. Only the active checker sets it.
    CheckWarning = 8,
}

const WARNINGS: u8 = HealthFlag::DiscoveryWarning as u8 | HealthFlag::CheckWarning as u8;

const INELIGIBLE: u8 = HealthFlag::ActiveCheckFailed as u8 | HealthFlag::Ejected as u8;

/// The mutable side of an endpoint, shared by every snapshot that holds it.
///
/// An [`EndpointSet`](crate::EndpointSet) keeps the same state for an
/// endpoint across updates, so health and load survive a re-discovery.
#[derive(Debug)]
pub struct EndpointState {
    flags: AtomicU8,
    in_flight: AtomicU32,
    latency_nanos: AtomicU64,
    latency_at: AtomicU64,
    added_at: Timestamp,
}

impl EndpointState {
    /// A healthy, idle endpoint first seen at `added_at`.
    pub const fn new(added_at: Timestamp) -> Self {
        EndpointState {
            flags: AtomicU8::new(0),
            in_flight: AtomicU32::new(0),
            latency_nanos: AtomicU64::new(0),
            latency_at: AtomicU64::new(0),
            added_at,
        }
    }

    /// The combined verdict of all flags; the worst one wins.
    pub fn status(&self) -> HealthStatus {
        let flags = self.flags.load(Ordering::Relaxed);
        if flags & HealthFlag::ActiveCheckFailed as u8 != 0 {
            HealthStatus::Unhealthy
        } else if flags & HealthFlag::Ejected as u8 != 0 {
            HealthStatus::Ejected
        } else if flags & WARNINGS != 0 {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    /// Whether a balancer may pick the endpoint; one relaxed load.
    #[inline]
    pub fn is_eligible(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & INELIGIBLE == 0
    }

    /// Raises or clears one flag. Returns whether the flag changed.
    pub fn set_flag(&self, flag: HealthFlag, raised: bool) -> bool {
        let bit = flag as u8;
        let before = if raised {
            self.flags.fetch_or(bit, Ordering::Relaxed)
        } else {
            self.flags.fetch_and(!bit, Ordering::Relaxed)
        };
        (before & bit != 0) != raised
    }

    /// Whether one flag is raised.
    pub fn has_flag(&self, flag: HealthFlag) -> bool {
        self.flags.load(Ordering::Relaxed) & flag as u8 != 0
    }

    /// Requests picked for this endpoint and not yet finished.
    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn end_request(&self) {
        // Saturate: a stray double end must not wrap to u32::MAX.
        let _ = self.in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// The latency estimate kept by load-aware balancers (peak-EWMA), in
    /// nanoseconds, and when it was last updated. `(0, ZERO)` until measured.
    #[inline]
    pub fn latency_estimate(&self) -> (u64, Timestamp) {
        (
            self.latency_nanos.load(Ordering::Relaxed),
            Timestamp::from_nanos(self.latency_at.load(Ordering::Relaxed)),
        )
    }

    /// Stores a new latency estimate. Written from feedback, never from a pick.
    pub fn set_latency_estimate(&self, nanos: u64, at: Timestamp) {
        self.latency_nanos.store(nanos, Ordering::Relaxed);
        self.latency_at.store(at.as_nanos(), Ordering::Relaxed);
    }

    /// When this endpoint first joined a set; slow start ramps from here.
    pub fn added_at(&self) -> Timestamp {
        self.added_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_flag_wins_and_flags_are_independent() {
        let s = EndpointState::new(Timestamp::ZERO);
        assert_eq!(s.status(), HealthStatus::Healthy);
        assert!(s.set_flag(HealthFlag::DiscoveryWarning, true));
        assert_eq!(s.status(), HealthStatus::Degraded);
        assert!(s.is_eligible());
        assert!(s.set_flag(HealthFlag::Ejected, true));
        assert!(s.set_flag(HealthFlag::ActiveCheckFailed, true));
        assert_eq!(s.status(), HealthStatus::Unhealthy);
        assert!(!s.is_eligible());
        assert!(s.set_flag(HealthFlag::ActiveCheckFailed, false));
        assert_eq!(s.status(), HealthStatus::Ejected, "the ejection outlives the active check");
        assert!(!s.set_flag(HealthFlag::ActiveCheckFailed, false), "no change reported twice");
        assert!(s.has_flag(HealthFlag::DiscoveryWarning));
    }

    #[test]
    fn each_warning_has_one_owner_and_neither_clears_the_other() {
        let s = EndpointState::new(Timestamp::ZERO);
        s.set_flag(HealthFlag::DiscoveryWarning, true);
        s.set_flag(HealthFlag::CheckWarning, true);
        // The active check passes cleanly again: discovery's warning stays.
        s.set_flag(HealthFlag::CheckWarning, false);
        assert_eq!(s.status(), HealthStatus::Degraded);
        s.set_flag(HealthFlag::CheckWarning, true);
        s.set_flag(HealthFlag::DiscoveryWarning, false);
        assert_eq!(s.status(), HealthStatus::Degraded, "and the other way round");
        s.set_flag(HealthFlag::CheckWarning, false);
        assert_eq!(s.status(), HealthStatus::Healthy);
    }

    #[test]
    fn in_flight_never_wraps() {
        let s = EndpointState::new(Timestamp::ZERO);
        s.begin_request();
        assert_eq!(s.in_flight(), 1);
        s.end_request();
        s.end_request();
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn latency_estimate_round_trips() {
        let s = EndpointState::new(Timestamp::from_nanos(7));
        assert_eq!(s.latency_estimate(), (0, Timestamp::ZERO));
        s.set_latency_estimate(1_500, Timestamp::from_nanos(99));
        assert_eq!(s.latency_estimate(), (1_500, Timestamp::from_nanos(99)));
        assert_eq!(s.added_at(), Timestamp::from_nanos(7));
    }
}
