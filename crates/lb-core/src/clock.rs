//! Monotonic time as plain numbers, so state machines can be driven by tests.

use core::ops::{Add, Sub};
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

/// A point on a monotonic timeline, in nanoseconds since an arbitrary origin.
///
/// Only differences between two timestamps from the same [`Clock`] mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    /// Saturates at the end of time instead of wrapping.
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_nanos(rhs)))
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;

    /// Saturates at zero, like [`Timestamp::saturating_since`].
    fn sub(self, rhs: Timestamp) -> Duration {
        self.saturating_since(rhs)
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A source of monotonic time.
///
/// State machines take a clock instead of reading the system time, so tests
/// can move time by hand with [`ManualClock`].
pub trait Clock: Send + Sync {
    /// The current time. Never goes backwards.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for alloc::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// A clock that only moves when told to; for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at [`Timestamp::ZERO`].
    pub const fn new() -> Self {
        ManualClock { nanos: AtomicU64::new(0) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(duration_nanos(by), Ordering::SeqCst);
    }

    /// Moves the clock to `to`; ignored if `to` is in the past, to stay monotonic.
    pub fn set(&self, to: Timestamp) {
        self.nanos.fetch_max(to.as_nanos(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::SeqCst))
    }
}

/// The real monotonic clock, measured from when it was created.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: std::time::Instant,
}

#[cfg(feature = "std")]
impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock { origin: std::time::Instant::now() }
    }
}

#[cfg(feature = "std")]
impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "std")]
impl Clock for MonotonicClock {
    fn now(&self) -> Timestamp {
        Timestamp(duration_nanos(self.origin.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_millis(5));
        assert_eq!(clock.now(), Timestamp::from_nanos(5_000_000));
        clock.set(Timestamp::from_nanos(1));
        assert_eq!(clock.now().as_nanos(), 5_000_000, "set to the past is ignored");
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_nanos(10);
        assert_eq!(Timestamp::ZERO - t, Duration::ZERO);
        assert_eq!(t - Timestamp::ZERO, Duration::from_nanos(10));
        assert_eq!((t + Duration::MAX).as_nanos(), u64::MAX);
    }

    #[cfg(feature = "std")]
    #[test]
    fn monotonic_clock_counts_real_time_in_nanoseconds() {
        let clock = MonotonicClock::new();
        let a = clock.now();
        // `sleep` waits at least this long, so the lower bound is certain.
        std::thread::sleep(Duration::from_millis(3));
        let b = clock.now();
        assert!(b - a >= Duration::from_millis(3), "{a:?} then {b:?}");
        assert!(b - a < Duration::from_secs(60), "nanoseconds, not a larger unit: {a:?} then {b:?}");
    }
}
