//! OpenTelemetry: a `handle-request` span per request, joined to the caller's
//! W3C trace and passed on to the endpoint, exported over OTLP/HTTP to
//! `lb_proxy::testing`'s receiver (a contract stand-in for a collector).

mod common;

use std::time::Duration;

use common::{Backend, config, full, get, proxy};
use http::{Response, StatusCode};
use lb_proxy::testing::{OtlpReceiver, Span, SpanKind, any_value, attribute};
use tokio::sync::mpsc;

/// A backend that reports the `traceparent` each request carried.
async fn traceparent_backend() -> (Backend, mpsc::UnboundedReceiver<Option<String>>) {
    let (seen, traceparents) = mpsc::unbounded_channel();
    let backend = Backend::start(move |req| {
        let value = req.headers().get("traceparent").map(|v| v.to_str().unwrap().to_string());
        let _ = seen.send(value);
        async { Response::new(full("ok")) }
    })
    .await;
    (backend, traceparents)
}

fn text(value: &str) -> Option<any_value::Value> {
    Some(any_value::Value::StringValue(value.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits (bounded) until `n` spans arrived: the spans and each export's `service.name`.
async fn collect_spans(receiver: &mut OtlpReceiver, n: usize) -> (Vec<Span>, Vec<Option<any_value::Value>>) {
    let received = receiver.spans(n).await;
    (received.spans, received.service_names)
}

fn tracing_section(collector: &OtlpReceiver) -> String {
    format!("[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"lb-proxy-test\"\n", collector.endpoint())
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn each_request_gets_a_server_span_joined_to_the_callers_trace_and_passed_on() {
    let mut collector = OtlpReceiver::start().await.unwrap();
    let (backend, mut traceparents) = traceparent_backend().await;
    let tracing = tracing_section(&collector);
    let proxy = proxy(&format!("{tracing}{}", config("round_robin", &[(backend.addr, 1)], ""))).await;
    let address = proxy.listen_addresses()[0];

    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    assert_eq!(get(address, "/joined", &[("traceparent", &caller)]).await.0, StatusCode::OK);
    assert_eq!(get(address, "/fresh", &[]).await.0, StatusCode::OK);
    let sent: Vec<String> = [traceparents.recv().await, traceparents.recv().await]
        .into_iter()
        .map(|t| t.flatten().expect("the endpoint gets a traceparent"))
        .collect();

    // Stopping exports what is buffered.
    tokio::time::timeout(Duration::from_secs(20), proxy.shutdown()).await.expect("bounded");
    let lb_proxy::testing::Received { spans, service_names, scopes } = collector.spans(2).await;
    assert!(service_names.iter().all(|n| *n == text("lb-proxy-test")), "{service_names:?}");
    assert!(scopes.iter().all(|s| s == "load-balancer"), "the guide's tracer name: {scopes:?}");
    assert_eq!(spans.len(), 2, "one span per request");
    let path = |s: &Span| attribute(&s.attributes, "url.path").cloned();
    let joined = spans.iter().find(|s| path(s) == text("/joined")).expect("the first request's span");
    let fresh = spans.iter().find(|s| path(s) == text("/fresh")).expect("the second request's span");

    for span in [joined, fresh] {
        assert_eq!(span.name, "handle-request");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(attribute(&span.attributes, "backend").cloned(), text(&backend.addr.to_string()));
        assert_eq!(attribute(&span.attributes, "lb.upstream").cloned(), text("web"));
        assert_eq!(attribute(&span.attributes, "http.request.method").cloned(), text("GET"));
        assert_eq!(
            attribute(&span.attributes, "http.response.status_code").cloned(),
            Some(any_value::Value::IntValue(200))
        );
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
    // The caller's trace goes on through the proxy to the endpoint.
    assert_eq!(hex(&joined.trace_id), CALLER_TRACE);
    assert_eq!(hex(&joined.parent_span_id), CALLER_SPAN);
    assert_eq!(sent[0], format!("00-{CALLER_TRACE}-{}-01", hex(&joined.span_id)));
    // Without a caller, the proxy starts the trace.
    assert!(fresh.parent_span_id.is_empty());
    assert_ne!(hex(&fresh.trace_id), CALLER_TRACE);
    assert_eq!(sent[1], format!("00-{}-{}-01", hex(&fresh.trace_id), hex(&fresh.span_id)));
    backend.kill().await;
}

#[tokio::test]
async fn a_retry_is_an_event_on_the_span_and_the_answering_endpoint_its_backend() {
    let mut collector = OtlpReceiver::start().await.unwrap();
    let (backend, _traceparents) = traceparent_backend().await;
    let refused = common::refused_address();
    let upstream = config("round_robin", &[(refused, 1), (backend.addr, 1)], "");
    let proxy = proxy(&format!("{}{upstream}", tracing_section(&collector))).await;
    for _ in 0..2 {
        assert_eq!(get(proxy.listen_addresses()[0], "/", &[]).await.0, StatusCode::OK);
    }
    tokio::time::timeout(Duration::from_secs(20), proxy.shutdown()).await.expect("bounded");
    let (spans, _) = collect_spans(&mut collector, 2).await;
    // Round robin sends at least one of the two requests to the refused port first.
    let retried: Vec<&Span> = spans.iter().filter(|s| !s.events.is_empty()).collect();
    assert!(!retried.is_empty(), "a request was retried");
    for span in retried {
        assert_eq!(span.events.len(), 1, "one retry, then the live endpoint answered");
        let event = &span.events[0];
        assert_eq!(event.name, "retry");
        assert_eq!(attribute(&event.attributes, "lb.try").cloned(), Some(any_value::Value::IntValue(1)));
        assert_eq!(attribute(&event.attributes, "error.type").cloned(), text("connect"));
        assert_eq!(attribute(&span.attributes, "backend").cloned(), text(&backend.addr.to_string()));
    }
    backend.kill().await;
}

#[tokio::test]
async fn without_a_tracing_section_trace_context_passes_through_untouched() {
    let (backend, mut traceparents) = traceparent_backend().await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let address = proxy.listen_addresses()[0];
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    assert_eq!(get(address, "/", &[("traceparent", &caller)]).await.0, StatusCode::OK);
    assert_eq!(get(address, "/", &[]).await.0, StatusCode::OK);
    assert_eq!(traceparents.recv().await.flatten(), Some(caller));
    assert_eq!(traceparents.recv().await.flatten(), None, "no trace is started");
    proxy.shutdown().await;
    backend.kill().await;
}

#[test]
fn tracing_settings_are_checked_with_their_position() {
    let base = config("round_robin", &[("127.0.0.1:1".parse().unwrap(), 1)], "");
    let https = format!("[tracing]\notlp_endpoint = \"https://collector:4318/v1/traces\"\n{base}");
    let error = lb_proxy::Config::parse(&https, "t.toml").unwrap_err().to_string();
    assert!(error.starts_with("t.toml:2:17: otlp_endpoint must be plain http://"), "{error}");
    let ratio = format!("[tracing]\nsample_ratio = 1.5\n{base}");
    let error = lb_proxy::Config::parse(&ratio, "t.toml").unwrap_err().to_string();
    assert_eq!(error, "t.toml:2:16: sample_ratio must be between 0 and 1");
    let unknown = format!("[tracing]\nendpoint = \"http://x/v1/traces\"\n{base}");
    let error = lb_proxy::Config::parse(&unknown, "t.toml").unwrap_err().to_string();
    assert!(error.starts_with("t.toml:2:1: unknown field `endpoint`"), "{error}");
}
