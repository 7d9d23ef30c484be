//! A pick allocates nothing: every algorithm's `select`, `pick` and
//! `select_hash`, keyed and keyless, with exclusions, with an endpoint
//! ejected and with every endpoint busy, under a counting allocator.
//!
//! The allocator counts only on the thread that asked it to, so the test
//! harness's own threads cannot disturb the count.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::weighted_set;
use lb_algorithms::{Algorithm, BoundedLoad, FnvRing, JumpHash, KetamaRing, Maglev, Rendezvous, hash_key};
use lb_core::{Balancer, BalancerExt, Build, EndpointSet, HealthFlag, PickContext};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the thread-locals may be gone while a thread exits.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is passed on to `System` unchanged; counting touches
// only const-initialised thread-locals, which never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller keeps `GlobalAlloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller keeps `GlobalAlloc`'s contract, which `System` shares.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller keeps `GlobalAlloc`'s contract, which `System` shares.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller keeps `GlobalAlloc`'s contract, which `System` shares.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations `work` makes on this thread.
fn allocations_of(work: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    work();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// Uneven weights, so the weighted paths (rendezvous' logarithms, SWRR) run.
const WEIGHTS: &[u32] = &[1, 3, 2, 5, 1, 1, 4, 2, 1, 3, 2, 1];

/// The situations a pick meets: a healthy set, keys, exclusions, an
/// ejected endpoint, and every endpoint at least once in flight (so bounded
/// loads walks past owners at capacity).
fn exercise(balancer: &impl Balancer, label: &str) {
    let excluded = [0usize, 3];
    let picks = |rounds: u64| {
        for k in 0..rounds {
            let key = k.to_le_bytes();
            let _ = balancer.select(&PickContext::new());
            let _ = balancer.select(&PickContext::new().with_key(&key));
            let _ = balancer.select(&PickContext::new().with_key(&key).excluding(&excluded));
            let _ = balancer.select(&PickContext::new().excluding(&excluded));
            // A pick guard, dropped at once: in flight up and down.
            drop(balancer.pick(&PickContext::new().with_key(&key)));
        }
    };
    // The first picks may set up lazily; steady state is what counts.
    picks(64);
    assert_eq!(allocations_of(|| picks(2_000)), 0, "{label}: healthy set");

    let set = balancer.endpoints();
    set.get(1).unwrap().state().set_flag(HealthFlag::Ejected, true);
    assert_eq!(allocations_of(|| picks(2_000)), 0, "{label}: one endpoint ejected");
    set.get(1).unwrap().state().set_flag(HealthFlag::Ejected, false);

    // Hold several picks per endpoint so every owner is at capacity.
    let held: Vec<_> = (0..set.len() * 3).filter_map(|_| balancer.pick(&PickContext::new())).collect();
    assert_eq!(allocations_of(|| picks(2_000)), 0, "{label}: every endpoint busy");
    drop(held);
}

#[test]
fn no_algorithm_allocates_per_pick() {
    for name in common::ALGORITHM_NAMES {
        let algorithm: Algorithm = name.parse().unwrap();
        exercise(&algorithm.build(weighted_set(WEIGHTS)), name);
    }
}

#[test]
fn bounded_loads_allocates_over_every_hash_walk() {
    let set = || weighted_set(WEIGHTS);
    exercise(&BoundedLoad::new(KetamaRing::new(set()), 1.25).unwrap(), "bounded ring");
    exercise(&BoundedLoad::new(Maglev::new(set()), 1.25).unwrap(), "bounded maglev");
    exercise(&BoundedLoad::new(FnvRing::new(set()), 1.25).unwrap(), "bounded fnv ring");
    exercise(&BoundedLoad::new(JumpHash::new(set()), 1.25).unwrap(), "bounded jump");
    exercise(&BoundedLoad::new(Rendezvous::new(set()), 1.25).unwrap(), "bounded rendezvous");
    exercise(
        &BoundedLoad::new(Rendezvous::new(common::set_of(12)), 1.25).unwrap(),
        "bounded rendezvous, equal",
    );
}

#[test]
fn select_hash_allocates_nothing() {
    let set = || -> EndpointSet { weighted_set(WEIGHTS) };
    let (ring, fnv, maglev) = (KetamaRing::new(set()), FnvRing::new(set()), Maglev::new(set()));
    let (jump, hrw) = (JumpHash::new(set()), Rendezvous::new(set()));
    let bounded = BoundedLoad::new(Maglev::new(set()), 1.25).unwrap();
    let excluded = [2usize];
    let hashes = || {
        for k in 0..5_000u64 {
            let hash = hash_key(&k.to_le_bytes());
            let ctx = PickContext::new().excluding(&excluded);
            let _ = ring.select_hash(hash as u32, &ctx);
            let _ = fnv.select_hash(hash as u32, &ctx);
            let _ = maglev.select_hash(hash, &ctx);
            let _ = jump.select_hash(hash, &ctx);
            let _ = hrw.select_hash(hash, &ctx);
            let _ = bounded.select_hash(hash, &ctx);
        }
    };
    hashes();
    assert_eq!(allocations_of(hashes), 0);
}

/// The counter itself works: a test that cannot see an allocation proves nothing.
#[test]
fn the_counter_sees_an_allocation() {
    let seen = allocations_of(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(seen, 1);
    let hrw = Rendezvous::new(weighted_set(WEIGHTS));
    assert!(allocations_of(|| drop(std::hint::black_box(hrw.ranked(7)))) >= 1, "ranked() sorts a Vec");
}
