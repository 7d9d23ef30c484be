//! "Not these endpoints": what one request tried, and the pick that falls
//! back through candidates when a breaker or a limit refuses one.
//!
//! The proxy and the client both do this around every request, so it lives
//! here once: the same fallback order, the same bounds, no allocation.

use alloc::sync::Arc;

use crate::balancer::{Balancer, OwnedPick, PickContext};

/// How many endpoints a request (or one pick) remembers. Past it an endpoint
/// may be tried twice, never an unbounded number of times.
const CAPACITY: usize = 16;

/// The endpoints (indices into one snapshot) a request must not be sent to
/// again. Inline and fixed in size, so a request allocates nothing for it.
///
/// ```
/// use lb_core::Exclusions;
///
/// let mut tried = Exclusions::new();
/// tried.push(2);
/// tried.push(2);
/// assert_eq!(tried.as_slice(), &[2]);
/// assert!(tried.contains(2) && !tried.contains(0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exclusions {
    indices: [usize; CAPACITY],
    len: usize,
}

impl Default for Exclusions {
    fn default() -> Self {
        Self::new()
    }
}

impl Exclusions {
    /// How many endpoints it holds at most.
    pub const CAPACITY: usize = CAPACITY;

    /// No endpoint excluded.
    pub const fn new() -> Self {
        Exclusions { indices: [usize::MAX; CAPACITY], len: 0 }
    }

    /// Excludes `index`. Already there, or full: nothing changes.
    pub fn push(&mut self, index: usize) {
        if self.contains(index) || self.len == CAPACITY {
            return;
        }
        self.indices[self.len] = index;
        self.len += 1;
    }

    /// Whether `index` is excluded.
    pub fn contains(&self, index: usize) -> bool {
        self.as_slice().contains(&index)
    }

    /// The excluded indices, in the order they came; what
    /// [`PickContext::excluding`] takes.
    pub fn as_slice(&self) -> &[usize] {
        &self.indices[..self.len]
    }

    /// How many are excluded.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// These followed by `other`'s (up to the capacity).
    fn and(mut self, other: &Exclusions) -> Exclusions {
        for &index in other.as_slice() {
            self.push(index);
        }
        self
    }
}

