//! What every hash algorithm shares: a walk of fallback candidates per key,
//! and round robin when a request carries no key.

use lb_core::{Balancer, EndpointSet, PickContext};

use crate::util::{Distinct, Rotation};

/// A hash-based balancer that can list, for a key hash, its endpoints in
/// preference order: the owner first, then the fallbacks a retry or an
/// overloaded owner moves to (the ring walked clockwise, the Maglev table
/// read onward).
///
/// [`BoundedLoad`](crate::BoundedLoad) is generic over this trait.
pub trait HashWalk: Balancer {
    /// Hashes an affinity key the way this algorithm does.
    fn key_hash(&self, key: &[u8]) -> u64;

    /// Endpoint indices for `hash`, owner first. Indices may repeat; the walk
    /// is finite and visits every endpoint the structure holds. No walk
    /// allocates (tests/allocations.rs holds every algorithm to that).
    fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_;

    /// The distinct endpoints for `key` in failover order (owner first),
    /// eligible or not. Allocates a small bitset: use it to plan retries, not per pick.
    fn candidates(&self, key: &[u8]) -> Distinct<impl Iterator<Item = usize> + '_> {
        Distinct::new(self.walk(self.key_hash(key)), self.endpoints().len())
    }
}

/// The first eligible endpoint of a walk. `limit` bounds the steps.
#[inline]
pub(crate) fn first_eligible(
    walk: impl Iterator<Item = usize>,
    set: &EndpointSet,
    ctx: &PickContext<'_>,
) -> Option<usize> {
    walk.into_iter().find(|&i| set.is_eligible(i, ctx))
}

/// What a hash balancer does for a request without a key: round robin over
/// the eligible endpoints, so keyless traffic still spreads evenly.
pub(crate) type Keyless = Rotation;

/// Implements [`Balancer`] for a 64-bit hash balancer with fields `set` and
/// `keyless` and a method `select_hash(u64, &PickContext)`: keyed requests
/// hash with [`hash_key`](crate::hash_key), keyless ones go round robin.
macro_rules! keyed_balancer {
    ($balancer:ty) => {
        impl lb_core::Balancer for $balancer {
            fn endpoints(&self) -> &lb_core::EndpointSet {
                &self.set
            }

            // Always inlined, so a caller whose key length is known gets the
            // key hash specialised for it.
            #[inline(always)]
            fn select(&self, ctx: &lb_core::PickContext<'_>) -> Option<usize> {
                match ctx.key() {
                    Some(key) => self.select_hash($crate::hash_key(key), ctx),
                    None => self.keyless.select_out_of_line(&self.set, ctx),
                }
            }
        }
    };
}
pub(crate) use keyed_balancer;
