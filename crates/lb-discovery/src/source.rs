//! The discovery stream and the machinery that turns full lists into diffs.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{self, Stream, StreamExt};
use lb_core::{Change, Endpoint, EndpointId, EndpointSet, Timestamp};

/// The stream every consumer reads: a [`Change::Snapshot`] first, then
/// increments, in order and without repeats.
///
/// Boxed so the proxy and the client pool can hold any source behind one type.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Change> + Send>>;

/// A discovery source that learns the complete current list of endpoints,
/// one round at a time.
///
/// Every source we ship (static, file, DNS, Consul) naturally sees whole
/// lists, so the trait asks for exactly that and [`changes`] does the rest
/// once for all of them: the first list becomes a [`Change::Snapshot`], later
/// ones become the diff against the last emitted list, an unchanged list
/// emits nothing, and a failed round is logged and emits nothing, so a
/// failing source never empties its consumers' set.
pub trait Source: Send + 'static {
    /// Why a round failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A short label for logs, such as `file /etc/lb/web.toml`.
    fn describe(&self) -> String;

    /// Waits until the source has news (the first call returns at once),
    /// then returns the complete current list. `None` ends the stream: the
    /// source will never say anything again.
    ///
    /// A source paces itself: after an error it waits before the next round
    /// rather than failing in a tight loop.
    fn next_list(&mut self) -> impl Future<Output = Option<Result<Vec<Endpoint>, Self::Error>>> + Send;
}

/// Turns a [`Source`] into the [`ChangeStream`] consumers read.
///
/// Failed rounds are logged with `tracing` at `error` level, naming the
/// source and the error (for a file: `path:line:column: message`), and never
/// end or empty the stream.
pub fn changes<S: Source>(source: S) -> ChangeStream {
    let label = source.describe();
    let state = Driver { source, differ: ListDiffer::new(), label };
    Box::pin(stream::unfold(state, Driver::next_batch).flat_map(stream::iter))
}

struct Driver<S> {
    source: S,
    differ: ListDiffer,
    label: String,
}

impl<S: Source> Driver<S> {
    async fn next_batch(mut self) -> Option<(Vec<Change>, Self)> {
        loop {
            match self.source.next_list().await? {
                Ok(list) => {
                    let batch = self.differ.next(list);
                    if !batch.is_empty() {
                        tracing::debug!(source = %self.label, changes = batch.len(), "discovery update");
                        return Some((batch, self));
                    }
                }
                Err(error) => tracing::error!(
                    source = %self.label,
                    error = %error,
                    "discovery round failed; keeping the last good endpoints"
                ),
            }
        }
    }
}

/// Turns successive full lists into the changes between them.
///
/// The first list gives one [`Change::Snapshot`]; each later list gives the
/// changes from [`EndpointSet::diff`] (removals, then additions and updates,
/// in id order), or nothing when the list did not change. Repeated ids keep
/// the last entry, as [`EndpointSet`] does.
#[derive(Debug, Default)]
pub struct ListDiffer {
    last: Option<EndpointSet>,
}

impl ListDiffer {
    /// A differ that has seen nothing yet.
    pub fn new() -> Self {
        ListDiffer::default()
    }

    /// The changes that lead from the previous list to `list`.
    pub fn next(&mut self, list: Vec<Endpoint>) -> Vec<Change> {
        let list = normalized(list);
        let changes = match &self.last {
            None => vec![Change::Snapshot(list.clone())],
            Some(last) => last.diff(&list),
        };
        if !changes.is_empty() {
            // Timestamps and live state are irrelevant here: the set only
            // remembers what was emitted.
            self.last = Some(EndpointSet::new(list, Timestamp::ZERO));
        }
        changes
    }
}

/// Sorted by id, one entry per id (the last one wins).
fn normalized(list: Vec<Endpoint>) -> Vec<Endpoint> {
    let by_id: BTreeMap<EndpointId, Endpoint> = list.into_iter().map(|e| (e.id().clone(), e)).collect();
    by_id.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::net::SocketAddr;

    fn ep(port: u16, weight: u32) -> Endpoint {
        Endpoint::new(SocketAddr::from(([10, 0, 0, 1], port))).with_weight(weight)
    }

    #[test]
    fn first_list_is_a_sorted_deduplicated_snapshot() {
        let mut differ = ListDiffer::new();
        let changes = differ.next(vec![ep(3, 1), ep(1, 1), ep(3, 7)]);
        assert_eq!(changes, [Change::Snapshot(vec![ep(1, 1), ep(3, 7)])]);
    }

    #[test]
    fn unchanged_lists_emit_nothing_and_changes_emit_diffs() {
        let mut differ = ListDiffer::new();
        differ.next(vec![ep(1, 1), ep(2, 1)]);
        assert!(differ.next(vec![ep(2, 1), ep(1, 1)]).is_empty());
        assert_eq!(
            differ.next(vec![ep(2, 5), ep(3, 1)]),
            [Change::Remove(ep(1, 1).id().clone()), Change::Update(ep(2, 5)), Change::Add(ep(3, 1))]
        );
        assert_eq!(
            differ.next(vec![]),
            [Change::Remove(ep(2, 5).id().clone()), Change::Remove(ep(3, 1).id().clone())]
        );
    }

    #[test]
    fn an_empty_first_list_is_an_explicit_empty_snapshot() {
        assert_eq!(ListDiffer::new().next(vec![]), [Change::Snapshot(vec![])]);
    }

    /// Plays back scripted rounds, then ends.
    struct Scripted(std::collections::VecDeque<Result<Vec<Endpoint>, std::io::Error>>);

    impl Source for Scripted {
        type Error = std::io::Error;
        fn describe(&self) -> String {
            "scripted".to_string()
        }
        async fn next_list(&mut self) -> Option<Result<Vec<Endpoint>, std::io::Error>> {
            self.0.pop_front()
        }
    }

    #[tokio::test]
    async fn failed_and_unchanged_rounds_emit_nothing() {
        let failure = || Err(std::io::Error::other("resolver down"));
        let script =
            [Ok(vec![ep(1, 1)]), failure(), Ok(vec![ep(1, 1)]), failure(), Ok(vec![ep(2, 1)]), Ok(vec![])];
        let all: Vec<Change> = changes(Scripted(script.into_iter().collect())).collect().await;
        assert_eq!(
            all,
            [
                Change::Snapshot(vec![ep(1, 1)]),
                Change::Remove(ep(1, 1).id().clone()),
                Change::Add(ep(2, 1)),
                Change::Remove(ep(2, 1).id().clone()),
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn folding_the_changes_always_reaches_the_latest_list(
            lists in proptest::collection::vec(proptest::collection::vec((1u16..20, 1u32..4), 0..12), 1..6),
        ) {
            let mut differ = ListDiffer::new();
            let mut set = EndpointSet::empty();
            for list in &lists {
                let list: Vec<Endpoint> = list.iter().map(|&(p, w)| ep(p, w)).collect();
                for change in differ.next(list.clone()) {
                    set = set.applied(&change, Timestamp::ZERO);
                }
                proptest::prop_assert!(set.diff(&list).is_empty());
            }
        }
    }
}
