//! gRPC health checking (`grpc.health.v1.Health/Check`), as Envoy and
//! grpc-go do it, against real tonic servers whose serving status flips:
//! the balanced channel's active checks and lb-proxy's for an h2c upstream
//! take an endpoint out when it stops serving and bring it back.

use std::net::SocketAddr;
use std::time::Duration;

use lb_client::ResilienceConfig;
use lb_client::grpc::BalancedChannel;
use lb_core::{Endpoint, HealthStatus};
use lb_health::{ActiveCheckConfig, InitialState};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

const SERVICE: &str = "echo.Echo";

/// A tonic server of the health service only, reporting `SERVICE` as serving.
async fn health_server() -> (SocketAddr, HealthReporter) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status(SERVICE, ServingStatus::Serving).await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (address, reporter)
}

fn grpc_check() -> ActiveCheckConfig {
    ActiveCheckConfig {
        grpc_service: Some(SERVICE.to_string()),
        interval: Duration::from_millis(50),
        jitter: Duration::ZERO,
        timeout: Duration::from_millis(500),
        rise: 1,
        fall: 1,
        initial: InitialState::Healthy,
        ..ActiveCheckConfig::default()
    }
}

/// Polls `status` (every 20 ms, at most 5 s) until it is `wanted`.
async fn becomes(wanted: HealthStatus, status: impl Fn() -> Option<HealthStatus>) -> bool {
    for _ in 0..250 {
        if status() == Some(wanted) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn the_balanced_channel_follows_each_servers_grpc_health() {
    let (a, a_health) = health_server().await;
    let (b, _b_health) = health_server().await;
    let resilience = ResilienceConfig { active_check: Some(grpc_check()), ..ResilienceConfig::default() };
    let channel = BalancedChannel::round_robin("echo")
        .endpoints([Endpoint::new(a), Endpoint::new(b)])
        .resilience(resilience)
        .build()
        .unwrap();
    let status_of = |address: SocketAddr| {
        let channel = channel.clone();
        move || channel.endpoints().into_iter().find(|(e, _)| e.address() == &address.into()).map(|(_, s)| s)
    };
    assert!(becomes(HealthStatus::Healthy, status_of(a)).await);
    a_health.set_service_status(SERVICE, ServingStatus::NotServing).await;
    assert!(becomes(HealthStatus::Unhealthy, status_of(a)).await, "NOT_SERVING takes it out");
    assert_eq!(status_of(b)(), Some(HealthStatus::Healthy), "the other server stays in");
    a_health.set_service_status(SERVICE, ServingStatus::Serving).await;
    assert!(becomes(HealthStatus::Healthy, status_of(a)).await, "SERVING brings it back");
}

#[tokio::test]
async fn lb_proxy_checks_an_h2c_upstream_with_the_grpc_health_protocol() {
    let (a, a_health) = health_server().await;
    let (b, _b_health) = health_server().await;
    let text = format!(
        "[admin]\nenabled = false\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"grpc\"\n\
         [upstreams.grpc]\nprotocol = \"h2c\"\ndiscovery.static.endpoints = [\"{a}\", \"{b}\"]\n\
         [upstreams.grpc.health_check]\ngrpc_service = \"{SERVICE}\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\n\
         rise = 1\nfall = 1\n"
    );
    let config = lb_proxy::Config::parse(&text, "grpc-health.toml").unwrap();
    let proxy = lb_proxy::Proxy::new(config).start().await.unwrap();
    let status_of = |address: SocketAddr| {
        let statuses = proxy.endpoint_status("grpc");
        statuses.into_iter().find(|(e, _)| e == &address.to_string()).map(|(_, s)| s)
    };
    assert!(becomes(HealthStatus::Healthy, || status_of(a)).await);
    a_health.set_service_status(SERVICE, ServingStatus::NotServing).await;
    assert!(becomes(HealthStatus::Unhealthy, || status_of(a)).await, "NOT_SERVING takes it out");
    assert_eq!(status_of(b), Some(HealthStatus::Healthy));
    a_health.set_service_status(SERVICE, ServingStatus::Serving).await;
    assert!(becomes(HealthStatus::Healthy, || status_of(a)).await, "SERVING brings it back");
    proxy.shutdown().await;
}
