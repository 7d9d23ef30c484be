//! HTTP/1.x clients on lb's own engine: one task per connection reads a
//! request head, routes it, runs the attempt loop, relays the response and
//! goes round again while the connection is kept alive.
//!
//! Timeouts, as nginx names them: `client_idle_timeout` between requests
//! (`keepalive_timeout`), `client_header_timeout` for a head once its first
//! byte came, `client_body_timeout` between reads of a body, `send_timeout`
//! per write to the client, and the upstream's `timeouts.read` between reads
//! of a response body (`proxy_read_timeout`). A stop closes an idle
//! connection at once and a busy one after its current response.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{StatusCode, Version};
use lb_core::{Outcome, Timestamp};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::native::{ClientSide, NativeAnswer, NativeExchange, Scratch};
use super::{ClientStream, FrontSettings};
use crate::access_log::AccessEntry;
use crate::attempt::Attempt;
use crate::body::BodyEnd;
use crate::bounded;
use crate::config::UpstreamProtocol;
use crate::forward::{self, Forwarded};
use crate::headers::{self, Hop, RequestId};
use crate::http1::body::{self, BodyReader, Encoding, Output, Relay, RelayError};
use crate::http1::buffer::{FillError, ReadBuffer};
use crate::http1::fields::{FieldName, Span};
use crate::http1::request::{self, Framing, RequestHead};
use crate::http1::write::{self, HeadIn, RequestEdits, ResponseEdits};
use crate::otel::RequestSpan;
use crate::pool::Connections;
use crate::pool::http1::{BODY_BUFFER, MAX_RESPONSE_HEAD, UpstreamConn};
use crate::route;
use crate::runtime::Runtime;
use crate::upstream::{InFlight, Upstream};

/// A client buffer grown past this by a large head or body is given back after the request.
const KEEP_BUFFER: usize = 16 * 1024;

/// The connection's side of a client: the socket and the memory reused from request to request.
pub(crate) struct Io<S> {
    pub(crate) stream: S,
    /// What the client sent and was not consumed yet.
    pub(crate) buf: ReadBuffer,
    /// What goes to the client next.
    pub(crate) out: Output,
    pub(crate) scratch: Scratch,
    /// The current request's hash key.
    pub(crate) key: Vec<u8>,
}

/// The current request as it arrived: its head, a copy of the head's bytes, and who sent it.
pub(crate) struct Arrived {
    pub(crate) head: RequestHead,
    /// The head's bytes; `head`'s spans point here.
    pub(crate) bytes: Vec<u8>,
    /// The request target as routed and forwarded: the path normalised, the query as sent.
    pub(crate) target: Vec<u8>,
    pub(crate) peer: SocketAddr,
    peer_text: ([u8; 48], usize),
    /// `X-Forwarded-Proto`: how the request reached the proxy.
    scheme: &'static str,
}

impl Arrived {
    pub(crate) fn input(&self) -> HeadIn<'_> {
        HeadIn { head: &self.head, buf: &self.bytes, target: &self.target }
    }

    /// This hop as the endpoint hears of it.
    pub(crate) fn hop(&self, rt: &Runtime, upstream: &Upstream) -> Hop<'_> {
        Hop {
            peer: self.peer.ip(),
            peer_text: &self.peer_text.0[..self.peer_text.1],
            proto: self.scheme,
            trusted: rt.trusted_proxies.contains(self.peer.ip()),
            rfc7239: upstream.settings.forwarded_header,
        }
    }

    /// The upgrade the client asked for, if the upstream tunnels it.
    fn allowed_upgrade(&self, upstream: &Upstream) -> Option<Span> {
        let allowed = |p: &Span| {
            let p = p.of(&self.bytes);
            upstream.settings.upgrade_protocols.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(p))
        };
        self.head.upgrade.filter(allowed)
    }
}

/// What becomes of a connection after a request.
enum Next {
    KeepAlive,
    Close,
    /// Close, though the client may still be sending (its body was not read to the end).
    CloseUnread,
}

/// How waiting for a request head ended.
enum NextHead {
    /// A head of this many bytes is at the front of the buffer, parsed.
    Ready(usize),
    /// The connection ends here (closed, timed out or stopped).
    Close,
    /// A head was refused with an answer; the connection ends here.
    Refused,
    /// Idle past [`PARK_AFTER`]: hand the connection back until this idle deadline.
    Park(Instant),
}

