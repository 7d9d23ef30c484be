//! `cargo xtask bench proxy`: lb-proxy against nginx and HAProxy, side by side.
//!
//! One one-thread hyper backend; four targets in rotation (direct, nginx with
//! one worker and upstream keepalive, HAProxy with one thread and
//! `http-reuse always`, lb-proxy with one worker thread), at least three
//! rounds, medians reported. Per target: wrk req/s at 50 connections, added
//! p50/p99 latency at 1 connection, proxy CPU seconds per 100k requests
//! (utime+stime from /proc), peak RSS (VmHWM), and the share of backend
//! connections reused. Needs wrk, nginx and haproxy on PATH (the xtask
//! installs them); a missing one is reported and skipped.
//!
//! A fifth target calibrates the box: a one-thread tokio TCP relay that
//! copies bytes between each client connection and its own backend
//! connection, with no HTTP at all. It makes the same four system calls per
//! request as any HTTP/1 proxy and almost nothing else, so its req/s is the
//! ceiling for any proxy on tokio on this machine.

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

const ROUNDS: usize = 3;
const THROUGHPUT_SECS: u32 = 5;
const LATENCY_SECS: u32 = 3;
/// Set on a child copy of this binary to make it the TCP relay: `LISTEN BACKEND`.
const RELAY_ENV: &str = "LB_PROXY_BENCH_RELAY";

