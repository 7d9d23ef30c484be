//! A real Prometheus (Debian's `prometheus`, installed by `cargo xtask test`)
//! scrapes the admin listener while traffic flows, and its query API answers
//! the queries operators write: p99 latency per backend from the histogram,
//! failed tries per backend and kind, and the recording rules shipped in
//! `docs/prometheus/rules.yml`, which `promtool check rules` accepts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Backend, config, get, proxy};
use lb_proxy::testing::prometheus::{PROMTOOL, Prometheus, value};

fn rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/prometheus/rules.yml")
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
    let dead = common::refused_address(); // Every try there is a connect error.
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
    let prometheus = Prometheus::start(dir.path(), admin, &[&rules()]);
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
