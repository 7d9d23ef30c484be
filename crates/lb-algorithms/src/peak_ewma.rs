//! Peak-EWMA latency-aware P2C (Finagle `p2cPeakEwma`, tower `PeakEwma`).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use lb_core::{Balancer, EndpointSet, EndpointState, PickContext, Report, Timestamp};

use crate::p2c::two_choices;
use crate::util::{Rng, uniform, weights};

/// Parameters of [`PeakEwma`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwmaConfig {
    /// Time constant of the exponential decay (Finagle's default: 10 s).
    pub tau: Duration,
    /// The RTT assumed for an endpoint never measured (default 30 ms).
    pub default_rtt: Duration,
}

impl Default for PeakEwmaConfig {
    fn default() -> Self {
        PeakEwmaConfig { tau: Duration::from_secs(10), default_rtt: Duration::from_millis(30) }
    }
}

/// Power of two choices by peak-EWMA cost, the headline client algorithm.
///
/// Cost of an endpoint = `rtt_estimate * (in_flight + 1)` (divided by its
/// weight when weights differ); of two distinct random eligible endpoints the
/// cheaper wins. The estimate follows Finagle and tower: a sample above it
/// becomes the new estimate at once (the peak), a lower one is blended in
/// with `w = exp(-elapsed / tau)`: `est = est * w + rtt * (1 - w)`. An
/// endpoint never measured costs `default_rtt`.
///
/// Unlike tower (a mutex, a clock read and an `exp` on every load read), a
/// pick here reads two atomics per candidate and multiplies integers. All
/// the arithmetic happens in [`observe`](Balancer::observe), timed by
/// `Report::at`, and is stored in the endpoint's
/// [`EndpointState::latency_estimate`]. Estimates decay toward zero while
/// an endpoint is idle (so a once-slow endpoint gets probed again): each
/// `observe` also decays one other endpoint in turn, and an owner with a
/// timer can call [`decay_all`](PeakEwma::decay_all). Concurrent observes
/// of one endpoint may lose a sample (last write wins); the estimate stays valid.
///
/// ```
/// use core::time::Duration;
/// use lb_algorithms::PeakEwma;
/// use lb_core::{BalancerExt, Endpoint, EndpointSet, Outcome, PickContext, Report, Timestamp};
///
/// let set = EndpointSet::new(
///     ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let ewma = PeakEwma::new(set);
/// // Endpoint 0 answers in 500 ms once; from then on the 30 ms default of endpoint 1 wins.
/// let slow = ewma.pick(&PickContext::new().excluding(&[1])).unwrap();
/// slow.complete(Report { outcome: Outcome::Success, latency: Duration::from_millis(500), at: Timestamp::ZERO });
/// assert!((0..10).all(|_| ewma.pick(&PickContext::new()).unwrap().index() == 1));
/// ```
#[derive(Debug)]
pub struct PeakEwma {
    set: EndpointSet,
    weights: Vec<u32>,
    uniform: bool,
    tau_nanos: f64,
    default_rtt: u64,
    rng: Rng,
    decay_cursor: AtomicUsize,
}

impl PeakEwma {
    /// Peak-EWMA with tau 10 s and a default RTT of 30 ms.
    pub fn new(set: EndpointSet) -> Self {
        Self::with_config(set, PeakEwmaConfig::default())
    }

    /// Peak-EWMA with the given parameters (a zero tau is taken as 1 ns).
    pub fn with_config(set: EndpointSet, config: PeakEwmaConfig) -> Self {
        let weights = weights(&set);
        PeakEwma {
            uniform: uniform(&weights),
            weights,
            set,
            tau_nanos: (config.tau.as_nanos() as f64).max(1.0),
            default_rtt: u64::try_from(config.default_rtt.as_nanos()).unwrap_or(u64::MAX).max(1),
            rng: Rng::default(),
            decay_cursor: AtomicUsize::new(0),
        }
    }

    /// Makes the random draws a fixed sequence of `seed`, the same on every
    /// run and at every address: for simulations and tests. Concurrent
    /// pickers may then draw the same number; leave it unseeded in production.
    pub fn seed_rng(&self, seed: u64) {
        self.rng.seed(seed);
    }

