//! Immutable snapshots of the endpoints one balancer chooses from.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::clock::Timestamp;
use crate::discovery::Change;
use crate::endpoint::{Endpoint, EndpointId};
use crate::health::EndpointState;

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
#[derive(Debug, Clone, Default)]
pub struct EndpointSet {
    members: Arc<[Member]>,
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
    pub fn replaced(&self, endpoints: impl IntoIterator<Item = Endpoint>, now: Timestamp) -> Self {
        let by_id: BTreeMap<EndpointId, Endpoint> =
            endpoints.into_iter().map(|e| (e.id().clone(), e)).collect();
        let members = by_id
            .into_values()
            .map(|endpoint| {
                let state = match self.index_of(endpoint.id()) {
                    Some(i) => Arc::clone(&self.members[i].state),
                    None => Arc::new(EndpointState::new(now)),
                };
                Member { endpoint: Arc::new(endpoint), state }
            })
            .collect();
        EndpointSet { members }
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

    proptest::proptest! {
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
