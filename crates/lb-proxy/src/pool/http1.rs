//! Keep-alive HTTP/1.1 connections to one endpoint.
//!
//! Each endpoint owns a small LIFO stack of idle connections (the most
//! recently used first: its socket is the warmest and the least likely to
//! have hit the backend's idle timeout). A checkout pops from the stack
//! under an uncontended mutex held for a push or a pop only; the endpoint
//! pick itself never touches it. Connections are `hyper::client::conn::http1`
//! handles whose connection task runs on the runtime, so a request that could
//! not be written on a stale connection comes back to us whole and goes out
//! again on a fresh one, without keeping a copy of its headers.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::SendError;
use crate::body::RequestBody;

type Sender = SendRequest<RequestBody>;

/// A connection that carries one request; give it back with [`EndpointPool::put`].
#[derive(Debug)]
pub(crate) struct Conn(Sender);

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The idle connections of one endpoint and how to make new ones.
pub(crate) struct EndpointPool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool").field("idle", &self.idle_count()).finish_non_exhaustive()
    }
}

impl EndpointPool {
    /// A pool keeping at most `max_idle` connections, each for at most `idle_timeout`.
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration, connect_timeout: Duration) -> Self {
        EndpointPool { idle: Mutex::new(Vec::new()), max_idle, idle_timeout, connect_timeout }
    }

    fn stack(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many idle connections the pool holds now.
    pub(crate) fn idle_count(&self) -> usize {
        self.stack().len()
    }

    /// Sends `request` to `authority` on an idle connection, or a new one.
    ///
    /// A pooled connection found closed, or one that hands the request back
    /// unsent, is dropped and the next is tried; the last resort is one fresh
    /// connection, so a stale pool costs at most one extra connect.
    pub(crate) async fn send(
        &self,
        authority: &Authority,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Conn), SendError> {
        while let Some(mut sender) = self.pop() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Conn(sender))),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Failed(error.into_error())),
                },
            }
        }
        let mut sender = match self.connect(authority).await {
            Ok(sender) => sender,
            Err(_) => return Err(SendError::Connect(Box::new(request))),
        };
        match sender.send_request(request).await {
            Ok(response) => Ok((response, Conn(sender))),
            Err(error) => Err(SendError::Failed(error)),
        }
    }

    /// The most recently parked connection that is neither closed nor expired.
    fn pop(&self) -> Option<Sender> {
        let now = Instant::now();
        let mut stack = self.stack();
        while let Some(idle) = stack.pop() {
            if !idle.sender.is_closed() && now.duration_since(idle.since) < self.idle_timeout {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Parks a connection whose response ended cleanly, unless the pool is full.
    pub(crate) fn put(&self, conn: Conn) {
        if conn.0.is_closed() {
            return;
        }
        let mut stack = self.stack();
        if stack.len() < self.max_idle {
            stack.push(Idle { sender: conn.0, since: Instant::now() });
        }
    }

    /// Closes the connections idle longer than the idle timeout, or already closed.
    pub(crate) fn evict_expired(&self) {
        let now = Instant::now();
        // Dropping a handle only closes a channel; its connection task does the closing.
        self.stack().retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < self.idle_timeout);
    }

    async fn connect(&self, authority: &Authority) -> std::io::Result<Sender> {
        let stream = super::dial(authority, self.connect_timeout).await?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
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

    fn get() -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::Empty);
        *request.uri_mut() = http::Uri::from_static("/");
        request.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("test"));
        request
    }

    fn pool(max_idle: usize) -> EndpointPool {
        EndpointPool::new(max_idle, Duration::from_secs(50), Duration::from_secs(1))
    }

    /// Sends one GET, reads the body to its end and returns the connection.
    async fn exchange(pool: &EndpointPool, backend: &RawBackend) -> Conn {
        let (response, conn) = pool.send(&backend.authority, get()).await.expect("a response");
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
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
        let pool = pool(4);
        let (older, newer) = (exchange(&pool, &backend).await, exchange(&pool, &backend).await);
        tokio::time::pause();
        pool.put(older);
        tokio::time::advance(Duration::from_secs(30)).await;
        pool.put(newer);
        tokio::time::advance(Duration::from_secs(25)).await;
        pool.evict_expired();
        assert_eq!(pool.idle_count(), 1, "only the connection idle 55 s of 50 goes");
        tokio::time::resume();
        backend.wait_closed(1).await;
    }

    #[tokio::test]
    async fn a_stale_pooled_connection_is_replaced_by_a_fresh_one() {
        let mut backend = RawBackend::start(true).await;
        let pool = pool(4);
        let conn = exchange(&pool, &backend).await;
        pool.put(conn);
        backend.wait_closed(1).await;
        let conn = exchange(&pool, &backend).await;
        drop(conn);
        assert_eq!(backend.requests.load(Ordering::SeqCst), 2, "the second request went out once");
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_connect_hands_the_request_back() {
        let closed = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let authority = Authority::try_from(closed.local_addr().unwrap().to_string()).unwrap();
        drop(closed);
        let mut request = get();
        request.headers_mut().insert("x-kept", http::HeaderValue::from_static("yes"));
        match pool(4).send(&authority, request).await {
            Err(SendError::Connect(unsent)) => assert_eq!(unsent.headers()["x-kept"], "yes"),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
