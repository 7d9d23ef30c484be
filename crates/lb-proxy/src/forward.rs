//! The attempt loop every request goes through, whichever engine carries it.
//!
//! Per try: pick an endpoint the breaker admits and that is under its
//! in-flight limit, hand the request to the engine's [`Exchange`], and
//! report how it went to the breaker, the metrics, the outlier detector and
//! the balancer. Failures before the response starts go again on another
//! endpoint while the policy, the budget, the deadline and the body's replay
//! buffer allow, under lb-health's retry engine (see [`crate::retry`]).
//! Failures on the client's side (an aborted upload, a malformed body) end
//! the request at once and are never charged to the endpoint.

use std::time::Duration;

use http::{Method, StatusCode};
use lb_core::{Exclusions, Outcome, PickContext, Timestamp};
use lb_engine::Retries;

use crate::attempt::Attempt;
use crate::otel::RequestSpan;
use crate::runtime::Runtime;
use crate::upstream::{Backend, Upstream};

/// Something on the client's side that ends a request: not the endpoint's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// The client went away mid-request (nginx's 499).
    Aborted,
    /// The client stalled sending its body.
    Timeout,
    /// The body's framing was malformed.
    BadBody,
    /// The body grew past `max_body_bytes`.
    TooLarge,
}

impl ClientFault {
    /// The status the request counts as (and is answered with, if the client can still hear it).
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ClientFault::Aborted => crate::telemetry::CLIENT_CLOSED_REQUEST,
            ClientFault::Timeout => StatusCode::REQUEST_TIMEOUT,
            ClientFault::BadBody => StatusCode::BAD_REQUEST,
            ClientFault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn text(self) -> &'static str {
        match self {
            ClientFault::Aborted => "",
            ClientFault::Timeout => "timed out reading the request body\n",
            ClientFault::BadBody => "malformed request body\n",
            ClientFault::TooLarge => "request body too large\n",
        }
    }
}

/// How one try ended without an answer to relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TryError {
    /// No connection could be made; nothing was sent.
    Connect,
    /// No response head within the try's time.
    Timeout,
    /// The connection broke before a response head.
    Reset,
    /// The endpoint sent a malformed or ambiguously framed response head.
    BadResponse,
    /// The client's side failed.
    Client(ClientFault),
}

impl TryError {
    fn outcome(self) -> Outcome {
        match self {
            TryError::Connect => Outcome::ConnectError,
            TryError::Timeout => Outcome::Timeout,
            TryError::Reset | TryError::BadResponse => Outcome::Reset,
            TryError::Client(_) => Outcome::LocallyRejected,
        }
    }

    /// The proxy's own answer for this failure.
    pub(crate) fn status_and_text(self) -> (StatusCode, &'static str) {
        match self {
            TryError::Connect => (StatusCode::BAD_GATEWAY, "could not connect to the upstream\n"),
            TryError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "the upstream did not answer in time\n"),
            TryError::Reset => (StatusCode::BAD_GATEWAY, "the upstream connection failed\n"),
            TryError::BadResponse => (StatusCode::BAD_GATEWAY, "the upstream sent an invalid response\n"),
            TryError::Client(fault) => (fault.status(), fault.text()),
        }
    }
}

/// One request as the attempt loop sees it; each engine has its own.
pub(crate) trait Exchange {
    /// A response head an endpoint sent, and what its body needs to be relayed.
    type Answer;

    /// The request's method (retries of non-idempotent methods are opt-in).
    fn method(&self) -> &Method;

    /// Whether another try could still send the whole request.
    fn replayable(&self) -> bool;

    /// Sends the request to `backend` and waits for its response head.
    /// `now` is when the try started; `timeout` bounds connecting and the
    /// wait for the head; an upload in between is bounded by the body
    /// timeouts instead.
    async fn send(
        &mut self,
        backend: &Backend,
        now: Timestamp,
        timeout: Duration,
    ) -> Result<Self::Answer, TryError>;

    /// The status of an answer.
    fn status(answer: &Self::Answer) -> StatusCode;

    /// The wait an answer's `Retry-After` asks for (delta-seconds form).
    fn retry_after(answer: &Self::Answer) -> Option<Duration>;
}

