//! The raw-socket harness of the framing suite: a backend that records every
//! byte and every whole request and answers as scripted, and a client side
//! that reads responses as they arrive.
#![allow(unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};

/// The longest wait for any one thing to happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long the raw backend keeps a quiet connection open (longer than any test).
pub const BACKEND_IDLE: Duration = Duration::from_secs(30);

/// Bound on the iterations of every read loop (each read is timed too).
pub const MAX_READS: usize = 100_000;

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Bytes as escaped ASCII, shortened in the middle when long.
pub fn show(bytes: &[u8]) -> String {
    if bytes.len() <= 600 {
        return format!("\"{}\"", bytes.escape_ascii());
    }
    format!(
        "\"{}\" ... ({} bytes in all) ... \"{}\"",
        bytes[..400].escape_ascii(),
        bytes.len(),
        bytes[bytes.len() - 120..].escape_ascii()
    )
}

/// The request line and fields of a head (without its final CRLF CRLF), lower-cased names.
pub fn split_head(head: &[u8]) -> (String, String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let fields = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (text, first, fields)
}

pub fn field_of<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

pub fn is_chunked(fields: &[(String, String)]) -> bool {
    field_of(fields, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// The length of the complete chunked body at the start of `buf` (its last
/// chunk and trailer section included); `None` while incomplete or malformed.
pub fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    for _ in 0..MAX_READS {
        let end = pos + find(&buf[pos..], b"\r\n")?;
        let line = &buf[pos..end];
        let digits = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = usize::from_str_radix(std::str::from_utf8(digits).ok()?.trim(), 16).ok()?;
        pos = end + 2;
        if size == 0 {
            for _ in 0..MAX_READS {
                let end = pos + find(&buf[pos..], b"\r\n")?;
                if end == pos {
                    return Some(pos + 2);
                }
                pos = end + 2;
            }
            return None;
        }
        pos = pos.checked_add(size)?.checked_add(2)?;
        if buf.len() < pos || &buf[pos - 2..pos] != b"\r\n" {
            return None;
        }
    }
    None
}

/// The data and the raw trailer section (lines with CRLF) of a complete chunked body.
pub fn dechunk(body: &[u8]) -> Option<(Vec<u8>, String)> {
    let total = chunked_len(body)?;
    let mut data = Vec::new();
    let mut pos = 0;
    for _ in 0..MAX_READS {
        let end = pos + find(&body[pos..], b"\r\n")?;
        let digits = body[pos..end].split(|&b| b == b';').next().unwrap_or_default();
        let size = usize::from_str_radix(std::str::from_utf8(digits).ok()?.trim(), 16).ok()?;
        if size == 0 {
            let trailers = String::from_utf8_lossy(&body[end + 2..total - 2]).into_owned();
            return Some((data, trailers));
        }
        data.extend_from_slice(&body[end + 2..end + 2 + size]);
        pos = end + 2 + size + 2;
    }
    None
}

// ---------------------------------------------------------------------------
// The client side: responses as they arrive on a raw socket.

/// One response as the client read it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The status line and fields, as sent.
    pub head: String,
    pub fields: Vec<(String, String)>,
    /// The body as framed on the wire (chunk framing included).
    pub body: Vec<u8>,
    /// The body ended where its framing said (a close-delimited one: at EOF).
    pub complete: bool,
}

impl Response {
    pub fn field(&self, name: &str) -> Option<&str> {
        field_of(&self.fields, name)
    }

    pub fn chunked(&self) -> bool {
        is_chunked(&self.fields)
    }

    /// The body's data, de-chunked when it is chunked.
    pub fn data(&self) -> Vec<u8> {
        if self.chunked() {
            dechunk(&self.body).map(|(d, _)| d).unwrap_or_default()
        } else {
            self.body.clone()
        }
    }
}

