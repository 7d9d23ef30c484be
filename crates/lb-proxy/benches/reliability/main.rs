//! `cargo xtask reliability`: the real `lb-proxy` binary under load while
//! things break, with a promise per scenario. Every backend is a child
//! process (this binary again, so it can be SIGKILLed), the load is wrk,
//! everything is on 127.0.0.1 and bounded in time. Prints one line per
//! scenario and exits non-zero when a promise is broken.
//!
//! Scenarios so far (issue 15 lists the rest):
//! 1. a backend of three SIGKILLed under steady GET load: no client request
//!    fails, and the time until the dead endpoint is out is measured;
//! 9. a retry storm, every backend answering 503: attempts per request stay
//!    within the retry budget.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Set on a child copy of this binary to make it a backend: `LISTEN STATUS`.
const BACKEND_ENV: &str = "LB_RELIABILITY_BACKEND";

fn main() {
    if let Ok(spec) = std::env::var(BACKEND_ENV) {
        return run_backend(&spec);
    }
    // `cargo bench` passes `--bench`; nothing else is read.
    let wrk = which("wrk").expect("wrk is not installed (cargo xtask reliability installs it)");
    let work = tempdir();
    let results = [backend_killed(&wrk, &work), retry_storm(&wrk, &work)];
    let _ = std::fs::remove_dir_all(&work);
    println!("\n| scenario | figure | promise | kept |\n|---|---|---|---|");
    for r in &results {
        println!("| {} | {} | {} | {} |", r.scenario, r.figure, r.promise, if r.kept { "yes" } else { "NO" });
    }
    if results.iter().any(|r| !r.kept) {
        eprintln!("a promise was broken");
        std::process::exit(1);
    }
}

struct Outcome {
    scenario: &'static str,
    figure: String,
    promise: String,
    kept: bool,
}

