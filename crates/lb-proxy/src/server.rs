//! Starting and stopping a proxy: listeners, the admin listener and the
//! background tasks (discovery, health checks).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use lb_core::{Clock, MonotonicClock};
use std::future::Future;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::access_log::AccessSink;
use crate::background::UpstreamTasks;
use crate::config::Config;
use crate::front::{self, FrontSettings};
use crate::otel::Tracing;
use crate::runtime::Runtime;
use crate::workers::{self, Serving, Workers};
use crate::{admin, background};

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The access log file could not be opened.
    #[error("cannot open the access log {}: {source}", path.display())]
    AccessLog {
        /// The file.
        path: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A TLS listener's certificates could not be used.
    #[error("listener {address}: {source}")]
    Tls {
        /// The listener's address.
        address: SocketAddr,
        /// The file at fault and why.
        source: lb_tls::TlsError,
    },
    /// A worker thread could not be started.
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    /// The OpenTelemetry exporter could not be set up.
    #[error("tracing: {0}")]
    Tracing(String),
    /// A background task (discovery, health checks) could not be set up.
    #[error("upstream `{upstream}`: {reason}")]
    Upstream {
        /// The upstream's name.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
}

/// Builds and starts a proxy from a validated [`Config`].
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = lb_proxy::Config::load("lb.toml")?;
/// let proxy = lb_proxy::Proxy::new(config).start().await?;
/// println!("listening on {:?}", proxy.listen_addresses());
/// proxy.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Proxy {
    config: Config,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy for `config`, on the real monotonic clock.
    pub fn new(config: Config) -> Self {
        Proxy { config, clock: Arc::new(MonotonicClock::new()) }
    }

    /// Replaces the clock the health machinery reads (tests drive it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Binds every listener, starts discovery and health checks, and serves
    /// until [`RunningProxy::shutdown`]. Must run inside a tokio runtime.
    pub async fn start(self) -> Result<RunningProxy, StartError> {
        let metrics = self.config.admin.enabled.then(admin::metrics_handle);
        let tracing = match &self.config.tracing {
            Some(cfg) => Some(Arc::new(Tracing::new(cfg).map_err(StartError::Tracing)?)),
            None => None,
        };
        let global = &self.config.global;
        let access_log =
            AccessSink::open(global.access_log, global.access_log_file.as_ref()).map_err(|source| {
                StartError::AccessLog { path: global.access_log_file.clone().unwrap_or_default(), source }
            })?;
        let connectors = crate::upstream::UpstreamConnectors::read(&self.config)?;
        let runtime = Arc::new(Runtime::build(
            &self.config,
            Arc::clone(&self.clock),
            tracing.clone(),
            Arc::new(access_log),
            &connectors,
            None,
        ));
        let (stop, stopped) = watch::channel(false);
        let upstream_tasks = background::spawn(&self.config, &runtime)?;
        let mut tasks = Vec::new();
        let shared = Arc::new(ArcSwap::new(Arc::clone(&runtime)));
        let serving = Serving {
            runtime: Arc::clone(&shared),
            settings: FrontSettings::new(&self.config.global),
            stopped: stopped.clone(),
            drain_timeout: self.config.global.drain_timeout,
        };
        let worker_count = (*self.config.global.worker_threads.get_ref()).max(1);
        let mut listen_addresses = Vec::new();
        let mut certificates = Vec::new();
        let mut other_workers: Vec<Vec<WorkerSocket>> = (1..worker_count).map(|_| Vec::new()).collect();
        for (index, listener_config) in self.config.listeners.iter().enumerate() {
            let listener_config = listener_config.get_ref();
            let address = *listener_config.listen.get_ref();
            let bind = |address| workers::listen(address, worker_count > 1);
            let first = bind(address).map_err(|source| StartError::Bind { address, source })?;
            let bound = first.local_addr().unwrap_or(address);
            let name = listener_config.name.clone().unwrap_or_else(|| bound.to_string());
            let cap = ConnectionCap::new(&name, *listener_config.max_connections.get_ref());
            let tls = match &listener_config.tls {
                Some(tls) => {
                    let (server, served) = tls
                        .get_ref()
                        .reloadable_server_config()
                        .map_err(|source| StartError::Tls { address, source })?;
                    certificates.push((index, served));
                    Some(TlsAcceptor::from(server))
                }
                None => None,
            };
            let settings = FrontSettings {
                redirect_to_https: *listener_config.redirect_to_https.get_ref(),
                ..serving.settings
            };
            for sockets in &mut other_workers {
                let socket = bind(bound).map_err(|source| StartError::Bind { address: bound, source })?;
                sockets.push(WorkerSocket { socket, cap: Arc::clone(&cap), tls: tls.clone(), settings });
            }
            let listener =
                TcpListener::from_std(first).map_err(|source| StartError::Bind { address: bound, source })?;
            listen_addresses.push(bound);
            let serving = Serving { settings, ..serving.clone() };
            tasks.push(tokio::spawn(serve_proxy(listener, serving, cap, tls)));
        }
        let workers = Workers::spawn(other_workers, &serving).map_err(StartError::Workers)?;
        let mut admin_address = None;
        let (reload_requests, reload_queue) = mpsc::channel(4);
        let reloads = Arc::new(admin::Reloads { requests: reload_requests, taken: AtomicBool::new(false) });
        if let Some(handle) = metrics {
            let address = *self.config.admin.listen.get_ref();
            let listener = bind(address).await?;
            admin_address = Some(listener.local_addr().unwrap_or(address));
            let state = admin::AdminState {
                handle,
                runtime: Arc::clone(&shared),
                token: self.config.admin.token(),
                actions: self.config.admin.actions,
                reloads: Arc::clone(&reloads),
            };
            tasks.push(tokio::spawn(admin::serve(listener, Arc::new(state), stopped.clone())));
        }
        Ok(RunningProxy {
            listen_addresses,
            admin_address,
            reloads,
            reload_queue,
            stop,
            tasks,
            workers,
            upstream_tasks,
            runtime: shared,
            tracing,
            config: self.config,
            certificates,
        })
    }
}

