//! A real Prometheus (Debian's `prometheus`, installed by `cargo xtask test`)
//! scrapes the admin listener while traffic flows, and its query API answers
//! the queries operators write: p99 latency per backend from the histogram,
//! failed tries per backend and kind, and the recording rules shipped in
//! `docs/prometheus/rules.yml`, which `promtool check rules` accepts.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, config, get, proxy};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/prometheus/rules.yml")
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap()
}

/// Prometheus on 127.0.0.1 at an ephemeral port, scraping `target` every second; killed when dropped.
struct Prometheus {
    address: SocketAddr,
    child: Child,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install Debian's `prometheus` (cargo xtask test does)"
        );
        let config = dir.join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: lb-proxy\n    static_configs:\n      - targets: ['{target}']\n",
            rules().display()
        );
        std::fs::write(&config, text).unwrap();
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
    async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        if tokio::net::TcpStream::connect(self.address).await.is_err() {
            return Vec::new();
        }
        let (status, body) = get(self.address, &format!("/api/v1/query?query={}", encode(promql)), &[]).await;
        if status != 200 {
            return Vec::new();
        }
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `promql` (every 250 ms, at most 30 s) until a series matches `wanted`.
    async fn until(&self, promql: &str, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        for _ in 0..120 {
            if let Some(found) = self.query(promql).await.into_iter().find(|s| wanted(s)) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("no series of `{promql}` as wanted after 30 s: {:?}", self.query(promql).await);
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// A series' value as a number.
fn value(series: &serde_json::Value) -> f64 {
    series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn the_shipped_rules_pass_promtool() {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: install Debian's `prometheus` (cargo xtask test does)"
    );
    let out = Command::new(PROMTOOL).args(["check", "rules"]).arg(rules()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 9 rules found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_latency_quantiles_and_errors_per_backend() {
    let live = Backend::named("a").await;
    let dead = free_port(); // Nothing listens: every try there is a connect error.
    // The guide's passive check takes the dead endpoint out after its sixth failure, so retries
    // stay within their budget and every request is answered.
    let text = config(
        "round_robin",
        &[(live.addr, 1), (dead, 1)],
        "[upstreams.web.outlier_detection]\npreset = \"guide\"\n",
    );
    let proxy = proxy(&text).await;
    let (listen, admin) = (proxy.listen_addresses()[0], proxy.admin_address().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), admin);
    let traffic = tokio::spawn(async move {
        let mut failed = 0;
        for _ in 0..3000 {
            failed += usize::from(get(listen, "/", &[]).await.0 != 200);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failed
    });

    let live_label = live.addr.to_string();
    let p99 = prometheus
        .until(
            "histogram_quantile(0.99, sum by (backend, le) (rate(request_duration_seconds_bucket[10s])))",
            |s| s["metric"]["backend"] == live_label.as_str() && value(s).is_finite(),
        )
        .await;
    assert!(value(&p99) > 0.0 && value(&p99) <= 10.0, "p99 of {live_label}: {p99}");

    let dead_label = dead.to_string();
    let errors = prometheus
        .until("request_errors_total", |s| s["metric"]["backend"] == dead_label.as_str() && value(s) >= 1.0)
        .await;
    assert_eq!(errors["metric"]["error_type"], "connect", "{errors}");

    // The shipped recording rules evaluate against the proxy's own series.
    let recorded = prometheus
        .until("lb:request_duration_seconds:p99_5m", |s| s["metric"]["backend"] == live_label.as_str())
        .await;
    assert!(value(&recorded).is_finite(), "{recorded}");
    prometheus.until("lb:request_errors:rate5m", |s| s["metric"]["error_type"] == "connect").await;

    traffic.abort();
    let _ = traffic.await;
    proxy.shutdown().await;
    live.kill().await;
}
