//! The pool over HTTPS endpoints (a rustls server on loopback, certificates
//! generated at test time): verified against a CA file under a server name,
//! HTTP/2 agreed by ALPN, a client certificate for endpoints that require
//! one, and a bad file named before any request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_algorithms::Algorithm;
use lb_client::{Error, Pool};
use lb_core::Endpoint;
use lb_tls::ClientTls;
use lb_tls::testing::TestPki;
use tokio::net::TcpListener;

/// An HTTPS server on 127.0.0.1 answering `version` for every request;
/// stops with the test's runtime.
async fn https_server(tls: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!(
                        "{:?}",
                        req.version()
                    )))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

fn pool(address: SocketAddr, tls: ClientTls) -> Result<Pool<Algorithm>, Error> {
    Pool::builder("web", Algorithm::RoundRobin)
        .endpoints([Endpoint::new(address)])
        .max_attempts(1)
        .tls(tls)
        .build()
}

#[tokio::test]
async fn the_pool_verifies_https_endpoints_under_the_server_name_and_speaks_h2() {
    let pki = TestPki::new(&["web.test"]);
    let address = https_server(pki.server_config(false, &[b"h2", b"http/1.1"])).await;
    let tls = ClientTls {
        ca_file: Some(pki.ca.clone()),
        server_name: Some("web.test".into()),
        ..ClientTls::default()
    };
    let response = pool(address, tls.clone()).unwrap().get("/").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "HTTP/2.0", "ALPN agreed h2");

    // The endpoint is an IP address its certificate does not name.
    let unnamed = ClientTls { server_name: None, ..tls };
    assert!(pool(address, unnamed).unwrap().get("/").send().await.is_err());
    // Nor do the system's roots know a CA made a moment ago.
    assert!(pool(address, ClientTls::default()).unwrap().get("/").send().await.is_err());
}

#[tokio::test]
async fn an_endpoint_that_requires_a_client_certificate_gets_the_pools() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let address = https_server(pki.server_config(true, &[b"http/1.1"])).await;
    let trusting = ClientTls { ca_file: Some(pki.ca.clone()), ..ClientTls::default() };
    assert!(pool(address, trusting.clone()).unwrap().get("/").send().await.is_err(), "no client certificate");

    let mutual = ClientTls {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        ..trusting
    };
    let response = pool(address, mutual).unwrap().get("/").send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "HTTP/1.1");
}

#[tokio::test]
async fn a_tls_file_that_cannot_be_used_fails_the_build_and_is_named() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let half = ClientTls { client_cert: Some(pki.client_cert.clone()), ..ClientTls::default() };
    let err = pool("127.0.0.1:9".parse().unwrap(), half).unwrap_err();
    assert_eq!(
        err.to_string(),
        "TLS settings: client_cert and client_key go together: client_cert is set alone"
    );
    let missing = ClientTls { ca_file: Some(pki.dir().join("nope.pem")), ..ClientTls::default() };
    let err = pool("127.0.0.1:9".parse().unwrap(), missing).unwrap_err();
    assert!(matches!(err, Error::Tls(_)) && err.to_string().contains("nope.pem"), "{err}");
}

#[tokio::test]
async fn active_checks_of_an_https_pool_go_over_its_tls() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let (seen, mut agents) = tokio::sync::mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config(false, &[b"http/1.1"]));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let agent = req.headers().get("user-agent").map(|v| v.to_str().unwrap_or("").to_string());
                    let _ = seen.send(agent.unwrap_or_default());
                    async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok")))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let check = lb_health::ActiveCheckConfig {
        interval: std::time::Duration::from_millis(20),
        jitter: std::time::Duration::ZERO,
        rise: 1,
        fall: 1,
        initial: lb_health::InitialState::Unhealthy,
        ..lb_health::ActiveCheckConfig::default()
    };
    let pool = Pool::builder("web", Algorithm::RoundRobin)
        .endpoints([Endpoint::new(address)])
        .tls(ClientTls { ca_file: Some(pki.ca.clone()), ..ClientTls::default() })
        .resilience(lb_client::ResilienceConfig { active_check: Some(check), ..Default::default() })
        .build()
        .unwrap();
    let agent = tokio::time::timeout(std::time::Duration::from_secs(5), agents.recv()).await;
    assert_eq!(agent.ok().flatten().as_deref(), Some("lb-health"), "a check arrived over TLS");
    // Its passing check brings the endpoint in.
    let mut eligible = false;
    for _ in 0..250 {
        eligible = pool.endpoints().iter().all(|(_, h)| h.is_eligible());
        if eligible {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(eligible, "the endpoint passed its checks");
}

/// A gRPC health server over TLS (rustls under hyper's HTTP/2 server):
/// what the balanced channel's TLS test calls.
async fn grpc_over_tls(tls: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("echo.Echo", tonic_health::ServingStatus::Serving).await;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let _reporter = reporter; // Statuses live as long as the server.
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, health) = (acceptor.clone(), health.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let mut health = health.clone();
                    tower::Service::call(&mut health, req.map(tonic::body::Body::new))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

#[tokio::test]
async fn the_balanced_channel_calls_grpc_endpoints_over_tls() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let pki = TestPki::new(&["grpc.test"]);
    let strict = pki.server_config(true, &[b"h2"]);
    let endpoints = [grpc_over_tls(Arc::clone(&strict)).await, grpc_over_tls(strict).await];
    let tls = ClientTls {
        ca_file: Some(pki.ca.clone()),
        server_name: Some("grpc.test".into()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        ..ClientTls::default()
    };
    let channel = lb_client::grpc::BalancedChannel::round_robin("echo")
        .endpoints(endpoints.map(Endpoint::new))
        .tls(tls.clone())
        .build()
        .unwrap();
    let mut client = HealthClient::new(channel);
    for _ in 0..4 {
        let answer = client.check(HealthCheckRequest { service: "echo.Echo".into() }).await.unwrap();
        assert_eq!(answer.into_inner().status, 1, "SERVING");
    }

    // Without the client certificate the endpoints refuse the handshake.
    let anonymous = ClientTls { client_cert: None, client_key: None, ..tls };
    let channel = lb_client::grpc::BalancedChannel::round_robin("echo")
        .endpoints(endpoints.map(Endpoint::new))
        .tls(anonymous)
        .build()
        .unwrap();
    let refused = HealthClient::new(channel).check(HealthCheckRequest { service: "echo.Echo".into() }).await;
    assert!(refused.is_err(), "{refused:?}");
}
