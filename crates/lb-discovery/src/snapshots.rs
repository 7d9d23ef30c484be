//! Folding a change stream into published [`EndpointSet`] snapshots.

use futures_util::{FutureExt, Stream, StreamExt};
use lb_core::{Change, Clock, DiscoveryHealth, EndpointSet, HealthFlag};
use tokio::sync::watch;

/// At most this many already-waiting changes are folded into one published
/// snapshot, so a burst costs one rebuild while a flood cannot starve readers.
const MAX_BATCH: usize = 4096;

/// Spawns a task that folds `changes` into snapshots and returns a receiver
/// of them.
///
/// The receiver starts with an empty set marked as seen, so
/// `receiver.changed().await` waits for the source's first snapshot. Each
/// later value is a complete [`EndpointSet`] built with
/// [`EndpointSet::applied`], so endpoints that stay keep their live state.
/// Changes already waiting in the stream are applied together and published
/// once. The task ends when the stream ends (a static list ends after its
/// snapshot; receivers keep the last set) or when every receiver is dropped.
///
/// Must be called within a tokio runtime.
pub fn watch_snapshots<S, C>(changes: S, clock: C) -> watch::Receiver<EndpointSet>
where
    S: Stream<Item = Change> + Send + 'static,
    C: Clock + 'static,
{
    let (sender, receiver) = watch::channel(EndpointSet::empty());
    tokio::spawn(fold_snapshots(changes, clock, sender));
    receiver
}

/// Folds `changes` into snapshots published on `sender`, until the stream
/// ends or every receiver is gone. [`watch_snapshots`] spawns this; call it
/// yourself to run it on a task you own.
pub async fn fold_snapshots<S, C>(changes: S, clock: C, sender: watch::Sender<EndpointSet>)
where
    S: Stream<Item = Change> + Send,
    C: Clock,
{
    let mut changes = std::pin::pin!(changes);
    loop {
        let first = tokio::select! {
            change = changes.next() => change,
            () = sender.closed() => return,
        };
        let Some(first) = first else { return };
        let mut set = sender.borrow().applied(&first, clock.now());
        for _ in 1..MAX_BATCH {
            match changes.next().now_or_never() {
                Some(Some(change)) => set = set.applied(&change, clock.now()),
                _ => break,
            }
        }
        sync_degraded_flags(&set);
        if sender.send(set).is_err() {
            return;
        }
    }
}

/// Makes every member's [`HealthFlag::DiscoveryWarning`] match what discovery
/// reports (the endpoint's [`discovery_health`](lb_core::Endpoint::discovery_health)),
/// raised on warning members and cleared on all others. Discovery is its only owner.
fn sync_degraded_flags(set: &EndpointSet) {
    for member in set {
        let warning = member.endpoint().discovery_health() == DiscoveryHealth::Warning;
        member.state().set_flag(HealthFlag::DiscoveryWarning, warning);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use lb_core::{Endpoint, HealthStatus, ManualClock};
    use std::net::SocketAddr;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[tokio::test]
    async fn a_burst_is_published_once_and_state_carries_over() {
        let (tx, rx) = futures_channel();
        let mut snapshots = watch_snapshots(rx, ManualClock::new());
        tx.send(Change::Snapshot(vec![ep(1), ep(2)])).unwrap();
        snapshots.changed().await.unwrap();
        let first = snapshots.borrow_and_update().clone();
        assert_eq!(first.len(), 2);
        first.get(0).unwrap().state().set_flag(HealthFlag::Ejected, true);

        tx.send(Change::Add(ep(3))).unwrap();
        tx.send(Change::Remove(ep(2).id().clone())).unwrap();
        tx.send(Change::Update(ep(1).with_weight(4))).unwrap();
        snapshots.changed().await.unwrap();
        let second = snapshots.borrow_and_update().clone();
        let ports: Vec<u16> = second.iter().map(|m| m.endpoint().address().port()).collect();
        assert_eq!(ports, [1, 3], "the three queued changes arrive as one snapshot");
        assert_eq!(second.get(0).unwrap().endpoint().weight(), 4);
        assert_eq!(second.get(0).unwrap().state().status(), HealthStatus::Ejected, "live state survived");
    }

    /// Sends `warned` and a plain endpoint, then `passing` in `warned`'s place: the
    /// first is degraded, then healthy again; the plain one stays healthy.
    async fn degraded_then_cleared(warned: Endpoint, passing: Endpoint) {
        let (tx, rx) = futures_channel();
        let mut snapshots = watch_snapshots(rx, ManualClock::new());
        tx.send(Change::Snapshot(vec![warned, ep(2)])).unwrap();
        snapshots.changed().await.unwrap();
        let set = snapshots.borrow_and_update().clone();
        assert_eq!(set.get(0).unwrap().state().status(), HealthStatus::Degraded);
        assert_eq!(set.get(1).unwrap().state().status(), HealthStatus::Healthy);
        tx.send(Change::Update(passing)).unwrap();
        snapshots.changed().await.unwrap();
        assert_eq!(snapshots.borrow().get(0).unwrap().state().status(), HealthStatus::Healthy);
    }

    #[tokio::test]
    async fn warning_discovery_health_raises_and_clears_the_degraded_flag() {
        degraded_then_cleared(
            ep(1).with_discovery_health(DiscoveryHealth::Warning),
            ep(1).with_discovery_health(DiscoveryHealth::Passing),
        )
        .await;
    }

    #[tokio::test]
    async fn the_stream_ending_keeps_the_last_set() {
        let mut snapshots =
            watch_snapshots(stream::iter([Change::Snapshot(vec![ep(1)])]), ManualClock::new());
        snapshots.changed().await.unwrap();
        assert_eq!(snapshots.borrow_and_update().len(), 1);
        assert!(snapshots.changed().await.is_err(), "the sender is gone once the stream ends");
        assert_eq!(snapshots.borrow().len(), 1, "the last set stays readable");
    }

    /// A change channel whose receiving end is a stream.
    fn futures_channel()
    -> (tokio::sync::mpsc::UnboundedSender<Change>, impl Stream<Item = Change> + Send + 'static) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        (tx, stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
