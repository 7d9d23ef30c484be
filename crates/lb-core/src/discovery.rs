//! What discovery sources say when the endpoints of a service change.
//!
//! The async stream that carries these lives in `lb-discovery`; the events
//! are here so balancers and consumers agree on them without tokio.

use alloc::vec::Vec;

use crate::endpoint::{Endpoint, EndpointId};

/// One change to a service's endpoints.
///
/// A source sends a [`Change::Snapshot`] first, then increments. Consumers
/// fold them into an [`EndpointSet`](crate::EndpointSet) with
/// [`EndpointSet::applied`](crate::EndpointSet::applied). An empty snapshot
/// is an explicit "zero endpoints"; a failing source sends nothing instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The complete current list, replacing whatever came before.
    Snapshot(Vec<Endpoint>),
    /// A new endpoint.
    Add(Endpoint),
    /// An endpoint whose address, weight or labels changed (matched by id).
    Update(Endpoint),
    /// An endpoint that left.
    Remove(EndpointId),
}
