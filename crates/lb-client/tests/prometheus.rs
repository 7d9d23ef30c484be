//! The client pool's metrics scraped by a real Prometheus (Debian's, installed
//! by `cargo xtask test`) the way the proxy's are: the `pool_metrics`
//! example runs, and the same queries and the same shipped recording rules
//! answer per backend.

#[allow(dead_code)] // Only `run` is used here; `main` is the example's.
#[path = "../examples/pool_metrics.rs"]
mod example;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_proxy::testing::prometheus::{Prometheus, value};

fn rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/prometheus/rules.yml")
}

/// A loopback address that refuses connections: bound, never listening,
/// and kept bound for the test's life so no server is given it.
fn refused_address() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_pools_latency_and_errors_per_backend_with_the_proxys_queries() {
    let metrics_at = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap();
    let refusing = refused_address();
    let traffic = tokio::spawn(example::run(metrics_at, refusing, 3_000, Duration::from_millis(5)));
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), metrics_at, &[&rules()]);

    let p99 = prometheus
        .until(
            "histogram_quantile(0.99, sum by (backend, le) (rate(request_duration_seconds_bucket[10s])))",
            |s| s["metric"]["backend"] != refusing.to_string().as_str() && value(s).is_finite(),
        )
        .await;
    assert!(value(&p99) > 0.0 && value(&p99) <= 10.0, "{p99}");

    let refused = refusing.to_string();
    let errors = prometheus
        .until("request_errors_total", |s| s["metric"]["backend"] == refused.as_str() && value(s) >= 1.0)
        .await;
    assert_eq!(errors["metric"]["error_type"], "connect", "{errors}");
    prometheus
        .until("requests_total", |s| s["metric"]["upstream"] == "users" && s["metric"]["status"] == "200")
        .await;

    // The rules written for the proxy evaluate on the client's series as they are.
    let recorded = prometheus
        .until("lb:request_duration_seconds:p99_5m", |s| s["metric"]["backend"] != refused.as_str())
        .await;
    assert!(value(&recorded).is_finite(), "{recorded}");
    prometheus.until("lb:request_errors:rate5m", |s| s["metric"]["error_type"] == "connect").await;

    assert!(!traffic.is_finished(), "the example stopped early: {:?}", traffic.await);
    traffic.abort();
}
