//! Heads as lb writes them: the request to an endpoint and the response to
//! a client. Fields the other side may rely on pass through byte for byte,
//! in their order and spelling; the proxy writes its own framing,
//! forwarding fields and request id, so nothing it did not check leaves.

use http::StatusCode;

use super::fields::{Field, FieldName};
use super::request::{Framing, RequestHead};
use super::response::ResponseHead;
use crate::headers::{self, ClientFields, FieldWriter, Hop};

/// The parts of a forwarded request head the proxy decides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestEdits<'a> {
    /// The `Host` to send.
    pub(crate) host: &'a [u8],
    /// The host the client asked for, for `X-Forwarded-Host`.
    pub(crate) asked_host: Option<&'a [u8]>,
    pub(crate) hop: Hop<'a>,
    /// A request id to add; `None` passes the client's on.
    pub(crate) request_id: Option<&'a [u8]>,
    /// Trace context fields replacing the client's (`traceparent`, `tracestate`).
    pub(crate) trace: &'a [(&'static str, &'a [u8])],
    /// Send `TE: trailers` (the client sent it).
    pub(crate) te_trailers: bool,
    /// Keep the upgrade handshake, with this `Upgrade` value.
    pub(crate) upgrade: Option<&'a [u8]>,
    pub(crate) framing: Framing,
}

impl FieldWriter for Vec<u8> {
    fn begin(&mut self, name: &'static str) {
        self.extend_from_slice(name.as_bytes());
        self.extend_from_slice(b": ");
    }
    fn push(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn end(&mut self) {
        self.extend_from_slice(b"\r\n");
    }
}

/// A request head with the buffer its spans point into.
#[derive(Clone, Copy)]
pub(crate) struct HeadIn<'a> {
    pub(crate) head: &'a RequestHead,
    pub(crate) buf: &'a [u8],
    /// The request target as it goes on: the path normalised (`crate::path`), the query as sent.
    pub(crate) target: &'a [u8],
}

impl ClientFields for HeadIn<'_> {
    fn values(&self, kind: FieldName, each: &mut dyn FnMut(&[u8])) {
        for field in self.head.fields.iter().filter(|f| f.kind == kind) {
            each(field.value.of(self.buf));
        }
    }
    fn first(&self, kind: FieldName) -> Option<&[u8]> {
        self.head.known(self.buf, kind)
    }
}

