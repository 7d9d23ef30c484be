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

/// A loopback address that refuses connections: a socket bound there and
/// never listening. It stays bound for the life of the test process, so no
/// other test's server can be given the same port (a released port can be,
/// and then the "dead" endpoint answers).
pub fn refused_address() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind("127.0.0.1:0".parse().expect("an address")).expect("bind a port");
    let addr = socket.local_addr().expect("a bound address");
    std::mem::forget(socket);
    addr
}
