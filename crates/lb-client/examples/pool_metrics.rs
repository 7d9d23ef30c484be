//! The client pool's metrics, scraped by Prometheus exactly as lb-proxy's
//! are: the same names and labels (`request_duration_seconds{backend}`,
//! `request_errors_total{backend,error_type}`, `requests_total`, ...), so the
//! recording and alerting rules in `docs/prometheus/rules.yml` fit both.
//!
//! The pool records through the `metrics` facade; this example installs
//! `metrics-exporter-prometheus` with its HTTP listener, and sends traffic to
//! two live backends and one that refuses connections.
//!
//! Run: `cargo run -p lb-client --example pool_metrics -- 127.0.0.1:9464 6000`
//! (the address to scrape, and how many calls), then scrape
//! `http://127.0.0.1:9464/metrics` (a `static_configs` target in
//! prometheus.yml) and ask, for instance,
//! `histogram_quantile(0.99, sum by (backend, le) (rate(request_duration_seconds_bucket[1m])))`.
//! `tests/prometheus.rs` does that against a real Prometheus.

#[path = "../tests/support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::{Pool, telemetry};
use lb_core::Endpoint;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// What the traffic got.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Calls answered 200.
    pub(crate) ok: usize,
    /// Calls that failed after the pool's retries.
    pub(crate) failed: usize,
}

/// Exposes the process's metrics at `http://{metrics_at}/metrics`, then
/// sends `calls` GETs through a round-robin pool, one every `pace`, over two
/// live backends and `refusing` (an address that refuses connections).
pub(crate) async fn run(
    metrics_at: SocketAddr,
    refusing: SocketAddr,
    calls: usize,
    pace: Duration,
) -> Result<Traffic, Box<dyn std::error::Error + Send + Sync>> {
    PrometheusBuilder::new()
        .with_http_listener(metrics_at)
        .set_buckets_for_metric(
            Matcher::Full(telemetry::REQUEST_DURATION_SECONDS.to_string()),
            &telemetry::DURATION_BUCKETS,
        )?
        .install()?;
    telemetry::describe();

    let live =
        [http::Backend::start("a", Duration::ZERO).await, http::Backend::start("b", Duration::ZERO).await];
    let endpoints = live.iter().map(|b| b.addr).chain([refusing]).map(Endpoint::new);
    // Default resilience: the guide's passive check ejects the refusing
    // endpoint after its sixth failure, and GETs are retried elsewhere.
    let pool = Pool::builder("users", Algorithm::RoundRobin).endpoints(endpoints).build()?;

    let mut traffic = Traffic::default();
    for i in 0..calls {
        match pool.get(&format!("http://users/v1/users/{i}")).send().await {
            Ok(response) if response.status().is_success() => traffic.ok += 1,
            _ => traffic.failed += 1,
        }
        tokio::time::sleep(pace).await;
    }
    Ok(traffic)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The address to scrape: the first argument, else a free loopback port.
    let metrics_at = match std::env::args().nth(1) {
        Some(address) => address.parse()?,
        None => std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?,
    };
    let calls = match std::env::args().nth(2) {
        Some(calls) => calls.parse()?,
        None => 500,
    };
    // A port bound and never listened on refuses connections.
    let refusing = tokio::net::TcpSocket::new_v4()?;
    refusing.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    println!("scrape http://{metrics_at}/metrics while {calls} calls go out, 10 ms apart");
    let traffic = run(metrics_at, refusing.local_addr()?, calls, Duration::from_millis(10)).await?;
    println!("{} ok, {} failed", traffic.ok, traffic.failed);
    Ok(())
}
