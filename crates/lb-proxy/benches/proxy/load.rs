//! Driving load and reading what it cost: wrk runs, CPU time and memory
//! from /proc, CPU pinning with taskset, and half-sent connections.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::targets::{BackendServer, Target};

pub(crate) const THROUGHPUT_SECS: u32 = 5;
pub(crate) const LATENCY_SECS: u32 = 3;
/// Client connections that each send half a request head.
pub(crate) const HALF_SENT: usize = 3000;

/// One measured round of one target.
pub(crate) struct Round {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// User and system CPU seconds per 100k requests.
    pub(crate) cpu_per_100k: Option<(f64, f64)>,
    pub(crate) reuse: Option<f64>,
}

/// Throughput (wrk -t1 -c50), the proxy's CPU per request and connection
/// reuse; then, unless `latency` is off, latency at one connection.
pub(crate) fn measure(wrk: &Path, target: &Target, backend: &BackendServer, latency: bool) -> Round {
    measure_url(wrk, target, backend, latency, &format!("http://{}/", target.address), &[])
}

/// TLS to `target`: kept-alive connections, or with `handshakes` one
/// request per connection (`Connection: close`; wrk resumes no session, so
/// each is a full handshake). No latency run.
pub(crate) fn measure_tls(wrk: &Path, target: &Target, backend: &BackendServer, handshakes: bool) -> Round {
    let close: &[&str] = if handshakes { &["-H", "Connection: close"] } else { &[] };
    measure_url(wrk, target, backend, false, &format!("https://{}/", target.address), close)
}

fn measure_url(
    wrk: &Path,
    target: &Target,
    backend: &BackendServer,
    latency: bool,
    url: &str,
    extra: &[&str],
) -> Round {
    let url = url.to_string();
    let pids = target.pids();
    let cpu_before = cpu_seconds(&pids);
    let (conns_before, reqs_before) =
        (backend.connections.load(Ordering::Relaxed), backend.requests.load(Ordering::Relaxed));
    let duration = format!("-d{THROUGHPUT_SECS}s");
    let mut args = vec!["-t1", "-c50", duration.as_str()];
    args.extend_from_slice(extra);
    args.push(&url);
    let throughput = run_wrk(wrk, &args);
    let cpu = cpu_seconds(&pids);
    let conns = backend.connections.load(Ordering::Relaxed) - conns_before;
    let reqs = backend.requests.load(Ordering::Relaxed) - reqs_before;
    let latency = if latency {
        run_wrk(wrk, &["-t1", "-c1", &format!("-d{LATENCY_SECS}s"), "--latency", &url])
    } else {
        WrkResult { rps: 0.0, requests: 0, p50_us: f64::NAN, p99_us: f64::NAN }
    };
    Round {
        rps: throughput.rps,
        p50_us: latency.p50_us,
        p99_us: latency.p99_us,
        cpu_per_100k: (target.is_proxy() && throughput.requests > 0).then(|| {
            let per_100k = 100_000.0 / throughput.requests as f64;
            ((cpu.0 - cpu_before.0) * per_100k, (cpu.1 - cpu_before.1) * per_100k)
        }),
        reuse: (target.is_proxy() && reqs > 0).then(|| 1.0 - conns as f64 / reqs as f64),
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

/// A process and all its descendants.
pub(crate) fn process_tree(pid: u32) -> Vec<u32> {
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

/// A `/proc/PID/status` figure in KiB (`VmHWM`, `VmRSS`) summed over `pids`.
pub(crate) fn status_kib(pids: &[u32], field: &str) -> Option<u64> {
    let total: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum();
    (total > 0).then_some(total)
}

/// Moves every thread of `pids` to `cpu`; whether taskset did it.
pub(crate) fn pin(pids: &[u32], cpu: usize) -> bool {
    pids.iter().all(|pid| {
        Command::new("taskset")
            .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// RSS growth of `target` per client connection that sent half a request
/// head and waits, in KiB: what a slow or malicious client costs.
pub(crate) fn memory_per_half_sent_connection(target: &Target) -> Option<f64> {
    let pids = target.pids();
    let before = status_kib(&pids, "VmRSS:")?;
    let mut held = Vec::with_capacity(HALF_SENT);
    for _ in 0..HALF_SENT {
        let Ok(mut stream) = TcpStream::connect(target.address) else { break };
        // A browser-sized head, cut before its end.
        let half = b"GET /some/page?with=query HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\nCookie: session=0123456789abcdef; theme=dark\r\nX-Pad: ";
        if stream.write_all(half).is_err() {
            break;
        }
        held.push(stream);
    }
    // Wait (bounded) for the proxy to read them all: its RSS stops growing.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = status_kib(&pids, "VmRSS:")?;
        if now == last {
            break;
        }
        last = now;
    }
    let connections = held.len();
    drop(held);
    (connections > 0).then(|| last.saturating_sub(before) as f64 / connections as f64)
}
