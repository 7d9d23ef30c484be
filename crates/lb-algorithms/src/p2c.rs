//! Power of two choices over requests in flight (Envoy least request, gRPC A48).

use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, EndpointState, PickContext};

use crate::util::{Rng, next_eligible, uniform, weights};

/// How many times a choice is redrawn while it lands on an ineligible
/// endpoint, before drawing among the eligible endpoints alone. With a third
/// down, that fallback (O(n)) serves about one pick in 10^4.
const REDRAWS: usize = 8;

/// Draws two distinct eligible endpoints uniformly at random. Returns one
/// alone only when exactly one is eligible, `None` when none is.
///
/// Distinctness is by construction (the second draw skips the first
/// index), avoiding Envoy's repeated-host bug (envoy#20420). An ineligible
/// choice is redrawn on its own; redrawing until eligible keeps the pair
/// uniform over the eligible endpoints.
#[inline(always)]
pub(crate) fn two_choices(
    set: &EndpointSet,
    rng: &Rng,
    ctx: &PickContext<'_>,
) -> Option<(usize, Option<usize>)> {
    let n = set.len();
    if n < 2 {
        return set.is_eligible(0, ctx).then_some((0, None));
    }
    let states = set.states();
    let r = rng.next();
    // High and low halves give two independent draws from one random word.
    let first = draw(r >> 32, n);
    let second = draw_other(first, r & 0xFFFF_FFFF, n);
    // The common case, both healthy and nothing excluded, costs two flag loads.
    let (a, b) = (&states[first], &states[second]);
    if ctx.health_admits(a) && ctx.health_admits(b) && ctx.exclude().is_empty() {
        return Some((first, Some(second)));
    }
    let Some(first) = eligible_or_redrawn(set, ctx, first, || draw(rng.next() >> 32, n)) else {
        return two_of_the_eligible(set, rng, ctx);
    };
    if n == 2 {
        let other = 1 - first;
        return Some((first, set.is_eligible(other, ctx).then_some(other)));
    }
    // `second` was drawn apart from the old first; while it is eligible and
    // not the new first, it is still a uniform choice among the others.
    let second = if second == first { draw_other(first, rng.next() & 0xFFFF_FFFF, n) } else { second };
    match eligible_or_redrawn(set, ctx, second, || draw_other(first, rng.next() & 0xFFFF_FFFF, n)) {
        Some(second) => Some((first, Some(second))),
        None => two_of_the_eligible(set, rng, ctx),
    }
}

/// `index` if eligible, else the first eligible of up to [`REDRAWS`] fresh draws.
#[inline]
fn eligible_or_redrawn(
    set: &EndpointSet,
    ctx: &PickContext<'_>,
    index: usize,
    mut draw_again: impl FnMut() -> usize,
) -> Option<usize> {
    if set.is_eligible(index, ctx) {
        return Some(index);
    }
    (0..REDRAWS).map(|_| draw_again()).find(|&i| set.is_eligible(i, ctx))
}

/// An index in `0..n` from 32 random bits.
#[inline(always)]
fn draw(bits: u64, n: usize) -> usize {
    ((bits * n as u64) >> 32) as usize
}

/// An index in `0..n` other than `taken`, from 32 random bits.
#[inline(always)]
fn draw_other(taken: usize, bits: u64, n: usize) -> usize {
    let offset = draw(bits, n - 1);
    if offset >= taken { offset + 1 } else { offset }
}

/// Two distinct endpoints drawn uniformly among the eligible ones alone:
/// count them, draw two ranks, find them. O(n), for when most draws miss;
/// a scan from the last draw instead would favour whoever follows a run of
/// down endpoints.
#[cold]
fn two_of_the_eligible(
    set: &EndpointSet,
    rng: &Rng,
    ctx: &PickContext<'_>,
) -> Option<(usize, Option<usize>)> {
    let eligible = || (0..set.len()).filter(|&i| set.is_eligible(i, ctx));
    let m = eligible().count();
    let r = rng.next();
    let first = draw(r >> 32, m);
    let second = draw_other(first, r & 0xFFFF_FFFF, m.max(1));
    let (low, high) = (first.min(second), first.max(second));
    let mut ranked = eligible();
    match (ranked.nth(low), ranked.nth(high - low - 1)) {
        (Some(a), Some(b)) => Some(if first < second { (a, Some(b)) } else { (b, Some(a)) }),
        // One eligible endpoint (or health changed between the passes).
        _ => next_eligible(set, 0, ctx).map(|a| (a, next_eligible(set, a + 1, ctx).filter(|&b| b != a))),
    }
}

