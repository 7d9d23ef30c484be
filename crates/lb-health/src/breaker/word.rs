//! Lock-free building blocks shared by both breakers.
//!
//! The breaker's whole state (which state, which generation, until when)
//! lives in one `AtomicU64`, so a transition is a single compare-and-swap and
//! the thread that wins it is the one that runs callbacks. Counters carry the
//! generation they belong to in their high bits, so a result racing a
//! transition can never leak into the next generation's counts.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use lb_core::Timestamp;

const STATE_BITS: u32 = 3;
/// Width of a generation; tickets and counter tags wrap at `2^GEN_BITS`.
pub(crate) const GEN_BITS: u32 = 21;
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
const DEADLINE_SHIFT: u32 = STATE_BITS + GEN_BITS;
const DEADLINE_BITS: u32 = 64 - DEADLINE_SHIFT;
/// The deadline meaning "never": about 34 years after the clock's origin.
pub(crate) const NEVER: u64 = (1 << DEADLINE_BITS) - 1;
const NANOS_PER_MILLI: u64 = 1_000_000;

/// One decoded state word: state code, generation and deadline in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) state: u8,
    pub(crate) generation: u32,
    pub(crate) deadline_ms: u64,
}

impl Word {
    pub(crate) const fn decode(raw: u64) -> Word {
        Word {
            state: (raw & ((1 << STATE_BITS) - 1)) as u8,
            generation: ((raw >> STATE_BITS) as u32) & GEN_MASK,
            deadline_ms: raw >> DEADLINE_SHIFT,
        }
    }

    pub(crate) const fn encode(self) -> u64 {
        (self.deadline_ms << DEADLINE_SHIFT)
            | ((self.generation as u64 & GEN_MASK as u64) << STATE_BITS)
            | self.state as u64
    }

    /// Whether the deadline has passed at `now`; `NEVER` never passes.
    #[inline]
    pub(crate) const fn expired(self, now: Timestamp) -> bool {
        self.deadline_ms != NEVER && now.as_nanos() >= self.deadline_ms * NANOS_PER_MILLI
    }

    /// The word for the next generation in `state`.
    pub(crate) const fn next(self, state: u8, deadline_ms: u64) -> Word {
        Word { state, generation: (self.generation + 1) & GEN_MASK, deadline_ms }
    }
}

/// `now + after` in whole milliseconds (rounded up), or `NEVER` when `after` is zero.
pub(crate) fn deadline_after(now: Timestamp, after: Duration) -> u64 {
    if after.is_zero() {
        return NEVER;
    }
    let at = (now + after).as_nanos();
    at.div_ceil(NANOS_PER_MILLI).min(NEVER - 1)
}

/// Keeps `T` on lines of its own (128 bytes, as Intel fetches lines in
/// pairs), so counters written on every call do not evict read-mostly
/// neighbours such as the state word from other cores' caches.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct OwnLines<T>(pub(crate) T);

impl<T> core::ops::Deref for OwnLines<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The state word of a breaker.
#[derive(Debug)]
pub(crate) struct StateCell(AtomicU64);

impl StateCell {
    pub(crate) const fn new(word: Word) -> Self {
        StateCell(AtomicU64::new(word.encode()))
    }

    #[inline]
    pub(crate) fn load(&self) -> Word {
        Word::decode(self.0.load(Ordering::Acquire))
    }

