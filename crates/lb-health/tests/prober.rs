//! The HTTP prober against real hyper servers on loopback.
#![cfg(feature = "tokio")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use lb_core::{Address, Endpoint, EndpointSet, HealthFlag, HealthStatus, Timestamp};
use lb_health::prober::Prober;
use lb_health::{ActiveCheckConfig, CheckResult, Classification, InitialState, RiseFall, Transition};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A server answering every request with the status in `status` and a body naming it.
async fn flipping_server(status: Arc<AtomicU16>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let status = Arc::clone(&status);
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let code = status.load(Ordering::SeqCst);
                    let body = if code == 200 { "status: up" } else { "status: down" };
                    let response = Response::builder()
                        .status(StatusCode::from_u16(code).unwrap())
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, handle)
}

fn config() -> ActiveCheckConfig {
    ActiveCheckConfig {
        interval: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        timeout: Duration::from_secs(2),
        path: "/healthz".into(),
        ..ActiveCheckConfig::default()
    }
}

#[tokio::test]
async fn rise_and_fall_follow_a_flipping_server_step_by_step() {
    let status = Arc::new(AtomicU16::new(200));
    let (addr, server) = flipping_server(Arc::clone(&status)).await;
    let prober = Prober::new(config()).unwrap();
    assert_eq!(prober.config().path, "/healthz", "the prober keeps the config it was given");
    let state = lb_core::EndpointState::new(Timestamp::ZERO);
    let mut rf = RiseFall::new(prober.config());
    let address = Address::from(addr);

    assert_eq!(prober.check(&address).await, CheckResult::Passing);
    status.store(503, Ordering::SeqCst);
    let mut transitions = Vec::new();
    for _ in 0..3 {
        transitions.push(rf.record(prober.check(&address).await, &state));
    }
    assert_eq!(transitions, [None, None, Some(Transition::Down)], "fall 3");
    assert_eq!(state.status(), HealthStatus::Unhealthy);
    status.store(200, Ordering::SeqCst);
    let mut transitions = Vec::new();
    for _ in 0..2 {
        transitions.push(rf.record(prober.check(&address).await, &state));
    }
    assert_eq!(transitions, [None, Some(Transition::Up)], "rise 2");
    assert!(state.is_eligible());
    server.abort();
}

#[tokio::test]
async fn body_text_consul_warnings_timeouts_and_refusals() {
    let status = Arc::new(AtomicU16::new(200));
    let (addr, server) = flipping_server(Arc::clone(&status)).await;
    let address = Address::from(addr);
    let wants_up = Prober::new(ActiveCheckConfig { expected_body: Some("up".into()), ..config() }).unwrap();
    assert_eq!(wants_up.check(&address).await, CheckResult::Passing);
    let wants_green =
        Prober::new(ActiveCheckConfig { expected_body: Some("green".into()), ..config() }).unwrap();
    assert_eq!(wants_green.check(&address).await, CheckResult::Critical);

    let consul =
        Prober::new(ActiveCheckConfig { classification: Classification::Consul, ..config() }).unwrap();
    status.store(429, Ordering::SeqCst);
    assert_eq!(consul.check(&address).await, CheckResult::Warning);
    server.abort();

    // A listener that accepts and never answers: the timeout decides.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = Address::from(silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let impatient =
        Prober::new(ActiveCheckConfig { timeout: Duration::from_millis(100), ..config() }).unwrap();
    assert_eq!(impatient.check(&silent_addr).await, CheckResult::Critical);
    hold.abort();

    // A port that refuses connections.
    let closed = refused_address();
    assert_eq!(impatient.check(&Address::from(closed)).await, CheckResult::Critical);
}

/// A server answering every request 200 with `body`.
async fn body_server(body: Bytes) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let response = Response::new(Full::new(body.clone()));
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, handle)
}

#[tokio::test]
async fn a_check_names_the_endpoint_as_its_host() {
    // The server answers 200 only to requests whose Host is its own address.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let host = request.headers().get(hyper::header::HOST).cloned();
                    let ours = host.is_some_and(|h| h.as_bytes() == addr.to_string().as_bytes());
                    let status = if ours { StatusCode::OK } else { StatusCode::MISDIRECTED_REQUEST };
                    let response = Response::builder().status(status).body(Full::new(Bytes::new())).unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    let prober = Prober::new(config()).unwrap();
    assert_eq!(prober.check(&Address::from(addr)).await, CheckResult::Passing);
    server.abort();
}

#[tokio::test]
async fn the_expected_text_is_looked_for_in_up_to_64_kib_of_body() {
    let wants_up = Prober::new(ActiveCheckConfig { expected_body: Some("up".into()), ..config() }).unwrap();
    let with_text_last = |len: usize| {
        let mut body = vec![b'.'; len - 2];
        body.extend_from_slice(b"up");
        Bytes::from(body)
    };
    let (fits, fits_server) = body_server(with_text_last(64 * 1024)).await;
    assert_eq!(wants_up.check(&Address::from(fits)).await, CheckResult::Passing, "64 KiB is read whole");
    let (too_long, too_long_server) = body_server(with_text_last(64 * 1024 + 1)).await;
    assert_eq!(
        wants_up.check(&Address::from(too_long)).await,
        CheckResult::Critical,
        "one byte more is refused"
    );
    fits_server.abort();
    too_long_server.abort();
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let bad = ActiveCheckConfig { method: "GE T".into(), ..config() };
    assert!(Prober::new(bad).unwrap_err().to_string().contains("not an HTTP method"));
    assert!(Prober::new(ActiveCheckConfig { rise: 0, ..config() }).is_err());
}

