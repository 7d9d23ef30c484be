//! The one trait every algorithm implements, and the pick handle callers hold.

use alloc::sync::Arc;

use crate::clock::Timestamp;
use crate::endpoint::Endpoint;
use crate::health::EndpointState;
use crate::outcome::Report;
use crate::set::{EndpointSet, Member};

/// What a caller knows about one request when it asks for an endpoint.
///
/// Small and borrowed, so building one costs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext<'a> {
    key: Option<&'a [u8]>,
    exclude: &'a [usize],
    ignore_health: bool,
}

impl<'a> PickContext<'a> {
    /// A context with no hash key and no exclusions, honouring health.
    pub const fn new() -> Self {
        PickContext { key: None, exclude: &[], ignore_health: false }
    }

    /// Sets the affinity key (a user id, a cookie, a client IP) that hash
    /// balancers map to an endpoint. Other balancers ignore it.
    pub const fn with_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the indices (into the balancer's [`EndpointSet`]) that must not be
    /// picked, such as the endpoints a retry already tried.
    pub const fn excluding(mut self, indices: &'a [usize]) -> Self {
        self.exclude = indices;
        self
    }

    /// Panic mode (Envoy's panic threshold): every endpoint counts as
    /// eligible whatever its health. When too few endpoints are healthy, the
    /// healthy ones would drown under the whole load; spreading it over all
    /// of them keeps some requests succeeding. Exclusions still apply.
    ///
    /// The owner decides off the hot path (see [`EndpointSet::eligible_share`])
    /// and sets this on every pick while the set is below its threshold.
    ///
    /// ```
    /// use lb_core::{Endpoint, EndpointSet, HealthFlag, PickContext, Timestamp};
    ///
    /// let set = EndpointSet::new([Endpoint::new("10.0.0.1:80".parse::<lb_core::Address>().unwrap())], Timestamp::ZERO);
    /// set.get(0).unwrap().state().set_flag(HealthFlag::ActiveCheckFailed, true);
    /// assert!(!set.is_eligible(0, &PickContext::new()));
    /// assert!(set.is_eligible(0, &PickContext::new().ignoring_health()));
    /// assert!(!set.is_eligible(0, &PickContext::new().ignoring_health().excluding(&[0])));
    /// ```
    pub const fn ignoring_health(self) -> Self {
        self.with_health_ignored(true)
    }

    /// Turns panic mode ([`ignoring_health`](Self::ignoring_health)) on or
    /// off, for owners that decide per pick from a flag.
    pub const fn with_health_ignored(mut self, ignore: bool) -> Self {
        self.ignore_health = ignore;
        self
    }

    /// Whether health is ignored for this request (panic mode).
    #[inline]
    pub const fn ignores_health(&self) -> bool {
        self.ignore_health
    }

    /// Whether health lets this request use an endpoint in `state`: always
    /// in panic mode, else when it is healthy or degraded. Exclusions are not
    /// looked at (see [`is_excluded`](Self::is_excluded)). One relaxed load.
    #[inline]
    pub fn health_admits(&self, state: &EndpointState) -> bool {
        self.ignore_health || state.is_eligible()
    }

    /// The affinity key, if any.
    #[inline]
    pub const fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The excluded indices.
    #[inline]
    pub const fn exclude(&self) -> &'a [usize] {
        self.exclude
    }

    /// Whether `index` is excluded.
    #[inline]
    pub fn is_excluded(&self, index: usize) -> bool {
        self.exclude.contains(&index)
    }
}

impl EndpointSet {
    /// Whether the endpoint at `index` may be picked for this request: it
    /// exists, is healthy or degraded (or the context ignores health), and is
    /// not excluded. Lock-free.
    #[inline]
    pub fn is_eligible(&self, index: usize, ctx: &PickContext<'_>) -> bool {
        match self.states().get(index) {
            Some(state) => ctx.health_admits(state) && !ctx.is_excluded(index),
            None => false,
        }
    }
}

/// A selection algorithm over one immutable [`EndpointSet`].
///
/// A balancer is built for a snapshot and replaced, not mutated, when the
/// snapshot changes. Health is read live from each member's
/// [`EndpointState`](crate::EndpointState), so ejecting an endpoint never
/// needs a rebuild.
///
/// Rules every implementation keeps:
/// - [`select`](Balancer::select) takes no lock, allocates nothing and makes no syscall;
/// - it returns only an index of an eligible endpoint (see
///   [`EndpointSet::is_eligible`]), and `None` when there is none; it never panics;
/// - a context that [ignores health](PickContext::ignoring_health) makes every
///   endpoint eligible but the excluded ones;
/// - an excluded endpoint is never returned. A caller that would rather reuse
///   an endpoint than fail asks again without exclusions.
pub trait Balancer: Send + Sync {
    /// The snapshot this balancer picks from; indices refer to it.
    fn endpoints(&self) -> &EndpointSet;

