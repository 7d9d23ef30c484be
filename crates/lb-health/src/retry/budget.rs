//! Finagle's / tower's retry budget: retries may be a fixed share of recent
//! requests, plus a small reserve per second.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use core::time::Duration;

use lb_core::Timestamp;

/// Why a [`RetryBudget`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// The ttl must be between 1 and 60 seconds (as in tower).
    #[error("retry budget ttl must be between 1 s and 60 s, not {0:?}")]
    BadTtl(Duration),
    /// The share must be between 0 and 10 (0 % to 1000 %).
    #[error("retry budget percentage must be between 0 and 10 (1000 %), not {0}")]
    BadPercent(f64),
}

/// Units per retry; deposits are fractions of it.
const RETRY: i64 = 1000;
/// Buckets per ttl: deposits and withdrawals age out one bucket at a time.
const BUCKETS: u64 = 10;

#[derive(Debug)]
struct Bucket {
    epoch: AtomicU64,
    balance: AtomicI64,
}

/// A retry budget shared by every retry layer that sends to one service.
///
/// Each request [`deposit`](RetryBudget::deposit)s `percent` of a retry;
/// each retry [`try_withdraw`](RetryBudget::try_withdraw)s a whole one.
/// On top, `min_per_sec * ttl` retries are always available, so a quiet
/// service can still retry. Both age out after `ttl`. Lock-free: ten
/// buckets of atomics.
///
/// ```
/// use lb_core::Timestamp;
/// use lb_health::RetryBudget;
///
/// let budget = RetryBudget::default(); // 20 %, 10 per second reserve, 10 s
/// let now = Timestamp::ZERO;
/// for _ in 0..1000 { budget.deposit(now); }
/// let retries = (0..1000).filter(|_| budget.try_withdraw(now)).count();
/// assert_eq!(retries, 200 + 100);
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    deposit: i64,
    reserve: i64,
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
}

impl Default for RetryBudget {
    /// Finagle's defaults: ttl 10 s, 10 retries per second, 20 %.
    fn default() -> Self {
        RetryBudget::new(Duration::from_secs(10), 10, 0.2).expect("the defaults are valid")
    }
}

