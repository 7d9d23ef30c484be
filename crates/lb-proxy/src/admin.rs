//! The admin listener: `/metrics` (Prometheus text), `/healthz`, and
//! `/upstreams` (every endpoint's health as JSON). Bound to 127.0.0.1 by default.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::runtime::Runtime;
use crate::server::{accept_loop, serve_local};

/// The process-wide Prometheus recorder's handle, installing the recorder on
/// first use. If another recorder was installed first, the handle renders
/// only what reaches it (nothing), and a warning says so.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            crate::telemetry::describe();
            handle
        })
        .clone()
}

pub(crate) async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    runtime: Arc<ArcSwap<Runtime>>,
    stopped: watch::Receiver<bool>,
) {
    accept_loop(listener, stopped, move |stream, _| {
        let (handle, runtime) = (handle.clone(), Arc::clone(&runtime));
        serve_local(stream, move |req| respond(req.uri().path(), &handle, &runtime.load()))
    })
    .await
    // Admin answers are immediate; an idle scraper connection need not hold up a stop.
    .shutdown()
    .await;
}

fn respond(path: &str, handle: &PrometheusHandle, runtime: &Runtime) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => {
            for upstream in &runtime.upstreams {
                upstream.refresh_gauges(runtime.clock.as_ref());
            }
            let mut text = handle.render();
            crate::telemetry::render_histograms(&mut text);
            (StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/upstreams" => (StatusCode::OK, "application/json", upstreams_json(runtime)),
        _ => (StatusCode::NOT_FOUND, "text/plain", "try /metrics, /healthz or /upstreams\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A discovery source's status: when it last answered and its last error,
/// times as Unix seconds.
fn discovery_json(report: &lb_discovery::SourceReport) -> serde_json::Value {
    let unix = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64())
    };
    serde_json::json!({
        "source": report.source,
        "last_success_unix": unix(report.last_success),
        "last_error": report.last_error,
        "last_error_unix": unix(report.last_error_at),
        "errors_in_a_row": report.errors_in_a_row,
    })
}

fn upstreams_json(runtime: &Runtime) -> String {
    let upstreams: serde_json::Map<String, serde_json::Value> = runtime
        .upstream_names
        .iter()
        .map(|(name, &i)| {
            let upstream = &runtime.upstreams[i];
            let snapshot = upstream.current.load();
            let members = lb_core::Balancer::endpoints(&*snapshot).iter();
            let standings = upstream.standings(runtime.clock.now());
            let endpoints: Vec<serde_json::Value> = members
                .zip(standings)
                .map(|(m, (_, standing))| {
                    serde_json::json!({
                        "address": m.endpoint().address().to_string(),
                        "weight": m.endpoint().weight(),
                        "status": standing.label(),
                        "cause": standing.cause(),
                        "in_flight": m.state().in_flight(),
                    })
                })
                .collect();
            let discovery =
                upstream.discovery.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            let view = serde_json::json!({
                "panic": upstream.in_panic(),
                "discovery": discovery.map(|status| discovery_json(&status.get())),
                "endpoints": endpoints,
            });
            (name.clone(), view)
        })
        .collect();
    serde_json::Value::Object(upstreams).to_string()
}
