//! Test helpers: small endpoint sets.

use alloc::vec::Vec;

use lb_core::{Endpoint, EndpointSet, HealthFlag, Timestamp};

/// `n` endpoints 10.0.x.y:80 of weight 1.
pub(crate) fn set_of(n: usize) -> EndpointSet {
    weighted_set(&alloc::vec![1; n])
}

/// One endpoint per weight, 10.0.x.y:80 in index order.
pub(crate) fn weighted_set(weights: &[u32]) -> EndpointSet {
    let eps: Vec<Endpoint> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let ip = core::net::Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1);
            Endpoint::new(core::net::SocketAddr::from((ip, 80)))
                .with_id(alloc::format!("ep-{i:05}").as_str())
                .with_weight(w)
        })
        .collect();
    EndpointSet::new(eps, Timestamp::ZERO)
}

/// Ejects the endpoint at `index`.
pub(crate) fn eject(set: &EndpointSet, index: usize) {
    set.get(index).expect("index in set").state().set_flag(HealthFlag::Ejected, true);
}
