//! An HTTP/1.1 endpoint's response body, read by lb's engine for a client
//! that hyper serves (HTTP/2). The body owns the endpoint's connection and
//! gives it back to the pool when read to its end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::{BoxError, PolledFrame};
use crate::http1::body::{BodyReader, Piece, SourceError};
use crate::http1::buffer::FillError;
use crate::pool::Connections;
use crate::pool::http1::{BODY_BUFFER, UpstreamConn};
use crate::upstream::Backend;

/// A response body streamed off an HTTP/1.1 connection.
pub(crate) struct Http1Body {
    /// Until the body ends.
    conn: Option<UpstreamConn>,
    reader: BodyReader,
    /// Where the connection goes back to, if it may.
    backend: Arc<Backend>,
    reusable: bool,
    read_timeout: Duration,
    /// Armed while waiting for the endpoint.
    idle: Option<Pin<Box<Sleep>>>,
    trailers_sent: bool,
}

impl std::fmt::Debug for Http1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Body").finish_non_exhaustive()
    }
}

impl Http1Body {
    /// The body after the head already consumed from `conn`; `reusable` when
    /// the request went out whole and the endpoint keeps the connection.
    pub(crate) fn new(
        conn: UpstreamConn,
        reader: BodyReader,
        backend: Arc<Backend>,
        reusable: bool,
        read_timeout: Duration,
    ) -> Self {
        Http1Body {
            conn: Some(conn),
            reader,
            backend,
            reusable,
            read_timeout,
            idle: None,
            trailers_sent: false,
        }
    }

    fn end(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
            && let Connections::Http1(pool) = &self.backend.pool
        {
            pool.put(conn);
        }
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match this.reader.next(&mut conn.buf) {
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Ok(Piece::Data(n)) => {
                    let data = Bytes::copy_from_slice(&conn.buf.bytes()[..n]);
                    conn.buf.consume(n);
                    this.idle = None;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Piece::End) => {
                    let trailers = this.reader.trailers();
                    if !this.trailers_sent && !trailers.is_empty() {
                        this.trailers_sent = true;
                        if let Some(map) = parse_trailers(trailers) {
                            this.end();
                            return Poll::Ready(Some(Ok(Frame::trailers(map))));
                        }
                    }
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(Piece::NeedMore) => {}
            }
            match conn.buf.poll_fill(cx, &mut conn.stream, BODY_BUFFER) {
                Poll::Ready(Ok(0)) => {
                    if let Err(error) = this.reader.at_eof() {
                        this.conn = None;
                        return Poll::Ready(Some(Err(error.into())));
                    }
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(FillError::Io(e))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(SourceError::Io(e).into())));
                }
                Poll::Ready(Err(FillError::Full)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(SourceError::Truncated.into())));
                }
                Poll::Pending => {
                    let timeout = this.read_timeout;
                    let idle = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if idle.as_mut().poll(cx).is_ready() {
                        this.conn = None;
                        return Poll::Ready(Some(Err(SourceError::Timeout.into())));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.reader.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The raw trailer lines of a chunked body as a `HeaderMap` (already validated by the decoder).
pub(crate) fn parse_trailers(raw: &[u8]) -> Option<HeaderMap> {
    let mut block = raw.to_vec();
    block.extend_from_slice(b"\r\n");
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let httparse::Status::Complete((_, fields)) = httparse::parse_headers(&block, &mut fields).ok()? else {
        return None;
    };
    let mut map = HeaderMap::new();
    for field in fields {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(field.name.as_bytes()), http::HeaderValue::from_bytes(field.value))
        {
            map.append(name, value);
        }
    }
    Some(map)
}
