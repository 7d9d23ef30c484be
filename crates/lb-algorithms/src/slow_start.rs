//! Slow start: ramps a newly added endpoint's share up over a window.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use core::time::Duration;

use lb_core::{Balancer, EndpointSet, PickContext, Report, Timestamp};

use crate::util::Rng;

/// A factor of 1.0 in the fixed point the ramp is stored in.
const FULL: u32 = 1 << 16;
/// How many times a pick may turn down a ramping endpoint before accepting.
const REJECTIONS: usize = 3;
/// The most exclusions a re-pick carries on the stack; beyond this it accepts.
const MAX_EXCLUDED: usize = 16;

/// Parameters of [`SlowStart`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStartConfig {
    /// How long a new endpoint takes to reach its full weight (default 30 s).
    pub window: Duration,
    /// The share of its weight a new endpoint starts from, in percent (Envoy's 10).
    pub min_weight_percent: u8,
    /// How fast the ramp rises (Envoy's `aggression`, default 1.0: linear).
    /// The factor at time fraction `t` of the window is `t^(1 / aggression)`:
    /// above 1 the newcomer gets traffic sooner, below 1 later. Zero,
    /// negative or NaN is taken as 1.0.
    pub aggression: f64,
}

impl Default for SlowStartConfig {
    fn default() -> Self {
        SlowStartConfig { window: Duration::from_secs(30), min_weight_percent: 10, aggression: 1.0 }
    }
}

/// Slow start (HAProxy `slowstart`, Envoy `slow_start_config`) around any
/// balancer: an endpoint added less than `window` ago gets a factor
/// `max(floor, time_factor^(1 / aggression))` of its share, where
/// `time_factor = max(age, 1 ms) / window` (Envoy's weight ramp; with the
/// default aggression 1.0 it ramps linearly to full).
///
/// A pick must not read a clock, so the factors live in atomics refreshed
/// off the pick path: by [`tick`](SlowStart::tick) (call it from a timer),
/// and by every [`observe`](Balancer::observe), which refreshes the reported
/// endpoint and one other in turn using `Report::at`. A pick asks the inner
/// balancer and, if its choice is still ramping with factor `f`, keeps it
/// with probability `f`, else asks again with that endpoint excluded (up to
/// three times). The ramping endpoint's share is thus scaled by about `f`
/// and the rest goes to the others in the inner algorithm's proportions; it
/// works the same over weighted round robin, least connections and P2C.
///
/// ```
/// use core::time::Duration;
/// use lb_algorithms::{RoundRobin, SlowStart, SlowStartConfig};
/// use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let old = EndpointSet::new([Endpoint::new("10.0.0.1:80".parse::<lb_core::Address>().unwrap())], Timestamp::ZERO);
/// let now = Timestamp::ZERO + Duration::from_secs(60);
/// let set = old.replaced(
///     ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     now, // 10.0.0.2 joins now
/// );
/// let slow = SlowStart::new(RoundRobin::new(set), SlowStartConfig::default(), now);
/// let new_share = (0..10_000).filter(|_| slow.select(&PickContext::new()) == Some(1)).count();
/// assert!(new_share < 1_500, "starts near the 10 % floor: {new_share}");
/// slow.tick(now + Duration::from_secs(30));
/// let new_share = (0..10_000).filter(|_| slow.select(&PickContext::new()) == Some(1)).count();
/// assert_eq!(new_share, 5_000, "full weight after the window");
/// ```
#[derive(Debug)]
pub struct SlowStart<B> {
    inner: B,
    window_nanos: u64,
    floor: u32,
    /// `1 / aggression`, or `None` for a linear ramp (computed in integers).
    exponent: Option<f64>,
    factors: Vec<AtomicU32>,
    rng: Rng,
    refresh_cursor: AtomicUsize,
}

impl<B: Balancer> SlowStart<B> {
    /// Wraps `inner`, with the ramps computed for time `now`.
    pub fn new(inner: B, config: SlowStartConfig, now: Timestamp) -> Self {
        let floor = (u64::from(config.min_weight_percent.min(100)) * u64::from(FULL) / 100) as u32;
        let factors = inner.endpoints().iter().map(|_| AtomicU32::new(FULL)).collect();
        let window_nanos = u64::try_from(config.window.as_nanos()).unwrap_or(u64::MAX);
        let aggression = config.aggression;
        let exponent =
            (aggression > 0.0 && aggression.is_finite() && aggression != 1.0).then(|| 1.0 / aggression);
        let slow = SlowStart {
            inner,
            window_nanos,
            floor,
            exponent,
            factors,
            rng: Rng::default(),
            refresh_cursor: AtomicUsize::new(0),
        };
        slow.tick(now);
        slow
    }

