//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as in Envoy.

use alloc::vec;
use alloc::vec::Vec;

use lb_core::{EndpointSet, PickContext};

use crate::AlgorithmError;
use crate::util::{hash_key, reduce, splitmix64, weights};
use crate::walk::{HashWalk, Keyless, first_eligible, keyed_balancer};

/// Envoy's default table size, a prime.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// The largest table size accepted, Envoy's limit (a prime): the table is
/// built whole, so a size near `u32::MAX` would take 16 GiB.
pub const MAX_TABLE_SIZE: u32 = 5_000_011;

/// Maglev consistent hashing: a lookup table of `M` (prime) slots, each
/// owned by one endpoint.
///
/// Build: endpoint `i` gets `offset = h1(id) mod M` and `skip = h2(id) mod
/// (M-1) + 1`, its preference list is `offset + j * skip mod M`, and the
/// endpoints take turns claiming their next free preferred slot until the
/// table is full (the paper's Algorithm 1). The permutation is walked on the
/// fly (no N × M matrix) and free slots are tracked in an M-bit set that
/// stays in L1. Expected O(M log M). Weights follow Envoy: an endpoint of
/// weight `w` takes a turn in `w / max_weight` of the rounds, so it owns
/// about that share of slots. With `M > 100 n` every share is within 1 % of fair.
///
/// Lookup of a hash is one multiply and one table read (the slot is chosen
/// by multiply-shift, not `%`). An ineligible or excluded owner is passed
/// over by reading the table onward. Removing an endpoint moves its keys and
/// a few others (the paper's ~2x a ring's disruption). Hashing by endpoint
/// id keeps tables stable across processes. Without a key a pick is round robin.
///
/// ```
/// use lb_algorithms::{Maglev, hash_key};
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     (1..=3).map(|i| Endpoint::new(format!("10.0.0.{i}:80").parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let maglev = Maglev::new(set);
/// let owner = maglev.select(&PickContext::new().with_key(b"flow-1")).unwrap();
/// assert_eq!(maglev.lookup(hash_key(b"flow-1")), Some(owner));
/// ```
#[derive(Debug)]
pub struct Maglev {
    set: EndpointSet,
    table: Vec<u32>,
    keyless: Keyless,
}

/// One endpoint's state while the table fills.
struct Turn {
    position: u32,
    skip: u32,
    weight: u64,
    threshold: u64,
    /// `skip`'s inverse modulo the table size, computed when first needed.
    inverse: u32,
}

impl Maglev {
    /// A table of [`DEFAULT_TABLE_SIZE`] slots.
    pub fn new(set: EndpointSet) -> Self {
        Self::build(set, DEFAULT_TABLE_SIZE)
    }

    /// A table of `table_size` slots, which must be a prime from 3 to [`MAX_TABLE_SIZE`].
    pub fn with_table_size(set: EndpointSet, table_size: u32) -> Result<Self, AlgorithmError> {
        check_table_size(table_size)?;
        Ok(Self::build(set, table_size))
    }

    pub(crate) fn build(set: EndpointSet, table_size: u32) -> Self {
        let table = if set.is_empty() { Vec::new() } else { populate(&set, u64::from(table_size)) };
        let keyless = Keyless::default();
        Maglev { set, table, keyless }
    }

    /// The table: slot → endpoint index.
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    #[inline]
    fn slot(&self, hash: u64) -> usize {
        reduce(hash, self.table.len())
    }

    /// The owner of a prehashed key, ignoring health: the raw table lookup.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        self.table.get(self.slot(hash)).map(|&o| o as usize)
    }

    /// Selects for a prehashed key (see [`hash_key`](crate::hash_key)),
    /// passing over ineligible owners.
    #[inline]
    pub fn select_hash(&self, hash: u64, ctx: &PickContext<'_>) -> Option<usize> {
        let owner = *self.table.get(self.slot(hash))? as usize;
        // The common case inline: nothing excluded, one flag load.
        if ctx.exclude().is_empty()
            && let Some(state) = self.set.states().get(owner)
            && ctx.health_admits(state)
        {
            return Some(owner);
        }
        self.select_hash_slow(hash, owner, ctx.exclude(), ctx.ignores_health())
    }

    /// The owner is down or excluded: read the table onward. Takes the
    /// context's fields, not the context, so the fast path never has to
    /// write one out to memory.
    #[cold]
    #[inline(never)]
    fn select_hash_slow(
        &self,
        hash: u64,
        owner: usize,
        exclude: &[usize],
        ignore_health: bool,
    ) -> Option<usize> {
        let ctx = &PickContext::new().excluding(exclude).with_health_ignored(ignore_health);
        if self.set.is_eligible(owner, ctx) {
            return Some(owner);
        }
        first_eligible(self.walk(hash), &self.set, ctx)
    }
}

/// Fills a table of `m` slots (the paper's Algorithm 1, Envoy's weighting).
///
/// Endpoints probe their permutations for a free slot. Near the end, when
/// only a few slots are free, probing costs `m / free` steps per fill, so
/// the last `sqrt(m) / 4` fills instead compute, for each free slot, how many
/// steps of the endpoint's permutation reach it (`(slot - position) / skip`
/// mod the prime `m`) and take the nearest: the same slot probing would
/// find, for about 40 % fewer steps in all.
fn populate(set: &EndpointSet, m: u64) -> Vec<u32> {
    let weights = weights(set);
    let max_weight = u64::from(weights.iter().copied().max().unwrap_or(1));
    let mut turns: Vec<Turn> = set
        .iter()
        .zip(&weights)
        .map(|(member, &w)| {
            let h = hash_key(member.endpoint().id().as_str().as_bytes());
            let (position, skip) = (h % m, splitmix64(h) % (m - 1) + 1);
            Turn {
                position: position as u32,
                skip: skip as u32,
                weight: u64::from(w),
                threshold: 0,
                inverse: 0,
            }
        })
        .collect();
    let tail = (integer_sqrt(m) / 4).max(1);
    let mut table = vec![u32::MAX; m as usize];
    let mut free = vec![u64::MAX; (m as usize).div_ceil(64)];
    let mut free_list: Vec<u32> = Vec::new();
    let mut filled = 0u64;
    let mut round = 0u64;
    while filled < m {
        round += 1;
        for (index, turn) in turns.iter_mut().enumerate() {
            // A turn in w / max_weight of the rounds.
            if round * turn.weight < turn.threshold {
                continue;
            }
            turn.threshold += max_weight;
            let slot = if m - filled > tail {
                probe(turn, &free, m)
            } else {
                if free_list.is_empty() {
                    free_list =
                        (0..m as u32).filter(|&s| free[s as usize / 64] & (1 << (s % 64)) != 0).collect();
                }
                nearest_free(turn, &mut free_list, m)
            };
            free[slot / 64] &= !(1 << (slot % 64));
            table[slot] = index as u32;
            filled += 1;
            if filled == m {
                break;
            }
        }
    }
    table
}

/// Walks the endpoint's permutation to its next free slot (in registers;
/// only the end position is stored back). Not inlined, so the hot loop gets
/// registers of its own instead of spilling inside the big build loop.
#[inline(never)]
fn probe(turn: &mut Turn, free: &[u64], m: u64) -> usize {
    let (mut position, skip) = (u64::from(turn.position), u64::from(turn.skip));
    let slot = loop {
        let slot = position;
        position += skip;
        if position >= m {
            position -= m;
        }
        if free[(slot / 64) as usize] & (1 << (slot % 64)) != 0 {
            break slot as usize;
        }
    };
    turn.position = position as u32;
    slot
}

/// The free slot the endpoint's permutation reaches first, found by
/// counting steps to each free slot; removes it from `free_list`.
fn nearest_free(turn: &mut Turn, free_list: &mut Vec<u32>, m: u64) -> usize {
    if turn.inverse == 0 {
        // skip^(m-2) is skip's inverse modulo the prime m (Fermat).
        turn.inverse = pow_mod(u64::from(turn.skip), m - 2, m) as u32;
    }
    let (position, inverse) = (u64::from(turn.position), u64::from(turn.inverse));
    let steps = |s: u32| (u64::from(s) + m - position) % m * inverse % m;
    let (at, _) = free_list.iter().enumerate().min_by_key(|&(_, &s)| steps(s)).unwrap_or((0, &0));
    let slot = free_list.swap_remove(at) as u64;
    turn.position = ((slot + u64::from(turn.skip)) % m) as u32;
    slot as usize
}

/// `base^exp mod m`, for a table size `m` (a prime, at least 3).
fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut result = 1;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            result = result * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    result
}

