//! An `Upgrade` handshake passes through, and the upgraded bytes are tunnelled.

mod common;

use std::time::Duration;

use common::{Backend, config, full, proxy};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers an upgrade with 101, then echoes bytes upper-cased.
async fn upgrading(mut req: Request<Incoming>) -> Response<common::TestBody> {
    let asked = req.headers().get("upgrade").map(|v| v.to_str().unwrap().to_string());
    let connection = req.headers().get("connection").map(|v| v.to_str().unwrap().to_ascii_lowercase());
    if asked.as_deref() != Some("echo") || connection.as_deref() != Some("upgrade") {
        let mut r = Response::new(full("no upgrade"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut io = TokioIo::new(on_upgrade.await.unwrap());
        let mut buf = [0u8; 64];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert("upgrade", "echo".parse().unwrap());
    r.headers_mut().insert("connection", "upgrade".parse().unwrap());
    r
}

#[tokio::test]
async fn an_upgraded_connection_is_tunnelled_both_ways() {
    let backend = Backend::start(upgrading).await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "upgrade_protocols = [\"echo\"]")).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte)).await.unwrap().unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"hello tunnel").await.unwrap();
    let mut echoed = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"HELLO TUNNEL");
    drop(stream);
    proxy.shutdown().await;
    backend.kill().await;
}

#[tokio::test]
async fn an_upgrade_the_upstream_does_not_list_is_stripped() {
    let backend = Backend::start(upgrading).await;
    // The default list has `websocket` only.
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 400"), "the backend saw no upgrade: {answer}");
    assert!(answer.ends_with("no upgrade"), "{answer}");
    drop(stream);
    proxy.shutdown().await;
    backend.kill().await;
}
