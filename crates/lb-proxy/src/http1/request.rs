//! Request heads: parsed with httparse into offsets on the connection's read
//! buffer, then held to RFC 9112 and to nginx's refusals, so that no server
//! behind us can read the same bytes as a different request.
//!
//! | refused | status |
//! |---|---|
//! | Content-Length with Transfer-Encoding; two Content-Length fields; a Content-Length that is not plain digits | 400 |
//! | Transfer-Encoding on HTTP/1.0, `chunked` not last or twice, an empty coding | 400 |
//! | any coding but `chunked` (`gzip, chunked`) | 501 |
//! | obs-fold, space before the colon, bare CR, bare LF, NUL, invalid token characters | 400 |
//! | HTTP/1.1 without Host, two Host fields, a Host that is not an authority | 400 |
//! | `Expect` other than `100-continue` | 417 |
//! | CONNECT | 405 |
//! | a version other than 1.0 and 1.1 | 505 |
//! | a head larger than `max_header_bytes`, more than `max_headers` fields | 431 |

use std::mem::MaybeUninit;

use http::{Method, StatusCode, Version};

use super::fields::{self, Field, FieldName, Span};

/// The most fields httparse is given room for; `max_headers` is validated against it.
pub(crate) const MAX_FIELDS: usize = 256;

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body and no framing field (a GET; a HEAD response, 204, 304, 1xx).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// A request the proxy refuses to read, with the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

const fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;

/// Limits on request heads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    pub(crate) max_bytes: usize,
    pub(crate) max_fields: usize,
}

/// A parsed request head; every span points into the buffer it was parsed from.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    pub(crate) version: Version,
    /// The path and query to forward (origin form); empty means `/`.
    pub(crate) path: Span,
    /// The host the client asked for: the absolute-form authority, or `Host`.
    pub(crate) host: Option<Span>,
    pub(crate) fields: Vec<Field>,
    /// Length of the head, final CRLF included.
    pub(crate) len: usize,
    pub(crate) framing: Framing,
    /// Whether the client wants the connection kept open afterwards.
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    /// The `Upgrade` value, when `Connection` also said `upgrade`.
    pub(crate) upgrade: Option<Span>,
    /// The client sent `TE: trailers`.
    pub(crate) te_trailers: bool,
}

impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            method: Method::GET,
            version: Version::HTTP_11,
            path: Span::default(),
            host: None,
            fields: Vec::new(),
            len: 0,
            framing: Framing::Empty,
            keep_alive: true,
            expect_continue: false,
            upgrade: None,
            te_trailers: false,
        }
    }
}

impl RequestHead {
    /// The value of the first field called `name` (any case).
    pub(crate) fn field<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .find(|f| f.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.of(buf))
    }

    /// The value of the first field of `kind`.
    pub(crate) fn known<'a>(&self, buf: &'a [u8], kind: FieldName) -> Option<&'a [u8]> {
        self.fields.iter().find(|f| f.kind == kind).map(|f| f.value.of(buf))
    }
}

/// Where the head of a request ends in `buf`, searching from `from` (the
/// bytes before it were searched already): just past its empty line, if it
/// has arrived. Bare LF counts, so a head using it is parsed and refused
/// rather than waited for.
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    memchr::memchr_iter(b'\n', &buf[start..])
        .map(|i| start + i)
        .find(|&i| {
            let before = &buf[..i];
            before.ends_with(b"\n") || before.ends_with(b"\n\r")
        })
        .map(|i| i + 1)
}

/// Parses the complete head at the start of `buf` into `head`.
pub(crate) fn parse(buf: &[u8], limits: HeadLimits, head: &mut RequestHead) -> Result<(), Refusal> {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_FIELDS] =
        [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(refuse(BAD, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields"));
        }
        Err(httparse::Error::Version) if names_a_version(buf) => {
            return Err(refuse(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "unsupported HTTP version"));
        }
        Err(_) => return Err(refuse(BAD, "malformed request head")),
    };
    if len > limits.max_bytes {
        return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
    }
    if request.headers.len() > limits.max_fields {
        return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields"));
    }
    if fields::has_bare_lf(&buf[..len]) {
        return Err(refuse(BAD, "bare LF line ending"));
    }
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Err(refuse(BAD, "malformed request line"));
    };
    head.len = len;
    head.method = Method::from_bytes(method.as_bytes()).map_err(|_| refuse(BAD, "invalid method"))?;
    if head.method == Method::CONNECT {
        return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported"));
    }
    head.version = if version == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let options = head.method == Method::OPTIONS;
    let target_host = read_target(buf, target.as_bytes(), options, head)?;
    fields::record(buf, request.headers, &mut head.fields);
    read_fields(buf, head, target_host)
}

