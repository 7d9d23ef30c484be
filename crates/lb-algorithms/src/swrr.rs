//! nginx's smooth weighted round robin, made lock-free by precomputing its
//! periodic order.

use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::{Cursor, next_eligible, weights};

/// The longest precomputed order; larger (gcd-reduced) total weights are scaled down to fit.
pub const MAX_SWRR_TABLE: u64 = 1 << 16;

/// How many table entries a pick consumes before falling back to a scan.
const EAGER_TRIES: usize = 4;

/// nginx's smooth weighted round robin (`ngx_http_upstream_round_robin.c`),
/// lock-free.
///
/// nginx keeps a mutable `current` weight per peer under a lock: per pick
/// every peer gains its weight, the largest `current` wins (the first on a
/// tie) and pays back the total. For a fixed set that sequence is periodic
/// with period = total weight, so we run nginx's exact procedure once at
/// build time into a table and a pick is one wait-free cursor step plus a
/// table read. With every endpoint healthy the sequence is nginx's, entry
/// for entry (on one thread; two threads picking at the same instant may
/// both take the same entry, which nginx's lock would have serialized).
///
/// An ineligible endpoint's entries are *consumed* (the cursor moves past
/// them), so over each period every eligible endpoint still gets exactly its
/// weight's worth of picks; after four consecutive misses the pick
/// falls back to the next eligible endpoint in set order. nginx instead
/// re-smooths over the remaining peers; shares match, the interleaving can differ.
///
/// Weights are first divided by their gcd (which leaves nginx's order
/// unchanged). If the total still exceeds [`MAX_SWRR_TABLE`] the weights are
/// scaled down proportionally to fit, so the order is then no longer exactly
/// nginx's. Build cost O(total weight × n).
///
/// ```
/// use lb_algorithms::SmoothWeightedRoundRobin;
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     [("a", 5), ("b", 1), ("c", 1)].map(|(id, w)| {
///         Endpoint::new("10.0.0.1:80".parse::<lb_core::Address>().unwrap()).with_id(id).with_weight(w)
///     }),
///     Timestamp::ZERO,
/// );
/// let wrr = SmoothWeightedRoundRobin::new(set);
/// let names: String = (0..7)
///     .map(|_| wrr.endpoints().get(wrr.select(&PickContext::new()).unwrap()).unwrap().endpoint().id().as_str().to_owned())
///     .collect();
/// assert_eq!(names, "aabacaa");
/// ```
#[derive(Debug)]
pub struct SmoothWeightedRoundRobin {
    set: EndpointSet,
    order: Vec<u32>,
    cursor: Cursor,
}

impl SmoothWeightedRoundRobin {
    /// Precomputes nginx's order for `set`.
    pub fn new(set: EndpointSet) -> Self {
        let order = nginx_order(&fitted_weights(&weights(&set)));
        let cursor = Cursor::new(order.len());
        SmoothWeightedRoundRobin { set, order, cursor }
    }

    /// The precomputed order (indices into the set), one period long.
    pub fn order(&self) -> &[u32] {
        &self.order
    }
}

/// Divides by the gcd, then scales down proportionally if still too long.
fn fitted_weights(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w))).max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    if total <= MAX_SWRR_TABLE {
        return reduced;
    }
    let budget = MAX_SWRR_TABLE.saturating_sub(reduced.len() as u64).max(1);
    reduced.iter().map(|&w| (u128::from(w) * u128::from(budget) / u128::from(total)) as u64 + 1).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Runs nginx's smooth weighted round robin for one period.
pub(crate) fn nginx_order(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let total_signed = i64::try_from(total).unwrap_or(i64::MAX);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::try_from(w).unwrap_or(i64::MAX)).collect();
    let mut current = alloc::vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            // Strictly greater: the first peer wins a tie, as in nginx.
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total_signed;
        order.push(best as u32);
    }
    order
}

impl Balancer for SmoothWeightedRoundRobin {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        let mut index = 0;
        for _ in 0..EAGER_TRIES {
            index = self.order[self.cursor.advance()] as usize;
            if self.set.is_eligible(index, ctx) {
                return Some(index);
            }
        }
        next_eligible(&self.set, index + 1, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, weighted_set};

    fn picks(b: &SmoothWeightedRoundRobin, n: usize) -> Vec<usize> {
        (0..n).map(|_| b.select(&PickContext::new()).unwrap()).collect()
    }

    #[test]
    fn matches_nginx_sequence() {
        let b = SmoothWeightedRoundRobin::new(weighted_set(&[5, 1, 1]));
        assert_eq!(picks(&b, 14), [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
        let b = SmoothWeightedRoundRobin::new(weighted_set(&[10, 20, 30]));
        // gcd 10 reduces to {1,2,3}: c b a c b c, as nginx gives for {1,2,3}.
        assert_eq!(b.order(), [2, 1, 0, 2, 1, 2]);
    }

    #[test]
    fn ineligible_entries_are_consumed_keeping_shares() {
        let set = weighted_set(&[3, 2, 1]);
        eject(&set, 0);
        let b = SmoothWeightedRoundRobin::new(set);
        let p = picks(&b, 300);
        let ones = p.iter().filter(|&&i| i == 1).count();
        assert!(!p.contains(&0));
        assert!((190..=210).contains(&ones), "{ones}");
        assert_eq!(b.select(&PickContext::new().excluding(&[1, 2])), None);
    }

    #[test]
    fn huge_weights_are_scaled_to_fit() {
        let b = SmoothWeightedRoundRobin::new(weighted_set(&[u32::MAX, 1, 70_000]));
        assert!(b.order().len() as u64 <= MAX_SWRR_TABLE + 3);
        assert!(b.order().contains(&1) && b.order().contains(&2));
    }
}
