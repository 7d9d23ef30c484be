//! Route prefixes match whole path segments of the normalised path, and the
//! normalised path is what the endpoint gets: `..` cannot step out of a route.

mod common;

use std::time::Duration;

use common::{Backend, full};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend answering `name target`.
async fn echo_target(name: &'static str) -> Backend {
    Backend::start(move |req: Request<Incoming>| async move {
        Response::new(full(format!("{name} {}", req.uri().path_and_query().map_or("", |p| p.as_str()))))
    })
    .await
}

/// Sends `target` raw (so nothing on the way normalises it) and returns the status line and body.
async fn raw_get(proxy: std::net::SocketAddr, target: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_string();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn prefixes_match_whole_segments_of_the_normalised_path() {
    let (api, site) = (echo_target("api").await, echo_target("site").await);
    let text = format!(
        "[admin]\nenabled = false\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npath_prefix = \"/api\"\nupstream = \"api\"\n\
         [[routes]]\nupstream = \"site\"\n\
         [upstreams.api]\ndiscovery.static.endpoints = [\"{}\"]\n\
         [upstreams.site]\ndiscovery.static.endpoints = [\"{}\"]\n",
        api.addr, site.addr
    );
    let proxy = common::proxy(&text).await;
    let addr = proxy.listen_addresses()[0];
    for (target, status, body) in [
        ("/api", "200", "api /api"),
        ("/api/users?id=1", "200", "api /api/users?id=1"),
        ("/apiary", "200", "site /apiary"),
        ("/api/../admin", "200", "site /admin"),
        ("/api/%2e%2e/admin", "200", "site /admin"),
        ("/static/../api/x", "200", "api /api/x"),
        ("/%61pi/./x?q=../y", "200", "api /api/x?q=../y"),
        ("/api/a%2fb", "200", "api /api/a%2Fb"),
    ] {
        let (line, got) = raw_get(addr, target).await;
        assert!(line.starts_with(&format!("HTTP/1.1 {status}")), "{target}: {line}");
        assert_eq!(got, body, "{target}");
    }
    for escape in ["/../etc/passwd", "/api/../../etc", "/a%zz"] {
        let (line, _) = raw_get(addr, escape).await;
        assert!(line.starts_with("HTTP/1.1 400"), "{escape}: {line}");
    }
    assert_eq!(api.requests.load(std::sync::atomic::Ordering::SeqCst), 5, "the escapes reached nobody");
    proxy.shutdown().await;
    api.kill().await;
    site.kill().await;
}
