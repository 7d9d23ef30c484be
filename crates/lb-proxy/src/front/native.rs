//! An HTTP/1.x request to an HTTP/1.1 endpoint, end to end on lb's engine:
//! the request's own task writes its head and body to a pooled connection
//! and reads the response head back, with no task or channel in between.
//!
//! The body streams from the client as it arrives. Up to the replay limit
//! it is also kept, so a try that fails can go again; once more was sent
//! than was kept, the request is no longer retried. A client that stops
//! mid-body never has its request completed: the endpoint's connection is
//! dropped (the endpoint sees the cut), nothing is retried, and the request
//! counts as 499. An endpoint that answers before it read the whole body
//! gets its answer relayed and its connection closed.

use lb_core::Timestamp;
use std::time::Duration;

use super::ClientStream;
use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::body::ReplayStats;
use crate::bounded;
use crate::config::HostHeader;
use crate::duplex::Duplex;
use crate::forward::{ClientFault, Exchange, TryError};
use crate::http1::body::{self, BodyReader, Encoding, Output, Piece, SourceError};
use crate::http1::buffer::ReadBuffer;
use crate::http1::request::Framing;
use crate::http1::write::{self, HeadIn, RequestEdits};
use crate::pool::Connections;
use crate::pool::http1::{HeadError, UpstreamConn};
use crate::upstream::Backend;

/// The answer of one try: the connection with the response head read.
#[derive(Debug)]
pub(crate) struct NativeAnswer {
    pub(crate) conn: UpstreamConn,
    /// The whole request went out (false when the endpoint answered early).
    pub(crate) request_sent: bool,
}

/// What the exchange borrows from the client's connection.
pub(crate) struct ClientSide<'a, S> {
    pub(crate) stream: &'a mut S,
    /// Bytes from the client not consumed yet: the body, perhaps a pipelined request.
    pub(crate) buf: &'a mut ReadBuffer,
    pub(crate) max_buffer: usize,
    /// Longest wait between reads of the body.
    pub(crate) body_timeout: Duration,
}

/// Per-connection memory the exchange reuses from request to request.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// What goes to the endpoint: the head, then body pieces gathered with it.
    pub(crate) out: Output,
    /// The body as read so far, for another try.
    pub(crate) replay: Vec<u8>,
}

/// One HTTP/1.x request on its way to HTTP/1.1 endpoints.
pub(crate) struct NativeExchange<'a, S> {
    pub(crate) client: ClientSide<'a, S>,
    pub(crate) head: HeadIn<'a>,
    /// Everything of the edits but the `Host`, which may depend on the endpoint.
    pub(crate) edits: RequestEdits<'a>,
    pub(crate) host_header: &'a HostHeader,
    pub(crate) scratch: &'a mut Scratch,
    pub(crate) body: BodyReader,
    /// Keep the body for another try (the method may be retried at all).
    pub(crate) keep_for_replay: bool,
    pub(crate) replay_limit: usize,
    pub(crate) replay_stats: &'a ReplayStats,
    /// The most body bytes accepted; 0 means no limit.
    pub(crate) max_body: u64,
    /// Longest wait for one write to an endpoint.
    pub(crate) send_timeout: Duration,
    /// `100 Continue` is owed to the client before its body is read.
    pub(crate) continue_owed: bool,
    /// Body bytes were sent that the replay buffer does not hold.
    lost: bool,
    /// Body bytes read from the client so far.
    received: u64,
}

/// How a try failed before its response head.
enum Failure {
    /// A reused connection failed before any byte of an answer: perhaps only stale.
    Stale,
    Error(TryError),
}

