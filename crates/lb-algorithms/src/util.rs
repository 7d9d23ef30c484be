//! Small shared pieces: the key hash, the lock-free random source, fast
//! range reduction, and the walk to the next eligible endpoint.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use lb_core::{EndpointSet, PickContext};

/// The 64-bit golden ratio, the increment of the splitmix64 sequence.
pub(crate) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finalizer: a strong 64-bit mixer (Steele, Lea, Flood 2014).
#[inline]
pub(crate) const fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Multiplies to 128 bits and folds the halves together (the wyhash step).
#[inline]
const fn fold_mul(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Hashes an affinity key to 64 bits, the way every 64-bit hash algorithm
/// here ([`Maglev`](crate::Maglev), [`JumpHash`](crate::JumpHash),
/// [`Rendezvous`](crate::Rendezvous)) hashes `PickContext::key`.
///
/// Use it to prehash a key once and call `select_hash` directly.
///
/// ```
/// assert_eq!(lb_algorithms::hash_key(b"user-42"), lb_algorithms::hash_key(b"user-42"));
/// assert_ne!(lb_algorithms::hash_key(b"user-42"), lb_algorithms::hash_key(b"user-43"));
/// ```
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    const P0: u64 = 0xA076_1D64_78BD_642F;
    const P1: u64 = 0xE703_7ED1_A0B4_28DB;
    let mut h = (key.len() as u64).wrapping_mul(P0) ^ GOLDEN;
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = fold_mul(h ^ u64::from_le_bytes(word), P1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = fold_mul(h ^ u64::from_le_bytes(word) ^ P0, P1);
    }
    splitmix64(h)
}