/// Whether the request line is well formed but for its version, a real
/// `HTTP/d.d` (or `HTTP/d`) other than 1.0 and 1.1 (505); anything else
/// httparse calls a version error is a malformed request line (400), as
/// RFC 9112 §3 asks.
fn names_a_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else { return false };
    let Some(number) = version.strip_prefix(b"HTTP/") else { return false };
    let digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
    let well_formed = match number.iter().position(|&b| b == b'.') {
        Some(dot) => digits(&number[..dot]) && digits(&number[dot + 1..]),
        None => digits(number),
    };
    !method.is_empty() && !target.is_empty() && well_formed && !number.starts_with(b"1.")
}

/// Reads the request target: origin form, absolute form (its authority then
/// overrides Host, RFC 9112 §3.2.2), or `*` for OPTIONS. Returns the authority.
fn read_target(
    buf: &[u8],
    target: &[u8],
    options: bool,
    head: &mut RequestHead,
) -> Result<Option<Span>, Refusal> {
    if target.first() == Some(&b'/') {
        head.path = Span::within(buf, target);
        return Ok(None);
    }
    if target == b"*" && options {
        head.path = Span::within(buf, target);
        return Ok(None);
    }
    let scheme_len = if starts_with_ignore_case(target, b"http://") {
        7
    } else if starts_with_ignore_case(target, b"https://") {
        8
    } else {
        return Err(refuse(BAD, "invalid request target"));
    };
    let rest = &target[scheme_len..];
    let authority_len = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_len);
    if !is_authority(authority) {
        return Err(refuse(BAD, "invalid authority in the request target"));
    }
    head.path = Span::within(buf, path);
    Ok(Some(Span::within(buf, authority)))
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Whether `value` is a `host[:port]` as RFC 3986 spells it (reg-name or IP literal).
pub(crate) fn is_authority(value: &[u8]) -> bool {
    !value.is_empty()
        && value.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')')
                || matches!(b, b'*' | b'+' | b',' | b';' | b'=' | b'%' | b':' | b'[' | b']')
        })
}

