//! Response heads from endpoints, held to the same rules as requests: an
//! endpoint whose framing is ambiguous gets its connection closed and the
//! client a 502, never a guess (RFC 9112 §6.3; nginx answers 502 to an
//! unknown Transfer-Encoding from upstream too).

use std::mem::MaybeUninit;

use http::{Method, Version};

use super::fields::{self, Field, FieldName, Span};
use super::request::{Framing, MAX_FIELDS};

/// Why an endpoint's response head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadResponse {
    /// Not HTTP/1.x, or malformed.
    #[error("malformed response head from the endpoint")]
    Malformed,
    /// Larger than the limit.
    #[error("response head from the endpoint too large")]
    TooLarge,
    /// Content-Length and Transfer-Encoding together, or several lengths, or an unknown coding.
    #[error("ambiguous response framing from the endpoint")]
    Framing,
}

/// A parsed response head; its spans point into the endpoint connection's buffer.
#[derive(Debug, Default)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) reason: Span,
    pub(crate) version: Option<Version>,
    pub(crate) fields: Vec<Field>,
    /// Length of the head, final CRLF included.
    pub(crate) len: usize,
    framing: Option<Framing>,
    /// Whether the endpoint keeps the connection open after this response.
    pub(crate) keep_alive: bool,
    /// The `Upgrade` value of a 101, when `Connection` also said `upgrade`.
    pub(crate) upgrade: Option<Span>,
}

impl ResponseHead {
    /// How the body is delimited.
    pub(crate) fn framing(&self) -> Framing {
        self.framing.unwrap_or(Framing::Empty)
    }

    /// Whether this is an interim (1xx) response other than 101.
    pub(crate) fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses the response head at the start of `buf`, if it has arrived whole,
/// for a request with `method`. Returns `Ok(false)` when more bytes are needed.
pub(crate) fn parse(
    buf: &[u8],
    method: &Method,
    max_bytes: usize,
    head: &mut ResponseHead,
) -> Result<bool, BadResponse> {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_FIELDS] =
        [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => return Err(BadResponse::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
        Err(_) => return Err(BadResponse::Malformed),
    };
    if len > max_bytes {
        return Err(BadResponse::TooLarge);
    }
    if fields::has_bare_lf(&buf[..len]) {
        return Err(BadResponse::Malformed);
    }
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(BadResponse::Malformed);
    };
    head.len = len;
    head.status = status;
    head.version = Some(if version == 0 { Version::HTTP_10 } else { Version::HTTP_11 });
    // A status line without a reason phrase (`HTTP/1.1 200`) is valid (RFC 9112 §4); httparse's
    // empty reason is then not a part of `buf`, so it gets an empty span of its own.
    head.reason = match response.reason {
        Some(reason) if !reason.is_empty() => Span::within(buf, reason.as_bytes()),
        _ => Span::default(),
    };
    fields::record(buf, response.headers, &mut head.fields);
    read_framing(buf, method, head)?;
    Ok(true)
}

