//! Plain round robin: one atomic cursor, weights ignored.

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::Rotation;

/// Round robin over the endpoints in set order, ignoring weights.
///
/// One wait-free cursor step per pick (a relaxed load and store: exact on
/// one thread, round robin up to an occasional repeat when two threads pick
/// at the same instant). A down endpoint is passed over without using a
/// turn, so the others share evenly while it is down (each of the eligible
/// `m` gets exactly one pick in every `m`, as nginx gives); a retry whose
/// turn lands on an endpoint it excludes is served by the next one and moves
/// the rotation by that one pick only. Use
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
/// // With the first one ejected, the other two alternate.
/// rr.endpoints().get(0).unwrap().state().set_flag(lb_core::HealthFlag::Ejected, true);
/// let picks: Vec<_> = (0..4).map(|_| rr.select(&PickContext::new()).unwrap()).collect();
/// assert_eq!(picks, [1, 2, 1, 2]);
/// ```
#[derive(Debug)]
pub struct RoundRobin {
    set: EndpointSet,
    rotation: Rotation,
}

impl RoundRobin {
    /// Round robin over `set`, starting at its first endpoint.
    pub fn new(set: EndpointSet) -> Self {
        RoundRobin { set, rotation: Rotation::default() }
    }
}

impl Balancer for RoundRobin {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        self.rotation.select_inlined(&self.set, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, set_of, weighted_set};
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
    fn survivors_of_an_ejection_alternate() {
        // Before: the ejected endpoint's turn went to its neighbour, b2 b2 b3.
        let rr = RoundRobin::new(set_of(3));
        eject(rr.endpoints(), 0);
        let picks: Vec<usize> = (0..6).map(|_| rr.select(&PickContext::new()).unwrap()).collect();
        assert_eq!(picks, [1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn a_retry_moves_the_rotation_by_its_one_pick() {
        let rr = RoundRobin::new(set_of(4));
        let ctx = PickContext::new();
        assert_eq!([0, 1].map(|_| rr.select(&ctx).unwrap()), [0, 1]);
        // Endpoint 2's turn, but the retry excludes it: 3 serves it.
        assert_eq!(rr.select(&PickContext::new().excluding(&[2])), Some(3));
        // Everybody else goes on as if the retry had been an ordinary pick.
        assert_eq!([0; 4].map(|_| rr.select(&ctx).unwrap()), [3, 0, 1, 2]);
        // A pick that finds nothing moves nothing.
        assert_eq!(rr.select(&PickContext::new().excluding(&[0, 1, 2, 3])), None);
        assert_eq!(rr.select(&ctx), Some(3));
    }

    #[test]
    fn panic_mode_rotates_over_every_endpoint() {
        let rr = RoundRobin::new(set_of(3));
        for i in 0..3 {
            eject(rr.endpoints(), i);
        }
        assert_eq!(rr.select(&PickContext::new()), None);
        let panic = PickContext::new().ignoring_health();
        assert_eq!([0; 4].map(|_| rr.select(&panic).unwrap()), [0, 1, 2, 0]);
        assert_eq!(rr.select(&panic.excluding(&[1])), Some(2));
    }

    #[test]
    fn empty_and_ignores_weights() {
        assert_eq!(RoundRobin::new(EndpointSet::empty()).select(&PickContext::new()), None);
        let rr = RoundRobin::new(weighted_set(&[5, 1]));
        let ones = (0..10).filter(|_| rr.select(&PickContext::new()) == Some(1)).count();
        assert_eq!(ones, 5);
    }
}
