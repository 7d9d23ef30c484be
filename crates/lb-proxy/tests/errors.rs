//! The proxy's own answers: 502, 503, 504, 404, 413, and smuggling refused.

mod common;

use std::time::Duration;

use common::{Backend, admin_page_shows, config, eventually, full, get, proxy, refused_address};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_refused_connection_gives_502() {
    let dead = refused_address();
    let proxy = proxy(&config("round_robin", &[(dead, 1)], "retry.attempts = 1")).await;
    let (status, _) = get(proxy.listen_addresses()[0], "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_slow_backend_gives_504_after_the_per_try_timeout() {
    let slow = Backend::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(full("late"))
    })
    .await;
    let extra = "retry.attempts = 1\n[upstreams.web.timeouts]\nper_try = \"200ms\"";
    let proxy = proxy(&config("round_robin", &[(slow.addr, 1)], extra)).await;
    let started = std::time::Instant::now();
    let (status, _) = get(proxy.listen_addresses()[0], "/", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3), "answered at the timeout, not after the backend");
    proxy.shutdown().await;
    slow.kill().await;
}

#[tokio::test]
async fn a_request_the_client_abandons_gives_back_its_slot_and_counts_as_499() {
    let held = Backend::start(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/hold" {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Response::new(full("done"))
    })
    .await;
    let extra = "[upstreams.web.limits]\nmax_in_flight = 1";
    let proxy = proxy(&config("round_robin", &[(held.addr, 1)], extra)).await;
    let (addr, admin) = (proxy.listen_addresses()[0], proxy.admin_address().unwrap());
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /hold HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    assert!(eventually(|| held.requests.load(std::sync::atomic::Ordering::SeqCst) == 1).await);
    drop(client);

    let abandoned = format!("requests_total{{upstream=\"web\",backend=\"{}\",status=\"499\"}} 1", held.addr);
    assert!(admin_page_shows(admin, "/metrics", &abandoned).await, "the abandoned request is counted as 499");
    assert_eq!(
        get(addr, "/", &[]).await,
        (StatusCode::OK, "done".to_string()),
        "its in-flight slot came back"
    );
    proxy.shutdown().await;
    held.kill().await;
}

#[tokio::test]
async fn the_in_flight_limit_gives_503() {
    let (release, released) = tokio::sync::watch::channel(false);
    let held = Backend::start(move |_req| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Response::new(full("done"))
        }
    })
    .await;
    let extra = "[upstreams.web.limits]\nmax_in_flight = 1";
    let proxy = proxy(&config("round_robin", &[(held.addr, 1)], extra)).await;
    let addr = proxy.listen_addresses()[0];
    let first = tokio::spawn(async move { get(addr, "/", &[]).await });
    assert!(
        eventually(|| held.requests.load(std::sync::atomic::Ordering::SeqCst) == 1).await,
        "the first request reaches the backend"
    );
    let (status, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    release.send(true).unwrap();
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    assert_eq!(get(addr, "/", &[]).await.0, StatusCode::OK, "the slot was given back");
    proxy.shutdown().await;
    held.kill().await;
}

#[tokio::test]
async fn unknown_hosts_get_404_and_big_bodies_413() {
    let backend = Backend::named("a").await;
    let text = format!(
        "[global]\nmax_body_bytes = 10\n[admin]\nenabled = false\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nhost = \"shop.example\"\nupstream = \"web\"\n\
         [upstreams.web]\ndiscovery.static.endpoints = [\"{}\"]\n",
        backend.addr
    );
    let proxy = proxy(&text).await;
    let addr = proxy.listen_addresses()[0];
    assert_eq!(get(addr, "/", &[("host", "other.example")]).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(addr, "/", &[("host", "shop.example")]).await.0, StatusCode::OK);
    let big = Request::post(format!("http://{addr}/"))
        .header("host", "shop.example")
        .body(full("x".repeat(100)))
        .unwrap();
    let response = common::client().request(big).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    proxy.shutdown().await;
    backend.kill().await;
}

/// A request with both Content-Length and Transfer-Encoding is refused with
/// 400 and the connection closed, as nginx and HAProxy do: it is never
/// re-framed and forwarded, so bytes hidden behind a lying Content-Length
/// are never read as a second request.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_closes() {
    let backend = Backend::named("a").await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "one response, then close: {answer}");
    assert_eq!(backend.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the backend");
    proxy.shutdown().await;
    backend.kill().await;
}
