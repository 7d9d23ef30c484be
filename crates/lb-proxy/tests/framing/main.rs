//! HTTP/1.1 framing, byte for byte: raw sockets against the proxy and a raw
//! backend, pinning what the engine refuses (and with which status), what it
//! passes through untouched in meaning, and when an upstream connection may
//! carry another request.
//!
//! Every read is bounded by [`WAIT`]; nothing sleeps to wait for an event.
//! Table-driven tests run every case and then fail with the list of cases
//! that went wrong, each with the bytes sent and what came back.

mod aborts;
#[path = "../common/mod.rs"]
mod common;
mod raw;

use std::net::SocketAddr;

use raw::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
// ---------------------------------------------------------------------------
// A. Requests the proxy refuses to read.

/// A request the proxy must refuse with `status` and then close.
struct Refused {
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
}

fn refused(name: &'static str, bytes: impl AsRef<[u8]>, status: u16) -> Refused {
    Refused { name, bytes: bytes.as_ref().to_vec(), status }
}

/// Limits the refusal tables run under.
const REFUSAL_LIMITS: &str = "max_headers = 20\nmax_header_bytes = 8192";

/// Sends each case on its own connection and checks: exactly one answer,
/// with the case's status and `connection: close`, then the connection
/// closes; and the backend never hears of it (no connection at all). Fails
/// with every case that went wrong.
async fn check_refusals(cases: Vec<Refused>) {
    let mut backend = RawBackend::start(echo).await;
    let proxy = start_proxy(backend.addr, REFUSAL_LIMITS, "").await;
    let addr = proxy.listen_addresses()[0];
    let mut failures = Vec::new();
    for case in &cases {
        let before = backend.proxy_conns().len();
        let (bytes, end) = send_and_read_to_end(addr, &case.bytes).await;
        let (responses, leftover) = parse_all(&bytes);
        // Whatever the proxy sent the backend for this case was sent before it closed on the client.
        backend.barrier().await;
        let reached = backend.proxy_conns().split_off(before);
        let mut wrong = Vec::new();
        match responses.first() {
            None => wrong.push("no answer".to_string()),
            Some(first) => {
                if first.status != case.status {
                    wrong.push(format!("status {}, expected {}", first.status, case.status));
                }
                if !first.complete {
                    wrong.push("the answer is incomplete".to_string());
                }
                if first.field("connection") != Some("close") {
                    wrong.push("the answer lacks `connection: close`".to_string());
                }
            }
        }
        if responses.len() > 1 || leftover != 0 {
            wrong.push(format!("{} answers and {leftover} stray bytes", responses.len()));
        }
        if !end.closed() {
            wrong.push(format!("the connection stayed open for {WAIT:?}"));
        }
        if !reached.is_empty() {
            let seen: Vec<String> = reached.iter().map(|c| show(&c.bytes)).collect();
            wrong.push(format!("the backend got {} connection(s), receiving {seen:?}", reached.len()));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n    sent: {}\n    got ({end:?}): {}",
                case.name,
                wrong.join("; "),
                show(&case.bytes),
                show(&bytes)
            ));
        }
    }
    // The table is not vacuous: a good request through the same proxy reaches the backend.
    let (bytes, _) =
        send_and_read_to_end(addr, b"GET /good HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    let (responses, _) = parse_all(&bytes);
    if responses.first().map(|r| r.status) != Some(200) {
        failures.push(format!("a good request after the table did not pass: {}", show(&bytes)));
    }
    let heads: Vec<String> = backend.requests().iter().map(|s| s.head.clone()).collect();
    if heads.len() != 1 || !heads[0].starts_with("GET /good ") {
        failures.push(format!("the backend read {heads:?}, expected only GET /good"));
    }
    proxy.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn ambiguous_body_lengths_are_refused() {
    const H: &str = "POST / HTTP/1.1\r\nHost: a\r\n";
    check_refusals(vec![
        refused(
            "CL then TE",
            format!("{H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "TE then CL",
            format!("{H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "TE in upper case with CL",
            format!("{H}Transfer-Encoding: CHUNKED\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "CL with TE in mixed case",
            format!("{H}Content-Length: 5\r\nTransfer-Encoding: cHuNkEd\r\n\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "TE field name in odd case with CL",
            format!("{H}transfer-ENCODING: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n"),
            400,
        ),
        refused("two identical CLs", format!("{H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), 400),
        refused("two differing CLs", format!("{H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), 400),
        refused("CL list `5, 5`", format!("{H}Content-Length: 5, 5\r\n\r\nhello"), 400),
        refused("CL `+5`", format!("{H}Content-Length: +5\r\n\r\nhello"), 400),
        refused("CL `-1`", format!("{H}Content-Length: -1\r\n\r\n"), 400),
        refused("CL ` 5 5`", format!("{H}Content-Length:  5 5\r\n\r\nhello"), 400),
        refused("CL of 20 digits", format!("{H}Content-Length: 99999999999999999999\r\n\r\n"), 400),
        refused("CL in hex", format!("{H}Content-Length: 0x5\r\n\r\nhello"), 400),
        refused("empty CL", format!("{H}Content-Length:\r\n\r\n"), 400),
    ])
    .await;
}

#[tokio::test]
async fn transfer_codings_other_than_a_final_chunked_are_refused() {
    const H: &str = "POST / HTTP/1.1\r\nHost: a\r\n";
    check_refusals(vec![
        refused("TE `gzip, chunked`", format!("{H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 501),
        refused("TE `chunked, gzip`", format!("{H}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"), 400),
        refused(
            "TE `chunked, chunked`",
            format!("{H}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "two TE fields",
            format!("{H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        refused("TE `xchunked`", format!("{H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"), 501),
        refused("empty TE", format!("{H}Transfer-Encoding:\r\n\r\n0\r\n\r\n"), 400),
        refused("TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        refused(
            "space before the colon of TE",
            format!("{H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        refused(
            "TE folded onto a second line",
            format!("{H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
    ])
    .await;
}

#[tokio::test]
async fn malformed_field_lines_are_refused() {
    const L: &str = "GET / HTTP/1.1\r\n";
    check_refusals(vec![
        refused("obs-fold with a space", format!("{L}Host: a\r\nX-A: 1\r\n 2\r\n\r\n"), 400),
        refused("obs-fold with a tab", format!("{L}Host: a\r\nX-A: 1\r\n\t2\r\n\r\n"), 400),
        refused("space before a colon", format!("{L}Host: a\r\nX-A : 1\r\n\r\n"), 400),
        refused("bare CR between field lines", format!("{L}Host: a\rX-A: 1\r\n\r\n"), 400),
        refused("bare CR inside a value", format!("{L}Host: a\r\nX-A: 1\r2\r\n\r\n"), 400),
        refused("bare LF line endings", "GET / HTTP/1.1\nHost: a\n\n", 400),
        refused("bare LF after one field line", format!("{L}Host: a\nX-A: 1\r\n\r\n"), 400),
        refused("bare LF after the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        refused("bare LF as the final empty line", format!("{L}Host: a\r\n\n"), 400),
        refused("NUL in a value", format!("{L}Host: a\r\nX-A: a\0b\r\n\r\n"), 400),
        refused("`(` in a field name", format!("{L}Host: a\r\nX-A(: 1\r\n\r\n"), 400),
        refused("`@` in a field name", format!("{L}Host: a\r\nX@A: 1\r\n\r\n"), 400),
        refused("space inside a field name", format!("{L}Host: a\r\nX A: 1\r\n\r\n"), 400),
        refused("a field line without a colon", format!("{L}Host: a\r\nX-A 1\r\n\r\n"), 400),
    ])
    .await;
}

#[tokio::test]
async fn bad_request_lines_targets_and_hosts_are_refused() {
    check_refusals(vec![
        refused("two spaces after the method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused("two spaces before the version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
        refused("two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        refused("Host with `/`", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        refused("Host with `@`", "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
        refused("Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        refused("space inside an absolute target", "GET http://a b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused("userinfo in an absolute target", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused("empty authority in an absolute target", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused("`http:/x` target", "GET http:/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused("ftp target", "GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused("target without a slash", "GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused("`*` target for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ])
    .await;
}

#[tokio::test]
async fn unsupported_versions_methods_and_expectations_are_refused() {
    check_refusals(vec![
        refused("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        refused("HTTP/3", "GET / HTTP/3\r\nHost: a\r\n\r\n", 505),
        refused("CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
        refused("Expect: something-else", "GET / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n", 417),
        refused(
            "Expect: 100-continue with more",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue, x\r\n\r\nz",
            417,
        ),
    ])
    .await;
}

#[tokio::test]
async fn heads_over_the_limits_get_431() {
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..99 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let mut over_by_one = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..20 {
        over_by_one.push_str(&format!("X-{i}: v\r\n"));
    }
    over_by_one.push_str("\r\n");
    let long_field = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    let unending = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}", "a".repeat(9000));
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    check_refusals(vec![
        refused("100 fields over max_headers = 20", many, 431),
        refused("21 fields over max_headers = 20", over_by_one, 431),
        refused("a 9 KB field over max_header_bytes = 8192", long_field, 431),
        refused("a 9 KB head that never ends", unending, 431),
        refused("a 9 KB target", long_target, 431),
    ])
    .await;
}

#[tokio::test]
async fn a_bad_request_pipelined_before_a_good_one_is_answered_alone() {
    const GOOD: &str = "GET /good HTTP/1.1\r\nHost: a\r\n\r\n";
    check_refusals(vec![
        refused("bad CL, then a good GET", format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n{GOOD}"), 400),
        refused("obs-fold, then a good GET", format!("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n{GOOD}"), 400),
        refused("no Host, then a good GET", format!("GET / HTTP/1.1\r\n\r\n{GOOD}"), 400),
        refused(
            "CL + TE hiding a GET in the body",
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{GOOD}"),
            400,
        ),
        refused("bare LF, then a good GET", format!("GET / HTTP/1.1\nHost: a\n\n{GOOD}"), 400),
    ])
    .await;
}

// ---------------------------------------------------------------------------
// B. Bad chunked bodies behind a good head.

#[tokio::test]
async fn bad_chunked_bodies_get_400_and_never_reach_the_backend_whole() {
    const HEAD: &str = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let long_extension = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(5000));
    let long_trailer = format!("5\r\nhello\r\n0\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let many_trailers =
        format!("5\r\nhello\r\n0\r\n{}\r\n", format!("X-T: {}\r\n", "b".repeat(1000)).repeat(70));
    let cases: Vec<(&str, String)> = vec![
        ("size `0x5`", "0x5\r\nhello\r\n0\r\n\r\n".into()),
        ("size `+5`", "+5\r\nhello\r\n0\r\n\r\n".into()),
        ("size ` 5`", " 5\r\nhello\r\n0\r\n\r\n".into()),
        ("size `-5`", "-5\r\nhello\r\n0\r\n\r\n".into()),
        ("empty size line", "\r\nhello\r\n0\r\n\r\n".into()),
        ("size overflow", "10000000000000000\r\nhello\r\n0\r\n\r\n".into()),
        ("bare LF after the size", "5\nhello\r\n0\r\n\r\n".into()),
        ("no CRLF after the data", "5\r\nhello0\r\n\r\n".into()),
        ("bare LF after the data", "5\r\nhello\n0\r\n\r\n".into()),
        ("NUL in a chunk extension", "5;a\0b\r\nhello\r\n0\r\n\r\n".into()),
        ("a chunk extension over 4096 bytes", long_extension),
        ("one trailer line over 64 KiB", long_trailer),
        ("trailer lines over 64 KiB in all", many_trailers),
        ("a trailer line without a colon", "5\r\nhello\r\n0\r\nbad trailer\r\n\r\n".into()),
        ("bare LF in the trailers", "5\r\nhello\r\n0\r\nX-A: 1\nX-B: 2\r\n\r\n".into()),
    ];
    let mut backend = RawBackend::start(echo).await;
    let proxy = start_proxy(backend.addr, "", "").await;
    let (addr, admin) = (proxy.listen_addresses()[0], proxy.admin_address().unwrap());
    let mut failures = Vec::new();
    for (name, body) in &cases {
        let before = backend.proxy_conns().len();
        let requests_before = backend.requests().len();
        let sent = format!("{HEAD}{body}");
        let (bytes, end) = send_and_read_to_end(addr, sent.as_bytes()).await;
        let (responses, leftover) = parse_all(&bytes);
        backend.barrier().await;
        let all_closed = backend.wait_proxy_conns_closed().await;
        let conns = backend.proxy_conns().split_off(before);
        let whole = backend.requests().split_off(requests_before);
        let mut wrong = Vec::new();
        if responses.first().map(|r| r.status) != Some(400) {
            wrong.push(format!("status {:?}, expected 400", responses.first().map(|r| r.status)));
        }
        if responses.len() != 1 || leftover != 0 {
            wrong.push(format!("{} answers and {leftover} stray bytes", responses.len()));
        }
        if !end.closed() {
            wrong.push(format!("the client connection stayed open for {WAIT:?}"));
        }
        if !all_closed {
            wrong.push("the backend connection stayed open".to_string());
        }
        if !whole.is_empty() {
            wrong.push(format!("the backend read {} whole request(s)", whole.len()));
        }
        for conn in &conns {
            if conn.bytes.ends_with(b"0\r\n\r\n") {
                wrong.push(format!("the backend got a clean last chunk: {}", show(&conn.bytes)));
            }
        }
        if !wrong.is_empty() {
            let at_backend: Vec<String> = conns.iter().map(|c| show(&c.bytes)).collect();
            failures.push(format!(
                "{name}: {}\n    sent: {}\n    got ({end:?}): {}\n    backend received: {at_backend:?}",
                wrong.join("; "),
                show(sent.as_bytes()),
                show(&bytes)
            ));
        }
    }
    let metrics = common::metrics(admin).await;
    let bad_gateway = requests_total(&metrics, backend.addr, 502);
    assert_eq!(bad_gateway, 0, "a client's bad body is never the backend's 502");
    proxy.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// C. What passes through.

/// Starts an echoing raw backend and a proxy in front of it.
async fn echo_pair() -> (RawBackend, lb_proxy::RunningProxy, SocketAddr) {
    let backend = RawBackend::start(echo).await;
    let proxy = start_proxy(backend.addr, "", "").await;
    let addr = proxy.listen_addresses()[0];
    (backend, proxy, addr)
}

/// Sends `request` (which asks for the connection to close), expects one 200, and returns what the backend read.
async fn one_request(backend: &RawBackend, addr: SocketAddr, request: &str) -> Seen {
    let (bytes, end) = send_and_read_to_end(addr, request.as_bytes()).await;
    let (responses, _) = parse_all(&bytes);
    assert_eq!(responses.len(), 1, "one answer to {}: {}", show(request.as_bytes()), show(&bytes));
    assert_eq!(responses[0].status, 200, "sent {}: got {}", show(request.as_bytes()), show(&bytes));
    assert!(end.closed(), "the connection closes as asked");
    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "the backend read one request: {requests:?}");
    requests.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_get_with_a_chunked_body_is_forwarded_with_it() {
    let (backend, proxy, addr) = echo_pair().await;
    let seen = one_request(
        &backend,
        addr,
        "GET /with-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("GET", "/with-body"));
    assert_eq!(seen.field("transfer-encoding"), Some("chunked"), "{}", seen.head);
    assert_eq!(seen.field("content-length"), None, "{}", seen.head);
    assert_eq!(seen.data(), b"hello world", "{}", show(&seen.body));
    proxy.shutdown().await;
}

#[tokio::test]
async fn chunk_extensions_are_dropped_on_the_way() {
    let (backend, proxy, addr) = echo_pair().await;
    let seen = one_request(
        &backend,
        addr,
        "POST /ext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5;name=value\r\nhello\r\n6;quoted=\"a;b\"\r\n world\r\n0;last=1\r\n\r\n",
    )
    .await;
    assert_eq!(seen.data(), b"hello world", "{}", show(&seen.body));
    assert!(
        find(&seen.body, b";").is_none() && find(&seen.body, b"=").is_none(),
        "no extension reaches the backend: {}",
        show(&seen.body)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn request_trailers_reach_the_backend() {
    let (backend, proxy, addr) = echo_pair().await;
    let seen = one_request(
        &backend,
        addr,
        "POST /trailers HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
    )
    .await;
    let (data, trailers) = dechunk(&seen.body).expect("a whole chunked body");
    assert_eq!(data, b"hello");
    assert!(trailers.contains("X-Checksum: abc\r\n"), "trailers: {trailers:?}");
    assert!(trailers.contains("X-Other: 1\r\n"), "trailers: {trailers:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_post_with_content_length_0_keeps_it() {
    let (backend, proxy, addr) = echo_pair().await;
    let seen = one_request(
        &backend,
        addr,
        "POST /empty HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.field("content-length"), Some("0"), "{}", seen.head);
    assert_eq!(seen.field("transfer-encoding"), None, "{}", seen.head);
    assert!(seen.body.is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_works_end_to_end() {
    let (backend, proxy, addr) = echo_pair().await;
    let mut stream = connect(addr).await;
    let head = "POST /continue HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    timeout(WAIT, stream.write_all(head.as_bytes())).await.unwrap().unwrap();
    let mut buf = Vec::new();
    let interim = read_response(&mut stream, &mut buf).await.expect("an answer to the head");
    assert_eq!(interim.status, 100, "100 Continue before the body is sent: {}", interim.head);
    assert!(buf.is_empty(), "nothing follows 100 Continue yet: {}", show(&buf));
    assert!(backend.requests().is_empty(), "no whole request before the body");
    timeout(WAIT, stream.write_all(b"hello")).await.unwrap().unwrap();
    let last = read_response(&mut stream, &mut buf).await.expect("the final answer");
    assert_eq!(last.status, 200, "{}", last.head);
    assert_eq!(last.data(), b"POST /continue hello");
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].data(), b"hello");
    assert_eq!(requests[0].field("content-length"), Some("5"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (backend, proxy, addr) = echo_pair().await;
    let requests = "GET /p1 HTTP/1.1\r\nHost: a\r\n\r\n\
                    POST /p2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
                    POST /p3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                    GET /p4 HTTP/1.1\r\nHost: a\r\n\r\n\
                    GET /p5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (bytes, end) = send_and_read_to_end(addr, requests.as_bytes()).await;
    let (responses, leftover) = parse_all(&bytes);
    let bodies: Vec<String> =
        responses.iter().map(|r| format!("{} {}", r.status, String::from_utf8_lossy(&r.data()))).collect();
    assert_eq!(
        bodies,
        ["200 GET /p1 ", "200 POST /p2 hello", "200 POST /p3 abc", "200 GET /p4 ", "200 GET /p5 "],
        "{}",
        show(&bytes)
    );
    assert_eq!(leftover, 0);
    assert_eq!(end, End::Eof, "closed after the last, which asked for it");
    let seen: Vec<String> = backend.requests().iter().map(|s| s.target.clone()).collect();
    assert_eq!(seen, ["/p1", "/p2", "/p3", "/p4", "/p5"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_absolute_form_target_goes_out_in_origin_form_with_its_host() {
    let (backend, proxy, addr) = echo_pair().await;
    let cases = [
        ("GET http://shop.example/x HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n", "/x"),
        (
            "GET http://shop.example/x?y=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
            "/x?y=1",
        ),
        ("GET http://shop.example HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n", "/"),
    ];
    for (i, (request, target)) in cases.iter().enumerate() {
        let (bytes, _) = send_and_read_to_end(addr, request.as_bytes()).await;
        let (responses, _) = parse_all(&bytes);
        assert_eq!(responses.first().map(|r| r.status), Some(200), "{request:?}: {}", show(&bytes));
        let seen = backend.requests().get(i).cloned().expect("the request reached the backend");
        assert_eq!(seen.target, *target, "{request:?}: {}", seen.head);
        assert_eq!(seen.field("host"), Some("shop.example"), "{request:?}: {}", seen.head);
        assert_eq!(
            seen.head.matches("\r\nhost:").count() + seen.head.matches("\r\nHost:").count(),
            1,
            "one Host: {}",
            seen.head
        );
    }
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// D. Bad answers from the backend.

/// A backend answering `bad` to `/bad` (keeping its connection open) and
/// `ok` to everything else, behind a proxy that does not retry.
async fn bad_answer_pair(bad: Vec<u8>) -> (RawBackend, lb_proxy::RunningProxy, SocketAddr) {
    let backend =
        RawBackend::start(
            move |seen: &Seen| {
                if seen.target == "/bad" { Answer::keep(bad.clone()) } else { echo(seen) }
            },
        )
        .await;
    let proxy = start_proxy(backend.addr, "", "retry.attempts = 1").await;
    let addr = proxy.listen_addresses()[0];
    (backend, proxy, addr)
}

#[tokio::test]
async fn ambiguous_or_malformed_response_heads_give_502_and_a_fresh_connection() {
    let interims = |n: usize| {
        let mut bytes = "HTTP/1.1 100 Continue\r\n\r\n".repeat(n).into_bytes();
        bytes.extend_from_slice(&ok("late"));
        bytes
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "CL then TE",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "TE then CL",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        ("two different CLs", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec()),
        ("CL `5, 6`", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!".to_vec()),
        ("TE gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxxxx".to_vec()),
        (
            "TE `gzip, chunked`",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nxxxx\r\n0\r\n\r\n".to_vec(),
        ),
        ("status of 4 digits", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("no status code", b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("not HTTP", b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("HTTP/2.0 status line", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("bare LF in the head", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n".to_vec()),
        ("9 interim responses", interims(9)),
    ];
    let mut failures = Vec::new();
    for (name, bad) in &cases {
        let (backend, proxy, addr) = bad_answer_pair(bad.clone()).await;
        let mut first = connect(addr).await;
        timeout(WAIT, first.write_all(b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\n")).await.unwrap().unwrap();
        let mut buf = Vec::new();
        let answer = read_response(&mut first, &mut buf).await;
        let mut wrong = Vec::new();
        if answer.as_ref().map(|r| r.status) != Some(502) {
            wrong.push(format!(
                "the client got {:?} instead of a 502",
                answer.as_ref().map(|r| r.head.clone())
            ));
        }
        let mut second = connect(addr).await;
        timeout(WAIT, second.write_all(b"GET /good HTTP/1.1\r\nHost: a\r\n\r\n")).await.unwrap().unwrap();
        let mut buf = Vec::new();
        let good = read_response(&mut second, &mut buf).await;
        if good.as_ref().map(|r| r.status) != Some(200) {
            wrong.push(format!("the next request got {:?}", good.as_ref().map(|r| r.head.clone())));
        }
        let requests = backend.requests();
        let conn_of = |target: &str| requests.iter().find(|s| s.target == target).map(|s| s.conn);
        let accepted = backend.proxy_conns().len();
        if conn_of("/bad") == conn_of("/good") || accepted != 2 {
            wrong.push(format!(
                "the backend connection was reused: /bad on {:?}, /good on {:?}, {accepted} accepted",
                conn_of("/bad"),
                conn_of("/good")
            ));
        }
        let bad_count = requests.iter().filter(|s| s.target == "/bad").count();
        if bad_count != 1 {
            wrong.push(format!("the backend saw /bad {bad_count} times"));
        }
        if !wrong.is_empty() {
            failures.push(format!("{name}: {}\n    backend answered: {}", wrong.join("; "), show(bad)));
        }
        proxy.shutdown().await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn eight_interim_responses_are_skipped() {
    let mut bytes = "HTTP/1.1 100 Continue\r\n\r\n".repeat(8).into_bytes();
    bytes.extend_from_slice(&ok("late"));
    let (_backend, proxy, addr) = bad_answer_pair(bytes).await;
    let (bytes, _) =
        send_and_read_to_end(addr, b"GET /bad HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    let (responses, leftover) = parse_all(&bytes);
    let last = responses.iter().find(|r| r.status >= 200).expect("a final answer");
    assert_eq!(last.status, 200, "{}", show(&bytes));
    assert_eq!(last.data(), b"late");
    assert_eq!(leftover, 0);
    proxy.shutdown().await;
}

/// One GET through a proxy whose backend answers `answer` and closes; what the client read.
async fn through_closing_backend(answer: &'static [u8], target: &str) -> (Vec<u8>, End) {
    let backend = RawBackend::start(move |_: &Seen| Answer::close(answer)).await;
    let proxy = start_proxy(backend.addr, "", "retry.attempts = 1").await;
    let request = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
    let read = send_and_read_to_end(proxy.listen_addresses()[0], request.as_bytes()).await;
    proxy.shutdown().await;
    read
}

#[tokio::test]
async fn a_content_length_response_cut_short_looks_cut() {
    let (bytes, end) =
        through_closing_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", "/cut").await;
    let (responses, _) = parse_all(&bytes);
    assert_eq!(responses.len(), 1, "{}", show(&bytes));
    let response = &responses[0];
    assert_eq!(response.status, 200, "the head went out: {}", show(&bytes));
    assert_eq!(response.field("content-length"), Some("100"), "{}", response.head);
    assert!(end.closed(), "the client connection closes after the cut: {}", show(&bytes));
    assert!(!response.complete && response.body.len() < 100, "fewer than 100 bytes came: {}", show(&bytes));
    assert_eq!(response.body, b"0123456789");
}

#[tokio::test]
async fn a_chunked_response_cut_short_never_ends_cleanly() {
    let (bytes, end) = through_closing_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "/cut",
    )
    .await;
    let (responses, _) = parse_all(&bytes);
    assert_eq!(responses.len(), 1, "{}", show(&bytes));
    assert!(responses[0].chunked(), "an HTTP/1.1 client gets chunks: {}", responses[0].head);
    assert!(end.closed(), "the client connection closes after the cut: {}", show(&bytes));
    assert!(!bytes.ends_with(b"0\r\n\r\n"), "no last chunk after a cut: {}", show(&bytes));
    assert!(!responses[0].complete, "{}", show(&bytes));
}

#[tokio::test]
async fn a_close_delimited_response_stays_close_delimited() {
    let (bytes, end) =
        through_closing_backend(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", "/eof")
            .await;
    let (responses, _) = parse_all(&bytes);
    assert_eq!(responses.len(), 1, "{}", show(&bytes));
    let response = &responses[0];
    assert_eq!(response.status, 200);
    assert_eq!(response.field("transfer-encoding"), None, "no chunking added: {}", response.head);
    assert_eq!(response.field("content-length"), None, "no length invented: {}", response.head);
    assert_eq!(response.body, b"until the end");
    assert_eq!(end, End::Eof, "the connection closes after it");
}

#[tokio::test]
async fn response_trailers_reach_only_clients_that_sent_te_trailers() {
    let backend = RawBackend::start(|_: &Seen| {
        Answer::keep(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
               5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"[..],
        )
    })
    .await;
    let proxy = start_proxy(backend.addr, "", "").await;
    let addr = proxy.listen_addresses()[0];
    for (te, wanted) in [("TE: trailers\r\n", true), ("", false)] {
        let request = format!("GET /t HTTP/1.1\r\nHost: a\r\n{te}Connection: close\r\n\r\n");
        let (bytes, _) = send_and_read_to_end(addr, request.as_bytes()).await;
        let (responses, _) = parse_all(&bytes);
        assert_eq!(responses.len(), 1, "{}", show(&bytes));
        let response = &responses[0];
        assert!(response.chunked() && response.complete, "{}", show(&bytes));
        let (data, trailers) = dechunk(&response.body).unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(trailers.contains("X-Checksum: abc"), wanted, "{request:?}: {}", show(&bytes));
    }
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// E. An early answer leaves the backend connection unusable.

#[tokio::test]
async fn an_answer_before_the_whole_body_is_not_followed_by_reuse() {
    let mut backend = RawBackend::start(|seen: &Seen| {
        if seen.target == "/upload" {
            Answer::early(&b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large"[..])
        } else {
            echo(seen)
        }
    })
    .await;
    let proxy = start_proxy(backend.addr, "", "").await;
    let addr = proxy.listen_addresses()[0];

    const BODY: usize = 4 * 1024 * 1024;
    let (mut reader, mut writer) = connect(addr).await.into_split();
    let upload = tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {BODY}\r\n\r\n");
        if !matches!(timeout(WAIT, writer.write_all(head.as_bytes())).await, Ok(Ok(()))) {
            return;
        }
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..BODY / piece.len() {
            if !matches!(timeout(WAIT, writer.write_all(&piece)).await, Ok(Ok(()))) {
                return;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut end = End::Open;
    for _ in 0..MAX_READS {
        match timeout_at(deadline, reader.read(&mut chunk)).await {
            Ok(Ok(0)) => end = End::Eof,
            Ok(Ok(n)) => {
                bytes.extend_from_slice(&chunk[..n]);
                continue;
            }
            Ok(Err(_)) => end = End::Reset,
            Err(_) => {}
        }
        break;
    }
    upload.abort();
    let (responses, _) = parse_all(&bytes);
    assert_eq!(responses.first().map(|r| r.status), Some(413), "{}", show(&bytes));
    assert_eq!(responses[0].body, b"too large");
    assert!(end.closed(), "the client connection closes: its body was not read to the end");

    let (bytes, _) =
        send_and_read_to_end(addr, b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    let (responses, _) = parse_all(&bytes);
    assert_eq!(responses.first().map(|r| r.status), Some(200), "{}", show(&bytes));
    let requests = backend.requests();
    let conn_of = |target: &str| requests.iter().find(|s| s.target == target).map(|s| s.conn);
    let conns = backend.proxy_conns();
    assert_ne!(conn_of("/upload"), conn_of("/next"), "a new connection carries /next: {requests:?}");
    assert_eq!(conns.len(), 2, "two backend connections");
    assert!(find(&conns[0].bytes, b"GET /next").is_none(), "nothing more was sent after the body");
    backend.barrier().await;
    let upload_conn = conn_of("/upload").unwrap();
    let closed = backend.wait(|s| s.conns[upload_conn].closed).await;
    assert!(closed, "the proxy closed the connection it could not finish the request on");
    proxy.shutdown().await;
}