/// Checks the fields against the framing and Host rules and fills in what they say.
fn read_fields(buf: &[u8], head: &mut RequestHead, target_host: Option<Span>) -> Result<(), Refusal> {
    let mut host = None;
    let mut content_length = None;
    let (mut transfer_encoding, mut chunked_last) = (false, false);
    head.expect_continue = false;
    head.te_trailers = false;
    let mut upgrade_value = None;
    for field in &head.fields {
        let value = field.value.of(buf);
        match field.kind {
            FieldName::Host if host.is_some() => return Err(refuse(BAD, "more than one Host field")),
            FieldName::Host => host = Some(field.value),
            FieldName::ContentLength => {
                let length = fields::content_length(value).ok_or(refuse(BAD, "invalid Content-Length"))?;
                if content_length.replace(length).is_some() {
                    return Err(refuse(BAD, "more than one Content-Length field"));
                }
            }
            FieldName::TransferEncoding => {
                transfer_encoding = true;
                if value.is_empty() {
                    return Err(refuse(BAD, "empty Transfer-Encoding"));
                }
                for coding in fields::tokens(value) {
                    if chunked_last {
                        return Err(refuse(BAD, "chunked is not the last transfer coding"));
                    }
                    if !coding.eq_ignore_ascii_case(b"chunked") {
                        return Err(refuse(StatusCode::NOT_IMPLEMENTED, "unsupported transfer coding"));
                    }
                    chunked_last = true;
                }
            }
            FieldName::Expect => {
                if !value.eq_ignore_ascii_case(b"100-continue") {
                    return Err(refuse(StatusCode::EXPECTATION_FAILED, "unsupported expectation"));
                }
                head.expect_continue = head.version == Version::HTTP_11;
            }
            FieldName::Te => {
                head.te_trailers |= fields::tokens(value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
            }
            FieldName::Upgrade => upgrade_value = Some(field.value),
            _ => {}
        }
    }
    if transfer_encoding {
        if head.version == Version::HTTP_10 {
            return Err(refuse(BAD, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        if content_length.is_some() {
            return Err(refuse(BAD, "both Content-Length and Transfer-Encoding"));
        }
        if !chunked_last {
            return Err(refuse(BAD, "the last transfer coding is not chunked"));
        }
    }
    match host {
        Some(value) if !is_authority(value.of(buf)) => return Err(refuse(BAD, "invalid Host")),
        None if head.version == Version::HTTP_11 => return Err(refuse(BAD, "HTTP/1.1 request without Host")),
        _ => {}
    }
    head.host = target_host.or(host);
    let (close, keep_alive, upgrade) = fields::apply_connection(buf, &mut head.fields);
    head.keep_alive = !close && (head.version == Version::HTTP_11 || keep_alive);
    head.upgrade = upgrade_value.filter(|_| upgrade);
    head.framing = match (transfer_encoding, content_length) {
        (true, _) => Framing::Chunked,
        (false, None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_bytes: 8192, max_fields: 100 };

    fn parsed(text: &str) -> Result<RequestHead, Refusal> {
        let mut head = RequestHead::default();
        let bytes = text.as_bytes();
        let end = head_end(bytes, 0).expect("a complete head");
        parse(&bytes[..end], LIMITS, &mut head).map(|()| head)
    }

    fn status(text: &str) -> u16 {
        parsed(text).map_or_else(|r| r.status.as_u16(), |_| 200)
    }

    #[test]
    fn a_plain_request_is_read_into_offsets() {
        let text = "POST /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello";
        let head = parsed(text).unwrap();
        let buf = text.as_bytes();
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.path.of(buf), b"/a?b=1");
        assert_eq!(head.host.unwrap().of(buf), b"shop.example");
        assert_eq!(head.framing, Framing::Length(5));
        assert_eq!(head.len, text.len() - 5);
        assert!(head.keep_alive);
        assert_eq!(head.field(buf, "x-y"), Some(&b"z"[..]));
        let forwarded: Vec<&[u8]> =
            head.fields.iter().filter(|f| f.forward).map(|f| f.name.of(buf)).collect();
        assert_eq!(forwarded, [&b"Host"[..], b"X-Y"], "framing is rewritten, never copied");
    }

    #[test]
    fn the_absolute_form_overrides_host() {
        let text = "GET http://api.example:8080/v1?x HTTP/1.1\r\nHost: other\r\n\r\n";
        let head = parsed(text).unwrap();
        assert_eq!(head.host.unwrap().of(text.as_bytes()), b"api.example:8080");
        assert_eq!(head.path.of(text.as_bytes()), b"/v1?x");
        let bare = "GET http://api.example HTTP/1.1\r\nHost: api.example\r\n\r\n";
        assert!(parsed(bare).unwrap().path.is_empty(), "forwarded as /");
    }

    #[test]
    fn connection_names_hop_by_hop_fields_but_never_host_or_framing() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-secret, host, content-length\r\n\
                    X-Secret: 1\r\nX-Kept: 2\r\n\r\n";
        let head = parsed(text).unwrap();
        let buf = text.as_bytes();
        let forwarded: Vec<&[u8]> =
            head.fields.iter().filter(|f| f.forward).map(|f| f.name.of(buf)).collect();
        assert_eq!(forwarded, [&b"Host"[..], b"X-Kept"]);
        assert!(!head.keep_alive);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        assert!(parsed("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().keep_alive);
        assert!(!parsed("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(parsed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().keep_alive);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cases = [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n  , identity\r\n\r\n", 400),
        ];
        for (text, want) in cases {
            assert_eq!(status(text), want, "{text:?}");
        }
        let chunked = parsed("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(chunked.framing, Framing::Chunked);
    }

    #[test]
    fn malformed_heads_are_refused() {
        let cases = [
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: a\n\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\0\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET / http/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/3\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
            ("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET http://a b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
        ];
        for (text, want) in cases {
            assert_eq!(status(text), want, "{text:?}");
        }
        assert_eq!(status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert!(parsed("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n").unwrap().expect_continue);
    }

    #[test]
    fn limits_give_431() {
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..100 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status(&many), 431);
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long), 431);
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let text = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        for split in 0..text.len() - 4 {
            assert_eq!(head_end(&text[..split], 0), None, "{split}");
            assert_eq!(head_end(&text[..], split), Some(text.len() - 4), "{split}");
        }
        assert_eq!(
            head_end(b"\r\nGET / HTTP/1.1\r\n\r\n", 0),
            Some(20),
            "a leading empty line is not the end"
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
    }

    #[test]
    fn upgrades_and_trailers_are_noted() {
        let text = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTE: trailers\r\n\r\n";
        let head = parsed(text).unwrap();
        assert_eq!(head.upgrade.unwrap().of(text.as_bytes()), b"websocket");
        assert!(head.te_trailers);
        let no_connection = parsed("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert!(no_connection.upgrade.is_none(), "Upgrade without Connection: upgrade is no handshake");
    }
}
