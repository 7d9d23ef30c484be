//! Fuzz targets for the HTTP/1 engine: request heads, chunked bodies and
//! response heads, from arbitrary bytes and from near-valid messages
//! (mutated, and split into reads at random places). Bad input must be
//! refused, never panic, and what the proxy writes from an accepted head
//! must itself be accepted.

use std::task::{Context, Poll, Waker};

use http::Method;
use proptest::prelude::*;

use super::body::{BodyReader, Piece, SourceError};
use super::buffer::ReadBuffer;
use super::chunked::{ChunkError, ChunkedDecoder};
use super::fields::FieldName;
use super::request::{self, Framing, HeadLimits, RequestHead};
use super::response::{self, ResponseHead};
use super::write::{self, HeadIn, RequestEdits, ResponseEdits};
use crate::fuzzing;
use crate::headers::Hop;

const LIMITS: HeadLimits = HeadLimits { max_bytes: 8192, max_fields: 100 };
/// Heads the proxy writes are checked with room for the fields it adds.
const WRITTEN_LIMITS: HeadLimits = HeadLimits { max_bytes: 1 << 20, max_fields: request::MAX_FIELDS };

/// A head that sets every part of a `RequestHead`, parsed before the one under test.
const EARLIER_HEAD: &[u8] =
    b"POST http://x/y HTTP/1.1\r\nHost: z\r\nExpect: 100-continue\r\nTE: trailers\r\n\
    Connection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 7\r\n\r\n";

// ---- generators ----

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(options).prop_map(str::to_string)
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => pick(&["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"]),
        1 => "[!-~]{0,8}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => pick(&[
            "/", "/a/b?c=d", "/../x", "/a/%2e%2E/b", "/%zz", "/%2f", "*", "http://h.example:80/p?q",
            "HTTPS://x", "http://", "http://a b/", "/a#frag", "//double", "/?", "",
        ]),
        2 => "/[!-~]{0,24}",
    ]
}

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(&["HTTP/1.1", "HTTP/1.0"]),
        1 => pick(&["HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1", "HTTP/0.9", "HTTP/1.1 ", ""]),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(&[
            "Host", "host", "Content-Length", "content-length", "Transfer-Encoding", "TRANSFER-ENCODING",
            "Connection", "Expect", "TE", "Upgrade", "Keep-Alive", "Proxy-Connection", "X-Forwarded-For",
            "X-Forwarded-Host", "Forwarded", "X-Request-Id", "Traceparent", "Trailer", "X-Custom",
        ]),
        1 => "[!-~]{0,12}",
    ]
}

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => pick(&[
            "a", "shop.example:8080", "[::1]:80", "chunked", "Chunked", "gzip, chunked", "chunked, gzip",
            "chunked, chunked", "identity", "5", "0", "-1", "+5", "0x10", "5, 5", " 5", "5 5",
            "99999999999999999999", "close", "keep-alive", "upgrade", "close, x-custom, host",
            "Upgrade, keep-alive", "100-continue", "200-ok", "websocket", "trailers", "1.2.3.4",
            "for=1.2.3.4;proto=http", "",
        ])
        .prop_map(String::into_bytes),
        2 => "[ -~]{0,24}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

/// A field that makes sense as it is, or (less often) any name with any value.
fn field() -> impl Strategy<Value = (String, Vec<u8>)> {
    let sensible = proptest::sample::select(
        &[
            ("Host", "a.example"),
            ("Content-Length", "5"),
            ("Content-Length", "0"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "keep-alive"),
            ("Connection", "close"),
            ("Connection", "upgrade"),
            ("Connection", "x-custom"),
            ("Upgrade", "websocket"),
            ("TE", "trailers"),
            ("Expect", "100-continue"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("Forwarded", "for=1.2.3.4;proto=http"),
            ("X-Request-Id", "abc"),
            ("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("Keep-Alive", "timeout=5"),
            ("Set-Cookie", "a=1; Path=/"),
            ("Accept", "*/*"),
        ][..],
    )
    .prop_map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()));
    prop_oneof![
        3 => sensible,
        1 => ("X-Custom", "[ -~]{0,16}").prop_map(|(name, value)| (name.to_string(), value.into_bytes())),
        2 => (field_name(), field_value()),
    ]
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop_oneof![20 => Just(": "), 2 => Just(":"), 1 => Just(" : "), 1 => Just(":\t"), 1 => Just(":  ")]
}

fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![60 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r"), 1 => Just("\r\n ")]
}

