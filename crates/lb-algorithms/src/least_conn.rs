//! Weighted least connections (nginx `least_conn`): an O(n) scan, no sort.

use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::{Position, weights};

/// Picks the eligible endpoint with the fewest requests in flight per unit
/// of weight, `in_flight / weight`, compared exactly as
/// `in_flight_a * weight_b < in_flight_b * weight_a` (no floats).
///
/// Semantics of nginx `least_conn` (`ngx_http_upstream_least_conn_module.c`).
/// Ties are broken round robin: each scan starts one endpoint further on and
/// keeps the first minimum it meets (nginx breaks ties by weighted round
/// robin; ours ignores weight on a tie). The start moves past the first
/// endpoint health lets take traffic, so down endpoints pass their turn on
/// evenly and a retry's exclusions move it by one pick only, as in
/// [`RoundRobin`](crate::RoundRobin). Cost: one O(n) scan of relaxed
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
    start: Position,
}

impl LeastConnections {
    /// Least connections over `set`.
    pub fn new(set: EndpointSet) -> Self {
        let weights = weights(&set);
        LeastConnections { set, weights, start: Position::default() }
    }
}

impl Balancer for LeastConnections {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let states = self.set.states();
        let n = states.len();
        if n == 0 {
            return None;
        }
        let mut i = self.start.index_below(n);
        let mut turn = None;
        let mut best: Option<(usize, u64, u64)> = None;
        for _ in 0..n {
            let state = &states[i];
            if ctx.health_admits(state) {
                turn.get_or_insert(i);
                let (load, weight) = (u64::from(state.in_flight()), u64::from(self.weights[i]));
                let better =
                    |(_, best_load, best_weight): (usize, u64, u64)| load * best_weight < best_load * weight;
                if !ctx.is_excluded(i) && best.is_none_or(better) {
                    best = Some((i, load, weight));
                }
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
        let (pick, _, _) = best?;
        if let Some(turn) = turn {
            self.start.pass(turn);
        }
        Some(pick)
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

    #[test]
    fn ties_rotate_evenly_over_survivors() {
        // Before, a down endpoint's turn went to its neighbour: 1 1 2.
        let b = LeastConnections::new(weighted_set(&[1, 1, 1]));
        eject(b.endpoints(), 0);
        let picks: Vec<_> = (0..6).map(|_| b.select(&PickContext::new()).unwrap()).collect();
        assert_eq!(picks, [1, 2, 1, 2, 1, 2]);
        let all_down = LeastConnections::new(weighted_set(&[1, 1]));
        eject(all_down.endpoints(), 0);
        eject(all_down.endpoints(), 1);
        assert_eq!(all_down.select(&PickContext::new()), None);
        assert!(all_down.pick(&PickContext::new().ignoring_health()).is_some(), "panic mode");
    }
}