/// Maps a uniformly distributed 64-bit hash onto `0..n` with one multiply
/// (Lemire's multiply-shift), avoiding a division on the hot path.
#[inline]
pub(crate) fn reduce(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// A wait-free pseudo-random source shared by all threads picking from one
/// balancer: a wyrand sequence advanced with a relaxed load and store
/// (no locked instruction, so ~1 ns instead of an atomic read-modify-write).
///
/// Two threads drawing at the same instant may read the same counter; each
/// mixes in the address of its own stack frame, so they still draw
/// different numbers. The balancer's own address is mixed in too, so two
/// processes (or two balancers) do not draw the same sequence.
///
/// Once [`seed`](Rng::seed)ed, nothing is mixed in: the draws are a fixed
/// sequence of the seed, for simulations that must repeat exactly.
#[derive(Debug)]
pub(crate) struct Rng {
    counter: AtomicU64,
    /// All ones while the addresses are mixed in, zero once seeded: a mask
    /// rather than a flag, so the pick path has no branch for it.
    salt_mask: AtomicU64,
}

impl Default for Rng {
    fn default() -> Self {
        Rng { counter: AtomicU64::new(0), salt_mask: AtomicU64::new(u64::MAX) }
    }
}

impl Rng {
    /// Restarts the draws as a fixed sequence of `seed` (no address salt).
    pub(crate) fn seed(&self, seed: u64) {
        self.counter.store(seed, Ordering::Relaxed);
        self.salt_mask.store(0, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn next(&self) -> u64 {
        let here = 0u8;
        let addresses = core::ptr::from_ref(self) as usize ^ core::ptr::from_ref(&here) as usize;
        let salt = addresses as u64 & self.salt_mask.load(Ordering::Relaxed);
        // wyrand (Wang Yi): a Weyl sequence and one folded 128-bit multiply.
        let state = self.counter.load(Ordering::Relaxed).wrapping_add(0xA076_1D64_78BD_642F);
        self.counter.store(state, Ordering::Relaxed);
        fold_mul(state ^ salt, state ^ 0xE703_7ED1_A0B4_28DB)
    }
}

/// `x % d` and `x / d` for a fixed 32-bit divisor without a division
/// instruction (Lemire, Kaser, Kurz 2019: "Faster remainder by direct computation").
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastDiv {
    magic: u64,
    divisor: u32,
}

impl FastDiv {
    /// A divisor; 0 is treated as 1 (callers check for empty sets first).
    pub(crate) fn new(divisor: usize) -> Self {
        let divisor = u32::try_from(divisor.max(1)).unwrap_or(u32::MAX);
        FastDiv { magic: (u64::MAX / u64::from(divisor)).wrapping_add(1), divisor }
    }

    #[inline]
    pub(crate) fn rem(self, x: u32) -> usize {
        let low = self.magic.wrapping_mul(u64::from(x));
        ((u128::from(low) * u128::from(self.divisor)) >> 64) as usize
    }

    #[inline]
    pub(crate) fn div(self, x: u32) -> u32 {
        if self.divisor == 1 {
            return x;
        }
        ((u128::from(self.magic) * u128::from(x)) >> 64) as u32
    }
}

/// A schedule position shared by every thread picking from one balancer.
///
/// Read and written with a relaxed load and a store rather than a
/// read-modify-write: a locked instruction costs more than the rest of a
/// pick. Picks on one thread see an exact sequence; two threads picking at
/// the same instant may read the same position and take the same turn (the
/// sequence then repeats one entry), so under concurrency the order is exact
/// up to such repeats.
#[derive(Debug, Default)]
pub(crate) struct Position(AtomicU32);

impl Position {
    /// The stored position (a table index or a sequence number).
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// The stored position as an index into `0..len` (`len > 0`).
    #[inline]
    pub(crate) fn index_below(&self, len: usize) -> usize {
        let i = self.get() as usize;
        if i < len { i } else { 0 }
    }

    #[inline]
    pub(crate) fn set(&self, position: u32) {
        self.0.store(position, Ordering::Relaxed);
    }

    /// Stores the index after `taken`; [`index_below`](Self::index_below)
    /// reads one past the end as 0, which is the wrap.
    #[inline]
    pub(crate) fn pass(&self, taken: usize) {
        self.set((taken + 1) as u32);
    }
}

/// Round robin over a set's indices that stays even while endpoints are down.
///
/// Each pick takes one *turn*: the first endpoint from the position that
/// health lets take traffic. A down endpoint is passed over without using a
/// turn, so the others share evenly (nginx skips down peers in its scan
/// too); that scan is O(n), and runs only while the endpoint next in line is
/// down. A turn that lands on an endpoint the request excludes (a retry) is
/// served by the next eligible endpoint, but only the turn is used: a retry
/// moves the rotation for everybody else by one pick, like any pick.
#[derive(Debug, Default)]
pub(crate) struct Rotation {
    next: Position,
}

impl Rotation {
    /// The next turn, never inlined: the keyless path of a keyed balancer,
    /// kept out of its keyed pick so that one stays small.
    #[inline(never)]
    pub(crate) fn select_out_of_line(&self, set: &EndpointSet, ctx: &PickContext<'_>) -> Option<usize> {
        self.select_inlined(set, ctx)
    }

    /// The next turn (see the type's docs), always inlined: round robin's
    /// whole pick, which the compiler would otherwise leave out of line.
    #[inline(always)]
    pub(crate) fn select_inlined(&self, set: &EndpointSet, ctx: &PickContext<'_>) -> Option<usize> {
        let states = set.states();
        let n = states.len();
        if n == 0 {
            return None;
        }
        let start = self.next.index_below(n);
        let turn = if ctx.health_admits(&states[start]) {
            start
        } else {
            first_from(n, start + 1, |i| ctx.health_admits(&states[i]))?
        };
        let pick = if ctx.is_excluded(turn) { next_eligible(set, turn + 1, ctx)? } else { turn };
        self.next.pass(turn);
        Some(pick)
    }
}

/// The first index in `0..n` at or after `start` (wrapping) that `accept`s. O(n).
#[inline]
pub(crate) fn first_from(n: usize, start: usize, accept: impl Fn(usize) -> bool) -> Option<usize> {
    let mut i = if start >= n { 0 } else { start };
    for _ in 0..n {
        if accept(i) {
            return Some(i);
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
    None
}

/// The first eligible index at or after `start` (wrapping), if any. O(n).
#[inline]
pub(crate) fn next_eligible(set: &EndpointSet, start: usize, ctx: &PickContext<'_>) -> Option<usize> {
    first_from(set.len(), start, |i| set.is_eligible(i, ctx))
}

/// The endpoint weights of a set, copied so picks need not chase pointers.
pub(crate) fn weights(set: &EndpointSet) -> Vec<u32> {
    set.iter().map(|m| m.endpoint().weight()).collect()
}

/// Whether every weight is the same (then weighted code paths can be skipped).
pub(crate) fn uniform(weights: &[u32]) -> bool {
    weights.windows(2).all(|w| w[0] == w[1])
}

/// Yields the distinct indices of `inner` in order, at most `n` of them:
/// turns a walk that repeats endpoints (a ring, a Maglev table) into a
/// failover order. Allocates a bitset: for planning retries, not for picks.
#[derive(Debug)]
pub struct Distinct<I> {
    inner: I,
    seen: Vec<u64>,
    left: usize,
}

impl<I: Iterator<Item = usize>> Distinct<I> {
    pub(crate) fn new(inner: I, n: usize) -> Self {
        Distinct { inner, seen: vec![0; n.div_ceil(64)], left: n }
    }
}

impl<I: Iterator<Item = usize>> Iterator for Distinct<I> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        for i in self.inner.by_ref() {
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            match self.seen.get_mut(word) {
                Some(w) if *w & bit == 0 => {
                    *w |= bit;
                    self.left -= 1;
                    return Some(i);
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_means_every_weight_alike() {
        assert!(uniform(&[3, 3, 3]));
        assert!(uniform(&[7]) && uniform(&[]));
        assert!(!uniform(&[3, 3, 4]));
        assert!(!uniform(&[4, 3, 3]));
    }

    #[test]
    fn the_mixers_are_the_reference_ones() {
        // Vigna's splitmix64.c from state 0: its outputs finalize GOLDEN, then 2 * GOLDEN.
        assert_eq!(splitmix64(GOLDEN), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(GOLDEN.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
        // (2^64 - 1) * 2 = 2^65 - 2: low half 2^64 - 2, high half 1, folded by xor.
        assert_eq!(fold_mul(u64::MAX, 2), u64::MAX);
        assert_eq!(fold_mul(1 << 32, 1 << 32), 1, "only the high half is set");
    }

    #[test]
    fn fast_div_matches_division() {
        for d in [1usize, 2, 3, 7, 10, 100, 1000, 65_537, 1 << 20] {
            let f = FastDiv::new(d);
            for x in [0u32, 1, 2, 5, 99, 1000, 65_536, 123_456_789, u32::MAX - 1, u32::MAX] {
                assert_eq!(f.rem(x), x as usize % d, "{x} % {d}");
                assert_eq!(f.div(x), x / d as u32, "{x} / {d}");
            }
        }
    }

    #[test]
    fn reduce_stays_in_range() {
        for n in [1usize, 2, 10, 65_537] {
            for h in [0u64, 1, u64::MAX / 2, u64::MAX] {
                assert!(reduce(h, n) < n);
            }
        }
    }

    #[test]
    fn distinct_drops_repeats_and_stops_after_n() {
        let v: Vec<usize> = Distinct::new([2, 2, 0, 2, 1, 0, 1].into_iter(), 3).collect();
        assert_eq!(v, [2, 0, 1]);
    }

    #[test]
    fn rng_draws_differ() {
        let rng = Rng::default();
        let a = rng.next();
        assert_ne!(a, rng.next());
    }

    /// Proxies of two versions behind one load balancer must send a session
    /// to the same endpoint: a key's hash never changes silently. The keys
    /// cover the empty key, a tail shorter than a word, and whole words.
    #[test]
    fn key_hashes_never_change_between_versions() {
        let keys: [&[u8]; 6] =
            [b"", b"abc", b"user-42", b"ep-00000", b"10.0.0.1:8080", b"a session key of 24 byte"];
        assert_eq!(
            keys.map(hash_key),
            [
                16_294_208_416_658_607_535,
                8_627_609_359_727_338_814,
                814_619_183_062_516_795,
                2_006_757_789_118_509_456,
                8_240_954_054_784_609_619,
                9_270_360_952_194_218_138,
            ]
        );
    }

    /// Draws with its `here` a page further down the stack.
    #[inline(never)]
    fn from_a_deeper_frame(rng: &Rng) -> u64 {
        let page = core::hint::black_box([0u8; 4096]);
        rng.next() ^ u64::from(page[0])
    }

    #[test]
    fn unseeded_draws_from_one_counter_differ_by_stack_frame_and_seeded_ones_do_not() {
        // Two threads reading the counter at once stand for two frames here.
        let rng = Rng::default();
        let shallow = rng.next();
        rng.counter.store(0, Ordering::Relaxed);
        assert_ne!(shallow, from_a_deeper_frame(&rng));
        rng.seed(5);
        let seeded = rng.next();
        rng.seed(5);
        assert_eq!(seeded, from_a_deeper_frame(&rng));
    }

    #[test]
    fn a_seeded_rng_repeats_wherever_it_lives() {
        let (a, b) = (Rng::default(), alloc::boxed::Box::new(Rng::default()));
        a.seed(7);
        b.seed(7);
        let first: Vec<u64> = (0..4).map(|_| a.next()).collect();
        assert_eq!(first, (0..4).map(|_| b.next()).collect::<Vec<_>>());
        b.seed(8);
        assert_ne!(first[0], b.next());
    }
}