/// A field as written: `((name, value), separator, line end)`.
type FieldLine = ((String, Vec<u8>), &'static str, &'static str);

/// Writes a head's fields, each with its separator and line end, then the empty line.
fn push_fields(text: &mut Vec<u8>, fields: Vec<FieldLine>, last_end: &str) {
    for ((name, value), separator, end) in fields {
        text.extend_from_slice(name.as_bytes());
        text.extend_from_slice(separator.as_bytes());
        text.extend_from_slice(&value);
        text.extend_from_slice(end.as_bytes());
    }
    text.extend_from_slice(last_end.as_bytes());
}

/// A request head built from plausible parts; often valid, often not.
fn request_text() -> impl Strategy<Value = Vec<u8>> {
    let fields = proptest::collection::vec((field(), separator(), line_end()), 0..8);
    let host = prop_oneof![4 => Just("Host: h.example\r\n"), 1 => Just("")];
    (method(), target(), version(), line_end(), host, fields, line_end()).prop_map(
        |(method, target, version, first_end, host, fields, last_end)| {
            let mut text = format!("{method} {target} {version}{first_end}{host}").into_bytes();
            push_fields(&mut text, fields, last_end);
            text
        },
    )
}

/// Small edits at random places: the shapes smuggling and truncation take.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    /// Copies `len` bytes from one place to another.
    Duplicate(usize, usize, usize),
    Truncate(usize),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => proptest::sample::select(&b"\r\n :\t\0,;=\"\x7f\x80\xff0aA"[..]),
        1 => any::<u8>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, interesting_byte()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        at.prop_map(Mutation::Delete),
        (at, interesting_byte()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        (at, at, 1..32usize).prop_map(|(from, to, len)| Mutation::Duplicate(from, to, len)),
        at.prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for mutation in mutations {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match *mutation {
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Delete(i) if len > 0 => {
                bytes.remove(at(i));
            }
            Mutation::Replace(i, b) if len > 0 => bytes[at(i)] = b,
            Mutation::Duplicate(from, to, n) if len > 0 => {
                let from = at(from);
                let piece = bytes[from..(from + n).min(len)].to_vec();
                let to = to % (len + 1);
                bytes.splice(to..to, piece);
            }
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            _ => {}
        }
    }
}

/// A valid, mutated or pipelined message stream: `(bytes, read sizes)`.
fn near_valid(message: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let mutations = prop_oneof![1 => Just(Vec::new()), 1 => proptest::collection::vec(mutation(), 1..4)];
    let tail = proptest::collection::vec(any::<u8>(), 0..64);
    (message, mutations, tail, proptest::collection::vec(1..64usize, 1..16)).prop_map(
        |(mut bytes, mutations, tail, reads)| {
            mutate(&mut bytes, &mutations);
            bytes.extend_from_slice(&tail);
            (bytes, reads)
        },
    )
}

fn arbitrary_bytes() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    (proptest::collection::vec(any::<u8>(), 0..1024), proptest::collection::vec(1..256usize, 1..16))
}

/// The prefix lengths a stream arrives in, read by read.
fn arrivals(len: usize, reads: &[usize]) -> Vec<usize> {
    let mut seen = 0;
    let mut out = Vec::new();
    for read in reads.iter().cycle() {
        if seen >= len {
            break;
        }
        seen = (seen + read).min(len);
        out.push(seen);
    }
    out
}

// ---- request heads ----

/// What the front does with a stream, read by read: find the head's end
/// (searching only new bytes), then parse it. Checks that the end found is
/// the one a single search of the whole stream finds.
fn read_request(bytes: &[u8], reads: &[usize]) -> Result<(), TestCaseError> {
    let whole = request::head_end(bytes, 0);
    let mut searched = 0;
    let mut found = None;
    for seen in arrivals(bytes.len(), reads) {
        if let Some(end) = request::head_end(&bytes[..seen], searched) {
            found = Some(end);
            break;
        }
        searched = seen;
    }
    prop_assert_eq!(found, whole, "the end of the head depends on how it was read");
    if let Some(end) = found {
        check_request_head(&bytes[..end])?;
    }
    Ok(())
}

