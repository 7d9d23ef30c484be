//! Traffic spreads as each algorithm family promises, through the real proxy.

mod common;

use std::collections::BTreeMap;

use common::{Backend, config, get, proxy};

async fn spread(
    algorithm: &str,
    weights: [u32; 3],
    requests: usize,
    headers: &[(&str, &str)],
) -> BTreeMap<String, usize> {
    let backends = [Backend::named("a").await, Backend::named("b").await, Backend::named("c").await];
    let list: Vec<_> = backends.iter().zip(weights).map(|(b, w)| (b.addr, w)).collect();
    let extra = match headers.first() {
        None => "",
        Some(("cookie", _)) => "hash_key = { cookie = \"session\" }",
        Some(_) => "hash_key = { header = \"x-user\" }",
    };
    let proxy = proxy(&config(algorithm, &list, extra)).await;
    let mut counts = BTreeMap::new();
    for _ in 0..requests {
        let (status, body) = get(proxy.listen_addresses()[0], "/", headers).await;
        assert_eq!(status, 200);
        *counts.entry(body).or_insert(0) += 1;
    }
    proxy.shutdown().await;
    for b in backends {
        b.kill().await;
    }
    counts
}

#[tokio::test]
async fn weighted_round_robin_follows_the_weights_exactly() {
    let counts = spread("weighted_round_robin", [2, 1, 1], 200, &[]).await;
    assert_eq!(counts, BTreeMap::from([("a".into(), 100), ("b".into(), 50), ("c".into(), 50)]));
}

#[tokio::test]
async fn round_robin_ignores_weights() {
    let counts = spread("round_robin", [5, 1, 1], 150, &[]).await;
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [50, 50, 50]);
}

#[tokio::test]
async fn load_aware_and_random_algorithms_reach_every_backend() {
    // Sequential requests leave every backend idle, so ties decide; all must serve.
    for algorithm in ["least_conn", "p2c", "random"] {
        let counts = spread(algorithm, [1, 1, 1], 120, &[]).await;
        assert_eq!(counts.len(), 3, "{algorithm} used every backend: {counts:?}");
        assert_eq!(counts.values().sum::<usize>(), 120);
    }
    // Peak-EWMA prefers measured fast endpoints over the unmeasured default RTT.
    let counts = spread("peak_ewma", [1, 1, 1], 120, &[]).await;
    assert!(counts.len() >= 2, "peak_ewma explored: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 120);
}

#[tokio::test]
async fn hash_algorithms_stick_to_one_backend_per_key() {
    for algorithm in ["ring_hash", "maglev", "rendezvous", "fnv_ring"] {
        let mut owners = BTreeMap::new();
        // Twelve keys: with six, all landing on one backend was a few-percent flake.
        for user in 0..12 {
            let user = format!("user-{user}");
            let counts = spread(algorithm, [1, 1, 1], 5, &[("x-user", &user)]).await;
            assert_eq!(counts.len(), 1, "{algorithm}: {user} always lands on one backend: {counts:?}");
            owners.insert(user, counts.into_keys().next().unwrap());
        }
        let distinct: std::collections::BTreeSet<_> = owners.values().collect();
        assert!(
            distinct.len() >= 2,
            "{algorithm}: twelve keys spread over more than one backend: {owners:?}"
        );
    }
}

#[tokio::test]
async fn a_cookie_keeps_a_session_on_one_backend() {
    let mut owners = std::collections::BTreeSet::new();
    // Twelve sessions: with six, all on one backend was a 1-in-243 flake.
    for session in 1..=12 {
        let cookie = format!("theme=dark; session=s{session}");
        let counts = spread("ring_hash", [1, 1, 1], 10, &[("cookie", &cookie)]).await;
        assert_eq!(counts.len(), 1, "session {session} sticks: {counts:?}");
        owners.insert(counts.into_keys().next().unwrap());
    }
    assert!(owners.len() >= 2, "sessions spread: {owners:?}");
}

/// nginx's behaviour: with one of three endpoints ejected, the two survivors
/// share the rotation evenly (never `b2 b2 b3`: the ejected one's turns are
/// not handed to its neighbour).
#[tokio::test]
async fn survivors_of_an_ejection_share_round_robin_evenly() {
    let bad = Backend::start(|_req| async {
        let mut r = http::Response::new(common::full("bad"));
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await;
    let (b2, b3) = (Backend::named("b2").await, Backend::named("b3").await);
    let extra = "retry.attempts = 1\n[upstreams.web.outlier_detection]\nconsecutive_5xx = 1\nmax_ejection_percent = 50";
    let proxy = proxy(&config("round_robin", &[(bad.addr, 1), (b2.addr, 1), (b3.addr, 1)], extra)).await;
    let addr = proxy.listen_addresses()[0];
    // Until the bad endpoint has answered (and been ejected), whatever the rotation's start.
    for _ in 0..3 {
        if bad.requests.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        get(addr, "/", &[]).await;
    }
    assert_eq!(bad.requests.load(std::sync::atomic::Ordering::SeqCst), 1, "one 5xx ejected it");
    let mut order = Vec::new();
    for _ in 0..12 {
        order.push(get(addr, "/", &[]).await.1);
    }
    assert!(order.windows(2).all(|w| w[0] != w[1]), "the survivors alternate: {order:?}");
    assert_eq!(order.iter().filter(|b| *b == "b2").count(), 6, "{order:?}");
    proxy.shutdown().await;
    for b in [bad, b2, b3] {
        b.kill().await;
    }
}
