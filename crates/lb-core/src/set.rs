//! Immutable snapshots of the endpoints one balancer chooses from.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::clock::Timestamp;
use crate::discovery::Change;
use crate::endpoint::{Endpoint, EndpointId};
use crate::health::{EndpointState, Totals};

/// One endpoint in a set: its description and its live state.
#[derive(Debug, Clone)]
pub struct Member {
    endpoint: Arc<Endpoint>,
    state: Arc<EndpointState>,
}

impl Member {
    /// The endpoint's description.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The endpoint's live health and load.
    pub fn state(&self) -> &Arc<EndpointState> {
        &self.state
    }
}

/// An immutable, sorted snapshot of endpoints.
///
/// Built off the hot path whenever discovery changes something, then handed
/// to a balancer that is swapped in atomically. Members are sorted by id, so
/// the same endpoints always give the same indices and the same hash tables.
/// Cloning is a reference-count bump.
///
/// A set built from another ([`replaced`](Self::replaced),
/// [`applied`](Self::applied)) shares its lineage's totals: requests in
/// flight and eligible weight. Once a consumer asks for them
/// ([`keep_totals`](Self::keep_totals)), the endpoints' own updates keep
/// them, so [`in_flight_total`](Self::in_flight_total) and
/// [`eligible_weight`](Self::eligible_weight) are O(1).
#[derive(Debug, Clone, Default)]
pub struct EndpointSet {
    members: Arc<[Member]>,
    /// The members' states again, in index order, one pointer each: the
    /// array picks index, eight bytes an endpoint, so it stays in L1.
    states: Arc<[Arc<EndpointState>]>,
    totals: Arc<Totals>,
}

impl EndpointSet {
    /// A set with no endpoints.
    pub fn empty() -> Self {
        EndpointSet::default()
    }

