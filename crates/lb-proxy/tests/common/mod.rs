//! Real hyper backends, a proxy started from TOML, and a client, all on loopback.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into()).map_err(|never| match never {}).boxed()
}

/// A backend server counting accepted connections and requests.
pub struct Backend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Serves every request with `handler` on an ephemeral port (or `port`).
    pub async fn start_on<F, Fut>(port: u16, handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                let stream = tokio::select! {
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                    _ = stopped.changed() => break,
                };
                c.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let r = Arc::clone(&r);
                conns.push(tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        r.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                }));
            }
            // Killing a backend closes its open connections too.
            for conn in conns {
                conn.abort();
            }
        });
        Backend { addr, connections, requests, stop, task }
    }

    pub async fn start<F, Fut>(handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Backend::start_on(0, handler).await
    }

    /// A backend answering its `name` to every request.
    pub async fn named(name: &'static str) -> Backend {
        Backend::start(move |_req| async move { Response::new(full(name)) }).await
    }

    /// Stops accepting and closes every connection.
    pub async fn kill(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts a proxy from TOML text.
/// A loopback port that refuses connections: a socket bound there and never
/// listening, kept bound for the test process's life so no other test's
/// server can be given the port (a released one can, and then "dead" answers).
pub fn refused_address() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind("127.0.0.1:0".parse().expect("an address")).expect("bind a port");
    let addr = socket.local_addr().expect("a bound address");
    std::mem::forget(socket);
    addr
}

pub async fn proxy(toml: &str) -> lb_proxy::RunningProxy {
    let config = lb_proxy::Config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    lb_proxy::Proxy::new(config).start().await.unwrap()
}

/// A one-upstream proxy config over `backends` with extra upstream keys.
pub fn config(algorithm: &str, backends: &[(SocketAddr, u32)], upstream_extra: &str) -> String {
    let endpoints: Vec<String> =
        backends.iter().map(|(a, w)| format!("{{ address = \"{a}\", weight = {w} }}")).collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
listen = "127.0.0.1:0"

[[routes]]
upstream = "web"

[upstreams.web]
algorithm = "{algorithm}"
discovery.static.endpoints = [{}]
{upstream_extra}
"#,
        endpoints.join(", ")
    )
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GETs `path` with `headers`; returns status and body text.
pub async fn get(proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut req = Request::get(format!("http://{proxy}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req.body(full("")).unwrap()))
        .await
        .expect("the proxy answers in time")
        .expect("the proxy answers");
    let status = resp.status();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits (bounded: 5 s in 20 ms steps) until `cond` holds; whether it did.
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits (bounded, like [`eventually`]) until the admin page at `path` contains `needle`; whether it did.
pub async fn admin_page_shows(admin: SocketAddr, path: &str, needle: &str) -> bool {
    for _ in 0..250 {
        if get(admin, path, &[]).await.1.contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Fetches the admin `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    get(admin, "/metrics", &[]).await.1
}
