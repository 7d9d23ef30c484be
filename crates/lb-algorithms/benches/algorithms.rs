//! Per-pick and build costs of lb-algorithms, side by side with peer crates.
//!
//! Criterion groups measure each of ours; a final summary re-measures each
//! pair (ours, peer) interleaved in this one run and prints `ours ÷ peer`,
//! plus distribution quality (max/mean share, keys moved on one removal).

use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group};
use lb_algorithms::{
    BoundedLoad, FnvRing, JumpHash, KetamaRing, LeastConnections, Maglev, PeakEwma, PowerOfTwoChoices,
    Rendezvous, RoundRobin, SmoothWeightedRoundRobin, StrideScheduler, WeightedRandom, hash_key, jump_bucket,
};
use lb_core::{
    Balancer, BalancerExt, Clock, Endpoint, EndpointSet, HealthFlag, MonotonicClock, Outcome, PickContext,
    Report, Timestamp,
};
use tower::Service;
use weighted_rs::Weight;

const SIZES: [usize; 3] = [10, 100, 1000];

fn addr(i: usize) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80))
}

fn set(n: usize) -> EndpointSet {
    EndpointSet::new((0..n).map(|i| Endpoint::new(addr(i))), Timestamp::ZERO)
}

/// Weights 1..=4 cycling, for the weighted algorithms.
fn weighted(n: usize) -> EndpointSet {
    EndpointSet::new((0..n).map(|i| Endpoint::new(addr(i)).with_weight(1 + (i % 4) as u32)), Timestamp::ZERO)
}

