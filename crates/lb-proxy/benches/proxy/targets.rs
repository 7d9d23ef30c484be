//! What the proxy benchmark measures: a one-thread hyper backend, and the
//! proxies in front of it (nginx, HAProxy, lb-proxy, and a no-HTTP TCP
//! relay as the box's ceiling), each started as its own process.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Set on a child copy of this binary to make it the TCP relay: `LISTEN BACKEND`.
pub(crate) const RELAY_ENV: &str = "LB_PROXY_BENCH_RELAY";

/// One thing wrk can be pointed at.
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) address: SocketAddr,
    /// `None` for the backend itself.
    pub(crate) child: Option<Child>,
}

impl Target {
    pub(crate) fn direct(address: SocketAddr) -> Self {
        Target { name: "direct", address, child: None }
    }

    pub(crate) fn is_proxy(&self) -> bool {
        self.child.is_some()
    }

    /// The process and its children (nginx's worker is the master's child).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.child.as_ref().map(|c| crate::load::process_tree(c.id())).unwrap_or_default()
    }

    pub(crate) fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The backend, counting the connections it accepts and the requests it serves.
pub(crate) struct BackendServer {
    pub(crate) address: SocketAddr,
    pub(crate) connections: Arc<AtomicU64>,
    pub(crate) requests: Arc<AtomicU64>,
}

pub(crate) fn start_backend() -> BackendServer {
    start_backend_over(None)
}

/// The same backend over TLS with `config`, for the proxies' TLS to endpoints.
pub(crate) fn start_tls_backend(config: Arc<rustls::ServerConfig>) -> BackendServer {
    start_backend_over(Some(tokio_rustls::TlsAcceptor::from(config)))
}

fn start_backend_over(tls: Option<tokio_rustls::TlsAcceptor>) -> BackendServer {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind backend");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let body = Bytes::from_static(b"hello from the backend\n");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                c.fetch_add(1, Ordering::Relaxed);
                let (r, body, tls) = (Arc::clone(&r), body.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        r.fetch_add(1, Ordering::Relaxed);
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new().keep_alive(true).clone();
                    let _ = match tls {
                        None => http1.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => http1.serve_connection(TokioIo::new(stream), service).await,
                            Err(_) => Ok(()),
                        },
                    };
                });
            }
        });
    });
    BackendServer { address, connections, requests }
}

fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// How a target's process is started.
#[derive(Clone, Copy)]
pub(crate) enum Launch<'a> {
    Native,
    /// Under valgrind's callgrind, which writes its counts to this file
    /// (and `FILE.1` on `callgrind_control -d`).
    Callgrind(&'a Path),
}

fn spawn(name: &'static str, address: SocketAddr, command: &mut Command) -> Result<Target, String> {
    spawn_as(name, address, command, Launch::Native)
}

fn spawn_as(
    name: &'static str,
    address: SocketAddr,
    command: &mut Command,
    launch: Launch<'_>,
) -> Result<Target, String> {
    let mut wrapped;
    let command = match launch {
        Launch::Native => command,
        Launch::Callgrind(out) => {
            wrapped = Command::new(which("valgrind").ok_or("valgrind is not installed")?);
            wrapped
                .arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(command.get_program())
                .args(command.get_args());
            for (key, value) in command.get_envs() {
                match value {
                    Some(value) => wrapped.env(key, value),
                    None => wrapped.env_remove(key),
                };
            }
            &mut wrapped
        }
    };
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| e.to_string())?;
    Ok(Target { name, address, child: Some(child) })
}

/// How nginx's location reaches the plain backend.
const PROXY_PLAIN: &str = "proxy_pass http://backend;\n";

pub(crate) fn start_nginx(work: &Path, backend: SocketAddr, launch: Launch<'_>) -> Result<Target, String> {
    let dir = work.join(if matches!(launch, Launch::Native) { "nginx" } else { "nginx-callgrind" });
    start_nginx_as("nginx", &dir, backend, "", "", PROXY_PLAIN, launch)
}

/// nginx with one worker, plain to clients, verifying a TLS backend against
/// `ca` under the name `localhost`, with upstream keep-alive and TLS
/// session reuse (its defaults for an https upstream).
pub(crate) fn start_nginx_to_tls(work: &Path, backend: SocketAddr, ca: &Path) -> Result<Target, String> {
    let to_backend = format!(
        "proxy_pass https://backend;\n      proxy_ssl_trusted_certificate {};\n      proxy_ssl_verify on;\n      \
         proxy_ssl_name localhost;\n      proxy_ssl_server_name on;\n      proxy_ssl_protocols TLSv1.2 TLSv1.3;\n      \
         proxy_ssl_session_reuse on;\n",
        ca.display()
    );
    start_nginx_as("nginx to TLS", &work.join("nginx-to-tls"), backend, "", "", &to_backend, Launch::Native)
}

pub(crate) fn start_haproxy(work: &Path, backend: SocketAddr, launch: Launch<'_>) -> Result<Target, String> {
    let haproxy = which("haproxy").ok_or("haproxy is not installed")?;
    let address = free_port();
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 8192\ndefaults\n  mode http\n  maxconn 8192\n  timeout connect 5s\n  \
         timeout client 30s\n  timeout server 30s\n  timeout http-request 60s\n  http-reuse always\n\
         frontend f\n  bind {address}\n  default_backend b\nbackend b\n  server s1 {backend}\n"
    );
    let path =
        work.join(if matches!(launch, Launch::Native) { "haproxy.cfg" } else { "haproxy-callgrind.cfg" });
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    spawn_as("HAProxy", address, Command::new(haproxy).arg("-f").arg(&path).arg("-db"), launch)
}