/// Scenario 1: one backend of three SIGKILLed 2 s into 8 s of load.
fn backend_killed(wrk: &Path, work: &Path) -> Outcome {
    let mut backends: Vec<Backend> = (0..3).map(|_| Backend::start(200)).collect();
    let upstream_extra = "[upstreams.web.outlier_detection]\npreset = \"guide\"\n";
    let proxy = Proxy::start(work, "killed", &backends, upstream_extra);
    let load = Wrk::start(wrk, proxy.address, 20, Duration::from_secs(8));
    std::thread::sleep(Duration::from_secs(2)); // Paces the scenario: the kill lands under load.
    let dead = backends[0].address;
    let killed_at = Instant::now();
    backends[0].kill();
    let mut out_after = None;
    while killed_at.elapsed() < Duration::from_secs(5) {
        if proxy.endpoint_status(dead).is_some_and(|s| s != "healthy") {
            out_after = Some(killed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = load.finish();
    drop(proxy);
    drop(backends);
    let failed = result.non_2xx + result.socket_errors;
    let out = out_after.map_or("never (5 s)".to_string(), |d| format!("{} ms", d.as_millis()));
    Outcome {
        scenario: "1. a backend of 3 SIGKILLed under GET load",
        figure: format!(
            "{} requests, {failed} failed; the dead endpoint out of rotation after {out}",
            result.requests
        ),
        promise: "0 failed client requests".to_string(),
        kept: failed == 0 && result.requests > 0 && out_after.is_some(),
    }
}

/// Scenario 9: every backend answers 503 and 503 is retried; the budget holds attempts down.
fn retry_storm(wrk: &Path, work: &Path) -> Outcome {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(503)).collect();
    let upstream_extra = "[upstreams.web.retry]\nretry_on = [\"gateway_error\"]\nattempts = 5\n\
                          budget_percent = 20\nbudget_min_per_second = 10\n";
    let proxy = Proxy::start(work, "storm", &backends, upstream_extra);
    let connections = 20;
    let result = Wrk::start(wrk, proxy.address, connections, Duration::from_secs(5)).finish();
    let attempts = proxy.backend_requests();
    drop(proxy);
    // Requests that reached the proxy: wrk's count, plus at most one per connection cut when wrk stopped.
    let requests = result.requests + u64::from(connections);
    // Finagle's budget: retries ≤ 20 % of requests + a reserve of 10 per second over the 10 s window.
    let allowed = requests as f64 * 1.2 + 10.0 * 10.0;
    let per_request = attempts as f64 / result.requests.max(1) as f64;
    Outcome {
        scenario: "9. retry storm, every backend 503",
        figure: format!("{} requests, {attempts} attempts: {per_request:.3} per request", result.requests),
        promise: format!(
            "attempts ≤ 1.2 × requests + reserve (100) = {allowed:.0}, i.e. {:.3} per request",
            allowed / result.requests.max(1) as f64
        ),
        kept: result.requests > 0 && attempts as f64 <= allowed,
    }
}

/// A backend process answering every request with one status.
struct Backend {
    address: SocketAddr,
    child: Option<Child>,
}

impl Backend {
    fn start(status: u16) -> Backend {
        let address = free_port();
        let exe = std::env::current_exe().expect("this binary");
        let child = Command::new(exe)
            .env(BACKEND_ENV, format!("{address} {status}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("a backend process");
        wait_until_serving(address);
        Backend { address, child: Some(child) }
    }

    /// SIGKILL: no FIN for open connections' requests in flight, no goodbye.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn run_backend(spec: &str) {
    let (listen, status) = spec.split_once(' ').expect("LISTEN STATUS");
    let listen: SocketAddr = listen.parse().expect("listen address");
    let status = hyper::StatusCode::from_u16(status.parse().expect("status")).expect("a status");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind backend");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"backend\n")));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// The real lb-proxy binary over `backends`, with its admin listener.
struct Proxy {
    address: SocketAddr,
    admin: SocketAddr,
    child: Child,
}

impl Proxy {
    fn start(work: &Path, name: &str, backends: &[Backend], upstream_extra: &str) -> Proxy {
        let (address, admin) = (free_port(), free_port());
        let endpoints: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.address)).collect();
        let config = format!(
            "[admin]\nlisten = \"{admin}\"\n[[listeners]]\nlisten = \"{address}\"\n[[routes]]\nupstream = \"web\"\n\
             [upstreams.web]\nalgorithm = \"round_robin\"\ndiscovery.static.endpoints = [{}]\n{upstream_extra}",
            endpoints.join(", ")
        );
        let path = work.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("write the config");
        let log = std::fs::File::create(work.join(format!("{name}.log"))).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("lb-proxy starts");
        wait_until_serving(address);
        wait_until_serving(admin);
        Proxy { address, admin, child }
    }

    fn admin_get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.admin).expect("admin listener");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").expect("write");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
    }

    /// The `/upstreams` status of the endpoint at `address`.
    fn endpoint_status(&self, address: SocketAddr) -> Option<String> {
        let json: serde_json::Value = serde_json::from_str(&self.admin_get("/upstreams")).ok()?;
        let endpoints = json.get("web")?.get("endpoints")?.as_array()?;
        let endpoint = endpoints.iter().find(|e| e["address"] == address.to_string())?;
        Some(endpoint["status"].as_str()?.to_string())
    }

    /// Requests sent to backends, from `requests_total` (every status).
    fn backend_requests(&self) -> u64 {
        self.admin_get("/metrics")
            .lines()
            .filter(|line| line.starts_with("requests_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// wrk running against a target.
struct Wrk(Child);

struct WrkResult {
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

impl Wrk {
    fn start(wrk: &Path, target: SocketAddr, connections: u32, duration: Duration) -> Wrk {
        let child = Command::new(wrk)
            .args(["-t1", &format!("-c{connections}"), &format!("-d{}s", duration.as_secs())])
            .arg(format!("http://{target}/"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("wrk runs");
        Wrk(child)
    }

    fn finish(self) -> WrkResult {
        let output = self.0.wait_with_output().expect("wrk ends");
        parse_wrk(&String::from_utf8_lossy(&output.stdout))
    }
}

/// Reads wrk's summary: `N requests in`, `Non-2xx or 3xx responses: N`,
/// `Socket errors: connect A, read B, write C, timeout D`.
fn parse_wrk(text: &str) -> WrkResult {
    let mut result = WrkResult { requests: 0, non_2xx: 0, socket_errors: 0 };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => result.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => result.non_2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                result.socket_errors =
                    rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum();
            }
            _ => {}
        }
    }
    result
}

fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// Waits (at most 10 s) until something accepts connections at `address`.
fn wait_until_serving(address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(address).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{address} never started serving");
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-reliability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a work directory");
    dir
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}
