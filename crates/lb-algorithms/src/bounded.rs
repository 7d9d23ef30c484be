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
/// where `total_in_flight` and `W` are over the eligible endpoints, which is
/// the paper's `ceil(c * (m + 1) / n)` when weights are equal (HAProxy
/// `hash-balance-factor`, Envoy `hash_balance_factor`). `c` is kept as
/// an integer in thousandths, so the check is integer arithmetic. Since the
/// capacities sum to more than the load, some endpoint is always under
/// capacity, and no endpoint is ever taken at or over its cap.
///
/// Cost per pick: one O(n) pass summing in-flight counts, plus the walk.
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
        BoundedLoad { weights: weights(inner.endpoints()), inner, factor_milli }
    }

    /// The wrapped hash balancer.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// Selects for a key hash (as [`HashWalk::key_hash`] makes it).
    pub fn select_hash(&self, hash: u64, ctx: &PickContext<'_>) -> Option<usize> {
        let set = self.inner.endpoints();
        let (mut total, mut weight_sum) = (0u64, 0u64);
        for (i, m) in set.iter().enumerate() {
            if set.is_eligible(i, ctx) {
                total += u64::from(m.state().in_flight());
                weight_sum += u64::from(self.weights[i]);
            }
        }
        if weight_sum == 0 {
            return None;
        }
        let budget = u128::from(self.factor_milli) * u128::from(total + 1);
        let under_cap = |i: usize| {
            // in_flight < ceil(budget * w / (1000 W))  <=>  in_flight * 1000 W < budget * w
            let load = u128::from(set.members()[i].state().in_flight());
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
}
