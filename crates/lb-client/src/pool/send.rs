//! The attempt loop: pick, admit, send, report, and retry elsewhere when
//! `lb_health::RetryPolicy` and the retry budget allow.

use std::time::Duration;

use lb_core::{Build, Outcome};
use lb_engine::Retries;
use lb_health::{MAX_ATTEMPTS, Method};

use super::Pool;
use super::body::BodyFailed;
use super::url::point_at;
use crate::Error;
use crate::attempt::keyed;
use crate::classify;
use crate::otel::CallSpan;
use crate::telemetry::Status;
use lb_core::Exclusions;
use lb_engine::Attempt;

pub(crate) async fn send<A: Build + 'static>(
    pool: &Pool<A>,
    mut request: reqwest::Request,
    key: Option<&[u8]>,
    idempotent: Option<bool>,
) -> Result<reqwest::Response, Error> {
    let shared = &pool.shared;
    let settings = &shared.settings;
    let clock = &*shared.clock;
    let method = match (idempotent, Method::parse(request.method().as_str())) {
        // Marked not idempotent: treat it like a POST.
        (Some(false), _) => Method::Post,
        (_, method) => method,
    };
    let policy = match idempotent {
        Some(true) => &settings.retry_marked_idempotent,
        _ => &settings.retry,
    };
    let timeout = request.timeout().copied().unwrap_or(settings.timeout);
    let deadline = instant_after(timeout);
    // Every attempt (a copy of this request) carries the call span's traceparent.
    let mut span = shared.tracing.as_ref().map(|tracing| {
        let name = request.method().as_str().to_owned();
        let span = tracing.start(name.clone(), &shared.service, &name);
        tracing.inject(&span, request.headers_mut());
        span
    });
    if let Some(hedging) = &settings.hedging
        && (method.is_idempotent() || idempotent == Some(true))
        && request.body().is_none_or(|body| body.as_bytes().is_some())
    {
        return super::hedge::send_hedged(pool, request, key, hedging, deadline, span).await;
    }
    // A streamed body is sent once; if it fails, the caller is to blame.
    let body_failed = super::body::watch(&mut request);
    let mut request = Some(request);
    shared.resilience.deposit(clock.now());

    // Indices refer to this generation, kept for the whole request.
    let generation = shared.live.load();
    let mut retries = Retries::new(policy, method, None);
    let max_attempts = policy.max_attempts.clamp(1, MAX_ATTEMPTS);
    let mut excluded = Exclusions::new();
    loop {
        let Some(attempt) = Attempt::start(&generation, keyed(key), &excluded, &shared.clock, clock.now())
        else {
            shared.resilience.labels().refused();
            if let Some(span) = span {
                span.end(None, None, Outcome::LocallyRejected);
            }
            return Err(Error::NoEndpoint(shared.service.to_string()));
        };
        // Keep the original for later attempts while the body can be copied;
        // the last possible attempt sends the original itself.
        let is_last = retries.attempt() >= max_attempts;
        let copy = if is_last { None } else { request.as_ref().and_then(reqwest::Request::try_clone) };
        let (mut sent, can_retry) = match copy {
            Some(copy) => (copy, true),
            None => match request.take() {
                Some(original) => (original, false),
                None => return Err(Error::NoEndpoint(shared.service.to_string())),
            },
        };
        point_at(sent.url_mut(), attempt.endpoint().address())?;
        let time_left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let now = clock.now();
        let try_timeout =
            retries.attempts(now).try_timeout(now).map_or(time_left, |per_try| per_try.min(time_left));
        *sent.timeout_mut() = Some(try_timeout);

        let result = shared.client.load().execute(sent).await;
        let (outcome, status) = attempt_outcome(&result, body_failed.as_ref());
        let index = attempt.index();
        attempt.finish(outcome, status);
        excluded.push(index);

        let time_left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let retry = if can_retry && !time_left.is_zero() {
            let (budget, seeds, now) = (shared.resilience.budget(), shared.resilience.jitter(), clock.now());
            let decision = match &result {
                Ok(response) => retries.after_answer(
                    response.status().as_u16(),
                    retry_after(response),
                    now,
                    budget,
                    seeds,
                ),
                Err(_) => retries.after_failure(outcome, now, budget, seeds),
            };
            decision.filter(|pause| *pause < time_left)
        } else {
            None
        };
        let Some(pause) = retry else {
            let backend = generation.extra(index).labels.backend_name();
            end_span(span, backend, &result, outcome);
            return result.map_err(|source| Error::Request { endpoint: backend.to_string(), source });
        };
        shared.resilience.labels().retried();
        if let Some(span) = span.as_mut() {
            span.retry(retries.attempt() - 1, outcome);
        }
        tokio::time::sleep(pause).await;
    }
}

/// Ends a call's span with the endpoint that answered last and how.
pub(crate) fn end_span(
    span: Option<CallSpan>,
    backend: &str,
    result: &Result<reqwest::Response, reqwest::Error>,
    outcome: Outcome,
) {
    if let Some(span) = span {
        let status = result.as_ref().ok().map(|response| response.status().as_u16());
        span.end(Some(backend), status, outcome);
    }
}

/// The wait an answer asks for in its `Retry-After` (delta-seconds form).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    lb_health::parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER)?.as_bytes())
}

/// The outcome and `status` of one reqwest attempt. An error while the
/// caller's own body was failing is the caller's ([`Outcome::LocallyRejected`]).
pub(crate) fn attempt_outcome(
    result: &Result<reqwest::Response, reqwest::Error>,
    body_failed: Option<&BodyFailed>,
) -> (Outcome, Status) {
    match result {
        Ok(response) => {
            let code = response.status().as_u16();
            (Outcome::from_status(code), Status::Code(code))
        }
        Err(_) if body_failed.is_some_and(BodyFailed::get) => (Outcome::LocallyRejected, Status::Error),
        Err(e) => (classify::reqwest_error(e), Status::Error),
    }
}

/// `now + after`, saturating about 30 years out, so `Duration::MAX` means
/// "no timeout" instead of panicking on overflow as tokio's `Instant + Duration` does.
pub(super) fn instant_after(after: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    let now = tokio::time::Instant::now();
    now.checked_add(after).unwrap_or(now + FAR)
}

#[cfg(test)]
mod instant_tests {
    use super::*;

    #[test]
    fn a_huge_timeout_saturates_instead_of_panicking() {
        let far = instant_after(Duration::MAX);
        assert!(far > tokio::time::Instant::now() + Duration::from_secs(365 * 86_400));
        let near = instant_after(Duration::from_secs(1));
        assert!(near < far);
    }
}
