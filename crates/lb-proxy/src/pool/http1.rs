//! Keep-alive HTTP/1.1 connections to one endpoint, on lb's own engine.
//!
//! Each endpoint owns a small LIFO stack of idle connections (the most
//! recently used first: its socket is the warmest and the least likely to
//! have hit the backend's idle timeout). A checkout pops from the stack
//! under an uncontended mutex held for a push or a pop only; the endpoint
//! pick itself never touches it. A connection is a socket with its own read
//! buffer and parsed-head scratch, driven by the request that holds it: no
//! task and no channel per connection.
//!
//! A connection goes back only when its request was sent whole and its
//! response read to the end. One that had anything to say while idle (a
//! FIN, a reset, stray bytes) is dropped at checkout, seen through the
//! socket's readiness without a system call.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::Method;
use http::uri::Authority;
use lb_core::{Clock, Timestamp};

use super::stream::EndpointStream;

use crate::http1::buffer::{FillError, ReadBuffer};
use crate::http1::response::{self, BadResponse, ResponseHead};

/// The largest response head accepted from an endpoint (nginx's `proxy_buffer_size` is 4–8 KiB).
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The most a connection's read buffer grows to while relaying a body.
pub(crate) const BODY_BUFFER: usize = 64 * 1024;

/// An idle connection's read buffer is shrunk to this.
const KEEP_BUFFER: usize = 16 * 1024;

/// Interim (1xx) responses skipped before the real one; more is a flood.
const MAX_INTERIM: usize = 8;

/// One HTTP/1.1 connection to an endpoint.
#[derive(Debug)]
pub(crate) struct UpstreamConn {
    pub(crate) stream: EndpointStream,
    /// What the endpoint sent and was not consumed yet.
    pub(crate) buf: ReadBuffer,
    /// The response head of the current request, its spans into `buf`.
    pub(crate) head: ResponseHead,
    /// Whether an earlier request was carried (so a failure may just mean it went stale).
    pub(crate) reused: bool,
}

impl UpstreamConn {
    /// The wait the current response's `Retry-After` asks for, if it has a
    /// readable one (delta-seconds).
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let buf = self.buf.bytes();
        let field = self.head.fields.iter().find(|f| f.name.of(buf).eq_ignore_ascii_case(b"retry-after"))?;
        lb_health::parse_retry_after(field.value.of(buf))
    }
}

/// Why no usable response head came.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The connection closed or broke before any byte of a response.
    Closed,
    /// The connection broke mid-head.
    Io(io::Error),
    /// The endpoint sent something that is not a usable response head.
    Bad(BadResponse),
}

impl UpstreamConn {
    fn new(stream: EndpointStream) -> Self {
        UpstreamConn { stream, buf: ReadBuffer::default(), head: ResponseHead::default(), reused: false }
    }

    /// Reads the response head to a request with `method`, skipping interim
    /// responses other than 101. The head stays at the front of the buffer
    /// (its spans point there) until the caller consumes `head.len` bytes.
    pub(crate) async fn read_head(&mut self, method: &Method) -> Result<(), HeadError> {
        let mut interim = 0;
        let mut received = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                match response::parse(self.buf.bytes(), method, MAX_RESPONSE_HEAD, &mut self.head) {
                    Ok(true) if self.head.is_interim() => {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(HeadError::Bad(BadResponse::Malformed));
                        }
                        self.buf.consume(self.head.len);
                        continue;
                    }
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(bad) => return Err(HeadError::Bad(bad)),
                }
            }
            match self.buf.fill(&mut self.stream, MAX_RESPONSE_HEAD).await {
                Ok(0) if !received => return Err(HeadError::Closed),
                Ok(0) => return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => received = true,
                Err(FillError::Full) => return Err(HeadError::Bad(BadResponse::TooLarge)),
                Err(FillError::Io(_)) if !received => return Err(HeadError::Closed),
                Err(FillError::Io(e)) => return Err(HeadError::Io(e)),
            }
        }
    }

    /// Whether an idle connection heard nothing while parked: no FIN, no
    /// reset, no stray bytes.
    fn is_quiet(&mut self) -> bool {
        self.buf.is_empty() && self.stream.is_quiet()
    }
}

