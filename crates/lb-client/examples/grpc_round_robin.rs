//! The guide's §3.2 gRPC client with `round_robin`, on lb-client: a
//! balanced channel that a tonic-generated client uses like any channel.
//!
//! Run: `cargo run -p lb-client --example grpc_round_robin` (three local
//! servers), or pass a gRPC DNS target such as `dns:///echo.internal:50051`
//! to resolve real servers (re-resolved at the records' TTL).

#[path = "../tests/support/grpc.rs"]
mod grpc;

use lb_client::grpc::BalancedChannel;
use lb_core::Endpoint;

use grpc::echo::SayRequest;
use grpc::echo::echo_client::EchoClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut servers = Vec::new();
    // gRPC's `round_robin` policy; `BalancedChannel::builder(name, algorithm)` takes any other.
    let builder = BalancedChannel::round_robin("echo");
    let builder = match std::env::args().nth(1) {
        Some(target) => builder.dns(&target)?,
        None => {
            for name in ["echo-1", "echo-2", "echo-3"] {
                servers.push(grpc::GrpcBackend::start(name).await);
            }
            builder.endpoints(servers.iter().map(|s| Endpoint::new(s.addr)))
        }
    };
    let mut client = EchoClient::new(builder.build()?);
    for i in 0..9 {
        let reply = client.say(SayRequest { text: format!("hello {i}") }).await?.into_inner();
        println!("{} answered {}", reply.server, reply.text);
    }
    for mut server in servers {
        server.stop().await;
    }
    Ok(())
}
