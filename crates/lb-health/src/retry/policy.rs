//! Which failed requests to retry, where, and when.

use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use lb_core::{Outcome, Timestamp};

use super::backoff::Backoff;
use super::gate::RetryGate;
use crate::rng::Rng;

/// gRFC A6 clamps `maxAttempts` to 5; we do too, for every protocol, so
/// nested layers cannot multiply into a storm.
pub const MAX_ATTEMPTS: u32 = 5;

/// An HTTP request method; only what retry decisions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// POST
    Post,
    /// PATCH
    Patch,
    /// CONNECT
    Connect,
    /// Any extension method.
    Other,
}

impl Method {
    /// Reads a method token (case-sensitive, as HTTP says).
    pub fn parse(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Idempotent per RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
    pub const fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get | Method::Head | Method::Options | Method::Trace | Method::Put | Method::Delete
        )
    }
}

impl From<&str> for Method {
    fn from(token: &str) -> Self {
        Method::parse(token)
    }
}

/// Which failures are worth another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    /// The connection could not be made (the request was never sent).
    pub connect_error: bool,
    /// The connection broke.
    pub reset: bool,
    /// The per-try timeout fired.
    pub timeout: bool,
    /// Any 5xx answer.
    pub any_5xx: bool,
    /// 502, 503 and 504.
    pub gateway_error: bool,
    /// Further statuses, such as 429 or 409.
    pub statuses: Vec<u16>,
}

impl Default for RetryOn {
    /// Connect errors, resets, timeouts and gateway errors (502, 503, 504).
    fn default() -> Self {
        RetryOn {
            connect_error: true,
            reset: true,
            timeout: true,
            any_5xx: false,
            gateway_error: true,
            statuses: Vec::new(),
        }
    }
}

impl RetryOn {
    /// Nothing is retried.
    pub fn nothing() -> Self {
        RetryOn {
            connect_error: false,
            reset: false,
            timeout: false,
            any_5xx: false,
            gateway_error: false,
            statuses: Vec::new(),
        }
    }

    /// Whether `outcome` is one of the chosen failures.
    pub fn matches(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::ConnectError => self.connect_error,
            Outcome::Reset => self.reset,
            Outcome::Timeout => self.timeout,
            Outcome::Http5xx(status) => {
                self.any_5xx
                    || self.gateway_error && outcome.is_gateway_error()
                    || self.statuses.contains(&status)
            }
            Outcome::Success | Outcome::LocallyRejected => false,
        }
    }

    /// Whether an answer with `status` is one of the chosen failures.
    pub fn matches_status(&self, status: u16) -> bool {
        self.statuses.contains(&status) || self.matches(Outcome::from_status(status))
    }
}

/// How to retry one kind of request.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; clamped to 1..=5.
    pub max_attempts: u32,
    /// Bound on each attempt, if any.
    pub per_try_timeout: Option<Duration>,
    /// Bound on all attempts together, measured from [`start`](Self::start).
    pub deadline: Option<Duration>,
    /// Which failures to retry.
    pub retry_on: RetryOn,
    /// Retry non-idempotent methods too (connect errors are always safe).
    pub retry_non_idempotent: bool,
    /// The wait between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 3 attempts, no per-try timeout or deadline, [`RetryOn::default`],
    /// idempotent methods only, Envoy's backoff.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            per_try_timeout: None,
            deadline: None,
            retry_on: RetryOn::default(),
            retry_non_idempotent: false,
            backoff: Backoff::default(),
        }
    }
}

impl RetryPolicy {
    /// Starts one request with `method` at `now`; its first attempt is under way.
    pub fn start(&self, method: Method, now: Timestamp) -> Attempts<'_> {
        Attempts {
            policy: self,
            method,
            deadline: self.deadline.map(|d| now + d),
            attempt: 1,
            committed: false,
            tried: [0; MAX_ATTEMPTS as usize],
            tried_len: 0,
            backoff_step: 0,
            previous_delay: Duration::ZERO,
        }
    }

    fn limit(&self) -> u32 {
        self.max_attempts.clamp(1, MAX_ATTEMPTS)
    }
}