    /// Chooses the index of an endpoint for one request. The hot path.
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize>;

    /// Learns from a finished request. Load-aware balancers update their
    /// estimates here; the default does nothing.
    fn observe(&self, index: usize, report: &Report) {
        let _ = (index, report);
    }

    /// Time-driven upkeep, off the pick path: slow start recomputes its ramps,
    /// peak-EWMA decays idle estimates. Owners call it from a timer (every
    /// 100 ms to 1 s) and right after building; the default does nothing.
    fn tick(&self, now: Timestamp) {
        let _ = now;
    }
}

impl<B: Balancer + ?Sized> Balancer for Arc<B> {
    fn endpoints(&self) -> &EndpointSet {
        (**self).endpoints()
    }
    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        (**self).select(ctx)
    }
    fn observe(&self, index: usize, report: &Report) {
        (**self).observe(index, report)
    }
    fn tick(&self, now: Timestamp) {
        (**self).tick(now)
    }
}

/// Builds a balancer for a snapshot; how consumers rebuild after a change.
pub trait Build: Send + Sync {
    /// The balancer this builds.
    type Output: Balancer + 'static;

    /// Builds a balancer over `endpoints`. May be slow (Maglev tables); runs off the hot path.
    fn build(&self, endpoints: EndpointSet) -> Self::Output;
}

/// Picking with feedback, for every [`Balancer`].
pub trait BalancerExt: Balancer {
    /// Picks an endpoint and counts the request as in flight until the
    /// returned [`Pick`] is completed or dropped.
    fn pick(&self, ctx: &PickContext<'_>) -> Option<Pick<'_, Self>> {
        let index = self.select(ctx)?;
        let member = self.endpoints().get(index)?;
        member.state().begin_request();
        Some(Pick { balancer: self, member, index, finished: false })
    }
}

impl<B: Balancer + ?Sized> BalancerExt for B {}

/// A picked endpoint and the handle to report how its request went.
///
/// Borrowed from the balancer, so it costs no reference count. Dropping it
/// without [`complete`](Pick::complete) (a cancelled request) ends the
/// in-flight count and teaches the balancer nothing.
#[must_use = "report how the request went with Pick::complete"]
#[derive(Debug)]
pub struct Pick<'a, B: Balancer + ?Sized> {
    balancer: &'a B,
    member: &'a Member,
    index: usize,
    finished: bool,
}

impl<B: Balancer + ?Sized> Pick<'_, B> {
    /// The endpoint's index in the balancer's snapshot; exclude it on a retry.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The endpoint to send the request to.
    pub fn endpoint(&self) -> &Endpoint {
        self.member.endpoint()
    }

    /// The endpoint with its live state.
    pub fn member(&self) -> &Member {
        self.member
    }

    /// Ends the request and reports its outcome and latency to the balancer.
    pub fn complete(mut self, report: Report) {
        self.finished = true;
        self.member.state().end_request();
        self.balancer.observe(self.index, &report);
    }
}

impl<B: Balancer + ?Sized> Drop for Pick<'_, B> {
    fn drop(&mut self) {
        if !self.finished {
            self.member.state().end_request();
        }
    }
}

/// A [`Pick`] that owns a reference to its balancer, for futures that must be
/// `'static` (a tower `Service::call`, a spawned task).
#[must_use = "report how the request went with OwnedPick::complete"]
pub struct OwnedPick<B: Balancer + ?Sized = dyn Balancer> {
    balancer: Arc<B>,
    index: usize,
    finished: bool,
}

impl<B: Balancer + ?Sized> core::fmt::Debug for OwnedPick<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OwnedPick").field("index", &self.index).field("endpoint", self.endpoint()).finish()
    }
}

impl<B: Balancer + ?Sized> OwnedPick<B> {
    /// Picks from `balancer` like [`BalancerExt::pick`], keeping the balancer alive.
    pub fn pick(balancer: &Arc<B>, ctx: &PickContext<'_>) -> Option<Self> {
        let index = balancer.select(ctx)?;
        balancer.endpoints().get(index)?.state().begin_request();
        Some(OwnedPick { balancer: Arc::clone(balancer), index, finished: false })
    }

    fn member(&self) -> &Member {
        // The index was checked against this very snapshot when picked.
        &self.balancer.endpoints().members()[self.index]
    }