/// 1024 distinct 8-byte keys, cycled through so lookups are not all one cache line.
fn keys() -> Vec<[u8; 8]> {
    (0..1024u64).map(|k| (k.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes()).collect()
}

/// Every algorithm as a boxed balancer with a name, for the generic groups.
fn all_ours(n: usize) -> Vec<(&'static str, Box<dyn Balancer>)> {
    vec![
        ("round_robin", Box::new(RoundRobin::new(set(n)))),
        ("swrr", Box::new(SmoothWeightedRoundRobin::new(weighted(n)))),
        ("stride", Box::new(StrideScheduler::new(weighted(n)))),
        ("random", Box::new(WeightedRandom::new(weighted(n)))),
        ("least_conn", Box::new(LeastConnections::new(set(n)))),
        ("p2c", Box::new(PowerOfTwoChoices::new(set(n)))),
        ("peak_ewma", Box::new(PeakEwma::new(set(n)))),
        ("ring_hash", Box::new(KetamaRing::new(set(n)))),
        ("fnv_ring", Box::new(FnvRing::new(set(n)))),
        ("maglev", Box::new(Maglev::new(set(n)))),
        ("jump", Box::new(JumpHash::new(set(n)))),
        ("rendezvous", Box::new(Rendezvous::new(set(n)))),
        ("bounded_ring", Box::new(BoundedLoad::new(KetamaRing::new(set(n)), 1.25).unwrap())),
    ]
}

fn select(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("select");
    for n in SIZES {
        for (name, b) in all_ours(n) {
            let mut k = 0usize;
            group.bench_function(BenchmarkId::new(name, n), |bench| {
                bench.iter(|| {
                    k = (k + 1) & 1023;
                    black_box(b.select(&PickContext::new().with_key(&keys[k])))
                })
            });
        }
    }
    group.finish();
}

/// Rotations and random draws with every third endpoint down: what passing
/// over down endpoints (without handing their turns to a neighbour) costs.
fn select_third_down(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_third_down");
    for n in SIZES {
        for (name, b) in all_ours(n)
            .into_iter()
            .filter(|(name, _)| ["round_robin", "swrr", "stride", "random", "p2c"].contains(name))
        {
            for m in b.endpoints().iter().step_by(3) {
                m.state().set_flag(HealthFlag::Ejected, true);
            }
            group.bench_function(BenchmarkId::new(name, n), |bench| {
                bench.iter(|| black_box(b.select(&PickContext::new())))
            });
        }
    }
    group.finish();
}

fn pick_complete(c: &mut Criterion) {
    let clock = MonotonicClock::new();
    let mut group = c.benchmark_group("pick_complete");
    for n in SIZES {
        for (name, b) in all_ours(n)
            .into_iter()
            .filter(|(name, _)| ["round_robin", "least_conn", "p2c", "peak_ewma"].contains(name))
        {
            group.bench_function(BenchmarkId::new(name, n), |bench| {
                bench.iter(|| pick_and_complete(&*b, &clock))
            });
        }
    }
    group.finish();
}

/// What tower's `PendingRequests` does per request, and no more: pick, then
/// complete (counting the request in and out), reading no clock.
#[inline]
fn pick_and_complete_untimed<B: Balancer>(b: &B) {
    let pick = b.pick(&PickContext::new()).unwrap();
    pick.complete(Report {
        outcome: Outcome::Success,
        latency: Duration::from_millis(1),
        at: Timestamp::ZERO,
    });
}

/// One request's balancer work as a caller does it: pick, time it, report.
#[inline]
fn pick_and_complete(b: &dyn Balancer, clock: &MonotonicClock) {
    let start = clock.now();
    let pick = b.pick(&PickContext::new()).unwrap();
    let now = clock.now();
    pick.complete(Report { outcome: Outcome::Success, latency: now - start, at: now });
}

fn two_threads(c: &mut Criterion) {
    let keys = Arc::new(keys());
    let mut group = c.benchmark_group("select_2_threads");
    for n in SIZES {
        for (name, b) in all_ours(n) {
            let duo = Duo::new(Arc::from(b), Arc::clone(&keys));
            group
                .bench_function(BenchmarkId::new(name, n), |bench| bench.iter_custom(|iters| duo.run(iters)));
        }
    }
    group.finish();
}

/// Two picking threads, spawned once per balancer and parked between runs,
/// so no thread is spawned or joined inside a timed run.
struct Duo {
    shared: Arc<DuoShared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

struct DuoShared {
    start: std::sync::Barrier,
    end: std::sync::Barrier,
    /// Picks per thread in the next run; 0 tells the threads to exit.
    iters: std::sync::atomic::AtomicU64,
    /// Each thread's own time for its picks in the last run.
    nanos: [std::sync::atomic::AtomicU64; 2],
}

impl Duo {
    fn new(b: Arc<dyn Balancer>, keys: Arc<Vec<[u8; 8]>>) -> Duo {
        use std::sync::atomic::{AtomicU64, Ordering};
        let shared = Arc::new(DuoShared {
            start: std::sync::Barrier::new(3),
            end: std::sync::Barrier::new(3),
            iters: AtomicU64::new(0),
            nanos: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        let threads = (0..2)
            .map(|t| {
                let (b, keys, shared) = (Arc::clone(&b), Arc::clone(&keys), Arc::clone(&shared));
                std::thread::spawn(move || {
                    loop {
                        shared.start.wait();
                        let iters = shared.iters.load(Ordering::Acquire);
                        if iters == 0 {
                            return;
                        }
                        let start = Instant::now();
                        for i in 0..iters as usize {
                            black_box(b.select(&PickContext::new().with_key(&keys[(i + t * 512) & 1023])));
                        }
                        shared.nanos[t].store(start.elapsed().as_nanos() as u64, Ordering::Release);
                        shared.end.wait();
                    }
                })
            })
            .collect();
        Duo { shared, threads }
    }

    /// The longer of the two threads' times for `iters` picks each, both
    /// released at once.
    fn run(&self, iters: u64) -> Duration {
        use std::sync::atomic::Ordering;
        self.shared.iters.store(iters.max(1), Ordering::Release);
        self.shared.start.wait();
        self.shared.end.wait();
        let nanos = self.shared.nanos.iter().map(|n| n.load(Ordering::Acquire)).max().unwrap_or(0);
        Duration::from_nanos(nanos)
    }
}

impl Drop for Duo {
    fn drop(&mut self) {
        self.shared.iters.store(0, std::sync::atomic::Ordering::Release);
        self.shared.start.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    for n in [100, 1000] {
        let s = set(n);
        // Inputs made and outputs dropped outside the timing, on both sides.
        group.bench_function(BenchmarkId::new("maglev_65537", n), |b| {
            b.iter_batched(|| s.clone(), Maglev::new, BatchSize::LargeInput)
        });
        let nodes: Vec<std::net::SocketAddr> = (0..n).map(addr).collect();
        group.bench_function(BenchmarkId::new("peer_maglev_hash_65537", n), |b| {
            b.iter_batched(
                || nodes.clone(),
                |nodes| maglev_hash::MaglevTable::with_capacity(nodes, 65_537),
                BatchSize::LargeInput,
            )
        });
    }
    let s = set(100);
    group.bench_function(BenchmarkId::new("ring_160", 100), |b| {
        b.iter_batched(|| s.clone(), KetamaRing::new, BatchSize::LargeInput)
    });
    let buckets: Vec<_> = (0..100).map(|i| pingora_ketama::Bucket::new(addr(i), 1)).collect();
    group.bench_function(BenchmarkId::new("peer_pingora_ketama", 100), |b| {
        b.iter_batched(|| (), |()| pingora_ketama::Continuum::new(&buckets), BatchSize::LargeInput)
    });
    let w = weighted(100);
    group.bench_function(BenchmarkId::new("swrr", 100), |b| {
        b.iter(|| SmoothWeightedRoundRobin::new(w.clone()))
    });
    group.finish();
}

// ---------- peers, driven without an async runtime ----------

/// A service that answers at once, so only the balancer's work is measured.
#[derive(Clone)]
struct Answer;

impl Service<()> for Answer {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        ready(Ok(()))
    }
}

/// One request through a tower balancer: `poll_ready` (the P2C pick), `call`,
/// and polling the response to completion (which ends the load tracking).
fn tower_request<S: Service<()>>(svc: &mut S, cx: &mut Context<'_>) {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("tower balancer not ready"),
    }
    let fut = pin!(svc.call(()));
    let _ = black_box(fut.poll(cx));
}

type TowerP2c =
    tower::balance::p2c::Balance<tower::discover::ServiceList<Vec<tower::load::PendingRequests<Answer>>>, ()>;
type TowerEwma =
    tower::balance::p2c::Balance<tower::discover::ServiceList<Vec<tower::load::PeakEwma<Answer>>>, ()>;

fn tower_p2c(n: usize) -> TowerP2c {
    let svcs = (0..n).map(|_| tower::load::PendingRequests::new(Answer, Default::default())).collect();
    tower::balance::p2c::Balance::new(tower::discover::ServiceList::new(svcs))
}

fn tower_ewma(n: usize) -> TowerEwma {
    let svcs = (0..n)
        .map(|_| tower::load::PeakEwma::new(Answer, Duration::from_millis(30), 10e9, Default::default()))
        .collect();
    tower::balance::p2c::Balance::new(tower::discover::ServiceList::new(svcs))
}

fn peers(c: &mut Criterion) {
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let clock = MonotonicClock::new();
    let keys = keys();
    let mut group = c.benchmark_group("peers");
    for n in SIZES {
        let mut p2c = tower_p2c(n);
        group.bench_function(BenchmarkId::new("tower_p2c_pending_requests", n), |b| {
            b.iter(|| tower_request(&mut p2c, &mut cx))
        });
        let mut ewma = tower_ewma(n);
        group.bench_function(BenchmarkId::new("tower_p2c_peak_ewma", n), |b| {
            b.iter(|| tower_request(&mut ewma, &mut cx))
        });
        let mut swrr = weighted_rs::SmoothWeight::new();
        for i in 0..n {
            swrr.add(i, 1 + (i % 4) as isize);
        }
        group
            .bench_function(BenchmarkId::new("weighted_rs_smooth", n), |b| b.iter(|| black_box(swrr.next())));
        let nodes: Vec<usize> = (0..n).collect();
        let maglev = maglev_hash::MaglevTable::with_capacity(nodes, 65_537);
        let mut k = 0usize;
        group.bench_function(BenchmarkId::new("maglev_hash_get", n), |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                black_box(maglev.get(&keys[k]))
            })
        });
        let buckets: Vec<_> = (0..n).map(|i| pingora_ketama::Bucket::new(addr(i), 1)).collect();
        let ring = pingora_ketama::Continuum::new(&buckets);
        group.bench_function(BenchmarkId::new("pingora_ketama_node_idx", n), |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                black_box(ring.node_idx(&keys[k]))
            })
        });
        let _ = &clock;
    }
    group.finish();
}