    /// The wrapped balancer.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Recomputes every endpoint's ramp for time `now`, then lets the
    /// wrapped balancer do its own upkeep. O(n); off the pick path.
    pub fn tick(&self, now: Timestamp) {
        for i in 0..self.factors.len() {
            self.refresh(i, now);
        }
        self.inner.tick(now);
    }

    /// Makes the ramp's draws a fixed sequence of `seed` (see
    /// [`AnyBalancer::seed_rng`](crate::AnyBalancer::seed_rng) to seed the
    /// wrapped balancer too).
    pub fn seed_rng(&self, seed: u64) {
        self.rng.seed(seed);
    }

    /// The current factor of endpoint `index`, from the floor to 1.0.
    pub fn factor(&self, index: usize) -> Option<f64> {
        self.factors.get(index).map(|f| f64::from(f.load(Ordering::Relaxed)) / f64::from(FULL))
    }

    fn refresh(&self, index: usize, now: Timestamp) {
        let (Some(member), Some(slot)) = (self.inner.endpoints().get(index), self.factors.get(index)) else {
            return;
        };
        let age =
            u64::try_from(now.saturating_since(member.state().added_at()).as_nanos()).unwrap_or(u64::MAX);
        slot.store(self.factor_at(age), Ordering::Relaxed);
    }

    /// The factor (fixed point, `FULL` = 1.0) of an endpoint `age_nanos` old:
    /// Envoy's `max(min_weight, time_factor^(1 / aggression))`, with
    /// `time_factor = max(age, 1 ms) / window`.
    fn factor_at(&self, age_nanos: u64) -> u32 {
        if age_nanos >= self.window_nanos {
            return FULL;
        }
        let age = age_nanos.max(1_000_000).min(self.window_nanos);
        let ramp = match self.exponent {
            None => (u128::from(age) * u128::from(FULL) / u128::from(self.window_nanos)) as u32,
            Some(exponent) => {
                let time_factor = age as f64 / self.window_nanos as f64;
                (libm::pow(time_factor, exponent) * f64::from(FULL)) as u32
            }
        };
        ramp.clamp(self.floor, FULL)
    }

    /// Whether a ramping pick is kept this time.
    #[inline]
    fn keeps(&self, index: usize) -> bool {
        let factor = self.factors.get(index).map_or(FULL, |f| f.load(Ordering::Relaxed));
        factor >= FULL || ((self.rng.next() >> 48) as u32) < factor
    }
}