/// A keep-alive connection idle this long gives back the engine's state and
/// its buffers, and waits in its small accept-time task (see
/// [`super::serve`]): 10,000 idle connections then cost what 10,000 new ones
/// do. Busy connections never get here, so steady traffic allocates nothing.
const PARK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection [`serve`] hands back while idle: its socket, and when its idle timeout ends.
pub(crate) struct Parked<S> {
    pub(crate) stream: S,
    pub(crate) idle_until: Instant,
}

/// Serves HTTP/1.x requests on `stream`, whose first bytes are in `buf`.
pub(crate) async fn serve<S: ClientStream>(
    stream: S,
    buf: ReadBuffer,
    peer: SocketAddr,
    runtime: Arc<ArcSwap<Runtime>>,
    settings: FrontSettings,
    stop: watch::Receiver<bool>,
) -> Option<Parked<S>> {
    let mut peer_text = [0u8; 48];
    let len = headers::ip_text(peer.ip(), &mut peer_text);
    let mut io = Io { stream, buf, out: Output::default(), scratch: Scratch::default(), key: Vec::new() };
    let mut arrived = Arrived {
        head: RequestHead::default(),
        bytes: Vec::new(),
        target: Vec::new(),
        peer,
        peer_text: (peer_text, len),
        scheme: S::SCHEME,
    };
    // One wait for the stop for the connection's whole life, polled only while idle.
    let mut watch = stop.clone();
    let mut stopped = std::pin::pin!(crate::server::stop_requested(&mut watch));
    let linger = loop {
        let len = match io.next_head(&mut arrived.head, &settings, stopped.as_mut()).await {
            NextHead::Ready(len) => len,
            NextHead::Refused => break true,
            NextHead::Close => break false,
            NextHead::Park(idle_until) => return Some(Parked { stream: io.stream, idle_until }),
        };
        arrived.bytes.clear();
        arrived.bytes.extend_from_slice(&io.buf.bytes()[..len]);
        io.buf.consume(len);
        if let Err(error) = crate::path::normalize(arrived.head.path.of(&arrived.bytes), &mut arrived.target)
        {
            io.refuse(StatusCode::BAD_REQUEST, &error.to_string(), &settings).await;
            break true;
        }
        let rt = runtime.load_full();
        let stopping = stop.has_changed().unwrap_or(true);
        match io.handle(&arrived, &rt, &settings, stopping).await {
            Next::KeepAlive => {}
            Next::Close => break false,
            // The client may still be sending a body nobody read.
            Next::CloseUnread => break true,
        }
        if stop.has_changed().unwrap_or(true) {
            break false;
        }
        io.buf.shrink(KEEP_BUFFER);
    };
    let _ = io.stream.shutdown().await;
    if linger {
        io.linger().await;
    }
    None
}

/// How long, and how much, a closing connection still reads (nginx's `lingering_time` is 30 s).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// A request id: the client's, or one made for the request.
#[derive(Clone, Copy)]
pub(crate) enum RequestIdRef {
    Client(Span),
    Made(RequestId),
}

impl RequestIdRef {
    pub(crate) fn bytes<'a>(&'a self, head_bytes: &'a [u8]) -> &'a [u8] {
        match self {
            RequestIdRef::Client(span) => span.of(head_bytes),
            RequestIdRef::Made(id) => id,
        }
    }
}

