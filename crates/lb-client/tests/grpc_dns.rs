//! The balanced channel resolving a `dns://` target through a real dnsmasq
//! on 127.0.0.1 at an ephemeral port, as gRPC's `dns:///name:port`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::grpc::BalancedChannel;
use lb_discovery::testing::Dnsmasq;
use support::grpc::GrpcBackend;
use support::grpc::echo::SayRequest;
use support::grpc::echo::echo_client::EchoClient;

/// Three servers on 127.0.0.31-33 sharing one port, as DNS A records need.
async fn three_on_one_port() -> Vec<GrpcBackend> {
    for _ in 0..20 {
        let first = GrpcBackend::start_on("s1", SocketAddr::from(([127, 0, 0, 31], 0))).await.expect("bind");
        let port = first.addr.port();
        let second = GrpcBackend::start_on("s2", SocketAddr::from(([127, 0, 0, 32], port))).await;
        let third = GrpcBackend::start_on("s3", SocketAddr::from(([127, 0, 0, 33], port))).await;
        if let (Ok(second), Ok(third)) = (second, third) {
            return vec![first, second, third];
        }
    }
    panic!("no port free on all three addresses after 20 tries");
}

#[tokio::test]
async fn a_dns_target_balances_over_every_address() {
    let servers = three_on_one_port().await;
    let mut records = vec!["--local=/test/".to_string()];
    records.extend(servers.iter().map(|s| format!("--host-record=echo.test,{}", s.addr.ip())));
    let dns = Dnsmasq::start(&records);
    let dns_port = dns.port();
    let target = format!("dns://127.0.0.1:{dns_port}/echo.test:{}", servers[0].addr.port());
    let channel =
        BalancedChannel::builder("echo", Algorithm::RoundRobin).dns(&target).unwrap().build().unwrap();

    // Bounded wait for the first resolution (dnsmasq may still be starting: the source retries).
    for _ in 0..400 {
        if channel.endpoints().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(channel.endpoints().len(), 3, "resolved all three addresses");
    let mut client = EchoClient::new(channel);
    for i in 0..300 {
        let reply = client.say(SayRequest { text: format!("{i}") }).await.unwrap().into_inner();
        assert_eq!(reply.text, format!("{i}"));
    }
    let hits: Vec<u64> = servers.iter().map(GrpcBackend::hits).collect();
    assert_eq!(hits, [100, 100, 100]);
}