/// One listener's socket for another worker thread, with what it shares with the others.
pub(crate) struct WorkerSocket {
    pub(crate) socket: std::net::TcpListener,
    pub(crate) cap: Arc<ConnectionCap>,
    pub(crate) tls: Option<TlsAcceptor>,
    /// The listener's own connection settings.
    pub(crate) settings: FrontSettings,
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    // The admin listener: one socket, on worker 0.
    TcpListener::bind(address).await.map_err(|source| StartError::Bind { address, source })
}

pub(crate) async fn serve_proxy(
    listener: TcpListener,
    serving: Serving,
    cap: Arc<ConnectionCap>,
    tls: Option<TlsAcceptor>,
) {
    let Serving { runtime, settings, stopped, drain_timeout } = serving;
    let stop = stopped.clone();
    let connections = accept_loop(listener, stopped, move |stream, peer| {
        // Counted at accept; over the cap the connection is dropped (closed) when its task starts.
        let slot = cap.admit();
        let (runtime, stop, tls) = (Arc::clone(&runtime), stop.clone(), tls.clone());
        async move {
            let Some(_slot) = slot else { return };
            match tls {
                None => front::serve(stream, peer, runtime, settings, stop).await,
                // Boxed: a TLS session's state is kilobytes, and a plain connection's task
                // would be sized for it too if it were inline.
                Some(tls) => Box::pin(serve_tls(tls, stream, peer, runtime, settings, stop)).await,
            }
        }
    })
    .await;
    drain(connections, drain_timeout).await;
}

/// A TLS client connection: the handshake within the header timeout, then the front.
async fn serve_tls(
    tls: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    runtime: Arc<ArcSwap<Runtime>>,
    settings: FrontSettings,
    stop: watch::Receiver<bool>,
) {
    match tokio::time::timeout(settings.header_timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => front::serve(stream, peer, runtime, settings, stop).await,
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// A listener's cap on open client connections, shared by every worker accepting on it.
pub(crate) struct ConnectionCap {
    open: AtomicUsize,
    max: usize,
    gauge: metrics::Gauge,
    refused: metrics::Counter,
}

impl ConnectionCap {
    fn new(listener: &str, max: usize) -> Arc<Self> {
        let (gauge, refused) = crate::telemetry::connection_metrics(listener);
        Arc::new(ConnectionCap { open: AtomicUsize::new(0), max, gauge, refused })
    }

    /// A slot for one more connection, or `None` (counted) at the cap.
    fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused.increment(1);
            return None;
        }
        self.gauge.increment(1.0);
        Some(ConnectionSlot(Arc::clone(self)))
    }
}

/// One open client connection; its slot comes back when it closes.
struct ConnectionSlot(Arc<ConnectionCap>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.gauge.decrement(1.0);
    }
}

/// Waits up to `timeout` for `connections` to finish, then drops what is left.
async fn drain(mut connections: JoinSet<()>, timeout: Duration) {
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(timeout, all_done).await.is_err() {
        tracing::warn!(open = connections.len(), ?timeout, "drain timeout: dropping connections still open");
    }
    connections.shutdown().await;
}

/// Resolves once a stop was requested (even before this call), or when the
/// [`RunningProxy`] that could request one is gone.
pub(crate) async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopping| *stopping).await;
}

/// Accepts connections until `stopped` turns, serving each on its own task.
/// Returns the connections still open, for the caller to drain or drop.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
    mut serve: F,
) -> JoinSet<()>
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop_requested(&mut stopped) => return connections,
        };
        // Reap the connections that ended, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        connections.spawn(serve(stream, peer));
    }
}

/// How long an admin (or demo) connection may wait for its next request head.
const LOCAL_IDLE: Duration = Duration::from_secs(30);
/// The longest an admin (or demo) connection lives.
const LOCAL_LIFETIME: Duration = Duration::from_secs(300);

