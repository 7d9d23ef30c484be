//! nginx's smooth weighted round robin, made lock-free by precomputing its
//! periodic order.

use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::{Position, weights};

/// The longest precomputed order; larger (gcd-reduced) total weights are scaled down to fit.
pub const MAX_SWRR_TABLE: u64 = 1 << 16;

/// The fewest table entries a pick reads one by one before it computes
/// where the next usable entry is instead.
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
/// A down endpoint's entries are passed over without being used, so over
/// each period every eligible endpoint still gets exactly its weight's worth
/// of picks: shares among the survivors stay exact (nginx instead re-smooths
/// over the remaining peers; shares match, the interleaving can differ).
/// Passing over a long run of a down endpoint's entries is not done entry by
/// entry past `max(n, 4)` of them: each eligible endpoint's next entry is
/// found by a binary search in its own list of positions, O(n log W), only
/// while a heavy endpoint is down. A retry whose entry belongs to an
/// endpoint it excludes is served by the next usable entry, and moves the
/// order by that one entry only.
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
    /// The positions in `order` of each endpoint's entries, ascending, endpoint after endpoint.
    positions: Vec<u32>,
    /// Where each endpoint's run in `positions` begins (n + 1 offsets).
    starts: Vec<u32>,
    /// Entries a pick reads one by one before it jumps.
    scan: usize,
    next: Position,
}

impl SmoothWeightedRoundRobin {
    /// Precomputes nginx's order for `set`.
    pub fn new(set: EndpointSet) -> Self {
        let order = nginx_order(&fitted_weights(&weights(&set)));
        let (positions, starts) = positions_by_endpoint(&order, set.len());
        let scan = set.len().max(EAGER_TRIES);
        SmoothWeightedRoundRobin { set, order, positions, starts, scan, next: Position::default() }
    }

    /// The precomputed order (indices into the set), one period long.
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    /// The first position at or after `from` (wrapping) whose endpoint
    /// `accept`s: read entry by entry, then computed past a long run.
    #[inline]
    fn next_entry(&self, from: usize, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.order.len();
        let mut p = from;
        for _ in 0..self.scan.min(len) {
            if accept(self.order[p] as usize) {
                return Some(p);
            }
            p = if p + 1 == len { 0 } else { p + 1 };
        }
        if self.scan >= len {
            return None;
        }
        self.jump(from, accept)
    }

    /// Where [`next_entry`](Self::next_entry) would stop, in O(n log W): each
    /// accepted endpoint's first position at or after `from`, the nearest wins.
    #[cold]
    fn jump(&self, from: usize, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.order.len();
        let mut best: Option<(usize, usize)> = None;
        for (endpoint, run) in self.starts.windows(2).enumerate() {
            let own = &self.positions[run[0] as usize..run[1] as usize];
            if own.is_empty() || !accept(endpoint) {
                continue;
            }
            let at = own.partition_point(|&q| (q as usize) < from);
            let position = *own.get(at).unwrap_or(&own[0]) as usize;
            let distance = if position >= from { position - from } else { position + len - from };
            if best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, position));
            }
        }
        best.map(|(_, position)| position)
    }
}

