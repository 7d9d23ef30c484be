//! The data path: route, pick, forward, retry, report.
//!
//! Per request: find the upstream, load its current snapshot (one atomic),
//! pick an endpoint the breaker admits, send through the pooled client under
//! the per-try timeout, and report the outcome to the balancer, the breaker
//! and the metrics when the response body ends. Failures before the response
//! starts are retried on another endpoint while the policy, the budget and
//! the replay buffer allow, after the upstream's backoff (see [`crate::backoff`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use lb_core::{Balancer, Clock, Outcome, OwnedPick, PickContext};

use crate::access_log::AccessEntry;
use crate::attempt::{Attempt, Finish};
use crate::body::{BodyEnd, BodyError, ReplayBody, RequestBody, ResponseBody};
use crate::config::{HostHeader, RetryOn, UpstreamProtocol};
use crate::headers::{self, ClientSide, REQUEST_ID};
use crate::health::Admission;
use crate::otel::RequestSpan;
use crate::pool::SendError;
use crate::route;
use crate::runtime::Runtime;
use crate::upstream::{Backend, InFlight, Snapshot, Upstream};

/// The response type of the proxy service.
pub(crate) type ProxyResponse = Response<ResponseBody<Finish>>;

/// Most tries per request (gRPC clamps `maxAttempts` to 5 too).
const MAX_TRIES: usize = 5;

