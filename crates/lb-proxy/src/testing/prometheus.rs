//! A real Prometheus for tests: Debian's `prometheus` binary (installed by
//! `cargo xtask test`) on 127.0.0.1 at an ephemeral port, scraping one
//! target every second, and its HTTP query API.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Where Debian installs the server.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Where Debian installs the rule checker.
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// A running Prometheus; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    address: SocketAddr,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus with its data in `dir`, scraping `target`'s
    /// `/metrics` every second and evaluating `rule_files` every second.
    ///
    /// # Panics
    /// When the binary is missing or does not start.
    pub fn start(dir: &Path, target: SocketAddr, rule_files: &[&Path]) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install Debian's `prometheus` (cargo xtask test does)"
        );
        let rules: String = rule_files.iter().map(|f| format!("  - {}\n", f.display())).collect();
        let config = dir.join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}\
             scrape_configs:\n  - job_name: lb\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&config, text).expect("write prometheus.yml");
        let address = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus { address, child }
    }

    /// The result vector of an instant query (empty while Prometheus is not ready).
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri = format!("http://{}/api/v1/query?query={}", self.address, encode(promql));
        let Ok(uri) = uri.parse() else { return Vec::new() };
        let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), client.get(uri)).await else {
            return Vec::new();
        };
        if !response.status().is_success() {
            return Vec::new();
        }
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `promql` every 250 ms until a series matches `wanted`.
    ///
    /// The wait is counted in Prometheus' own scrapes of the target, not
    /// in wall time, so a loaded machine that starts Prometheus slowly does
    /// not fail the test: it gives up once the target has been scraped
    /// [`SCRAPES_TO_WAIT`] more times with no match, or after
    /// [`LONGEST_WAIT`] in all when the scrapes never come.
    ///
    /// # Panics
    /// When no series matches within that.
    pub async fn until(
        &self,
        promql: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = tokio::time::Instant::now();
        let mut first_count = None;
        let mut poll = 0u64;
        loop {
            if let Some(found) = self.query(promql).await.into_iter().find(|s| wanted(s)) {
                return found;
            }
            if poll.is_multiple_of(4) {
                let scrapes = self.scrapes().await;
                let first = *first_count.get_or_insert(scrapes);
                if scrapes >= first + SCRAPES_TO_WAIT {
                    panic!(
                        "no series of `{promql}` as wanted after {SCRAPES_TO_WAIT} scrapes: {:?}",
                        self.query(promql).await
                    );
                }
            }
            assert!(
                started.elapsed() < LONGEST_WAIT,
                "no series of `{promql}` as wanted after {LONGEST_WAIT:?}, with {} scrapes done: {:?}",
                self.scrapes().await,
                self.query(promql).await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            poll += 1;
        }
    }

    /// How many scrapes of the target Prometheus has done (0 before it is ready).
    async fn scrapes(&self) -> u64 {
        let counts = self.query("count_over_time(up[1h])").await;
        counts.first().map(value).filter(|v| v.is_finite()).map_or(0, |v| v as u64)
    }
}

/// Scrapes of the target [`Prometheus::until`] waits through, at one a second.
pub const SCRAPES_TO_WAIT: u64 = 30;
/// The longest [`Prometheus::until`] waits when the scrapes do not come
/// (under nextest's 120 s limit for one test).
pub const LONGEST_WAIT: Duration = Duration::from_secs(90);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A series' value as a number (NaN when it has none).
pub fn value(series: &serde_json::Value) -> f64 {
    series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// A loopback port free now, for a process that binds it itself.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// Percent-encodes a query string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
