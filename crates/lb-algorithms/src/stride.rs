//! gRPC's static stride scheduler: O(1) expected work per pick, lock-free.

use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::{Cursor, FastDiv, next_eligible, weights};

/// The scale weights are mapped onto; the heaviest endpoint gets it.
const MAX_SCALED: u64 = u16::MAX as u64;
/// Spreads the endpoints' phases so they do not all skip in the same generation.
const PHASE: u64 = MAX_SCALED / 2;

/// gRPC's static stride scheduler (C-core `static_stride_scheduler.cc`,
/// used by `weighted_round_robin`): weights scaled to 16 bits, one atomic
/// sequence number per pick.
///
/// The sequence walks the endpoints in order; in generation `g` endpoint `i`
/// is taken unless `(w_i * g + i * PHASE) mod 65535 < 65535 - w_i`, so over
/// time each is taken with probability `w_i / 65535`. The heaviest endpoint
/// is never skipped, so a pick inspects at most n entries, and with similar
/// weights about one. Unlike [`SmoothWeightedRoundRobin`](crate::SmoothWeightedRoundRobin)
/// it needs no table of size total-weight and builds in O(n); its
/// interleaving is less smooth. Shares match weights to 1/65535.
///
/// Ineligible endpoints are skipped like unlucky ones; after `4n` draws
/// without an eligible endpoint the pick scans forward in set order.
///
/// ```
/// use lb_algorithms::StrideScheduler;
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     [("a", 3), ("b", 1)].map(|(id, w)| {
///         Endpoint::new("10.0.0.1:80".parse::<lb_core::Address>().unwrap()).with_id(id).with_weight(w)
///     }),
///     Timestamp::ZERO,
/// );
/// let stride = StrideScheduler::new(set);
/// let a = (0..4000).filter(|_| stride.select(&PickContext::new()) == Some(0)).count();
/// assert!((2900..=3100).contains(&a));
/// ```
#[derive(Debug)]
pub struct StrideScheduler {
    set: EndpointSet,
    scaled: Vec<u16>,
    sequence: Cursor,
    len: FastDiv,
}

impl StrideScheduler {
    /// Scales `set`'s weights so the heaviest is 65535.
    pub fn new(set: EndpointSet) -> Self {
        let weights = weights(&set);
        let max = u64::from(weights.iter().copied().max().unwrap_or(1));
        let scaled = weights
            .iter()
            .map(|&w| (u64::from(w) * MAX_SCALED).div_ceil(max).clamp(1, MAX_SCALED) as u16)
            .collect();
        let len = FastDiv::new(set.len());
        StrideScheduler { set, scaled, sequence: Cursor::new(1), len }
    }
}

impl Balancer for StrideScheduler {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.scaled.len();
        if n == 0 {
            return None;
        }
        let mut index = 0;
        for _ in 0..4 * n {
            let seq = self.sequence.sequence();
            index = self.len.rem(seq);
            let generation = u64::from(self.len.div(seq));
            let weight = u64::from(self.scaled[index]);
            let phase = index as u64 * PHASE;
            if (weight * generation + phase) % MAX_SCALED < MAX_SCALED - weight {
                continue;
            }
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

    #[test]
    fn shares_follow_weights() {
        let b = StrideScheduler::new(weighted_set(&[5, 1, 1, 3]));
        let mut counts = [0usize; 4];
        for _ in 0..10_000 {
            counts[b.select(&PickContext::new()).unwrap()] += 1;
        }
        for (c, w) in counts.iter().zip([5, 1, 1, 3]) {
            let expected = 1000 * w;
            assert!(c.abs_diff(expected) * 50 < expected, "{counts:?}");
        }
    }

    #[test]
    fn skips_ineligible() {
        let set = weighted_set(&[9, 1]);
        eject(&set, 0);
        let b = StrideScheduler::new(set);
        assert!((0..100).all(|_| b.select(&PickContext::new()) == Some(1)));
        assert_eq!(b.select(&PickContext::new().excluding(&[1])), None);
    }
}