/// Parses a complete head; an accepted one must be consistent, and the head
/// the proxy writes from it must parse again with the same meaning.
fn check_request_head(buf: &[u8]) -> Result<(), TestCaseError> {
    let mut head = RequestHead::default();
    let result = request::parse(buf, LIMITS, &mut head);
    // A head parsed into a connection's reused `RequestHead` must come out the same.
    let mut reused = RequestHead::default();
    prop_assert!(request::parse(EARLIER_HEAD, LIMITS, &mut reused).is_ok());
    let again = request::parse(buf, LIMITS, &mut reused);
    prop_assert_eq!(&result, &again);
    if let Err(refusal) = result {
        prop_assert!(refusal.status.is_client_error() || refusal.status.is_server_error(), "{:?}", refusal);
        return Ok(());
    }
    prop_assert_eq!(format!("{head:?}"), format!("{reused:?}"), "state leaked from the previous head");
    prop_assert!(head.len <= buf.len());
    let lengths = head.fields.iter().filter(|f| f.kind == FieldName::ContentLength).count();
    let codings = head.fields.iter().filter(|f| f.kind == FieldName::TransferEncoding).count();
    prop_assert!(lengths <= 1, "two Content-Length fields accepted");
    prop_assert!(lengths == 0 || codings == 0, "Content-Length and Transfer-Encoding accepted together");
    match head.framing {
        Framing::Chunked => prop_assert!(codings > 0),
        Framing::Length(_) => prop_assert_eq!(lengths, 1),
        Framing::Empty => prop_assert_eq!(lengths + codings, 0),
        Framing::UntilClose => prop_assert!(false, "a request body cannot be delimited by the close"),
    }
    let mut target = Vec::new();
    if crate::path::normalize(head.path.of(buf), &mut target).is_err() {
        return Ok(());
    }
    if target.is_empty() {
        target.push(b'/');
    }
    let host = head.host.map_or(&b"backend.internal"[..], |h| h.of(buf));
    let edits = RequestEdits {
        host,
        asked_host: head.host.map(|h| h.of(buf)),
        hop: Hop {
            peer: [192, 0, 2, 1].into(),
            peer_text: b"192.0.2.1",
            proto: "http",
            trusted: true,
            rfc7239: true,
        },
        request_id: Some(b"id-1"),
        trace: &[],
        te_trailers: head.te_trailers,
        upgrade: head.upgrade.map(|u| u.of(buf)),
        framing: head.framing,
    };
    let mut out = Vec::new();
    write::request_head(&mut out, HeadIn { head: &head, buf, target: &target }, &edits);
    let mut forwarded = RequestHead::default();
    let reparsed = request::parse(&out, WRITTEN_LIMITS, &mut forwarded);
    prop_assert!(
        reparsed.is_ok(),
        "the proxy wrote a head it refuses ({:?}): {:?}",
        reparsed,
        String::from_utf8_lossy(&out)
    );
    prop_assert_eq!(forwarded.method, head.method);
    prop_assert_eq!(forwarded.framing, head.framing, "the framing changed on the way");
    prop_assert_eq!(forwarded.path.of(&out), &target[..]);
    Ok(())
}

proptest! {
    #![proptest_config(fuzzing::config())]

    #[test]
    fn request_heads_from_arbitrary_bytes((bytes, reads) in arbitrary_bytes()) {
        read_request(&bytes, &reads)?;
    }

    #[test]
    fn request_heads_near_valid((bytes, reads) in near_valid(request_text())) {
        read_request(&bytes, &reads)?;
    }
}

// ---- chunked bodies ----

/// Decodes `input` whole with one decoder: the data, and how it ended.
fn decode_whole(input: &[u8]) -> (Vec<u8>, Result<bool, ChunkError>) {
    let mut decoder = ChunkedDecoder::new(1024);
    let mut data = Vec::new();
    let mut at = 0;
    while at < input.len() && !decoder.is_done() {
        match decoder.decode(&input[at..]) {
            Ok(decoded) => {
                assert!(decoded.consumed <= input.len() - at, "consumed more than given");
                if let Some(range) = decoded.data {
                    assert!(range.end <= decoded.consumed, "data past what was consumed");
                    data.extend_from_slice(&input[at..][range]);
                }
                if decoded.consumed == 0 {
                    break;
                }
                at += decoded.consumed;
            }
            Err(error) => return (data, Err(error)),
        }
    }
    (data, Ok(decoder.is_done()))
}

/// A never-pending reader over the reads of a stream, one read per poll.
struct Reads<'a> {
    pieces: std::vec::IntoIter<&'a [u8]>,
    current: &'a [u8],
}