/// Reads the response at the start of `buf`. `eof`: no more bytes will come,
/// so a close-delimited body ends here and an unfinished one comes back with
/// `complete: false`.
pub fn parse_response(buf: &[u8], eof: bool) -> Option<(Response, usize)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let (head, first, fields) = split_head(&buf[..head_end - 4]);
    let status = first.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut response = Response { status, head, fields, body: Vec::new(), complete: true };
    let rest = &buf[head_end..];
    let body_len = if (100..200).contains(&status) || status == 204 || status == 304 {
        Some(0)
    } else if response.chunked() {
        chunked_len(rest)
    } else if let Some(length) = response.field("content-length") {
        let length: usize = length.parse().ok()?;
        (rest.len() >= length).then_some(length)
    } else if eof {
        Some(rest.len())
    } else {
        None
    };
    match body_len {
        Some(n) => {
            response.body = rest[..n].to_vec();
            Some((response, head_end + n))
        }
        None if eof => {
            response.body = rest.to_vec();
            response.complete = false;
            Some((response, buf.len()))
        }
        None => None,
    }
}

/// Every response in what a client read up to EOF, and how many bytes after them were not one.
pub fn parse_all(bytes: &[u8]) -> (Vec<Response>, usize) {
    let mut responses = Vec::new();
    let mut at = 0;
    while at < bytes.len() && responses.len() < 100 {
        match parse_response(&bytes[at..], true) {
            Some((response, n)) => {
                responses.push(response);
                at += n;
            }
            None => break,
        }
    }
    (responses, bytes.len() - at)
}

/// How reading a connection to its end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The proxy closed it (FIN).
    Eof,
    /// The proxy reset it.
    Reset,
    /// Nothing more within [`WAIT`]: the connection stayed open.
    Open,
}

impl End {
    pub fn closed(self) -> bool {
        self != End::Open
    }
}

pub async fn connect(addr: SocketAddr) -> TcpStream {
    timeout(WAIT, TcpStream::connect(addr)).await.expect("connect in time").expect("connect")
}

/// Reads until the peer closes (or [`WAIT`] passes without it).
pub async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, End) {
    let deadline = Instant::now() + WAIT;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    for _ in 0..MAX_READS {
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (bytes, End::Open),
            Ok(Ok(0)) => return (bytes, End::Eof),
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => return (bytes, End::Reset),
        }
    }
    (bytes, End::Open)
}

/// Sends `request` on a new connection and reads until the proxy closes it.
pub async fn send_and_read_to_end(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, End) {
    let mut stream = connect(addr).await;
    // The proxy may answer and close before it read everything; what it says still counts.
    let _ = timeout(WAIT, stream.write_all(request)).await;
    read_to_end(&mut stream).await
}

