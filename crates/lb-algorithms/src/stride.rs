//! gRPC's static stride scheduler: O(1) expected work per pick, lock-free.

use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::{FastDiv, Position, weights};

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
/// Down endpoints' turns are passed over without being used, so shares
/// among the eligible endpoints keep their weights. When no eligible
/// endpoint has a turn in the next `n` sequence numbers (the heavy ones are
/// down), the pick computes each eligible endpoint's next turn instead of
/// stepping to it, O(n), and the sequence jumps there. A retry whose turn
/// belongs to an endpoint it excludes is served by the next turn it may
/// take, and moves the sequence by that one turn only.
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
    sequence: Position,
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
        StrideScheduler { set, scaled, sequence: Position::default(), len }
    }

    /// Whether endpoint `index` takes its slot in `generation`.
    #[inline]
    fn takes_slot(&self, index: usize, generation: u64) -> bool {
        let weight = u64::from(self.scaled[index]);
        (weight * generation + index as u64 * PHASE) % MAX_SCALED >= MAX_SCALED - weight
    }

    /// The first sequence number at or after `from` whose turn goes to an
    /// endpoint `accept` takes, and that endpoint. Steps through one
    /// generation's worth (with all eligible, the heaviest endpoint, never
    /// skipped, ends it; with similar weights about one step), then computes.
    #[inline]
    fn next_turn(&self, from: u32, accept: impl Fn(usize) -> bool) -> Option<(u32, usize)> {
        let n = self.scaled.len();
        let (mut index, mut generation) = (self.len.rem(from), u64::from(self.len.div(from)));
        for step in 0..n {
            if self.takes_slot(index, generation) && accept(index) {
                return Some((from.wrapping_add(step as u32), index));
            }
            index += 1;
            if index == n {
                (index, generation) = (0, generation + 1);
            }
        }
        self.jump(from, accept)
    }

    /// Where [`next_turn`](Self::next_turn) would stop if it kept stepping:
    /// each accepted endpoint's next turn, computed, the nearest wins. O(n).
    ///
    /// Endpoint i's slot value `(w g + phase) mod 65535` grows by `w` per
    /// generation and takes the slot in the last `w` values before it wraps:
    /// from value `x`, that is `(65534 - x) / w` generations on.
    #[cold]
    fn jump(&self, from: u32, accept: impl Fn(usize) -> bool) -> Option<(u32, usize)> {
        let n = self.scaled.len() as u64;
        let (first, generation) = (self.len.rem(from) as u64, u64::from(self.len.div(from)));
        let mut best: Option<(u64, usize)> = None;
        for index in 0..self.scaled.len() {
            if !accept(index) {
                continue;
            }
            let i = index as u64;
            let start = if i >= first { generation } else { generation + 1 };
            let weight = u64::from(self.scaled[index]);
            let value = (weight * start + i * PHASE) % MAX_SCALED;
            let sequence = (start + (MAX_SCALED - 1 - value) / weight) * n + i;
            if best.is_none_or(|(s, _)| sequence < s) {
                best = Some((sequence, index));
            }
        }
        // Past 2^32 the sequence wraps to a new first generation, as stepping does.
        best.map(|(sequence, index)| (sequence as u32, index))
    }
}

impl Balancer for StrideScheduler {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        if self.scaled.is_empty() {
            return None;
        }
        let states = self.set.states();
        // This pick's turn: the next one of an endpoint health lets take traffic.
        let (turn, mut pick) = self.next_turn(self.sequence.get(), |i| ctx.health_admits(&states[i]))?;
        if ctx.is_excluded(pick) {
            pick = self.next_turn(turn.wrapping_add(1), |i| self.set.is_eligible(i, ctx))?.1;
        }
        self.sequence.set(turn.wrapping_add(1));
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, weighted_set};

    /// gRPC C-core's `StaticStrideScheduler::Pick`, step by step: sequence
    /// number `s` offers endpoint `s % n` in generation `s / n`, which takes
    /// it unless `(w * generation + kOffset * index) % kMaxWeight <
    /// kMaxWeight - w`, with kMaxWeight 0xFFFF and kOffset half of it.
    fn c_core_picks(scaled: &[u16], picks: usize) -> Vec<usize> {
        let (max_weight, offset) = (0xFFFF_u64, 0xFFFF_u64 / 2);
        let n = scaled.len() as u64;
        (0u64..)
            .filter(|s| {
                let (index, generation) = (s % n, s / n);
                let w = u64::from(scaled[index as usize]);
                (w * generation + offset * index) % max_weight >= max_weight - w
            })
            .map(|s| (s % n) as usize)
            .take(picks)
            .collect()
    }

    #[test]
    fn picks_come_in_grpc_c_core_s_order() {
        let b = StrideScheduler::new(weighted_set(&[5, 1, 2, 3, 5]));
        let ours: Vec<usize> = (0..500).map(|_| b.select(&PickContext::new()).unwrap()).collect();
        assert_eq!(ours, c_core_picks(&b.scaled, 500));
    }

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
    fn jump_lands_where_stepping_would() {
        let b = StrideScheduler::new(weighted_set(&[1000, 1, 2, 7, 1000, 3]));
        let n = b.scaled.len() as u32;
        for accepted in 1u32..64 {
            let accept = |i: usize| accepted & (1 << i) != 0;
            for from in (0..60u32).chain([123_456, u32::MAX / 2]) {
                let stepped = (from..).find(|&s| {
                    let (i, g) = ((s % n) as usize, u64::from(s / n));
                    b.takes_slot(i, g) && accept(i)
                });
                let expected = stepped.map(|s| (s, (s % n) as usize));
                assert_eq!(b.jump(from, accept), expected, "{accepted:b} from {from}");
                assert_eq!(b.next_turn(from, accept), expected, "{accepted:b} from {from}");
            }
        }
    }

    #[test]
    fn light_survivors_keep_their_ratio_when_the_heavy_one_is_down() {
        // Before, most picks fell back to set order after 4n misses: about 1:1, not 1:2.
        let set = weighted_set(&[1000, 1, 2]);
        eject(&set, 0);
        let b = StrideScheduler::new(set);
        let twos = (0..3_000).filter(|_| b.select(&PickContext::new()) == Some(2)).count();
        assert!((1_950..=2_050).contains(&twos), "{twos}");
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