impl tokio::io::AsyncRead for Reads<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.current.is_empty() {
            self.current = self.pieces.next().unwrap_or_default();
        }
        let n = self.current.len().min(out.remaining());
        out.put_slice(&self.current[..n]);
        self.current = &self.current[n..];
        Poll::Ready(Ok(()))
    }
}

/// Reads a body as the proxy does, through a connection buffer filled read
/// by read: the data, and whether it ended well.
fn read_body(bytes: &[u8], reads: &[usize], framing: Framing) -> (Vec<u8>, Result<(), String>) {
    let mut starts = vec![0];
    starts.extend(arrivals(bytes.len(), reads));
    let pieces: Vec<&[u8]> = starts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
    let mut source = Reads { pieces: pieces.into_iter(), current: &[] };
    let mut reader = BodyReader::new(framing, 1024);
    let mut buf = ReadBuffer::default();
    let mut context = Context::from_waker(Waker::noop());
    let mut data = Vec::new();
    loop {
        match reader.next(&mut buf) {
            Ok(Piece::Data(n)) => {
                data.extend_from_slice(&buf.bytes()[..n]);
                buf.consume(n);
            }
            Ok(Piece::End) => return (data, Ok(())),
            Ok(Piece::NeedMore) => match buf.poll_fill(&mut context, &mut source, 1 << 16) {
                Poll::Ready(Ok(0)) => {
                    if let Err(error) = reader.at_eof() {
                        return (data, Err(error.to_string()));
                    }
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) | Poll::Pending => return (data, Err("the buffer failed".to_string())),
            },
            Err(SourceError::Framing(error)) => return (data, Err(error.to_string())),
            Err(other) => return (data, Err(other.to_string())),
        }
    }
}

/// Decoding must not depend on how the bytes were split into reads.
fn check_chunked(bytes: &[u8], reads: &[usize]) -> Result<(Vec<u8>, bool), TestCaseError> {
    let (whole, ended) = decode_whole(bytes);
    let (read, outcome) = read_body(bytes, reads, Framing::Chunked);
    match ended {
        Ok(true) => {
            prop_assert_eq!(&outcome, &Ok(()));
            prop_assert_eq!(&read, &whole);
        }
        Ok(false) => prop_assert_eq!(&outcome, &Err(SourceError::Truncated.to_string())),
        Err(error) => prop_assert_eq!(&outcome, &Err(error.to_string())),
    }
    prop_assert_eq!(&read, &whole, "the reads saw other data");
    Ok((whole, ended == Ok(true)))
}

/// A chunked body: `(chunks, extensions, trailers)` encoded, with the data it carries.
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let chunk = (
        proptest::collection::vec(any::<u8>(), 1..40),
        prop_oneof![
            4 => Just(String::new()),
            1 => pick(&[";a=b", "; x", ";name=\"quoted\"", ";;", ";\t"]),
        ],
    );
    let hex = prop_oneof![Just(false), Just(true)];
    let trailers = prop_oneof![
        3 => Just(String::new()),
        1 => pick(&["Grpc-Status: 0\r\n", "X-A: b\r\nX-C: d\r\n", "Bad Trailer\r\n"]),
    ];
    (proptest::collection::vec(chunk, 0..6), hex, trailers).prop_map(|(chunks, upper, trailers)| {
        let mut encoded = Vec::new();
        let mut data = Vec::new();
        for (bytes, extension) in chunks {
            let size = if upper { format!("{:X}", bytes.len()) } else { format!("{:x}", bytes.len()) };
            encoded.extend_from_slice(format!("{size}{extension}\r\n").as_bytes());
            encoded.extend_from_slice(&bytes);
            encoded.extend_from_slice(b"\r\n");
            data.extend_from_slice(&bytes);
        }
        encoded.extend_from_slice(format!("0\r\n{trailers}\r\n").as_bytes());
        (encoded, data)
    })
}

proptest! {
    #![proptest_config(fuzzing::config())]

    #[test]
    fn chunked_bodies_from_arbitrary_bytes((bytes, reads) in arbitrary_bytes()) {
        check_chunked(&bytes, &reads)?;
    }

    #[test]
    fn chunked_bodies_near_valid(
        (body, data) in chunked_body(),
        mutations in prop_oneof![1 => Just(Vec::new()), 2 => proptest::collection::vec(mutation(), 1..4)],
        reads in proptest::collection::vec(1..64usize, 1..16),
    ) {
        let mut bytes = body.clone();
        mutate(&mut bytes, &mutations);
        let (decoded, complete) = check_chunked(&bytes, &reads)?;
        let bad_trailers = body.windows(11).any(|w| w == b"Bad Trailer");
        if bytes == body && !bad_trailers {
            prop_assert!(complete, "a valid body was refused");
            prop_assert_eq!(decoded, data);
        }
    }

    #[test]
    fn length_bodies_stop_at_their_length(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        length in 0..600u64,
        reads in proptest::collection::vec(1..64usize, 1..16),
    ) {
        let (data, outcome) = read_body(&bytes, &reads, Framing::Length(length));
        let whole = length as usize <= bytes.len();
        prop_assert_eq!(outcome.is_ok(), whole);
        prop_assert_eq!(&data[..], &bytes[..(length as usize).min(bytes.len())]);
    }
}