/// Each endpoint's positions in `order`, grouped by endpoint (a counting sort).
fn positions_by_endpoint(order: &[u32], n: usize) -> (Vec<u32>, Vec<u32>) {
    let mut starts = alloc::vec![0u32; n + 1];
    for &e in order {
        starts[e as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut fill: Vec<u32> = starts[..n].to_vec();
    let mut positions = alloc::vec![0u32; order.len()];
    for (p, &e) in order.iter().enumerate() {
        positions[fill[e as usize] as usize] = p as u32;
        fill[e as usize] += 1;
    }
    (positions, starts)
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
        let len = self.order.len();
        if len == 0 {
            return None;
        }
        let states = self.set.states();
        // This pick's entry: the next one whose endpoint health lets take traffic.
        let turn = self.next_entry(self.next.index_below(len), |i| ctx.health_admits(&states[i]))?;
        let mut pick = self.order[turn] as usize;
        if ctx.is_excluded(pick) {
            // From the turn itself: its own endpoint is excluded, so the search passes it.
            pick = self.order[self.next_entry(turn, |i| self.set.is_eligible(i, ctx))?] as usize;
        }
        self.next.pass(turn);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, weighted_set};

    #[test]
    fn weights_too_long_for_the_table_are_scaled_in_proportion() {
        let fitted = fitted_weights(&[1, 3 * MAX_SWRR_TABLE as u32, MAX_SWRR_TABLE as u32]);
        let total: u64 = fitted.iter().sum();
        assert!(total <= MAX_SWRR_TABLE + 3, "{fitted:?}");
        assert_eq!(fitted[0], 1, "a tiny weight keeps one slot");
        let ratio = fitted[1] as f64 / fitted[2] as f64;
        assert!((2.99..3.01).contains(&ratio), "3:1 stays 3:1: {fitted:?}");
    }

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
    fn survivors_keep_exact_shares_and_nginx_order() {
        // {a:5, b:1, c:1} with a down: b and c alternate, one each per period.
        let set = weighted_set(&[5, 1, 1]);
        eject(&set, 0);
        let b = SmoothWeightedRoundRobin::new(set);
        assert_eq!(picks(&b, 6), [1, 2, 1, 2, 1, 2]);
        // Equal weights with a run of four down: before, the first survivor
        // after the run was picked twice per period.
        let set = weighted_set(&[1; 6]);
        for i in 0..4 {
            eject(&set, i);
        }
        let b = SmoothWeightedRoundRobin::new(set);
        assert_eq!(picks(&b, 4), [4, 5, 4, 5]);
    }

    #[test]
    fn jump_lands_where_reading_entry_by_entry_would() {
        // Equal weights too: there a wrapped candidate's distance can tie an
        // unwrapped one's if computed wrong.
        for weights in [[40, 1, 3, 2, 25], [1; 5]] {
            let b = SmoothWeightedRoundRobin::new(weighted_set(&weights));
            let len = b.order().len();
            for accepted in 1u32..32 {
                let accept = |i: usize| accepted & (1 << i) != 0;
                for from in 0..len {
                    let slow = (0..len).map(|k| (from + k) % len).find(|&p| accept(b.order()[p] as usize));
                    assert_eq!(b.jump(from, accept), slow, "{weights:?} {accepted:b} from {from}");
                    assert_eq!(b.next_entry(from, accept), slow, "{weights:?} {accepted:b} from {from}");
                }
            }
        }
    }

    #[test]
    fn a_heavy_endpoint_down_leaves_light_ones_their_ratio() {
        let set = weighted_set(&[100, 1, 2]);
        eject(&set, 0);
        let b = SmoothWeightedRoundRobin::new(set);
        let p = picks(&b, 300);
        assert_eq!(p.iter().filter(|&&i| i == 1).count(), 100);
        assert_eq!(p.iter().filter(|&&i| i == 2).count(), 200);
    }

    #[test]
    fn a_retry_moves_the_order_by_one_entry() {
        let b = SmoothWeightedRoundRobin::new(weighted_set(&[5, 1, 1]));
        assert_eq!(picks(&b, 2), [0, 0]);
        // b's entry, excluded by the retry: the next usable entry (a) serves it.
        assert_eq!(b.select(&PickContext::new().excluding(&[1])), Some(0));
        assert_eq!(picks(&b, 4), [0, 2, 0, 0], "the rest of the period as nginx orders it");
    }

    #[test]
    fn huge_weights_are_scaled_to_fit() {
        let b = SmoothWeightedRoundRobin::new(weighted_set(&[u32::MAX, 1, 70_000]));
        assert!(b.order().len() as u64 <= MAX_SWRR_TABLE + 3);
        assert!(b.order().contains(&1) && b.order().contains(&2));
    }
}
