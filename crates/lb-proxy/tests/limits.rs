//! Caps and timeouts at the edges: a listener's `max_connections`, the
//! default body limit, the admin listener's idle timeout, and keep-alive
//! connections parked while idle.

mod common;

use std::time::Duration;

use common::{Backend, config, metrics, proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes, bounded; whether it closed without sending a byte.
async fn closed_silently(stream: &mut TcpStream) -> bool {
    closed_silently_within(stream, Duration::from_secs(5)).await
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_at_once_and_counted() {
    let backend = Backend::named("a").await;
    let text = config("round_robin", &[(backend.addr, 1)], "").replace(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"",
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\nname = \"web\"\nmax_connections = 2",
    );
    let proxy = proxy(&text).await;
    let (addr, admin) = (proxy.listen_addresses()[0], proxy.admin_address().unwrap());
    // Two slow clients hold the two slots with half a head each.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        held.push(stream);
    }
    assert!(common::admin_page_shows(admin, "/metrics", "client_connections{listener=\"web\"} 2").await);
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_silently(&mut third).await, "the third connection is closed, not queued");
    assert!(metrics(admin).await.contains("client_connections_refused_total{listener=\"web\"} 1"));
    // A slot comes back when a connection closes.
    drop(held.pop());
    assert!(common::admin_page_shows(admin, "/metrics", "client_connections{listener=\"web\"} 1").await);
    let (status, body) = common::get(addr, "/", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
    proxy.shutdown().await;
    backend.kill().await;
}

#[tokio::test]
async fn the_default_body_limit_is_one_gibibyte() {
    let backend = Backend::named("a").await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let mut stream = TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();
    stream.write_all(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741825\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await.unwrap().unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 413 "), "{}", String::from_utf8_lossy(&answer[..n]));
    assert_eq!(backend.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    proxy.shutdown().await;
    backend.kill().await;
}

#[tokio::test(start_paused = true)]
async fn an_admin_connection_that_sends_nothing_is_closed() {
    let backend = Backend::named("a").await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let mut idle = TcpStream::connect(proxy.admin_address().unwrap()).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(120), idle.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed: {read:?}");
    assert!(
        started.elapsed() <= Duration::from_secs(31),
        "after the 30 s idle timeout: {:?}",
        started.elapsed()
    );
    proxy.shutdown().await;
    backend.kill().await;
}

/// Sends a GET on `stream` and reads its whole answer (`a`, one byte of body from `Backend::named("a")`).
async fn request_on(stream: &mut TcpStream) {
    stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !(response.starts_with(b"HTTP/1.1 200") && response.ends_with(b"\r\n\r\na")) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("bounded")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
    }
}

/// A keep-alive connection idle past a second is parked (its engine state
/// and buffers given back); it serves its next request as before, and its
/// idle timeout still runs from the end of the last request.
#[tokio::test(start_paused = true)]
async fn a_parked_connection_serves_its_next_request_and_keeps_its_idle_timeout() {
    let backend = Backend::named("a").await;
    let text = format!(
        "[global]\nclient_idle_timeout = \"10s\"\n{}",
        config("round_robin", &[(backend.addr, 1)], "")
    );
    let proxy = proxy(&text).await;
    let mut stream = TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();
    request_on(&mut stream).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    request_on(&mut stream).await;
    let idle_from = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(closed_silently_within(&mut stream, Duration::from_secs(30)).await, "closed at the idle timeout");
    let idle = idle_from.elapsed();
    assert!(
        (Duration::from_secs(10)..=Duration::from_millis(10_100)).contains(&idle),
        "closed {idle:?} after the last request; the idle timeout is 10 s"
    );
    proxy.shutdown().await;
    backend.kill().await;
}

/// A stop closes a parked connection at once, as it does an idle one.
#[tokio::test(start_paused = true)]
async fn a_stop_closes_a_parked_connection_at_once() {
    let backend = Backend::named("a").await;
    let text =
        format!("[global]\ndrain_timeout = \"30s\"\n{}", config("round_robin", &[(backend.addr, 1)], ""));
    let proxy = proxy(&text).await;
    let mut stream = TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();
    request_on(&mut stream).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopping = tokio::time::Instant::now();
    proxy.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(1), "the stop took {:?}", stopping.elapsed());
    assert!(closed_silently_within(&mut stream, Duration::from_secs(5)).await);
    backend.kill().await;
}

/// Reads until the peer closes, bounded by `limit`; whether it closed without sending a byte.
async fn closed_silently_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(limit, stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}