// ---- response heads ----

fn status_line() -> impl Strategy<Value = String> {
    let status = prop_oneof![
        4 => pick(&["200", "204", "304", "101", "100", "103", "404", "502"]),
        1 => "[0-9]{0,4}",
    ];
    let reason = prop_oneof![
        3 => pick(&[" OK", " Not Found", "", " ", "  spaced  out", " \u{e9}t\u{e9}"]),
        1 => " [ -~]{0,12}",
    ];
    (pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "http/1.1", "ICY"]), status, reason)
        .prop_map(|(version, status, reason)| format!("{version} {status}{reason}"))
}

fn response_text() -> impl Strategy<Value = Vec<u8>> {
    let fields = proptest::collection::vec((field(), separator(), line_end()), 0..8);
    (status_line(), line_end(), fields, line_end()).prop_map(|(status, first_end, fields, last_end)| {
        let mut text = format!("{status}{first_end}").into_bytes();
        push_fields(&mut text, fields, last_end);
        text
    })
}

fn request_method() -> impl Strategy<Value = Method> {
    proptest::sample::select(vec![Method::GET, Method::HEAD, Method::POST])
}

/// Parses a response read by read, as the forwarder does; an accepted head
/// must be consistent, and the head the proxy writes from it must parse again.
fn read_response(bytes: &[u8], reads: &[usize], method: &Method) -> Result<(), TestCaseError> {
    const MAX: usize = 4096;
    let mut head = ResponseHead::default();
    let mut outcome = Ok(false);
    for seen in arrivals(bytes.len(), reads) {
        outcome = response::parse(&bytes[..seen], method, MAX, &mut head);
        if outcome != Ok(false) {
            break;
        }
    }
    let mut whole = ResponseHead::default();
    let at_once = response::parse(bytes, method, MAX, &mut whole);
    if bytes.len() < MAX {
        prop_assert_eq!(outcome, at_once, "the outcome depends on how the head was read");
    }
    if outcome != Ok(true) {
        return Ok(());
    }
    prop_assert!(head.len <= bytes.len());
    prop_assert_eq!(format!("{head:?}"), format!("{whole:?}"));
    let lengths = head.fields.iter().filter(|f| f.kind == FieldName::ContentLength).count();
    let codings = head.fields.iter().filter(|f| f.kind == FieldName::TransferEncoding).count();
    prop_assert!(lengths <= 1 && codings <= 1 && lengths * codings == 0, "ambiguous framing accepted");
    if head.framing() == Framing::UntilClose {
        prop_assert!(!head.keep_alive, "a close-delimited body on a reused connection");
    }
    let edits = ResponseEdits {
        request_id: b"id-1",
        framing: head.framing(),
        close: !head.keep_alive,
        keep_alive_1_0: false,
        upgrade: head.upgrade.map(|u| u.of(bytes)),
    };
    let mut out = Vec::new();
    write::response_head(&mut out, &head, bytes, &edits);
    let mut written = ResponseHead::default();
    let reparsed = response::parse(&out, method, 1 << 20, &mut written);
    prop_assert_eq!(
        reparsed,
        Ok(true),
        "the proxy wrote a head it refuses: {:?}",
        String::from_utf8_lossy(&out)
    );
    prop_assert_eq!(written.status, head.status);
    prop_assert_eq!(written.framing(), head.framing(), "the framing changed on the way");
    Ok(())
}

proptest! {
    #![proptest_config(fuzzing::config())]

    #[test]
    fn response_heads_from_arbitrary_bytes((bytes, reads) in arbitrary_bytes(), method in request_method()) {
        read_response(&bytes, &reads, &method)?;
    }

    #[test]
    fn response_heads_near_valid((bytes, reads) in near_valid(response_text()), method in request_method()) {
        read_response(&bytes, &reads, &method)?;
    }
}
