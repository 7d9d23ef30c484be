//! Hedged requests (gRFC A6 hedging, Dean & Barroso's "tail at scale"):
//! when an idempotent request has no answer after the hedging delay, a copy
//! goes to another endpoint; the first good answer wins and the copies
//! still out are cancelled. Every extra copy is taken from the retry budget.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lb_core::Build;
use lb_health::{HedgeDecision, HedgeStep, Hedging};

use super::Pool;
use super::send::{attempt_outcome, end_span};
use super::url::point_at;
use crate::Error;
use crate::attempt::keyed;
use crate::otel::CallSpan;
use lb_core::Exclusions;
use lb_engine::Attempt;

pub(crate) async fn send_hedged<A: Build + 'static>(
    pool: &Pool<A>,
    request: reqwest::Request,
    key: Option<&[u8]>,
    hedging: &Hedging,
    deadline: tokio::time::Instant,
    span: Option<CallSpan>,
) -> Result<reqwest::Response, Error> {
    let shared = &pool.shared;
    let clock = &*shared.clock;
    shared.resilience.deposit(clock.now());
    let generation = shared.live.load();
    let mut excluded = Exclusions::new();
    let no_endpoint = || Error::NoEndpoint(shared.service.to_string());

    // Starts one copy on an endpoint not tried yet; its future reports back.
    let launch = |excluded: &mut Exclusions| -> Result<_, Error> {
        let attempt = Attempt::start(&generation, keyed(key), excluded, &shared.clock, clock.now())
            .ok_or_else(no_endpoint)?;
        excluded.push(attempt.index());
        let mut copy = request.try_clone().ok_or_else(no_endpoint)?;
        point_at(copy.url_mut(), attempt.endpoint().address())?;
        *copy.timeout_mut() = Some(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let client = shared.client.load_full();
        Ok(async move {
            let result = client.execute(copy).await;
            (attempt, result)
        })
    };

    let mut hedge = hedging.start(clock.now());
    let mut running = FuturesUnordered::new();
    let first = launch(&mut excluded).inspect_err(|error| {
        if matches!(error, Error::NoEndpoint(_)) {
            shared.resilience.labels().refused();
        }
    })?;
    running.push(first);
    let mut may_send = true;
    let mut last: Option<(String, Result<reqwest::Response, reqwest::Error>)> = None;
    loop {
        let wake_at = if may_send {
            match hedge.poll(clock.now()) {
                HedgeStep::Send => {
                    // A copy is a retry for the budget; without one, wait for what is out.
                    if shared.resilience.withdraw(clock.now())
                        && let Ok(next) = launch(&mut excluded)
                    {
                        running.push(next);
                        shared.resilience.labels().retried();
                    } else {
                        may_send = false;
                    }
                    continue;
                }
                HedgeStep::WaitUntil(at) => Some(at),
                HedgeStep::AwaitAnswers | HedgeStep::Done => None,
            }
        } else {
            None
        };
        let pause = wake_at.map(|at| at.saturating_since(clock.now()));
        tokio::select! {
            answer = running.next() => {
                let Some((attempt, result)) = answer else { break };
                let (outcome, status) = attempt_outcome(&result, None);
                let backend = attempt.extra().labels.backend_name().to_string();
                attempt.finish(outcome, status);
                match hedge.on_answer(outcome, clock.now()) {
                    HedgeDecision::Commit | HedgeDecision::Exhausted => {
                        end_span(span, &backend, &result, outcome);
                        // Dropping `running` cancels the other copies.
                        return result.map_err(|source| Error::Request { endpoint: backend, source });
                    }
                    HedgeDecision::Continue => last = Some((backend, result)),
                }
            }
            () = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
        }
        if running.is_empty() && !may_send {
            break;
        }
    }
    match last {
        Some((endpoint, result)) => {
            end_span(span, &endpoint, &result, attempt_outcome(&result, None).0);
            result.map_err(|source| Error::Request { endpoint, source })
        }
        None => Err(no_endpoint()),
    }
}
