//! Weighted random choice in O(1) per pick with Walker's alias method.

use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::{Rng, next_eligible, reduce, weights};

/// How many random draws a pick makes before drawing among the eligible
/// endpoints only (O(n)): with a third down, about one pick in 10^4.
const DRAWS: usize = 8;

/// Picks each endpoint with probability proportional to its weight, using
/// Walker's alias method (Vose's construction): one random number, one
/// column, one comparison per pick, built in O(n).
///
/// Randomness comes from a lock-free atomic splitmix64 counter. An
/// ineligible draw is redrawn up to seven times; then the pick draws among
/// the eligible endpoints alone by weight, in two O(n) passes, so shares
/// among survivors keep their weights however many endpoints are down.
///
/// ```
/// use lb_algorithms::WeightedRandom;
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     [("a", 9), ("b", 1)].map(|(id, w)| {
///         Endpoint::new("10.0.0.1:80".parse::<lb_core::Address>().unwrap()).with_id(id).with_weight(w)
///     }),
///     Timestamp::ZERO,
/// );
/// let random = WeightedRandom::new(set);
/// let a = (0..10_000).filter(|_| random.select(&PickContext::new()) == Some(0)).count();
/// assert!((8_700..=9_300).contains(&a));
/// ```
#[derive(Debug)]
pub struct WeightedRandom {
    set: EndpointSet,
    /// Per column: keep the column when the low 32 random bits are below this.
    keep_below: Vec<u64>,
    alias: Vec<u32>,
    rng: Rng,
}

impl WeightedRandom {
    /// Builds the alias table for `set`'s weights.
    pub fn new(set: EndpointSet) -> Self {
        let (keep_below, alias) = alias_table(&weights(&set));
        WeightedRandom { set, keep_below, alias, rng: Rng::default() }
    }

    /// Makes the random draws a fixed sequence of `seed`, the same on every
    /// run and at every address: for simulations and tests. Concurrent
    /// pickers may then draw the same number; leave it unseeded in production.
    pub fn seed_rng(&self, seed: u64) {
        self.rng.seed(seed);
    }

    #[inline]
    fn draw(&self) -> usize {
        let r = self.rng.next();
        let column = reduce(r, self.alias.len());
        if (r & 0xFFFF_FFFF) < self.keep_below[column] { column } else { self.alias[column] as usize }
    }

    /// A weighted draw among the eligible endpoints only: their total
    /// weight, then the endpoint the draw falls in. O(n), for when most
    /// draws miss.
    #[cold]
    fn draw_eligible(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let weight = |i: usize| u64::from(self.set.members()[i].endpoint().weight());
        let eligible = || (0..self.set.len()).filter(|&i| self.set.is_eligible(i, ctx));
        let total: u64 = eligible().map(weight).sum();
        let mut point = ((u128::from(self.rng.next()) * u128::from(total)) >> 64) as u64;
        for i in eligible() {
            match point.checked_sub(weight(i)) {
                Some(rest) => point = rest,
                None => return Some(i),
            }
        }
        // Health changed between the passes.
        next_eligible(&self.set, 0, ctx)
    }
}

/// Vose's alias table with probabilities in units of 2^-32.
fn alias_table(weights: &[u32]) -> (Vec<u64>, Vec<u32>) {
    let n = weights.len() as u64;
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    // Each column holds `total` units of mass scaled by n; compare in u128 to stay exact.
    let mut mass: Vec<u128> = weights.iter().map(|&w| u128::from(w) * u128::from(n)).collect();
    let full = u128::from(total);
    let mut alias: Vec<u32> = (0..weights.len() as u32).collect();
    let mut keep_below = alloc::vec![1u64 << 32; weights.len()];
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..weights.len()).partition(|&i| mass[i] < full);
    while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
        keep_below[s] = ((mass[s] << 32) / full) as u64;
        alias[s] = l as u32;
        mass[l] -= full - mass[s];
        if mass[l] < full {
            large.pop();
            small.push(l);
        }
    }
    (keep_below, alias)
}

impl Balancer for WeightedRandom {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        if self.alias.is_empty() {
            return None;
        }
        for _ in 0..DRAWS {
            let index = self.draw();
            if self.set.is_eligible(index, ctx) {
                return Some(index);
            }
        }
        self.draw_eligible(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, weighted_set};

    #[test]
    fn alias_table_is_exact() {
        let (keep, alias) = alias_table(&[1, 2, 3, 2]);
        // Column mass that stays plus mass aliased in must equal each weight's share.
        let mut share = [0u128; 4];
        for (c, (&k, &a)) in keep.iter().zip(&alias).enumerate() {
            share[c] += u128::from(k);
            share[a as usize] += (1u128 << 32) - u128::from(k);
        }
        let unit = (1u128 << 32) * 4 / 8;
        for (s, w) in share.iter().zip([1u128, 2, 3, 2]) {
            assert!(s.abs_diff(w * unit) <= 4, "{share:?}");
        }
    }

    #[test]
    fn never_picks_ineligible() {
        let set = weighted_set(&[100, 1, 1]);
        eject(&set, 0);
        let b = WeightedRandom::new(set);
        assert!((0..500).all(|_| b.select(&PickContext::new()) != Some(0)));
        assert_eq!(b.select(&PickContext::new().excluding(&[1, 2])), None);
        assert_eq!(WeightedRandom::new(EndpointSet::empty()).select(&PickContext::new()), None);
    }

    #[test]
    fn survivors_keep_their_weights_when_most_are_down() {
        // Eight of ten down: before, 41 % of picks fell to the first survivor in set order.
        let set = weighted_set(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        for i in 0..8 {
            eject(&set, i);
        }
        let b = WeightedRandom::new(set);
        let eights = (0..20_000).filter(|_| b.select(&PickContext::new()) == Some(8)).count();
        assert!((9_400..=10_600).contains(&eights), "{eights}");
        let set = weighted_set(&[50, 50, 1, 3]);
        eject(&set, 0);
        eject(&set, 1);
        let b = WeightedRandom::new(set);
        let threes = (0..20_000).filter(|_| b.select(&PickContext::new()) == Some(3)).count();
        assert!((14_500..=15_500).contains(&threes), "3:1, {threes}");
    }
}
