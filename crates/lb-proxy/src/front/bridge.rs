//! An HTTP/1.x client's request to an HTTP/2 endpoint. The head becomes an
//! HTTP/2 request for hyper's client; the body is pumped from the client's
//! connection into it while the attempt loop runs (and on while the answer
//! streams back, for full-duplex calls); the answer is written back with
//! HTTP/1.1 framing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode, Uri, Version, header};
use http_body::Body;
use lb_core::Outcome;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::h1::{Arrived, Io, Reply, Request, RequestIdRef};
use super::h2::HyperExchange;
use crate::attempt::Attempt;
use crate::body::{BodyEnd, PipedBody, ReplayBody, RequestBody, UpstreamBody};
use crate::forward::{self, ClientFault, Forwarded};
use crate::headers::{self, MapWriter};
use crate::http1::body::{self, BodyReader, Encoding, Output, Piece, SourceError};
use crate::http1::buffer::ReadBuffer;
use crate::http1::fields::FieldName;
use crate::http1::request::Framing;
use crate::http1::write::{self, ResponseEdits};
use crate::otel::RequestSpan;
use crate::pool::http1::{BODY_BUFFER, MAX_RESPONSE_HEAD};

/// Forwards an HTTP/1.x request to an HTTP/2 upstream and relays the answer.
pub(crate) async fn forward<S: super::ClientStream>(
    io: &mut Io<S>,
    req: &Arrived,
    request: Request<'_>,
    mut span: Option<RequestSpan>,
    reply: &mut Reply,
) {
    let Request { rt, upstream, request_id, arrived, settings, in_flight } = request;
    let (head, hb) = (&req.head, &req.bytes[..]);
    let has_key = io.hash_key(req, upstream);
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = head.method.clone();
    parts.version = Version::HTTP_2;
    parts.uri =
        PathAndQuery::try_from(&req.target[..]).map(Uri::from).unwrap_or_else(|_| Uri::from_static("/"));
    let ours = |kind: FieldName| {
        matches!(
            kind,
            FieldName::Host | FieldName::XRequestId | FieldName::Traceparent | FieldName::Tracestate
        ) || headers::FORWARDING.contains(&kind)
    };
    for field in head.fields.iter().filter(|f| f.forward && !ours(f.kind)) {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(field.name.of(hb)), HeaderValue::from_bytes(field.value.of(hb)))
        {
            parts.headers.append(name, value);
        }
    }
    let asked_host = head.host.map(|h| h.of(hb));
    let mut forwarding = MapWriter::default();
    headers::forwarding(&mut forwarding, &req.input(), asked_host, &req.hop(rt, upstream));
    parts.headers.extend(forwarding.map);
    if let Ok(id) = HeaderValue::from_bytes(request_id.bytes(hb)) {
        parts.headers.insert(headers::REQUEST_ID, id);
    }
    for (name, value) in span.as_ref().map(RequestSpan::context_fields).unwrap_or_default() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            parts.headers.insert(HeaderName::from_static(name), value);
        }
    }
    if let Framing::Length(n) = head.framing {
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let (sender, piped) = PipedBody::new(1);
    let has_body = !matches!(head.framing, Framing::Empty | Framing::Length(0));
    let body = if has_body {
        RequestBody::Piped(ReplayBody::new(
            piped,
            rt.replay_limit,
            rt.max_body_bytes,
            Arc::clone(&rt.replay_stats),
        ))
    } else {
        RequestBody::Empty
    };
    let host = asked_host.map(|h| String::from_utf8_lossy(h).into_owned());
    let timeouts = &upstream.settings.timeouts;
    let mut exchange = HyperExchange::new(
        parts,
        body,
        host,
        head.te_trailers,
        upstream.settings.host_header.clone(),
        timeouts.send,
    );
    if has_body && head.expect_continue && io.buf.is_empty() {
        let _ = io.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    let (mut client_read, mut client_write) = io.stream.split();
    let mut reader = BodyReader::new(head.framing, MAX_RESPONSE_HEAD);
    let pump = pump(sender, &mut client_read, &mut io.buf, &mut reader, settings.body_timeout, has_body);
    let key = has_key.then_some(&io.key[..]);
    tokio::pin!(pump);
    let mut pumped = None;
    let forwarded = {
        let forwarding = forward::forward(rt, upstream, &mut exchange, key, arrived, &mut span);
        tokio::pin!(forwarding);
        loop {
            tokio::select! {
                forwarded = &mut forwarding => break forwarded,
                result = &mut pump, if pumped.is_none() => pumped = Some(result),
            }
        }
    };
    match forwarded {
        Forwarded::Local { status, text } => {
            reply.body_read = matches!(pumped, Some(Ok(())));
            reply.local_or_gone(status, text, span);
        }
        Forwarded::Answer { answer, attempt } => {
            let response = answer.into_response(&attempt, timeouts.read);
            let status = response.status();
            reply.status = status;
            reply.backend = Some(attempt.extra().authority.clone());
            if let Some(span) = span.as_mut() {
                span.set_backend(&attempt.extra().authority);
            }
            let relay = relay_response(
                response,
                &mut client_write,
                &mut io.out,
                req,
                request_id,
                timeouts.read,
                settings.send_timeout,
                reply,
            );
            let rest_of_body = async {
                match pumped {
                    Some(result) => result,
                    None => pump.await,
                }
            };
            let (end, pumped) = tokio::join!(relay, rest_of_body);
            reply.body_read = pumped.is_ok();
            finish(attempt, status, end, span);
            drop(in_flight);
        }
    }
}

fn finish(attempt: Attempt, status: StatusCode, end: BodyEnd, span: Option<RequestSpan>) {
    let outcome = if end == BodyEnd::Failed { Outcome::Reset } else { Outcome::from_status(status.as_u16()) };
    attempt.finish(outcome, status);
    if let Some(span) = span {
        span.end(status, end);
    }
}

/// Feeds the client's body into the request's pipe. A client that stops
/// mid-body aborts the pipe, so the endpoint sees its stream reset.
async fn pump<R: AsyncRead + Unpin>(
    mut sender: http_body_util::channel::Sender<Bytes, crate::body::BoxError>,
    client: &mut R,
    buf: &mut ReadBuffer,
    reader: &mut BodyReader,
    body_timeout: Duration,
    has_body: bool,
) -> Result<(), ClientFault> {
    if !has_body {
        return Ok(());
    }
    loop {
        let fault = match reader.next(buf) {
            Ok(Piece::Data(n)) => {
                let data = Bytes::copy_from_slice(&buf.bytes()[..n]);
                buf.consume(n);
                if sender.send_data(data).await.is_err() {
                    // The endpoint no longer reads the body; the rest stays unread.
                    return Err(ClientFault::Aborted);
                }
                continue;
            }
            Ok(Piece::End) => {
                if let Some(trailers) = crate::body::parse_trailers(reader.trailers()) {
                    let _ = sender.send_trailers(trailers).await;
                }
                return Ok(());
            }
            Ok(Piece::NeedMore) => {
                match body::read_more(reader, client, buf, BODY_BUFFER, body_timeout).await {
                    Ok(()) => continue,
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        let fault = match fault {
            SourceError::Timeout => ClientFault::Timeout,
            SourceError::Framing(_) => ClientFault::BadBody,
            SourceError::Truncated | SourceError::Io(_) => ClientFault::Aborted,
        };
        sender.abort(Box::new(SourceError::Truncated));
        return Err(fault);
    }
}

/// Writes an answer hyper received back to the HTTP/1.x client.
#[allow(clippy::too_many_arguments)]
async fn relay_response<W: AsyncWrite + Unpin>(
    response: Response<UpstreamBody>,
    client: &mut W,
    out: &mut Output,
    req: &Arrived,
    request_id: RequestIdRef,
    read_timeout: Duration,
    send_timeout: Duration,
    reply: &mut Reply,
) -> BodyEnd {
    let (parts, mut upstream_body) = response.into_parts();
    let status = parts.status.as_u16();
    let bodiless = req.head.method == Method::HEAD || status < 200 || status == 204 || status == 304;
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| crate::http1::fields::content_length(v.as_bytes()));
    let (framing, encoding) = match length {
        _ if bodiless => (Framing::Empty, Encoding::Plain),
        Some(n) => (Framing::Length(n), Encoding::Plain),
        None if req.head.version == Version::HTTP_11 => (Framing::Chunked, Encoding::Chunked),
        None => (Framing::UntilClose, Encoding::Plain),
    };
    reply.keep &= framing != Framing::UntilClose;
    let edits = ResponseEdits {
        request_id: request_id.bytes(&req.bytes),
        framing,
        close: !reply.keep,
        keep_alive_1_0: reply.keep && req.head.version == Version::HTTP_10,
        upgrade: None,
    };
    out.pending.clear();
    write::response_head_from(&mut out.pending, parts.status, &parts.headers, &edits);
    let mut trailers = Vec::new();
    let end = loop {
        let polled = std::future::poll_fn(|cx| std::pin::Pin::new(&mut upstream_body).poll_frame(cx));
        let frame = match tokio::time::timeout(read_timeout, polled).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break BodyEnd::Complete,
            Ok(Some(Err(_))) | Err(_) => break BodyEnd::Failed,
        };
        match frame.into_data() {
            Ok(data) => {
                let written = tokio::time::timeout(send_timeout, out.data(client, encoding, &data)).await;
                if !matches!(written, Ok(Ok(()))) {
                    break BodyEnd::Abandoned;
                }
            }
            Err(frame) => {
                for (name, value) in
                    frame.trailers_ref().into_iter().flatten().filter(|_| req.head.te_trailers)
                {
                    trailers.extend_from_slice(name.as_str().as_bytes());
                    trailers.extend_from_slice(b": ");
                    trailers.extend_from_slice(value.as_bytes());
                    trailers.extend_from_slice(b"\r\n");
                }
            }
        }
    };
    if end == BodyEnd::Complete {
        if encoding == Encoding::Chunked {
            out.last_chunk(&trailers);
        }
        if matches!(tokio::time::timeout(send_timeout, out.flush(client)).await, Ok(Ok(()))) {
            return BodyEnd::Complete;
        }
        reply.keep = false;
        return BodyEnd::Abandoned;
    }
    // A cut body must look cut: the connection closes mid-message.
    reply.keep = false;
    end
}