impl<'a, S: ClientStream> NativeExchange<'a, S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: ClientSide<'a, S>,
        head: HeadIn<'a>,
        edits: RequestEdits<'a>,
        host_header: &'a HostHeader,
        scratch: &'a mut Scratch,
        keep_for_replay: bool,
        replay: (usize, &'a ReplayStats),
        max_body: u64,
        send_timeout: Duration,
    ) -> Self {
        scratch.replay.clear();
        NativeExchange {
            body: BodyReader::new(head.head.framing, crate::pool::http1::MAX_RESPONSE_HEAD),
            continue_owed: head.head.expect_continue,
            client,
            head,
            edits,
            host_header,
            scratch,
            keep_for_replay,
            replay_limit: replay.0,
            replay_stats: replay.1,
            max_body,
            send_timeout,
            lost: false,
            received: 0,
        }
    }

    /// Whether the whole request body was read from the client.
    pub(crate) fn body_read(&self) -> bool {
        self.body.is_done()
    }

    /// One try on `conn`: the request out, the response head in.
    async fn try_on(
        &mut self,
        conn: &mut UpstreamConn,
        backend: &Backend,
        timeout: Duration,
    ) -> Result<bool, Failure> {
        let host = match self.host_header {
            HostHeader::Preserve => self.edits.asked_host.unwrap_or(backend.authority.as_str().as_bytes()),
            HostHeader::Endpoint => backend.authority.as_str().as_bytes(),
            HostHeader::Set(value) => value.as_bytes(),
        };
        let edits = RequestEdits { host, ..self.edits };
        self.scratch.out.pending.clear();
        write::request_head(&mut self.scratch.out.pending, self.head, &edits);
        let reused = conn.reused;
        let sent = self.send_body(conn).await.map_err(|error| match error {
            SendError::Client(fault) => Failure::Error(TryError::Client(fault)),
            SendError::Endpoint if reused => Failure::Stale,
            SendError::Endpoint => Failure::Error(TryError::Reset),
            SendError::EndpointStalled => Failure::Error(TryError::Timeout),
        })?;
        let head = self.head.head;
        let waiting = wait_for_head(
            conn,
            &head.method,
            &mut *self.client.stream,
            self.client.buf,
            self.client.max_buffer,
        );
        match tokio::time::timeout(timeout, waiting).await {
            Err(_) => Err(Failure::Error(TryError::Timeout)),
            Ok(Ok(())) => Ok(sent),
            Ok(Err(Waited::ClientGone)) => Err(Failure::Error(TryError::Client(ClientFault::Aborted))),
            Ok(Err(Waited::Head(HeadError::Closed))) if reused => Err(Failure::Stale),
            Ok(Err(Waited::Head(HeadError::Closed))) => Err(Failure::Error(TryError::Reset)),
            Ok(Err(Waited::Head(HeadError::Io(error)))) => {
                tracing::debug!(backend = %backend.authority, %error, "endpoint connection failed mid-head");
                Err(Failure::Error(TryError::Reset))
            }
            Ok(Err(Waited::Head(HeadError::Bad(reason)))) => {
                tracing::debug!(backend = %backend.authority, %reason, "endpoint answer refused");
                Err(Failure::Error(TryError::BadResponse))
            }
        }
    }

    /// Writes the pending head and the body. `Ok(false)`: the endpoint
    /// answered before the body was all sent.
    async fn send_body(&mut self, conn: &mut UpstreamConn) -> Result<bool, SendError> {
        let encoding =
            if self.head.head.framing == Framing::Chunked { Encoding::Chunked } else { Encoding::Plain };
        let (endpoint_read, mut endpoint) = conn.stream.split();
        let out = &mut self.scratch.out;
        let send_timeout = self.send_timeout;
        // A write that has to wait gives way to an early answer, and gets the send timeout.
        macro_rules! write_or_answered {
            ($write:expr) => {{
                let mut write = std::pin::pin!($write);
                let written = match bounded::at_once(write.as_mut()).await {
                    Some(written) => Some(written),
                    None => tokio::select! {
                        biased;
                        _ = endpoint_read.readable() => return Ok(false),
                        written = tokio::time::timeout(send_timeout, write) => written.ok(),
                    },
                };
                match written {
                    Some(Ok(())) => {}
                    Some(Err(_)) => return Err(SendError::Endpoint),
                    None => return Err(SendError::EndpointStalled),
                }
            }};
        }
        if !self.scratch.replay.is_empty() {
            write_or_answered!(out.data(&mut endpoint, encoding, &self.scratch.replay));
        }
        loop {
            match self.body.next(self.client.buf) {
                Err(_) => return Err(SendError::Client(ClientFault::BadBody)),
                Ok(Piece::Data(n)) => {
                    self.received += n as u64;
                    if self.max_body != 0 && self.received > self.max_body {
                        return Err(SendError::Client(ClientFault::TooLarge));
                    }
                    let data = &self.client.buf.bytes()[..n];
                    if self.keep_for_replay
                        && !self.lost
                        && self.scratch.replay.len() + n <= self.replay_limit
                    {
                        self.scratch.replay.extend_from_slice(data);
                        self.replay_stats.note(self.scratch.replay.len());
                    } else if !self.lost {
                        self.lost = true;
                        self.scratch.replay.clear();
                    }
                    write_or_answered!(out.data(&mut endpoint, encoding, data));
                    self.client.buf.consume(n);
                }
                Ok(Piece::NeedMore) => {
                    write_or_answered!(out.flush(&mut endpoint));
                    if std::mem::take(&mut self.continue_owed) {
                        let told = self.client.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                        told.map_err(|_| SendError::Client(ClientFault::Aborted))?;
                    }
                    let reading = body::read_more(
                        &mut self.body,
                        &mut *self.client.stream,
                        self.client.buf,
                        self.client.max_buffer,
                        self.client.body_timeout,
                    );
                    tokio::select! {
                        biased;
                        _ = endpoint_read.readable() => return Ok(false),
                        read = reading => read.map_err(|e| SendError::Client(client_fault(e)))?,
                    }
                }
                Ok(Piece::End) => {
                    if encoding == Encoding::Chunked {
                        out.last_chunk(self.body.trailers());
                    }
                    write_or_answered!(out.flush(&mut endpoint));
                    return Ok(true);
                }
            }
        }
    }
}

