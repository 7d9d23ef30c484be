//! Rendezvous (highest random weight) hashing, weighted.

use alloc::vec::Vec;

use lb_core::{EndpointSet, PickContext};

use crate::util::{hash_key, splitmix64, uniform, weights};
use crate::walk::{HashWalk, Keyless, keyed_balancer};

/// Rendezvous / highest-random-weight hashing (Thaler & Ravishankar 1998):
/// every endpoint scores the key and the highest score wins.
///
/// The score of endpoint `i` is a 64-bit mix of the key hash and the hash of
/// the endpoint's id. With equal weights the raw mix is compared (integer
/// only). With unequal weights the score is `-w_i / ln(h)` with `h` the mix
/// mapped into (0, 1) (Schindelhauer & Schomaker's weighted form), so each
/// endpoint wins a `w_i / sum(w)` share of keys. Cost: O(n) per pick, plus
/// one `ln` per eligible endpoint when weights differ, so it suits sets of
/// tens, not thousands; removal moves only the removed endpoint's keys,
/// addition only the newcomer's share: the least disruption of all the hash
/// algorithms here. Without a key a pick is round robin.
///
/// ```
/// use lb_algorithms::Rendezvous;
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     (1..=3).map(|i| Endpoint::new(format!("cache-{i}:11211").parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let hrw = Rendezvous::new(set);
/// let owner = hrw.select(&PickContext::new().with_key(b"object-17")).unwrap();
/// let retry = hrw.select(&PickContext::new().with_key(b"object-17").excluding(&[owner])).unwrap();
/// assert_ne!(owner, retry);
/// ```
#[derive(Debug)]
pub struct Rendezvous {
    set: EndpointSet,
    id_hashes: Vec<u64>,
    weights: Vec<f64>,
    uniform: bool,
    keyless: Keyless,
}

impl Rendezvous {
    /// Rendezvous hashing over `set`.
    pub fn new(set: EndpointSet) -> Self {
        let w = weights(&set);
        let id_hashes = set.iter().map(|m| hash_key(m.endpoint().id().as_str().as_bytes())).collect();
        let keyless = Keyless::default();
        Rendezvous {
            uniform: uniform(&w),
            weights: w.iter().map(|&x| f64::from(x)).collect(),
            id_hashes,
            set,
            keyless,
        }
    }

    /// Endpoint `i`'s raw mix for a key hash.
    #[inline]
    fn mix(&self, hash: u64, i: usize) -> u64 {
        splitmix64(hash ^ self.id_hashes[i])
    }

    /// Endpoint `i`'s weighted score for a key hash; larger wins.
    #[inline]
    fn score(&self, hash: u64, i: usize) -> f64 {
        -self.weights[i] / libm::log(open_unit(self.mix(hash, i)))
    }

    /// Endpoint `i`'s rank for a key hash as an integer; larger wins, ties go
    /// to the lower index. Scores are never negative, and the bits of
    /// non-negative floats order as the floats do.
    #[inline]
    fn rank(&self, hash: u64, i: usize) -> u64 {
        if self.uniform { self.mix(hash, i) } else { self.score(hash, i).to_bits() }
    }

    /// Selects for a prehashed key (see [`hash_key`](crate::hash_key)): the
    /// best-ranked eligible endpoint, in one scan.
    pub fn select_hash(&self, hash: u64, ctx: &PickContext<'_>) -> Option<usize> {
        (0..self.id_hashes.len())
            .filter(|&i| self.set.is_eligible(i, ctx))
            .max_by_key(|&i| (self.rank(hash, i), core::cmp::Reverse(i)))
    }

    /// Every endpoint ordered by its rank for `hash`, best first. Allocates.
    pub fn ranked(&self, hash: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.id_hashes.len()).collect();
        order.sort_unstable_by_key(|&i| (core::cmp::Reverse(self.rank(hash, i)), i));
        order
    }
}

impl HashWalk for Rendezvous {
    fn key_hash(&self, key: &[u8]) -> u64 {
        hash_key(key)
    }

    /// The endpoints by descending rank, found one scan at a time rather
    /// than sorted: nothing is allocated, and a walk that stops at the owner
    /// (as bounded loads mostly does) costs one pick.
    fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        RankWalk { hrw: self, hash, last: None }
    }
}

/// [`Rendezvous`]'s walk: each step is the best `(rank, lower index)` below
/// the previous one. O(n) a step, O(n²) for a whole walk.
struct RankWalk<'a> {
    hrw: &'a Rendezvous,
    hash: u64,
    last: Option<(u64, usize)>,
}

