//! HTTP/2 in cleartext to the endpoints (`protocol = "h2c"`), as gRPC needs:
//! an HTTP/2 client's calls go out as streams on one connection per
//! endpoint, with `te: trailers` passed on and the response trailers
//! (`grpc-status`) brought back.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Backend, TestBody, config, eventually, proxy};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_core::HealthStatus;

/// What an endpoint saw of each call: the HTTP version and the `te` header.
type Seen = Arc<Mutex<Vec<(Version, Option<HeaderValue>)>>>;

/// A gRPC-shaped endpoint: answers its `name` and the trailer `grpc-status: 0`.
async fn grpc_like(name: &'static str) -> (Backend, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let backend = Backend::start(move |req: http::Request<hyper::body::Incoming>| {
        log.lock().unwrap().push((req.version(), req.headers().get("te").cloned()));
        async move {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames = [Ok(Frame::data(Bytes::from(name))), Ok(Frame::trailers(trailers))];
            let body: TestBody = StreamBody::new(futures_util::stream::iter(frames)).boxed();
            let mut response = Response::new(body);
            response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
            response
        }
    })
    .await;
    (backend, seen)
}

#[tokio::test]
async fn grpc_shaped_calls_reach_h2c_endpoints_as_streams_with_their_trailers() {
    let (a, seen_a) = grpc_like("a").await;
    let (b, seen_b) = grpc_like("b").await;
    let proxy = proxy(&config("round_robin", &[(a.addr, 1), (b.addr, 1)], "protocol = \"h2c\"")).await;
    let address = proxy.listen_addresses()[0];
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut client, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);

    let mut answers = Vec::new();
    for _ in 0..4 {
        let call = Request::post(format!("http://{address}/greet.Greeter/SayHello"))
            .version(Version::HTTP_2)
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let response = client.send_request(call).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        let collected = response.into_body().collect().await.expect("the whole body");
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        answers.push(String::from_utf8(collected.to_bytes().to_vec()).unwrap());
    }
    answers.sort();
    assert_eq!(answers, ["a", "a", "b", "b"], "round robin over both endpoints");
    for seen in [&seen_a, &seen_b] {
        for (version, te) in seen.lock().unwrap().iter() {
            assert_eq!(*version, Version::HTTP_2);
            assert_eq!(te.as_ref().map(HeaderValue::as_bytes), Some(&b"trailers"[..]));
        }
    }
    for backend in [&a, &b] {
        assert_eq!(backend.connections.load(Ordering::SeqCst), 1, "one shared connection");
    }
    proxy.shutdown().await;
    a.kill().await;
    b.kill().await;
}

/// An endpoint that speaks only HTTP/2, as gRPC servers do; `/health` fails while `healthy` is false.
async fn h2_only(healthy: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let healthy = Arc::clone(&healthy);
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let failing = req.uri().path() == "/health" && !healthy.load(Ordering::SeqCst);
                let status = if failing { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
                let mut response = Response::new(Full::new(Bytes::from_static(b"h2")));
                *response.status_mut() = status;
                async move { Ok::<_, Infallible>(response) }
            });
            let serving = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::spawn(serving);
        }
    });
    address
}

#[tokio::test]
async fn active_checks_of_an_h2c_upstream_speak_http2() {
    let healthy = Arc::new(AtomicBool::new(true));
    let endpoint = h2_only(Arc::clone(&healthy)).await;
    let extra = "protocol = \"h2c\"\n[upstreams.web.health_check]\npath = \"/health\"\ninterval = \"50ms\"\n\
                 timeout = \"500ms\"\nrise = 2\nfall = 2";
    let proxy = proxy(&config("round_robin", &[(endpoint, 1)], extra)).await;
    let status = || proxy.endpoint_status("web").first().map(|(_, s)| *s);
    healthy.store(false, Ordering::SeqCst);
    assert!(eventually(|| status() == Some(HealthStatus::Unhealthy)).await, "failing checks take it out");
    healthy.store(true, Ordering::SeqCst);
    assert!(
        eventually(|| status() == Some(HealthStatus::Healthy)).await,
        "HTTP/2 checks that pass bring it back"
    );
    proxy.shutdown().await;
}

#[test]
fn an_unknown_protocol_is_refused_where_it_is_written() {
    let text = config("round_robin", &[("127.0.0.1:1".parse().unwrap(), 1)], "protocol = \"h3\"");
    let error = lb_proxy::Config::parse(&text, "p.toml").unwrap_err().to_string();
    assert!(error.contains("unknown variant `h3`, expected one of `http1`, `h2c`, `h2`"), "{error}");
    assert!(error.starts_with("p.toml:14:12:"), "{error}");
}

/// An HTTP/2 client connection with no request for `client_idle_timeout` gets
/// a GOAWAY and is closed, as HTTP/1 keep-alive connections are.
#[tokio::test(start_paused = true)]
async fn an_idle_http2_client_connection_is_closed() {
    let backend = Backend::named("a").await;
    let text = format!(
        "[global]\nclient_idle_timeout = \"5s\"\n{}",
        config("round_robin", &[(backend.addr, 1)], "")
    );
    let proxy = proxy(&text).await;
    let stream = tokio::net::TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();
    let (mut client, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let call = Request::get(format!("http://{}/", proxy.listen_addresses()[0]))
        .version(Version::HTTP_2)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(client.send_request(call).await.unwrap().status(), StatusCode::OK);
    let started = tokio::time::Instant::now();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), connection).await;
    assert!(ended.is_ok(), "the proxy closed the idle connection");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    proxy.shutdown().await;
    backend.kill().await;
}
