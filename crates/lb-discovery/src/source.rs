//! The discovery stream and the machinery that turns full lists into diffs.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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
/// end or empty the stream. [`watched`] also hands back the source's
/// [`SourceStatus`], for consumers that show it.
pub fn changes<S: Source>(source: S) -> ChangeStream {
    watched(source).0
}

/// [`changes`], with a [`SourceStatus`] the stream keeps up to date: when the
/// source last answered, and its last error. A failing source sends no
/// change (its consumers keep the last good endpoints), so this is how they
/// can tell "nothing changed" from "nothing works".
///
/// ```
/// use lb_core::Endpoint;
/// use lb_discovery::{Source, watched};
///
/// struct Down;
/// impl Source for Down {
///     type Error = std::io::Error;
///     fn describe(&self) -> String { "registry".into() }
///     async fn next_list(&mut self) -> Option<Result<Vec<Endpoint>, std::io::Error>> {
///         static TRIED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
///         if TRIED.swap(true, std::sync::atomic::Ordering::SeqCst) { return None }
///         Some(Err(std::io::Error::other("connection refused")))
///     }
/// }
/// use futures_util::{FutureExt, StreamExt};
/// let (mut stream, status) = watched(Down);
/// // One failed round, then the source ends (this one answers at once).
/// assert_eq!(stream.next().now_or_never(), Some(None));
/// let seen = status.get();
/// assert_eq!(seen.source, "registry");
/// assert_eq!(seen.last_error.as_deref(), Some("connection refused"));
/// assert_eq!((seen.errors_in_a_row, seen.last_success), (1, None));
/// ```
pub fn watched<S: Source>(source: S) -> (ChangeStream, SourceStatus) {
    let label = source.describe();
    let status = SourceStatus::new(label.clone());
    let state = Driver { source, differ: ListDiffer::new(), label, status: status.clone() };
    (Box::pin(stream::unfold(state, Driver::next_batch).flat_map(stream::iter)), status)
}

/// How a discovery source is doing, shared between its stream (which writes
/// it once per round) and whoever shows it (an admin page, a health check).
#[derive(Debug, Clone)]
pub struct SourceStatus(Arc<Mutex<SourceReport>>);

/// A copy of a [`SourceStatus`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReport {
    /// The source, as [`Source::describe`] names it.
    pub source: String,
    /// When a round last succeeded (whether or not the list changed).
    pub last_success: Option<SystemTime>,
    /// The last failed round's error, kept after later successes.
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<SystemTime>,
    /// Failed rounds since the last success; 0 while the source is fine.
    pub errors_in_a_row: u32,
}

impl SourceStatus {
    fn new(source: String) -> Self {
        SourceStatus(Arc::new(Mutex::new(SourceReport {
            source,
            last_success: None,
            last_error: None,
            last_error_at: None,
            errors_in_a_row: 0,
        })))
    }

    /// The status now.
    pub fn get(&self) -> SourceReport {
        self.lock().clone()
    }

    fn succeeded(&self) {
        let mut report = self.lock();
        report.last_success = Some(SystemTime::now());
        report.errors_in_a_row = 0;
    }

    fn failed(&self, error: String) {
        let mut report = self.lock();
        report.last_error = Some(error);
        report.last_error_at = Some(SystemTime::now());
        report.errors_in_a_row = report.errors_in_a_row.saturating_add(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SourceReport> {
        // A panic elsewhere cannot leave a report half written: every write is one field at a time.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Driver<S> {
    source: S,
    differ: ListDiffer,
    label: String,
    status: SourceStatus,
}

impl<S: Source> Driver<S> {
    async fn next_batch(mut self) -> Option<(Vec<Change>, Self)> {
        loop {
            match self.source.next_list().await? {
                Ok(list) => {
                    self.status.succeeded();
                    let batch = self.differ.next(list);
                    if !batch.is_empty() {
                        tracing::debug!(source = %self.label, changes = batch.len(), "discovery update");
                        return Some((batch, self));
                    }
                }
                Err(error) => {
                    tracing::error!(
                        source = %self.label,
                        error = %error,
                        "discovery round failed; keeping the last good endpoints"
                    );
                    self.status.failed(error.to_string());
                }
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

    #[tokio::test]
    async fn the_status_follows_each_round() {
        let failure = |m: &str| Err(std::io::Error::other(m.to_string()));
        let script = [
            failure("refused"),
            failure("timed out"),
            Ok(vec![ep(1, 1)]),
            Ok(vec![ep(1, 1)]),
            failure("gone"),
        ];
        let (mut stream, status) = watched(Scripted(script.into_iter().collect()));
        let fresh = status.get();
        assert_eq!((fresh.source.as_str(), fresh.last_success, fresh.errors_in_a_row), ("scripted", None, 0));

        // Two failures, then the first list: the stream yields it.
        assert_eq!(stream.next().await, Some(Change::Snapshot(vec![ep(1, 1)])));
        let after_recovery = status.get();
        assert_eq!(after_recovery.errors_in_a_row, 0, "a success resets the run");
        assert_eq!(after_recovery.last_error.as_deref(), Some("timed out"), "the last error is kept");
        let (succeeded, failed) =
            (after_recovery.last_success.unwrap(), after_recovery.last_error_at.unwrap());
        assert!(succeeded >= failed);

        // An unchanged list and a failure yield nothing; the stream then ends.
        assert_eq!(stream.next().await, None);
        let last = status.get();
        assert_eq!((last.last_error.as_deref(), last.errors_in_a_row), (Some("gone"), 1));
        assert!(last.last_success.unwrap() >= succeeded, "the unchanged round counted as a success");
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