    /// A set of fresh endpoints first seen at `now`. A repeated id keeps the last one.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>, now: Timestamp) -> Self {
        EndpointSet::empty().replaced(endpoints, now)
    }

    /// A set holding exactly `endpoints`, reusing the live state of those
    /// already here (matched by id) so health and load carry over.
    ///
    /// The new set takes over this set's totals (when they are
    /// [kept](Self::keep_totals)): from now on they count the new set's
    /// endpoints. Requests still in flight on an endpoint left out finish as
    /// usual and no longer count. Build each set from the latest one (as
    /// discovery does): the totals are exact for the set built last.
    pub fn replaced(&self, endpoints: impl IntoIterator<Item = Endpoint>, now: Timestamp) -> Self {
        let by_id: BTreeMap<EndpointId, Endpoint> =
            endpoints.into_iter().map(|e| (e.id().clone(), e)).collect();
        let totals = &self.totals;
        let kept = totals.is_kept();
        // The new states first, all together, so they sit side by side in
        // memory (picks read them), not between the endpoints' descriptions.
        let states: Vec<Arc<EndpointState>> = by_id
            .values()
            .map(|endpoint| match self.index_of(endpoint.id()) {
                Some(i) => Arc::clone(&self.members[i].state),
                None => Arc::new(EndpointState::of_lineage(now, totals)),
            })
            .collect();
        let dense: Arc<[Arc<EndpointState>]> = states.iter().map(Arc::clone).collect();
        let members: Arc<[Member]> = by_id
            .into_values()
            .zip(states)
            .map(|(endpoint, state)| {
                if kept {
                    state.join(endpoint.weight());
                }
                Member { endpoint: Arc::new(endpoint), state }
            })
            .collect();
        let next = EndpointSet { members, states: dense, totals: Arc::clone(totals) };
        for member in self.iter().filter(|m| next.index_of(m.endpoint().id()).is_none()) {
            member.state.leave();
        }
        next
    }

    /// The set after one discovery change.
    pub fn applied(&self, change: &Change, now: Timestamp) -> Self {
        let mut endpoints: BTreeMap<EndpointId, Endpoint> =
            self.iter().map(|m| (m.endpoint().id().clone(), m.endpoint().clone())).collect();
        match change {
            Change::Snapshot(all) => return self.replaced(all.iter().cloned(), now),
            Change::Add(e) | Change::Update(e) => {
                endpoints.insert(e.id().clone(), e.clone());
            }
            Change::Remove(id) => {
                endpoints.remove(id);
            }
        }
        self.replaced(endpoints.into_values(), now)
    }

    /// The changes that turn this set into one holding exactly `endpoints`,
    /// in id order: removals, then additions and updates. Empty when nothing differs.
    pub fn diff(&self, endpoints: &[Endpoint]) -> Vec<Change> {
        let wanted: BTreeMap<&EndpointId, &Endpoint> = endpoints.iter().map(|e| (e.id(), e)).collect();
        let mut changes: Vec<Change> = self
            .iter()
            .filter(|m| !wanted.contains_key(m.endpoint().id()))
            .map(|m| Change::Remove(m.endpoint().id().clone()))
            .collect();
        for (id, endpoint) in wanted {
            match self.index_of(id) {
                None => changes.push(Change::Add(endpoint.clone())),
                Some(i) if self.members[i].endpoint() != endpoint => {
                    changes.push(Change::Update(endpoint.clone()))
                }
                Some(_) => {}
            }
        }
        changes
    }

    /// How many endpoints the set holds.
    #[inline]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the set holds no endpoint.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member at `index`, if any.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&Member> {
        self.members.get(index)
    }

    /// All members, sorted by id.
    #[inline]
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The members' live states in index order: what a pick reads, from
    /// an array of one pointer per endpoint.
    #[inline]
    pub fn states(&self) -> &[Arc<EndpointState>] {
        &self.states
    }

    /// Iterates over the members in id order.
    pub fn iter(&self) -> core::slice::Iter<'_, Member> {
        self.members.iter()
    }

    /// The index of the endpoint with this id.
    pub fn index_of(&self, id: &EndpointId) -> Option<usize> {
        self.members.binary_search_by(|m| m.endpoint().id().cmp(id)).ok()
    }

    /// The sum of all weights.
    pub fn total_weight(&self) -> u64 {
        self.iter().map(|m| u64::from(m.endpoint().weight())).sum()
    }

    /// Starts keeping this set's totals (requests in flight, eligible
    /// weight) so that [`in_flight_total`](Self::in_flight_total) and
    /// [`eligible_weight`](Self::eligible_weight) are O(1), for this set and
    /// every set built from it. Balancers that read them per pick (bounded
    /// loads) call it when built; until a set's lineage keeps them, a pick
    /// does not pay for them. Idempotent; O(n) the first time.
    ///
    /// Call it on the latest set of a lineage (the one the next set will be
    /// built from), from the task that builds the sets.
    pub fn keep_totals(&self) {
        if self.totals.start_keeping() {
            for m in self.iter() {
                m.state.join(m.endpoint.weight());
            }
        }
    }

    /// Requests in flight on the set's endpoints, whatever their health:
    /// the sum of their [`in_flight`](EndpointState::in_flight) counts.
    /// O(1), one relaxed load, once the totals are
    /// [kept](Self::keep_totals) (for per-pick use); O(n) before.
    ///
    /// Kept totals are exact for the set built last from its lineage (see
    /// [`replaced`](Self::replaced)) once concurrent picks have returned; a
    /// pick under way may be missing from them for an instant.
    ///
    /// ```
    /// use lb_core::{Endpoint, EndpointSet, HealthFlag, Timestamp};
    ///
    /// let set = EndpointSet::new(
    ///     ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap()).with_weight(3)),
    ///     Timestamp::ZERO,
    /// );
    /// set.keep_totals();
    /// assert_eq!((set.in_flight_total(), set.eligible_weight()), (0, 6));
    /// set.get(0).unwrap().state().set_flag(HealthFlag::Ejected, true);
    /// assert_eq!(set.eligible_weight(), 3);
    /// ```
    #[inline]
    pub fn in_flight_total(&self) -> u64 {
        if self.totals.is_kept() {
            self.totals.in_flight()
        } else {
            self.iter().map(|m| u64::from(m.state.in_flight())).sum()
        }
    }

    /// The weight health lets take traffic: the sum of the weights of the
    /// eligible endpoints (healthy or degraded). O(1) once the totals are
    /// [kept](Self::keep_totals), exact in the same sense as
    /// [`in_flight_total`](Self::in_flight_total); O(n) before.
    #[inline]
    pub fn eligible_weight(&self) -> u64 {
        if self.totals.is_kept() {
            self.totals.eligible_weight()
        } else {
            self.iter().filter(|m| m.state.is_eligible()).map(|m| u64::from(m.endpoint.weight())).sum()
        }
    }

    /// How many endpoints health lets take traffic (healthy or degraded),
    /// read live from their flags. O(n): one relaxed load per endpoint, so
    /// call it from a timer, never per pick.
    pub fn eligible_count(&self) -> usize {
        self.iter().filter(|m| m.state().is_eligible()).count()
    }

    /// The share of endpoints health lets take traffic, from 0.0 to 1.0
    /// (0.0 for an empty set). O(n), like [`eligible_count`](Self::eligible_count).
    ///
    /// For Envoy's panic threshold: an owner checks it on a timer and, while
    /// it is below the threshold (Envoy's default is 0.5), picks with
    /// [`PickContext::ignoring_health`](crate::PickContext::ignoring_health).
    ///
    /// ```
    /// use lb_core::{Endpoint, EndpointSet, HealthFlag, PickContext, Timestamp};
    ///
    /// let set = EndpointSet::new(
    ///     ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
    ///     Timestamp::ZERO,
    /// );
    /// set.get(0).unwrap().state().set_flag(HealthFlag::Ejected, true);
    /// set.get(1).unwrap().state().set_flag(HealthFlag::ActiveCheckFailed, true);
    /// let panic = set.eligible_share() < 0.5; // one of three
    /// let ctx = PickContext::new().with_health_ignored(panic);
    /// assert!(ctx.ignores_health());
    /// ```
    pub fn eligible_share(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.eligible_count() as f64 / self.len() as f64
    }

    /// Whether two handles point at the very same snapshot.
    pub fn same_snapshot(&self, other: &EndpointSet) -> bool {
        Arc::ptr_eq(&self.members, &other.members)
    }
}

