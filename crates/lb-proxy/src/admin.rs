//! The admin listener, bound to 127.0.0.1 by default (docs/configuration.md):
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the dashboard: every upstream and endpoint, live |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | `ok` |
//! | `GET /upstreams`, `GET /upstreams/{name}` | every endpoint's health, and why, as JSON |
//! | `GET /config` | the running configuration's text, secrets redacted, as JSON |
//! | `POST /reload` | reloads the configuration file, as SIGHUP does (`admin.actions`) |
//! | `POST /upstreams/{name}/endpoints/{address}/drain` and `.../undrain` | takes an endpoint out of rotation and puts it back (`admin.actions`) |
//!
//! With a token (`admin.token` or `LB_ADMIN_TOKEN`, required off loopback),
//! every request must carry `Authorization: Bearer <token>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::runtime::Runtime;
use crate::server::{accept_loop, serve_local};
use crate::upstream::Upstream;

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

/// A `POST /reload` waiting for whoever owns the proxy to reload it
/// ([`RunningProxy::reload_requested`](crate::RunningProxy::reload_requested)).
#[derive(Debug)]
pub struct ReloadRequest {
    answer: oneshot::Sender<Result<(), String>>,
}

impl ReloadRequest {
    /// Tells the admin client how the reload went.
    pub fn answer(self, result: Result<(), String>) {
        let _ = self.answer.send(result);
    }
}

/// Where `POST /reload` requests go, and whether anyone takes them.
#[derive(Debug)]
pub(crate) struct Reloads {
    pub(crate) requests: mpsc::Sender<ReloadRequest>,
    /// Set once the proxy's owner waits for reload requests (`lb-proxy run` does).
    pub(crate) taken: AtomicBool,
}

/// What the admin listener answers from.
pub(crate) struct AdminState {
    pub(crate) handle: PrometheusHandle,
    pub(crate) runtime: Arc<ArcSwap<Runtime>>,
    pub(crate) token: Option<String>,
    pub(crate) actions: bool,
    pub(crate) reloads: Arc<Reloads>,
}

pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>, stopped: watch::Receiver<bool>) {
    accept_loop(listener, stopped, move |stream, _| {
        let state = Arc::clone(&state);
        serve_local(stream, move |req| {
            let state = Arc::clone(&state);
            async move { respond(req, &state).await }
        })
    })
    .await
    // Admin answers are quick; an idle scraper connection need not hold up a stop.
    .shutdown()
    .await;
}

/// `/metrics` answers carry the proxy's monotonic clock in milliseconds, for the dashboard's rates.
const CLOCK_HEADER: &str = "x-lb-clock-ms";

/// How long `POST /reload` waits for the reload to finish.
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// The dashboard: one page, no external assets; it reads the JSON and metrics below with the token.
const DASHBOARD: &str = include_str!("../assets/dashboard.html");

