//! Protocol upgrades (WebSocket and friends): after both sides agreed on
//! `101 Switching Protocols`, bytes are copied both ways until either closes.
//! The copies live in one set per proxy, so a stop drains them like
//! connections and drops what is still open at the drain deadline.

use std::sync::{Mutex, PoisonError};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;

/// The upgraded connections of one proxy.
#[derive(Debug, Default)]
pub(crate) struct Tunnels(Mutex<JoinSet<()>>);

impl Tunnels {
    /// Starts copying between the client's and the endpoint's upgraded connections.
    pub(crate) fn spawn(&self, client: OnUpgrade, upstream: OnUpgrade) {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap the ended ones, so the set holds only open tunnels.
        while open.try_join_next().is_some() {}
        open.spawn(copy(client, upstream));
    }

    /// The tunnels open now, for a stop to drain.
    pub(crate) fn take(&self) -> JoinSet<()> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

async fn copy(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "upgrade did not complete");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}
