//! Live per-endpoint state: health flags, in-flight count and latency estimate.
//!
//! Every field is an atomic, so health checkers and feedback write it off the
//! hot path while picks read it without a lock.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

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

/// In the health word: the endpoint belongs to the latest set of its
/// lineage, so its weight counts in [`Totals::eligible_weight`] while eligible.
const HEALTH_JOINED: u64 = 1 << 8;
/// In the health word: where the endpoint's weight starts.
const WEIGHT_SHIFT: u32 = 32;
/// In the in-flight word: the endpoint belongs to the latest set of its
/// lineage, so its requests count in [`Totals::in_flight`].
const LOAD_JOINED: u32 = 1 << 31;
/// In the in-flight word: the count itself.
const COUNT: u32 = LOAD_JOINED - 1;

/// Set-level sums shared by every snapshot of one lineage (a set and the
/// sets built from it with `replaced` or `applied`), kept exact by the
/// endpoints' own updates: each endpoint adds to them exactly what its own
/// words change by, while it is joined (a member of the latest set).
///
/// Kept only once a consumer asks ([`EndpointSet::keep_totals`](crate::EndpointSet::keep_totals)):
/// until then no endpoint is joined and a pick pays nothing for them.
/// On its own cache line, so the endpoint states around it are not
/// invalidated by every pick.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Totals {
    /// Whether the lineage keeps the totals (its endpoints join them).
    kept: AtomicBool,
    /// The sum of the joined endpoints' in-flight counts (wrapping: a
    /// reader may see it briefly below zero while a request is counted).
    in_flight: AtomicU64,
    /// The sum of the joined, eligible endpoints' weights.
    eligible_weight: AtomicU64,
}

impl Totals {
    /// Whether the lineage keeps the totals.
    #[inline]
    pub(crate) fn is_kept(&self) -> bool {
        self.kept.load(Ordering::Relaxed)
    }

    /// Starts keeping the totals; true if they were not kept before.
    pub(crate) fn start_keeping(&self) -> bool {
        !self.kept.swap(true, Ordering::Relaxed)
    }

    /// Requests in flight on the lineage's latest set. O(1).
    #[inline]
    pub(crate) fn in_flight(&self) -> u64 {
        clamp(self.in_flight.load(Ordering::Relaxed))
    }

    /// The weight health lets take traffic in the lineage's latest set. O(1).
    #[inline]
    pub(crate) fn eligible_weight(&self) -> u64 {
        clamp(self.eligible_weight.load(Ordering::Relaxed))
    }

    #[inline]
    fn add(counter: &AtomicU64, delta: i64) {
        if delta != 0 {
            counter.fetch_add(delta as u64, Ordering::Relaxed);
        }
    }
}

/// A wrapping sum read as a count: "below zero" (a transient order of two
/// relaxed updates) reads as zero.
#[inline]
fn clamp(sum: u64) -> u64 {
    if sum > i64::MAX as u64 { 0 } else { sum }
}

/// What a health word adds to [`Totals::eligible_weight`].
#[inline]
fn weight_share(word: u64) -> i64 {
    if word & HEALTH_JOINED != 0 && word as u8 & INELIGIBLE == 0 { (word >> WEIGHT_SHIFT) as i64 } else { 0 }
}

/// What an in-flight word adds to [`Totals::in_flight`].
#[inline]
fn load_share(word: u32) -> i64 {
    if word & LOAD_JOINED != 0 { i64::from(word & COUNT) } else { 0 }
}

/// The mutable side of an endpoint, shared by every snapshot that holds it.
///
/// An [`EndpointSet`](crate::EndpointSet) keeps the same state for an
/// endpoint across updates, so health and load survive a re-discovery.
///
/// A state made by a set also keeps its set's totals (requests in flight,
/// eligible weight) exact while it is a member of the latest set built from
/// that lineage; one made with [`new`](Self::new) stands alone.
///
/// The two words a pick reads, health and in-flight, come first and
/// together (`repr(C)`), so they share a cache line.
#[derive(Debug)]
#[repr(C)]
pub struct EndpointState {
    /// The flags (low byte), whether the endpoint is joined to its totals,
    /// and its weight (high half), so health and weight change together.
    health: AtomicU64,
    /// The count of requests in flight, and whether it is joined to its totals.
    in_flight: AtomicU32,
    latency_nanos: AtomicU64,
    latency_at: AtomicU64,
    added_at: Timestamp,
    totals: Option<Arc<Totals>>,
}