/// Picks an endpoint that `admit` accepts (a breaker's permit, an in-flight
/// limit), in this order:
///
/// 1. the balancer's choice among endpoints neither `tried` nor refused;
/// 2. when none is left and some were tried: among the tried ones again (a
///    fresh connection to an endpoint that failed beats failing the request);
/// 3. `None` when every candidate refused.
///
/// An endpoint `admit` refuses is never offered again in the same call, and
/// its pick is dropped (its in-flight count ends, the balancer learns
/// nothing). The call ends after at most one refusal per endpoint, bounded by
/// [`Exclusions::CAPACITY`]. `ctx`'s key and panic mode are kept; its
/// exclusions are replaced. Allocates nothing beyond the pick's `Arc` clone.
///
/// ```
/// use std::sync::Arc;
/// use lb_core::{pick_admitted, Balancer, Endpoint, EndpointSet, Exclusions, PickContext, Timestamp};
///
/// struct First(EndpointSet);
/// impl Balancer for First {
///     fn endpoints(&self) -> &EndpointSet { &self.0 }
///     fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
///         (0..self.0.len()).find(|&i| self.0.is_eligible(i, ctx))
///     }
/// }
/// let set = EndpointSet::new(
///     ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let balancer = Arc::new(First(set));
/// let mut tried = Exclusions::new();
/// tried.push(0);
/// // Endpoint 1's breaker is open: the pick falls through to 2.
/// let (pick, ()) = pick_admitted(&balancer, PickContext::new(), &tried, |p| (p.index() != 1).then_some(())).unwrap();
/// assert_eq!(pick.index(), 2);
/// ```
pub fn pick_admitted<B, A>(
    balancer: &Arc<B>,
    ctx: PickContext<'_>,
    tried: &Exclusions,
    mut admit: impl FnMut(&OwnedPick<B>) -> Option<A>,
) -> Option<(OwnedPick<B>, A)>
where
    B: Balancer + ?Sized,
{
    let mut refused = Exclusions::new();
    let mut avoid_tried = !tried.is_empty();
    // Each round either returns, refuses one more endpoint, or stops avoiding
    // the tried ones (once): so at most CAPACITY + 2 rounds.
    for _ in 0..CAPACITY + 2 {
        let excluded = if avoid_tried { tried.and(&refused) } else { refused };
        let Some(pick) = OwnedPick::pick(balancer, &ctx.excluding(excluded.as_slice())) else {
            if avoid_tried {
                avoid_tried = false;
                continue;
            }
            return None;
        };
        if let Some(admission) = admit(&pick) {
            return Some((pick, admission));
        }
        if refused.len() == CAPACITY {
            return None;
        }
        refused.push(pick.index());
    }
    None
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::{Endpoint, EndpointSet, HealthFlag, Timestamp};

    /// Round robin over the eligible endpoints, so a repeated pick moves on.
    struct Rotate(EndpointSet, core::sync::atomic::AtomicUsize);

    impl Balancer for Rotate {
        fn endpoints(&self) -> &EndpointSet {
            &self.0
        }
        fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
            let n = self.0.len();
            let start = self.1.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            (0..n).map(|k| (start + k) % n).find(|&i| self.0.is_eligible(i, ctx))
        }
    }

    fn rotate(n: u16) -> Arc<Rotate> {
        let eps = (1..=n).map(|p| Endpoint::new(core::net::SocketAddr::from(([10, 0, 0, 1], p))));
        Arc::new(Rotate(EndpointSet::new(eps, Timestamp::ZERO), Default::default()))
    }

    fn in_flight(b: &Rotate) -> u32 {
        b.0.iter().map(|m| m.state().in_flight()).sum()
    }

    #[test]
    fn exclusions_hold_each_index_once_and_stop_at_capacity() {
        let mut e = Exclusions::new();
        for i in (0..40).chain(0..40) {
            e.push(i);
        }
        assert_eq!(e.as_slice(), (0..16).collect::<Vec<_>>());
        assert_eq!(e.len(), Exclusions::CAPACITY);
    }

    #[test]
    fn a_tried_endpoint_is_avoided_while_another_is_left() {
        let b = rotate(3);
        let mut tried = Exclusions::new();
        tried.push(0);
        tried.push(1);
        for _ in 0..6 {
            let (pick, ()) = pick_admitted(&b, PickContext::new(), &tried, |_| Some(())).unwrap();
            assert_eq!(pick.index(), 2);
        }
        assert_eq!(in_flight(&b), 0, "dropped picks end their in-flight count");
    }

    #[test]
    fn when_all_were_tried_one_is_tried_again() {
        let b = rotate(2);
        let mut tried = Exclusions::new();
        tried.push(0);
        tried.push(1);
        assert!(pick_admitted(&b, PickContext::new(), &tried, |_| Some(())).is_some());
    }

    #[test]
    fn refused_endpoints_are_never_offered_again_and_all_refused_is_none() {
        let b = rotate(4);
        let mut offered = Vec::new();
        let result = pick_admitted(&b, PickContext::new(), &Exclusions::new(), |p| {
            offered.push(p.index());
            None::<()>
        });
        assert!(result.is_none());
        offered.sort_unstable();
        assert_eq!(offered, [0, 1, 2, 3], "each endpoint asked once");
        assert_eq!(in_flight(&b), 0);
    }

    #[test]
    fn a_refused_endpoint_stays_out_when_the_tried_ones_come_back() {
        let b = rotate(3);
        let mut tried = Exclusions::new();
        tried.push(0);
        // 1 and 2 are untried but refuse: only the tried 0 is left, and it admits.
        let (pick, ()) =
            pick_admitted(&b, PickContext::new(), &tried, |p| (p.index() == 0).then_some(())).unwrap();
        assert_eq!(pick.index(), 0);
        let mut offered = Vec::new();
        let none = pick_admitted(&b, PickContext::new(), &tried, |p| {
            offered.push(p.index());
            None::<()>
        });
        assert!(none.is_none());
        assert_eq!(offered.last(), Some(&0), "the tried one is asked last: {offered:?}");
        offered.sort_unstable();
        assert_eq!(offered, [0, 1, 2], "each asked once");
    }

    #[test]
    fn the_key_and_panic_mode_of_the_context_are_kept() {
        let b = rotate(2);
        for m in b.0.iter() {
            m.state().set_flag(HealthFlag::Ejected, true);
        }
        let healthy_only = PickContext::new().with_key(b"k");
        assert!(pick_admitted(&b, healthy_only, &Exclusions::new(), |_| Some(())).is_none());
        let panic = healthy_only.ignoring_health();
        assert!(pick_admitted(&b, panic, &Exclusions::new(), |_| Some(())).is_some());
    }
}
