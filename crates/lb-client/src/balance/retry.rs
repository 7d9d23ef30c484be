//! Retries for a [`Balance`] whose requests can be cloned, under the one
//! retry engine (`lb_health::RetryPolicy`) the pool and lb-proxy use.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lb_core::{Build, Exclusions, Outcome};
use lb_engine::Retries;
use lb_health::{Method, RetryPolicy};
use tower::{BoxError, Service};

use super::{Balance, RequestKey, ResponseOutcome};

/// What a retry needs to know of a request: its method, for the rule that
/// only idempotent ones go again after a server saw them.
pub trait RequestMethod {
    /// The request's method.
    fn method(&self) -> Method;
}

impl<B> RequestMethod for http::Request<B> {
    fn method(&self) -> Method {
        Method::parse(self.method().as_str())
    }
}

/// A [`Balance`] that sends a failed request again, to an endpoint it has
/// not tried, when its [`RetryPolicy`] and the balancer's retry budget
/// allow: the backoff between tries (none after a connect error), the
/// attempt limit, the deadline and the idempotency rule are the policy's,
/// exactly as in the reqwest pool. (The response type is generic, so a
/// `Retry-After` header is not read here.) Each try sends a clone of the
/// request. Make one with [`Balance::with_retries`].
pub struct Retrying<A: Build, S, K> {
    balance: Balance<A, S, K>,
    policy: Arc<RetryPolicy>,
}

impl<A: Build, S, K> Clone for Retrying<A, S, K> {
    fn clone(&self) -> Self {
        Retrying { balance: self.balance.clone(), policy: Arc::clone(&self.policy) }
    }
}

impl<A: Build, S, K> std::fmt::Debug for Retrying<A, S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrying").field("balance", &self.balance).field("policy", &self.policy).finish()
    }
}

impl<A: Build, S, K> Balance<A, S, K> {
    /// Retries failed requests under `policy` (see [`Retrying`]); the
    /// request type must be `Clone`.
    pub fn with_retries(self, policy: RetryPolicy) -> Retrying<A, S, K> {
        Retrying { balance: self, policy: Arc::new(policy) }
    }
}

impl<A, S, K, Req> Service<Req> for Retrying<A, S, K>
where
    A: Build + 'static,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: ResponseOutcome + Send,
    K: RequestKey<Req> + Send + Sync + 'static,
    Req: RequestMethod + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<Req>::poll_ready(&mut self.balance, cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let (balance, policy) = (self.balance.clone(), Arc::clone(&self.policy));
        Box::pin(async move {
            let generation = balance.generation();
            let now = || balance.shared_clock().now();
            balance.resilience().deposit(now());
            let mut retries = Retries::new(&policy, request.method(), None);
            let mut excluded = Exclusions::new();
            loop {
                let (result, outcome) = balance.dispatch(&generation, request.clone(), &mut excluded)?.await;
                let (budget, seeds) = (balance.resilience().budget(), balance.resilience().jitter());
                let status = result.as_ref().ok().and_then(ResponseOutcome::status_code);
                let wait = match status {
                    Some(code) if outcome != Outcome::ConnectError => {
                        retries.after_answer(code, None, now(), budget, seeds)
                    }
                    _ => retries.after_failure(outcome, now(), budget, seeds),
                };
                let Some(wait) = wait else { return result };
                balance.resilience().labels().retried();
                tokio::time::sleep(wait).await;
            }
        })
    }
}