// ---------- the summary: interleaved pairs, ratios, distribution ----------

/// maglev-hash's key hash (`hash_with_seed(key, 2)`): std's `DefaultHasher`
/// fed the seed, then the key, so both sides of the pair hash alike. Out of
/// line, as maglev-hash's own is.
#[inline(never)]
fn sip_seed_2<K: std::hash::Hash + ?Sized>(key: &K) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&2u64, &mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

/// Nanoseconds per call of `f`: the best of 7 batches of about 20 ms (the
/// minimum filters out time the shared machine gave to other processes).
fn ns_per_op(mut f: impl FnMut()) -> f64 {
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() > Duration::from_millis(2) || batch > 1 << 30 {
            break;
        }
        batch *= 4;
    }
    batch *= 10;
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Nanoseconds per build over a batch of about 20 ms: each call timed on
/// its own, its input made (`setup`) and its output dropped outside the
/// timing, on both sides of a pair alike.
fn ns_per_build_batch<I, O>(setup: &mut impl FnMut() -> I, build: &mut impl FnMut(I) -> O) -> f64 {
    let (mut spent, mut calls) = (Duration::ZERO, 0u32);
    while spent < Duration::from_millis(20) || calls < 3 {
        let input = setup();
        let t = Instant::now();
        let output = black_box(build(black_box(input)));
        spent += t.elapsed();
        drop(output);
        calls += 1;
    }
    spent.as_nanos() as f64 / f64::from(calls)
}