impl<B: Balancer> Balancer for SlowStart<B> {
    fn endpoints(&self) -> &EndpointSet {
        self.inner.endpoints()
    }

    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let first = self.inner.select(ctx)?;
        if self.keeps(first) || ctx.exclude().len() + REJECTIONS > MAX_EXCLUDED {
            return Some(first);
        }
        // Re-ask with the turned-down endpoints excluded, on the stack.
        let mut excluded = [0usize; MAX_EXCLUDED];
        let given = ctx.exclude().len();
        excluded[..given].copy_from_slice(ctx.exclude());
        let mut current = first;
        for len in given + 1..=given + REJECTIONS {
            excluded[len - 1] = current;
            // The caller's context with more exclusions: same key, same panic mode.
            let retry = ctx.excluding(&excluded[..len]);
            match self.inner.select(&retry) {
                Some(next) if self.keeps(next) => return Some(next),
                Some(next) => current = next,
                None => return Some(current),
            }
        }
        Some(current)
    }

    fn observe(&self, index: usize, report: &Report) {
        self.inner.observe(index, report);
        self.refresh(index, report.at);
        let n = self.factors.len();
        if n > 0 {
            self.refresh(self.refresh_cursor.fetch_add(1, Ordering::Relaxed) % n, report.at);
        }
    }

    fn tick(&self, now: Timestamp) {
        SlowStart::tick(self, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::set_of;
    use crate::{LeastConnections, PowerOfTwoChoices, RoundRobin};
    use lb_core::{Endpoint, HealthFlag, Outcome};

    fn with_newcomer(now: Timestamp) -> EndpointSet {
        let old = set_of(3);
        let mut eps: Vec<Endpoint> = old.iter().map(|m| m.endpoint().clone()).collect();
        eps.push(Endpoint::new("10.9.9.9:80".parse::<lb_core::Address>().unwrap()).with_id("ep-99999"));
        old.replaced(eps, now)
    }

    #[test]
    fn ramp_is_linear_from_the_floor() {
        let t0 = Timestamp::from_nanos(1_000_000_000_000);
        let slow = SlowStart::new(PowerOfTwoChoices::new(with_newcomer(t0)), SlowStartConfig::default(), t0);
        assert!((slow.factor(3).unwrap() - 0.1).abs() < 1e-4);
        assert_eq!(slow.factor(0), Some(1.0));
        slow.tick(t0 + Duration::from_secs(15));
        assert!((slow.factor(3).unwrap() - 0.5).abs() < 1e-4);
        let report =
            Report { outcome: Outcome::Success, latency: Duration::ZERO, at: t0 + Duration::from_secs(40) };
        slow.observe(3, &report);
        assert_eq!(slow.factor(3), Some(1.0), "observe refreshes the ramp");
    }

    #[test]
    fn the_ramp_s_draws_follow_its_seed() {
        // Round robin inside draws nothing: only the ramp's draws tell the runs apart.
        let t0 = Timestamp::from_nanos(1_000_000_000_000);
        let picks = |seed| {
            let newcomers = set_of(1).replaced(set_of(20).iter().map(|m| m.endpoint().clone()), t0);
            let slow = SlowStart::new(RoundRobin::new(newcomers), SlowStartConfig::default(), t0);
            slow.seed_rng(seed);
            (0..200).map(|_| slow.select(&PickContext::new()).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
    }

    #[test]
    fn reports_on_others_refresh_a_newcomer_in_turn() {
        // Only endpoint 0 is reported on; the rotating refresh still moves
        // the newcomer's ramp within one turn of the four endpoints.
        let t0 = Timestamp::from_nanos(1_000_000_000_000);
        let slow = SlowStart::new(RoundRobin::new(with_newcomer(t0)), SlowStartConfig::default(), t0);
        let report =
            Report { outcome: Outcome::Success, latency: Duration::ZERO, at: t0 + Duration::from_secs(15) };
        for _ in 0..4 {
            slow.observe(0, &report);
        }
        assert!((slow.factor(3).unwrap() - 0.5).abs() < 1e-4, "{:?}", slow.factor(3));
    }

    #[test]
    fn a_pick_excluding_nearly_all_it_can_hold_is_served_without_turning_down() {
        // All but the first endpoint are new, so ramping; the caller already
        // excludes 14, leaving no room on the stack for three more turned down.
        let t0 = Timestamp::from_nanos(1_000_000_000_000);
        let newcomers = set_of(1).replaced(set_of(20).iter().map(|m| m.endpoint().clone()), t0);
        let slow = SlowStart::new(RoundRobin::new(newcomers), SlowStartConfig::default(), t0);
        assert!((slow.factor(5).unwrap() - 0.1).abs() < 1e-4, "ramping from the floor");
        let excluded: Vec<usize> = (0..MAX_EXCLUDED - REJECTIONS + 1).collect();
        for _ in 0..50 {
            let pick = slow.select(&PickContext::new().excluding(&excluded)).unwrap();
            assert!(!excluded.contains(&pick), "{pick}");
        }
    }

    #[test]
    fn a_pick_with_just_room_for_three_turned_down_still_turns_them_down() {
        // Endpoint 0 is old, the rest ramp at 10 %; the caller excludes 13,
        // which leaves exactly the three slots turning down needs.
        let t0 = Timestamp::from_nanos(1_000_000_000_000);
        let newcomers = set_of(1).replaced(set_of(20).iter().map(|m| m.endpoint().clone()), t0);
        let slow = SlowStart::new(RoundRobin::new(newcomers), SlowStartConfig::default(), t0);
        slow.seed_rng(7);
        let excluded: Vec<usize> = (1..=MAX_EXCLUDED - REJECTIONS).collect();
        let old_picks =
            (0..700).filter(|_| slow.select(&PickContext::new().excluding(&excluded)) == Some(0)).count();
        // Round robin walks past the excluded to the next eligible, so without
        // turning down 0 gets one turn in 20 (35); turned-down picks move on.
        assert!(old_picks > 80, "the old endpoint got {old_picks} of 700");
    }

    #[test]
    fn the_balancer_trait_s_tick_moves_the_ramp() {
        let t0 = Timestamp::from_nanos(1_000_000_000_000);
        let slow = SlowStart::new(RoundRobin::new(with_newcomer(t0)), SlowStartConfig::default(), t0);
        Balancer::tick(&slow, t0 + Duration::from_secs(15));
        assert!((slow.factor(3).unwrap() - 0.5).abs() < 1e-4, "{:?}", slow.factor(3));
    }

    #[test]
    fn aggression_bends_the_ramp_as_in_envoy() {
        let t0 = Timestamp::from_nanos(1_000_000_000_000);
        let config = |aggression| SlowStartConfig { aggression, ..SlowStartConfig::default() };
        let at_half = |aggression| {
            let slow = SlowStart::new(RoundRobin::new(with_newcomer(t0)), config(aggression), t0);
            slow.tick(t0 + Duration::from_secs(15));
            slow.factor(3).unwrap()
        };
        // 0.5^(1/2), 0.5^(1/1), 0.5^(1/0.5); the last one is under no floor (0.25 > 0.1).
        assert!((at_half(2.0) - core::f64::consts::FRAC_1_SQRT_2).abs() < 1e-4, "{}", at_half(2.0));
        assert!((at_half(1.0) - 0.5).abs() < 1e-4);
        assert!((at_half(0.5) - 0.25).abs() < 1e-4);
        assert!((at_half(-3.0) - 0.5).abs() < 1e-4, "a bad aggression is taken as 1");
        // Early on, a low aggression would go under the floor: the floor holds.
        let slow = SlowStart::new(RoundRobin::new(with_newcomer(t0)), config(0.5), t0);
        slow.tick(t0 + Duration::from_secs(3));
        assert!((slow.factor(3).unwrap() - 0.1).abs() < 1e-4, "0.1^2 = 0.01 is raised to the floor");
    }

    proptest::proptest! {
        /// The ramp stays within [floor, 1], never falls as time passes, is
        /// full at the window, and a higher aggression is never behind a lower one.
        #[test]
        fn the_ramp_is_monotone_and_bounded(
            a in 0u64..40_000, b in 0u64..40_000, low in 0.1f64..4.0, high in 0.1f64..4.0, floor in 0u8..100,
        ) {
            let (a, b) = (a.min(b) * 1_000_000, a.max(b) * 1_000_000);
            let (low, high) = (low.min(high), low.max(high));
            let make = |aggression| SlowStart::new(
                RoundRobin::new(set_of(1)),
                SlowStartConfig { window: Duration::from_secs(30), min_weight_percent: floor, aggression },
                Timestamp::ZERO,
            );
            let (slow, fast) = (make(low), make(high));
            let floor_fixed = u32::from(floor) * FULL / 100;
            for s in [&slow, &fast] {
                proptest::prop_assert!(s.factor_at(a) <= s.factor_at(b));
                proptest::prop_assert!((floor_fixed.saturating_sub(1)..=FULL).contains(&s.factor_at(a)));
                proptest::prop_assert_eq!(s.factor_at(30_000_000_000), FULL);
            }
            proptest::prop_assert!(slow.factor_at(a) <= fast.factor_at(a) + 1);
        }
    }

    #[test]
    fn newcomer_share_is_scaled_under_least_connections() {
        // The old endpoints joined at zero, long past their window.
        let t0 = Timestamp::from_nanos(100_000_000_000);
        let slow = SlowStart::new(LeastConnections::new(with_newcomer(t0)), SlowStartConfig::default(), t0);
        let new = (0..4_000).filter(|_| slow.select(&PickContext::new()) == Some(3)).count();
        // Least connections alone would start the scan on it every fourth pick
        // (a rejection consumes a turn, so every third): at 10 % about 130.
        assert!((50..260).contains(&new), "{new}");
        assert_eq!(slow.select(&PickContext::new().excluding(&[0, 1, 2])), Some(3), "still used when alone");
    }

    #[test]
    fn panic_mode_still_ramps_the_newcomer() {
        let t0 = Timestamp::from_nanos(100_000_000_000);
        let slow = SlowStart::new(RoundRobin::new(with_newcomer(t0)), SlowStartConfig::default(), t0);
        for m in slow.endpoints().iter() {
            m.state().set_flag(HealthFlag::ActiveCheckFailed, true);
        }
        assert_eq!(slow.select(&PickContext::new()), None);
        // The re-asks keep panic mode; before, they found nobody and kept the newcomer.
        let panic = PickContext::new().ignoring_health();
        let new = (0..4_000).filter(|_| slow.select(&panic) == Some(3)).count();
        assert!((20..260).contains(&new), "{new}");
    }
}