/// A loopback port that refuses connections: bound, never listening, and
/// kept bound for the test process's life so no other test's server is given it.
fn refused_address() -> std::net::SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

/// Polls `done` every 10 ms for at most 5 s.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn spawned_probes_drive_the_flags_and_follow_the_set() {
    let status = Arc::new(AtomicU16::new(200));
    let (addr, server) = flipping_server(Arc::clone(&status)).await;
    let dead = refused_address();
    let set = EndpointSet::new([Endpoint::new(addr), Endpoint::new(dead)], Timestamp::ZERO);
    let prober = Prober::new(ActiveCheckConfig { initial: InitialState::Unhealthy, ..config() }).unwrap();
    let mut probes = prober.watch(&set);
    assert_eq!(probes.len(), 2);
    assert_eq!(probes.timeout(), config().timeout);
    let live = set.get(set.index_of(Endpoint::new(addr).id()).unwrap()).unwrap().state().clone();
    let gone = set.get(set.index_of(Endpoint::new(dead).id()).unwrap()).unwrap().state().clone();

    assert!(!live.is_eligible() && !gone.is_eligible(), "both start down");
    assert!(eventually(|| live.is_eligible()).await, "rose after 2 passes");
    assert!(gone.has_flag(HealthFlag::ActiveCheckFailed), "never rose");
    status.store(500, Ordering::SeqCst);
    assert!(eventually(|| !live.is_eligible()).await, "fell after 3 failures");
    status.store(200, Ordering::SeqCst);
    assert!(eventually(|| live.is_eligible()).await, "rose again");

    let only_live = set.replaced([Endpoint::new(addr)], Timestamp::ZERO);
    probes.update(&only_live);
    assert_eq!(probes.len(), 1);
    assert!(!probes.is_empty());
    probes.update(&set.replaced(std::iter::empty::<Endpoint>(), Timestamp::ZERO));
    assert!(probes.is_empty(), "nothing left to check");
    drop(probes);
    server.abort();
}

/// How the gRPC health server answers.
#[derive(Clone, Copy)]
enum GrpcAnswer {
    /// `SERVING`, the call ending with `grpc-status: 0`.
    Serving,
    /// `SERVING` in the body, but the call failing (`grpc-status: 14`).
    ServingThenUnavailable,
    /// `NOT_SERVING`, the call ending well.
    NotServing,
    /// Trailers-only: `grpc-status: 5` (no such service) in the headers.
    NotFound,
}

/// An h2c server answering `grpc.health.v1.Health/Check` as `answer` says.
async fn grpc_health_server(answer: GrpcAnswer) -> (SocketAddr, JoinHandle<()>) {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| async move {
                    // A real gRPC server routes by scheme and path: anything else is not the check.
                    let uri = request.uri();
                    if uri.scheme_str() != Some("http") || uri.path() != "/grpc.health.v1.Health/Check" {
                        let response = Response::builder().status(404).body(Full::default().boxed()).unwrap();
                        return Ok::<_, Infallible>(response);
                    }
                    let (status, grpc_status) = match answer {
                        GrpcAnswer::Serving => (1, "0"),
                        GrpcAnswer::ServingThenUnavailable => (1, "14"),
                        GrpcAnswer::NotServing => (2, "0"),
                        GrpcAnswer::NotFound => {
                            let response = Response::builder()
                                .header("content-type", "application/grpc")
                                .header("grpc-status", "5")
                                .body(Full::default().with_trailers(async { None }).boxed())
                                .unwrap();
                            return Ok::<_, Infallible>(response);
                        }
                    };
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", grpc_status.parse().unwrap());
                    let frame = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
                    let body = Full::new(frame).with_trailers(async move { Some(Ok(trailers)) }).boxed();
                    Ok(Response::builder().header("content-type", "application/grpc").body(body).unwrap())
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, handle)
}

#[tokio::test]
async fn a_grpc_check_passes_only_on_serving_with_a_clean_status() {
    let prober = Prober::new(ActiveCheckConfig { grpc_service: Some(String::new()), ..config() }).unwrap();
    let cases = [
        (GrpcAnswer::Serving, CheckResult::Passing),
        (GrpcAnswer::ServingThenUnavailable, CheckResult::Critical),
        (GrpcAnswer::NotServing, CheckResult::Critical),
        (GrpcAnswer::NotFound, CheckResult::Critical),
    ];
    for (answer, expected) in cases {
        let (addr, server) = grpc_health_server(answer).await;
        assert_eq!(prober.check(&Address::from(addr)).await, expected);
        server.abort();
    }
}
