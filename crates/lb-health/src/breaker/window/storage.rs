//! The closed state's sliding window, in atomics: a ring of per-call slots
//! with running totals, or per-second buckets stamped with their second.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use lb_core::Timestamp;
use strength_reduce::StrengthReducedU64;

use super::SlidingWindow;

pub(super) const CALL: u8 = 1;
pub(super) const FAILED: u8 = 2;
pub(super) const SLOW: u8 = 4;

/// Calls, failures and slow calls in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub(super) calls: u64,
    pub(super) failures: u64,
    pub(super) slow: u64,
}

/// One second of a time-based window.
#[derive(Debug)]
pub(super) struct Bucket {
    second: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

const UNUSED: u64 = u64::MAX;

/// The closed state's sliding window, in atomics.
#[derive(Debug)]
pub(super) enum Window {
    Count {
        slots: Box<[AtomicU8]>,
        /// `slots.len()`, prepared so the per-call modulo is multiplications, not a division.
        len: StrengthReducedU64,
        cursor: AtomicU64,
        calls: AtomicI64,
        failures: AtomicI64,
        slow: AtomicI64,
    },
    Time {
        buckets: Box<[Bucket]>,
        /// `buckets.len()`, prepared like the count window's.
        len: StrengthReducedU64,
    },
}

fn bit(kind: u8, flag: u8) -> i64 {
    i64::from(kind & flag != 0)
}

impl Window {
    pub(super) fn new(window: SlidingWindow) -> Window {
        match window {
            SlidingWindow::Count(n) => Window::Count {
                slots: (0..n).map(|_| AtomicU8::new(0)).collect(),
                // Settings validation rejects an empty window.
                len: StrengthReducedU64::new(u64::from(n.max(1))),
                cursor: AtomicU64::new(0),
                calls: AtomicI64::new(0),
                failures: AtomicI64::new(0),
                slow: AtomicI64::new(0),
            },
            SlidingWindow::Time(n) => Window::Time {
                len: StrengthReducedU64::new(u64::from(n.max(1))),
                buckets: (0..n)
                    .map(|_| Bucket {
                        second: AtomicU64::new(UNUSED),
                        calls: AtomicU64::new(0),
                        failures: AtomicU64::new(0),
                        slow: AtomicU64::new(0),
                    })
                    .collect(),
            },
        }
    }

    /// Puts one call of `kind` into the window.
    #[inline]
    pub(super) fn add(&self, kind: u8, now: Timestamp) {
        match self {
            Window::Count { slots, len, cursor, calls, failures, slow } => {
                let slot = &slots[(cursor.fetch_add(1, Ordering::Relaxed) % *len) as usize];
                // Writing the kind a slot already holds changes nothing, so it
                // may take effect at this load: the steady state writes no slot.
                if slot.load(Ordering::Acquire) != kind {
                    overwrite(slot, kind, [(calls, CALL), (failures, FAILED), (slow, SLOW)]);
                }
            }
            Window::Time { buckets, len } => add_to_bucket(buckets, *len, kind, now),
        }
    }

    pub(super) fn totals(&self, now: Timestamp) -> Totals {
        let clamp = |n: i64| u64::try_from(n).unwrap_or(0);
        match self {
            Window::Count { calls, failures, slow, .. } => Totals {
                calls: clamp(calls.load(Ordering::Acquire)),
                failures: clamp(failures.load(Ordering::Acquire)),
                slow: clamp(slow.load(Ordering::Acquire)),
            },
            Window::Time { buckets, .. } => {
                let second = now.as_nanos() / 1_000_000_000;
                let oldest = second.saturating_sub(buckets.len() as u64 - 1);
                let mut t = Totals::default();
                for b in buckets.iter() {
                    let s = b.second.load(Ordering::Acquire);
                    if s != UNUSED && (oldest..=second).contains(&s) {
                        t.calls += b.calls.load(Ordering::Acquire);
                        t.failures += b.failures.load(Ordering::Acquire);
                        t.slow += b.slow.load(Ordering::Acquire);
                    }
                }
                t
            }
        }
    }

    pub(super) fn clear(&self) {
        match self {
            Window::Count { slots, cursor, calls, failures, slow, .. } => {
                slots.iter().for_each(|s| s.store(0, Ordering::Release));
                cursor.store(0, Ordering::Release);
                [calls, failures, slow].iter().for_each(|c| c.store(0, Ordering::Release));
            }
            Window::Time { buckets, .. } => {
                buckets.iter().for_each(|b| b.second.store(UNUSED, Ordering::Release))
            }
        }
    }
}

/// Replaces a count window's slot and moves each total by the difference.
#[inline(never)]
fn overwrite(slot: &AtomicU8, kind: u8, totals: [(&AtomicI64, u8); 3]) {
    let old = slot.swap(kind, Ordering::AcqRel);
    // Signed totals: a racing overwrite may briefly subtract before it adds.
    for (total, flag) in totals {
        let delta = bit(kind, flag) - bit(old, flag);
        if delta != 0 {
            total.fetch_add(delta, Ordering::AcqRel);
        }
    }
}

/// Counts one call of `kind` in the bucket of `now`'s second.
#[inline(never)]
fn add_to_bucket(buckets: &[Bucket], len: StrengthReducedU64, kind: u8, now: Timestamp) {
    let second = now.as_nanos() / 1_000_000_000;
    let b = &buckets[(second % len) as usize];
    let mut seen = b.second.load(Ordering::Acquire);
    while seen != second {
        if seen != UNUSED && seen > second {
            return; // A late result for a second this bucket has left behind.
        }
        match b.second.compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // The bucket's new second starts empty.
                b.calls.store(0, Ordering::Release);
                b.failures.store(0, Ordering::Release);
                b.slow.store(0, Ordering::Release);
                break;
            }
            Err(now) => seen = now,
        }
    }
    b.calls.fetch_add(1, Ordering::AcqRel);
    // Adding zero would still be a locked read-modify-write.
    if kind & FAILED != 0 {
        b.failures.fetch_add(1, Ordering::AcqRel);
    }
    if kind & SLOW != 0 {
        b.slow.fetch_add(1, Ordering::AcqRel);
    }
}

/// `(failure rate, slow-call rate)` in percent.
pub(super) fn rates(t: Totals) -> (f64, f64) {
    let calls = t.calls.max(1) as f64;
    (t.failures as f64 * 100.0 / calls, t.slow as f64 * 100.0 / calls)
}
