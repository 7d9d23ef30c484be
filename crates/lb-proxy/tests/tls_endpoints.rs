//! TLS from the proxy to its endpoints, against real rustls servers on
//! loopback with certificates generated at test time: verification by a CA
//! file and a server name, pooled connections, bodies both ways, HTTP/2 by
//! ALPN, mutual TLS, health checks over the same TLS, and what is refused
//! (an unknown issuer, an expired certificate, a missing client certificate).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, full};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_core::HealthStatus;
use lb_tls::testing::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TLS endpoint answering `<HTTP version> <bytes of request body>`.
struct TlsBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Requests that came as HTTP/2.
    http2_requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_backend(config: Arc<rustls::ServerConfig>) -> TlsBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let http2_requests = Arc::new(AtomicUsize::new(0));
    let (counted, http2) = (Arc::clone(&connections), Arc::clone(&http2_requests));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        let mut served = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let (counted, http2) = (Arc::clone(&counted), Arc::clone(&http2));
            served.spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |req: Request<Incoming>| {
                    if req.version() == http::Version::HTTP_2 {
                        http2.fetch_add(1, Ordering::SeqCst);
                    }
                    async move {
                        let version = req.version();
                        let length = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                        Ok::<_, std::convert::Infallible>(Response::new(full(format!(
                            "{version:?} {length}"
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsBackend { addr, connections, http2_requests, task }
}

/// A proxy from `text`, written next to the certificates and loaded as `lb-proxy run` does.
async fn start(dir: &Path, text: &str) -> lb_proxy::RunningProxy {
    let path = dir.join("lb.toml");
    std::fs::write(&path, text).unwrap();
    let config = lb_proxy::Config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    lb_proxy::Proxy::new(config).start().await.unwrap()
}

/// One upstream `web` over `endpoints` with `extra` keys (its `tls` among
/// them); one worker thread, so all requests share its connection pool.
fn config(endpoints: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[global]\nworker_threads = 1\n[admin]\nenabled = false\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n\
         [upstreams.web]\ndiscovery.static.endpoints = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// A request through the proxy on a connection of its own: its status and body.
async fn send(proxy: SocketAddr, method: &str, body: Bytes) -> (StatusCode, String) {
    send_on(&mut connect(proxy).await, method, body).await
}

/// One HTTP/1.1 client connection to the proxy: requests on it follow each
/// other, so each finds the endpoint connection the one before parked.
async fn connect(proxy: SocketAddr) -> http1::SendRequest<common::TestBody> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

async fn send_on(
    client: &mut http1::SendRequest<common::TestBody>,
    method: &str,
    body: Bytes,
) -> (StatusCode, String) {
    let request = Request::builder().method(method).uri("/").header("host", "a").body(full(body)).unwrap();
    client.ready().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), client.send_request(request))
        .await
        .expect("the proxy answers in time")
        .expect("the proxy answers");
    let status = answer.status();
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_to_a_tls_endpoint_is_verified_pooled_and_carries_bodies() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(pki.server_config(false, &[b"http/1.1"])).await;
    let text = config(&[backend.addr], &format!("tls = {{ ca_file = \"{}\" }}", pki.ca.display()));
    let proxy = start(pki.dir(), &text).await;
    let mut client = connect(proxy.listen_addresses()[0]).await;
    for _ in 0..5 {
        assert_eq!(
            send_on(&mut client, "GET", Bytes::new()).await,
            (StatusCode::OK, "HTTP/1.1 0".to_string())
        );
    }
    let upload = Bytes::from(vec![b'x'; 1 << 20]);
    assert_eq!(send_on(&mut client, "POST", upload).await, (StatusCode::OK, format!("HTTP/1.1 {}", 1 << 20)));
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1, "one pooled TLS connection carried all");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_h2_speaks_http2_over_tls_to_the_server_name() {
    let pki = TestPki::new(&["backend.test"]);
    let backend = tls_backend(pki.server_config(false, &[b"h2"])).await;
    let tls = format!(
        "protocol = \"h2\"\ntls = {{ ca_file = \"{}\", server_name = \"backend.test\" }}",
        pki.ca.display()
    );
    let proxy = start(pki.dir(), &config(&[backend.addr], &tls)).await;
    let address = proxy.listen_addresses()[0];
    for _ in 0..3 {
        assert_eq!(
            send(address, "POST", Bytes::from_static(b"abc")).await,
            (StatusCode::OK, "HTTP/2.0 3".into())
        );
    }
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1, "one multiplexed connection");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_shows_the_client_certificate_and_a_missing_one_is_a_502() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(pki.server_config(true, &[b"http/1.1"])).await;
    let (ca, cert, key) = (pki.ca.display(), pki.client_cert.display(), pki.client_key.display());
    let with = config(
        &[backend.addr],
        &format!("tls = {{ ca_file = \"{ca}\", client_cert = \"{cert}\", client_key = \"{key}\" }}"),
    );
    let proxy = start(pki.dir(), &with).await;
    assert_eq!(send(proxy.listen_addresses()[0], "GET", Bytes::new()).await.0, StatusCode::OK);
    proxy.shutdown().await;

    let without = config(&[backend.addr], &format!("tls = {{ ca_file = \"{ca}\" }}\nretry.attempts = 1"));
    let proxy = start(pki.dir(), &without).await;
    assert_eq!(send(proxy.listen_addresses()[0], "GET", Bytes::new()).await.0, StatusCode::BAD_GATEWAY);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_unknown_endpoint_certificate_is_a_502_and_nothing_else_breaks() {
    let expired = TestPki::expired(&["127.0.0.1"]);
    let stale = tls_backend(expired.server_config(false, &[])).await;
    let trusted = TestPki::new(&["127.0.0.1"]);
    let good = tls_backend(trusted.server_config(false, &[])).await;
    let stranger = tls_backend(TestPki::new(&["127.0.0.1"]).server_config(false, &[])).await;

    let text = config(&[stale.addr], &format!("tls = {{ ca_file = \"{}\" }}", expired.ca.display()));
    let proxy = start(expired.dir(), &text).await;
    assert_eq!(send(proxy.listen_addresses()[0], "GET", Bytes::new()).await.0, StatusCode::BAD_GATEWAY);
    proxy.shutdown().await;

    // One trusted endpoint beside one from another CA: retries land on the trusted one.
    let text =
        config(&[stranger.addr, good.addr], &format!("tls = {{ ca_file = \"{}\" }}", trusted.ca.display()));
    let proxy = start(trusted.dir(), &text).await;
    for _ in 0..6 {
        assert_eq!(send(proxy.listen_addresses()[0], "GET", Bytes::new()).await.0, StatusCode::OK);
    }
    assert_eq!(stranger.connections.load(Ordering::SeqCst), 0, "no handshake with the stranger completed");
    proxy.shutdown().await;
}

/// An upstream of `protocol` over TLS with active checks, over one trusted
/// endpoint and one whose certificate comes from another CA.
async fn checked_over_tls(
    protocol: &str,
    alpn: &[&[u8]],
) -> (lb_proxy::RunningProxy, TlsBackend, TlsBackend) {
    let pki = TestPki::new(&["127.0.0.1"]);
    let good = tls_backend(pki.server_config(false, alpn)).await;
    let stranger = tls_backend(TestPki::new(&["127.0.0.1"]).server_config(false, alpn)).await;
    let extra = format!(
        "protocol = \"{protocol}\"\ntls = {{ ca_file = \"{}\" }}\n[upstreams.web.health_check]\npath = \"/\"\n\
         interval = \"50ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1",
        pki.ca.display()
    );
    let proxy = start(pki.dir(), &config(&[good.addr, stranger.addr], &extra)).await;
    (proxy, good, stranger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_an_h2_upstream_speak_http2_over_its_tls() {
    let (proxy, good, stranger) = checked_over_tls("h2", &[b"h2"]).await;
    let status_of = |addr: SocketAddr| {
        proxy.endpoint_status("web").into_iter().find(|(a, _)| *a == addr.to_string()).map(|(_, s)| s)
    };
    let checked = || good.http2_requests.load(Ordering::SeqCst) > 0;
    assert!(
        eventually(|| checked() && status_of(stranger.addr) == Some(HealthStatus::Unhealthy)).await,
        "HTTP/2 checks reach the trusted endpoint over TLS; the stranger's handshake fails"
    );
    assert_eq!(status_of(good.addr), Some(HealthStatus::Healthy));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_use_the_upstreams_tls() {
    let (proxy, good, stranger) = checked_over_tls("http1", &[]).await;
    let status_of = |addr: SocketAddr| {
        proxy.endpoint_status("web").into_iter().find(|(a, _)| *a == addr.to_string()).map(|(_, s)| s)
    };
    let checked = || good.connections.load(Ordering::SeqCst) > 0;
    assert!(
        eventually(|| checked() && status_of(stranger.addr) == Some(HealthStatus::Unhealthy)).await,
        "the trusted endpoint is checked over TLS; the handshake with the stranger fails, so does its check"
    );
    assert_eq!(status_of(good.addr), Some(HealthStatus::Healthy), "and passed");
    assert_eq!(good.http2_requests.load(Ordering::SeqCst), 0, "an http1 upstream is checked over HTTP/1.1");
    proxy.shutdown().await;
}

/// A TLS endpoint that answers 413 as soon as a request head arrives and
/// then reads nothing more, as a server refusing a large upload does.
async fn refusing_backend(pki: &TestPki) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config(false, &[]));
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(stream).await.unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the head came");
            head.extend_from_slice(&chunk[..n]);
        }
        tls.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large").await.unwrap();
        tls.flush().await.unwrap();
        // Holds the connection, reading nothing, until the test ends.
        std::future::pending::<()>().await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_over_tls_reaches_the_client_while_the_body_is_still_going() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let (backend, task) = refusing_backend(&pki).await;
    let text =
        config(&[backend], &format!("tls = {{ ca_file = \"{}\" }}\nretry.attempts = 1", pki.ca.display()));
    let proxy = start(pki.dir(), &text).await;
    const BODY: usize = 32 * 1024 * 1024;
    let client = TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    let upload = tokio::spawn(async move {
        let head = format!("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: {BODY}\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..BODY / piece.len() {
            writer.write_all(&piece).await?;
        }
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        for _ in 0..1000 {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
            if answer.ends_with(b"too large") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("the early answer came through");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(text.ends_with("too large"), "{text}");
    upload.abort();
    task.abort();
    proxy.shutdown().await;
}

#[tokio::test]
async fn bad_tls_settings_are_refused_where_they_are_written_and_a_reload_keeps_the_running_ones() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let backend = tls_backend(pki.server_config(false, &[])).await;
    let load = |text: &str| {
        let path = pki.dir().join("check.toml");
        std::fs::write(&path, text).unwrap();
        lb_proxy::Config::load(&path).map(|_| ()).unwrap_err().to_string()
    };
    let missing = load(&config(&[backend.addr], "tls = { ca_file = \"nowhere.pem\" }"));
    assert!(missing.contains(":11:7: "), "{missing}");
    assert!(missing.contains("nowhere.pem: "), "{missing}");
    let h2_plain = load(&config(&[backend.addr], "protocol = \"h2\""));
    assert!(h2_plain.contains("protocol = \"h2\" is HTTP/2 over TLS"), "{h2_plain}");
    let h2c_tls = load(&config(
        &[backend.addr],
        &format!("protocol = \"h2c\"\ntls = {{ ca_file = \"{}\" }}", pki.ca.display()),
    ));
    assert!(h2c_tls.contains("over tls write protocol = \"h2\""), "{h2c_tls}");

    let good = config(&[backend.addr], &format!("tls = {{ ca_file = \"{}\" }}", pki.ca.display()));
    let mut proxy = start(pki.dir(), &good).await;
    let address = proxy.listen_addresses()[0];
    // Parsed but not loaded, so the missing file reaches the reload itself.
    let broken = good.replace(&pki.ca.display().to_string(), "/nowhere/ca.pem");
    let refused = proxy.reload(lb_proxy::Config::parse(&broken, "lb.toml").unwrap()).await.unwrap_err();
    assert!(refused.to_string().contains("/nowhere/ca.pem"), "{refused}");
    assert_eq!(send(address, "GET", Bytes::new()).await.0, StatusCode::OK, "the running TLS stays");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_endpoints_ca_file_again() {
    let (old, new) = (TestPki::new(&["127.0.0.1"]), TestPki::new(&["127.0.0.1"]));
    let backend = tls_backend(new.server_config(false, &[])).await;
    let ca = old.dir().join("endpoints-ca.pem");
    std::fs::copy(&old.ca, &ca).unwrap();
    let text =
        config(&[backend.addr], &format!("tls = {{ ca_file = \"{}\" }}\nretry.attempts = 1", ca.display()));
    let mut proxy = start(old.dir(), &text).await;
    let address = proxy.listen_addresses()[0];
    assert_eq!(
        send(address, "GET", Bytes::new()).await.0,
        StatusCode::BAD_GATEWAY,
        "the old CA does not know it"
    );

    // The file is renewed in place; the configuration text is the same, so the upstream is carried over.
    std::fs::copy(&new.ca, &ca).unwrap();
    let same = lb_proxy::Config::load(old.dir().join("lb.toml")).unwrap();
    proxy.reload(same).await.unwrap();
    assert_eq!(
        send(address, "GET", Bytes::new()).await.0,
        StatusCode::OK,
        "new connections trust the renewed CA"
    );
    proxy.shutdown().await;
}