/// Power of two choices: draw two distinct eligible endpoints at random and
/// take the one with fewer requests in flight (Envoy `LEAST_REQUEST` with
/// `choice_count: 2`; gRPC `least_request`, gRFC A48; Mitzenmacher 2001).
///
/// With unequal weights the comparison uses Envoy's effective weight
/// `weight / (in_flight + 1)^active_request_bias` and takes the larger.
/// With bias 1.0 (the default) this is compared exactly in integers; another
/// bias costs two `pow` calls per pick. Bias 0 compares weights alone.
/// Choices are drawn uniformly, as in Envoy's P2C.
///
/// ```
/// use lb_algorithms::PowerOfTwoChoices;
/// use lb_core::{BalancerExt, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let p2c = PowerOfTwoChoices::new(set);
/// let busy = p2c.pick(&PickContext::new()).unwrap(); // stays in flight
/// // With two endpoints both are always drawn, so the idle one wins.
/// assert_ne!(p2c.pick(&PickContext::new()).unwrap().index(), busy.index());
/// ```
#[derive(Debug)]
pub struct PowerOfTwoChoices {
    set: EndpointSet,
    weights: Vec<u32>,
    uniform: bool,
    bias: f64,
    /// `bias == 1.0`: the comparison in integers.
    linear: bool,
    rng: Rng,
}

impl PowerOfTwoChoices {
    /// P2C with Envoy's default `active_request_bias` of 1.0.
    pub fn new(set: EndpointSet) -> Self {
        Self::with_bias(set, 1.0)
    }

    /// P2C with the given `active_request_bias` (negative, infinite or NaN
    /// is taken as 1.0).
    pub fn with_bias(set: EndpointSet, active_request_bias: f64) -> Self {
        let weights = weights(&set);
        let uniform = uniform(&weights);
        let valid = active_request_bias.is_finite() && active_request_bias >= 0.0;
        let bias = if valid { active_request_bias } else { 1.0 };
        PowerOfTwoChoices { set, weights, uniform, bias, linear: bias == 1.0, rng: Rng::default() }
    }

    /// Makes the random draws a fixed sequence of `seed`, the same on every
    /// run and at every address: for simulations and tests. Concurrent
    /// pickers may then draw the same number; leave it unseeded in production.
    pub fn seed_rng(&self, seed: u64) {
        self.rng.seed(seed);
    }

    /// The two candidates a pick would compare now (the second is `None`
    /// when only one endpoint is eligible). Exposed for tests and tracing.
    pub fn choices(&self, ctx: &PickContext<'_>) -> Option<(usize, Option<usize>)> {
        two_choices(&self.set, &self.rng, ctx)
    }

    /// Whether `a` is at least as good as `b`.
    #[inline]
    fn prefers(&self, a: usize, b: usize) -> bool {
        let states = self.set.states();
        self.better(a, &states[a], b, &states[b]) == a
    }

    /// The better of `a` and `b` (`a` on a tie), with their states at hand.
    /// Every path ends in the choice itself, so no value outlives the call
    /// to the biased comparison and the inline pick saves no registers.
    #[inline(always)]
    fn better(&self, a: usize, state_a: &EndpointState, b: usize, state_b: &EndpointState) -> usize {
        let (load_a, load_b) = (u64::from(state_a.in_flight()), u64::from(state_b.in_flight()));
        if self.uniform {
            return if load_a <= load_b { a } else { b };
        }
        let (wa, wb) = (u64::from(self.weights[a]), u64::from(self.weights[b]));
        if self.linear {
            // wa / (la + 1) >= wb / (lb + 1)
            let a_wins = u128::from(wa) * u128::from(load_b + 1) >= u128::from(wb) * u128::from(load_a + 1);
            if a_wins { a } else { b }
        } else {
            self.better_biased((a, wa, load_a), (b, wb, load_b))
        }
    }
}