/// nginx with one worker terminating TLS with `cert` and `key`, keep-alive
/// unbounded per connection (its default closes one after 1,000 requests,
/// which would add handshakes lb-proxy does not make).
pub(crate) fn start_nginx_tls(
    work: &Path,
    backend: SocketAddr,
    cert: &Path,
    key: &Path,
) -> Result<Target, String> {
    let server = format!(
        "    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n",
        cert.display(),
        key.display()
    );
    start_nginx_as(
        "nginx TLS",
        &work.join("nginx-tls"),
        backend,
        " ssl",
        &server,
        PROXY_PLAIN,
        Launch::Native,
    )
}

/// nginx with one worker in `dir`, proxying to `backend` with upstream
/// keep-alive; `listen_suffix` and `server_lines` make it terminate TLS, and
/// `to_backend` (the location's `proxy_pass` and its settings) says how the backend is reached.
fn start_nginx_as(
    name: &'static str,
    dir: &Path,
    backend: SocketAddr,
    listen_suffix: &str,
    server_lines: &str,
    to_backend: &str,
    launch: Launch<'_>,
) -> Result<Target, String> {
    let nginx = which("nginx").ok_or("nginx is not installed")?;
    // Under callgrind the one process serves: a master's forked worker would be counted apart.
    let master = if matches!(launch, Launch::Native) { "" } else { "master_process off;\n" };
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    let address = free_port();
    let d = dir.display();
    let conf = format!(
        "{master}worker_processes 1;\nworker_rlimit_nofile 20000;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {d}/body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
         scgi_temp_path {d}/scgi;\n  upstream backend {{ server {backend}; keepalive 64; }}\n  \
         server {{\n    listen {address}{listen_suffix};\n{server_lines}    location / {{\n      \
         {to_backend}      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    \
         }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    spawn_as(
        name,
        address,
        Command::new(nginx).arg("-p").arg(dir).arg("-c").arg(&path).args(["-g", "daemon off;"]),
        launch,
    )
}

/// lb-proxy with one worker thread terminating TLS with `cert` and `key`.
pub(crate) fn start_lb_proxy_tls(
    work: &Path,
    backend: SocketAddr,
    cert: &Path,
    key: &Path,
) -> Result<Target, String> {
    let address = free_port();
    let conf = format!(
        "[admin]\nenabled = false\n[[listeners]]\nlisten = \"{address}\"\n\
         tls.certificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]\n\
         [[routes]]\nupstream = \"backend\"\n[upstreams.backend]\nalgorithm = \"round_robin\"\n\
         discovery.static.endpoints = [\"{backend}\"]\n",
        cert.display(),
        key.display()
    );
    let path = work.join("lb-proxy-tls.toml");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    spawn(
        "lb-proxy TLS",
        address,
        Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn"),
    )
}

/// lb-proxy with one worker thread, plain to clients, verifying a TLS
/// backend against `ca` under the name `localhost`.
pub(crate) fn start_lb_proxy_to_tls(work: &Path, backend: SocketAddr, ca: &Path) -> Result<Target, String> {
    let address = free_port();
    let conf = format!(
        "[admin]\nenabled = false\n[[listeners]]\nlisten = \"{address}\"\n\
         [[routes]]\nupstream = \"backend\"\n[upstreams.backend]\nalgorithm = \"round_robin\"\n\
         discovery.static.endpoints = [\"{backend}\"]\ntls = {{ ca_file = \"{}\", server_name = \"localhost\" }}\n",
        ca.display()
    );
    let path = work.join("lb-proxy-to-tls.toml");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    spawn(
        "lb-proxy to TLS",
        address,
        Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn"),
    )
}

/// lb-proxy with `workers` worker threads.
pub(crate) fn start_lb_proxy(
    work: &Path,
    backend: SocketAddr,
    workers: usize,
    launch: Launch<'_>,
) -> Result<Target, String> {
    let address = free_port();
    let conf = format!(
        "[global]\nworker_threads = {workers}\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nlisten = \"{address}\"\n\
         [[routes]]\nupstream = \"backend\"\n[upstreams.backend]\nalgorithm = \"round_robin\"\n\
         discovery.static.endpoints = [\"{backend}\"]\n"
    );
    let under = if matches!(launch, Launch::Native) { "" } else { "-callgrind" };
    let path = work.join(format!("lb-proxy-{workers}{under}.toml"));
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let name = if workers == 1 { "lb-proxy" } else { "lb-proxy 2w" };
    spawn_as(
        name,
        address,
        Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn"),
        launch,
    )
}

/// The calibration target: this binary again, as a one-thread TCP relay.
pub(crate) fn start_tcp_relay(backend: SocketAddr) -> Result<Target, String> {
    let address = free_port();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    spawn("tcp relay", address, Command::new(exe).env(RELAY_ENV, format!("{address} {backend}")))
}

/// Copies bytes between each accepted connection and a fresh backend
/// connection until either side closes: an L4 proxy with no HTTP work.
pub(crate) fn run_tcp_relay(spec: &str) {
    let (listen, backend) = spec.split_once(' ').expect("LISTEN BACKEND");
    let (listen, backend): (SocketAddr, SocketAddr) =
        (listen.parse().expect("listen address"), backend.parse().expect("backend address"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind relay");
        loop {
            let Ok((mut client, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(backend).await else { return };
                let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
}

pub(crate) fn wait_until_serving(address: SocketAddr) {
    if let Err(why) = wait_until_serving_within(address, Duration::from_secs(10)) {
        panic!("{why}");
    }
}

/// Polls `address` until it accepts a connection, for at most `limit`.
pub(crate) fn wait_until_serving_within(address: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(address).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{address} never started serving within {limit:?}"))
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}
