//! Following discovery: every endpoint set a source publishes is handed to
//! an installer, which builds and swaps in the next generation.

use std::ops::ControlFlow;
use std::sync::Arc;

use lb_core::{Clock, EndpointSet};
use lb_discovery::{ChangeStream, fold_snapshots};
use tokio::sync::watch;

/// Hands every set published on `endpoints` to `install`, until the sender
/// goes away (the last set stays installed) or `install` breaks.
pub async fn follow(
    mut endpoints: watch::Receiver<EndpointSet>,
    mut install: impl FnMut(EndpointSet) -> ControlFlow<()>,
) {
    while endpoints.changed().await.is_ok() {
        let set = endpoints.borrow_and_update().clone();
        if install(set).is_break() {
            return;
        }
    }
}

/// Folds the changes of `stream` onto `from` (the installed set, so
/// endpoints that stay keep their live state) and hands every resulting set
/// to `install`, as [`follow`] does. Folding and installing run in the one
/// future: dropping it stops both.
pub async fn follow_changes(
    stream: ChangeStream,
    from: EndpointSet,
    clock: Arc<dyn Clock>,
    install: impl FnMut(EndpointSet) -> ControlFlow<()>,
) {
    let (publish, snapshots) = watch::channel(from);
    let fold = fold_snapshots(stream, clock, publish);
    let follow = follow(snapshots, install);
    tokio::pin!(fold, follow);
    let mut folding = true;
    loop {
        tokio::select! {
            () = &mut fold, if folding => folding = false,
            () = &mut follow => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use lb_core::{Change, Endpoint, ManualClock, Timestamp};

    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(std::net::SocketAddr::from(([10, 0, 0, 1], port)))
    }

    #[tokio::test]
    async fn changes_are_folded_onto_the_installed_set_and_installed_in_order() {
        let installed = EndpointSet::new([ep(1)], Timestamp::ZERO);
        let changes = futures_stream([Change::Add(ep(2)), Change::Remove(ep(1).id().clone())]);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        follow_changes(changes, installed, clock, move |set| {
            seen.lock().unwrap().push(set.iter().map(|m| m.endpoint().address().port()).collect::<Vec<_>>());
            ControlFlow::Continue(())
        })
        .await;
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.last().unwrap(), &[2], "the source ended; its last set is the one installed");
        assert!(sizes.iter().all(|ports| !ports.is_empty()));
    }

    #[tokio::test]
    async fn an_installer_that_breaks_stops_following() {
        let (publish, endpoints) = watch::channel(EndpointSet::empty());
        let calls = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&calls);
        publish.send(EndpointSet::new([ep(1)], Timestamp::ZERO)).unwrap();
        follow(endpoints, move |_| {
            *counted.lock().unwrap() += 1;
            ControlFlow::Break(())
        })
        .await;
        assert_eq!(*calls.lock().unwrap(), 1);
        assert!(publish.is_closed(), "the receiver went away with the follower");
    }

    /// A change stream that yields `changes`, then ends.
    fn futures_stream(changes: impl IntoIterator<Item = Change>) -> ChangeStream {
        Box::pin(futures_util::stream::iter(changes.into_iter().collect::<Vec<_>>()))
    }
}