impl<S: ClientStream> Io<S> {
    /// Waits for the next request head: `client_idle_timeout` for its first
    /// byte, `client_header_timeout` for the rest. A malformed head is
    /// answered, and the connection closes.
    async fn next_head(
        &mut self,
        head: &mut RequestHead,
        settings: &FrontSettings,
        mut stopped: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> NextHead {
        let limits = settings.head_limits;
        let mut searched = 0;
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                let seen = self.buf.bytes();
                if let Some(end) = request::head_end(seen, searched) {
                    return match request::parse(&seen[..end], limits, head) {
                        Ok(()) => NextHead::Ready(end),
                        Err(refusal) => {
                            self.refuse(refusal.status, refusal.reason, settings).await;
                            NextHead::Refused
                        }
                    };
                }
                searched = seen.len();
                if searched >= limits.max_bytes {
                    self.refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request head too large",
                        settings,
                    )
                    .await;
                    return NextHead::Refused;
                }
            }
            let idle = self.buf.is_empty();
            let filled = {
                let mut fill = std::pin::pin!(self.buf.fill(&mut self.stream, limits.max_bytes));
                match bounded::at_once(fill.as_mut()).await {
                    Some(filled) => Ok(filled),
                    None => {
                        let now = Instant::now();
                        let wait_until = *deadline.get_or_insert_with(|| {
                            now + if idle { settings.idle_timeout } else { settings.header_timeout }
                        });
                        // One timer either way: an idle connection's fires early, to park it.
                        let park_at = (now + PARK_AFTER).min(wait_until);
                        let woke_at = if idle { park_at } else { wait_until };
                        tokio::select! {
                            biased;
                            filled = tokio::time::timeout_at(woke_at, fill) => match filled {
                                Err(_) if idle && park_at < wait_until => return NextHead::Park(wait_until),
                                filled => filled,
                            },
                            // Only an idle connection closes at once on stop; a head in progress may finish.
                            () = stopped.as_mut(), if idle => return NextHead::Close,
                        }
                    }
                }
            };
            match filled {
                // The first byte of a head starts the header timeout.
                Ok(Ok(1..)) if idle => deadline = None,
                Ok(Ok(1..)) => {}
                Ok(Err(FillError::Full)) => {
                    self.refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request head too large",
                        settings,
                    )
                    .await;
                    return NextHead::Refused;
                }
                Ok(Ok(0) | Err(FillError::Io(_))) | Err(_) => return NextHead::Close,
            }
        }
    }

    /// After our FIN, reads and drops what the client still sends, for a
    /// bounded time: closing a socket with unread bytes sends a reset, which
    /// can destroy the answer the client has not read yet.
    async fn linger(&mut self) {
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut drained = 0;
        while drained < LINGER_BYTES {
            self.buf.consume(self.buf.len());
            match tokio::time::timeout_at(deadline, self.buf.fill(&mut self.stream, KEEP_BUFFER)).await {
                Ok(Ok(n @ 1..)) => drained += n,
                _ => return,
            }
        }
    }

    /// Answers a request the proxy will not read, and closes.
    async fn refuse(&mut self, status: StatusCode, reason: &str, settings: &FrontSettings) {
        tracing::debug!(%status, reason, "request refused");
        let mut text = String::with_capacity(reason.len() + 1);
        text.push_str(reason);
        text.push('\n');
        self.out.pending.clear();
        write::local_response(&mut self.out.pending, status, &text, b"-", true, None);
        let _ = bounded::within(settings.send_timeout, self.out.flush(&mut self.stream)).await;
    }

    /// Serves one request; what becomes of the connection.
    async fn handle(
        &mut self,
        req: &Arrived,
        rt: &Runtime,
        settings: &FrontSettings,
        stopping: bool,
    ) -> Next {
        let arrived = rt.clock.now();
        let (head, hb) = (&req.head, &req.bytes[..]);
        let request_id =
            match head.fields.iter().find(|f| f.kind == FieldName::XRequestId && !f.value.is_empty()) {
                Some(field) => RequestIdRef::Client(field.value),
                None => RequestIdRef::Made(rt.request_ids.next()),
            };
        let (path, _) = route::split_query(&req.target);
        let mut reply = Reply {
            status: StatusCode::OK,
            backend: None,
            keep: head.keep_alive && !stopping,
            body_read: matches!(head.framing, Framing::Empty | Framing::Length(0)),
            local_answer: None,
            location: None,
        };
        let redirect = settings.redirect_to_https;
        match rt.routes.find(head.host.map(|h| h.of(hb)), path) {
            _ if redirect => match head.host {
                Some(host) => reply.redirect(route::https_location(host.of(hb), &req.target)),
                None => reply.local(StatusCode::BAD_REQUEST, "a redirect to https needs a Host\n"),
            },
            None => reply.local(StatusCode::NOT_FOUND, "no route for this host and path\n"),
            Some(index) => {
                let upstream = &rt.upstreams[index];
                let too_large = matches!(head.framing, Framing::Length(n) if rt.max_body_bytes != 0 && n > rt.max_body_bytes);
                match upstream.admit() {
                    _ if too_large => {
                        upstream.metrics.answered(StatusCode::PAYLOAD_TOO_LARGE);
                        reply.local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
                    }
                    None => {
                        upstream.metrics.refused();
                        reply.local(StatusCode::SERVICE_UNAVAILABLE, "upstream is at its in-flight limit\n");
                    }
                    Some(in_flight) => {
                        let span = rt.tracing.as_ref().map(|t| t.request_span(&req.input(), &upstream.name));
                        let request = Request { rt, upstream, request_id, arrived, settings, in_flight };
                        match upstream.settings.protocol {
                            UpstreamProtocol::Http1 => {
                                self.forward_native(req, request, span, &mut reply).await
                            }
                            // Boxed: its state would otherwise enlarge every HTTP/1 connection's task.
                            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                                Box::pin(super::bridge::forward(self, req, request, span, &mut reply)).await;
                            }
                        }
                    }
                }
            }
        }
        let request_id = request_id.bytes(hb);
        if let Some((status, text)) = reply.local_answer.take() {
            // An unread request body makes the next request's start unknowable.
            reply.keep &= reply.body_read;
            reply.status = status;
            self.out.pending.clear();
            let location = reply.location.as_deref();
            write::local_response(&mut self.out.pending, status, text, request_id, !reply.keep, location);
            if !matches!(
                bounded::within(settings.send_timeout, self.out.flush(&mut self.stream)).await,
                Some(Ok(()))
            ) {
                reply.keep = false;
            }
        }
        if rt.access_log.enabled() {
            rt.access_log.write(&AccessEntry {
                client: req.peer,
                method: head.method.as_str(),
                target: head.path.of(hb),
                status: reply.status,
                backend: reply.backend.as_ref().map(http::uri::Authority::as_str),
                duration: rt.clock.now().saturating_since(arrived),
                request_id,
            });
        }
        match (reply.keep, reply.body_read) {
            (true, _) => Next::KeepAlive,
            (false, true) => Next::Close,
            (false, false) => Next::CloseUnread,
        }
    }

    /// Copies the request's hash key into `self.key`; the key, if it has one.
    pub(crate) fn hash_key(&mut self, req: &Arrived, upstream: &Upstream) -> bool {
        self.key.clear();
        let mut ip_buf = [0u8; 16];
        let key = &mut self.key;
        upstream.settings.hash_key.as_ref().is_some_and(|rule| {
            route::hash_key(rule, &req.input(), req.peer.ip(), &mut ip_buf)
                .map(|k| key.extend_from_slice(k))
                .is_some()
        })
    }

    /// Forwards the request to an HTTP/1.1 upstream and relays the answer.
    async fn forward_native(
        &mut self,
        req: &Arrived,
        request: Request<'_>,
        mut span: Option<RequestSpan>,
        reply: &mut Reply,
    ) {
        let Request { rt, upstream, request_id, arrived, settings, in_flight } = request;
        let (head, hb) = (&req.head, &req.bytes[..]);
        let has_key = self.hash_key(req, upstream);
        let upgrade = req.allowed_upgrade(upstream);
        let trace = span.as_ref().map(RequestSpan::context_fields).unwrap_or_default();
        let trace: Vec<(&'static str, &[u8])> = trace.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let edits = RequestEdits {
            host: b"",
            asked_host: head.host.map(|h| h.of(hb)),
            hop: req.hop(rt, upstream),
            request_id: match &request_id {
                RequestIdRef::Made(id) => Some(&id[..]),
                RequestIdRef::Client(_) => None,
            },
            trace: &trace,
            te_trailers: head.te_trailers,
            upgrade: upgrade.map(|u| u.of(hb)),
            framing: head.framing,
        };
        let keep_for_replay = head.method.is_idempotent() || upstream.settings.retry.non_idempotent;
        let client = ClientSide {
            stream: &mut self.stream,
            buf: &mut self.buf,
            max_buffer: BODY_BUFFER,
            body_timeout: settings.body_timeout,
        };
        let mut exchange = NativeExchange::new(
            client,
            req.input(),
            edits,
            &upstream.settings.host_header,
            &mut self.scratch,
            keep_for_replay,
            (rt.replay_limit, &rt.replay_stats),
            rt.max_body_bytes,
            upstream.settings.timeouts.send,
        );
        let key = has_key.then_some(&self.key[..]);
        let forwarded = forward::forward(rt, upstream, &mut exchange, key, arrived, &mut span).await;
        reply.body_read = exchange.body_read();
        drop(exchange);
        match forwarded {
            Forwarded::Local { status, text } => reply.local_or_gone(status, text, span),
            Forwarded::Answer { answer, attempt } => {
                let relayed = Relayed { request_id: request_id.bytes(hb), upgrade, in_flight };
                self.relay_native(req, answer, attempt, relayed, span, settings, upstream, reply).await;
            }
        }
    }

    /// Relays an HTTP/1.1 endpoint's answer to the client, then finishes the try.
    #[allow(clippy::too_many_arguments)]
    async fn relay_native(
        &mut self,
        req: &Arrived,
        answer: NativeAnswer,
        attempt: Attempt,
        relayed: Relayed<'_>,
        mut span: Option<RequestSpan>,
        settings: &FrontSettings,
        upstream: &Upstream,
        reply: &mut Reply,
    ) {
        let NativeAnswer { mut conn, request_sent } = answer;
        let status = StatusCode::from_u16(conn.head.status).unwrap_or(StatusCode::BAD_GATEWAY);
        reply.status = status;
        reply.backend = Some(attempt.extra().authority.clone());
        if let Some(span) = span.as_mut() {
            span.set_backend(&attempt.extra().authority);
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Boxed, as rare: its state would otherwise enlarge every connection's task.
            return Box::pin(self.tunnel(req, conn, attempt, relayed, span, settings, reply)).await;
        }
        let framing = conn.head.framing();
        let (out_framing, encoding) = match framing {
            Framing::Empty => (Framing::Empty, Encoding::Plain),
            Framing::Length(n) => (Framing::Length(n), Encoding::Plain),
            Framing::Chunked if req.head.version == Version::HTTP_11 => (Framing::Chunked, Encoding::Chunked),
            Framing::Chunked | Framing::UntilClose => (Framing::UntilClose, Encoding::Plain),
        };
        reply.keep &= out_framing != Framing::UntilClose && request_sent && reply.body_read;
        let edits = ResponseEdits {
            request_id: relayed.request_id,
            framing: out_framing,
            close: !reply.keep,
            keep_alive_1_0: reply.keep && req.head.version == Version::HTTP_10,
            upgrade: None,
        };
        self.out.pending.clear();
        write::response_head(&mut self.out.pending, &conn.head, conn.buf.bytes(), &edits);
        conn.buf.consume(conn.head.len);
        let mut reader = BodyReader::new(framing, MAX_RESPONSE_HEAD);
        let relay = Relay {
            encoding,
            trailers: req.head.te_trailers,
            read_timeout: upstream.settings.timeouts.read,
            write_timeout: settings.send_timeout,
            max_buffer: BODY_BUFFER,
        };
        let relayed_body =
            body::relay(&mut reader, &mut conn.stream, &mut conn.buf, &mut self.stream, &mut self.out, relay)
                .await;
        let end = match relayed_body {
            Ok(_) => BodyEnd::Complete,
            Err(RelayError::Source(error)) => {
                tracing::debug!(backend = %attempt.extra().authority, %error, "response body from the endpoint failed");
                BodyEnd::Failed
            }
            Err(RelayError::Sink(_)) => BodyEnd::Abandoned,
        };
        if end != BodyEnd::Complete {
            // A cut body must look cut: the client's connection closes mid-message.
            reply.keep = false;
        }
        let reusable =
            end == BodyEnd::Complete && request_sent && conn.head.keep_alive && conn.buf.is_empty();
        // One clock read for both: the connection's idle start and the try's end.
        let now = attempt.now();
        if let (true, Connections::Http1(pool)) = (reusable, &attempt.extra().pool) {
            pool.put_at(conn, now);
        }
        let outcome =
            if end == BodyEnd::Failed { Outcome::Reset } else { Outcome::from_status(status.as_u16()) };
        attempt.finish_at(outcome, status, now);
        if let Some(span) = span {
            span.end(status, end);
        }
        drop(relayed.in_flight);
    }

    /// After an endpoint's 101: the handshake goes back to the client and
    /// bytes are copied both ways until either side closes.
    #[allow(clippy::too_many_arguments)]
    async fn tunnel(
        &mut self,
        req: &Arrived,
        mut conn: UpstreamConn,
        attempt: Attempt,
        relayed: Relayed<'_>,
        span: Option<RequestSpan>,
        settings: &FrontSettings,
        reply: &mut Reply,
    ) {
        reply.keep = false;
        let asked = relayed.upgrade.map(|u| u.of(&req.bytes));
        let answered = conn.head.upgrade.map(|u| u.of(conn.buf.bytes()));
        if !matches!((asked, answered), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b)) {
            attempt.finish(Outcome::Reset, StatusCode::BAD_GATEWAY);
            reply.local(StatusCode::BAD_GATEWAY, "the upstream switched protocols unasked\n");
            return;
        }
        let edits = ResponseEdits {
            request_id: relayed.request_id,
            framing: Framing::Empty,
            close: false,
            keep_alive_1_0: false,
            upgrade: asked,
        };
        self.out.pending.clear();
        write::response_head(&mut self.out.pending, &conn.head, conn.buf.bytes(), &edits);
        conn.buf.consume(conn.head.len);
        // Bytes either side sent early belong to the other.
        self.out.put(conn.buf.bytes());
        let flushed = bounded::within(settings.send_timeout, self.out.flush(&mut self.stream)).await;
        let passed_on = conn.stream.write_all(self.buf.bytes()).await;
        attempt.finish(Outcome::Success, StatusCode::SWITCHING_PROTOCOLS);
        if let Some(span) = span {
            span.end(StatusCode::SWITCHING_PROTOCOLS, BodyEnd::Complete);
        }
        // A tunnel is not a request in flight.
        drop(relayed.in_flight);
        if !matches!(flushed, Some(Ok(()))) || passed_on.is_err() {
            return;
        }
        self.buf.consume(self.buf.len());
        match super::tunnel::copy_both_ways(&mut self.stream, &mut conn.stream, settings.tunnel_idle_timeout)
            .await
        {
            Ok(super::tunnel::TunnelEnd::Closed) => {}
            Ok(super::tunnel::TunnelEnd::Idle) => {
                tracing::debug!("upgraded connection closed after its idle timeout")
            }
            Err(error) => tracing::debug!(%error, "upgraded connection ended with an error"),
        }
    }
}

