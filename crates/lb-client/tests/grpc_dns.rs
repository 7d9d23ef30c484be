//! The balanced channel resolving a `dns://` target through a real dnsmasq
//! on 127.0.0.1 at an ephemeral port, as gRPC's `dns:///name:port`.

mod support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::grpc::BalancedChannel;
use support::grpc::GrpcBackend;
use support::grpc::echo::SayRequest;
use support::grpc::echo::echo_client::EchoClient;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A running dnsmasq, killed (and reaped) when dropped.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(port: u16, records: &[String]) -> Dnsmasq {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: install the `dnsmasq` Debian package (`cargo xtask test` does)"
        );
        let child = Command::new(DNSMASQ)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                "--local-ttl=1",
                "--local=/test/",
                &format!("--port={port}"),
            ])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dnsmasq starts");
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (dnsmasq serves both).
fn free_dns_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP after 50 tries");
}

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
    let dns_port = free_dns_port();
    let records: Vec<String> =
        servers.iter().map(|s| format!("--host-record=echo.test,{}", s.addr.ip())).collect();
    let _dns = Dnsmasq::start(dns_port, &records);
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