fn integer_sqrt(n: u64) -> u64 {
    (1..).take_while(|x: &u64| x * x <= n).last().unwrap_or(0)
}

/// Trial division; table sizes are small and checked once.
/// A table size must be a prime from 3 to [`MAX_TABLE_SIZE`].
pub(crate) fn check_table_size(table_size: u32) -> Result<(), AlgorithmError> {
    if table_size > MAX_TABLE_SIZE {
        return Err(AlgorithmError::TableSizeTooLarge(table_size));
    }
    if table_size < 3 || !is_prime(table_size) {
        return Err(AlgorithmError::TableSizeNotPrime(table_size));
    }
    Ok(())
}

pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..=integer_sqrt(n)).all(|d| n % d != 0)
}

impl HashWalk for Maglev {
    fn key_hash(&self, key: &[u8]) -> u64 {
        hash_key(key)
    }

    /// The table read onward from the key's slot, wrapping once.
    fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let len = self.table.len();
        let start = if len == 0 { 0 } else { self.slot(hash) };
        // Then every endpoint in order: with a table smaller than the set,
        // some endpoints own no slot and would otherwise never be a fallback.
        (0..len)
            .map(move |k| {
                let i = start + k;
                self.table[if i >= len { i - len } else { i }] as usize
            })
            .chain(0..self.set.len())
    }
}

