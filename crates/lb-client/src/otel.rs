//! OpenTelemetry for client calls, with the proxy's attribute names: one
//! CLIENT span per logical call (a child of the caller's current context),
//! every attempt carrying its W3C `traceparent`, so the proxy's and the
//! backend's spans join the caller's trace; retries are events on the span.
//!
//! Off unless the builder was given a tracer; then a call pays one `Option`
//! check.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use lb_core::{ErrorType, Outcome};
use lb_engine::names::span as names;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// Where a pool's or a channel's spans go: a tracer, such as
/// `opentelemetry::global::tracer("checkout")` once a provider is installed.
#[derive(Debug)]
pub(crate) struct Tracing {
    tracer: BoxedTracer,
    propagator: TraceContextPropagator,
}

/// The span of one call in progress; ended when dropped, if not before.
pub(crate) struct CallSpan {
    span: BoxedSpan,
    /// The span's own context, which attempts carry.
    context: Context,
}

impl Tracing {
    pub(crate) fn new(tracer: BoxedTracer) -> Self {
        Tracing { tracer, propagator: TraceContextPropagator::new() }
    }

    /// Starts the span of a call named `name` (the HTTP method, or the gRPC
    /// `package.Service/Method`) to `service`, as a child of the caller's
    /// current OpenTelemetry context.
    pub(crate) fn start(&self, name: impl Into<Cow<'static, str>>, service: &str, method: &str) -> CallSpan {
        let parent = Context::current();
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new(names::UPSTREAM, service.to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        let context = parent.with_remote_span_context(span.span_context().clone());
        CallSpan { span, context }
    }

    /// Writes the span's `traceparent` (and `tracestate`) into an attempt's headers.
    pub(crate) fn inject(&self, call: &CallSpan, headers: &mut HeaderMap) {
        self.propagator.inject_context(&call.context, &mut HeaderInjector(headers));
    }
}

impl CallSpan {
    /// Notes that try number `failed_try` (from 1) failed with `outcome` and the call goes again.
    pub(crate) fn retry(&mut self, failed_try: u32, outcome: Outcome) {
        let error = outcome.error_type().map_or("none", ErrorType::label);
        self.span.add_event(
            names::RETRY_EVENT,
            vec![KeyValue::new(names::TRY, i64::from(failed_try)), KeyValue::new(names::ERROR_TYPE, error)],
        );
    }

    /// Ends the span: which endpoint answered (if one did), with which HTTP
    /// status, or the error type the call failed with.
    pub(crate) fn end(mut self, backend: Option<&str>, status: Option<u16>, outcome: Outcome) {
        if let Some(backend) = backend {
            self.span.set_attribute(KeyValue::new(names::BACKEND, backend.to_owned()));
        }
        if let Some(status) = status {
            self.span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        }
        if let Some(error) = outcome.error_type() {
            self.span.set_attribute(KeyValue::new(names::ERROR_TYPE, error.label()));
            self.span.set_status(Status::error(error.label()));
        }
        self.span.end();
    }
}

/// Writes propagation fields into HTTP headers; a field that is not a valid
/// header value is left out rather than sent broken.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    #[test]
    fn an_attempt_carries_the_call_span_as_its_parent() {
        use opentelemetry::trace::TracerProvider as _;
        let provider = SdkTracerProvider::builder().build();
        let tracing = Tracing::new(BoxedTracer::new(Box::new(provider.tracer("test"))));
        let call = tracing.start("GET", "users", "GET");
        let mut headers = HeaderMap::new();
        tracing.inject(&call, &mut headers);
        let traceparent = headers["traceparent"].to_str().unwrap().to_string();
        let ids = call.context.span().span_context().clone();
        assert_eq!(traceparent, format!("00-{}-{}-01", ids.trace_id(), ids.span_id()));
        call.end(Some("10.0.0.1:80"), Some(200), Outcome::Success);
    }
}
