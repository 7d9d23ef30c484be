//! Breaker admit + record, ours against `recloser` and `failsafe`, in one
//! run: criterion measures each, then a short side-by-side pass prints the
//! ratios (ours ÷ peer). Keep runs short: the machine is shared.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use lb_core::{Outcome, Timestamp};
use lb_health::{CircuitBreaker, Settings, SlidingWindow, SlidingWindowBreaker, WindowSettings};

/// One admitted call that succeeds, on each contender.
trait Contender: Sync {
    fn call(&self, now: Timestamp);
}

impl Contender for CircuitBreaker {
    #[inline]
    fn call(&self, now: Timestamp) {
        if let Ok(ticket) = self.allow(now) {
            self.record(black_box(ticket), Outcome::Success, now);
        }
    }
}

impl Contender for SlidingWindowBreaker {
    #[inline]
    fn call(&self, now: Timestamp) {
        if let Ok(ticket) = self.allow(now) {
            self.record(black_box(ticket), Outcome::Success, Duration::from_millis(1), now);
        }
    }
}

impl Contender for recloser::Recloser {
    #[inline]
    fn call(&self, _now: Timestamp) {
        let _ = black_box(recloser::Recloser::call(self, || Ok::<(), ()>(())));
    }
}

struct Failsafe<T>(T);

impl<T: failsafe::CircuitBreaker + Sync> Contender for Failsafe<T> {
    #[inline]
    fn call(&self, _now: Timestamp) {
        let _ = black_box(self.0.call(|| Ok::<(), ()>(())));
    }
}

fn contenders() -> Vec<(&'static str, Box<dyn Contender>)> {
    let mut window = WindowSettings::new("bench");
    window.window = SlidingWindow::Count(100);
    vec![
        ("lb-health gobreaker", Box::new(CircuitBreaker::new(Settings::failure_ratio("bench", 3, 0.6)))),
        ("lb-health sliding window", Box::new(SlidingWindowBreaker::new(window).expect("valid settings"))),
        ("recloser", Box::new(recloser::Recloser::default())),
        ("failsafe", Box::new(Failsafe(failsafe::Config::new().build()))),
    ]
}

/// Runs `iters` calls on each of `threads` threads at once; the slowest thread's time.
fn run_threads(c: &dyn Contender, threads: usize, iters: u64) -> Duration {
    let start = Barrier::new(threads);
    let now = Timestamp::from_nanos(1_000_000_000);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let began = Instant::now();
                    for _ in 0..iters {
                        c.call(black_box(now));
                    }
                    began.elapsed()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).max().unwrap_or_default()
    })
}

fn breakers(c: &mut Criterion) {
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("breaker admit+record/{threads} thread(s)"));
        group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2)).sample_size(20);
        for (name, contender) in contenders() {
            group.bench_function(name, |b| {
                if threads == 1 {
                    let now = Timestamp::from_nanos(1_000_000_000);
                    b.iter(|| contender.call(black_box(now)));
                } else {
                    b.iter_custom(|iters| run_threads(contender.as_ref(), threads, iters));
                }
            });
        }
        group.finish();
    }
}

/// The side-by-side pass: the best of 7 rounds, rounds interleaved across
/// contenders so drift hits everyone alike.
fn ratios() {
    const CALLS: u64 = 2_000_000;
    for threads in [1, 2] {
        let all = contenders();
        let mut best = vec![f64::INFINITY; all.len()];
        for _ in 0..7 {
            for (i, (_, c)) in all.iter().enumerate() {
                let took = run_threads(c.as_ref(), threads, CALLS);
                best[i] = best[i].min(took.as_nanos() as f64 / CALLS as f64);
            }
        }
        println!("\nadmit+record, {threads} thread(s), ns per call (best of 7 x {CALLS}):");
        println!("| breaker | ns/call | vs recloser | vs failsafe |");
        println!("|---|---|---|---|");
        let (recloser, failsafe) = (best[2], best[3]);
        for ((name, _), ns) in all.iter().zip(&best) {
            println!("| {name} | {ns:.1} | {:.2} | {:.2} |", ns / recloser, ns / failsafe);
        }
    }
}

criterion_group!(benches, breakers);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        ratios();
    }
}