keyed_balancer!(Maglev);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, set_of, weighted_set};
    use lb_core::Balancer;

    const FINGERPRINT_251: u64 = 9_158_756_934_732_608_512;
    const FINGERPRINT_65537: u64 = 10_666_559_307_897_692_236;

    /// FNV-1a over a table's owners.
    fn fingerprint(table: &[u32]) -> u64 {
        table.iter().fold(0xcbf2_9ce4_8422_2325, |h, &o| (h ^ u64::from(o)).wrapping_mul(0x0100_0000_01b3))
    }

    /// Two proxies of different versions behind one load balancer must send
    /// a key to the same endpoint: a table never changes silently.
    #[test]
    fn tables_are_stable_across_versions() {
        let small = Maglev::with_table_size(weighted_set(&[1, 2, 3, 1, 1]), 251).unwrap();
        let default = Maglev::new(set_of(7));
        assert_eq!(
            (fingerprint(small.table()), fingerprint(default.table())),
            (FINGERPRINT_251, FINGERPRINT_65537),
            "the table layout changed: two versions would disagree on keys"
        );
    }

    #[test]
    fn the_walk_reads_the_table_round_from_the_key_s_slot_then_every_endpoint() {
        let m = Maglev::with_table_size(weighted_set(&[1, 2, 3]), 13).unwrap();
        for key in 0..40u32 {
            let hash = crate::hash_key(&key.to_le_bytes());
            let start = reduce(hash, 13);
            let expected: Vec<usize> =
                (0..13).map(|k| m.table()[(start + k) % 13] as usize).chain(0..3).collect();
            assert_eq!(m.walk(hash).collect::<Vec<_>>(), expected, "key {key}");
        }
    }

    #[test]
    fn lookup_is_the_table_s_owner_and_what_a_healthy_set_selects() {
        let m = Maglev::with_table_size(set_of(5), 251).unwrap();
        for key in 0..500u32 {
            let hash = crate::hash_key(&key.to_le_bytes());
            let owner = m.lookup(hash);
            assert_eq!(owner, Some(m.table()[reduce(hash, 251)] as usize));
            assert_eq!(owner, m.select_hash(hash, &PickContext::new()));
        }
    }

    fn shares(m: &Maglev, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &o in m.table() {
            counts[o as usize] += 1;
        }
        counts
    }

    #[test]
    fn table_is_full_and_balanced() {
        let m = Maglev::new(set_of(100));
        let counts = shares(&m, 100);
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "unweighted shares differ by at most one slot: {min}..{max}");
        assert!(m.table().iter().all(|&o| o < 100));
    }

    #[test]
    fn weights_scale_shares() {
        let m = Maglev::with_table_size(weighted_set(&[1, 2, 4]), 7919).unwrap();
        let counts = shares(&m, 3);
        let unit = 7919.0 / 7.0;
        for (c, w) in counts.iter().zip([1.0, 2.0, 4.0]) {
            assert!((*c as f64 / (unit * w) - 1.0).abs() < 0.01, "{counts:?}");
        }
    }

    /// The paper's algorithm with probing only, to check the fast tail against.
    fn reference(set: &EndpointSet, m: u64) -> Vec<u32> {
        let weights = weights(set);
        let max_weight = u64::from(weights.iter().copied().max().unwrap());
        let mut perm: Vec<(u64, u64, u64, u64)> = set
            .iter()
            .zip(&weights)
            .map(|(member, &w)| {
                let h = hash_key(member.endpoint().id().as_str().as_bytes());
                (h % m, splitmix64(h) % (m - 1) + 1, u64::from(w), 0)
            })
            .collect();
        let mut table = vec![u32::MAX; m as usize];
        let (mut filled, mut round) = (0, 0u64);
        while filled < m {
            round += 1;
            for (i, (pos, skip, w, threshold)) in perm.iter_mut().enumerate() {
                if round * *w < *threshold || filled == m {
                    continue;
                }
                *threshold += max_weight;
                while table[*pos as usize] != u32::MAX {
                    *pos = (*pos + *skip) % m;
                }
                table[*pos as usize] = i as u32;
                *pos = (*pos + *skip) % m;
                filled += 1;
            }
        }
        table
    }

    #[test]
    fn fast_tail_gives_the_reference_table() {
        for (weights, m) in
            [(&[1u32, 1, 1][..], 101u64), (&[1, 2, 4, 1, 3], 1009), (&[1; 40], 4093), (&[5, 1], 65_537)]
        {
            let set = weighted_set(weights);
            assert_eq!(populate(&set, m), reference(&set, m), "{weights:?} m={m}");
        }
        assert_eq!(pow_mod(3, 65_535, 65_537) * 3 % 65_537, 1);
        assert_eq!(integer_sqrt(65_537), 256);
    }

    #[test]
    fn bad_sizes_are_rejected_and_primes_known() {
        assert!(matches!(
            Maglev::with_table_size(set_of(2), 65_536),
            Err(AlgorithmError::TableSizeNotPrime(65_536))
        ));
        // The largest prime below 2^32 used to be accepted, and building its table takes 16 GiB.
        assert!(matches!(
            Maglev::with_table_size(set_of(2), 4_294_967_291),
            Err(AlgorithmError::TableSizeTooLarge(4_294_967_291))
        ));
        assert!(is_prime(MAX_TABLE_SIZE) && check_table_size(MAX_TABLE_SIZE).is_ok());
        assert!(is_prime(65_537) && is_prime(2) && !is_prime(1) && !is_prime(91));
        let empty = Maglev::new(EndpointSet::empty());
        assert_eq!(empty.select(&PickContext::new().with_key(b"x")), None);
        assert_eq!(empty.lookup(7), None);
    }

    #[test]
    fn failover_reads_on() {
        let m = Maglev::with_table_size(set_of(4), 211).unwrap();
        let order: Vec<usize> = m.candidates(b"flow").collect();
        assert_eq!(order.len(), 4);
        eject(m.endpoints(), order[0]);
        assert_eq!(m.select(&PickContext::new().with_key(b"flow")), Some(order[1]));
    }

    #[test]
    fn a_table_smaller_than_the_set_still_finds_every_eligible_endpoint() {
        let maglev = Maglev::with_table_size(set_of(10), 3).unwrap();
        let owners: Vec<usize> = maglev.table().iter().map(|&o| o as usize).collect();
        for &owner in &owners {
            eject(maglev.endpoints(), owner);
        }
        let ctx = PickContext::new().with_key(b"user-1");
        let picked = maglev.select(&ctx).expect("an eligible endpoint exists");
        assert!(!owners.contains(&picked));
    }
}