/// [`ns_per_op`] for a pair (ours, peer): batches of the two alternate
/// (ours first, then the peer first), so both sides see the same moments of
/// a shared machine; the best batch of each.
fn ns_per_op_pair(mut ours: impl FnMut(), mut theirs: impl FnMut()) -> (f64, f64) {
    fn calibrate(f: &mut impl FnMut()) -> u64 {
        let mut batch = 1u64;
        loop {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            if t.elapsed() > Duration::from_millis(2) || batch > 1 << 30 {
                return batch * 10;
            }
            batch *= 4;
        }
    }
    fn once(f: &mut impl FnMut(), batch: u64) -> f64 {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        t.elapsed().as_nanos() as f64 / batch as f64
    }
    let (a, b) = (calibrate(&mut ours), calibrate(&mut theirs));
    let (mut best_a, mut best_b) = (f64::INFINITY, f64::INFINITY);
    for round in 0..8 {
        if round % 2 == 0 {
            best_a = best_a.min(once(&mut ours, a));
            best_b = best_b.min(once(&mut theirs, b));
        } else {
            best_b = best_b.min(once(&mut theirs, b));
            best_a = best_a.min(once(&mut ours, a));
        }
    }
    (best_a, best_b)
}

/// [`ns_per_build_batch`] for a pair, alternating like [`ns_per_op_pair`].
fn ns_per_build_pair<I, O, J, P>(
    mut setup_ours: impl FnMut() -> I,
    mut ours: impl FnMut(I) -> O,
    mut setup_theirs: impl FnMut() -> J,
    mut theirs: impl FnMut(J) -> P,
) -> (f64, f64) {
    let (mut best_a, mut best_b) = (f64::INFINITY, f64::INFINITY);
    for round in 0..6 {
        let mut a = || best_a = best_a.min(ns_per_build_batch(&mut setup_ours, &mut ours));
        let mut b = || best_b = best_b.min(ns_per_build_batch(&mut setup_theirs, &mut theirs));
        if round % 2 == 0 {
            a();
            b();
        } else {
            b();
            a();
        }
    }
    (best_a, best_b)
}

