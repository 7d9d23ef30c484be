//! Plain round robin: one atomic cursor, weights ignored.

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::{Cursor, next_eligible};

/// Round robin over the endpoints in set order, ignoring weights.
///
/// One wait-free cursor step per pick (a relaxed load and store: exact on
/// one thread, round robin up to an occasional repeat when two threads pick
/// at the same instant); an ineligible endpoint is skipped by walking
/// forward to the next eligible one. Use
/// [`SmoothWeightedRoundRobin`](crate::SmoothWeightedRoundRobin) when weights differ.
///
/// ```
/// use lb_algorithms::RoundRobin;
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let rr = RoundRobin::new(set);
/// let picks: Vec<_> = (0..4).map(|_| rr.select(&PickContext::new()).unwrap()).collect();
/// assert_eq!(picks, [0, 1, 2, 0]);
/// ```
#[derive(Debug)]
pub struct RoundRobin {
    set: EndpointSet,
    cursor: Cursor,
}

impl RoundRobin {
    /// Round robin over `set`, starting at its first endpoint.
    pub fn new(set: EndpointSet) -> Self {
        let cursor = Cursor::new(set.len());
        RoundRobin { set, cursor }
    }
}

impl Balancer for RoundRobin {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        if self.set.is_empty() {
            return None;
        }
        let start = self.cursor.advance();
        if self.set.is_eligible(start, ctx) {
            return Some(start);
        }
        next_eligible(&self.set, start + 1, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{set_of, weighted_set};
    use alloc::vec::Vec;
    use lb_core::HealthFlag;

    #[test]
    fn cycles_and_skips_ineligible() {
        let rr = RoundRobin::new(set_of(3));
        let ctx = PickContext::new();
        assert_eq!([0, 1, 2, 0].map(|_| rr.select(&ctx).unwrap()), [0, 1, 2, 0]);
        rr.endpoints().get(2).unwrap().state().set_flag(HealthFlag::Ejected, true);
        let picks: Vec<usize> = (0..6).map(|_| rr.select(&ctx).unwrap()).collect();
        assert!(!picks.contains(&2));
        assert_eq!(rr.select(&PickContext::new().excluding(&[0, 1])), None);
    }

    #[test]
    fn empty_and_ignores_weights() {
        assert_eq!(RoundRobin::new(EndpointSet::empty()).select(&PickContext::new()), None);
        let rr = RoundRobin::new(weighted_set(&[5, 1]));
        let ones = (0..10).filter(|_| rr.select(&PickContext::new()) == Some(1)).count();
        assert_eq!(ones, 5);
    }
}
