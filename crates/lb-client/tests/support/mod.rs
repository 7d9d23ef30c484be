//! Real in-process servers on 127.0.0.1:0 for the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod grpc;
pub mod http;
pub mod metrics;

use std::net::SocketAddr;

use lb_core::Endpoint;

/// An endpoint for a loopback address.
pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::new(addr)
}

/// A loopback address nothing listens on: bound, then released.
pub fn refused_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("a bound address")
}