struct Row {
    what: String,
    ours: f64,
    peer: Option<(&'static str, f64)>,
    target: &'static str,
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n### {title}\n");
    println!("| measurement | ours | peer | peer time | ours ÷ peer | target |");
    println!("|---|---:|---|---:|---:|---|");
    for r in rows {
        match r.peer {
            Some((name, t)) => println!(
                "| {} | {} | {name} | {} | {:.2} | {} |",
                r.what,
                fmt_ns(r.ours),
                fmt_ns(t),
                r.ours / t,
                r.target
            ),
            None => println!("| {} | {} | — | — | — | {} |", r.what, fmt_ns(r.ours), r.target),
        }
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.2} ns")
    }
}

fn summary() {
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let clock = MonotonicClock::new();
    let keys = keys();
    // A plain counter (not an atomic) picks the key, so only the balancer is measured.
    let k = Cell::new(0usize);
    let bump = || {
        k.set(k.get().wrapping_add(1));
        k.get() & 1023
    };
    let next_key = || &keys[bump()];
    let mut rows = Vec::new();

    for n in SIZES {
        let rr = RoundRobin::new(set(n));
        rows.push(Row {
            what: format!("round robin select, n={n}"),
            ours: ns_per_op(|| {
                black_box(rr.select(&PickContext::new()));
            }),
            peer: None,
            target: "≤ 3 ns",
        });

        let swrr = SmoothWeightedRoundRobin::new(weighted(n));
        let mut peer = weighted_rs::SmoothWeight::new();
        for i in 0..n {
            peer.add(i, 1 + (i % 4) as isize);
        }
        let (ours, theirs) = ns_per_op_pair(
            || {
                black_box(swrr.select(&PickContext::new()));
            },
            || {
                black_box(peer.next());
            },
        );
        rows.push(Row {
            what: format!("smooth WRR select, n={n}"),
            ours,
            peer: Some(("weighted-rs SmoothWeight::next, same n and weights", theirs)),
            target: if n == 100 { "≤ 10 ns, ≥ 1.5× peer" } else { "≥ 1.5× peer" },
        });

        let stride = StrideScheduler::new(weighted(n));
        rows.push(Row {
            what: format!("stride select, n={n}"),
            ours: ns_per_op(|| {
                black_box(stride.select(&PickContext::new()));
            }),
            peer: None,
            target: "",
        });
        let random = WeightedRandom::new(weighted(n));
        rows.push(Row {
            what: format!("weighted random select, n={n}"),
            ours: ns_per_op(|| {
                black_box(random.select(&PickContext::new()));
            }),
            peer: None,
            target: "",
        });
        let lc = LeastConnections::new(set(n));
        rows.push(Row {
            what: format!("least conn select, n={n}"),
            ours: ns_per_op(|| {
                black_box(lc.select(&PickContext::new()));
            }),
            peer: None,
            target: "O(n) scan",
        });

        let p2c = PowerOfTwoChoices::new(set(n));
        rows.push(Row {
            what: format!("P2C select, n={n}"),
            ours: ns_per_op(|| {
                black_box(p2c.select(&PickContext::new()));
            }),
            peer: None,
            target: "≤ 5 ns",
        });
        let mut tp2c = tower_p2c(n);
        // tower's PendingRequests reads no clock: neither does ours here.
        let (ours, theirs) =
            ns_per_op_pair(|| pick_and_complete_untimed(&p2c), || tower_request(&mut tp2c, &mut cx));
        rows.push(Row {
            what: format!("P2C pick+complete (no clock read on either side), n={n}"),
            ours,
            peer: Some(("tower p2c + PendingRequests", theirs)),
            target: "≥ 1.5× peer",
        });

        let ewma = PeakEwma::new(set(n));
        rows.push(Row {
            what: format!("peak-EWMA select, n={n}"),
            ours: ns_per_op(|| {
                black_box(ewma.select(&PickContext::new()));
            }),
            peer: None,
            target: "",
        });
        let mut tewma = tower_ewma(n);
        let (ours, theirs) =
            ns_per_op_pair(|| pick_and_complete(&ewma, &clock), || tower_request(&mut tewma, &mut cx));
        rows.push(Row {
            what: format!("peak-EWMA pick+complete, n={n}"),
            ours,
            peer: Some(("tower p2c + PeakEwma", theirs)),
            target: "≥ 1.5× peer",
        });

        let ring = KetamaRing::new(set(n));
        let buckets: Vec<_> = (0..n).map(|i| pingora_ketama::Bucket::new(addr(i), 1)).collect();
        let continuum = pingora_ketama::Continuum::new(&buckets);
        let (ours, theirs) = ns_per_op_pair(
            || {
                black_box(ring.select(&PickContext::new().with_key(next_key())));
            },
            || {
                black_box(continuum.node_idx(next_key()));
            },
        );
        rows.push(Row {
            what: format!("ketama select (crc32 + search), n={n}×160"),
            ours,
            peer: Some(("pingora-ketama node_idx", theirs)),
            target: if n == 100 { "≤ 20 ns, ≥ 1.5× peer" } else { "≥ 1.5× peer" },
        });
        let crcs: Vec<u32> = keys.iter().map(|k| crc32fast::hash(k)).collect();
        rows.push(Row {
            what: format!("ketama lookup prehashed, n={n}×160"),
            ours: ns_per_op(|| {
                black_box(ring.lookup(crcs[bump()]));
            }),
            peer: None,
            target: "",
        });

        let maglev = Maglev::new(set(n));
        let nodes: Vec<usize> = (0..n).collect();
        let peer = maglev_hash::MaglevTable::with_capacity(nodes, 65_537);
        let (ours, theirs) = ns_per_op_pair(
            || {
                black_box(maglev.select(&PickContext::new().with_key(next_key())));
            },
            || {
                black_box(peer.get(next_key()));
            },
        );
        rows.push(Row {
            what: format!("Maglev select (own hash + lookup + health), n={n}"),
            ours,
            peer: Some(("maglev-hash get (SipHash + lookup)", theirs)),
            target: "",
        });
        // The same hash on both sides: maglev-hash's own (SipHash-1-3 of
        // seed 2 then the key), then each side's lookup; ours also checks health.
        let (ours, theirs) = ns_per_op_pair(
            || {
                black_box(maglev.select_hash(sip_seed_2(next_key()), &PickContext::new()));
            },
            || {
                black_box(peer.get(next_key()));
            },
        );
        rows.push(Row {
            what: format!("Maglev select_hash of maglev-hash's SipHash + health, n={n}"),
            ours,
            peer: Some(("maglev-hash get (no health check)", theirs)),
            target: "≥ 1.5× peer",
        });
        // Exactly maglev-hash's work: its hash, a table read, no health check.
        let (ours, theirs) = ns_per_op_pair(
            || {
                black_box(maglev.lookup(sip_seed_2(next_key())));
            },
            || {
                black_box(peer.get(next_key()));
            },
        );
        rows.push(Row {
            what: format!("Maglev lookup of maglev-hash's SipHash (no health check), n={n}"),
            ours,
            peer: Some(("maglev-hash get", theirs)),
            target: "",
        });
        let hashes: Vec<u64> = keys.iter().map(|k| hash_key(k)).collect();
        rows.push(Row {
            what: format!("Maglev select_hash prehashed, n={n}"),
            ours: ns_per_op(|| {
                black_box(maglev.select_hash(hashes[bump()], &PickContext::new()));
            }),
            peer: None,
            target: "≤ 2 ns",
        });
        rows.push(Row {
            what: format!("Maglev lookup prehashed (no health check), n={n}"),
            ours: ns_per_op(|| {
                black_box(maglev.lookup(hashes[bump()]));
            }),
            peer: None,
            target: "≤ 2 ns",
        });

        let (ours, theirs) = ns_per_op_pair(
            || {
                black_box(jump_bucket(hashes[bump()], n as u32));
            },
            || {
                black_box(jump_consistent_hash::hash(hashes[bump()], n));
            },
        );
        rows.push(Row {
            what: format!("jump bucket, n={n}"),
            ours,
            peer: Some(("jump-consistent-hash", theirs)),
            target: "≥ 1.5× peer",
        });
        let hrw = Rendezvous::new(set(n));
        rows.push(Row {
            what: format!("rendezvous select, n={n}"),
            ours: ns_per_op(|| {
                black_box(hrw.select(&PickContext::new().with_key(next_key())));
            }),
            peer: None,
            target: "O(n)",
        });
        let bounded = BoundedLoad::new(Maglev::new(set(n)), 1.25).unwrap();
        rows.push(Row {
            what: format!("bounded-load Maglev select, n={n}"),
            ours: ns_per_op(|| {
                black_box(bounded.select(&PickContext::new().with_key(next_key())));
            }),
            peer: None,
            target: if n == 1000 { "≤ 20 ns" } else { "" },
        });
    }
    print_rows("Per pick (single thread)", &rows);

    let mut rows = Vec::new();
    for n in [100, 1000] {
        let s = set(n);
        let nodes: Vec<std::net::SocketAddr> = (0..n).map(addr).collect();
        let (ours, theirs) = ns_per_build_pair(
            || s.clone(),
            Maglev::new,
            || nodes.clone(),
            |nodes| maglev_hash::MaglevTable::with_capacity(nodes, 65_537),
        );
        rows.push(Row {
            what: format!("Maglev build M=65537, n={n}"),
            ours,
            peer: Some(("maglev-hash", theirs)),
            target: if n == 1000 { "≤ 1.5 ms, ≥ 1.5× peer" } else { "≥ 1.5× peer" },
        });
    }
    let s = set(100);
    let buckets: Vec<_> = (0..100).map(|i| pingora_ketama::Bucket::new(addr(i), 1)).collect();
    let (ours, theirs) = ns_per_build_pair(
        || s.clone(),
        KetamaRing::new,
        || (),
        |()| pingora_ketama::Continuum::new(&buckets),
    );
    rows.push(Row {
        what: "ketama build n=100×160".into(),
        ours,
        peer: Some(("pingora-ketama", theirs)),
        target: "≥ 1.5× peer",
    });
    print_rows("Build", &rows);

    let mut rows = Vec::new();
    let two = |b: Arc<dyn Balancer>| {
        let duo = Duo::new(b, Arc::new(keys.clone()));
        let iters = 500_000u64;
        (0..3).map(|_| duo.run(iters).as_nanos() as f64 / iters as f64).fold(f64::INFINITY, f64::min)
    };
    for (name, b) in all_ours(100) {
        let b: Arc<dyn Balancer> = Arc::from(b);
        let single = ns_per_op(|| {
            black_box(b.select(&PickContext::new().with_key(next_key())));
        });
        rows.push(Row {
            what: format!("{name} select, n=100, 2 threads (1 thread: {})", fmt_ns(single)),
            ours: two(b),
            peer: None,
            target: "",
        });
    }
    print_rows("Per pick, two threads picking at once (wall time per pick per thread)", &rows);

    distribution();
}

