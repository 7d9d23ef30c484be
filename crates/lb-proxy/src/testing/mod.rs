//! Test helpers for crates that test against lb-proxy (feature `testing`).
//!
//! [`prometheus::Prometheus`] runs Debian's real Prometheus against an
//! admin listener (or a client's exporter); the proxy's and the client's
//! metric tests query it alike.
//!
//! No OpenTelemetry collector can be installed on our machines, so
//! [`OtlpReceiver`] is a contract stand-in: a hyper server on loopback that
//! decodes OTLP/HTTP exports with the OTLP protobuf schema
//! (`opentelemetry-proto`) and hands them to the test. The proxy's tracing
//! tests and the client's (a client call through the proxy is one trace)
//! both read spans from it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
pub use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
pub use opentelemetry_proto::tonic::trace::v1::Span;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::sync::mpsc;

pub mod prometheus;

/// An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1; stops with the test's runtime.
#[derive(Debug)]
pub struct OtlpReceiver {
    address: SocketAddr,
    exports: mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
}

/// Spans received, with the `service.name` of each export's resources and
/// the instrumentation scope names.
#[derive(Debug, Default)]
pub struct Received {
    /// Every span, in arrival order.
    pub spans: Vec<Span>,
    /// Each resource's `service.name` attribute.
    pub service_names: Vec<Option<any_value::Value>>,
    /// Each scope's name.
    pub scopes: Vec<String>,
}

impl OtlpReceiver {
    /// Starts the receiver on an ephemeral port.
    pub async fn start() -> std::io::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (sender, exports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sender = sender.clone();
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let sender = sender.clone();
                    async move { Ok::<_, Infallible>(receive(req, &sender).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(OtlpReceiver { address, exports })
    }

    /// The URL exporters send to (`http://127.0.0.1:port/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.address)
    }

    /// Waits (up to 10 s per export) until at least `n` spans arrived.
    ///
    /// # Panics
    /// When no export comes within 10 s.
    pub async fn spans(&mut self, n: usize) -> Received {
        let mut received = Received::default();
        while received.spans.len() < n {
            let export = tokio::time::timeout(Duration::from_secs(10), self.exports.recv())
                .await
                .expect("the spans are exported within 10 s")
                .expect("the receiver runs");
            for resource_spans in export.resource_spans {
                let resource = resource_spans.resource.unwrap_or_default();
                received.service_names.push(attribute(&resource.attributes, "service.name").cloned());
                for scope_spans in resource_spans.scope_spans {
                    received.scopes.push(scope_spans.scope.map(|s| s.name).unwrap_or_default());
                    received.spans.extend(scope_spans.spans);
                }
            }
        }
        received
    }
}

/// Decodes one export request; anything but protobuf on `/v1/traces` is a 400.
async fn receive(
    req: http::Request<hyper::body::Incoming>,
    sender: &mpsc::UnboundedSender<ExportTraceServiceRequest>,
) -> Response<Full<Bytes>> {
    let path_ok = req.uri().path() == "/v1/traces";
    let protobuf = req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let status = match ExportTraceServiceRequest::decode(body) {
        Ok(export) if path_ok && protobuf => {
            let _ = sender.send(export);
            StatusCode::OK
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/x-protobuf"));
    response
}

/// The value of attribute `key`, if present.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}
