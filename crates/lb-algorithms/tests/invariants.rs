//! Invariants every algorithm keeps, checked across the public API.

mod common;

use common::{endpoint, keys, owner_id, set_of, weighted_set};
use lb_algorithms::{
    Algorithm, BoundedLoad, HashWalk, KetamaRing, Maglev, PowerOfTwoChoices, Rendezvous,
    SmoothWeightedRoundRobin, StrideScheduler, WeightedRandom,
};
use lb_core::{Balancer, BalancerExt, Build, EndpointSet, HealthFlag, PickContext, Timestamp};
use proptest::prelude::*;

/// Every algorithm by name, with default parameters.
fn all_algorithms() -> Vec<Algorithm> {
    common::ALGORITHM_NAMES.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn names_round_trip() {
    for a in all_algorithms() {
        assert_eq!(a.to_string().parse::<Algorithm>().unwrap(), a);
        assert!(a.validate().is_ok());
    }
    assert_eq!("Least-Conn".parse::<Algorithm>().unwrap(), Algorithm::LeastConn);
    assert!("slow_start:slow_start".parse::<Algorithm>().is_err());
    assert!("bounded_load:p2c".parse::<Algorithm>().is_err());
    assert_eq!(
        "bounded_load:ring_hash".parse::<Algorithm>().unwrap(),
        "bounded_load".parse::<Algorithm>().unwrap(),
        "the ring is what a bounded load wraps unless told"
    );
    for alias in ["fnv_ring", "FNV-Ring", "fnv", "fnv1a", "fnv_hash"] {
        assert_eq!(alias.parse::<Algorithm>().unwrap(), Algorithm::FnvRing { replicas: 160 }, "{alias}");
    }
    assert!(Algorithm::FnvRing { replicas: 160 }.uses_key());
    let err = "fastest".parse::<Algorithm>().unwrap_err().to_string();
    assert!(err.contains("fastest") && err.contains("maglev"), "{err}");
}

#[test]
fn empty_and_all_ineligible_give_none() {
    for a in all_algorithms() {
        let empty = a.build(EndpointSet::empty());
        assert_eq!(empty.select(&PickContext::new()), None, "{a}");
        assert_eq!(empty.select(&PickContext::new().with_key(b"k")), None, "{a}");
        let set = set_of(4);
        for m in set.iter() {
            m.state().set_flag(HealthFlag::ActiveCheckFailed, true);
        }
        let b = a.build(set);
        assert_eq!(b.select(&PickContext::new().with_key(b"k")), None, "{a}");
        assert_eq!(b.select(&PickContext::new()), None, "{a}");
    }
}

#[test]
fn smooth_wrr_is_nginx_over_any_period() {
    let b = SmoothWeightedRoundRobin::new(weighted_set(&[5, 1, 1]));
    let names: String =
        (0..21).map(|_| ["a", "b", "c"][b.select(&PickContext::new()).unwrap()]).collect::<Vec<_>>().concat();
    assert_eq!(names, "aabacaa".repeat(3));
}

fn share_within(counts: &[usize], weights: &[u32], tolerance: f64) -> Result<(), TestCaseError> {
    let total: usize = counts.iter().sum();
    let weight_sum: u32 = weights.iter().sum();
    for (&c, &w) in counts.iter().zip(weights) {
        let expected = total as f64 * f64::from(w) / f64::from(weight_sum);
        prop_assert!((c as f64 - expected).abs() <= tolerance * total as f64, "{counts:?} vs {weights:?}");
    }
    Ok(())
}

fn counts(b: &(impl Balancer + ?Sized), n: usize, picks: usize) -> Vec<usize> {
    let mut counts = vec![0; n];
    for _ in 0..picks {
        counts[b.select(&PickContext::new()).unwrap()] += 1;
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn weighted_shares_follow_weights(weights in prop::collection::vec(1u32..20, 1..12)) {
        let total: u32 = weights.iter().sum();
        // SWRR: exact over whole periods.
        let swrr = SmoothWeightedRoundRobin::new(weighted_set(&weights));
        let exact = counts(&swrr, weights.len(), total as usize * 10);
        prop_assert_eq!(exact, weights.iter().map(|&w| w as usize * 10).collect::<Vec<_>>());
        share_within(&counts(&StrideScheduler::new(weighted_set(&weights)), weights.len(), 20_000), &weights, 0.01)?;
        share_within(&counts(&WeightedRandom::new(weighted_set(&weights)), weights.len(), 20_000), &weights, 0.02)?;
    }

    #[test]
    fn ineligible_never_picked_while_one_is_healthy(
        n in 2usize..12,
        down in prop::collection::vec(any::<bool>(), 12),
        key in any::<u64>(),
    ) {
        let down: Vec<bool> = down[..n].to_vec();
        prop_assume!(down.iter().any(|d| !d));
        for a in all_algorithms() {
            let set = set_of(n);
            for (i, &d) in down.iter().enumerate() {
                set.get(i).unwrap().state().set_flag(HealthFlag::Ejected, d);
            }
            let b = a.build(set);
            for k in 0..20u64 {
                let key_bytes = (key ^ k).to_le_bytes();
                for ctx in [PickContext::new(), PickContext::new().with_key(&key_bytes)] {
                    let i = b.select(&ctx);
                    prop_assert!(i.is_some_and(|i| !down[i]), "{} picked {:?} with down {:?}", a, i, down);
                }
            }
        }
    }

    #[test]
    fn p2c_choices_are_distinct(n in 2usize..50, excluded in prop::collection::vec(0usize..50, 0..5)) {
        let b = PowerOfTwoChoices::new(set_of(n));
        let ctx = PickContext::new().excluding(&excluded);
        let eligible = (0..n).filter(|i| !excluded.contains(i)).count();
        for _ in 0..50 {
            match b.choices(&ctx) {
                Some((a, Some(c))) => {
                    prop_assert_ne!(a, c);
                    prop_assert!(!excluded.contains(&a) && !excluded.contains(&c));
                }
                Some((a, None)) => prop_assert!(eligible == 1 && !excluded.contains(&a)),
                None => prop_assert_eq!(eligible, 0),
            }
        }
    }

    #[test]
    fn bounded_loads_never_exceed_the_cap(
        n in 2usize..10,
        key_picks in prop::collection::vec(0u8..6, 1..120),
        over_maglev in any::<bool>(),
    ) {
        let set = set_of(n);
        let run = |b: &dyn Balancer| -> Result<(), TestCaseError> {
            for k in &key_picks {
                let total: u64 = b.endpoints().iter().map(|m| u64::from(m.state().in_flight())).sum();
                let cap = (1.25 * (total + 1) as f64 / n as f64).ceil() as u32;
                let p = b.pick(&PickContext::new().with_key(&[*k])).unwrap();
                prop_assert!(p.member().state().in_flight() <= cap);
                // Keep the request in flight for the rest of the case.
                std::mem::forget(p);
            }
            Ok(())
        };
        if over_maglev {
            run(&BoundedLoad::new(Maglev::with_table_size(set, 1009).unwrap(), 1.25).unwrap())?;
        } else {
            run(&BoundedLoad::new(KetamaRing::new(set), 1.25).unwrap())?;
        }
    }
}

/// Keys whose owner changes between two balancers, by endpoint id.
fn moved(before: &impl Balancer, after: &impl Balancer, keys: &[Vec<u8>]) -> (usize, usize) {
    let removed_or_added: Vec<_> =
        keys.iter().filter(|k| owner_id(before, k) != owner_id(after, k)).collect();
    (removed_or_added.len(), keys.len())
}

fn without(set: &EndpointSet, index: usize) -> EndpointSet {
    let rest: Vec<_> =
        set.iter().enumerate().filter(|&(i, _)| i != index).map(|(_, m)| m.endpoint().clone()).collect();
    set.replaced(rest, Timestamp::ZERO)
}

fn with_one_more(set: &EndpointSet) -> EndpointSet {
    let mut all: Vec<_> = set.iter().map(|m| m.endpoint().clone()).collect();
    all.push(endpoint(set.len()));
    set.replaced(all, Timestamp::ZERO)
}

#[test]
fn removal_moves_only_the_removed_endpoints_keys() {
    let keys = keys(20_000);
    let n = 10;
    let set = set_of(n);
    let removed_id = set.get(3).unwrap().endpoint().id().clone();
    let smaller = without(&set, 3);
    let check = |before: &dyn Fn(&[u8]) -> Option<lb_core::EndpointId>,
                 after: &dyn Fn(&[u8]) -> Option<lb_core::EndpointId>,
                 exact: bool| {
        let mut others_moved = 0;
        for k in &keys {
            let (b, a) = (before(k), after(k));
            if b.as_ref() != Some(&removed_id) && b != a {
                others_moved += 1;
            }
            assert_ne!(a.as_ref(), Some(&removed_id));
        }
        if exact {
            assert_eq!(others_moved, 0);
        } else {
            // Maglev moves a few keys besides the removed endpoint's (the paper's trade-off).
            assert!(others_moved * 100 < keys.len() * 3, "{others_moved}");
        }
    };
    let (r0, r1) = (KetamaRing::new(set.clone()), KetamaRing::new(smaller.clone()));
    check(&|k| owner_id(&r0, k), &|k| owner_id(&r1, k), true);
    let (h0, h1) = (Rendezvous::new(set.clone()), Rendezvous::new(smaller.clone()));
    check(&|k| owner_id(&h0, k), &|k| owner_id(&h1, k), true);
    let (m0, m1) = (Maglev::new(set.clone()), Maglev::new(smaller));
    check(&|k| owner_id(&m0, k), &|k| owner_id(&m1, k), false);
}

#[test]
fn adding_one_moves_about_one_in_n_plus_one() {
    let keys = keys(20_000);
    let set = set_of(9);
    let bigger = with_one_more(&set);
    let expected = keys.len() / 10;
    let within = |(moved, _total): (usize, usize), slack: f64| {
        assert!(
            (moved as f64 - expected as f64).abs() < slack * expected as f64,
            "moved {moved}, expected ~{expected}"
        );
    };
    within(moved(&KetamaRing::new(set.clone()), &KetamaRing::new(bigger.clone()), &keys), 0.3);
    within(moved(&Rendezvous::new(set.clone()), &Rendezvous::new(bigger.clone()), &keys), 0.1);
    within(moved(&Maglev::new(set.clone()), &Maglev::new(bigger.clone()), &keys), 0.3);
    let jump = |s: &EndpointSet| lb_algorithms::JumpHash::new(s.clone());
    within(moved(&jump(&set), &jump(&bigger), &keys), 0.1);
}

#[test]
fn concurrent_picks_stay_in_bounds() {
    for a in all_algorithms() {
        let b = std::sync::Arc::new(a.build(set_of(7)));
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let b = std::sync::Arc::clone(&b);
                std::thread::spawn(move || {
                    for k in 0..5_000u32 {
                        let key = (k * 2 + t).to_le_bytes();
                        let p = b.pick(&PickContext::new().with_key(&key)).expect("an endpoint");
                        assert!(p.index() < 7);
                        if k % 3 == 0 {
                            // Flap every endpoint but the first, so one is always eligible.
                            b.endpoints()
                                .get(1 + k as usize % 6)
                                .unwrap()
                                .state()
                                .set_flag(HealthFlag::Ejected, k % 2 == 0);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}

#[test]
fn walks_list_every_endpoint() {
    let set = set_of(6);
    let sorted = |mut v: Vec<usize>| {
        v.sort_unstable();
        v
    };
    assert_eq!(sorted(KetamaRing::new(set.clone()).candidates(b"x").collect()), [0, 1, 2, 3, 4, 5]);
    assert_eq!(sorted(Maglev::new(set.clone()).candidates(b"x").collect()), [0, 1, 2, 3, 4, 5]);
    assert_eq!(sorted(Rendezvous::new(set).candidates(b"x").collect()), [0, 1, 2, 3, 4, 5]);
}

/// Algorithms that pick in a fixed rotation when every endpoint is equal and
/// idle (least connections rotates its ties; hash algorithms rotate keyless
/// picks): each must give the eligible endpoints exactly even shares.
const ROTATIONS: [&str; 10] = [
    "round_robin",
    "weighted_round_robin",
    "stride",
    "least_conn",
    "ring_hash",
    "fnv_ring",
    "maglev",
    "jump",
    "rendezvous",
    "bounded_load",
];

/// The first `n` of `down`, with endpoint `keep % n` up so that not all are down.
fn down_of(n: usize, down: &[bool], keep: usize) -> Vec<bool> {
    let mut down = down[..n].to_vec();
    down[keep % n] = false;
    down
}

fn eject_marked(set: &EndpointSet, down: &[bool]) {
    for (i, &d) in down.iter().enumerate() {
        set.get(i).unwrap().state().set_flag(HealthFlag::Ejected, d);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Round robin and its relatives are exact: over `k` rounds of the `m`
    /// eligible endpoints, each is picked exactly `k` times, wherever the
    /// rotation stood when the others went down.
    #[test]
    fn survivors_of_ejections_share_rotations_exactly(
        n in 2usize..20,
        down in prop::collection::vec(any::<bool>(), 20),
        keep in 0usize..20,
        warmup in 0usize..40,
        k in 1usize..5,
    ) {
        let down = down_of(n, &down, keep);
        let m = down.iter().filter(|d| !**d).count();
        let expected: Vec<usize> = down.iter().map(|&d| if d { 0 } else { k }).collect();
        for name in ROTATIONS {
            let b = name.parse::<Algorithm>().unwrap().build(set_of(n));
            for _ in 0..warmup {
                b.select(&PickContext::new()).unwrap();
            }
            eject_marked(b.endpoints(), &down);
            prop_assert_eq!(counts(&b, n, k * m), expected.clone(), "{} with down {:?}", name, down);
        }
    }

    /// A retry (a pick with exclusions) uses one turn of the rotation, like
    /// any pick: the ordinary picks around it get the same endpoints as if it
    /// had been an ordinary pick too.
    #[test]
    fn a_retry_moves_rotations_by_one_pick(
        n in 2usize..12,
        down in prop::collection::vec(any::<bool>(), 12),
        keep in 0usize..12,
        retries in prop::collection::vec(prop::option::of(prop::collection::vec(0usize..12, 1..4)), 1..40),
    ) {
        let down = down_of(n, &down, keep);
        for name in ROTATIONS {
            let algorithm = name.parse::<Algorithm>().unwrap();
            let (with_retries, plain) = (algorithm.build(set_of(n)), algorithm.build(set_of(n)));
            eject_marked(with_retries.endpoints(), &down);
            eject_marked(plain.endpoints(), &down);
            for (step, excluded) in retries.iter().enumerate() {
                let expected = plain.select(&PickContext::new());
                match excluded {
                    Some(excluded) => {
                        let got = with_retries.select(&PickContext::new().excluding(excluded));
                        prop_assert!(got.is_none_or(|i| !excluded.contains(&i)));
                        // A retry that found nobody used no turn; keep the two in step.
                        if got.is_none() {
                            with_retries.select(&PickContext::new());
                        }
                    }
                    None => prop_assert_eq!(with_retries.select(&PickContext::new()), expected, "{} step {}", name, step),
                }
            }
        }
    }

    /// Weighted rotations keep weights among the survivors: smooth WRR
    /// exactly over each period, stride within 1 %.
    #[test]
    fn weighted_rotations_keep_weights_among_survivors(
        weights in prop::collection::vec(1u32..10, 2..10),
        down in prop::collection::vec(any::<bool>(), 10),
        keep in 0usize..10,
    ) {
        let down = down_of(weights.len(), &down, keep);
        let n = weights.len();
        let live: Vec<u32> = weights.iter().zip(&down).map(|(&w, &d)| if d { 0 } else { w }).collect();
        let build = |make: fn(EndpointSet) -> Box<dyn Balancer>| {
            let set = weighted_set(&weights);
            eject_marked(&set, &down);
            make(set)
        };
        let swrr = build(|s| Box::new(SmoothWeightedRoundRobin::new(s)));
        // nginx's order is built from the gcd-reduced weights.
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        let periods = 3;
        let picks = periods * live.iter().map(|&w| (w / g) as usize).sum::<usize>();
        let exact: Vec<usize> = live.iter().map(|&w| periods * (w / g) as usize).collect();
        prop_assert_eq!(counts(&*swrr, n, picks), exact);
        let stride = build(|s| Box::new(StrideScheduler::new(s)));
        share_within(&counts(&*stride, n, 20_000), &live, 0.01)?;
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Panic mode: every endpoint down, a normal pick finds none, a pick that
/// ignores health finds one; exclusions still apply.
fn panic_mode_picks(names: &[&str]) {
    for name in names {
        let set = set_of(5);
        for (i, m) in set.iter().enumerate() {
            let flag = if i % 2 == 0 { HealthFlag::ActiveCheckFailed } else { HealthFlag::Ejected };
            m.state().set_flag(flag, true);
        }
        let b = name.parse::<Algorithm>().unwrap().build(set);
        for key in [None, Some(&b"user-42"[..])] {
            let ctx = match key {
                Some(key) => PickContext::new().with_key(key),
                None => PickContext::new(),
            };
            assert_eq!(b.select(&ctx), None, "{name} {key:?}: all down");
            let panic = ctx.ignoring_health();
            for _ in 0..20 {
                assert!(b.pick(&panic).is_some_and(|p| p.index() < 5), "{name} {key:?}: panic mode");
            }
            assert_eq!(b.select(&panic.excluding(&[0, 1, 3, 4])), Some(2), "{name} {key:?}: the one left");
            assert_eq!(b.select(&panic.excluding(&[0, 1, 2, 3, 4])), None, "{name} {key:?}: all excluded");
        }
    }
}

#[test]
fn panic_mode_round_robin_family() {
    panic_mode_picks(&["round_robin", "weighted_round_robin", "stride"]);
}

#[test]
fn panic_mode_random_and_load_aware() {
    panic_mode_picks(&["random", "least_conn", "p2c", "peak_ewma"]);
}

#[test]
fn panic_mode_hash_family() {
    panic_mode_picks(&[
        "ring_hash",
        "fnv_ring",
        "maglev",
        "jump",
        "rendezvous",
        "bounded_load",
        "bounded_load:maglev",
    ]);
}

#[test]
fn panic_mode_slow_start() {
    panic_mode_picks(&["slow_start", "slow_start:p2c", "slow_start:maglev"]);
}
