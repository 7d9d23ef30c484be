//! Backends as child processes of this binary, so a scenario can SIGKILL
//! one. The parent sets [`BACKEND_ENV`] to `ADDRESS BEHAVIOUR...` and the
//! child serves that behaviour until it is killed.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::pattern;

/// Set on a child copy of this binary to make it a backend.
pub(crate) const BACKEND_ENV: &str = "LB_RELIABILITY_BACKEND";

/// The request header naming an upload, so a recorded body can be matched with its sender.
pub(crate) const UPLOAD_ID: &str = "x-upload-id";

/// What a backend does with each request.
pub(crate) enum Behaviour {
    /// Answers `status` after `delay_ms`, with `length crc32` of the request
    /// body it read; `GET /download/N` streams N pattern bytes instead. Each
    /// body read whole under an [`UPLOAD_ID`] is appended to `record` as
    /// `id length crc32`, before the answer.
    Serve { status: u16, delay_ms: u64, record: Option<PathBuf> },
    /// Accepts and reads, never answers.
    Hang,
    /// Answers every request with the named malformed response (see
    /// [`BAD_ANSWERS`]), and appends `reused` to `record` whenever a second
    /// request arrives on a connection that got one.
    Misbehave { answer: &'static str, record: PathBuf },
}

impl Behaviour {
    /// A healthy backend answering `status` at once.
    pub(crate) fn status(status: u16) -> Behaviour {
        Behaviour::Serve { status, delay_ms: 0, record: None }
    }

    pub(crate) fn to_spec(&self, address: SocketAddr) -> String {
        match self {
            Behaviour::Serve { status, delay_ms, record } => {
                let record = record.as_ref().map_or(String::new(), |p| format!(" {}", p.display()));
                format!("{address} serve {status} {delay_ms}{record}")
            }
            Behaviour::Hang => format!("{address} hang"),
            Behaviour::Misbehave { answer, record } => format!("{address} bad {answer} {}", record.display()),
        }
    }
}

/// How a misbehaving backend ends its answer.
#[derive(Clone, Copy)]
pub(crate) enum Then {
    /// Keeps the connection open for another request.
    KeepOpen,
    /// Closes it (FIN).
    Close,
    /// Resets it (RST).
    Reset,
}

/// Malformed answers: name, bytes, and what follows them.
pub(crate) const BAD_ANSWERS: &[(&str, &[u8], Then)] = &[
    (
        "content-length and transfer-encoding",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Then::KeepOpen,
    ),
    (
        "two different content-lengths",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        Then::KeepOpen,
    ),
    (
        "a short body, then FIN",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nforty bytes of a body promised as a 100",
        Then::Close,
    ),
    (
        "a reset mid-body",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nthe start of a long body, then a reset",
        Then::Reset,
    ),
    (
        "a chunked body cut before its last chunk",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        Then::Close,
    ),
    (
        "an invalid chunk size",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        Then::KeepOpen,
    ),
    ("an invalid status line", b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok", Then::KeepOpen),
    ("a status line with no version", b"200 OK\r\nContent-Length: 2\r\n\r\nok", Then::KeepOpen),
    ("a flood of 1xx answers", FLOOD, Then::KeepOpen),
];

const FLOOD: &[u8] =
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Runs the backend `spec` describes; never returns.
pub(crate) fn run(spec: &str) {
    let words: Vec<&str> = spec.split(' ').collect();
    let listen: SocketAddr = words[0].parse().expect("listen address");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await.expect("bind backend");
        match words[1..] {
            ["serve", status, delay, ref record @ ..] => {
                let status = hyper::StatusCode::from_u16(status.parse().expect("status")).expect("a status");
                let delay = Duration::from_millis(delay.parse().expect("delay"));
                let record = record.first().map(PathBuf::from);
                serve(listener, status, delay, record).await;
            }
            ["hang"] => hang(listener).await,
            ["bad", .., record] => {
                let name = words[2..words.len() - 1].join(" ");
                let (_, bytes, then) =
                    BAD_ANSWERS.iter().find(|(n, ..)| *n == name).expect("a known bad answer");
                misbehave(listener, bytes, *then, PathBuf::from(record)).await;
            }
            _ => panic!("unknown backend spec {spec}"),
        }
    });
}

async fn serve(listener: TcpListener, status: hyper::StatusCode, delay: Duration, record: Option<PathBuf>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let record = record.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let record = record.clone();
                async move { Ok::<_, Infallible>(answer(request, status, delay, record.as_ref()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type AnswerBody = Either<Full<Bytes>, PatternBody>;

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    status: hyper::StatusCode,
    delay: Duration,
    record: Option<&PathBuf>,
) -> hyper::Response<AnswerBody> {
    if let Some(length) = request.uri().path().strip_prefix("/download/").and_then(|n| n.parse().ok()) {
        return hyper::Response::new(Either::Right(PatternBody { at: 0, length }));
    }
    let upload = request.headers().get(UPLOAD_ID).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut body = request.into_body();
    let (mut length, mut hasher) = (0u64, crc32fast::Hasher::new());
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The body did not arrive whole: nothing is recorded, and the answer says so.
            let mut response = hyper::Response::new(Either::Left(Full::new(Bytes::from_static(b"cut\n"))));
            *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
            return response;
        };
        if let Some(data) = frame.data_ref() {
            length += data.len() as u64;
            hasher.update(data);
        }
    }
    let crc = hasher.finalize();
    if let (Some(path), Some(id)) = (record, upload) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("the record");
        file.write_all(format!("{id} {length} {crc}\n").as_bytes()).expect("write the record");
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response =
        hyper::Response::new(Either::Left(Full::new(Bytes::from(format!("{length} {crc}\n")))));
    *response.status_mut() = status;
    response
}

/// `length` bytes of body 0's [`pattern`], in 64 KiB frames.
pub(crate) struct PatternBody {
    at: u64,
    length: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.at >= self.length {
            return Poll::Ready(None);
        }
        let n = (self.length - self.at).min(64 * 1024) as usize;
        let mut block = vec![0u8; n];
        pattern(0, self.at, &mut block);
        self.at += n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(block)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length - self.at)
    }
}

async fn hang(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(1..)) {}
        });
    }
}

async fn misbehave(listener: TcpListener, answer: &'static [u8], then: Then, record: PathBuf) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let record = record.clone();
        tokio::spawn(async move {
            let _ = one_bad_connection(stream, answer, then, &record).await;
        });
    }
}

async fn one_bad_connection(
    mut stream: TcpStream,
    answer: &[u8],
    then: Then,
    record: &PathBuf,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut answered = 0;
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            buffer.drain(..end + 4);
            if answered > 0 {
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(record)?;
                file.write_all(b"reused\n")?;
            }
            answered += 1;
            stream.write_all(answer).await?;
            match then {
                Then::KeepOpen => {}
                Then::Close => return stream.shutdown().await,
                Then::Reset => {
                    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                    return Ok(());
                }
            }
        }
    }
}
