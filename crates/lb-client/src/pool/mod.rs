//! The reqwest pool: a request addressed to a logical service
//! (`http://users/v1/me`) is sent to an endpoint picked for that request.
//!
//! Each attempt loads the current generation (one lock-free load), picks an
//! endpoint through the algorithm, asks that endpoint's circuit breaker for
//! admission, points the URL at the endpoint and sends it with the shared
//! reqwest client. The outcome and latency go back to the balancer
//! ([`OwnedPick::complete`](lb_core::OwnedPick::complete)), to the breaker
//! and to the outlier detector. A failed idempotent request is retried on
//! another endpoint, after a jittered backoff, while the shared retry
//! budget allows it and the request's deadline has time left.

mod body;
mod builder;
mod hedge;
mod request;
mod send;
mod url;

use std::sync::Arc;

use arc_swap::ArcSwap;
use lb_core::{Balancer, Build, Clock, Endpoint, EndpointSet, HealthStatus};

pub use builder::PoolBuilder;
pub use request::RequestBuilder;

use crate::attempt::Guard;
use crate::live::AbortOnDrop;
use crate::resilience::Resilience;
use lb_engine::Live;

/// State shared by every clone of a [`Pool`].
pub(crate) struct Shared<A: Build> {
    pub(crate) service: Arc<str>,
    pub(crate) scheme: &'static str,
    pub(crate) live: Arc<Live<A, Guard>>,
    /// The discovery source's status, for a pool built with [`PoolBuilder::source`].
    pub(crate) discovery: Option<lb_discovery::SourceStatus>,
    pub(crate) client: Arc<ArcSwap<reqwest::Client>>,
    pub(crate) resilience: Arc<Resilience>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: builder::Settings,
    /// Where call spans go, if tracing is on.
    pub(crate) tracing: Option<crate::otel::Tracing>,
    pub(crate) _tasks: Vec<AbortOnDrop>,
}

/// A client-side load-balancing HTTP client for one logical service.
///
/// Cheap to clone (one reference count); clones share endpoints, health,
/// budget and connections. Build it with [`Pool::builder`] inside a tokio
/// runtime; it runs background tasks (discovery, connection rotation, outlier
/// sweeps) that stop when the last clone is dropped.
pub struct Pool<A: Build> {
    pub(crate) shared: Arc<Shared<A>>,
}

impl<A: Build> Clone for Pool<A> {
    fn clone(&self) -> Self {
        Pool { shared: Arc::clone(&self.shared) }
    }
}

impl<A: Build> std::fmt::Debug for Pool<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("service", &self.shared.service).finish_non_exhaustive()
    }
}

impl<A: Build + 'static> Pool<A> {
    /// Starts a builder for the service called `service` (the host name the
    /// application writes in URLs), picking with `algorithm`.
    pub fn builder(service: &str, algorithm: A) -> PoolBuilder<A> {
        PoolBuilder::new(service, algorithm)
    }

    /// The logical service name.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The endpoints currently known, with their health as the balancer sees it.
    pub fn endpoints(&self) -> Vec<(Endpoint, HealthStatus)> {
        let generation = self.shared.live.load();
        generation.endpoints().iter().map(|m| (m.endpoint().clone(), m.state().status())).collect()
    }

    /// How the discovery source is doing (when it last answered, its last
    /// error, failed rounds in a row), for a pool built with
    /// [`PoolBuilder::source`]; `None` otherwise. A failing source keeps
    /// the last good endpoints, so this is where its failure shows.
    pub fn discovery_status(&self) -> Option<lb_discovery::SourceReport> {
        self.shared.discovery.as_ref().map(lb_discovery::SourceStatus::get)
    }

    /// Replaces the endpoints by hand (when the pool does not follow a
    /// discovery channel, or to override it until its next update).
    pub fn set_endpoints(&self, endpoints: impl IntoIterator<Item = Endpoint>) {
        let now = self.shared.clock.now();
        let current = self.shared.live.load();
        let next: EndpointSet = current.endpoints().replaced(endpoints, now);
        self.shared.live.update(next);
    }

    /// A request with `method` to `target`: a path (`/v1/me`) or a URL whose
    /// host is the service name (`http://users/v1/me`).
    pub fn request(&self, method: reqwest::Method, target: &str) -> RequestBuilder<A> {
        RequestBuilder::new(self.clone(), method, target)
    }

    /// A `GET` request; see [`Pool::request`].
    pub fn get(&self, target: &str) -> RequestBuilder<A> {
        self.request(reqwest::Method::GET, target)
    }

    /// A `POST` request (not retried after it was sent, unless marked idempotent).
    pub fn post(&self, target: &str) -> RequestBuilder<A> {
        self.request(reqwest::Method::POST, target)
    }

    /// A `PUT` request.
    pub fn put(&self, target: &str) -> RequestBuilder<A> {
        self.request(reqwest::Method::PUT, target)
    }

    /// A `DELETE` request.
    pub fn delete(&self, target: &str) -> RequestBuilder<A> {
        self.request(reqwest::Method::DELETE, target)
    }

    /// Sends a request built elsewhere, whose URL's host is the service
    /// name. Retried only if its body can be cloned (not a stream).
    pub async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, crate::Error> {
        send::send(self, request, None, None).await
    }
}
