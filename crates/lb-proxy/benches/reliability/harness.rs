//! The parts every scenario stands on: the real lb-proxy binary with its
//! admin listener, backend processes, wrk, and a blocking HTTP/1.1 client
//! that can stop halfway through a body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{BACKEND_ENV, Behaviour};

/// How big a run is: `--quick` (inside `cargo xtask test`) or the full one.
#[derive(Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) quick: bool,
}

impl Scale {
    /// `full` in the full run, `quick` under `--quick`.
    pub(crate) fn pick<T>(self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// Everything a scenario needs: where to write, wrk, and how big to be.
pub(crate) struct Bench {
    pub(crate) work: PathBuf,
    pub(crate) wrk: PathBuf,
    pub(crate) scale: Scale,
}

/// One scenario's result: its figure, its promise, and whether it was kept.
pub(crate) struct Outcome {
    pub(crate) scenario: &'static str,
    pub(crate) figure: String,
    pub(crate) promise: String,
    pub(crate) kept: bool,
}

/// A backend process (this binary again, see [`crate::backend`]).
pub(crate) struct Backend {
    pub(crate) address: SocketAddr,
    child: Option<Child>,
}

impl Backend {
    pub(crate) fn start(behaviour: &Behaviour) -> Backend {
        let address = free_port();
        let exe = std::env::current_exe().expect("this binary");
        let child = Command::new(exe)
            .env(BACKEND_ENV, behaviour.to_spec(address))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("a backend process");
        wait_until_serving(address);
        Backend { address, child: Some(child) }
    }

    /// SIGKILL: no goodbye to open connections, no answer to requests in flight.
    pub(crate) fn kill(&mut self) {
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

/// The parts of a proxy config a scenario sets beyond listener, admin and endpoints.
#[derive(Default, Clone)]
pub(crate) struct Sections {
    /// Lines of `[global]`.
    pub(crate) global: String,
    /// Extra lines of the `[[listeners]]` entry.
    pub(crate) listener: String,
    /// Lines after `[upstreams.web]`'s discovery (keys, then sub-tables).
    pub(crate) upstream: String,
}

/// The real lb-proxy binary over some endpoints, with its admin listener.
pub(crate) struct Proxy {
    pub(crate) address: SocketAddr,
    pub(crate) admin: SocketAddr,
    config: PathBuf,
    child: Child,
}

impl Proxy {
    pub(crate) fn start(work: &Path, name: &str, endpoints: &[SocketAddr], sections: &Sections) -> Proxy {
        let (address, admin) = (free_port(), free_port());
        let config = work.join(format!("{name}.toml"));
        write_config(&config, address, admin, endpoints, sections);
        let log = std::fs::File::create(work.join(format!("{name}.log"))).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("lb-proxy starts");
        wait_until_serving(address);
        wait_until_serving(admin);
        Proxy { address, admin, config, child }
    }

    /// Rewrites the config file with other endpoints and sends SIGHUP; waits
    /// (at most 5 s) until `/upstreams` shows exactly those endpoints.
    pub(crate) fn reload(&self, endpoints: &[SocketAddr], sections: &Sections) -> bool {
        write_config(&self.config, self.address, self.admin, endpoints, sections);
        self.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut wanted: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
        wanted.sort();
        while Instant::now() < deadline {
            if self.endpoint_addresses() == wanted {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Sends a signal by name (`HUP`, `TERM`) with kill(1).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// Waits at most `limit` for the process to exit; how long it took.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// `(VmRSS, VmHWM)` of the proxy process in KiB: resident now, and its peak.
    pub(crate) fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub(crate) fn admin_get(&self, path: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(self.admin) else { return String::new() };
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").expect("write");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
    }

    fn upstream_endpoints(&self) -> Vec<serde_json::Value> {
        let json: serde_json::Value = serde_json::from_str(&self.admin_get("/upstreams")).unwrap_or_default();
        json["web"]["endpoints"].as_array().cloned().unwrap_or_default()
    }

    fn endpoint_addresses(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .upstream_endpoints()
            .iter()
            .filter_map(|e| Some(e["address"].as_str()?.to_string()))
            .collect();
        found.sort();
        found
    }

    /// The `/upstreams` status of the endpoint at `address`.
    pub(crate) fn endpoint_status(&self, address: SocketAddr) -> Option<String> {
        let endpoints = self.upstream_endpoints();
        let endpoint = endpoints.iter().find(|e| e["address"] == address.to_string())?;
        Some(endpoint["status"].as_str()?.to_string())
    }

    /// The sum of a metric's series whose labels contain `filter` (all when empty).
    pub(crate) fn metric_sum(&self, name: &str, filter: &str) -> f64 {
        self.admin_get("/metrics")
            .lines()
            .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(filter))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Requests sent to backends, from `requests_total` (every status).
    pub(crate) fn backend_requests(&self) -> u64 {
        self.metric_sum("requests_total", "") as u64
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(path: &Path, address: SocketAddr, admin: SocketAddr, endpoints: &[SocketAddr], s: &Sections) {
    let endpoints: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let config = format!(
        "[global]\n{}\n[admin]\nlisten = \"{admin}\"\n[[listeners]]\nlisten = \"{address}\"\n{}\n\
         [[routes]]\nupstream = \"web\"\n[upstreams.web]\nalgorithm = \"round_robin\"\n\
         discovery.static.endpoints = [{}]\n{}",
        s.global,
        s.listener,
        endpoints.join(", "),
        s.upstream
    );
    std::fs::write(path, config).expect("write the config");
}

/// wrk running against a target.
pub(crate) struct Wrk(Child);

/// What wrk printed at the end.
pub(crate) struct WrkResult {
    pub(crate) requests: u64,
    pub(crate) non_2xx: u64,
    pub(crate) socket_errors: u64,
    /// The 99th percentile latency.
    pub(crate) p99: Duration,
}

impl WrkResult {
    pub(crate) fn failed(&self) -> u64 {
        self.non_2xx + self.socket_errors
    }
}

impl Wrk {
    pub(crate) fn start(wrk: &Path, target: SocketAddr, connections: u32, duration: Duration) -> Wrk {
        let child = Command::new(wrk)
            .args(["-t1", &format!("-c{connections}"), &format!("-d{}s", duration.as_secs()), "--latency"])
            .arg(format!("http://{target}/"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("wrk runs");
        Wrk(child)
    }

    pub(crate) fn finish(self) -> WrkResult {
        let output = self.0.wait_with_output().expect("wrk ends");
        parse_wrk(&String::from_utf8_lossy(&output.stdout))
    }
}

/// Reads wrk's summary: `N requests in`, `Non-2xx or 3xx responses: N`,
/// `Socket errors: connect A, read B, write C, timeout D` and the
/// `--latency` line `99%  12.34ms`.
fn parse_wrk(text: &str) -> WrkResult {
    let mut result = WrkResult { requests: 0, non_2xx: 0, socket_errors: 0, p99: Duration::ZERO };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => result.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => result.non_2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                result.socket_errors =
                    rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum();
            }
            ["99%", latency] => result.p99 = parse_wrk_duration(latency).unwrap_or(Duration::MAX),
            _ => {}
        }
    }
    result
}

/// `812.00us`, `1.23ms`, `2.01s`, `1.50m` as wrk prints them.
fn parse_wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// A response read off a raw connection.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// Whether the body was whole by its own framing (Content-Length or the last chunk).
    pub(crate) complete: bool,
    /// Whether the answer carried `connection: close`.
    pub(crate) close: bool,
}

/// Reads one response from `stream` (already written to); `None` when the
/// connection ends or fails before a whole head arrives.
pub(crate) fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 64 * 1024];
    let (status, head_len, length, chunked, close) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = response.parse(&buffer) {
            let field = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
            };
            let length = field("content-length").and_then(|v| v.trim().parse::<usize>().ok());
            let chunked = field("transfer-encoding").is_some_and(|v| v.contains("chunked"));
            let close = field("connection").is_some_and(|v| v.contains("close"));
            break (response.code.unwrap_or(0), len, length, chunked, close);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let mut raw = buffer.split_off(head_len);
    let whole = |raw: &[u8]| match (length, chunked) {
        (_, true) => raw.ends_with(b"0\r\n\r\n"),
        (Some(n), false) => raw.len() >= n,
        (None, false) => false,
    };
    while !whole(&raw) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let complete = whole(&raw);
    let body = if chunked { dechunk(&raw) } else { raw };
    Some(Answer { status, body, complete, close })
}

/// The data of a chunked body (extensions and trailers dropped); what parses.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Ok(httparse::Status::Complete((start, size))) = httparse::parse_chunk_size(raw) {
        let size = size as usize;
        if size == 0 || raw.len() < start + size {
            break;
        }
        data.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    data
}

/// The bytes of body `id`, position `at` onwards: a pattern no two bodies share.
pub(crate) fn pattern(id: u64, at: u64, out: &mut [u8]) {
    for (i, byte) in out.iter_mut().enumerate() {
        let n = at + i as u64;
        *byte = (n.wrapping_mul(31) ^ id.wrapping_mul(0x9E37_79B9) ^ (n >> 8)) as u8;
    }
}

/// `(length, crc32)` of body `id` of `length` bytes.
pub(crate) fn pattern_digest(id: u64, length: u64) -> (u64, u32) {
    let mut hasher = crc32fast::Hasher::new();
    let mut block = vec![0u8; 64 * 1024];
    let mut at = 0;
    while at < length {
        let n = block.len().min((length - at) as usize);
        pattern(id, at, &mut block[..n]);
        hasher.update(&block[..n]);
        at += n as u64;
    }
    (length, hasher.finalize())
}

pub(crate) fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// Waits (at most 10 s) until something accepts connections at `address`.
pub(crate) fn wait_until_serving(address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(address).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{address} never started serving");
}

pub(crate) fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-reliability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a work directory");
    dir
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

/// A percentile (0–100) of durations, sorted in place.
pub(crate) fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
