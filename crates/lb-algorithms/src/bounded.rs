//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016).

use alloc::vec::Vec;

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::AlgorithmError;
use crate::util::weights;
use crate::walk::{HashWalk, first_eligible};

/// The common balance factor (HAProxy's `hash-balance-factor 125`).
pub const DEFAULT_BALANCE_FACTOR: f64 = 1.25;

/// Consistent hashing with bounded loads over any [`HashWalk`] (the ring or
/// Maglev): the key goes to its owner unless the owner is at capacity, in
/// which case it walks on to the first eligible endpoint under capacity.
///
/// Capacity of endpoint `i` = `ceil(c * (total_in_flight + 1) * w_i / W)`,
/// where `total_in_flight` counts the requests in flight on the set's
/// endpoints (whatever their health; an excluded endpoint's are left out)
/// and `W` is the weight of the eligible endpoints, which is
/// the paper's `ceil(c * (m + 1) / n)` when weights are equal (HAProxy
/// `hash-balance-factor`, Envoy `hash_balance_factor`). `c` is kept as
/// an integer in thousandths, so the check is integer arithmetic. Since the
/// capacities sum to more than the load, some endpoint is always under
/// capacity, and no endpoint is ever taken at or over its cap.
///
/// Cost per pick: O(1) for the load and weight (building one makes the set
/// keep both as totals, see [`EndpointSet::keep_totals`]), plus the walk.
/// Without a key, the inner balancer's keyless pick (round robin) is used.
///
/// ```
/// use lb_algorithms::{BoundedLoad, KetamaRing};
/// use lb_core::{Balancer, BalancerExt, Endpoint, EndpointSet, PickContext, Timestamp};
///
/// let set = EndpointSet::new(
///     (1..=4).map(|i| Endpoint::new(format!("10.0.0.{i}:80").parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let bounded = BoundedLoad::new(KetamaRing::new(set), 1.25).unwrap();
/// // One hot key: its requests spill over instead of piling onto one endpoint.
/// let held: Vec<_> = (0..8).map(|_| bounded.pick(&PickContext::new().with_key(b"hot")).unwrap()).collect();
/// let max = bounded.endpoints().iter().map(|m| m.state().in_flight()).max().unwrap();
/// assert!(max <= 3); // ceil(1.25 * 8 / 4) = 3
/// ```
#[derive(Debug)]
pub struct BoundedLoad<H> {
    inner: H,
    weights: Vec<u32>,
    /// The sum of `weights`: the eligible weight when health is ignored.
    total_weight: u64,
    factor_milli: u64,
}

impl<H: HashWalk> BoundedLoad<H> {
    /// Bounds `inner`'s loads with balance factor `c` (> 1; 1.25 is common).
    pub fn new(inner: H, balance_factor: f64) -> Result<Self, AlgorithmError> {
        if !(balance_factor > 1.0 && balance_factor <= 1_000.0) {
            return Err(AlgorithmError::BadBalanceFactor(balance_factor));
        }
        Ok(Self::build(inner, balance_factor))
    }

    /// No validation: the caller checked the factor (clamped to at least 1.001).
    pub(crate) fn build(inner: H, balance_factor: f64) -> Self {
        let factor_milli = (balance_factor * 1000.0).clamp(1001.0, 1_000_000.0) as u64;
        // From now on the set's lineage keeps the totals this reads per pick.
        inner.endpoints().keep_totals();
        let weights = weights(inner.endpoints());
        let total_weight = weights.iter().map(|&w| u64::from(w)).sum();
        BoundedLoad { weights, total_weight, inner, factor_milli }
    }

    /// The wrapped hash balancer.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// Selects for a key hash (as [`HashWalk::key_hash`] makes it).
    ///
    /// O(1) before the walk: the load and the eligible weight are the set's
    /// totals ([`EndpointSet::in_flight_total`], [`EndpointSet::eligible_weight`]),
    /// less what the excluded endpoints hold.
    pub fn select_hash(&self, hash: u64, ctx: &PickContext<'_>) -> Option<usize> {
        let set = self.inner.endpoints();
        let states = set.states();
        let mut total = set.in_flight_total();
        let mut weight_sum = if ctx.ignores_health() { self.total_weight } else { set.eligible_weight() };
        // A retry's few excluded endpoints take none of this request: leave them out.
        let exclude = ctx.exclude();
        for (k, &i) in exclude.iter().enumerate() {
            if let Some(state) = states.get(i).filter(|_| !exclude[..k].contains(&i)) {
                total = total.saturating_sub(u64::from(state.in_flight()));
                if ctx.health_admits(state) {
                    weight_sum = weight_sum.saturating_sub(u64::from(self.weights[i]));
                }
            }
        }
        if weight_sum == 0 {
            // Nothing eligible, or totals that follow a newer set than this one.
            return first_eligible(self.inner.walk(hash), set, ctx);
        }
        let budget = u128::from(self.factor_milli) * u128::from(total + 1);
        let under_cap = |i: usize| {
            // in_flight < ceil(budget * w / (1000 W))  <=>  in_flight * 1000 W < budget * w
            let load = u128::from(states[i].in_flight());
            load * 1000 * u128::from(weight_sum) < budget * u128::from(self.weights[i])
        };
        let mut walk = self.inner.walk(hash);
        walk.find(|&i| set.is_eligible(i, ctx) && under_cap(i))
            .or_else(|| first_eligible(self.inner.walk(hash), set, ctx))
    }
}