    /// The current cost of endpoint `index`: its RTT estimate in nanoseconds
    /// times `in_flight + 1`, before weighting.
    pub fn cost(&self, index: usize) -> Option<u128> {
        self.set.get(index).map(|m| self.cost_of(m.state()))
    }

    #[inline]
    fn cost_of(&self, state: &EndpointState) -> u128 {
        let (estimate, _) = state.latency_estimate();
        let rtt = if estimate == 0 { self.default_rtt } else { estimate };
        u128::from(rtt) * u128::from(u64::from(state.in_flight()) + 1)
    }

    /// Decays every endpoint's estimate to `now`, for owners that tick on a timer.
    pub fn decay_all(&self, now: Timestamp) {
        for m in self.set.iter() {
            decay(m.state(), now, self.tau_nanos);
        }
    }
}

/// `exp(-elapsed / tau)`, the weight the old estimate keeps.
fn retained(elapsed: Duration, tau_nanos: f64) -> f64 {
    libm::exp(-(elapsed.as_nanos() as f64) / tau_nanos)
}

/// Lets an idle endpoint's estimate fall toward zero (never to the
/// "unmeasured" zero itself).
fn decay(state: &EndpointState, now: Timestamp, tau_nanos: f64) {
    let (estimate, at) = state.latency_estimate();
    if estimate == 0 || now <= at {
        return;
    }
    let next = (estimate as f64 * retained(now - at, tau_nanos)) as u64;
    state.set_latency_estimate(next.max(1), now);
}

/// The peak-EWMA update for one RTT sample taken at `now`.
pub(crate) fn updated_estimate(
    estimate: u64,
    at: Timestamp,
    rtt: u64,
    now: Timestamp,
    tau_nanos: f64,
) -> u64 {
    if estimate == 0 || rtt >= estimate {
        return rtt.max(1);
    }
    let w = retained(now.saturating_since(at), tau_nanos);
    ((estimate as f64) * w + (rtt as f64) * (1.0 - w)) as u64
}

impl Balancer for PeakEwma {
    fn endpoints(&self) -> &EndpointSet {
        &self.set
    }