fn read_framing(buf: &[u8], method: &Method, head: &mut ResponseHead) -> Result<(), BadResponse> {
    let mut content_length = None;
    let mut transfer_encoding = false;
    let mut upgrade_value = None;
    for field in &head.fields {
        let value = field.value.of(buf);
        match field.kind {
            FieldName::ContentLength => {
                let length = fields::content_length(value).ok_or(BadResponse::Framing)?;
                if content_length.replace(length).is_some() {
                    return Err(BadResponse::Framing);
                }
            }
            FieldName::TransferEncoding => {
                // Only `chunked`, once: anything else has no framing we can vouch for.
                if transfer_encoding || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(BadResponse::Framing);
                }
                transfer_encoding = true;
            }
            FieldName::Upgrade => upgrade_value = Some(field.value),
            _ => {}
        }
    }
    let http10 = head.version == Some(Version::HTTP_10);
    if transfer_encoding && (content_length.is_some() || http10) {
        return Err(BadResponse::Framing);
    }
    let (close, keep_alive, upgrade) = fields::apply_connection(buf, &mut head.fields);
    head.keep_alive = !close && (!http10 || keep_alive);
    head.upgrade = upgrade_value.filter(|_| upgrade && head.status == 101);
    let bodiless = *method == Method::HEAD || head.status < 200 || head.status == 204 || head.status == 304;
    head.framing = Some(match (bodiless, transfer_encoding, content_length) {
        (true, _, _) => Framing::Empty,
        (false, true, _) => Framing::Chunked,
        (false, false, Some(n)) => Framing::Length(n),
        (false, false, None) => Framing::UntilClose,
    });
    if head.framing == Some(Framing::UntilClose) {
        head.keep_alive = false;
    }
    if bodiless {
        // HEAD and 304 keep their Content-Length: it describes the resource, not this message.
        for field in head.fields.iter_mut().filter(|f| f.kind == FieldName::ContentLength) {
            field.forward = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str, method: Method) -> Result<ResponseHead, BadResponse> {
        let mut head = ResponseHead::default();
        assert!(parse(text.as_bytes(), &method, 8192, &mut head)?, "complete");
        Ok(head)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |text: &str, method| parsed(text, method).unwrap().framing();
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", Method::GET), Framing::Length(3));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET),
            Framing::Chunked
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", Method::GET), Framing::UntilClose);
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", Method::HEAD), Framing::Empty);
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", Method::GET), Framing::Empty);
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", Method::GET),
            Framing::Empty
        );
        let head = parsed("HTTP/1.1 200 OK\r\n\r\n", Method::GET).unwrap();
        assert!(!head.keep_alive, "a close-delimited body ends the connection");
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(parsed(text, Method::GET).unwrap_err(), BadResponse::Framing, "{text:?}");
        }
        for text in ["HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 200 OK\nX: 1\r\n\r\n", "SSH-2.0-OpenSSH\r\n\r\n"] {
            assert_eq!(parsed(text, Method::GET).unwrap_err(), BadResponse::Malformed, "{text:?}");
        }
    }

    #[test]
    fn hop_by_hop_fields_are_not_forwarded() {
        let text = "HTTP/1.1 200 OK\r\nConnection: x-internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\n\
                    Content-Length: 0\r\nX-Kept: 1\r\n\r\n";
        let head = parsed(text, Method::GET).unwrap();
        let buf = text.as_bytes();
        let kept: Vec<&[u8]> = head.fields.iter().filter(|f| f.forward).map(|f| f.name.of(buf)).collect();
        assert_eq!(kept, [&b"X-Kept"[..]]);
        assert!(head.keep_alive);
        let http10 = parsed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET).unwrap();
        assert!(!http10.keep_alive);
    }

    #[test]
    fn partial_heads_wait_and_huge_ones_fail() {
        let mut head = ResponseHead::default();
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nX: 1", &Method::GET, 64, &mut head), Ok(false));
        assert_eq!(parse(&[b'x'; 64], &Method::GET, 64, &mut head), Err(BadResponse::Malformed));
        let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(100));
        assert_eq!(parse(long.as_bytes(), &Method::GET, 64, &mut head), Err(BadResponse::TooLarge));
    }

    #[test]
    fn a_status_line_without_a_reason_phrase_is_read() {
        // Found by the fuzzer: this used to panic (a span outside the buffer).
        for text in ["HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 204 \r\n\r\n"] {
            let head = parsed(text, Method::GET).unwrap();
            assert!(head.reason.is_empty(), "{text:?}");
            let mut out = Vec::new();
            let edits = super::super::write::ResponseEdits {
                request_id: b"r",
                framing: head.framing(),
                close: false,
                keep_alive_1_0: false,
                upgrade: None,
            };
            super::super::write::response_head(&mut out, &head, text.as_bytes(), &edits);
            assert!(out.starts_with(b"HTTP/1.1 2"), "{:?}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn interim_responses_and_upgrades() {
        assert!(parsed("HTTP/1.1 100 Continue\r\n\r\n", Method::POST).unwrap().is_interim());
        let text = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let head = parsed(text, Method::GET).unwrap();
        assert!(!head.is_interim());
        assert_eq!(head.upgrade.unwrap().of(text.as_bytes()), b"websocket");
    }
}