/// Max/mean share and the fraction of keys moved when one endpoint is removed.
fn distribution() {
    println!(
        "\n### Distribution quality (200 000 keys; removal of endpoint 7; sampled shares carry sampling noise of about 1 + 3/sqrt(200000/n))\n"
    );
    println!("| structure | n | max/mean share | keys moved on one removal | ideal moved |");
    println!("|---|---:|---:|---:|---:|");
    let keys: Vec<u64> = (0..200_000u64).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555).collect();
    for n in [100, 1000] {
        let full = set(n);
        let smaller =
            EndpointSet::new((0..n).filter(|&i| i != 7).map(|i| Endpoint::new(addr(i))), Timestamp::ZERO);
        let id = |s: &EndpointSet, i: usize| s.get(i).unwrap().endpoint().address().clone();
        let report =
            |name: &str, owner: &dyn Fn(bool, &[u8; 8]) -> lb_core::Address, exact_share: Option<f64>| {
                let mut counts = std::collections::HashMap::new();
                let mut moved = 0;
                for k in &keys {
                    let bytes = k.to_le_bytes();
                    let before = owner(true, &bytes);
                    if before != owner(false, &bytes) {
                        moved += 1;
                    }
                    *counts.entry(before).or_insert(0usize) += 1;
                }
                let max = *counts.values().max().unwrap() as f64;
                let share = exact_share.unwrap_or(max / (keys.len() as f64 / n as f64));
                println!(
                    "| {name} | {n} | {share:.3} | {:.4} | {:.4} |",
                    moved as f64 / keys.len() as f64,
                    1.0 / n as f64
                );
            };
        let (m0, m1) = (Maglev::new(full.clone()), Maglev::new(smaller.clone()));
        let mut table_counts = vec![0usize; n];
        m0.table().iter().for_each(|&o| table_counts[o as usize] += 1);
        let table_share = *table_counts.iter().max().unwrap() as f64 / (65_537.0 / n as f64);
        report(
            "ours Maglev M=65537 (share sampled)",
            &|a, k| {
                if a {
                    id(&full, m0.select(&PickContext::new().with_key(k)).unwrap())
                } else {
                    id(&smaller, m1.select(&PickContext::new().with_key(k)).unwrap())
                }
            },
            None,
        );
        report(
            "ours Maglev M=65537 (exact share, from the table)",
            &|a, k| {
                if a {
                    id(&full, m0.select(&PickContext::new().with_key(k)).unwrap())
                } else {
                    id(&smaller, m1.select(&PickContext::new().with_key(k)).unwrap())
                }
            },
            Some(table_share),
        );
        let (p0, p1) = (
            maglev_hash::MaglevTable::with_capacity((0..n).map(addr).collect(), 65_537),
            maglev_hash::MaglevTable::with_capacity((0..n).filter(|&i| i != 7).map(addr).collect(), 65_537),
        );
        report(
            "maglev-hash M=65537 (share sampled)",
            &|a, k| lb_core::Address::Socket(*if a { p0.get(k) } else { p1.get(k) }.unwrap()),
            None,
        );
        let (r0, r1) = (KetamaRing::new(full.clone()), KetamaRing::new(smaller.clone()));
        report(
            "ours ketama 160/weight (share sampled)",
            &|a, k| {
                if a {
                    id(&full, r0.select(&PickContext::new().with_key(k)).unwrap())
                } else {
                    id(&smaller, r1.select(&PickContext::new().with_key(k)).unwrap())
                }
            },
            None,
        );
        let (h0, h1) = (Rendezvous::new(full.clone()), Rendezvous::new(smaller.clone()));
        report(
            "ours rendezvous (share sampled)",
            &|a, k| {
                if a {
                    id(&full, h0.select(&PickContext::new().with_key(k)).unwrap())
                } else {
                    id(&smaller, h1.select(&PickContext::new().with_key(k)).unwrap())
                }
            },
            None,
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700))
        .sample_size(15)
        .without_plots()
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = select, select_third_down, pick_complete, two_threads, build, peers
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench -- --summary-only` style filtering is criterion's; the summary always runs
    // unless LB_BENCH_NO_SUMMARY is set.
    if std::env::var_os("LB_BENCH_NO_SUMMARY").is_none() {
        summary();
    }
}
