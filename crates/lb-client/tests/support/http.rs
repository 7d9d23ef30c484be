//! A tiny hyper HTTP/1.1 + h2c backend that counts what it serves.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A running backend; stopped when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    name: String,
    hits: AtomicU64,
    connections: AtomicU64,
    status: AtomicU16,
    delay_ms: AtomicU64,
    /// Answers wait until this many requests have arrived (0: no wait).
    gate: AtomicU64,
    /// A `Location` header for every answer.
    location: Mutex<Option<String>>,
    /// A `Retry-After` header for every answer.
    retry_after: Mutex<Option<String>>,
    /// Requests whose head arrived, answered or not.
    arrivals: watch::Sender<u64>,
    /// Connections the client closed (or that broke).
    closed: watch::Sender<u64>,
}

impl Backend {
    /// Starts a backend answering 200 with its name after `delay`.
    pub async fn start(name: &str, delay: Duration) -> Backend {
        Backend::start_on(name, delay, SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind 127.0.0.1:0")
    }

    /// Starts a backend on `addr`; fails if the address is taken.
    pub async fn start_on(name: &str, delay: Duration, addr: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            name: name.to_string(),
            hits: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(delay.as_millis() as u64),
            gate: AtomicU64::new(0),
            location: Mutex::new(None),
            retry_after: Mutex::new(None),
            arrivals: watch::Sender::new(0),
            closed: watch::Sender::new(0),
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&state)));
        Ok(Backend { addr, name: name.to_string(), state, task })
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Connections that ended so far.
    pub fn closed(&self) -> u64 {
        *self.state.closed.borrow()
    }

    /// Makes every later answer carry `status`.
    pub fn answer_with(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    /// Makes every later answer a `302 Found` to `location`.
    pub fn redirect_to(&self, location: &str) {
        *self.state.location.lock().unwrap() = Some(location.to_string());
        self.answer_with(302);
    }

    /// Makes every later answer carry `Retry-After: value`.
    pub fn ask_to_retry_after(&self, value: &str) {
        *self.state.retry_after.lock().unwrap() = Some(value.to_string());
    }

    /// Holds every answer until `arrivals` requests have arrived in all.
    pub fn hold_until(&self, arrivals: u64) {
        self.state.gate.store(arrivals, Ordering::Relaxed);
    }

    /// Waits until `n` requests have arrived in all.
    pub async fn arrived(&self, n: u64) {
        let mut arrivals = self.state.arrivals.subscribe();
        arrivals.wait_for(|&a| a >= n).await.expect("the backend keeps its state");
    }

    /// Waits until `n` connections have ended in all.
    pub async fn closed_at_least(&self, n: u64) {
        let mut closed = self.state.closed.subscribe();
        closed.wait_for(|&c| c >= n).await.expect("the backend keeps its state");
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        state.connections.fetch_add(1, Ordering::Relaxed);
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = {
                let state = Arc::clone(&state);
                service_fn(move |request| answer(Arc::clone(&state), request))
            };
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            state.closed.send_modify(|c| *c += 1);
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn answer(
    state: Arc<State>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    state.arrivals.send_modify(|a| *a += 1);
    // The whole request first: a body that breaks off gets no answer.
    if request.into_body().collect().await.is_err() {
        return Ok(hyper::Response::builder().status(400).body(Full::default()).expect("a valid response"));
    }
    let gate = state.gate.load(Ordering::Relaxed);
    if gate > 0 {
        let _ = state.arrivals.subscribe().wait_for(|&a| a >= gate).await;
    }
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    state.hits.fetch_add(1, Ordering::Relaxed);
    let body = format!("{} {}", state.name, path);
    let status = state.status.load(Ordering::Relaxed);
    let mut response = hyper::Response::builder().status(status);
    if let Some(location) = state.location.lock().unwrap().clone() {
        response = response.header("location", location);
    }
    if let Some(retry_after) = state.retry_after.lock().unwrap().clone() {
        response = response.header("retry-after", retry_after);
    }
    Ok(response.body(Full::new(Bytes::from(body))).expect("a valid response"))
}