/// How the attempt loop ended.
pub(crate) enum Forwarded<A> {
    /// An endpoint answered: relay `answer`, then finish `attempt` with how its body ended.
    Answer { answer: A, attempt: Attempt },
    /// No answer: the proxy responds itself.
    Local { status: StatusCode, text: &'static str },
}

/// Runs the attempt loop for one request to `upstream`; `key` is its hash
/// key, `arrived` when its head was read.
pub(crate) async fn forward<E: Exchange>(
    rt: &Runtime,
    upstream: &Upstream,
    exchange: &mut E,
    key: Option<&[u8]>,
    arrived: Timestamp,
    span: &mut Option<RequestSpan>,
) -> Forwarded<E::Answer> {
    let settings = &upstream.settings;
    // The request's time counts from its head's arrival.
    let deadline = arrived + settings.timeouts.request;
    let method = lb_health::Method::parse(exchange.method().as_str());
    let mut retries = Retries::new(&upstream.retry_policy, method, Some(deadline));
    let mut tried = Exclusions::new();
    let mut last_error = TryError::Connect;
    let mut budget_deposited = false;
    let generation = upstream.current.load();
    // The first try starts as the head arrived (one clock read fewer); a
    // retry reads the clock after its backoff.
    let mut now = arrived;
    loop {
        let panic = upstream.in_panic();
        let ctx = PickContext::new().with_health_ignored(panic);
        let ctx = match key {
            Some(k) => ctx.with_key(k),
            None => ctx,
        };
        let Some(attempt) = Attempt::start(&generation, ctx, &tried, &rt.clock, now) else {
            if tried.is_empty() {
                upstream.metrics.refused();
                return Forwarded::Local {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    text: "no healthy endpoint is available\n",
                };
            }
            break;
        };
        if !budget_deposited {
            upstream.budget().deposit(now);
            budget_deposited = true;
            if panic {
                upstream.metrics.panicked();
            }
        }
        tried.push(attempt.index());
        let left = deadline.saturating_since(now);
        let sent = exchange.send(attempt.extra(), now, upstream.try_timeout(left)).await;
        let (outcome, status, error) = match sent {
            Ok(answer) => {
                let status = E::status(&answer);
                let code = status.as_u16();
                let outcome = Outcome::from_status(code);
                // Past the deadline the backend's own answer beats a 504.
                let wait = if exchange.replayable() && Retries::may_retry_answer(code) {
                    let now = rt.clock.now();
                    let asked = E::retry_after(&answer);
                    retries.after_answer(code, asked, now, upstream.budget(), &upstream.jitter)
                } else {
                    None
                };
                match wait {
                    Some(wait) => {
                        drop(answer);
                        attempt.finish(outcome, status);
                        note_retry(upstream, span, retries.attempt(), outcome);
                        pause(wait).await;
                        now = rt.clock.now();
                        continue;
                    }
                    None => return Forwarded::Answer { answer, attempt },
                }
            }
            Err(TryError::Client(fault)) => {
                attempt.cancel(fault.status());
                let (status, text) = TryError::Client(fault).status_and_text();
                return Forwarded::Local { status, text };
            }
            Err(error) => (error.outcome(), error.status_and_text().0, error),
        };
        // One clock read for the try's end and the retry decision.
        let ended = rt.clock.now();
        attempt.finish_at(outcome, status, ended);
        last_error = error;
        if !exchange.replayable() {
            break;
        }
        let Some(wait) = retries.after_failure(outcome, ended, upstream.budget(), &upstream.jitter) else {
            break;
        };
        note_retry(upstream, span, retries.attempt(), outcome);
        pause(wait).await;
        now = rt.clock.now();
    }
    let (status, text) = last_error.status_and_text();
    Forwarded::Local { status, text }
}

/// Counts a retry; `attempt` is the number of the try about to start.
fn note_retry(upstream: &Upstream, span: &mut Option<RequestSpan>, attempt: u32, outcome: Outcome) {
    upstream.metrics.retries.increment(1);
    if let Some(span) = span.as_mut() {
        span.retry(attempt as usize - 1, outcome);
    }
}

/// Waits before a retry; an immediate retry does not yield.
async fn pause(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}
