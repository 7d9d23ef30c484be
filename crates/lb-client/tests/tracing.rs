//! OpenTelemetry in the client: one CLIENT span per call with the proxy's
//! attribute names, retries as events, the span's `traceparent` on every
//! attempt; and a call through lb-proxy to a backend is one trace. Spans are
//! exported over OTLP/HTTP to lb-proxy's test receiver.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_algorithms::Algorithm;
use lb_client::Pool;
use lb_proxy::testing::{OtlpReceiver, Span, SpanKind, any_value, attribute};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use support::{endpoint, refused_address};
use tokio::sync::mpsc;

/// A provider that exports to `receiver` in batches from its own thread.
fn provider(receiver: &OtlpReceiver) -> SdkTracerProvider {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(receiver.endpoint())
        .build()
        .expect("an OTLP exporter");
    SdkTracerProvider::builder().with_batch_exporter(exporter).build()
}

/// Sends what the provider holds now (off the runtime's threads: the flush blocks).
async fn flush(provider: &SdkTracerProvider) {
    let provider = provider.clone();
    tokio::task::spawn_blocking(move || provider.force_flush()).await.unwrap().expect("flushed");
}

/// A backend answering 200 that reports the `traceparent` of each request.
async fn traceparent_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Option<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (seen, traceparents) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let value = req.headers().get("traceparent").map(|v| v.to_str().unwrap().to_string());
                let _ = seen.send(value);
                async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok")))) }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, traceparents)
}

fn text(value: &str) -> Option<any_value::Value> {
    Some(any_value::Value::StringValue(value.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `traceparent` a span's children carry.
fn traceparent_of(span: &Span) -> String {
    format!("00-{}-{}-01", hex(&span.trace_id), hex(&span.span_id))
}

#[tokio::test]
async fn a_call_is_a_client_span_whose_retries_are_events_and_whose_attempts_carry_it() {
    let mut receiver = OtlpReceiver::start().await.unwrap();
    let provider = provider(&receiver);
    let (live, mut traceparents) = traceparent_backend().await;
    let pool = Pool::builder("users", Algorithm::RoundRobin)
        .endpoints([endpoint(refused_address()), endpoint(live)])
        .tracer(BoxedTracer::new(Box::new(provider.tracer("lb-client-test"))))
        .build()
        .unwrap();
    // Round robin over a dead endpoint and a live one: at least one of two
    // calls tries the dead one first and goes again.
    for _ in 0..2 {
        let response = pool.get("http://users/v1/me").send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    flush(&provider).await;
    let spans = receiver.spans(2).await.spans;
    assert_eq!(spans.len(), 2);
    let mut retried = 0;
    for span in &spans {
        assert_eq!(span.name, "GET");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(attribute(&span.attributes, "lb.upstream").cloned(), text("users"));
        assert_eq!(attribute(&span.attributes, "backend").cloned(), text(&live.to_string()));
        assert_eq!(
            attribute(&span.attributes, "http.response.status_code").cloned(),
            Some(any_value::Value::IntValue(200))
        );
        for event in &span.events {
            assert_eq!(event.name, "retry");
            assert_eq!(attribute(&event.attributes, "lb.try").cloned(), Some(any_value::Value::IntValue(1)));
            assert_eq!(attribute(&event.attributes, "error.type").cloned(), text("connect"));
            retried += 1;
        }
    }
    assert!(retried >= 1, "a call that met the dead endpoint records its retry");
    let mut carried = vec![traceparents.recv().await.unwrap(), traceparents.recv().await.unwrap()];
    let mut expected: Vec<Option<String>> = spans.iter().map(|s| Some(traceparent_of(s))).collect();
    carried.sort();
    expected.sort();
    assert_eq!(carried, expected, "each call's attempt carried its own span as the parent");
    provider.shutdown().unwrap();
}

#[tokio::test]
async fn a_grpc_call_is_a_client_span_named_after_its_method_and_its_attempts_carry_it() {
    use support::grpc::GrpcBackend;
    use support::grpc::echo::SayRequest;
    use support::grpc::echo::echo_client::EchoClient;

    let mut receiver = OtlpReceiver::start().await.unwrap();
    let provider = provider(&receiver);
    let server = GrpcBackend::start("a").await;
    let channel = lb_client::grpc::BalancedChannel::round_robin("echo")
        .endpoints([endpoint(refused_address()), endpoint(server.addr)])
        .tracer(BoxedTracer::new(Box::new(provider.tracer("lb-client-test"))))
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel);
    for _ in 0..2 {
        let reply = client.say(SayRequest { text: "hi".into() }).await.unwrap();
        assert_eq!(reply.into_inner().server, "a");
    }
    flush(&provider).await;
    let spans = receiver.spans(2).await.spans;
    assert!(
        spans.iter().all(|s| s.name == "echo.Echo/Say" && s.kind == SpanKind::Client as i32),
        "{spans:?}"
    );
    let retries: usize = spans.iter().map(|s| s.events.iter().filter(|e| e.name == "retry").count()).sum();
    assert!(retries >= 1, "a call that could not connect went again, and says so");
    let mut carried = server.traceparents();
    let mut expected: Vec<Option<String>> = spans.iter().map(|s| Some(traceparent_of(s))).collect();
    carried.sort();
    expected.sort();
    assert_eq!(carried, expected);
    provider.shutdown().unwrap();
}

#[tokio::test]
async fn a_call_through_lb_proxy_to_a_backend_is_one_trace() {
    let mut receiver = OtlpReceiver::start().await.unwrap();
    let provider = provider(&receiver);
    let (backend, mut traceparents) = traceparent_backend().await;
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"

[[routes]]
upstream = "web"

[upstreams.web]
discovery.static.endpoints = [{{ address = "{backend}" }}]

[tracing]
otlp_endpoint = "{}"
service_name = "lb-proxy"
"#,
        receiver.endpoint()
    );
    let config = lb_proxy::Config::parse(&config, "trace.toml").unwrap();
    let proxy = lb_proxy::Proxy::new(config).start().await.unwrap();
    let pool = Pool::builder("web", Algorithm::RoundRobin)
        .endpoints([endpoint(proxy.listen_addresses()[0])])
        .tracer(BoxedTracer::new(Box::new(provider.tracer("lb-client-test"))))
        .build()
        .unwrap();

    let response = pool.get("http://web/orders").send().await.unwrap();
    assert_eq!(response.status(), 200);
    flush(&provider).await;
    // The proxy flushes its spans when it stops.
    tokio::time::timeout(Duration::from_secs(20), proxy.shutdown()).await.expect("a bounded stop");

    let spans = receiver.spans(2).await.spans;
    let client = spans.iter().find(|s| s.kind == SpanKind::Client as i32).expect("the client's span");
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).expect("the proxy's span");
    assert_eq!(server.name, "handle-request");
    assert_eq!(hex(&server.trace_id), hex(&client.trace_id), "one trace");
    assert_eq!(server.parent_span_id, client.span_id, "the proxy's span is the client span's child");
    let at_backend = traceparents.recv().await.unwrap().expect("the backend got a traceparent");
    assert_eq!(at_backend, traceparent_of(server), "the backend's parent is the proxy's span");
    provider.shutdown().unwrap();
}
