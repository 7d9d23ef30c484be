//! OpenTelemetry tracing: one server span per request, named `handle-request`
//! as in the user's guide, child of the caller's W3C `traceparent` when there
//! is one. The span's own context goes to the endpoint in `traceparent`, so
//! the backend's spans join the same trace. Spans leave in batches over
//! OTLP/HTTP (protobuf) from the SDK's own thread, never from the request path.
//!
//! Off unless the configuration has a `[tracing]` section; then a request
//! pays one `Option` check.

use http::StatusCode;
use http::uri::Authority;
use lb_core::{ErrorType, Outcome};
use lb_engine::names::span as span_names;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};

use crate::body::BodyEnd;
use crate::config;

/// The tracer of a running proxy.
pub(crate) struct Tracing {
    provider: SdkTracerProvider,
    export_timeout: std::time::Duration,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Tracing {
    /// Builds the exporter and the tracer for a validated `[tracing]` section.
    pub(crate) fn new(cfg: &config::Tracing) -> Result<Tracing, String> {
        // The exporter's HTTP client is reqwest with rustls compiled in; it
        // needs a process-wide crypto provider even for plain http.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.otlp_endpoint.get_ref().clone())
            .with_timeout(cfg.export_timeout)
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(*cfg.sample_ratio.get_ref())));
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(Resource::builder().with_service_name(cfg.service_name.clone()).build())
            .build();
        let tracer = provider.tracer(cfg.tracer_name.clone());
        Ok(Tracing {
            provider,
            export_timeout: cfg.export_timeout,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Starts the span of one request, a child of the caller's trace context if it sent one.
    pub(crate) fn request_span(&self, request: &impl TraceCarrier, upstream: &str) -> RequestSpan {
        let parent = self.propagator.extract(&CarrierExtractor(request));
        let span = self
            .tracer
            .span_builder("handle-request")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", request.method().to_owned()),
                KeyValue::new("url.path", String::from_utf8_lossy(request.path()).into_owned()),
                KeyValue::new(span_names::UPSTREAM, upstream.to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        let mut fields = ContextFields::default();
        let context = Context::new().with_remote_span_context(span.span_context().clone());
        self.propagator.inject_context(&context, &mut fields);
        RequestSpan(Box::new(SpanState { span, fields: fields.0 }))
    }

    /// Exports what is still buffered and stops the exporter. Blocks up to
    /// the export timeout, so call it off the runtime's threads.
    pub(crate) fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown_with_timeout(self.export_timeout) {
            tracing::warn!(%error, "OpenTelemetry exporter did not shut down cleanly");
        }
    }
}

/// What a request's trace context is read from, whichever engine parsed it.
pub(crate) trait TraceCarrier {
    fn method(&self) -> &str;
    fn path(&self) -> &[u8];
    /// The value of the field called `name` (lower case), if it is text.
    fn field(&self, name: &str) -> Option<&str>;
}

struct CarrierExtractor<'a, C>(&'a C);

impl<C: TraceCarrier> Extractor for CarrierExtractor<'_, C> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.field(key)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The trace context fields to send on: `traceparent`, and `tracestate` when it says something.
#[derive(Debug, Default)]
struct ContextFields(Vec<(&'static str, String)>);

impl Injector for ContextFields {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" if !value.is_empty() => "tracestate",
            _ => return,
        };
        self.0.push((name, value));
    }
}

impl TraceCarrier for crate::http1::write::HeadIn<'_> {
    fn method(&self) -> &str {
        self.head.method.as_str()
    }
    fn path(&self) -> &[u8] {
        crate::route::split_query(self.target).0
    }
    fn field(&self, name: &str) -> Option<&str> {
        self.head.field(self.buf, name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

impl TraceCarrier for http::request::Parts {
    fn method(&self) -> &str {
        self.method.as_str()
    }
    fn path(&self) -> &[u8] {
        self.uri.path().as_bytes()
    }
    fn field(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The span of one request, ended once with how the request ended. Dropped
/// without [`end`](RequestSpan::end) (the client went away, a drain ran out),
/// it ends with an error status saying so.
///
/// Boxed: a request's futures carry an `Option<RequestSpan>` through every
/// layer, and moving a future copies all of it; a pointer keeps that small
/// when tracing is off, and tracing on allocates for the span anyway.
#[derive(Debug)]
pub(crate) struct RequestSpan(Box<SpanState>);

#[derive(Debug)]
struct SpanState {
    span: Span,
    /// This span's context as fields for the endpoint, replacing the caller's.
    fields: Vec<(&'static str, String)>,
}

impl Drop for SpanState {
    fn drop(&mut self) {
        if self.span.is_recording() {
            self.span.set_status(Status::error("the request was cancelled before its response ended"));
            self.span.end();
        }
    }
}

impl RequestSpan {
    /// The trace context fields that go to the endpoint in place of the caller's.
    pub(crate) fn context_fields(&self) -> Vec<(&'static str, String)> {
        self.0.fields.clone()
    }

    /// Names the endpoint that answered (the guide's `backend` attribute).
    pub(crate) fn set_backend(&mut self, backend: &Authority) {
        self.0.span.set_attribute(KeyValue::new(span_names::BACKEND, backend.as_str().to_owned()));
    }

    /// Notes that try number `failed_try` (from 1) failed with `outcome` and the request goes again.
    pub(crate) fn retry(&mut self, failed_try: usize, outcome: Outcome) {
        let error = outcome.error_type().map_or("none", ErrorType::label);
        self.0.span.add_event(
            span_names::RETRY_EVENT,
            vec![
                KeyValue::new(span_names::TRY, i64::try_from(failed_try).unwrap_or(i64::MAX)),
                KeyValue::new(span_names::ERROR_TYPE, error),
            ],
        );
    }

    /// Ends the span with the status the client got, and how the body ended.
    pub(crate) fn end(mut self, status: StatusCode, body: BodyEnd) {
        self.0.span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
        if status.is_server_error() {
            self.0.span.set_status(Status::error(status.canonical_reason().unwrap_or("server error")));
        } else if body == BodyEnd::Failed {
            self.0.span.set_status(Status::error("the response body failed mid-stream"));
        }
        self.0.span.end();
    }
}