impl Balancer for PowerOfTwoChoices {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    /// The common case inline: two draws, both eligible, nothing excluded.
    /// Anything else (a draw lands on a down endpoint, a retry excludes
    /// some, fewer than two endpoints) starts over out of line in
    /// `two_choices`, whose pairs are uniform over the eligible endpoints
    /// like the accepted ones here, so the mix stays uniform.
    ///
    /// Always inline: those few dozen instructions are the whole pick, and
    /// a call around them cost a tenth more in the benchmark.
    #[inline(always)]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let states = self.set.states();
        let n = states.len();
        if n >= 2 && ctx.exclude().is_empty() {
            let r = self.rng.next();
            let first = draw(r >> 32, n);
            let second = draw_other(first, r & 0xFFFF_FFFF, n);
            if let (Some(a), Some(b)) = (states.get(first), states.get(second)) {
                let (a, b): (&EndpointState, &EndpointState) = (a, b);
                if ctx.health_admits(a) && ctx.health_admits(b) {
                    return Some(self.better(first, a, second, b));
                }
            }
        }
        self.select_slow(ctx)
    }
}

impl PowerOfTwoChoices {
    /// The better of two `(index, weight, load)` under a bias other than 1:
    /// two `pow` calls, kept out of line so the common comparisons stay small.
    #[inline(never)]
    fn better_biased(&self, (a, wa, load_a): (usize, u64, u64), (b, wb, load_b): (usize, u64, u64)) -> usize {
        let effective = |w: u64, l: u64| w as f64 / libm::pow(l as f64 + 1.0, self.bias);
        if effective(wa, load_a) >= effective(wb, load_b) { a } else { b }
    }