impl Iterator for RankWalk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let after_last = |&(rank, i): &(u64, usize)| match self.last {
            None => true,
            Some((last_rank, last_i)) => rank < last_rank || (rank == last_rank && i > last_i),
        };
        let next = (0..self.hrw.id_hashes.len())
            .map(|i| (self.hrw.rank(self.hash, i), i))
            .filter(after_last)
            .max_by_key(|&(rank, i)| (rank, core::cmp::Reverse(i)))?;
        self.last = Some(next);
        Some(next.1)
    }
}

keyed_balancer!(Rendezvous);

/// A mix's top 53 bits as a float strictly inside (0, 1), so its log is
/// finite and negative, and every score positive. The largest mixes round
/// up to 1.0 (whose log is 0, a score of minus infinity); they are held
/// to the float just below it.
#[inline]
fn open_unit(mix: u64) -> f64 {
    const BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;
    (((mix >> 11) as f64 + 0.5) / (1u64 << 53) as f64).min(BELOW_ONE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, weighted_set};
    use lb_core::Balancer;

    /// Two versions behind one load balancer must agree on every key's owner.
    #[test]
    fn owners_never_change_between_versions() {
        let r = Rendezvous::new(weighted_set(&[1, 2, 3, 1, 1]));
        let owners: Vec<usize> = (0..32u32)
            .map(|k| r.select_hash(crate::hash_key(&k.to_le_bytes()), &PickContext::new()).unwrap())
            .collect();
        let recorded =
            [1, 1, 1, 1, 3, 3, 2, 3, 0, 4, 0, 4, 2, 2, 3, 2, 3, 0, 1, 3, 2, 4, 2, 2, 3, 2, 2, 1, 2, 1, 2, 1];
        assert_eq!(owners, recorded, "the ranking changed: two versions would disagree on keys");
    }

    #[test]
    fn mixes_map_strictly_inside_the_unit_interval() {
        for mix in [0, 1, 1 << 11, u64::MAX >> 1, u64::MAX - (1 << 11), u64::MAX] {
            let unit = open_unit(mix);
            assert!(unit > 0.0 && unit < 1.0, "{mix:#x} gives {unit}");
            assert!(libm::log(unit).is_finite() && libm::log(unit) < 0.0);
        }
        assert!(open_unit(0) < open_unit(1 << 11), "larger mixes, larger units");
        let just_below_one = f64::from_bits(1.0f64.to_bits() - 1);
        assert_eq!(open_unit(u64::MAX), just_below_one, "the largest mix keeps the largest unit");
    }

    #[test]
    fn weighted_shares() {
        let hrw = Rendezvous::new(weighted_set(&[1, 3]));
        let heavy = (0..20_000u64)
            .filter(|&k| hrw.select_hash(splitmix64(k), &PickContext::new()) == Some(1))
            .count();
        assert!((14_500..15_500).contains(&heavy), "{heavy}");
    }

    #[test]
    fn ranked_matches_select_and_failover() {
        let hrw = Rendezvous::new(weighted_set(&[1, 1, 1, 1]));
        let order = hrw.ranked(hash_key(b"k"));
        assert_eq!(hrw.select(&PickContext::new().with_key(b"k")), Some(order[0]));
        eject(hrw.endpoints(), order[0]);
        assert_eq!(hrw.select(&PickContext::new().with_key(b"k")), Some(order[1]));
        assert_eq!(hrw.candidates(b"k").collect::<Vec<_>>(), order);
    }

    #[test]
    fn the_walk_is_the_ranking_with_and_without_weights() {
        for weights in [&[1, 1, 1, 1, 1][..], &[1, 3, 2, 5, 1]] {
            let hrw = Rendezvous::new(weighted_set(weights));
            for key in 0..200u64 {
                let hash = splitmix64(key);
                assert_eq!(hrw.walk(hash).collect::<Vec<_>>(), hrw.ranked(hash), "{weights:?} key {key}");
            }
        }
    }

    #[test]
    fn tied_ranks_walk_in_index_order() {
        // Two endpoints with one id hash tie on every key; the walk must
        // still visit both, the lower index first, as the ranking does.
        for weights in [&[1, 1, 1][..], &[2, 1, 2]] {
            let mut hrw = Rendezvous::new(weighted_set(weights));
            hrw.id_hashes[2] = hrw.id_hashes[0];
            for key in 0..50u64 {
                let hash = splitmix64(key);
                let walk: Vec<usize> = hrw.walk(hash).collect();
                assert_eq!(walk, hrw.ranked(hash), "{weights:?} key {key}");
                assert_eq!(
                    walk.iter().position(|&i| i == 0).unwrap() + 1,
                    walk.iter().position(|&i| i == 2).unwrap()
                );
            }
        }
    }
}