impl RetryBudget {
    /// A budget letting retries be `percent` (0.2 = 20 %) of the requests of
    /// the last `ttl`, plus `min_per_sec` per second of reserve.
    pub fn new(ttl: Duration, min_per_sec: u32, percent: f64) -> Result<Self, BudgetError> {
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            return Err(BudgetError::BadTtl(ttl));
        }
        if !(0.0..=10.0).contains(&percent) {
            return Err(BudgetError::BadPercent(percent));
        }
        let ttl_nanos = ttl.as_nanos() as u64;
        Ok(RetryBudget {
            deposit: libm::round(percent * RETRY as f64) as i64,
            reserve: (f64::from(min_per_sec) * ttl.as_secs_f64()) as i64 * RETRY,
            bucket_nanos: ttl_nanos.div_ceil(BUCKETS),
            buckets: (0..BUCKETS)
                .map(|_| Bucket { epoch: AtomicU64::new(u64::MAX), balance: AtomicI64::new(0) })
                .collect(),
        })
    }

    /// Records one request (not a retry).
    #[inline]
    pub fn deposit(&self, now: Timestamp) {
        self.bucket(now).fetch_add(self.deposit, Ordering::AcqRel);
    }

    /// Takes one retry from the budget if there is one.
    pub fn try_withdraw(&self, now: Timestamp) -> bool {
        // Take first, then look, and give back when that overdrew: threads racing for the last
        // retry may all go without it, but never overdraw, which check-then-take could.
        let bucket = self.bucket(now);
        bucket.fetch_sub(RETRY, Ordering::AcqRel);
        if self.balance_units(now) >= 0 {
            return true;
        }
        bucket.fetch_add(RETRY, Ordering::AcqRel);
        false
    }

    /// Whole retries available at `now`.
    pub fn available(&self, now: Timestamp) -> u64 {
        u64::try_from(self.balance_units(now) / RETRY).unwrap_or(0)
    }

    fn balance_units(&self, now: Timestamp) -> i64 {
        let epoch = now.as_nanos() / self.bucket_nanos;
        let live = epoch.saturating_sub(BUCKETS - 1)..=epoch;
        let spent: i64 = self
            .buckets
            .iter()
            .filter(|b| live.contains(&b.epoch.load(Ordering::Acquire)))
            .map(|b| b.balance.load(Ordering::Acquire))
            .sum();
        self.reserve + spent
    }

    /// The balance cell of `now`'s bucket, emptied first if it held an older epoch.
    fn bucket(&self, now: Timestamp) -> &AtomicI64 {
        let epoch = now.as_nanos() / self.bucket_nanos;
        let bucket = &self.buckets[(epoch % BUCKETS) as usize];
        let mut seen = bucket.epoch.load(Ordering::Acquire);
        // A later epoch already here means our timestamp is a little late: count it there.
        while seen < epoch || seen == u64::MAX {
            match bucket.epoch.compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    bucket.balance.store(0, Ordering::Release);
                    break;
                }
                Err(now) => seen = now,
            }
        }
        &bucket.balance
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn spending_ages_out_after_the_ttl() {
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.5).unwrap();
        let t0 = Timestamp::ZERO;
        assert_eq!(b.available(t0), 10, "the reserve alone");
        for _ in 0..4 {
            b.deposit(t0);
        }
        assert_eq!(b.available(t0), 12);
        while b.try_withdraw(t0) {}
        assert_eq!(b.available(Timestamp::from_nanos(9 * SEC)), 0, "still within the ttl");
        assert_eq!(b.available(Timestamp::from_nanos(10 * SEC)), 10, "the reserve comes back");
    }

    #[test]
    fn a_bucket_used_again_a_ttl_later_starts_from_zero() {
        let b = RetryBudget::new(Duration::from_secs(10), 0, 1.0).unwrap();
        for _ in 0..5 {
            b.deposit(Timestamp::ZERO);
        }
        assert_eq!(b.available(Timestamp::ZERO), 5);
        // 10 s later the same bucket comes round again: what it held is gone,
        // and the new deposit counts.
        let later = Timestamp::from_nanos(10 * SEC);
        b.deposit(later);
        assert_eq!(b.available(later), 1);
        assert!(b.try_withdraw(later));
        assert!(!b.try_withdraw(later));
    }

    /// Four threads withdraw at once from a budget of 100: never more than 100 between them.
    #[cfg(feature = "std")]
    #[test]
    fn threads_racing_for_the_last_retries_never_overdraw() {
        for _ in 0..20 {
            let b = RetryBudget::new(Duration::from_secs(10), 10, 0.0).unwrap();
            let granted = std::sync::atomic::AtomicU64::new(0);
            std::thread::scope(|scope| {
                for _ in 0..4 {
                    scope.spawn(|| {
                        for _ in 0..2_000 {
                            if b.try_withdraw(Timestamp::ZERO) {
                                granted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            // What racing threads all went without is still there for one more.
            while b.try_withdraw(Timestamp::ZERO) {
                granted.fetch_add(1, Ordering::Relaxed);
            }
            assert_eq!(granted.load(Ordering::Relaxed), 100, "the reserve of 100, no more");
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert_eq!(
            RetryBudget::new(Duration::from_millis(10), 1, 0.2).unwrap_err(),
            BudgetError::BadTtl(Duration::from_millis(10))
        );
        assert!(matches!(RetryBudget::new(Duration::from_secs(1), 1, -1.0), Err(BudgetError::BadPercent(_))));
        let zero = RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap();
        zero.deposit(Timestamp::ZERO);
        assert!(!zero.try_withdraw(Timestamp::ZERO));
    }

    proptest! {
        #[test]
        fn retries_never_exceed_ratio_times_deposits_plus_reserve(
            events in proptest::collection::vec((any::<bool>(), 0u64..SEC / 100), 1..500),
            min_per_sec in 0u32..5,
            percent in 0.0f64..1.5,
        ) {
            let ttl = Duration::from_secs(10);
            let b = RetryBudget::new(ttl, min_per_sec, percent).unwrap();
            let (mut now, mut deposits, mut retries) = (0u64, 0u64, 0u64);
            for (is_request, step) in events {
                now += step; // 500 steps of < 10 ms stay within one ttl
                if is_request {
                    b.deposit(Timestamp::from_nanos(now));
                    deposits += 1;
                } else if b.try_withdraw(Timestamp::from_nanos(now)) {
                    retries += 1;
                }
            }
            let allowed = percent * deposits as f64 + f64::from(min_per_sec) * 10.0;
            prop_assert!(retries as f64 <= allowed + 1e-3 * deposits as f64, "{retries} > {allowed}");
        }
    }
}
