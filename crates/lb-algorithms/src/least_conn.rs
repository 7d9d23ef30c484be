//! Weighted least connections (nginx `least_conn`): an O(n) scan, no sort.

use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::{Cursor, weights};

/// Picks the eligible endpoint with the fewest requests in flight per unit
/// of weight, `in_flight / weight`, compared exactly as
/// `in_flight_a * weight_b < in_flight_b * weight_a` (no floats).
///
/// Semantics of nginx `least_conn` (`ngx_http_upstream_least_conn_module.c`).
/// Ties are broken round robin: each scan starts one endpoint further on and
/// keeps the first minimum it meets (nginx breaks ties by weighted round
/// robin; ours ignores weight on a tie). Cost: one O(n) scan of relaxed
/// loads per pick.
///
/// ```
/// use lb_algorithms::LeastConnections;
/// use lb_core::{BalancerExt, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let lc = LeastConnections::new(set);
/// let busy = lc.pick(&PickContext::new()).unwrap(); // stays in flight
/// let next = lc.pick(&PickContext::new()).unwrap();
/// assert_ne!(busy.index(), next.index());
/// ```
#[derive(Debug)]
pub struct LeastConnections {
    set: EndpointSet,
    weights: Vec<u32>,
    cursor: Cursor,
}

impl LeastConnections {
    /// Least connections over `set`.
    pub fn new(set: EndpointSet) -> Self {
        let weights = weights(&set);
        let cursor = Cursor::new(set.len());
        LeastConnections { set, weights, cursor }
    }
}

impl Balancer for LeastConnections {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let members = self.set.members();
        let n = members.len();
        if n == 0 {
            return None;
        }
        let mut i = self.cursor.advance();
        let mut best: Option<(usize, u64, u64)> = None;
        for _ in 0..n {
            let state = members[i].state();
            if state.is_eligible() && !ctx.is_excluded(i) {
                let (load, weight) = (u64::from(state.in_flight()), u64::from(self.weights[i]));
                if best.is_none_or(|(_, best_load, best_weight)| load * best_weight < best_load * weight) {
                    best = Some((i, load, weight));
                }
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, weighted_set};
    use lb_core::BalancerExt;

    #[test]
    fn fills_by_weight() {
        let b = LeastConnections::new(weighted_set(&[3, 1]));
        let picks: Vec<_> = (0..8).map(|_| b.pick(&PickContext::new()).unwrap()).collect();
        let on_first = picks.iter().filter(|p| p.index() == 0).count();
        assert_eq!(on_first, 6, "in flight ends 6:2, matching weights 3:1");
    }

    #[test]
    fn ties_rotate_and_ineligible_skipped() {
        let b = LeastConnections::new(weighted_set(&[1, 1, 1]));
        let picks: Vec<_> = (0..3).map(|_| b.select(&PickContext::new()).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2]);
        eject(b.endpoints(), 1);
        assert!((0..10).all(|_| b.select(&PickContext::new()) != Some(1)));
        assert_eq!(b.select(&PickContext::new().excluding(&[0, 2])), None);
    }
}