impl EndpointState {
    /// A healthy, idle endpoint first seen at `added_at`.
    pub const fn new(added_at: Timestamp) -> Self {
        EndpointState {
            health: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            latency_nanos: AtomicU64::new(0),
            latency_at: AtomicU64::new(0),
            added_at,
            totals: None,
        }
    }

    /// A state of a set's lineage, not yet counted in its `totals`.
    pub(crate) fn of_lineage(added_at: Timestamp, totals: &Arc<Totals>) -> Self {
        EndpointState { totals: Some(Arc::clone(totals)), ..EndpointState::new(added_at) }
    }

    /// Counts this endpoint (again) in its totals, with `weight`: it is a
    /// member of the set being built. Off the hot path.
    pub(crate) fn join(&self, weight: u32) {
        let Some(totals) = &self.totals else { return };
        let weighted = |w: u64| (w & 0xFFFF_FFFF) | (u64::from(weight) << WEIGHT_SHIFT) | HEALTH_JOINED;
        let before = self.update_health(weighted);
        Totals::add(&totals.eligible_weight, weight_share(weighted(before)) - weight_share(before));
        let before = self.in_flight.fetch_or(LOAD_JOINED, Ordering::Relaxed);
        Totals::add(&totals.in_flight, load_share(before | LOAD_JOINED) - load_share(before));
    }

    /// Stops counting this endpoint in its totals: the set being built
    /// leaves it out. Its requests still finish; they are no longer counted.
    pub(crate) fn leave(&self) {
        let Some(totals) = &self.totals else { return };
        let before = self.health.fetch_and(!HEALTH_JOINED, Ordering::Relaxed);
        Totals::add(&totals.eligible_weight, -weight_share(before));
        let before = self.in_flight.fetch_and(!LOAD_JOINED, Ordering::Relaxed);
        Totals::add(&totals.in_flight, -load_share(before));
    }

    /// Applies `f` to the health word atomically; returns the word before.
    fn update_health(&self, f: impl Fn(u64) -> u64) -> u64 {
        match self.health.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| Some(f(w))) {
            Ok(before) | Err(before) => before,
        }
    }

    #[inline]
    fn flags(&self) -> u8 {
        self.health.load(Ordering::Relaxed) as u8
    }

    /// The combined verdict of all flags; the worst one wins.
    pub fn status(&self) -> HealthStatus {
        let flags = self.flags();
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
        self.flags() & INELIGIBLE == 0
    }

    /// Raises or clears one flag. Returns whether the flag changed.
    pub fn set_flag(&self, flag: HealthFlag, raised: bool) -> bool {
        let bit = u64::from(flag as u8);
        let before = if raised {
            self.health.fetch_or(bit, Ordering::Relaxed)
        } else {
            self.health.fetch_and(!bit, Ordering::Relaxed)
        };
        let after = if raised { before | bit } else { before & !bit };
        if let Some(totals) = &self.totals {
            Totals::add(&totals.eligible_weight, weight_share(after) - weight_share(before));
        }
        (before & bit != 0) != raised
    }

    /// Whether one flag is raised.
    pub fn has_flag(&self, flag: HealthFlag) -> bool {
        self.flags() & flag as u8 != 0
    }

    /// Requests picked for this endpoint and not yet finished.
    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed) & COUNT
    }

    #[inline]
    pub(crate) fn begin_request(&self) {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        if before & LOAD_JOINED != 0
            && let Some(totals) = &self.totals
        {
            totals.in_flight.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn end_request(&self) {
        // Saturate: a stray double end must not wrap below zero.
        let ended = self.in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            if w & COUNT == 0 { None } else { Some(w - 1) }
        });
        if let Ok(before) = ended
            && before & LOAD_JOINED != 0
            && let Some(totals) = &self.totals
        {
            totals.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
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