impl<H: HashWalk> Balancer for BoundedLoad<H> {
    fn endpoints(&self) -> &EndpointSet {
        self.inner.endpoints()
    }

    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        match ctx.key() {
            Some(key) => self.select_hash(self.inner.key_hash(key), ctx),
            None => self.inner.select(ctx),
        }
    }

    fn observe(&self, index: usize, report: &lb_core::Report) {
        self.inner.observe(index, report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eject, set_of};
    use crate::{KetamaRing, Maglev};
    use lb_core::BalancerExt;

    /// Idle, nothing is over its cap: a bounded load picks exactly what its
    /// hash algorithm picks, key by key (so its key hash is the algorithm's).
    fn agrees_when_idle<H: HashWalk + Balancer>(inner: H, again: H) {
        let bounded = BoundedLoad::new(again, 1.25).unwrap();
        for k in 0u32..300 {
            let key = k.to_le_bytes();
            let ctx = PickContext::new().with_key(&key);
            assert_eq!(bounded.select(&ctx), inner.select(&ctx), "key {k}");
        }
    }

    #[test]
    fn idle_bounded_loads_pick_what_their_hash_algorithm_picks() {
        use crate::{FnvRing, JumpHash, Rendezvous};
        agrees_when_idle(KetamaRing::new(set_of(7)), KetamaRing::new(set_of(7)));
        agrees_when_idle(Maglev::new(set_of(7)), Maglev::new(set_of(7)));
        agrees_when_idle(JumpHash::new(set_of(7)), JumpHash::new(set_of(7)));
        agrees_when_idle(Rendezvous::new(set_of(7)), Rendezvous::new(set_of(7)));
        agrees_when_idle(FnvRing::new(set_of(7)), FnvRing::new(set_of(7)));
    }

    #[test]
    fn factor_is_validated() {
        assert!(BoundedLoad::new(KetamaRing::new(set_of(2)), 1.0).is_err());
        assert!(BoundedLoad::new(KetamaRing::new(set_of(2)), f64::NAN).is_err());
        assert!(BoundedLoad::new(KetamaRing::new(set_of(2)), 1.5).is_ok());
    }

    #[test]
    fn a_hot_key_spills_but_never_past_the_cap() {
        let b = BoundedLoad::new(Maglev::new(set_of(5)), 1.25).unwrap();
        eject(b.endpoints(), 0);
        let mut held = Vec::new();
        for _ in 0..40 {
            let total: u64 = b.endpoints().iter().map(|m| u64::from(m.state().in_flight())).sum();
            let cap = (1.25 * (total + 1) as f64 / 4.0).ceil() as u32;
            let p = b.pick(&PickContext::new().with_key(b"hot")).unwrap();
            assert_ne!(p.index(), 0);
            assert!(p.member().state().in_flight() <= cap);
            held.push(p);
        }
        let owner = b.inner().select(&PickContext::new().with_key(b"hot")).unwrap();
        drop(held);
        assert_eq!(b.select(&PickContext::new().with_key(b"hot")), Some(owner), "idle: back to the owner");
    }

    #[test]
    fn loads_carried_into_a_new_set_still_bound_it_and_exclusions_leave_theirs_out() {
        let first = BoundedLoad::new(Maglev::new(set_of(4)), 1.25).unwrap();
        let held: Vec<_> =
            (0..6).map(|_| first.pick(&PickContext::new().with_key(b"hot")).unwrap()).collect();
        // The set changes while those requests run: one endpoint more.
        let next_set = first
            .endpoints()
            .replaced(set_of(5).iter().map(|m| m.endpoint().clone()), lb_core::Timestamp::ZERO);
        assert_eq!(next_set.in_flight_total(), 6, "the requests carried over");
        let b = BoundedLoad::new(Maglev::new(next_set), 1.25).unwrap();
        let busiest = (0..5).max_by_key(|&i| b.endpoints().get(i).unwrap().state().in_flight()).unwrap();
        let mut more = Vec::new();
        for _ in 0..10 {
            let exclude = [busiest];
            let ctx = PickContext::new().with_key(b"hot").excluding(&exclude);
            let others: u64 = b.endpoints().iter().map(|m| u64::from(m.state().in_flight())).sum::<u64>()
                - u64::from(b.endpoints().get(busiest).unwrap().state().in_flight());
            let cap = (1.25 * (others + 1) as f64 / 4.0).ceil() as u32;
            let p = b.pick(&ctx).unwrap();
            assert_ne!(p.index(), busiest);
            assert!(p.member().state().in_flight() <= cap, "{} > {cap}", p.member().state().in_flight());
            more.push(p);
        }
        drop((held, more));
        assert_eq!(b.endpoints().in_flight_total(), 0);
    }
}
