//! Balls into bins: with two choices the fullest bin is far below the one-choice maximum.

use lb_algorithms::{PowerOfTwoChoices, WeightedRandom};
use lb_core::{Balancer, BalancerExt, Endpoint, EndpointSet, PickContext, Timestamp};

const N: usize = 10_000;

fn bins() -> EndpointSet {
    let eps = (0..N).map(|i| {
        let ip = std::net::Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8);
        Endpoint::new(std::net::SocketAddr::from((ip, 80)))
    });
    EndpointSet::new(eps, Timestamp::ZERO)
}

/// Throws `N` balls (requests that never finish) and returns the fullest bin.
fn max_load(b: &impl Balancer) -> u32 {
    let mut held = Vec::with_capacity(N);
    for _ in 0..N {
        held.push(b.pick(&PickContext::new()).unwrap());
    }
    b.endpoints().iter().map(|m| m.state().in_flight()).max().unwrap()
}

#[test]
fn two_choices_beat_one() {
    let one = max_load(&WeightedRandom::new(bins()));
    let two = max_load(&PowerOfTwoChoices::new(bins()));
    // Theory at n = m = 10^4: about ln n / ln ln n ≈ 4.2 (in practice 6-8) with one
    // choice, ln ln n / ln 2 + O(1) ≈ 3 with two.
    assert!(two <= 4, "two choices: {two}");
    assert!(one >= 5, "one choice: {one}");
    assert!(two < one);
}
