//! One slow backend of five: load-aware picking sends it far less than
//! round robin does. Counts only, never timings.

mod support;

use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::Pool;
use support::endpoint;
use support::http::Backend;

/// Sends `workers * per_worker` requests concurrently and returns the slow
/// backend's share of them.
async fn slow_share(algorithm: Algorithm) -> f64 {
    let mut servers = Vec::new();
    for i in 0..4 {
        servers.push(Backend::start(&format!("fast{i}"), Duration::ZERO).await);
    }
    let slow = Backend::start("slow", Duration::from_millis(50)).await;
    let pool = Pool::builder("slow-test", algorithm)
        .endpoints(servers.iter().chain([&slow]).map(|b| endpoint(b.addr)))
        .build()
        .unwrap();
    let (workers, per_worker) = (8, 40);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let pool = pool.clone();
        tasks.spawn(async move {
            for _ in 0..per_worker {
                let response = pool.get("/work").send().await.unwrap();
                assert_eq!(response.status(), 200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let total: u64 = servers.iter().map(Backend::hits).sum::<u64>() + slow.hits();
    // Every request was served; a GET may have been served twice, when a
    // reset under load made the pool retry it, as its policy allows.
    assert!(total >= workers * per_worker, "{total} served for {} sent", workers * per_worker);
    slow.hits() as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_the_slow_backend_a_much_smaller_share_than_round_robin() {
    let round_robin = slow_share(Algorithm::RoundRobin).await;
    let peak_ewma = slow_share("peak_ewma".parse().unwrap()).await;
    assert!((0.15..=0.25).contains(&round_robin), "round robin gives every backend a fifth: {round_robin}");
    assert!(peak_ewma * 3.0 < round_robin, "peak-EWMA {peak_ewma} vs round robin {round_robin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_on_in_flight_counts_also_avoids_the_slow_backend() {
    let round_robin = slow_share(Algorithm::RoundRobin).await;
    let p2c = slow_share("p2c".parse().unwrap()).await;
    assert!(p2c * 2.0 < round_robin, "P2C {p2c} vs round robin {round_robin}");
}
