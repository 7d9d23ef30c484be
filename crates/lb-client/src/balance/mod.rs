//! A tower [`Service`] that balances requests over one inner service per
//! endpoint: a hyper client, a tonic channel, anything cloneable.
//!
//! Each call loads the current generation, picks an endpoint (with the
//! request's affinity key, if a [`RequestKey`] is set), asks its breaker,
//! and drives a clone of that endpoint's service with `oneshot`. The outcome
//! and latency go back to the balancer, the breaker, the outlier detector
//! and the metrics, exactly as in the reqwest pool.
//!
//! # Readiness
//!
//! `poll_ready` answers for the balancer as a whole, honestly: it is ready
//! only while at least one endpoint is eligible (not ejected, not failing
//! its active check). With none it returns `Pending` and checks again after
//! a short interval (discovery may add endpoints, an ejection may end), so a
//! caller's timeout or load shedder decides how long to wait. The endpoint
//! itself is picked in `call`, where the request (and its key) is known;
//! the chosen endpoint's own readiness is awaited inside the response
//! future, which is how services built to be cloned per request (tonic
//! `Channel`, hyper-util `Client`) are meant to be driven.

mod classify;
mod layer;
mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use lb_core::{Balancer, Build, Clock, Endpoint, Outcome};
use tower::{BoxError, Service, ServiceExt};

pub use classify::{HeaderKey, NoKey, RequestKey, ResponseOutcome};
pub use layer::{BalanceBuilder, BalanceLayer};
pub use retry::{RequestMethod, Retrying};

use crate::Error;
use crate::attempt::{Guard, keyed};
use crate::classify::error_chain;
use crate::live::AbortOnDrop;
use crate::resilience::Resilience;
use lb_core::Exclusions;
use lb_engine::{Attempt, EndpointGuard, Extra, Generation, Live};

/// Makes the inner service for one endpoint. Any
/// `Fn(&Endpoint) -> S + Send + Sync + 'static` closure is one.
pub trait MakeEndpoint: Send + Sync + 'static {
    /// The per-endpoint service.
    type Service;

    /// Makes the service that talks to `endpoint`. Called off the hot path,
    /// when discovery adds an endpoint; services of endpoints that stay are reused.
    fn make(&self, endpoint: &Endpoint) -> Self::Service;
}

impl<F, S> MakeEndpoint for F
where
    F: Fn(&Endpoint) -> S + Send + Sync + 'static,
{
    type Service = S;

    fn make(&self, endpoint: &Endpoint) -> S {
        self(endpoint)
    }
}

/// What the balancer keeps per endpoint: the inner service and its guard.
#[derive(Clone)]
pub(crate) struct Slot<S> {
    pub(crate) service: S,
    pub(crate) guard: Guard,
}

impl<S: Clone + Send + Sync + 'static> Extra for Slot<S> {
    type Status = crate::telemetry::Status;

    fn guard(&self) -> &EndpointGuard {
        self.guard.guard()
    }
    fn started(&self) {
        self.guard.started();
    }
    fn finished(&self, outcome: Outcome, status: Self::Status, latency: Duration) {
        self.guard.finished(outcome, status, latency);
    }
    fn cancelled(&self, status: Option<Self::Status>) {
        self.guard.cancelled(status);
    }
    fn ejected(&self) {
        self.guard.ejected();
    }
    fn breaker_changed(&self, gauge: u8) {
        self.guard.breaker_changed(gauge);
    }
    fn eligibility(&self, eligible: bool) {
        self.guard.eligibility(eligible);
    }
}

/// Background tasks started on the first `poll_ready`, so building a
/// balancer never needs a runtime.
type Starter = Box<dyn FnOnce() -> Vec<AbortOnDrop> + Send>;

pub(crate) struct Shared<A: Build, S, K> {
    service: Arc<str>,
    live: Arc<Live<A, Slot<S>>>,
    resilience: Arc<Resilience>,
    clock: Arc<dyn Clock>,
    key: K,
    recheck: Duration,
    started: AtomicBool,
    starter: Mutex<Option<Starter>>,
    tasks: Mutex<Vec<AbortOnDrop>>,
}

impl<A: Build, S, K> Shared<A, S, K> {
    /// Starts the background tasks once, if a tokio runtime is at hand.
    fn ensure_started(&self) {
        if self.started.load(Ordering::Acquire) || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let starter = self.starter.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(start) = starter {
            let tasks = start();
            self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(tasks);
        }
        self.started.store(true, Ordering::Release);
    }
}