    #[inline]
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let (a, b) = match two_choices(&self.set, &self.rng, ctx)? {
            (a, Some(b)) => (a, b),
            (a, None) => return Some(a),
        };
        let states = self.set.states();
        let (cost_a, cost_b) = (self.cost_of(&states[a]), self.cost_of(&states[b]));
        let a_wins = if self.uniform {
            cost_a <= cost_b
        } else {
            // cost_a / w_a <= cost_b / w_b, saturating (costs fit in 96 bits).
            cost_a.saturating_mul(u128::from(self.weights[b]))
                <= cost_b.saturating_mul(u128::from(self.weights[a]))
        };
        Some(if a_wins { a } else { b })
    }

    fn observe(&self, index: usize, report: &Report) {
        let members = self.set.members();
        let Some(member) = members.get(index) else { return };
        let state = member.state();
        let (estimate, at) = state.latency_estimate();
        let rtt = u64::try_from(report.latency.as_nanos()).unwrap_or(u64::MAX);
        let now = report.at.max(at);
        state.set_latency_estimate(updated_estimate(estimate, at, rtt, now, self.tau_nanos), now);
        // Spread the idle decay over observes: one other endpoint per report.
        let other = self.decay_cursor.fetch_add(1, Ordering::Relaxed) % members.len();
        if other != index {
            decay(members[other].state(), now, self.tau_nanos);
        }
    }

    /// Decays every idle estimate to `now`.
    fn tick(&self, now: Timestamp) {
        self.decay_all(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, set_of};
    use lb_core::{BalancerExt, Outcome};

    const MS: u64 = 1_000_000;

    fn report(latency_ms: u64, at_ms: u64) -> Report {
        Report {
            outcome: Outcome::Success,
            latency: Duration::from_millis(latency_ms),
            at: Timestamp::from_nanos(at_ms * MS),
        }
    }

    #[test]
    fn peaks_jump_and_decay_with_tau() {
        let tau = 10e9;
        let t = |ms: u64| Timestamp::from_nanos(ms * MS);
        assert_eq!(updated_estimate(0, t(0), 5 * MS, t(0), tau), 5 * MS, "first sample taken as is");
        assert_eq!(updated_estimate(5 * MS, t(0), 50 * MS, t(1), tau), 50 * MS, "peak jumps");
        // After exactly tau, the old estimate keeps 1/e of its weight.
        let after_tau = updated_estimate(50 * MS, t(0), 10 * MS, t(10_000), tau);
        let expected = 10.0 + 40.0 / core::f64::consts::E;
        assert!((after_tau as f64 / MS as f64 - expected).abs() < 0.01, "{after_tau}");
    }

    #[test]
    fn cost_is_the_estimate_times_in_flight_plus_one() {
        use lb_core::{BalancerExt, PickContext};
        let b = PeakEwma::new(set_of(2));
        let default_rtt = u128::from(30 * MS);
        assert_eq!(b.cost(0), Some(default_rtt), "never measured: the default RTT");
        b.observe(1, &report(7, 0));
        let held: Vec<_> = (0..3).map(|_| b.pick(&PickContext::new().excluding(&[0])).unwrap()).collect();
        assert_eq!(b.cost(1), Some(u128::from(7 * MS) * 4), "7 ms times three in flight plus one");
        drop(held);
        assert_eq!(b.cost(2), None, "no such endpoint");
    }

    #[test]
    fn observe_updates_state_and_idle_endpoints_decay() {
        let b = PeakEwma::with_config(
            set_of(2),
            PeakEwmaConfig { tau: Duration::from_secs(1), ..Default::default() },
        );
        b.observe(0, &report(100, 0));
        assert_eq!(b.endpoints().get(0).unwrap().state().latency_estimate().0, 100 * MS);
        // Observes of endpoint 1 twenty seconds later decay endpoint 0 in turn.
        b.observe(1, &report(5, 20_000));
        b.observe(1, &report(5, 20_000));
        assert!(b.endpoints().get(0).unwrap().state().latency_estimate().0 < MS);
        b.decay_all(Timestamp::from_nanos(40_000 * MS));
        assert!(b.cost(0).unwrap() >= 1 && b.cost(1).unwrap() < 5 * u128::from(MS));
    }

    #[test]
    fn weights_divide_the_cost() {
        // 20 ms on weight 3 costs 6.7 per unit; 10 ms on weight 1 costs 10.
        let b = PeakEwma::new(crate::testing::weighted_set(&[3, 1]));
        b.observe(0, &report(20, 0));
        b.observe(1, &report(10, 0));
        assert!((0..20).all(|_| b.select(&PickContext::new()) == Some(0)));
        // Unweighted, the same estimates go the other way.
        let unweighted = PeakEwma::new(set_of(2));
        unweighted.observe(0, &report(20, 0));
        unweighted.observe(1, &report(10, 0));
        assert!((0..20).all(|_| unweighted.select(&PickContext::new()) == Some(1)));
    }

    #[test]
    fn observes_of_one_endpoint_decay_each_other_in_turn() {
        let b = PeakEwma::with_config(
            set_of(3),
            PeakEwmaConfig { tau: Duration::from_secs(1), ..Default::default() },
        );
        for i in [1, 2] {
            b.observe(i, &report(100, 0));
        }
        // Three observes of endpoint 0, twenty time constants later: the
        // cursor passes over 0 itself, then decays 1, then 2.
        for _ in 0..3 {
            b.observe(0, &report(5, 20_000));
        }
        for i in [1, 2] {
            assert!(b.endpoints().get(i).unwrap().state().latency_estimate().0 < MS, "endpoint {i} decayed");
        }
    }

    #[test]
    fn prefers_fast_and_idle_and_skips_ejected() {
        let b = PeakEwma::new(set_of(2));
        b.observe(0, &report(1, 0));
        b.observe(1, &report(10, 0));
        assert!((0..20).all(|_| b.select(&PickContext::new()) == Some(0)));
        // Eleven requests in flight on the fast one make it costlier than 10 ms idle.
        let _held: Vec<_> = (0..11).map(|_| b.pick(&PickContext::new().excluding(&[1])).unwrap()).collect();
        assert_eq!(b.select(&PickContext::new()), Some(1));
        eject(b.endpoints(), 1);
        assert_eq!(b.select(&PickContext::new()), Some(0));
    }
}
