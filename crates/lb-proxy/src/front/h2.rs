//! HTTP/2 clients, on hyper's server: each request becomes a
//! [`HyperExchange`] for the attempt loop, and goes to HTTP/1.1 endpoints
//! through lb's engine or to HTTP/2 endpoints through hyper's client.

use lb_core::Timestamp;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use super::FrontSettings;
use super::prefixed::Prefixed;
use crate::access_log::AccessEntry;
use crate::attempt::Finish;
use crate::body::{BodyEnd, BodyError, Http1Body, ReplayBody, RequestBody, ResponseBody, UpstreamBody};
use crate::config::HostHeader;
use crate::duplex::Duplex;
use crate::forward::{self, ClientFault, Exchange, Forwarded, TryError};
use crate::headers::{self, Hop, MapWriter, REQUEST_ID};
use crate::http1::body::{BodyReader, Encoding, Output};
use crate::http1::fields::{self, FieldName};
use crate::http1::request::Framing;
use crate::pool::Connections;
use crate::pool::h2::SendError;
use crate::pool::http1::{HeadError, MAX_RESPONSE_HEAD, UpstreamConn};
use crate::route;
use crate::runtime::Runtime;
use crate::upstream::Backend;

/// The response type of the HTTP/2 front.
pub(crate) type ProxyResponse = Response<ResponseBody<Finish>>;

/// Serves an HTTP/2 connection whose preface was already read.
pub(crate) async fn serve<S: super::ClientStream>(
    io: Prefixed<S>,
    peer: SocketAddr,
    runtime: Arc<ArcSwap<Runtime>>,
    settings: FrontSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut peer_text = [0u8; 48];
    let len = headers::ip_text(peer.ip(), &mut peer_text);
    let peer_text: Arc<[u8]> = Arc::from(&peer_text[..len]);
    let activity = Arc::new(Activity::default());
    let busy = Arc::clone(&activity);
    let redirect_to_https = settings.redirect_to_https;
    let service = service_fn(move |req| {
        let rt = runtime.load_full();
        let peer_text = Arc::clone(&peer_text);
        let mut request = busy.begin();
        async move {
            let response = match redirect_to_https {
                true => redirect(&req),
                false => handle(rt, req, peer, &peer_text, S::SCHEME).await,
            };
            request.answered = true;
            drop(request);
            Ok::<_, Infallible>(response)
        }
    });
    let limits = settings.http2;
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.head_limits.max_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(limits.initial_stream_window)
        .initial_connection_window_size(limits.initial_connection_window)
        .max_frame_size(limits.max_frame_size)
        .max_pending_accept_reset_streams(limits.max_pending_reset_streams)
        .max_local_error_reset_streams(limits.max_error_reset_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = crate::server::stop_requested(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = activity.idle_for(settings.idle_timeout) => {
            // GOAWAY: no new streams; streams still sending their bodies finish.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = activity.abused.notified() => {
            tracing::debug!(%peer, "HTTP/2 client resets most of its streams at once: closing (rapid reset)");
            connection.as_mut().graceful_shutdown();
            // GOAWAY sent; what it still had in flight gets a moment, not the drain timeout.
            tokio::time::timeout(PREMATURE, connection).await.unwrap_or(Ok(()))
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%peer, %error, "HTTP/2 client connection ended with an error");
    }
}

/// A stream the client resets this soon after opening it, before its
/// answer, is a premature reset (Envoy's `premature_reset_min_stream_lifetime_seconds`).
const PREMATURE: Duration = Duration::from_secs(1);
/// Streams a connection must have opened before its share of premature
/// resets is judged (Envoy's `premature_reset_total_stream_count`).
const JUDGED_AFTER: u64 = 500;

/// Requests on one HTTP/2 connection: how many are being answered, and when
/// that last changed; how many streams were opened, and how many of them the
/// client reset prematurely.
#[derive(Debug)]
struct Activity {
    answering: AtomicUsize,
    since: Mutex<tokio::time::Instant>,
    opened: AtomicU64,
    premature: AtomicU64,
    abused: tokio::sync::Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            answering: AtomicUsize::new(0),
            since: Mutex::new(tokio::time::Instant::now()),
            opened: AtomicU64::new(0),
            premature: AtomicU64::new(0),
            abused: tokio::sync::Notify::new(),
        }
    }
}

impl Activity {
    /// A request is being answered until the guard drops.
    fn begin(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Answering { activity: Arc::clone(self), opened: tokio::time::Instant::now(), answered: false }
    }