/// Why sending a request body stopped.
enum SendError {
    Client(ClientFault),
    /// The endpoint's connection failed.
    Endpoint,
    /// The endpoint stopped reading for longer than the send timeout.
    EndpointStalled,
}

fn client_fault(error: SourceError) -> ClientFault {
    match error {
        SourceError::Timeout => ClientFault::Timeout,
        SourceError::Framing(_) => ClientFault::BadBody,
        SourceError::Truncated | SourceError::Io(_) => ClientFault::Aborted,
    }
}

enum Waited {
    Head(HeadError),
    /// The client closed its connection while the endpoint was working.
    ClientGone,
}

/// Reads the response head, watching the client: one that hangs up ends the
/// wait (its request counts as 499). Bytes it sends meanwhile (a pipelined
/// request) are kept in its buffer.
async fn wait_for_head<S: ClientStream>(
    conn: &mut UpstreamConn,
    method: &Method,
    client: &mut S,
    client_buf: &mut ReadBuffer,
    max_buffer: usize,
) -> Result<(), Waited> {
    let head = conn.read_head(method);
    tokio::pin!(head);
    let mut watching = true;
    loop {
        tokio::select! {
            read = &mut head => return read.map_err(Waited::Head),
            filled = client_buf.fill(client, max_buffer), if watching => match filled {
                Ok(0) | Err(crate::http1::buffer::FillError::Io(_)) => return Err(Waited::ClientGone),
                Ok(_) => {}
                // A full buffer stops the watch; the answer still comes.
                Err(crate::http1::buffer::FillError::Full) => watching = false,
            },
        }
    }
}

impl<S: ClientStream> Exchange for NativeExchange<'_, S> {
    type Answer = NativeAnswer;

    fn method(&self) -> &Method {
        &self.head.head.method
    }

    fn replayable(&self) -> bool {
        !self.lost
    }

    async fn send(
        &mut self,
        backend: &Backend,
        now: Timestamp,
        timeout: Duration,
    ) -> Result<NativeAnswer, TryError> {
        let Connections::Http1(pool) = &backend.pool else { return Err(TryError::Connect) };
        // A pooled connection the endpoint closed while we sent gets one fresh retry,
        // uncharged, when the request may safely go twice.
        let mut stale_retry = self.head.head.method.is_idempotent();
        loop {
            let mut conn = super::http1_connection(pool, backend, now, timeout).await?;
            match self.try_on(&mut conn, backend, timeout).await {
                Ok(request_sent) => return Ok(NativeAnswer { conn, request_sent }),
                Err(Failure::Stale) if stale_retry && self.replayable() => stale_retry = false,
                Err(Failure::Stale) => return Err(TryError::Reset),
                Err(Failure::Error(error)) => return Err(error),
            }
        }
    }

    fn status(answer: &NativeAnswer) -> StatusCode {
        StatusCode::from_u16(answer.conn.head.status).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    fn retry_after(answer: &NativeAnswer) -> Option<Duration> {
        answer.conn.retry_after()
    }
}