/// The wait a `Retry-After` value asks for (RFC 9110 §10.2.3), in its
/// delta-seconds form: digits only, surrounding spaces allowed. The
/// HTTP-date form, and anything else, gives `None`: the caller then keeps its
/// own backoff.
///
/// ```
/// use core::time::Duration;
/// use lb_health::parse_retry_after;
///
/// assert_eq!(parse_retry_after(b" 2 "), Some(Duration::from_secs(2)));
/// assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
/// assert_eq!(parse_retry_after(b"-1"), None);
/// ```
pub fn parse_retry_after(value: &[u8]) -> Option<Duration> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seconds = digits.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some(Duration::from_secs(seconds))
}

/// Why no further attempt is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    /// Response headers already reached the caller.
    #[error("the response was already committed to the caller")]
    Committed,
    /// The failure is not one the policy retries (or there was no failure).
    #[error("the outcome is not retryable")]
    NotRetryable,
    /// The method is not idempotent and the request may have been processed.
    #[error("the method is not idempotent")]
    NotIdempotent,
    /// Every allowed attempt was made.
    #[error("all attempts were used")]
    AttemptsExhausted,
    /// The backoff would end after the overall deadline.
    #[error("the deadline leaves no time for another attempt")]
    DeadlineExceeded,
    /// The retry budget or throttle said no.
    #[error("the retry budget is spent")]
    BudgetExhausted,
    /// The server's pushback asked for no retry.
    #[error("the server asked for no retry")]
    PushedBack,
}

/// The go-ahead for another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry<'a> {
    /// Wait this long first.
    pub after: Duration,
    /// Endpoint indices already tried: pass to `PickContext::excluding`.
    pub exclude: &'a [usize],
    /// The number of the attempt about to start (2 for the first retry).
    pub attempt: u32,
}

/// The retry state of one request.
#[derive(Clone)]
pub struct Attempts<'p> {
    policy: &'p RetryPolicy,
    method: Method,
    deadline: Option<Timestamp>,
    attempt: u32,
    committed: bool,
    tried: [usize; MAX_ATTEMPTS as usize],
    tried_len: usize,
    /// Retries since the backoff last started over (a server pushback resets it).
    backoff_step: u32,
    previous_delay: Duration,
}

impl fmt::Debug for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempts")
            .field("method", &self.method)
            .field("attempt", &self.attempt)
            .field("committed", &self.committed)
            .field("tried", &self.excluded())
            .finish_non_exhaustive()
    }
}