    /// Rapid reset, whatever the timing: once [`JUDGED_AFTER`] streams were
    /// opened, more than half of them reset prematurely closes the
    /// connection (Envoy's rule; h2's own bound only counts streams reset
    /// before the proxy took them up).
    fn reset_prematurely(&self) {
        let premature = self.premature.fetch_add(1, Ordering::Relaxed) + 1;
        let opened = self.opened.load(Ordering::Relaxed);
        if opened >= JUDGED_AFTER && premature * 2 > opened {
            self.abused.notify_one();
        }
    }

    fn touched(&self) -> tokio::time::Instant {
        *self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves once no request was being answered for `idle` (the
    /// connection's idle timeout, `client_idle_timeout`).
    async fn idle_for(&self, idle: Duration) {
        loop {
            tokio::time::sleep_until(self.touched() + idle).await;
            if self.answering.load(Ordering::Relaxed) > 0 {
                // Busy: look again a timeout later (the end of a request moves `since`).
                tokio::time::sleep(idle).await;
            } else if self.touched() + idle <= tokio::time::Instant::now() {
                return;
            }
        }
    }
}

/// One request being answered; see [`Activity::begin`].
struct Answering {
    activity: Arc<Activity>,
    opened: tokio::time::Instant,
    /// The answer's head went back; a drop before means the client reset the stream.
    answered: bool,
}

impl Drop for Answering {
    fn drop(&mut self) {
        let activity = &self.activity;
        if !self.answered && self.opened.elapsed() < PREMATURE {
            activity.reset_prematurely();
        }
        *activity.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            tokio::time::Instant::now();
        activity.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A plain listener's `redirect_to_https`: 308 to the request's https URL.
fn redirect<B>(req: &Request<B>) -> ProxyResponse {
    let host = req
        .uri()
        .authority()
        .map(Authority::as_str)
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok());
    let Some(host) = host else {
        return local(StatusCode::BAD_REQUEST, "a redirect to https needs a Host\n");
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut response = local(StatusCode::PERMANENT_REDIRECT, "this listener redirects to https\n");
    if let Ok(location) =
        HeaderValue::from_bytes(&crate::route::https_location(host.as_bytes(), target.as_bytes()))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A response the proxy makes itself.
fn local(status: StatusCode, text: &'static str) -> ProxyResponse {
    let mut response = Response::new(ResponseBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Serves one HTTP/2 client request.
async fn handle(
    rt: Arc<Runtime>,
    req: Request<Incoming>,
    peer: SocketAddr,
    peer_text: &[u8],
    scheme: &'static str,
) -> ProxyResponse {
    let started = rt.clock.now();
    let (mut parts, body) = req.into_parts();
    if normalize_target(&mut parts).is_err() {
        return local(StatusCode::BAD_REQUEST, "invalid request path\n");
    }
    let host = parts
        .uri
        .authority()
        .map(Authority::as_str)
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok());
    let host = host.map(str::to_owned);
    let Some(index) = rt.routes.find(host.as_deref().map(str::as_bytes), parts.uri.path().as_bytes()) else {
        return local(StatusCode::NOT_FOUND, "no route for this host and path\n");
    };
    let upstream = &rt.upstreams[index];
    let length = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| fields::content_length(v.as_bytes()));
    if rt.max_body_bytes != 0 && length.is_some_and(|n| n > rt.max_body_bytes) {
        upstream.metrics.answered(StatusCode::PAYLOAD_TOO_LARGE);
        return local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    let request_id = match parts.headers.get(&REQUEST_ID).filter(|v| !v.is_empty()) {
        Some(given) => given.clone(),
        None => {
            let id = HeaderValue::from_bytes(&rt.request_ids.next()).unwrap_or(HeaderValue::from_static("-"));
            parts.headers.insert(REQUEST_ID, id.clone());
            id
        }
    };
    let te_trailers = parts
        .headers
        .get_all(header::TE)
        .iter()
        .any(|v| fields::tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"trailers")));
    strip_hop_by_hop(&mut parts.headers);
    let hop = Hop {
        peer: peer.ip(),
        peer_text,
        proto: scheme,
        trusted: rt.trusted_proxies.contains(peer.ip()),
        rfc7239: upstream.settings.forwarded_header,
    };
    let mut forwarding = MapWriter::default();
    headers::forwarding(&mut forwarding, &parts.headers, host.as_deref().map(str::as_bytes), &hop);
    for kind in headers::FORWARDING {
        if let Some(name) = field_name(kind) {
            parts.headers.remove(name);
        }
    }
    parts.headers.extend(forwarding.map);
    let mut span = rt.tracing.as_ref().map(|t| t.request_span(&parts, &upstream.name));
    if let Some(span) = &span {
        for (name, value) in span.context_fields() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                parts.headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
    let body = if body.is_end_stream() {
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
    let key = upstream.settings.hash_key.as_ref().and_then(|rule| {
        let mut ip_buf = [0u8; 16];
        route::hash_key(rule, &parts, peer.ip(), &mut ip_buf).map(<[u8]>::to_vec)
    });
    let (mut response, backend) = match upstream.admit() {
        None => {
            upstream.metrics.refused();
            (local(StatusCode::SERVICE_UNAVAILABLE, "upstream is at its in-flight limit\n"), None)
        }
        Some(in_flight) => {
            let mut exchange = HyperExchange::new(
                parts,
                body,
                host,
                te_trailers,
                upstream.settings.host_header.clone(),
                upstream.settings.timeouts.send,
            );
            match forward::forward(&rt, upstream, &mut exchange, key.as_deref(), started, &mut span).await {
                Forwarded::Local { status, text } => (local(status, text), None),
                Forwarded::Answer { answer, attempt } => {
                    let backend = attempt.extra().authority.clone();
                    let response = answer.into_response(&attempt, upstream.settings.timeouts.read);
                    let status = response.status();
                    let (parts, body) = response.into_parts();
                    let finish = Finish::new(attempt, status, in_flight);
                    (
                        Response::from_parts(parts, ResponseBody::Upstream { body, on_end: Some(finish) }),
                        Some(backend),
                    )
                }
            }
        }
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
    if let Some((method, uri)) = access {
        rt.access_log.write(&AccessEntry {
            client: peer,
            method: method.as_str(),
            target: uri.path_and_query().map_or("/", PathAndQuery::as_str).as_bytes(),
            status: response.status(),
            backend: backend.as_ref().map(Authority::as_str),
            duration: rt.clock.now().saturating_since(started),
            request_id: request_id.as_bytes(),
        });
    }
    response
}

/// Routes and endpoints see the normalised path (see `crate::path`).
fn normalize_target(parts: &mut Parts) -> Result<(), ()> {
    let given = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let mut target = Vec::new();
    crate::path::normalize(given.as_bytes(), &mut target).map_err(|_| ())?;
    if target != given.as_bytes() {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(PathAndQuery::try_from(target).map_err(|_| ())?);
        parts.uri = Uri::from_parts(uri).map_err(|_| ())?;
    }
    Ok(())
}

fn field_name(kind: FieldName) -> Option<HeaderName> {
    Some(HeaderName::from_static(match kind {
        FieldName::XForwardedFor => "x-forwarded-for",
        FieldName::XForwardedProto => "x-forwarded-proto",
        FieldName::XForwardedHost => "x-forwarded-host",
        FieldName::Forwarded => "forwarded",
        _ => return None,
    }))
}

/// Removes hop-by-hop fields and those `Connection` names (never the
/// message's identity or framing), as the HTTP/1.1 engine does.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| fields::tokens(v.as_bytes()))
        .filter(|t| !FieldName::of(t).is_protected())
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop_by_hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| FieldName::of(name.as_str().as_bytes()).is_hop_by_hop())
        .cloned()
        .collect();
    for name in hop_by_hop {
        if name != header::CONTENT_LENGTH {
            headers.remove(name);
        }
    }
}

/// A request that hyper carries on one side at least: an HTTP/2 client's,
/// or an HTTP/1 client's on its way to an HTTP/2 endpoint.
pub(crate) struct HyperExchange {
    parts: Parts,
    body: RequestBody,
    /// The host the client asked for.
    host: Option<String>,
    te_trailers: bool,
    host_header: HostHeader,
    send_timeout: Duration,
}

/// An endpoint's answer, from either kind of connection.
pub(crate) enum HyperAnswer {
    H2(Response<Incoming>),
    H1 { conn: UpstreamConn, request_sent: bool },
}

impl HyperExchange {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        parts: Parts,
        body: RequestBody,
        host: Option<String>,
        te_trailers: bool,
        host_header: HostHeader,
        send_timeout: Duration,
    ) -> Self {
        HyperExchange { parts, body, host, te_trailers, host_header, send_timeout }
    }

    /// The `Host` (HTTP/1.1) or `:authority` (HTTP/2) for `backend`.
    fn host_for(&self, backend: &Backend) -> String {
        match &self.host_header {
            HostHeader::Preserve => self.host.clone().unwrap_or_else(|| backend.authority.to_string()),
            HostHeader::Endpoint => backend.authority.to_string(),
            HostHeader::Set(value) => value.clone(),
        }
    }

    async fn send_h2(
        &self,
        shared: &crate::pool::h2::SharedConnection,
        backend: &Backend,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<HyperAnswer, TryError> {
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.parts.headers.clone();
        request.headers_mut().remove(header::HOST);
        let path = self.parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let authority =
            Authority::try_from(self.host_for(backend)).unwrap_or_else(|_| backend.authority.clone());
        *request.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| TryError::BadResponse)?;
        if self.te_trailers {
            request.headers_mut().insert(header::TE, HeaderValue::from_static("trailers"));
        }
        match tokio::time::timeout(timeout, shared.send(&backend.authority, request)).await {
            Err(_) => Err(TryError::Timeout),
            Ok(Ok(response)) => Ok(HyperAnswer::H2(response)),
            Ok(Err(SendError::Connect)) => Err(TryError::Connect),
            Ok(Err(SendError::Failed(error))) => Err(classify(&error)),
        }
    }

    /// Sends the request to an HTTP/1.1 endpoint on lb's engine.
    async fn send_http1(
        &self,
        conn: &mut UpstreamConn,
        backend: &Backend,
        mut body: RequestBody,
        timeout: Duration,
    ) -> Result<bool, Http1Failure> {
        let mut out = Output::default();
        let head = &mut out.pending;
        head.extend_from_slice(self.parts.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(self.parts.uri.path_and_query().map_or("/", PathAndQuery::as_str).as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(self.host_for(backend).as_bytes());
        head.extend_from_slice(b"\r\n");
        for (name, value) in &self.parts.headers {
            if *name != header::HOST {
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
        }
        if self.te_trailers {
            head.extend_from_slice(b"te: trailers\r\n");
        }
        let has_length = self.parts.headers.contains_key(header::CONTENT_LENGTH);
        let encoding = if has_length || matches!(body, RequestBody::Empty) {
            Encoding::Plain
        } else {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Encoding::Chunked
        };
        head.extend_from_slice(b"\r\n");
        let reused = conn.reused;
        let (endpoint_read, mut endpoint) = conn.stream.split();
        let mut trailers = Vec::new();
        loop {
            let frame = tokio::select! {
                biased;
                _ = endpoint_read.readable() => return self.await_head(conn, timeout, false).await,
                frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)) => frame,
            };
            match frame {
                None => break,
                Some(Err(error)) => return Err(Http1Failure::Error(body_error(&*error))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let written =
                            tokio::time::timeout(self.send_timeout, out.data(&mut endpoint, encoding, &data))
                                .await;
                        if !matches!(written, Ok(Ok(()))) {
                            return Err(if reused {
                                Http1Failure::Stale
                            } else {
                                Http1Failure::Error(TryError::Reset)
                            });
                        }
                    }
                    Err(frame) => {
                        for (name, value) in frame.trailers_ref().into_iter().flatten() {
                            trailers.extend_from_slice(name.as_str().as_bytes());
                            trailers.extend_from_slice(b": ");
                            trailers.extend_from_slice(value.as_bytes());
                            trailers.extend_from_slice(b"\r\n");
                        }
                    }
                },
            }
        }
        if encoding == Encoding::Chunked {
            out.last_chunk(&trailers);
        }
        if !matches!(tokio::time::timeout(self.send_timeout, out.flush(&mut endpoint)).await, Ok(Ok(()))) {
            return Err(if reused { Http1Failure::Stale } else { Http1Failure::Error(TryError::Reset) });
        }
        self.await_head(conn, timeout, true).await
    }

    async fn await_head(
        &self,
        conn: &mut UpstreamConn,
        timeout: Duration,
        sent: bool,
    ) -> Result<bool, Http1Failure> {
        match tokio::time::timeout(timeout, conn.read_head(&self.parts.method)).await {
            Err(_) => Err(Http1Failure::Error(TryError::Timeout)),
            Ok(Ok(())) => Ok(sent),
            Ok(Err(HeadError::Closed)) if conn.reused => Err(Http1Failure::Stale),
            Ok(Err(HeadError::Closed)) => Err(Http1Failure::Error(TryError::Reset)),
            Ok(Err(HeadError::Io(error))) => {
                tracing::debug!(%error, "endpoint connection failed mid-head");
                Err(Http1Failure::Error(TryError::Reset))
            }
            Ok(Err(HeadError::Bad(reason))) => {
                tracing::debug!(%reason, "endpoint answer refused");
                Err(Http1Failure::Error(TryError::BadResponse))
            }
        }
    }
}

enum Http1Failure {
    /// A reused connection failed before any byte of an answer.
    Stale,
    Error(TryError),
}

/// Whose fault a request body's error is.
fn body_error(error: &(dyn std::error::Error + 'static)) -> TryError {
    match error.downcast_ref::<BodyError>() {
        Some(BodyError::TooLarge(_)) => TryError::Client(ClientFault::TooLarge),
        Some(BodyError::Lost) => TryError::Reset,
        Some(BodyError::Client(_)) | None => TryError::Client(ClientFault::Aborted),
    }
}

/// What a failed HTTP/2 exchange with an endpoint means.
fn classify(error: &hyper::Error) -> TryError {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.downcast_ref::<BodyError>().is_some() {
            return body_error(e);
        }
        source = e.source();
    }
    TryError::Reset
}

impl Exchange for HyperExchange {
    type Answer = HyperAnswer;

    fn method(&self) -> &Method {
        &self.parts.method
    }

    fn replayable(&self) -> bool {
        self.body.replay().is_some()
    }

    async fn send(
        &mut self,
        backend: &Backend,
        now: Timestamp,
        timeout: Duration,
    ) -> Result<HyperAnswer, TryError> {
        match &backend.pool {
            Connections::H2(shared) => {
                let body = self.body.replay().ok_or(TryError::Reset)?;
                self.send_h2(shared, backend, body, timeout).await
            }
            Connections::Http1(pool) => {
                let mut stale_retry = self.parts.method.is_idempotent();
                loop {
                    let body = self.body.replay().ok_or(TryError::Reset)?;
                    let mut conn = super::http1_connection(pool, backend, now, timeout).await?;
                    match self.send_http1(&mut conn, backend, body, timeout).await {
                        Ok(request_sent) => return Ok(HyperAnswer::H1 { conn, request_sent }),
                        Err(Http1Failure::Stale) if stale_retry => stale_retry = false,
                        Err(Http1Failure::Stale) => return Err(TryError::Reset),
                        Err(Http1Failure::Error(error)) => return Err(error),
                    }
                }
            }
        }
    }

    fn status(answer: &HyperAnswer) -> StatusCode {
        match answer {
            HyperAnswer::H2(response) => response.status(),
            HyperAnswer::H1 { conn, .. } => {
                StatusCode::from_u16(conn.head.status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    fn retry_after(answer: &HyperAnswer) -> Option<Duration> {
        match answer {
            HyperAnswer::H2(response) => {
                lb_health::parse_retry_after(response.headers().get(http::header::RETRY_AFTER)?.as_bytes())
            }
            HyperAnswer::H1 { conn, .. } => conn.retry_after(),
        }
    }
}

impl HyperAnswer {
    /// The answer as a response hyper can send, its body streamed on.
    pub(crate) fn into_response(
        self,
        attempt: &crate::attempt::Attempt,
        read_timeout: Duration,
    ) -> Response<UpstreamBody> {
        match self {
            HyperAnswer::H2(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.headers.remove(&REQUEST_ID);
                parts.extensions = http::Extensions::new();
                Response::from_parts(parts, UpstreamBody::H2(body))
            }
            HyperAnswer::H1 { mut conn, request_sent } => {
                let mut response = Response::new(());
                *response.status_mut() =
                    StatusCode::from_u16(conn.head.status).unwrap_or(StatusCode::BAD_GATEWAY);
                let buf = conn.buf.bytes();
                for field in conn.head.fields.iter().filter(|f| f.forward && f.kind != FieldName::XRequestId)
                {
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(field.name.of(buf)),
                        HeaderValue::from_bytes(field.value.of(buf)),
                    ) {
                        response.headers_mut().append(name, value);
                    }
                }
                if let Framing::Length(n) = conn.head.framing() {
                    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                }
                let reader = BodyReader::new(conn.head.framing(), MAX_RESPONSE_HEAD);
                let reusable = request_sent && conn.head.keep_alive;
                conn.buf.consume(conn.head.len);
                let body = Http1Body::new(
                    conn,
                    reader,
                    std::sync::Arc::clone(&attempt.extra().0),
                    reusable,
                    read_timeout,
                );
                response.map(|()| UpstreamBody::H1(Box::new(body)))
            }
        }
    }
}
