//! Jump consistent hash (Lamping & Veach 2014).

use lb_core::{EndpointSet, PickContext};

use crate::util::{GOLDEN, hash_key, next_eligible, splitmix64};
use crate::walk::{HashWalk, Keyless, first_eligible, keyed_balancer};

/// How many rehashed jumps a pick tries before scanning for an eligible endpoint.
const REHASHES: u64 = 8;

/// The bucket in `0..buckets` for `key` (Lamping & Veach, "A Fast, Minimal
/// Memory, Consistent Hash Algorithm", 2014). `ln(n) + 1` expected rounds.
#[inline]
pub fn jump_bucket(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let (mut b, mut j) = (0i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// Jump consistent hash over the set's indices: no memory, no build.
///
/// Buckets are the set's indices, and a set is sorted by endpoint id, so
/// jump hash is consistent only when endpoints are added and removed at the
/// end of that order (shards named `shard-000`, `shard-001`, ...): that is
/// its design (use it for sharding, not for arbitrary membership; use
/// [`Maglev`](crate::Maglev) or [`KetamaRing`](crate::KetamaRing) then).
/// Weights are ignored. An ineligible bucket is re-drawn with the key
/// rehashed (up to 8 times) and then the next eligible index is taken, so a
/// bad shard's keys spread over the others. Without a key a pick is round robin.
///
/// ```
/// use lb_algorithms::{JumpHash, jump_bucket};
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// assert_eq!(jump_bucket(1, 60), 55); // the paper's algorithm, bit for bit
/// let set = EndpointSet::new(
///     (0..4).map(|i| Endpoint::new(format!("shard-{i}:80").parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let jump = JumpHash::new(set);
/// let owner = jump.select(&PickContext::new().with_key(b"tenant-9")).unwrap();
/// assert_eq!(jump.select(&PickContext::new().with_key(b"tenant-9")), Some(owner));
/// ```
#[derive(Debug)]
pub struct JumpHash {
    set: EndpointSet,
    keyless: Keyless,
}

impl JumpHash {
    /// Jump hash over `set`'s indices.
    pub fn new(set: EndpointSet) -> Self {
        let keyless = Keyless::default();
        JumpHash { set, keyless }
    }

    #[inline]
    fn buckets(&self) -> u32 {
        u32::try_from(self.set.len()).unwrap_or(u32::MAX)
    }

    /// Selects for a prehashed key (see [`hash_key`](crate::hash_key)).
    #[inline]
    pub fn select_hash(&self, hash: u64, ctx: &PickContext<'_>) -> Option<usize> {
        if self.set.is_empty() {
            return None;
        }
        let found = first_eligible(self.rehashed(hash).take(REHASHES as usize + 1), &self.set, ctx);
        found.or_else(|| next_eligible(&self.set, jump_bucket(hash, self.buckets()) as usize, ctx))
    }

    /// The key's bucket, then the buckets of the key rehashed.
    fn rehashed(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        (0..).map(move |attempt: u64| {
            let key = if attempt == 0 { hash } else { splitmix64(hash ^ attempt.wrapping_mul(GOLDEN)) };
            jump_bucket(key, self.buckets()) as usize
        })
    }
}

impl HashWalk for JumpHash {
    fn key_hash(&self, key: &[u8]) -> u64 {
        hash_key(key)
    }

    /// The rehashed buckets, then every index from the key's bucket on.
    fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let n = self.set.len();
        let start = if n == 0 { 0 } else { jump_bucket(hash, self.buckets()) as usize };
        let rehashed = self.rehashed(hash).take(if n == 0 { 0 } else { REHASHES as usize + 1 });
        rehashed.chain((0..n).map(move |k| (start + k) % n))
    }
}

keyed_balancer!(JumpHash);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, set_of};
    use alloc::vec::Vec;
    use lb_core::Balancer;

    #[test]
    fn after_the_rehashes_the_walk_runs_through_every_index_from_the_keys_bucket() {
        let jump = JumpHash::new(set_of(7));
        for key in 0..200u64 {
            let hash = crate::util::splitmix64(key);
            let tail: Vec<usize> = jump.walk(hash).skip(REHASHES as usize + 1).collect();
            let bucket = jump_bucket(hash, 7) as usize;
            let expected: Vec<usize> = (0..7).map(|k| (bucket + k) % 7).collect();
            assert_eq!(tail, expected, "key {key}");
        }
    }

    #[test]
    fn the_walk_starts_at_the_keys_owner() {
        let jump = JumpHash::new(set_of(10));
        for key in 0..500u64 {
            let hash = crate::util::splitmix64(key);
            let owner = jump.select_hash(hash, &PickContext::new());
            assert_eq!(jump.walk(hash).next(), owner, "key {key}");
        }
    }

    #[test]
    fn every_rehash_is_tried_before_the_scan() {
        // The first eight draws down and the ninth up: the pick is the
        // ninth, not the next index after the key's bucket.
        let mut checked = 0;
        for key in 0..200u64 {
            let jump = JumpHash::new(set_of(64));
            let hash = splitmix64(key);
            let draws: Vec<usize> = jump.rehashed(hash).take(REHASHES as usize + 1).collect();
            let (down, ninth) = (&draws[..REHASHES as usize], draws[REHASHES as usize]);
            if down.contains(&ninth) {
                continue;
            }
            for &i in down {
                eject(&jump.set, i);
            }
            if next_eligible(&jump.set, draws[0], &PickContext::new()) == Some(ninth) {
                continue;
            }
            assert_eq!(jump.select_hash(hash, &PickContext::new()), Some(ninth), "key {key}");
            checked += 1;
        }
        assert!(checked > 100, "only {checked} keys had a ninth draw apart");
    }

    /// Two versions behind one load balancer must fail a key over alike.
    #[test]
    fn the_rehashed_draws_never_change_between_versions() {
        let jump = JumpHash::new(set_of(64));
        let draws: Vec<usize> = jump.rehashed(splitmix64(7)).take(REHASHES as usize + 1).collect();
        assert_eq!(draws, [52, 50, 61, 40, 32, 31, 13, 37, 45], "failover order changed");
    }

    #[test]
    fn known_values_and_growth_moves_few() {
        assert_eq!([0, 1, 2].map(|k| jump_bucket(k, 60)), [0, 55, 46]);
        let moved = (0..10_000u64)
            .filter(|&k| jump_bucket(splitmix64(k), 10) != jump_bucket(splitmix64(k), 11))
            .count();
        assert!((700..1_100).contains(&moved), "about 1/11 move: {moved}");
        assert!((0..1000u64).all(|k| jump_bucket(k, 1) == 0));
    }

    #[test]
    fn ineligible_buckets_are_redrawn_and_candidates_cover_all() {
        let jump = JumpHash::new(set_of(5));
        let owner = jump.select(&PickContext::new().with_key(b"k")).unwrap();
        eject(jump.endpoints(), owner);
        let next = jump.select(&PickContext::new().with_key(b"k")).unwrap();
        assert_ne!(next, owner);
        let mut all: Vec<usize> = jump.candidates(b"k").collect();
        assert_eq!(all[0], owner);
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3, 4]);
        assert_eq!(jump.select(&PickContext::new().with_key(b"k").excluding(&[0, 1, 2, 3, 4])), None);
    }
}
