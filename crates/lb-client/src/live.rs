//! The client's background tasks over lb-engine's [`Live`] generations:
//! following a watched endpoint set, stopped when their owner is dropped.

use std::ops::ControlFlow;
use std::sync::Arc;

use lb_core::{Build, EndpointSet};
use lb_engine::{Extra, Live};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Follows `endpoints`, rebuilding `live` on every published set, until the
/// sender goes away or `live` is dropped.
pub(crate) fn follow<A, E>(live: &Arc<Live<A, E>>, endpoints: watch::Receiver<EndpointSet>) -> AbortOnDrop
where
    A: Build + Send + Sync + 'static,
    E: Extra,
{
    let live = Arc::downgrade(live);
    AbortOnDrop(tokio::spawn(lb_engine::follow::follow(endpoints, move |set| match live.upgrade() {
        Some(live) => {
            live.update(set);
            ControlFlow::Continue(())
        }
        None => ControlFlow::Break(()),
    })))
}

/// Aborts a background task when the owner is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
