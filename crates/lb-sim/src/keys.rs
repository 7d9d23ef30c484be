//! Keys moved when the set changes: how much affinity a scale-up or
//! scale-down costs each hashing algorithm.

use std::net::SocketAddr;

use lb_algorithms::Algorithm;
use lb_core::{Balancer, Build, Endpoint, EndpointSet, PickContext, Timestamp};

/// The share of `keys` keys (0 to 1) whose owner changes when the set of
/// `n` endpoints loses its last endpoint (`added = false`) or gains an
/// `n + 1`-th (`added = true`). The ideal is `1/n` for a removal and
/// `1/(n+1)` for an addition: only the keys of the endpoint that left, or
/// that the newcomer takes.
pub fn keys_moved(algorithm: &Algorithm, n: usize, keys: u32, added: bool) -> f64 {
    let endpoints = |count: usize| {
        (0..count)
            .map(|i| Endpoint::new(SocketAddr::from(([10, 2, (i / 250) as u8, (i % 250) as u8 + 1], 80))))
    };
    let before = algorithm.build(EndpointSet::new(endpoints(n), Timestamp::ZERO));
    let after_n = if added { n + 1 } else { n.saturating_sub(1) };
    let after = algorithm.build(EndpointSet::new(endpoints(after_n), Timestamp::ZERO));
    let owner = |b: &lb_algorithms::AnyBalancer, key: u32| {
        let index = b.select(&PickContext::new().with_key(&key.to_le_bytes()))?;
        Some(b.endpoints().get(index)?.endpoint().id().clone())
    };
    let moved = (0..keys).filter(|&k| owner(&before, k) != owner(&after, k)).count();
    moved as f64 / f64::from(keys.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_exactly_the_keys_of_the_endpoint_that_left() {
        let rendezvous: Algorithm = "rendezvous".parse().unwrap();
        let removed = keys_moved(&rendezvous, 10, 20_000, false);
        assert!((removed - 0.1).abs() < 0.01, "{removed}");
        let added = keys_moved(&rendezvous, 10, 20_000, true);
        assert!((added - 1.0 / 11.0).abs() < 0.01, "{added}");
    }

    #[test]
    fn round_robin_keeps_no_affinity_worth_measuring() {
        // Keys mean nothing to it: the owner of a key is whoever is next.
        let rr: Algorithm = "round_robin".parse().unwrap();
        assert!(keys_moved(&rr, 10, 1_000, false) > 0.5);
    }
}