    /// The endpoint's index in the balancer's snapshot.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The endpoint to send the request to.
    pub fn endpoint(&self) -> &Endpoint {
        self.member().endpoint()
    }

    /// The balancer this pick came from.
    pub fn balancer(&self) -> &Arc<B> {
        &self.balancer
    }

    /// Ends the request and reports its outcome and latency to the balancer.
    pub fn complete(mut self, report: Report) {
        self.finished = true;
        self.member().state().end_request();
        self.balancer.observe(self.index, &report);
    }
}

impl<B: Balancer + ?Sized> Drop for OwnedPick<B> {
    fn drop(&mut self) {
        if !self.finished {
            self.member().state().end_request();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::health::HealthFlag;
    use crate::outcome::Outcome;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use core::time::Duration;

    /// First eligible endpoint; counts what it observes.
    struct First {
        set: EndpointSet,
        observed: AtomicUsize,
    }

    impl Balancer for First {
        fn endpoints(&self) -> &EndpointSet {
            &self.set
        }
        fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
            (0..self.set.len()).find(|&i| self.set.is_eligible(i, ctx))
        }
        fn observe(&self, _: usize, _: &Report) {
            self.observed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn first(n: u16) -> First {
        let eps = (1..=n).map(|p| Endpoint::new(core::net::SocketAddr::from(([127, 0, 0, 1], p))));
        First { set: EndpointSet::new(eps, Timestamp::ZERO), observed: AtomicUsize::new(0) }
    }

    fn report() -> Report {
        Report { outcome: Outcome::Success, latency: Duration::from_millis(1), at: Timestamp::ZERO }
    }

    #[test]
    fn pick_counts_in_flight_until_complete_or_drop() {
        let b = first(2);
        let p = b.pick(&PickContext::new()).unwrap();
        assert_eq!(b.set.get(0).unwrap().state().in_flight(), 1);
        p.complete(report());
        assert_eq!(b.set.get(0).unwrap().state().in_flight(), 0);
        assert_eq!(b.observed.load(Ordering::Relaxed), 1);
        drop(b.pick(&PickContext::new()).unwrap());
        assert_eq!(b.set.get(0).unwrap().state().in_flight(), 0);
        assert_eq!(b.observed.load(Ordering::Relaxed), 1, "a dropped pick teaches nothing");
    }

    #[test]
    fn exclusion_and_health_are_honoured() {
        let b = first(3);
        assert_eq!(b.pick(&PickContext::new().excluding(&[0])).unwrap().index(), 1);
        b.set.get(1).unwrap().state().set_flag(HealthFlag::Ejected, true);
        assert_eq!(b.pick(&PickContext::new().excluding(&[0])).unwrap().index(), 2);
        assert!(b.pick(&PickContext::new().excluding(&[0, 2])).is_none());
        assert!(first(0).pick(&PickContext::new()).is_none());
        assert!(!b.set.is_eligible(99, &PickContext::new()));
    }

    #[test]
    fn panic_mode_admits_every_health_but_keeps_exclusions() {
        let b = first(3);
        for m in b.set.iter() {
            m.state().set_flag(HealthFlag::ActiveCheckFailed, true);
        }
        b.set.get(2).unwrap().state().set_flag(HealthFlag::Ejected, true);
        assert!(b.pick(&PickContext::new()).is_none());
        let panic = PickContext::new().ignoring_health();
        assert!(panic.ignores_health() && !PickContext::new().ignores_health());
        assert_eq!(b.pick(&panic).unwrap().index(), 0);
        assert_eq!(b.pick(&panic.excluding(&[0, 1])).unwrap().index(), 2, "ejected counts too");
        assert!(b.pick(&panic.excluding(&[0, 1, 2])).is_none(), "exclusions still apply");
        assert!(!b.set.is_eligible(3, &panic), "no such endpoint");
        assert!(!PickContext::new().ignoring_health().with_health_ignored(false).ignores_health());
    }

    #[test]
    fn owned_pick_works_through_dyn() {
        let b: Arc<dyn Balancer> = Arc::new(first(1));
        let p = OwnedPick::pick(&b, &PickContext::new().with_key(b"user-1")).unwrap();
        assert_eq!(b.endpoints().get(0).unwrap().state().in_flight(), 1);
        assert_eq!(p.endpoint().address().port(), 1);
        p.complete(report());
        assert_eq!(b.endpoints().get(0).unwrap().state().in_flight(), 0);
        let borrowed = b.pick(&PickContext::new()).unwrap();
        assert_eq!(borrowed.index(), 0);
    }
}
