//! Stopping drains: listeners close at once, a request in flight finishes,
//! an idle keep-alive connection does not hold the stop up, and the drain
//! timeout bounds how long a stuck one can.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Backend, config, full, get, proxy};
use http::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A backend that reports each request it receives, then answers `done` after `delay`.
async fn slow_backend(delay: Duration) -> (Backend, mpsc::UnboundedReceiver<()>) {
    let (received, arrivals) = mpsc::unbounded_channel();
    let backend = Backend::start(move |_req| {
        let received = received.clone();
        async move {
            let _ = received.send(());
            tokio::time::sleep(delay).await;
            Response::new(full("done"))
        }
    })
    .await;
    (backend, arrivals)
}

fn with_drain_timeout(drain: &str, backend: SocketAddr) -> String {
    let extra = "retry.attempts = 1\n[upstreams.web.timeouts]\nper_try = \"60s\"\nrequest = \"60s\"";
    format!("[global]\ndrain_timeout = \"{drain}\"\n{}", config("round_robin", &[(backend, 1)], extra))
}

/// Waits (bounded) until the backend has the request.
async fn wait_for_arrival(arrivals: &mut mpsc::UnboundedReceiver<()>) {
    let arrived = tokio::time::timeout(Duration::from_secs(10), arrivals.recv()).await;
    assert!(matches!(arrived, Ok(Some(()))), "the request should reach the backend");
}

/// Waits (bounded) until connecting to `address` is refused; whether it was.
async fn listener_closes(address: SocketAddr) -> bool {
    for _ in 0..250 {
        if TcpStream::connect(address).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_completes_and_new_connections_are_refused() {
    // The backend holds its answer until the gate opens, so the stop cannot finish before.
    let (gate, gate_open) = tokio::sync::watch::channel(false);
    let (received, mut arrivals) = mpsc::unbounded_channel();
    let backend = Backend::start(move |_req| {
        let (received, mut gate_open) = (received.clone(), gate_open.clone());
        async move {
            let _ = received.send(());
            let _ = gate_open.wait_for(|open| *open).await;
            Response::new(full("done"))
        }
    })
    .await;
    let proxy = proxy(&with_drain_timeout("30s", backend.addr)).await;
    let address = proxy.listen_addresses()[0];
    let request = tokio::spawn(async move { get(address, "/", &[]).await });
    wait_for_arrival(&mut arrivals).await;

    // The stop reports whether the backend had been let answer by the time it ended.
    let answer_allowed = Arc::new(AtomicBool::new(false));
    let allowed = Arc::clone(&answer_allowed);
    let stopping = tokio::spawn(async move {
        proxy.shutdown().await;
        allowed.load(Ordering::SeqCst)
    });
    assert!(listener_closes(address).await, "the listener closes at once");
    assert!(!stopping.is_finished(), "the stop waits for the request in flight");
    answer_allowed.store(true, Ordering::SeqCst);
    gate.send(true).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), request).await.expect("bounded").unwrap();
    assert_eq!(answer, (StatusCode::OK, "done".to_string()));
    let stopped = tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("the drain ends");
    assert!(stopped.unwrap(), "the stop ended only after the request in flight could finish");
    backend.kill().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_does_not_hold_up_a_stop() {
    let backend = Backend::named("a").await;
    let proxy = proxy(&with_drain_timeout("30s", backend.addr)).await;
    let mut idle = TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    // The whole response ("a", one byte of body), however many reads it takes.
    let mut response = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !(response.starts_with(b"HTTP/1.1 200") && response.ends_with(b"\r\n\r\na")) {
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .expect("bounded")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
    }

    // Far below the 30 s drain timeout: an idle connection closes at once.
    tokio::time::timeout(Duration::from_secs(5), proxy.shutdown()).await.expect("the stop is not held up");
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.expect("bounded");
    assert!(matches!(read, Ok(0) | Err(_)), "the idle connection is closed: {read:?}");
    backend.kill().await;
}

#[tokio::test]
async fn the_drain_timeout_bounds_a_stop_held_up_by_a_stuck_request() {
    let (backend, mut arrivals) = slow_backend(Duration::from_secs(60)).await;
    let proxy = proxy(&with_drain_timeout("200ms", backend.addr)).await;
    let address = proxy.listen_addresses()[0];
    let request = tokio::spawn(async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 1024];
        stream.read(&mut buf).await
    });
    wait_for_arrival(&mut arrivals).await;

    tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
        .await
        .expect("bounded by the drain timeout");
    let read = tokio::time::timeout(Duration::from_secs(5), request).await.expect("bounded").unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "the stuck connection is dropped, not answered: {read:?}");
    backend.kill().await;
}