/// A balancer over one `S` per endpoint; build it with [`Balance::builder`]
/// or through a [`BalanceLayer`]. Cloning shares everything but the
/// readiness timer.
pub struct Balance<A: Build, S, K = NoKey> {
    shared: Arc<Shared<A, S, K>>,
    recheck: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<A: Build, S, K> Clone for Balance<A, S, K> {
    fn clone(&self) -> Self {
        Balance { shared: Arc::clone(&self.shared), recheck: None }
    }
}

impl<A: Build, S, K> std::fmt::Debug for Balance<A, S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balance").field("service", &self.shared.service).finish_non_exhaustive()
    }
}

impl<A: Build + 'static> Balance<A, (), NoKey> {
    /// Starts a builder for the logical service `service`, picking with `algorithm`.
    pub fn builder(service: &str, algorithm: A) -> BalanceBuilder<A, NoKey> {
        BalanceBuilder::new(service, algorithm)
    }
}

impl<A: Build + 'static, S: Clone + Send + Sync + 'static, K> Balance<A, S, K> {
    /// The endpoints currently known, with their health. Called inside a
    /// tokio runtime, it also starts following discovery if nothing has yet.
    pub fn endpoints(&self) -> Vec<(Endpoint, lb_core::HealthStatus)> {
        self.shared.ensure_started();
        let generation = self.shared.live.load();
        generation.endpoints().iter().map(|m| (m.endpoint().clone(), m.state().status())).collect()
    }
}

impl<A, S, K, Req> Service<Req> for Balance<A, S, K>
where
    A: Build + 'static,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: ResponseOutcome + Send,
    K: RequestKey<Req>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.shared.ensure_started();
        loop {
            if self.shared.live.load().any_eligible() {
                self.recheck = None;
                return Poll::Ready(Ok(()));
            }
            let every = self.shared.recheck;
            let timer = self.recheck.get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Time to look again; arm a fresh timer if still nothing.
                Poll::Ready(()) => self.recheck = None,
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let generation = self.shared.live.load();
        let mut excluded = Exclusions::new();
        match self.dispatch(&generation, request, &mut excluded) {
            Ok(sent) => Box::pin(async move { sent.await.0 }),
            Err(error) => Box::pin(async move { Err(error.into()) }),
        }
    }
}

/// A generation of the balancer over per-endpoint services `S`.
pub(crate) type BalanceGeneration<A, S> = Generation<<A as Build>::Output, Slot<S>>;

impl<A: Build + 'static, S: Clone + Send + Sync + 'static, K> Balance<A, S, K> {
    /// The current generation; retries keep one so indices stay meaningful.
    pub(crate) fn generation(&self) -> Arc<BalanceGeneration<A, S>> {
        self.shared.live.load()
    }

    /// Starts following discovery now rather than at the first `poll_ready`
    /// (a no-op outside a tokio runtime).
    pub(crate) fn start(&self) {
        self.shared.ensure_started();
    }

    /// The service's name (the `upstream` label).
    pub(crate) fn service_name(&self) -> &str {
        &self.shared.service
    }

    /// The clock every health mechanism of this balancer reads.
    pub(crate) fn shared_clock(&self) -> &dyn Clock {
        &*self.shared.clock
    }

    /// The upstream's health machinery (its retry budget, for callers that retry).
    pub(crate) fn resilience(&self) -> &Resilience {
        &self.shared.resilience
    }

    /// Picks an endpoint not in `excluded` (and adds it there), and returns
    /// the future that sends `request` to it and reports the outcome.
    pub(crate) fn dispatch<Req>(
        &self,
        generation: &Arc<BalanceGeneration<A, S>>,
        request: Req,
        excluded: &mut Exclusions,
    ) -> Result<impl Future<Output = (Result<S::Response, BoxError>, Outcome)> + Send + 'static, Error>
    where
        S: Service<Req> + Clone + Send + Sync + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        S::Response: ResponseOutcome + Send,
        K: RequestKey<Req>,
        Req: Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let key = shared.key.key(&request);
        let now = shared.clock.now();
        let Some(attempt) = Attempt::start(generation, keyed(key), excluded, &shared.clock, now) else {
            shared.resilience.labels().refused();
            return Err(Error::NoEndpoint(shared.service.to_string()));
        };
        excluded.push(attempt.index());
        let service = attempt.extra().service.clone();
        Ok(async move {
            let result = service.oneshot(request).await.map_err(Into::into);
            let (outcome, status) = match &result {
                Ok(response) => (response.outcome(), response.status_code()),
                Err(error) => (error_chain(&**error), None),
            };
            let status = crate::telemetry::Status::of(status, outcome);
            attempt.finish(outcome, status);
            (result, outcome)
        })
    }
}