/// Serves one connection with a synchronous handler of small local responses
/// (the admin pages, the demo backends).
pub(crate) async fn serve_local<F, Fut>(stream: TcpStream, respond: F)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let response = respond(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    // Nothing at all for a while: closed (the header timeout below starts only once a protocol is known).
    // (`readable()` may wake early; a peek waits for a real byte.)
    if !matches!(tokio::time::timeout(LOCAL_IDLE, stream.peek(&mut [0u8; 1])).await, Ok(Ok(1..))) {
        return;
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A scraper keeps its connection between scrapes; one that sends nothing for this long is closed.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(LOCAL_IDLE);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(LOCAL_IDLE).keep_alive_timeout(LOCAL_IDLE);
    let serving = builder.serve_connection(TokioIo::new(stream), service);
    // Answers are immediate: no connection lives long, whatever its client does.
    let _ = tokio::time::timeout(LOCAL_LIFETIME, serving).await;
}

/// A running proxy.
pub struct RunningProxy {
    listen_addresses: Vec<SocketAddr>,
    admin_address: Option<SocketAddr>,
    /// `POST /reload` requests from the admin listener.
    reloads: Arc<admin::Reloads>,
    reload_queue: mpsc::Receiver<admin::ReloadRequest>,
    stop: watch::Sender<bool>,
    /// Listeners and the admin listener.
    tasks: Vec<JoinHandle<()>>,
    /// Worker threads beyond this one (`worker_threads` > 1).
    workers: Workers,
    /// Each upstream's discovery and timer tasks, by upstream name.
    pub(crate) upstream_tasks: BTreeMap<String, UpstreamTasks>,
    pub(crate) runtime: Arc<ArcSwap<Runtime>>,
    pub(crate) tracing: Option<Arc<Tracing>>,
    /// What the running generation was built from.
    pub(crate) config: Config,
    /// The certificates each TLS listener shows, by its index in `config.listeners`.
    pub(crate) certificates: Vec<(usize, lb_tls::ServedCertificates)>,
}

impl std::fmt::Debug for RunningProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProxy")
            .field("listen_addresses", &self.listen_addresses)
            .field("admin_address", &self.admin_address)
            .finish_non_exhaustive()
    }
}

impl RunningProxy {
    /// The bound listener addresses (with real ports when the config said 0), in config order.
    pub fn listen_addresses(&self) -> &[SocketAddr] {
        &self.listen_addresses
    }

    /// The bound admin address, if the admin listener runs.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// The next `POST /reload` from the admin listener; pending until one
    /// comes. Whoever owns the proxy and its configuration file reloads it and
    /// [`answer`](crate::ReloadRequest::answer)s (`lb-proxy run` does, as for
    /// SIGHUP). Until this is first called, `POST /reload` answers 501.
    pub async fn reload_requested(&mut self) -> admin::ReloadRequest {
        self.reloads.taken.store(true, Ordering::Release);
        match self.reload_queue.recv().await {
            Some(request) => request,
            None => std::future::pending().await,
        }
    }

    /// The most bytes any request body held in its replay buffer so far.
    pub fn replay_peak_bytes(&self) -> usize {
        self.runtime.load().replay_stats.peak_buffered_bytes()
    }

    /// The health status of every endpoint of `upstream`, by address, in snapshot order.
    pub fn endpoint_status(&self, upstream: &str) -> Vec<(String, lb_core::HealthStatus)> {
        let runtime = self.runtime.load();
        let Some(upstream) = runtime.upstream(upstream) else { return Vec::new() };
        let snapshot = upstream.current.load();
        lb_core::Balancer::endpoints(&*snapshot)
            .iter()
            .map(|m| (m.endpoint().address().to_string(), m.state().status()))
            .collect()
    }

    /// How many upkeep rounds `upstream` has finished (one every 250 ms:
    /// ejections ending, slow start, health logging); `None` for an unknown
    /// upstream. Waiting for two more than now proves the upkeep has seen
    /// whatever changed before, such as a [`ManualClock`](lb_core::ManualClock) advance.
    pub fn upkeep_rounds(&self, upstream: &str) -> Option<u64> {
        let runtime = self.runtime.load();
        Some(runtime.upstream(upstream)?.upkeep_rounds.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Stops accepting and drains: idle client connections close at once, and
    /// each busy one finishes its current response, for up to the configured
    /// `drain_timeout`; upgraded connections (WebSocket) get the same time.
    /// What is still open at the deadline is dropped. Background tasks
    /// (discovery, health checks) stop and are waited for, and
    /// the spans not yet exported are sent.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.workers.join().await;
        for (_, upstream) in self.upstream_tasks {
            upstream.stop().await;
        }
        if let Some(tracing) = self.tracing {
            // Exports the last spans; the exporter blocks, so not on a runtime thread.
            let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        }
    }
}