impl Attempts<'_> {
    /// The number of the current attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Also ends the request at `deadline` (the earlier of it and the
    /// policy's own): for a caller whose clock started before the policy's,
    /// such as a proxy counting from when the request head arrived.
    pub fn until(mut self, deadline: Timestamp) -> Self {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// When the whole request must be over, if the policy has a deadline.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.deadline
    }

    /// How long the current attempt may take at `now`: the per-try timeout,
    /// cut short by the deadline. `None` means unbounded.
    pub fn try_timeout(&self, now: Timestamp) -> Option<Duration> {
        let left = self.deadline.map(|d| d - now);
        match (self.policy.per_try_timeout, left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Notes the endpoint the current attempt went to, so a retry avoids it.
    pub fn tried(&mut self, index: usize) {
        if self.tried_len < self.tried.len() && !self.excluded().contains(&index) {
            self.tried[self.tried_len] = index;
            self.tried_len += 1;
        }
    }

    /// The endpoint indices tried so far.
    pub fn excluded(&self) -> &[usize] {
        &self.tried[..self.tried_len]
    }

    /// Response headers reached the caller: no retry from now on.
    pub fn commit(&mut self) {
        self.committed = true;
    }

    /// Whether the response is committed.
    pub fn is_committed(&self) -> bool {
        self.committed
    }

    /// Decides on another attempt after the current one ended with
    /// `outcome` at `now`; `gate` (a budget, a throttle, or `&()`) is asked last.
    pub fn next<G: RetryGate + ?Sized>(
        &mut self,
        outcome: Outcome,
        now: Timestamp,
        gate: &G,
        rng: &mut impl Rng,
    ) -> Result<Retry<'_>, GiveUp> {
        self.next_if(self.policy.retry_on.matches(outcome), outcome, now, gate, rng)
    }

    /// Like [`next`](Self::next) for an answer whose status is not a 5xx
    /// (429, say), checked against `retry_on.statuses`.
    pub fn next_after_status<G: RetryGate + ?Sized>(
        &mut self,
        status: u16,
        now: Timestamp,
        gate: &G,
        rng: &mut impl Rng,
    ) -> Result<Retry<'_>, GiveUp> {
        let outcome = Outcome::from_status(status);
        self.next_if(self.policy.retry_on.matches_status(status), outcome, now, gate, rng)
    }

    /// Like [`next`](Self::next) when the server sent a retry pushback
    /// (gRPC's `grpc-retry-pushback-ms`): `Some(wait)` replaces the backoff
    /// and restarts it from its first step; `None` (a negative or unreadable
    /// pushback) means the server asks for no retry.
    pub fn next_after_pushback<G: RetryGate + ?Sized>(
        &mut self,
        outcome: Outcome,
        pushback: Option<Duration>,
        now: Timestamp,
        gate: &G,
    ) -> Result<Retry<'_>, GiveUp> {
        let Some(wait) = pushback else { return Err(GiveUp::PushedBack) };
        let retryable = self.policy.retry_on.matches(outcome);
        self.next_as_asked(retryable, outcome, wait, now, gate)
    }

    /// Like [`next_after_status`](Self::next_after_status) for an answer
    /// (429 or 503) that carried `Retry-After`, read with
    /// [`parse_retry_after`]: the server's wait replaces the backoff and
    /// restarts it, as a gRPC pushback does. A wait that would pass the
    /// deadline gives up, so the caller hands the answer on instead.
    pub fn next_after_retry_after<G: RetryGate + ?Sized>(
        &mut self,
        status: u16,
        wait: Duration,
        now: Timestamp,
        gate: &G,
    ) -> Result<Retry<'_>, GiveUp> {
        let retryable = self.policy.retry_on.matches_status(status);
        self.next_as_asked(retryable, Outcome::from_status(status), wait, now, gate)
    }

    /// A retry after the wait the server asked for, which restarts the backoff.
    fn next_as_asked<G: RetryGate + ?Sized>(
        &mut self,
        retryable: bool,
        outcome: Outcome,
        wait: Duration,
        now: Timestamp,
        gate: &G,
    ) -> Result<Retry<'_>, GiveUp> {
        self.decide(retryable, outcome, now, gate, |_| wait)?;
        self.backoff_step = 0;
        self.previous_delay = Duration::ZERO;
        Ok(self.granted(wait))
    }

    /// A connect error is retried at once: nothing reached a backend that a
    /// pause would spare, and the retry goes to another endpoint. It does
    /// not advance the backoff either, so the exponent counts the retries
    /// that waited. Every other retry waits its backoff first.
    fn next_if<G: RetryGate + ?Sized>(
        &mut self,
        retryable: bool,
        outcome: Outcome,
        now: Timestamp,
        gate: &G,
        rng: &mut impl Rng,
    ) -> Result<Retry<'_>, GiveUp> {
        if outcome == Outcome::ConnectError {
            self.decide(retryable, outcome, now, gate, |_| Duration::ZERO)?;
            return Ok(self.granted(Duration::ZERO));
        }
        let after = self.decide(retryable, outcome, now, gate, |a| {
            a.policy.backoff.delay(a.backoff_step + 1, a.previous_delay, rng)
        })?;
        self.backoff_step += 1;
        self.previous_delay = after;
        Ok(self.granted(after))
    }

    /// Counts the granted attempt.
    fn granted(&mut self, after: Duration) -> Retry<'_> {
        self.attempt += 1;
        Retry { after, exclude: self.excluded(), attempt: self.attempt }
    }

    /// Runs every check, in order, and returns the wait before the retry.
    fn decide<G: RetryGate + ?Sized>(
        &self,
        retryable: bool,
        outcome: Outcome,
        now: Timestamp,
        gate: &G,
        wait: impl FnOnce(&Self) -> Duration,
    ) -> Result<Duration, GiveUp> {
        if self.committed {
            return Err(GiveUp::Committed);
        }
        if !retryable {
            return Err(GiveUp::NotRetryable);
        }
        // A refused connection never carried the request, so any method may go again.
        let unsent = outcome == Outcome::ConnectError;
        if !(self.method.is_idempotent() || self.policy.retry_non_idempotent || unsent) {
            return Err(GiveUp::NotIdempotent);
        }
        if self.attempt >= self.policy.limit() {
            return Err(GiveUp::AttemptsExhausted);
        }
        let after = wait(self);
        if self.deadline.is_some_and(|d| now + after >= d) {
            return Err(GiveUp::DeadlineExceeded);
        }
        if !gate.try_retry(now) {
            return Err(GiveUp::BudgetExhausted);
        }
        Ok(after)
    }
}

#[cfg(test)]
mod tests;