fn field(out: &mut Vec<u8>, buf: &[u8], f: &Field) {
    out.extend_from_slice(f.name.of(buf));
    out.extend_from_slice(b": ");
    out.extend_from_slice(f.value.of(buf));
    out.extend_from_slice(b"\r\n");
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes the head of `input`'s request as it goes to an endpoint (HTTP/1.1, origin form).
pub(crate) fn request_head(out: &mut Vec<u8>, input: HeadIn<'_>, edits: &RequestEdits<'_>) {
    let (head, buf) = (input.head, input.buf);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(input.target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(edits.host);
    out.extend_from_slice(b"\r\n");
    let ours = |kind: FieldName| match kind {
        FieldName::Host => true,
        FieldName::XRequestId => edits.request_id.is_some(),
        FieldName::Traceparent | FieldName::Tracestate => !edits.trace.is_empty(),
        kind => headers::FORWARDING.contains(&kind),
    };
    for f in head.fields.iter().filter(|f| f.forward && !ours(f.kind)) {
        field(out, buf, f);
    }
    headers::forwarding(out, &input, edits.asked_host, &edits.hop);
    if let Some(id) = edits.request_id {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(id);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in edits.trace {
        FieldWriter::begin(out, name);
        FieldWriter::push(out, value);
        FieldWriter::end(out);
    }
    if edits.te_trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    if let Some(protocol) = edits.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(protocol);
        out.extend_from_slice(b"\r\n");
    }
    framing(out, edits.framing);
    out.extend_from_slice(b"\r\n");
}

fn framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            number(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
}

/// How the proxy frames a response to the client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseEdits<'a> {
    pub(crate) request_id: &'a [u8],
    /// The framing of the body as it goes out (`Empty` writes no length: HEAD, 204, 304).
    pub(crate) framing: Framing,
    /// The connection closes after this response.
    pub(crate) close: bool,
    /// Say `Connection: keep-alive` (an HTTP/1.0 client that asked for it).
    pub(crate) keep_alive_1_0: bool,
    /// Keep the upgrade handshake, with this `Upgrade` value.
    pub(crate) upgrade: Option<&'a [u8]>,
}

/// Writes an endpoint's response head as it goes to the client.
pub(crate) fn response_head(out: &mut Vec<u8>, head: &ResponseHead, buf: &[u8], edits: &ResponseEdits<'_>) {
    status_line(out, head.status, head.reason.of(buf));
    for f in head.fields.iter().filter(|f| f.forward && f.kind != FieldName::XRequestId) {
        field(out, buf, f);
    }
    ending(out, edits);
}

/// Writes a response head hyper received (from an HTTP/2 endpoint) as it goes to an HTTP/1.x client.
pub(crate) fn response_head_from(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: &http::HeaderMap,
    edits: &ResponseEdits<'_>,
) {
    status_line(out, status.as_u16(), b"");
    for (name, value) in fields {
        let kind = FieldName::of(name.as_str().as_bytes());
        if !kind.is_hop_by_hop() && kind != FieldName::XRequestId {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    ending(out, edits);
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    match reason {
        [] => {
            let canonical = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
            out.extend_from_slice(canonical.unwrap_or("").as_bytes());
        }
        reason => out.extend_from_slice(reason),
    }
    out.extend_from_slice(b"\r\n");
}

fn ending(out: &mut Vec<u8>, edits: &ResponseEdits<'_>) {
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(edits.request_id);
    out.extend_from_slice(b"\r\n");
    framing(out, edits.framing);
    if let Some(protocol) = edits.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(protocol);
        out.extend_from_slice(b"\r\n");
    } else if edits.close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if edits.keep_alive_1_0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a response the proxy makes itself: `text` as a plain-text body.
pub(crate) fn local_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    text: &str,
    request_id: &[u8],
    close: bool,
    location: Option<&[u8]>,
) {
    status_line(out, status.as_u16(), b"");
    out.extend_from_slice(b"content-type: text/plain\r\n");
    if let Some(location) = location {
        out.extend_from_slice(b"location: ");
        out.extend_from_slice(location);
        out.extend_from_slice(b"\r\n");
    }
    let edits = ResponseEdits {
        request_id,
        framing: Framing::Length(text.len() as u64),
        close,
        keep_alive_1_0: false,
        upgrade: None,
    };
    ending(out, &edits);
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::request::{self, HeadLimits};
    use crate::http1::response;

    #[test]
    fn a_request_goes_out_with_our_framing_and_forwarding() {
        let text = "POST http://shop.example/cart?x=1 HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 6.6.6.6\r\n\
                    Connection: x-hop\r\nX-Hop: 1\r\nCase-Kept: A\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
        let mut head = RequestHead::default();
        request::parse(text.as_bytes(), HeadLimits { max_bytes: 4096, max_fields: 64 }, &mut head).unwrap();
        let buf = text.as_bytes();
        let hop = Hop {
            peer: "192.0.2.1".parse().unwrap(),
            peer_text: b"192.0.2.1",
            proto: "http",
            trusted: false,
            rfc7239: false,
        };
        let edits = RequestEdits {
            host: b"shop.example",
            asked_host: head.host.map(|h| h.of(buf)),
            hop,
            request_id: Some(b"id-1"),
            trace: &[],
            te_trailers: false,
            upgrade: None,
            framing: head.framing,
        };
        let mut out = Vec::new();
        request_head(&mut out, HeadIn { head: &head, buf, target: b"/cart?x=1" }, &edits);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /cart?x=1 HTTP/1.1\r\nhost: shop.example\r\nCase-Kept: A\r\nx-forwarded-for: 192.0.2.1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: shop.example\r\nx-request-id: id-1\r\ncontent-length: 3\r\n\r\n"
        );
    }

    #[test]
    fn a_response_keeps_its_fields_and_gets_ours() {
        let text = "HTTP/1.1 200 OK\r\nX-Request-Id: theirs\r\nConnection: keep-alive\r\nSet-Cookie: a=1\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        let mut head = response::ResponseHead::default();
        assert!(response::parse(text.as_bytes(), &http::Method::GET, 4096, &mut head).unwrap());
        let edits = ResponseEdits {
            request_id: b"ours",
            framing: Framing::Length(5),
            close: true,
            keep_alive_1_0: false,
            upgrade: None,
        };
        let mut out = Vec::new();
        response_head(&mut out, &head, text.as_bytes(), &edits);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nx-request-id: ours\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
        let mut local = Vec::new();
        local_response(&mut local, StatusCode::BAD_REQUEST, "bad\n", b"id", true, None);
        assert_eq!(
            String::from_utf8(local).unwrap(),
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nx-request-id: id\r\ncontent-length: 4\r\n\
             connection: close\r\n\r\nbad\n"
        );
    }
}
