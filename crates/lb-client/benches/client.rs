//! `cargo xtask bench client`: what the pool costs per request, and what
//! load-aware picking buys when one backend is slow.
//!
//! 1. Overhead: the pool against bare reqwest, both sending GET to the same
//!    loopback hyper server over a kept-alive connection, in the same run.
//! 2. One slow backend of five (50 ms; the others 2 ms): p50 and p99 of
//!    2000 requests from 8 concurrent callers for round robin, P2C and P2C
//!    with peak-EWMA, next to an all-healthy baseline.

#[path = "../tests/support/http.rs"]
mod http;

use std::time::{Duration, Instant};

use criterion::Criterion;
use lb_algorithms::Algorithm;
use lb_client::Pool;
use lb_core::Endpoint;

fn overhead(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let server = runtime.block_on(http::Backend::start("bench", Duration::ZERO));
    let url = format!("http://{}/ping", server.addr);
    // reqwest's rustls backend is built without a provider; the pool installs ring, so must bare reqwest.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bare = reqwest::Client::builder().no_proxy().tcp_nodelay(true).build().expect("a client");
    let pool = runtime.block_on(async {
        Pool::builder("bench", Algorithm::RoundRobin)
            .endpoints([Endpoint::new(server.addr)])
            .build()
            .expect("a pool")
    });
    let mut group = c.benchmark_group("client_overhead");
    group.bench_function("bare_reqwest", |b| {
        b.to_async(runtime).iter(|| async {
            let response = bare.get(&url).send().await.expect("an answer");
            response.bytes().await.expect("a body")
        })
    });
    group.bench_function("lb_client_pool", |b| {
        b.to_async(runtime).iter(|| async {
            let response = pool.get("/ping").send().await.expect("an answer");
            response.bytes().await.expect("a body")
        })
    });
    group.finish();
    interleaved(runtime, &bare, &url, &pool);
}

/// The same comparison, alternating bare and pool in rounds of sequential
/// requests so both see the same machine; prints medians and their ratio.
fn interleaved(runtime: &tokio::runtime::Runtime, bare: &reqwest::Client, url: &str, pool: &Pool<Algorithm>) {
    const ROUNDS: usize = 9;
    const REQUESTS: u32 = 2000;
    let (mut bare_us, mut pool_us, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        for _ in 0..ROUNDS {
            let started = Instant::now();
            for _ in 0..REQUESTS {
                bare.get(url).send().await.expect("an answer").bytes().await.expect("a body");
            }
            let b = started.elapsed().as_secs_f64() * 1e6 / f64::from(REQUESTS);
            let started = Instant::now();
            for _ in 0..REQUESTS {
                pool.get("/ping").send().await.expect("an answer").bytes().await.expect("a body");
            }
            let p = started.elapsed().as_secs_f64() * 1e6 / f64::from(REQUESTS);
            bare_us.push(b);
            pool_us.push(p);
            ratios.push(p / b);
        }
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\npool overhead, interleaved ({ROUNDS} rounds x {REQUESTS} sequential GETs each)");
    println!("| client | median per request (us) |");
    println!("|---|---|");
    println!("| bare reqwest | {:.1} |", median(&mut bare_us));
    println!("| lb-client pool | {:.1} |", median(&mut pool_us));
    println!("| ratio pool / bare (median of per-round ratios) | {:.3} |", median(&mut ratios));
}

/// Latencies of `workers * per_worker` requests, in microseconds, sorted.
async fn latencies(algorithm: Algorithm, slow: bool) -> Vec<u64> {
    let mut backends = Vec::new();
    for i in 0..5 {
        let delay = if slow && i == 4 { Duration::from_millis(50) } else { Duration::from_millis(2) };
        backends.push(http::Backend::start(&format!("b{i}"), delay).await);
    }
    let pool = Pool::builder("slow", algorithm)
        .endpoints(backends.iter().map(|b| Endpoint::new(b.addr)))
        .build()
        .expect("a pool");
    let (workers, per_worker) = (8, 250);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut took = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let started = Instant::now();
                pool.get("/").send().await.expect("an answer").bytes().await.expect("a body");
                took.push(started.elapsed().as_micros() as u64);
            }
            took
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("a worker"));
    }
    all.sort_unstable();
    all
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn slow_backend(runtime: &tokio::runtime::Runtime) {
    let cases: [(&str, Algorithm, bool); 4] = [
        ("all healthy, round robin (baseline)", Algorithm::RoundRobin, false),
        ("round robin", Algorithm::RoundRobin, true),
        ("p2c (least in flight)", "p2c".parse().expect("a name"), true),
        ("p2c + peak-EWMA", "peak_ewma".parse().expect("a name"), true),
    ];
    println!("\nslow backend (1 of 5 at 50 ms, others 2 ms; 8 callers x 250 requests)");
    println!("| algorithm | p50 (ms) | p99 (ms) | p99 / baseline p99 |");
    println!("|---|---|---|---|");
    let mut baseline = None;
    for (name, algorithm, slow) in cases {
        let sorted = runtime.block_on(latencies(algorithm, slow));
        let (p50, p99) = (percentile(&sorted, 0.50), percentile(&sorted, 0.99));
        let base = *baseline.get_or_insert(p99);
        println!("| {name} | {p50:.2} | {p99:.2} | {:.2} |", p99 / base);
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    overhead(&mut criterion, &runtime);
    criterion.final_summary();
    slow_backend(&runtime);
}