/// Reads one whole response off `stream` (interim ones count), keeping what follows in `buf`.
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Response> {
    let deadline = Instant::now() + WAIT;
    let mut chunk = vec![0u8; 64 * 1024];
    for _ in 0..MAX_READS {
        if let Some((response, n)) = parse_response(buf, false) {
            buf.drain(..n);
            return Some(response);
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n @ 1..)) => buf.extend_from_slice(&chunk[..n]),
            _ => {
                let parsed = parse_response(buf, true);
                buf.clear();
                return parsed.map(|(response, _)| response);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// The raw backend: records every byte and every whole request, answers as scripted.

/// A request the raw backend read whole (or, for an early answer, the head of one).
#[derive(Debug, Clone)]
pub struct Seen {
    /// Index of the connection it came on, in accept order.
    pub conn: usize,
    pub method: String,
    pub target: String,
    /// The head as received, request line and fields.
    pub head: String,
    pub fields: Vec<(String, String)>,
    /// The body as framed on the wire.
    pub body: Vec<u8>,
}

impl Seen {
    pub fn field(&self, name: &str) -> Option<&str> {
        field_of(&self.fields, name)
    }

    /// The body's data, de-chunked when it is chunked.
    pub fn data(&self) -> Vec<u8> {
        if is_chunked(&self.fields) {
            dechunk(&self.body).map(|(d, _)| d).unwrap_or_default()
        } else {
            self.body.clone()
        }
    }
}

/// One connection the raw backend accepted.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Every byte received on it.
    pub bytes: Vec<u8>,
    /// The peer closed it (or it failed, or it went quiet for [`BACKEND_IDLE`]).
    pub closed: bool,
}

#[derive(Debug, Default)]
pub struct State {
    pub conns: Vec<Conn>,
    pub requests: Vec<Seen>,
}

/// What the raw backend answers to a request.
pub struct Answer {
    pub bytes: Vec<u8>,
    /// Close the connection after answering (FIN, then read to EOF).
    pub close: bool,
    /// Answer as soon as the head arrived, before reading the body; the
    /// connection is then only read (recorded) until the proxy closes it.
    pub early: bool,
}

impl Answer {
    pub fn keep(bytes: impl Into<Vec<u8>>) -> Answer {
        Answer { bytes: bytes.into(), close: false, early: false }
    }

    pub fn close(bytes: impl Into<Vec<u8>>) -> Answer {
        Answer { bytes: bytes.into(), close: true, early: false }
    }

    pub fn early(bytes: impl Into<Vec<u8>>) -> Answer {
        Answer { bytes: bytes.into(), close: false, early: true }
    }
}

type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

pub struct Shared {
    pub state: Mutex<State>,
    pub changed: watch::Sender<()>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.send_replace(());
        out
    }
}

/// A backend on a raw socket; see [`Answer`].
pub struct RawBackend {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// Connections made by [`RawBackend::barrier`], not by the proxy.
    pub barriers: Vec<SocketAddr>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `200 OK` with `body`.
pub fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// Answers `200` with the method, the target and the body's data.
pub fn echo(seen: &Seen) -> Answer {
    let data = String::from_utf8_lossy(&seen.data()).into_owned();
    Answer::keep(ok(&format!("{} {} {data}", seen.method, seen.target)))
}

impl RawBackend {
    pub async fn start(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> RawBackend {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared { state: Mutex::default(), changed: watch::channel(()).0 });
        let script: Script = Arc::new(script);
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            for _ in 0..10_000 {
                let Ok((stream, peer)) = listener.accept().await else { continue };
                let conn = s.update(|st| {
                    st.conns.push(Conn { peer, bytes: Vec::new(), closed: false });
                    st.conns.len() - 1
                });
                tokio::spawn(serve_raw(stream, conn, Arc::clone(&s), Arc::clone(&script)));
            }
        });
        RawBackend { addr, shared, barriers: Vec::new(), task }
    }

    /// Waits (at most [`WAIT`]) until `cond` holds; whether it did.
    pub async fn wait(&self, cond: impl Fn(&State) -> bool) -> bool {
        let mut changed = self.shared.changed.subscribe();
        let deadline = Instant::now() + WAIT;
        for _ in 0..MAX_READS {
            if cond(&self.shared.lock()) {
                return true;
            }
            if !matches!(timeout_at(deadline, changed.changed()).await, Ok(Ok(()))) {
                return cond(&self.shared.lock());
            }
        }
        false
    }

    /// Connects straight to the backend and waits until that connection was
    /// accepted: every connection the proxy made before now was accepted too.
    pub async fn barrier(&mut self) {
        let stream = connect(self.addr).await;
        let local = stream.local_addr().unwrap();
        self.barriers.push(local);
        let accepted = self.wait(|s| s.conns.iter().any(|c| c.peer == local)).await;
        assert!(accepted, "the raw backend accepts a connection within {WAIT:?}");
    }

    /// The connections the proxy made, in accept order.
    pub fn proxy_conns(&self) -> Vec<Conn> {
        self.shared.lock().conns.iter().filter(|c| !self.barriers.contains(&c.peer)).cloned().collect()
    }

    /// Every request the backend read.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.lock().requests.clone()
    }

    /// Waits until every connection the proxy made is closed; whether they were.
    pub async fn wait_proxy_conns_closed(&self) -> bool {
        let barriers = self.barriers.clone();
        self.wait(move |s| s.conns.iter().filter(|c| !barriers.contains(&c.peer)).all(|c| c.closed)).await
    }
}