    /// Every pick the inline path of `select` does not finish.
    #[cold]
    #[inline(never)]
    fn select_slow(&self, ctx: &PickContext<'_>) -> Option<usize> {
        match two_choices(&self.set, &self.rng, ctx)? {
            (a, Some(b)) => Some(if self.prefers(a, b) { a } else { b }),
            (a, None) => Some(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, set_of, weighted_set};
    use lb_core::BalancerExt;

    #[test]
    fn a_weighted_pair_with_equal_load_per_weight_is_a_tie() {
        // Weight 1 idle against weight 2 with one in flight: 1/1 = 2/2, so
        // each is at least as good as the other.
        let p2c = PowerOfTwoChoices::new(weighted_set(&[1, 2]));
        let ctx = PickContext::new().excluding(&[0]);
        let first = p2c.pick(&ctx).unwrap();
        assert!(p2c.prefers(0, 1) && p2c.prefers(1, 0));
        let second = p2c.pick(&ctx).unwrap();
        assert!(p2c.prefers(0, 1) && !p2c.prefers(1, 0), "2/3 is worse than 1/1");
        drop((first, second));
    }

    #[test]
    fn a_negative_infinite_or_nan_bias_is_taken_as_one() {
        // Bias 1: weight 1 idle ties weight 2 with one in flight (1/1 = 2/2).
        for bias in [-1.0, f64::INFINITY, f64::NAN] {
            let p2c = PowerOfTwoChoices::with_bias(weighted_set(&[1, 2]), bias);
            let held = p2c.pick(&PickContext::new().excluding(&[0])).unwrap();
            assert!(p2c.prefers(0, 1) && p2c.prefers(1, 0), "bias {bias}");
            drop(held);
        }
    }

    #[test]
    fn another_bias_divides_the_weight_by_the_load_to_that_power() {
        // Bias 2: weight 1 idle (1 / 1^2) ties weight 4 with one in flight (4 / 2^2).
        let p2c = PowerOfTwoChoices::with_bias(weighted_set(&[1, 4]), 2.0);
        let ctx = PickContext::new().excluding(&[0]);
        let first = p2c.pick(&ctx).unwrap();
        assert!(p2c.prefers(0, 1) && p2c.prefers(1, 0));
        let second = p2c.pick(&ctx).unwrap();
        assert!(p2c.prefers(0, 1) && !p2c.prefers(1, 0), "4 / 3^2 is worse than 1");
        drop((first, second));
    }

    #[test]
    fn choices_are_distinct_and_eligible() {
        let set = set_of(5);
        eject(&set, 2);
        let b = PowerOfTwoChoices::new(set);
        for _ in 0..1000 {
            let (a, second) = b.choices(&PickContext::new()).unwrap();
            let second = second.unwrap();
            assert_ne!(a, second);
            assert!(a != 2 && second != 2);
        }
        assert_eq!(b.choices(&PickContext::new().excluding(&[0, 1, 3])), Some((4, None)));
        assert_eq!(b.select(&PickContext::new().excluding(&[0, 1, 3, 4])), None);
    }

    #[test]
    fn pairs_are_uniform_over_survivors_when_most_are_down() {
        // Seven of ten down: before, most pairs were the two after the down run.
        let set = set_of(10);
        for i in [0, 1, 2, 3, 5, 6, 7] {
            eject(&set, i);
        }
        let b = PowerOfTwoChoices::new(set);
        let mut seen = [0usize; 10];
        for _ in 0..30_000 {
            let (a, second) = b.choices(&PickContext::new()).unwrap();
            seen[a] += 1;
            seen[second.unwrap()] += 1;
        }
        for i in [4, 8, 9] {
            assert!((19_000..=21_000).contains(&seen[i]), "{seen:?}");
        }
    }

    #[test]
    fn two_endpoints_are_always_compared_even_out_of_line() {
        // An exclusion of an index the set no longer has (a retry across a
        // shrink) sends the pick out of line; both endpoints still compete.
        let p2c = PowerOfTwoChoices::new(set_of(2));
        let busy = p2c.pick(&PickContext::new().excluding(&[0])).unwrap();
        assert_eq!(busy.index(), 1);
        for _ in 0..50 {
            assert_eq!(p2c.select(&PickContext::new().excluding(&[7])), Some(0), "the idle one");
        }
        drop(busy);
    }

    #[test]
    fn ties_among_a_few_survivors_go_to_each_alike() {
        // Three of 100 up: most picks miss all their redraws and draw among
        // the eligible alone. Idle endpoints tie, so each pick is the first
        // of its pair, which must be the first draw whichever ranks lower.
        let set = set_of(100);
        for i in (0..100).filter(|i| ![10, 50, 90].contains(i)) {
            eject(&set, i);
        }
        let b = PowerOfTwoChoices::new(set);
        let mut seen = [0usize; 100];
        for _ in 0..9_000 {
            seen[b.select(&PickContext::new()).unwrap()] += 1;
        }
        for i in [10, 50, 90] {
            assert!((2_700..=3_300).contains(&seen[i]), "{:?}", [seen[10], seen[50], seen[90]]);
        }
    }

    #[test]
    fn select_is_uniform_over_survivors_through_both_paths() {
        // Idle endpoints tie, so a pick is the first of its pair: with four of
        // ten down, about 4 picks in 10 start over out of line, and every
        // survivor must still get a sixth of them.
        let set = set_of(10);
        for i in [0, 2, 5, 7] {
            eject(&set, i);
        }
        let b = PowerOfTwoChoices::new(set);
        let mut seen = [0usize; 10];
        for _ in 0..60_000 {
            seen[b.select(&PickContext::new()).unwrap()] += 1;
        }
        for (i, &count) in seen.iter().enumerate() {
            let expected = if [0, 2, 5, 7].contains(&i) { 0..=0 } else { 9_400..=10_600 };
            assert!(expected.contains(&count), "{seen:?}");
        }
    }

    #[test]
    fn weighted_bias_formula() {
        // Effective weights 4/(l0+1) vs 1/(l1+1): after five picks in flight, always 4:1
        // (the fourth pick is a 1-vs-1 tie either way, the fifth settles it).
        let b = PowerOfTwoChoices::new(weighted_set(&[4, 1]));
        let _picks: Vec<_> = (0..5).map(|_| b.pick(&PickContext::new()).unwrap()).collect();
        let loads: Vec<u32> = b.endpoints().iter().map(|m| m.state().in_flight()).collect();
        assert_eq!(loads, [4, 1]);
        let zero_bias = PowerOfTwoChoices::with_bias(weighted_set(&[4, 1]), 0.0);
        let _busy: Vec<_> = (0..10).map(|_| zero_bias.pick(&PickContext::new()).unwrap()).collect();
        assert_eq!(zero_bias.endpoints().get(0).unwrap().state().in_flight(), 10, "bias 0 ignores load");
    }
}