/// Serves one client request.
pub(crate) async fn handle(
    rt: Arc<Runtime>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    peer_ip: &HeaderValue,
) -> ProxyResponse {
    let started = Instant::now();
    let upgrade = headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let Some(index) = rt.routes.find(route::request_host(&parts), parts.uri.path()) else {
        return local(StatusCode::NOT_FOUND, "no route for this host and path\n");
    };
    let upstream = &rt.upstreams[index];
    if rt.max_body_bytes != 0 && content_length(&parts.headers).is_some_and(|n| n > rt.max_body_bytes) {
        return local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    let request_id = rt.request_ids.ensure(&mut parts.headers);
    // `TE` is hop-by-hop, but gRPC over HTTP/2 needs `te: trailers` passed on.
    let te_trailers = upstream.settings.protocol == UpstreamProtocol::H2c
        && parts.headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    prepare_headers(&mut parts, peer_ip, peer, upstream, upgrade);
    let mut span = rt.tracing.as_ref().map(|t| t.request_span(&mut parts, &upstream.name));
    let body = if hyper::body::Body::is_end_stream(&body) {
        RequestBody::Empty
    } else {
        RequestBody::Streamed(ReplayBody::new(
            body,
            rt.replay_limit,
            rt.max_body_bytes,
            Arc::clone(&rt.replay_stats),
        ))
    };
    let access = rt.access_log.enabled().then(|| (parts.method.clone(), parts.uri.clone()));
    let (mut response, backend) = if let Some(in_flight) = upstream.admit() {
        let arrival = Arrival { peer, at: started, te_trailers };
        forward(&rt, upstream, in_flight, parts, body, arrival, &mut span).await
    } else {
        (local(StatusCode::SERVICE_UNAVAILABLE, "upstream is at its in-flight limit\n"), None)
    };
    response.headers_mut().insert(REQUEST_ID, request_id.clone());
    if let Some(mut span) = span {
        if let Some(backend) = &backend {
            span.set_backend(backend);
        }
        match response.body_mut() {
            // A streamed response ends its span when the body ends.
            ResponseBody::Upstream { on_end: Some(finish), .. } => finish.span = Some(span),
            _ => span.end(response.status(), BodyEnd::Complete),
        }
    }
    if let (Some(client), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, response.status()) {
        rt.tunnels.spawn(client, hyper::upgrade::on(&mut response));
    }
    if let Some((method, uri)) = access {
        rt.access_log.write(&AccessEntry {
            client: peer,
            method: &method,
            uri: &uri,
            status: response.status(),
            backend: backend.as_ref(),
            duration: started.elapsed(),
            request_id: &request_id,
        });
    }
    response
}

fn prepare_headers(
    parts: &mut Parts,
    peer_ip: &HeaderValue,
    peer: SocketAddr,
    upstream: &Upstream,
    upgrade: bool,
) {
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    // Cloning the parsed header shares its bytes; only HTTP/2 builds a value from :authority.
    let host = match parts.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let client = ClientSide { ip: peer.ip(), proto: "http", host: host.as_ref(), ip_text: Some(peer_ip) };
    headers::add_forwarding(&mut parts.headers, client, upstream.settings.forwarded_header);
    if parts.version == Version::HTTP_2
        && let Some(host) = host.clone()
    {
        // HTTP/2 carries the host in :authority; an HTTP/1.1 endpoint needs the header.
        parts.headers.entry(header::HOST).or_insert(host);
    }
    if let HostHeader::Set(value) = &upstream.settings.host_header
        && let Ok(value) = HeaderValue::from_str(value)
    {
        parts.headers.insert(header::HOST, value);
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A response made by the proxy itself.
pub(crate) fn local(status: StatusCode, text: &'static str) -> ProxyResponse {
    let mut response = Response::new(ResponseBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// How one try ended before any response body.
enum TryError {
    Connect,
    Timeout,
    Reset,
    TooLarge,
}

impl TryError {
    fn outcome(&self) -> Outcome {
        match self {
            TryError::Connect => Outcome::ConnectError,
            TryError::Timeout => Outcome::Timeout,
            TryError::Reset => Outcome::Reset,
            TryError::TooLarge => Outcome::LocallyRejected,
        }
    }

    fn status_and_text(&self) -> (StatusCode, &'static str) {
        match self {
            TryError::Connect => (StatusCode::BAD_GATEWAY, "could not connect to the upstream\n"),
            TryError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "the upstream did not answer in time\n"),
            TryError::Reset => (StatusCode::BAD_GATEWAY, "the upstream connection failed\n"),
            TryError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        }
    }

    fn response(&self) -> ProxyResponse {
        let (status, text) = self.status_and_text();
        local(status, text)
    }

    fn classify(error: &hyper::Error) -> TryError {
        let mut source = std::error::Error::source(error);
        while let Some(e) = source {
            if let Some(BodyError::TooLarge(_)) = e.downcast_ref::<BodyError>() {
                return TryError::TooLarge;
            }
            source = e.source();
        }
        TryError::Reset
    }
}

/// Whether `outcome` may be retried under `retry_on` for `method`.
fn retryable(outcome: Outcome, retry_on: &[RetryOn], method: &Method, non_idempotent: bool) -> bool {
    let wanted = retry_on.iter().any(|r| match r {
        RetryOn::ConnectError => outcome == Outcome::ConnectError,
        RetryOn::Reset => outcome == Outcome::Reset,
        RetryOn::Timeout => outcome == Outcome::Timeout,
        RetryOn::GatewayError => outcome.is_gateway_error(),
        RetryOn::Http5xx => outcome.is_5xx(),
    });
    // Nothing was sent when the connection failed, so any method may go again.
    wanted && (outcome == Outcome::ConnectError || non_idempotent || method.is_idempotent())
}

/// Who sent a request, when it arrived, and what of its hop-by-hop headers still matters.
#[derive(Clone, Copy)]
struct Arrival {
    peer: SocketAddr,
    at: Instant,
    /// The client sent `te: trailers`.
    te_trailers: bool,
}

async fn forward(
    rt: &Runtime,
    upstream: &Arc<Upstream>,
    in_flight: InFlight,
    mut parts: Parts,
    body: RequestBody,
    arrival: Arrival,
    span: &mut Option<RequestSpan>,
) -> (ProxyResponse, Option<Authority>) {
    let settings = &upstream.settings;
    let deadline = arrival.at + settings.timeouts.request;
    let max_tries = (*settings.retry.attempts.get_ref() as usize).clamp(1, MAX_TRIES);
    let mut tried = [usize::MAX; MAX_TRIES];
    let mut last_error = TryError::Connect;
    let mut budget_deposited = false;
    let mut waits = upstream.pacer.start();
    // Headers of a request that came back unsent (a failed connect).
    let mut unsent_headers: Option<HeaderMap> = None;
    // Only a retry after the request went out needs a copy of its headers.
    let copy_for_retry = max_tries > 1
        && (parts.method.is_idempotent() || settings.retry.non_idempotent)
        && settings.retry.retry_on.iter().any(|r| *r != RetryOn::ConnectError);
    for try_no in 0..max_tries {
        let last_try = try_no + 1 == max_tries;
        let Some(try_body) = body.replay() else { break };
        let now = rt.clock.now();
        let exclude = &tried[..try_no];
        let limit = settings.limits.max_in_flight_per_endpoint;
        let mut ip_buf = [0u8; 16];
        let key = settings
            .hash_key
            .as_ref()
            .and_then(|k| route::hash_key(k, &parts, arrival.peer.ip(), &mut ip_buf));
        let Some((pick, admission)) = pick_admitted(&upstream.current.load(), key, exclude, now, limit)
        else {
            if try_no == 0 {
                return (local(StatusCode::SERVICE_UNAVAILABLE, "no healthy endpoint is available\n"), None);
            }
            break;
        };
        if !budget_deposited {
            upstream.budget_deposit(now);
            budget_deposited = true;
        }
        let attempt = Attempt::start(pick, admission, &rt.clock);
        tried[try_no] = attempt.index();
        let backend = attempt.backend();
        let headers = match unsent_headers.take() {
            Some(headers) => headers,
            None if copy_for_retry && !last_try => parts.headers.clone(),
            None => std::mem::take(&mut parts.headers),
        };
        let mut request = upstream_request(&parts, headers, backend, &settings.host_header, try_body);
        if backend.pool.is_http2() {
            into_http2(&mut request, backend, arrival.te_trailers);
        }
        let left = deadline.saturating_duration_since(attempt.started());
        let sending = backend.pool.send(&backend.authority, request);
        let result = tokio::time::timeout(upstream.try_timeout(left), sending).await;
        let error = match result {
            Ok(Ok((response, conn))) => {
                let outcome = Outcome::from_status(response.status().as_u16());
                // Past the deadline the backend's own answer beats a 504.
                let wait = if !last_try
                    && retryable(
                        outcome,
                        &settings.retry.retry_on,
                        &parts.method,
                        settings.retry.non_idempotent,
                    ) {
                    waits.next(false, Instant::now(), deadline)
                } else {
                    None
                };
                if let Some(wait) = wait
                    && upstream.budget_withdraw(rt.clock.now())
                {
                    let status = response.status();
                    drop(response);
                    attempt.finish(outcome, status);
                    upstream.retries.increment(1);
                    if let Some(span) = span.as_mut() {
                        span.retry(try_no + 1, outcome);
                    }
                    pause(wait).await;
                    continue;
                }
                let label = Some(attempt.backend().authority.clone());
                let upgrading = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                // An upgraded connection belongs to the tunnel, never to the pool.
                let conn = (!upgrading).then_some(conn);
                let finish = Finish::new(attempt, conn, response.status(), in_flight);
                return (into_client_response(response, finish), label);
            }
            Ok(Err(SendError::Connect(unsent))) => {
                unsent_headers = Some(unsent.into_parts().0.headers);
                TryError::Connect
            }
            Ok(Err(SendError::Failed(e))) => TryError::classify(&e),
            Err(_elapsed) => TryError::Timeout,
        };
        let outcome = error.outcome();
        let status = error.status_and_text().0;
        attempt.finish(outcome, status);
        let wait = if !last_try
            && retryable(outcome, &settings.retry.retry_on, &parts.method, settings.retry.non_idempotent)
        {
            waits.next(outcome == Outcome::ConnectError, Instant::now(), deadline)
        } else {
            None
        };
        last_error = error;
        let Some(wait) = wait.filter(|_| upstream.budget_withdraw(rt.clock.now())) else {
            break;
        };
        upstream.retries.increment(1);
        if let Some(span) = span.as_mut() {
            span.retry(try_no + 1, outcome);
        }
        pause(wait).await;
    }
    (last_error.response(), None)
}

/// Waits before a retry; an immediate retry does not yield.
async fn pause(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// Picks an endpoint whose breaker admits the request and that is under its
/// in-flight limit. A retry that finds every endpoint excluded tries again
/// without exclusions: another connection to the same endpoint beats failing.
fn pick_admitted(
    snapshot: &Arc<Snapshot>,
    key: Option<&[u8]>,
    exclude: &[usize],
    now: lb_core::Timestamp,
    per_endpoint_limit: u32,
) -> Option<(OwnedPick<Snapshot>, Admission)> {
    let mut skipped = [usize::MAX; 16];
    let mut n_skipped = 0;
    let mut excluded_buf = [usize::MAX; MAX_TRIES + 16];
    let mut with_exclusions = !exclude.is_empty();
    for _ in 0..snapshot.backends.len().min(16) + 2 {
        let n_exclude = if with_exclusions { exclude.len() } else { 0 };
        excluded_buf[..n_exclude].copy_from_slice(&exclude[..n_exclude]);
        excluded_buf[n_exclude..n_exclude + n_skipped].copy_from_slice(&skipped[..n_skipped]);
        let ctx = PickContext::new().excluding(&excluded_buf[..n_exclude + n_skipped]);
        let ctx = match key {
            Some(k) => ctx.with_key(k),
            None => ctx,
        };
        let Some(pick) = OwnedPick::pick(snapshot, &ctx) else {
            if with_exclusions {
                with_exclusions = false;
                continue;
            }
            return None;
        };
        let backend = &snapshot.backends[pick.index()];
        let over_limit = per_endpoint_limit != 0
            && snapshot.endpoints().members()[pick.index()].state().in_flight() > per_endpoint_limit;
        if !over_limit && let Ok(admission) = backend.guards.admit(now) {
            return Some((pick, admission));
        }
        if n_skipped == skipped.len() {
            return None;
        }
        skipped[n_skipped] = pick.index();
        n_skipped += 1;
        drop(pick);
    }
    None
}

fn upstream_request(
    parts: &Parts,
    headers: HeaderMap,
    backend: &Backend,
    host_header: &HostHeader,
    body: RequestBody,
) -> Request<RequestBody> {
    // HTTP/1.1 to an origin server takes the origin form: path and query only.
    let uri = match parts.uri.path_and_query() {
        Some(_) if parts.uri.scheme().is_none() => parts.uri.clone(),
        Some(path) => Uri::from(path.clone()),
        None => Uri::from(PathAndQuery::from_static("/")),
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    if *host_header == HostHeader::Endpoint || !request.headers().contains_key(header::HOST) {
        request.headers_mut().insert(header::HOST, backend.host_value.clone());
    }
    request
}

/// Reshapes an HTTP/1.1 request for an HTTP/2 endpoint: the host moves into
/// the URI (HTTP/2's `:authority`), and `te: trailers` comes back if the
/// client sent it.
fn into_http2(request: &mut Request<RequestBody>, backend: &Backend, te_trailers: bool) {
    let host = request.headers_mut().remove(header::HOST);
    let authority = host
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| backend.authority.clone());
    let path = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    if let Ok(uri) = Uri::builder().scheme("http").authority(authority).path_and_query(path).build() {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
    if te_trailers {
        request.headers_mut().insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn into_client_response(response: Response<Incoming>, finish: Finish) -> ProxyResponse {
    let (mut parts, body) = response.into_parts();
    let upgraded = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(&mut parts.headers, upgraded);
    if upgraded {
        // The tunnel needs the upgrade handle hyper keeps in the extensions.
        return Response::from_parts(parts, ResponseBody::Upstream { body, on_end: Some(finish) });
    }
    parts.extensions = http::Extensions::new();
    Response::from_parts(parts, ResponseBody::Upstream { body, on_end: Some(finish) })
}