impl<'a> IntoIterator for &'a EndpointSet {
    type Item = &'a Member;
    type IntoIter = core::slice::Iter<'a, Member>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthFlag;
    use alloc::string::ToString;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(core::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn sorted_by_id_and_deduplicated() {
        let set = EndpointSet::new([ep(3), ep(1), ep(2), ep(1).with_weight(5)], Timestamp::ZERO);
        let ids: Vec<_> = set.iter().map(|m| m.endpoint().id().to_string()).collect();
        assert_eq!(ids, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        assert_eq!(set.get(0).unwrap().endpoint().weight(), 5, "the last duplicate wins");
        assert_eq!(set.total_weight(), 7);
        assert_eq!(set.index_of(ep(2).id()), Some(1));
        assert!(set.get(3).is_none());
    }

    #[test]
    fn live_state_survives_updates() {
        let set = EndpointSet::new([ep(1), ep(2)], Timestamp::ZERO);
        set.get(0).unwrap().state().set_flag(HealthFlag::Ejected, true);
        let next = set.applied(&Change::Update(ep(1).with_weight(9)), Timestamp::from_nanos(5));
        let m = next.get(0).unwrap();
        assert_eq!(m.endpoint().weight(), 9);
        assert!(!m.state().is_eligible(), "the ejection carried over");
        assert!(Arc::ptr_eq(m.state(), set.get(0).unwrap().state()));
        let added = next.applied(&Change::Add(ep(3)), Timestamp::from_nanos(8));
        assert_eq!(added.get(2).unwrap().state().added_at(), Timestamp::from_nanos(8));
        assert_eq!(added.get(0).unwrap().state().added_at(), Timestamp::ZERO);
        for s in [&set, &next, &added, &EndpointSet::empty()] {
            assert_eq!(s.states().len(), s.len());
            assert!(
                s.iter().zip(s.states()).all(|(m, state)| Arc::ptr_eq(m.state(), state)),
                "states() is in index order"
            );
        }
    }

    #[test]
    fn diff_then_apply_reaches_the_target() {
        let set = EndpointSet::new([ep(1), ep(2), ep(3)], Timestamp::ZERO);
        let target = [ep(2).with_weight(4), ep(3), ep(4)];
        let changes = set.diff(&target);
        assert_eq!(
            changes,
            [Change::Remove(ep(1).id().clone()), Change::Update(ep(2).with_weight(4)), Change::Add(ep(4))]
        );
        let applied = changes.iter().fold(set, |s, c| s.applied(c, Timestamp::ZERO));
        assert!(applied.diff(&target).is_empty());
        let snapshot = EndpointSet::empty().applied(&Change::Snapshot(target.to_vec()), Timestamp::ZERO);
        assert_eq!(snapshot.len(), 3);
        assert!(!snapshot.same_snapshot(&applied) && applied.same_snapshot(&applied.clone()));
    }

    #[test]
    fn eligible_share_counts_health_only() {
        assert_eq!(EndpointSet::empty().eligible_share(), 0.0);
        let set = EndpointSet::new([ep(1), ep(2), ep(3), ep(4)], Timestamp::ZERO);
        assert_eq!((set.eligible_count(), set.eligible_share()), (4, 1.0));
        set.get(0).unwrap().state().set_flag(HealthFlag::DiscoveryWarning, true);
        set.get(1).unwrap().state().set_flag(HealthFlag::Ejected, true);
        set.get(2).unwrap().state().set_flag(HealthFlag::ActiveCheckFailed, true);
        assert_eq!(set.eligible_count(), 2, "degraded still takes traffic");
        assert_eq!(set.eligible_share(), 0.5);
        set.get(3).unwrap().state().set_flag(HealthFlag::Ejected, true);
        assert_eq!(set.eligible_share(), 0.25);
    }

    /// What the totals must equal: sums over the members, read one by one.
    fn summed(set: &EndpointSet) -> (u64, u64) {
        let in_flight = set.iter().map(|m| u64::from(m.state().in_flight())).sum();
        let weight =
            set.iter().filter(|m| m.state().is_eligible()).map(|m| u64::from(m.endpoint().weight())).sum();
        (in_flight, weight)
    }

    #[test]
    fn totals_follow_picks_flags_and_replacement() {
        let set = EndpointSet::new([ep(1).with_weight(2), ep(2).with_weight(3)], Timestamp::ZERO);
        set.keep_totals();
        assert_eq!((set.in_flight_total(), set.eligible_weight()), (0, 5));
        let (a, b) = (Arc::clone(set.get(0).unwrap().state()), Arc::clone(set.get(1).unwrap().state()));
        a.begin_request();
        a.begin_request();
        b.begin_request();
        assert_eq!(set.in_flight_total(), 3);
        b.set_flag(HealthFlag::Ejected, true);
        assert_eq!(set.eligible_weight(), 2, "ejected: its weight goes, its requests stay counted");
        assert_eq!(set.in_flight_total(), 3);
        // Endpoint 1 leaves, endpoint 2 changes weight, endpoint 3 arrives.
        let next = set.replaced([ep(2).with_weight(7), ep(3)], Timestamp::ZERO);
        assert_eq!((next.in_flight_total(), next.eligible_weight()), (1, 1), "2 is still ejected");
        a.end_request();
        assert_eq!(next.in_flight_total(), 1, "a request on a removed endpoint ends uncounted");
        b.set_flag(HealthFlag::Ejected, false);
        assert_eq!(next.eligible_weight(), 8);
        b.end_request();
        b.end_request();
        assert_eq!(next.in_flight_total(), 0, "a stray second end does not go below zero");
        assert_eq!(summed(&next), (0, 8));
        assert_eq!(a.in_flight(), 1, "the removed endpoint's own count still ends");
    }

    #[test]
    fn standalone_states_and_separate_lineages_do_not_mix() {
        let alone = EndpointState::new(Timestamp::ZERO);
        alone.begin_request();
        alone.set_flag(HealthFlag::Ejected, true);
        assert_eq!(alone.in_flight(), 1);
        let one = EndpointSet::new([ep(1)], Timestamp::ZERO);
        let other = EndpointSet::new([ep(1)], Timestamp::ZERO);
        one.keep_totals();
        other.keep_totals();
        one.get(0).unwrap().state().begin_request();
        assert_eq!((one.in_flight_total(), other.in_flight_total()), (1, 0));
    }

    #[test]
    fn totals_kept_late_start_from_what_is_in_flight() {
        let set = EndpointSet::new([ep(1).with_weight(2), ep(2)], Timestamp::ZERO);
        let state = Arc::clone(set.get(0).unwrap().state());
        state.begin_request();
        set.get(1).unwrap().state().set_flag(HealthFlag::Ejected, true);
        assert_eq!((set.in_flight_total(), set.eligible_weight()), (1, 2), "summed while not kept");
        assert_eq!(set.totals.in_flight(), 0, "a pick paid nothing for them");
        set.keep_totals();
        set.keep_totals();
        assert_eq!((set.totals.in_flight(), set.totals.eligible_weight()), (1, 2));
        state.end_request();
        assert_eq!(set.in_flight_total(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Start keeping the totals of the latest set's lineage.
        Keep,
        /// Replace the latest set with the endpoints whose bit is set, weight by port.
        Replace(u8, u32),
        /// Start a request on member `.1` of the set built `.0` steps back.
        Begin(usize, usize),
        /// End the outstanding request at this position (or a stray end if none).
        End(usize),
        /// Raise or clear a flag on a member of the latest set.
        Flag(usize, bool, bool),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            1 => Just(Op::Keep),
            4 => (any::<u8>(), 1u32..5).prop_map(|(m, w)| Op::Replace(m, w)),
            4 => (0usize..3, 0usize..8).prop_map(|(g, i)| Op::Begin(g, i)),
            4 => (0usize..16).prop_map(Op::End),
            4 => (0usize..8, any::<bool>(), any::<bool>()).prop_map(|(i, e, r)| Op::Flag(i, e, r)),
        ]
    }

    proptest::proptest! {
        /// The totals equal the sums over the latest set's members after any
        /// mix of requests (on the latest set or older ones), completions,
        /// health changes and replacements.
        #[test]
        fn totals_equal_the_sums_over_the_latest_set(ops in proptest::collection::vec(op(), 0..80)) {
            let mut sets = alloc::vec![EndpointSet::empty()];
            let mut outstanding: Vec<Arc<EndpointState>> = Vec::new();
            for op in ops {
                let latest = sets.last().unwrap().clone();
                match op {
                    Op::Keep => latest.keep_totals(),
                    Op::Replace(mask, w) => {
                        let eps = (0..8u16).filter(|p| mask & (1 << p) != 0).map(|p| ep(p + 1).with_weight(w + u32::from(p)));
                        sets.push(latest.replaced(eps, Timestamp::ZERO));
                    }
                    Op::Begin(back, i) => {
                        let set = &sets[sets.len().saturating_sub(1 + back)];
                        if let Some(m) = set.get(i % set.len().max(1)) {
                            m.state().begin_request();
                            outstanding.push(Arc::clone(m.state()));
                        }
                    }
                    Op::End(j) if j < outstanding.len() => outstanding.swap_remove(j).end_request(),
                    Op::End(_) => { if let Some(m) = latest.get(0) { m.state().end_request() } }
                    Op::Flag(i, ejected, raised) => {
                        if let Some(m) = latest.get(i % latest.len().max(1)) {
                            let flag = if ejected { HealthFlag::Ejected } else { HealthFlag::DiscoveryWarning };
                            m.state().set_flag(flag, raised);
                        }
                    }
                }
                let latest = sets.last().unwrap();
                // Once kept, the O(1) totals; before, the same sums.
                proptest::prop_assert_eq!((latest.in_flight_total(), latest.eligible_weight()), summed(latest));
                if !latest.totals.is_kept() {
                    proptest::prop_assert_eq!((latest.totals.in_flight(), latest.totals.eligible_weight()), (0, 0));
                }
            }
        }

        #[test]
        fn diff_always_reaches_any_target(
            from in proptest::collection::vec((1u16..40, 1u32..4), 0..20),
            to in proptest::collection::vec((1u16..40, 1u32..4), 0..20),
        ) {
            let from = EndpointSet::new(from.iter().map(|&(p, w)| ep(p).with_weight(w)), Timestamp::ZERO);
            let to: Vec<Endpoint> = to.iter().map(|&(p, w)| ep(p).with_weight(w)).collect();
            let applied = from.diff(&to).iter().fold(from.clone(), |s, c| s.applied(c, Timestamp::ZERO));
            proptest::prop_assert!(applied.diff(&to).is_empty());
            proptest::prop_assert_eq!(applied.len(), EndpointSet::new(to, Timestamp::ZERO).len());
        }
    }
}