/// Serves one connection of the raw backend.
pub async fn serve_raw(mut stream: TcpStream, conn: usize, shared: Arc<Shared>, script: Script) {
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'conn: for _ in 0..MAX_READS {
        // Serve every whole request already buffered.
        for _ in 0..1000 {
            let Some(head_end) = find(&pending, b"\r\n\r\n") else { break };
            let (head, first, fields) = split_head(&pending[..head_end]);
            let mut words = first.split(' ');
            let method = words.next().unwrap_or_default().to_string();
            let target = words.next().unwrap_or_default().to_string();
            let mut seen = Seen { conn, method, target, head, fields, body: Vec::new() };
            // The script sees the head first (to answer early), then the whole request.
            let at_head = script(&seen);
            if at_head.early {
                shared.update(|s| s.requests.push(seen));
                let _ = timeout(WAIT, stream.write_all(&at_head.bytes)).await;
                drain(&mut stream, conn, &shared, &mut chunk).await;
                break 'conn;
            }
            let body_start = head_end + 4;
            let rest = &pending[body_start..];
            let body_len = if is_chunked(&seen.fields) {
                chunked_len(rest)
            } else {
                let length = seen.field("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                (rest.len() >= length).then_some(length)
            };
            let Some(body_len) = body_len else { break };
            seen.body = rest[..body_len].to_vec();
            pending.drain(..body_start + body_len);
            let answer = script(&seen);
            shared.update(|s| s.requests.push(seen));
            if !matches!(timeout(WAIT, stream.write_all(&answer.bytes)).await, Ok(Ok(()))) {
                break 'conn;
            }
            if answer.close {
                let _ = stream.shutdown().await;
                drain(&mut stream, conn, &shared, &mut chunk).await;
                break 'conn;
            }
        }
        match timeout(BACKEND_IDLE, stream.read(&mut chunk)).await {
            Ok(Ok(n @ 1..)) => {
                pending.extend_from_slice(&chunk[..n]);
                shared.update(|s| s.conns[conn].bytes.extend_from_slice(&chunk[..n]));
            }
            _ => break,
        }
    }
    shared.update(|s| s.conns[conn].closed = true);
}

/// Records what still arrives on a connection until the peer closes it.
pub async fn drain(stream: &mut TcpStream, conn: usize, shared: &Shared, chunk: &mut [u8]) {
    for _ in 0..MAX_READS {
        match timeout(BACKEND_IDLE, stream.read(chunk)).await {
            Ok(Ok(n @ 1..)) => shared.update(|s| s.conns[conn].bytes.extend_from_slice(&chunk[..n])),
            _ => return,
        }
    }
}

/// A proxy in front of `backend`, with `global` settings and `upstream` keys.
pub async fn start_proxy(backend: SocketAddr, global: &str, upstream: &str) -> lb_proxy::RunningProxy {
    let config = crate::common::config("round_robin", &[(backend, 1)], upstream);
    let text = if global.is_empty() { config } else { format!("[global]\n{global}\n{config}") };
    crate::common::proxy(&text).await
}

/// `requests_total` of `backend` with `status`, from a `/metrics` page; 0 when absent.
pub fn requests_total(metrics: &str, backend: SocketAddr, status: u16) -> u64 {
    let (backend, status) = (format!("backend=\"{backend}\""), format!("status=\"{status}\""));
    metrics
        .lines()
        .filter(|l| l.starts_with("requests_total{") && l.contains(&backend) && l.contains(&status))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
