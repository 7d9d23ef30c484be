//! `lb-proxy demo`: three local backends that answer with their names, and
//! the proxy in front of them with weighted round robin and health checks.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::server::{accept_loop, serve_local};
use crate::{Config, Proxy, RunningProxy};

/// The demo's weights: backend 1 gets half the traffic, the others a quarter each.
pub const WEIGHTS: [u32; 3] = [2, 1, 1];

/// Options of `lb-proxy demo`; ports are overridable so tests can use ephemeral ones (0).
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the admin listener (`/metrics`) listens.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// The three backends' ports.
    #[arg(long, num_args = 3, default_values_t = [9001u16, 9002, 9003])]
    pub backend_ports: Vec<u16>,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            backend_ports: vec![9001, 9002, 9003],
        }
    }
}

/// A running demo: backends plus proxy.
#[derive(Debug)]
pub struct Demo {
    /// The proxy.
    pub proxy: RunningProxy,
    /// The backends' addresses, in order.
    pub backends: Vec<SocketAddr>,
    stop_backends: watch::Sender<bool>,
    backend_tasks: Vec<JoinHandle<()>>,
}

impl Demo {
    /// Stops the proxy, then the backends.
    pub async fn shutdown(self) {
        self.proxy.shutdown().await;
        let _ = self.stop_backends.send(true);
        for task in self.backend_tasks {
            let _ = task.await;
        }
    }

    /// What to try, as printed by `lb-proxy demo`.
    pub fn instructions(&self) -> String {
        let listen = self.proxy.listen_addresses()[0];
        let admin = self.proxy.admin_address().map_or_else(|| "-".to_string(), |a| a.to_string());
        format!(
            "lb-proxy demo: proxy on http://{listen}, backends {backends:?} (weights {WEIGHTS:?}), admin on http://{admin}\n\
             \n\
             Try:\n  \
               for i in $(seq 8); do curl -s http://{listen}/; done     # weighted round robin: backend-1 twice as often\n  \
               curl -s http://{admin}/metrics | grep requests_total     # per-backend counters\n  \
               curl -s http://{admin}/upstreams                          # endpoint health as JSON\n\
             \n\
             Press Ctrl-C to stop.",
            backends = self.backends,
        )
    }
}

/// Starts the backends and the proxy.
pub async fn start(args: &DemoArgs) -> Result<Demo, Box<dyn std::error::Error + Send + Sync>> {
    let (stop_backends, stopped) = watch::channel(false);
    let mut backends = Vec::new();
    let mut backend_tasks = Vec::new();
    for (i, port) in args.backend_ports.iter().enumerate() {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], *port))).await?;
        backends.push(listener.local_addr()?);
        backend_tasks.push(tokio::spawn(serve_named(
            listener,
            format!("backend-{}", i + 1),
            stopped.clone(),
        )));
    }
    let config = Config::parse(&demo_config(args, &backends), "<demo>")?;
    let proxy = Proxy::new(config).start().await?;
    Ok(Demo { proxy, backends, stop_backends, backend_tasks })
}

/// `lb-proxy demo`: starts, prints what to try, and stops cleanly on Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let demo = start(&args).await?;
    // Listen before printing: a Ctrl-C right after the instructions must stop cleanly.
    let mut stop = crate::StopSignal::listen()?;
    println!("{}", demo.instructions());
    stop.wait().await;
    println!("stopping");
    demo.shutdown().await;
    Ok(())
}

/// The demo's configuration, as a file would say it.
pub fn demo_config(args: &DemoArgs, backends: &[SocketAddr]) -> String {
    let endpoints: Vec<String> = backends
        .iter()
        .zip(WEIGHTS)
        .map(|(addr, weight)| format!("{{ address = \"{addr}\", weight = {weight} }}"))
        .collect();
    format!(
        r#"
[admin]
listen = "{admin}"

[[listeners]]
name = "demo"
listen = "{listen}"

[[routes]]
path_prefix = "/"
upstream = "demo"

[upstreams.demo]
algorithm = "weighted_round_robin"
discovery.static.endpoints = [{endpoints}]

[upstreams.demo.health_check]
path = "/health"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
"#,
        admin = args.admin,
        listen = args.listen,
        endpoints = endpoints.join(", "),
    )
}

async fn serve_named(listener: TcpListener, name: String, stopped: watch::Receiver<bool>) {
    let body = Bytes::from(format!("hello from {name}\n"));
    accept_loop(listener, stopped, move |stream, _| {
        let body = body.clone();
        serve_local(stream, move |req| {
            let text = if req.uri().path() == "/health" { Bytes::from_static(b"ok\n") } else { body.clone() };
            std::future::ready(Response::new(Full::new(text)))
        })
    })
    .await
    .shutdown()
    .await;
}