fn main() {
    if let Ok(spec) = std::env::var(RELAY_ENV) {
        return run_tcp_relay(&spec);
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not, and must not start a 2-minute run.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "proxy benchmark: run it with `cargo xtask bench proxy` (or `cargo bench -p lb-proxy --bench proxy`)"
        );
        return;
    }
    let Some(wrk) = which("wrk") else {
        eprintln!("wrk is not installed; run `cargo xtask bench proxy` to install it");
        return;
    };
    let work = std::env::temp_dir().join(format!("lb-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("temp dir");
    let backend = start_backend();
    println!("backend (one-thread hyper) on {}", backend.address);

    let mut targets = vec![Target::direct(backend.address)];
    for start in [start_nginx, start_haproxy, start_lb_proxy, start_tcp_relay] {
        match start(&work, backend.address) {
            Ok(t) => targets.push(t),
            Err(why) => eprintln!("skipped: {why}"),
        }
    }
    for t in &targets {
        wait_until_serving(t.address);
    }
    let mut results: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (i, target) in targets.iter().enumerate() {
            let r = measure(&wrk, target, &backend);
            println!(
                "round {} {:<9} {:>9.0} req/s  p50 {:>7.1} us  p99 {:>7.1} us  cpu/100k {:>18}  reuse {:>8}",
                round + 1,
                target.name,
                r.rps,
                r.p50_us,
                r.p99_us,
                r.cpu_per_100k.map_or("-".into(), |(u, s)| format!("{:.2}s ({u:.2} + {s:.2})", u + s)),
                r.reuse.map_or("-".into(), |x| format!("{:.3}%", x * 100.0))
            );
            results[i].push(r);
        }
    }
    let table = render(&targets, &results);
    println!("\n{table}");
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"), PathBuf::from);
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("proxy-bench.md"), &table);
    for t in targets {
        t.stop();
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// One measured round of one target.
struct Round {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// User and system CPU seconds per 100k requests.
    cpu_per_100k: Option<(f64, f64)>,
    reuse: Option<f64>,
}

struct Target {
    name: &'static str,
    address: SocketAddr,
    child: Option<Child>,
}

impl Target {
    fn direct(address: SocketAddr) -> Self {
        Target { name: "direct", address, child: None }
    }

    fn pids(&self) -> Vec<u32> {
        self.child.as_ref().map(|c| process_tree(c.id())).unwrap_or_default()
    }

    fn stop(mut self) {
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

struct BackendServer {
    address: SocketAddr,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

fn start_backend() -> BackendServer {
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
                let (r, body) = (Arc::clone(&r), body.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        r.fetch_add(1, Ordering::Relaxed);
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    BackendServer { address, connections, requests }
}

fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

fn start_nginx(work: &Path, backend: SocketAddr) -> Result<Target, String> {
    let nginx = which("nginx").ok_or("nginx is not installed")?;
    let dir = work.join("nginx");
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    let address = free_port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         upstream backend {{ server {backend}; keepalive 64; }}\n  \
         server {{\n    listen {address};\n    location / {{\n      proxy_pass http://backend;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    Ok(Target { name: "nginx", address, child: Some(child) })
}

fn start_haproxy(work: &Path, backend: SocketAddr) -> Result<Target, String> {
    let haproxy = which("haproxy").ok_or("haproxy is not installed")?;
    let address = free_port();
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  \
         timeout server 30s\n  http-reuse always\nfrontend f\n  bind {address}\n  default_backend b\n\
         backend b\n  server s1 {backend}\n"
    );
    let path = work.join("haproxy.cfg");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = Command::new(haproxy)
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    Ok(Target { name: "HAProxy", address, child: Some(child) })
}

fn start_lb_proxy(work: &Path, backend: SocketAddr) -> Result<Target, String> {
    let address = free_port();
    let conf = format!(
        "[global]\nworker_threads = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nlisten = \"{address}\"\n\
         [[routes]]\nupstream = \"backend\"\n[upstreams.backend]\nalgorithm = \"round_robin\"\n\
         discovery.static.endpoints = [\"{backend}\"]\n"
    );
    let path = work.join("lb-proxy.toml");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    Ok(Target { name: "lb-proxy", address, child: Some(child) })
}

/// The calibration target: this binary again, as a one-thread TCP relay.
fn start_tcp_relay(_work: &Path, backend: SocketAddr) -> Result<Target, String> {
    let address = free_port();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .env(RELAY_ENV, format!("{address} {backend}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    Ok(Target { name: "tcp relay", address, child: Some(child) })
}

/// Copies bytes between each accepted connection and a fresh backend
/// connection until either side closes: an L4 proxy with no HTTP work.
fn run_tcp_relay(spec: &str) {
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

fn wait_until_serving(address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(address).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{address} never started serving");
}

fn measure(wrk: &Path, target: &Target, backend: &BackendServer) -> Round {
    let url = format!("http://{}/", target.address);
    let pids = target.pids();
    let cpu_before = cpu_seconds(&pids);
    let (conns_before, reqs_before) =
        (backend.connections.load(Ordering::Relaxed), backend.requests.load(Ordering::Relaxed));
    let throughput = run_wrk(wrk, &["-t1", "-c50", &format!("-d{THROUGHPUT_SECS}s"), &url]);
    let cpu = cpu_seconds(&pids);
    let conns = backend.connections.load(Ordering::Relaxed) - conns_before;
    let reqs = backend.requests.load(Ordering::Relaxed) - reqs_before;
    let latency = run_wrk(wrk, &["-t1", "-c1", &format!("-d{LATENCY_SECS}s"), "--latency", &url]);
    let is_proxy = target.child.is_some();
    Round {
        rps: throughput.rps,
        p50_us: latency.p50_us,
        p99_us: latency.p99_us,
        cpu_per_100k: (is_proxy && throughput.requests > 0).then(|| {
            let per_100k = 100_000.0 / throughput.requests as f64;
            ((cpu.0 - cpu_before.0) * per_100k, (cpu.1 - cpu_before.1) * per_100k)
        }),
        reuse: (is_proxy && reqs > 0).then(|| 1.0 - conns as f64 / reqs as f64),
    }
}

struct WrkResult {
    rps: f64,
    requests: u64,
    p50_us: f64,
    p99_us: f64,
}

fn run_wrk(wrk: &Path, args: &[&str]) -> WrkResult {
    let out = Command::new(wrk).args(args).output().expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = WrkResult { rps: 0.0, requests: 0, p50_us: f64::NAN, p99_us: f64::NAN };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n, ..] => r.rps = n.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            ["50%", v, ..] => r.p50_us = micros(v),
            ["99%", v, ..] => r.p99_us = micros(v),
            _ => {}
        }
    }
    r
}

/// wrk prints latencies as `41.00us`, `1.20ms` or `2.00s`.
fn micros(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let value: f64 = text[..split].parse().unwrap_or(f64::NAN);
    match &text[split..] {
        "us" => value,
        "ms" => value * 1e3,
        "s" => value * 1e6,
        _ => f64::NAN,
    }
}

/// A process and all its descendants (nginx's worker is the master's child).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                    all.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
                }
            }
        }
        i += 1;
    }
    all
}

/// utime and stime of `pids`, in seconds.
fn cpu_seconds(pids: &[u32]) -> (f64, f64) {
    // Linux reports these in USER_HZ, which is 100 on every architecture we run on.
    const TICKS_PER_SECOND: f64 = 100.0;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
            let after = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime / TICKS_PER_SECOND, stime / TICKS_PER_SECOND))
        })
        .fold((0.0, 0.0), |(u, s), (du, ds)| (u + du, s + ds))
}