fn lock(stack: &Mutex<Vec<Idle>>) -> MutexGuard<'_, Vec<Idle>> {
    stack.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Idle {
    conn: UpstreamConn,
    since: Timestamp,
}

/// The idle connections of one endpoint and how to make new ones: one
/// stack per worker thread, so a connection stays with the thread (and the
/// reactor) that made it.
pub(crate) struct EndpointPool {
    idle: Box<[Mutex<Vec<Idle>>]>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    tls: Option<super::UpstreamTls>,
    /// What idle times are measured with (the runtime's clock).
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool").field("idle", &self.idle_count()).finish_non_exhaustive()
    }
}

impl EndpointPool {
    /// A pool for `workers` threads, keeping at most `max_idle` connections
    /// per thread, each for at most `idle_timeout` by `clock`.
    pub(crate) fn new(
        workers: usize,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        tls: Option<super::UpstreamTls>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let idle = (0..workers.max(1)).map(|_| Mutex::new(Vec::new())).collect();
        EndpointPool { idle, max_idle, idle_timeout, connect_timeout, tls, clock }
    }

    /// This worker thread's stack.
    fn stack(&self) -> MutexGuard<'_, Vec<Idle>> {
        lock(&self.idle[crate::workers::current() % self.idle.len()])
    }

    /// How many idle connections the pool holds now, over every worker.
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.iter().map(|stack| lock(stack).len()).sum()
    }

    /// The most recently parked connection that is quiet and not expired
    /// at `now` (the caller's clock reading, so a request reads it once).
    pub(crate) fn checkout(&self, now: Timestamp) -> Option<UpstreamConn> {
        loop {
            let Idle { mut conn, since } = self.stack().pop()?;
            if now.saturating_since(since) < self.idle_timeout && conn.is_quiet() {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    /// A new connection to `authority` (over TLS when the upstream has it), within the connect timeout.
    pub(crate) async fn connect(&self, authority: &Authority) -> io::Result<UpstreamConn> {
        super::dial(authority, self.connect_timeout, self.tls.as_ref()).await.map(UpstreamConn::new)
    }

    /// Parks a connection whose exchange ended cleanly, unless the pool is full.
    pub(crate) fn put(&self, conn: UpstreamConn) {
        self.put_at(conn, self.clock.now());
    }

    /// [`put`](Self::put), idle since `now` (read from the proxy's clock).
    pub(crate) fn put_at(&self, mut conn: UpstreamConn, now: Timestamp) {
        // A large body grew the buffer; an idle connection keeps only a small one.
        conn.buf.shrink(KEEP_BUFFER);
        let mut stack = self.stack();
        if stack.len() < self.max_idle {
            stack.push(Idle { conn, since: now });
        }
    }

    /// Closes the connections idle longer than the idle timeout, on every worker.
    pub(crate) fn evict_expired(&self) {
        let now = self.clock.now();
        for stack in &self.idle {
            let expired: Vec<Idle> =
                lock(stack).extract_if(.., |i| now.saturating_since(i.since) >= self.idle_timeout).collect();
            // Closed outside the lock.
            drop(expired);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;

    /// A raw HTTP/1.1 backend: answers `ok` to each request; with `close_after`
    /// it closes the socket after each response without saying so, as a
    /// backend whose idle timeout fired does. Reports each closed connection.
    struct RawBackend {
        authority: Authority,
        accepted: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
        closed: mpsc::UnboundedReceiver<()>,
        task: tokio::task::JoinHandle<()>,
    }

    impl RawBackend {
        async fn start(close_after: bool) -> RawBackend {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
            let authority = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
            let (accepted, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let (closed_tx, closed) = mpsc::unbounded_channel();
            let (a, r) = (Arc::clone(&accepted), Arc::clone(&requests));
            let task = tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    a.fetch_add(1, Ordering::SeqCst);
                    let (r, closed_tx) = (Arc::clone(&r), closed_tx.clone());
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        for _ in 0..1000 {
                            let Ok(n @ 1..) = stream.read(&mut chunk).await else { break };
                            buf.extend_from_slice(&chunk[..n]);
                            if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                                continue;
                            }
                            buf.clear();
                            r.fetch_add(1, Ordering::SeqCst);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() || close_after {
                                break;
                            }
                        }
                        let _ = closed_tx.send(());
                    });
                }
            });
            RawBackend { authority, accepted, requests, closed, task }
        }

        /// Waits (bounded) until `n` connections have closed on the backend side.
        async fn wait_closed(&mut self, n: usize) {
            for _ in 0..n {
                let seen = tokio::time::timeout(Duration::from_secs(5), self.closed.recv()).await;
                assert!(matches!(seen, Ok(Some(()))), "a connection should have closed");
            }
        }
    }

    impl Drop for RawBackend {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn pool(max_idle: usize) -> EndpointPool {
        pool_on(max_idle, Arc::new(lb_core::MonotonicClock::new()))
    }

    fn pool_on(max_idle: usize, clock: Arc<dyn Clock>) -> EndpointPool {
        EndpointPool::new(1, max_idle, Duration::from_secs(50), Duration::from_secs(1), None, clock)
    }

    /// Sends one GET on a pooled or new connection and reads the answer.
    async fn exchange(pool: &EndpointPool, backend: &RawBackend) -> UpstreamConn {
        let mut conn = match pool.checkout(pool.clock.now()) {
            Some(conn) => conn,
            None => pool.connect(&backend.authority).await.unwrap(),
        };
        conn.stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        conn.read_head(&Method::GET).await.unwrap();
        assert_eq!(conn.head.status, 200);
        conn.buf.consume(conn.head.len);
        while conn.buf.len() < 2 {
            conn.buf.fill(&mut conn.stream, 1024).await.unwrap();
        }
        assert_eq!(conn.buf.bytes(), b"ok");
        conn.buf.consume(2);
        conn
    }

    #[tokio::test]
    async fn a_returned_connection_carries_the_next_request() {
        let backend = RawBackend::start(false).await;
        let pool = pool(4);
        for _ in 0..5 {
            let conn = exchange(&pool, &backend).await;
            pool.put(conn);
        }
        assert_eq!(backend.requests.load(Ordering::SeqCst), 5);
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_per_endpoint() {
        let backend = RawBackend::start(false).await;
        let pool = pool(2);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(exchange(&pool, &backend).await);
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 3, "held connections are not shared");
        for conn in held {
            pool.put(conn);
        }
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn the_idle_timeout_closes_connections() {
        let mut backend = RawBackend::start(false).await;
        let clock = Arc::new(lb_core::ManualClock::new());
        let pool = pool_on(4, Arc::clone(&clock) as Arc<dyn Clock>);
        let (older, newer) = (exchange(&pool, &backend).await, exchange(&pool, &backend).await);
        pool.put(older);
        clock.advance(Duration::from_secs(30));
        pool.put(newer);
        clock.advance(Duration::from_secs(25));
        pool.evict_expired();
        assert_eq!(pool.idle_count(), 1, "only the connection idle 55 s of 50 goes");
        backend.wait_closed(1).await;
        clock.advance(Duration::from_secs(25));
        assert!(pool.checkout(pool.clock.now()).is_none(), "the other, idle 50 s now, is not handed out");
    }

    #[tokio::test]
    async fn a_connection_closed_while_parked_is_not_checked_out() {
        let mut backend = RawBackend::start(true).await;
        let pool = pool(4);
        let conn = exchange(&pool, &backend).await;
        pool.put(conn);
        backend.wait_closed(1).await;
        // The FIN reaches our socket's readiness once the runtime polls its driver.
        let mut dropped = false;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if pool.checkout(pool.clock.now()).is_none() {
                dropped = true;
                break;
            }
        }
        assert!(dropped, "the closed connection was never handed out");
        drop(exchange(&pool, &backend).await);
        assert_eq!(backend.requests.load(Ordering::SeqCst), 2, "the second request went out once");
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_that_closes_before_answering_says_so() {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let authority = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        });
        let mut conn = pool(1).connect(&authority).await.unwrap();
        conn.stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let error = conn.read_head(&Method::GET).await.unwrap_err();
        assert!(matches!(error, HeadError::Io(_)), "bytes came, so not merely stale: {error:?}");
        server.await.unwrap();
    }
}
