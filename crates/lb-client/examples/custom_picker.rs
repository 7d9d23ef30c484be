//! The guide's §4.3 custom gRPC picker, on lb-client: any `Balancer` is a
//! picker. This one rotates like the Go `customPicker`, but skips endpoints
//! that are ejected or excluded, with no lock (one atomic counter).
//!
//! Run: `cargo run -p lb-client --example custom_picker`

#[path = "../tests/support/grpc.rs"]
mod grpc;

use std::sync::atomic::{AtomicUsize, Ordering};

use lb_client::grpc::BalancedChannel;
use lb_core::{Balancer, Build, Endpoint, EndpointSet, PickContext};

use grpc::echo::SayRequest;
use grpc::echo::echo_client::EchoClient;

/// The picker: the next eligible endpoint after the last one picked.
struct CustomPicker {
    endpoints: EndpointSet,
    current: AtomicUsize,
}

impl Balancer for CustomPicker {
    fn endpoints(&self) -> &EndpointSet {
        &self.endpoints
    }

    fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let n = self.endpoints.len();
        let start = self.current.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|step| (start + step) % n).find(|&i| self.endpoints.is_eligible(i, ctx))
    }
}

/// The builder: called off the hot path whenever discovery changes the set.
struct CustomBalancer;

impl Build for CustomBalancer {
    type Output = CustomPicker;

    fn build(&self, endpoints: EndpointSet) -> CustomPicker {
        CustomPicker { endpoints, current: AtomicUsize::new(0) }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        servers.push(grpc::GrpcBackend::start(name).await);
    }
    let channel = BalancedChannel::builder("echo", CustomBalancer)
        .endpoints(servers.iter().map(|s| Endpoint::new(s.addr)))
        .build()?;
    let mut client = EchoClient::new(channel);
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(client.say(SayRequest { text: "hi".into() }).await?.into_inner().server);
    }
    println!("picked in turn: {}", order.join(" "));
    for mut server in servers {
        server.stop().await;
    }
    Ok(())
}
