//! Shared helpers for the integration tests.

#![allow(dead_code, unreachable_pub)]

use lb_core::{Balancer, Endpoint, EndpointId, EndpointSet, PickContext, Timestamp};

/// Endpoints `ep-00000`.. at 10.x.y.z:80 with the given weights.
pub fn weighted_set(weights: &[u32]) -> EndpointSet {
    EndpointSet::new(weights.iter().enumerate().map(|(i, &w)| endpoint(i).with_weight(w)), Timestamp::ZERO)
}

/// `n` endpoints of weight 1.
pub fn set_of(n: usize) -> EndpointSet {
    weighted_set(&vec![1; n])
}

/// Endpoint number `i`.
pub fn endpoint(i: usize) -> Endpoint {
    let ip = std::net::Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
    Endpoint::new(std::net::SocketAddr::from((ip, 80))).with_id(format!("ep-{i:05}").as_str())
}

/// The id of the endpoint a keyed pick lands on.
pub fn owner_id(b: &impl Balancer, key: &[u8]) -> Option<EndpointId> {
    let i = b.select(&PickContext::new().with_key(key))?;
    Some(b.endpoints().get(i)?.endpoint().id().clone())
}

/// The keys used for disruption measurements.
pub fn keys(count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|k| format!("key-{k}").into_bytes()).collect()
}

/// Every algorithm a config can name, with default parameters (wrappers over
/// a few inners too).
pub const ALGORITHM_NAMES: &[&str] = &[
    "round_robin",
    "weighted_round_robin",
    "stride",
    "random",
    "least_conn",
    "p2c",
    "peak_ewma",
    "ring_hash",
    "fnv_ring",
    "maglev",
    "jump",
    "rendezvous",
    "bounded_load",
    "bounded_load:maglev",
    "slow_start",
    "slow_start:p2c",
    "slow_start:peak_ewma",
    "slow_start:bounded_load",
];