/// One admitted request and what it needs on its way.
pub(crate) struct Request<'a> {
    pub(crate) rt: &'a Runtime,
    pub(crate) upstream: &'a Upstream,
    pub(crate) request_id: RequestIdRef,
    pub(crate) arrived: Timestamp,
    pub(crate) settings: &'a FrontSettings,
    /// Counts the request against the upstream's `max_in_flight` until dropped.
    pub(crate) in_flight: InFlight,
}

/// What relaying an answer needs from the request.
struct Relayed<'a> {
    request_id: &'a [u8],
    /// The upgrade the client asked for and the upstream allows.
    upgrade: Option<Span>,
    in_flight: InFlight,
}

/// What became of one request, for the access log and the connection.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) backend: Option<http::uri::Authority>,
    /// The connection may carry another request.
    pub(crate) keep: bool,
    /// The request body was read to its end.
    pub(crate) body_read: bool,
    /// The proxy answers itself with this.
    local_answer: Option<(StatusCode, &'static str)>,
    /// The `Location` of the proxy's own answer (a redirect to https).
    location: Option<Vec<u8>>,
}

impl Reply {
    pub(crate) fn local(&mut self, status: StatusCode, text: &'static str) {
        self.local_answer = Some((status, text));
    }

    /// 308 to `location`: the method and body are to be sent again there.
    fn redirect(&mut self, location: Vec<u8>) {
        self.local(StatusCode::PERMANENT_REDIRECT, "this listener redirects to https\n");
        self.location = Some(location);
    }

    /// The attempt loop answered itself: say so, unless the client is gone.
    pub(crate) fn local_or_gone(
        &mut self,
        status: StatusCode,
        text: &'static str,
        span: Option<RequestSpan>,
    ) {
        self.status = status;
        if status == crate::telemetry::CLIENT_CLOSED_REQUEST {
            self.keep = false;
        } else {
            self.local(status, text);
        }
        if let Some(span) = span {
            span.end(status, BodyEnd::Complete);
        }
    }
}