async fn respond(req: Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    // The page holds no data: it asks for the token itself when the API needs one.
    if req.method() == Method::GET && req.uri().path() == "/" {
        return text_reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD);
    }
    if let Some(token) = &state.token
        && !carries_token(&req, token)
    {
        let mut answer =
            reply(StatusCode::UNAUTHORIZED, json!({ "error": "this admin listener needs a bearer token" }));
        answer.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return answer;
    }
    let runtime = state.runtime.load();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let post = req.method() == Method::POST;
    if !post && req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, json!({ "error": "GET to read, POST for actions" }));
    }
    match (post, segments.as_slice()) {
        (false, ["metrics"]) => {
            for upstream in &runtime.upstreams {
                upstream.refresh_gauges(runtime.clock.as_ref());
            }
            let mut text = state.handle.render();
            crate::telemetry::render_histograms(&mut text);
            let mut answer = text_reply(StatusCode::OK, "text/plain; version=0.0.4", text);
            // When these values were read, on the proxy's own clock: rates need no browser clock.
            let clock_ms = runtime.clock.now().as_nanos() / 1_000_000;
            answer.headers_mut().insert(CLOCK_HEADER, HeaderValue::from(clock_ms));
            answer
        }
        (false, ["healthz"]) => text_reply(StatusCode::OK, "text/plain", "ok\n"),
        (false, ["upstreams"]) => {
            let all = runtime
                .upstream_names
                .iter()
                .map(|(n, &i)| (n.clone(), upstream_json(&runtime, &runtime.upstreams[i])));
            reply(StatusCode::OK, serde_json::Value::Object(all.collect()))
        }
        (false, ["upstreams", name]) => match runtime.upstream(name) {
            Some(upstream) => reply(StatusCode::OK, upstream_json(&runtime, upstream)),
            None => no_upstream(name),
        },
        (false, ["config"]) => reply(StatusCode::OK, json!({ "toml": &*runtime.config_text })),
        (true, ["reload"] | ["upstreams", _, "endpoints", _, "drain" | "undrain"]) if !state.actions => {
            reply(
                StatusCode::FORBIDDEN,
                json!({ "error": "admin actions are off: set actions = true in [admin]" }),
            )
        }
        (true, ["reload"]) => reload(&state.reloads).await,
        (true, ["upstreams", name, "endpoints", address, action @ ("drain" | "undrain")]) => {
            let Some(upstream) = runtime.upstream(name) else { return no_upstream(name) };
            drain(&runtime, upstream, address, *action == "drain")
        }
        (false, ["reload" | "upstreams", ..]) | (true, ["metrics" | "healthz" | "config" | "upstreams"]) => {
            reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "error": format!("{} does not take {}", path, req.method()) }),
            )
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({ "error": "try /, /metrics, /healthz, /upstreams, /upstreams/{name}, /config, POST /reload" }),
        ),
    }
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in
/// constant time so the answer's timing does not tell how much matched.
fn carries_token(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let expected = token.as_bytes();
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn reload(reloads: &Reloads) -> Response<Full<Bytes>> {
    if !reloads.taken.load(Ordering::Acquire) {
        return reply(
            StatusCode::NOT_IMPLEMENTED,
            json!({ "error": "nothing reloads this proxy from its file: it runs embedded, not as `lb-proxy run`" }),
        );
    }
    let (answer, result) = oneshot::channel();
    if reloads.requests.send(ReloadRequest { answer }).await.is_err() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "the proxy is stopping" }));
    }
    match tokio::time::timeout(RELOAD_WAIT, result).await {
        Ok(Ok(Ok(()))) => reply(StatusCode::OK, json!({ "reloaded": true })),
        Ok(Ok(Err(error))) => reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "reloaded": false, "error": error, "note": "the running configuration stays" }),
        ),
        Ok(Err(_)) | Err(_) => {
            reply(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "the reload did not finish" }))
        }
    }
}

/// Drains (or undrains) the endpoint at `address` of `upstream`.
fn drain(runtime: &Runtime, upstream: &Upstream, address: &str, drained: bool) -> Response<Full<Bytes>> {
    let generation = upstream.current.load();
    let found = lb_core::Balancer::endpoints(&*generation)
        .iter()
        .position(|m| m.endpoint().address().to_string() == address);
    let Some(index) = found else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no endpoint {address} in this upstream") }),
        );
    };
    generation.extra(index).guard.set_drained(drained);
    tracing::info!(endpoint = address, drained, "endpoint drain changed by an operator");
    reply(StatusCode::OK, upstream_json(runtime, upstream))
}

fn no_upstream(name: &str) -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, json!({ "error": format!("no upstream called {name}") }))
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    text_reply(status, "application/json", body.to_string())
}

fn text_reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
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
    json!({
        "source": report.source,
        "last_success_unix": unix(report.last_success),
        "last_error": report.last_error,
        "last_error_unix": unix(report.last_error_at),
        "errors_in_a_row": report.errors_in_a_row,
    })
}

/// One upstream: its endpoints with their standing and its cause, panic mode, discovery.
fn upstream_json(runtime: &Runtime, upstream: &Upstream) -> serde_json::Value {
    let snapshot = upstream.current.load();
    let members = lb_core::Balancer::endpoints(&*snapshot).iter();
    let standings = upstream.standings(runtime.clock.now());
    let endpoints: Vec<serde_json::Value> = members
        .zip(standings)
        .map(|(m, (_, standing))| {
            json!({
                "address": m.endpoint().address().to_string(),
                "weight": m.endpoint().weight(),
                "status": standing.label(),
                "cause": standing.cause(),
                "in_flight": m.state().in_flight(),
            })
        })
        .collect();
    let discovery = upstream.discovery.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    json!({
        "panic": upstream.in_panic(),
        "discovery": discovery.map(|status| discovery_json(&status.get())),
        "endpoints": endpoints,
    })
}