    /// Replaces `from` with `to`; true for the single thread that wins.
    pub(crate) fn swap_if(&self, from: Word, to: Word) -> bool {
        self.0.compare_exchange(from.encode(), to.encode(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

const COUNT_BITS: u32 = 64 - GEN_BITS;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

const fn tag(raw: u64) -> u32 {
    (raw >> COUNT_BITS) as u32
}

const fn tagged(generation: u32, count: u64) -> u64 {
    ((generation as u64) << COUNT_BITS) | (count & COUNT_MASK)
}

/// Whether generation `a` is later than `b`, on the wrapping generation circle.
pub(crate) const fn is_later(a: u32, b: u32) -> bool {
    let diff = a.wrapping_sub(b) & GEN_MASK;
    diff != 0 && diff < (1 << (GEN_BITS - 1))
}

/// A counter that belongs to one generation and reads as zero in any other.
///
/// Nobody resets it on a transition: the first writer of a new generation
/// takes the word over, so a transition costs one compare-and-swap in total.
#[derive(Debug, Default)]
pub(crate) struct GenCounter(AtomicU64);

impl GenCounter {
    /// The count for `generation`.
    #[inline]
    pub(crate) fn get(&self, generation: u32) -> u64 {
        let raw = self.0.load(Ordering::Acquire);
        if tag(raw) == generation { raw & COUNT_MASK } else { 0 }
    }

    /// Adds one for `generation` and returns the new count: one `fetch_add`
    /// unless a transition raced us.
    #[inline]
    pub(crate) fn increment(&self, generation: u32) -> u64 {
        let prev = self.0.fetch_add(1, Ordering::AcqRel);
        if tag(prev) == generation {
            return (prev & COUNT_MASK) + 1;
        }
        self.repair(generation, prev.wrapping_add(1));
        self.get(generation)
    }

    /// Our `fetch_add` hit another generation's word: take an older word
    /// over, or take our increment back from a later one.
    #[cold]
    fn repair(&self, generation: u32, mut seen: u64) {
        loop {
            let word_gen = tag(seen);
            let next = if word_gen == generation {
                // Someone took the word over and dropped our stray increment.
                seen + 1
            } else if is_later(word_gen, generation) {
                // We are stale: undo our increment if it is still in there.
                match self.0.compare_exchange(seen, seen - 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(now) if tag(now) == word_gen => {
                        seen = now;
                        continue;
                    }
                    Err(_) => return, // Taken over again; our increment went with it.
                }
            } else {
                tagged(generation, 1)
            };
            match self.0.compare_exchange(seen, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => seen = now,
            }
        }
    }

    /// Adds one if the count for `generation` is below `limit`; the exact
    /// admission used by half-open states.
    pub(crate) fn increment_below(&self, generation: u32, limit: u64) -> bool {
        let mut seen = self.0.load(Ordering::Acquire);
        loop {
            let count = match tag(seen) {
                g if g == generation => seen & COUNT_MASK,
                g if is_later(g, generation) => return false,
                _ => 0,
            };
            if count >= limit {
                return false;
            }
            match self.0.compare_exchange(
                seen,
                tagged(generation, count + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => seen = now,
            }
        }
    }

    /// Takes one back from `generation`'s count, if it has any.
    pub(crate) fn decrement(&self, generation: u32) {
        let mut seen = self.0.load(Ordering::Acquire);
        while tag(seen) == generation && seen & COUNT_MASK > 0 {
            match self.0.compare_exchange(seen, seen - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => seen = now,
            }
        }
    }
}

const FAILURE_BIT: u64 = 1 << (COUNT_BITS - 1);
const VALUE_MASK: u64 = FAILURE_BIT - 1;

/// The current run of equal results for one generation.
///
/// A failure run stores its length. A success run stores how many successes
/// there were before it began, so a success in a success run writes nothing
/// here: the run is `successes - start`, and the success path stays one
/// `fetch_add` on the success counter plus one load.
#[derive(Debug, Default)]
pub(crate) struct Streak(AtomicU64);

impl Streak {
    /// Notes a success that brought `generation`'s success count to
    /// `successes`; returns the success run's length (0 if stale).
    #[inline]
    pub(crate) fn success(&self, generation: u32, successes: u64) -> u64 {
        let seen = self.0.load(Ordering::Acquire);
        if tag(seen) == generation && seen & FAILURE_BIT == 0 {
            // The run goes on: nothing to write.
            return successes.saturating_sub(seen & VALUE_MASK);
        }
        self.start_success_run(generation, successes, seen)
    }

    /// A success that ends a failure run or opens a generation's streak.
    #[cold]
    fn start_success_run(&self, generation: u32, successes: u64, mut seen: u64) -> u64 {
        loop {
            match tag(seen) {
                g if g == generation && seen & FAILURE_BIT == 0 => {
                    return successes.saturating_sub(seen & VALUE_MASK);
                }
                g if is_later(g, generation) => return 0,
                _ => {}
            }
            let start = successes.saturating_sub(1);
            match self.0.compare_exchange(
                seen,
                tagged(generation, start),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return 1,
                Err(now) => seen = now,
            }
        }
    }

    /// Extends or starts a failure run; returns its length (0 if stale).
    pub(crate) fn failure(&self, generation: u32) -> u64 {
        let mut seen = self.0.load(Ordering::Acquire);
        loop {
            let run = match tag(seen) {
                g if g == generation && seen & FAILURE_BIT != 0 => seen & VALUE_MASK,
                g if is_later(g, generation) => return 0,
                _ => 0,
            };
            let next = tagged(generation, FAILURE_BIT | (run + 1));
            match self.0.compare_exchange_weak(seen, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return run + 1,
                Err(now) => seen = now,
            }
        }
    }

    /// `(consecutive successes, consecutive failures)` for `generation`,
    /// given its success count.
    pub(crate) fn get(&self, generation: u32, successes: u64) -> (u64, u64) {
        let raw = self.0.load(Ordering::Acquire);
        if tag(raw) != generation {
            return (successes, 0);
        }
        let value = raw & VALUE_MASK;
        if raw & FAILURE_BIT != 0 { (0, value) } else { (successes.saturating_sub(value), 0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three ways a raced increment is repaired, each forced by hand:
    /// what `seen` holds is what the increment's `fetch_add` ran into.
    #[test]
    fn a_raced_increment_is_repaired_by_what_it_hit() {
        // Someone took the word over for our generation and dropped our stray increment.
        let taken_over = GenCounter(AtomicU64::new(tagged(5, 3)));
        taken_over.repair(5, tagged(5, 3));
        assert_eq!(taken_over.get(5), 4, "our increment is added back");

        // A later generation owns the word: our increment is taken back out.
        let later = GenCounter(AtomicU64::new(tagged(6, 8)));
        later.repair(5, tagged(6, 8));
        assert_eq!(later.get(6), 7);
        assert_eq!(later.get(5), 0);

        // An older generation's word: we take it over with our one.
        let older = GenCounter(AtomicU64::new(tagged(4, 9)));
        older.repair(5, tagged(4, 9));
        assert_eq!(older.get(5), 1);
        assert_eq!(older.get(4), 0);
    }

    #[test]
    fn words_round_trip() {
        let w = Word { state: 2, generation: GEN_MASK, deadline_ms: NEVER };
        assert_eq!(Word::decode(w.encode()), w);
        assert_eq!(w.next(1, 5).generation, 0, "generations wrap");
        assert!(!w.expired(Timestamp::from_nanos(u64::MAX)));
        let soon = Word { deadline_ms: deadline_after(Timestamp::ZERO, Duration::from_micros(1500)), ..w };
        assert_eq!(soon.deadline_ms, 2);
        assert!(!soon.expired(Timestamp::from_nanos(1_999_999)));
        assert!(soon.expired(Timestamp::from_nanos(2_000_000)));
        // The longest wait still ends, and still fits its field.
        let longest = Word { deadline_ms: deadline_after(Timestamp::ZERO, Duration::MAX), ..w };
        assert_eq!(longest.deadline_ms, NEVER - 1);
        assert_eq!(Word::decode(longest.encode()), longest);
    }

    #[test]
    fn counters_belong_to_one_generation() {
        let c = GenCounter::default();
        c.increment(3);
        assert_eq!(c.increment(3), 2);
        assert_eq!(c.get(3), 2);
        assert_eq!(c.get(4), 0);
        c.increment(4);
        assert_eq!((c.get(3), c.get(4)), (0, 1), "the new generation took the word over");
        c.increment(3);
        assert_eq!(c.get(4), 1, "a stale increment is taken back");
        assert!(c.increment_below(4, 2));
        assert!(!c.increment_below(4, 2));
        assert!(!c.increment_below(3, 10), "stale admissions fail");
        c.decrement(4);
        assert_eq!(c.get(4), 1);
        c.decrement(4);
        c.decrement(4);
        assert_eq!((c.get(4), c.get(3)), (0, 0), "a count at zero stays there, never borrowing from the tag");
        assert_eq!(c.increment(4), 1, "and the generation's tag is intact");
        assert!(is_later(0, GEN_MASK) && !is_later(GEN_MASK, 0));
        // Half the circle away is neither later nor earlier: too far to tell.
        let half = 1 << (GEN_BITS - 1);
        assert!(!is_later(half, 0) && !is_later(0, half));
        assert!(is_later(half - 1, 0) && !is_later(half + 1, 0));
    }

    #[test]
    fn racing_generations_never_leak_counts_into_the_last_one() {
        use std::sync::atomic::AtomicU32;
        let counter = GenCounter::default();
        let current = AtomicU32::new(0);
        let progress = AtomicU64::new(0);
        let last = 200u32;
        let per_generation: std::vec::Vec<std::vec::Vec<u64>> = std::thread::scope(|s| {
            let workers: std::vec::Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = std::vec![0u64; last as usize + 1];
                        // Increment until the last generation is reached (bounded).
                        for i in 0..20_000_000u64 {
                            let generation = current.load(Ordering::Acquire);
                            counter.increment(generation);
                            mine[generation as usize] += 1;
                            if generation == last {
                                break;
                            }
                            if i % 64 == 0 {
                                progress.fetch_add(1, Ordering::Release);
                            }
                        }
                        mine
                    })
                })
                .collect();
            for generation in 1..=last {
                let target = progress.load(Ordering::Acquire) + 3;
                for _ in 0..100_000 {
                    if progress.load(Ordering::Acquire) >= target {
                        break;
                    }
                    std::thread::yield_now();
                }
                current.store(generation, Ordering::Release);
            }
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let seen = (0..=last as usize).filter(|&g| per_generation.iter().any(|m| m[g] > 0)).count();
        assert!(seen > 20, "the transitions raced the increments ({seen} generations seen)");
        let expected: u64 = per_generation.iter().map(|m| m[last as usize]).sum();
        assert_eq!(counter.get(last), expected, "stale increments were all taken back");
    }

    #[test]
    fn streaks_restart_on_a_change_of_kind() {
        let s = Streak::default();
        assert_eq!(s.get(1, 0), (0, 0));
        assert_eq!(s.failure(1), 1);
        assert_eq!(s.failure(1), 2);
        assert_eq!(s.get(1, 0), (0, 2));
        assert_eq!(s.success(1, 1), 1);
        assert_eq!(s.success(1, 2), 2, "a success run writes nothing and counts from its start");
        assert_eq!(s.get(1, 2), (2, 0));
        assert_eq!(s.failure(1), 1);
        assert_eq!(s.success(2, 1), 1, "a new generation starts over");
        assert_eq!(s.failure(1), 0, "stale results change nothing");
        assert_eq!(s.success(1, 9), 0);
        assert_eq!(s.get(2, 1), (1, 0));
    }
}
