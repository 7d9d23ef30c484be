//! Compatibility with the peer crates we measure against: same inputs, same answers.

mod common;

use lb_algorithms::{KetamaRing, jump_bucket};
use lb_core::{Balancer, Endpoint, EndpointSet, PickContext, Timestamp};

#[test]
fn ketama_ring_matches_pingora_ketama_point_for_point() {
    // pingora-ketama reproduces nginx's `hash ... consistent` ring for IPv4.
    let addrs: Vec<std::net::SocketAddr> =
        (1..=9).map(|i| format!("10.0.0.{i}:443").parse().unwrap()).collect();
    let weights = [100, 1, 3, 7, 1, 2, 50, 1, 9];
    let buckets: Vec<_> =
        addrs.iter().zip(weights).map(|(&a, w)| pingora_ketama::Bucket::new(a, w)).collect();
    let peer = pingora_ketama::Continuum::new(&buckets);
    let set = EndpointSet::new(
        addrs.iter().zip(weights).map(|(&a, w)| Endpoint::new(a).with_weight(w)),
        Timestamp::ZERO,
    );
    let ours = KetamaRing::new(set);
    for k in 0..5_000 {
        let key = format!("/path/{k}");
        let ours = ours.select(&PickContext::new().with_key(key.as_bytes())).unwrap();
        let ours = ours_address(&ours_set(&addrs, &weights), ours);
        assert_eq!(Some(ours), peer.node(key.as_bytes()), "{key}");
    }
}

fn ours_set(addrs: &[std::net::SocketAddr], weights: &[u32]) -> EndpointSet {
    EndpointSet::new(
        addrs.iter().zip(weights).map(|(&a, &w)| Endpoint::new(a).with_weight(w)),
        Timestamp::ZERO,
    )
}

fn ours_address(set: &EndpointSet, index: usize) -> std::net::SocketAddr {
    match set.get(index).unwrap().endpoint().address() {
        lb_core::Address::Socket(a) => *a,
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn jump_matches_the_reference_crate() {
    for key in (0..2_000u64).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
        for n in [1u32, 2, 7, 10, 100, 1000] {
            assert_eq!(jump_bucket(key, n), jump_consistent_hash::hash(key, n as usize));
        }
    }
}

/// The key whose first generator step gives `next` (the multiplier is odd,
/// so it has an inverse modulo 2^64, found by Newton's iteration).
fn key_stepping_to(next: u64) -> u64 {
    const MULTIPLIER: u64 = 2_862_933_555_777_941_757;
    let mut inverse = MULTIPLIER;
    for _ in 0..6 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(MULTIPLIER.wrapping_mul(inverse)));
    }
    next.wrapping_sub(1).wrapping_mul(inverse)
}

#[test]
fn jump_matches_the_reference_crate_at_the_extremes() {
    // Steps whose top 31 bits are tiny make the jumps huge: only the exact
    // `(key >> 33) + 1` divisor lands where the reference does.
    for top in [0u64, 1, 2, 3, 1000] {
        let key = key_stepping_to((top << 33) | 12_345);
        for n in [u32::MAX, 1 << 31, (1 << 30) + 1, 1000] {
            assert_eq!(jump_bucket(key, n), jump_consistent_hash::hash(key, n as usize), "top {top}, n {n}");
        }
    }
}