/// Peak resident memory of `pids`, in KiB (VmHWM summed).
fn peak_rss_kib(pids: &[u32]) -> Option<u64> {
    let total: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum();
    (total > 0).then_some(total)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn render(targets: &[Target], results: &[Vec<Round>]) -> String {
    let med = |i: usize, f: &dyn Fn(&Round) -> Option<f64>| median(results[i].iter().filter_map(f).collect());
    // Added latency is taken within each round (target minus direct), then the median.
    let added = |i: usize, f: &dyn Fn(&Round) -> f64| {
        median(results[i].iter().zip(&results[0]).map(|(r, direct)| f(r) - f(direct)).collect())
    };
    let direct_p50 = med(0, &|r| Some(r.p50_us));
    let direct_p99 = med(0, &|r| Some(r.p99_us));
    let rps_of = |name: &str| targets.iter().position(|t| t.name == name).map(|i| med(i, &|r| Some(r.rps)));
    let ours = rps_of("lb-proxy");
    let mut table = format!(
        "wrk -t1; {ROUNDS} rounds rotating between targets; medians. req/s at 50 connections ({THROUGHPUT_SECS} s); \
         added latency at 1 connection ({LATENCY_SECS} s), target minus direct within each round \
         (direct: p50 {direct_p50:.0} us, p99 {direct_p99:.0} us).\n\n\
         | target | req/s (c50) | lb-proxy ÷ target | added p50 | added p99 | CPU s / 100k req (user + sys) | peak RSS | backend conn reuse |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for (i, t) in targets.iter().enumerate() {
        let rps = med(i, &|r| Some(r.rps));
        let ratio = ours.map_or("-".to_string(), |o| format!("{:.2}×", o / rps));
        let is_proxy = t.child.is_some();
        let shown = |v: f64| if is_proxy { format!("{v:+.0} us") } else { "-".to_string() };
        let (user, sys) =
            (med(i, &|r| r.cpu_per_100k.map(|c| c.0)), med(i, &|r| r.cpu_per_100k.map(|c| c.1)));
        let reuse = med(i, &|r| r.reuse);
        let rss =
            peak_rss_kib(&t.pids()).map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        table.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            t.name,
            rps,
            ratio,
            shown(added(i, &|r| r.p50_us)),
            shown(added(i, &|r| r.p99_us)),
            if user.is_finite() {
                format!("{:.2} ({user:.2} + {sys:.2})", user + sys)
            } else {
                "-".to_string()
            },
            if is_proxy { rss } else { "-".to_string() },
            if reuse.is_finite() { format!("{:.3} %", reuse * 100.0) } else { "-".to_string() },
        ));
    }
    table
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}
