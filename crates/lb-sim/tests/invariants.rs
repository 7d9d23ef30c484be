//! The simulator's promises, and the algorithms' promises seen through it.

use std::time::Duration;

use lb_sim::{Fault, Health, Keys, Setup, keys_moved, run};
use proptest::prelude::*;

fn short(n: usize, seconds: u64) -> Setup {
    Setup { duration: Duration::from_secs(seconds), ..Setup::uniform(n, 0.7) }
}

const ALGORITHMS: [&str; 9] = [
    "round_robin",
    "weighted_round_robin",
    "least_conn",
    "p2c",
    "peak_ewma",
    "random",
    "maglev",
    "bounded_load",
    "slow_start:p2c",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_same_seed_gives_the_same_run(seed in any::<u64>(), which in 0..ALGORITHMS.len(), full in any::<bool>()) {
        let mut setup = short(5, 2);
        setup.seed = seed;
        setup.algorithm = ALGORITHMS[which].parse().unwrap();
        setup.health = if full { Health::Full } else { Health::Bare };
        setup.backends[1].fault = Fault::Dead;
        let (a, b) = (run(&setup), run(&setup));
        prop_assert!(a.requests > 1_000);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn bounded_loads_never_exceed_their_cap(
        seed in any::<u64>(),
        n in 2usize..12,
        factor in 1.05f64..2.0,
        hot_share in 0.0f64..0.6,
        maglev in any::<bool>(),
    ) {
        let mut setup = short(n, 2);
        setup.seed = seed;
        setup.keys = Keys::Hot { count: 1_000, hot_share };
        let over = if maglev { "bounded_load:maglev" } else { "bounded_load" };
        setup.algorithm = match over.parse().unwrap() {
            lb_algorithms::Algorithm::BoundedLoad { over, .. } =>
                lb_algorithms::Algorithm::BoundedLoad { over, balance_factor: factor },
            other => other,
        };
        let measured = run(&setup);
        prop_assert!(measured.bound_checks * 10 >= measured.requests * 9, "{} checks", measured.bound_checks);
        prop_assert_eq!(measured.bound_violations, 0);
    }

    #[test]
    fn healthy_backends_answer_everything_once(seed in any::<u64>(), which in 0..ALGORITHMS.len()) {
        let mut setup = short(4, 2);
        setup.seed = seed;
        setup.algorithm = ALGORITHMS[which].parse().unwrap();
        let m = run(&setup);
        let f = m.figures();
        prop_assert_eq!(m.succeeded, m.requests);
        prop_assert_eq!(m.tries, m.requests);
        prop_assert_eq!(m.per_backend.iter().sum::<u64>(), m.tries);
        prop_assert!(f.p50 <= f.p99 && f.p99 <= f.p999);
        prop_assert!(f.p50 >= Duration::from_millis(5), "{:?}", f.p50);
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let setup = short(4, 2);
    let other = Setup { seed: 2, ..setup.clone() };
    assert_ne!(run(&setup).latencies, run(&other).latencies);
}

#[test]
fn retries_under_health_save_requests_from_a_dead_backend() {
    let mut setup = short(5, 10);
    setup.backends[0].fault = Fault::Dead;
    let bare = run(&setup).figures();
    assert!((bare.success - 0.8).abs() < 0.02, "round robin sends a fifth to the dead one: {}", bare.success);
    setup.health = Health::Full;
    let full = run(&setup).figures();
    assert!(full.success > 0.999, "{}", full.success);
    assert!(full.attempts < 1.05, "ejected soon, so few retries: {}", full.attempts);
}

#[test]
fn the_budget_holds_retries_when_everything_fails() {
    let mut setup = short(5, 20);
    for b in &mut setup.backends {
        b.fault = Fault::Failing;
    }
    setup.health = Health::RetriesUnbudgeted;
    let unbudgeted = run(&setup);
    assert_eq!(unbudgeted.tries, 3 * unbudgeted.requests, "every request tries three times");
    assert_eq!(unbudgeted.succeeded, 0);
    setup.health = Health::Full;
    let m = run(&setup);
    // 20 % of the requests, plus a reserve of 10 per second lasting 10 s.
    let reserve = 10.0 * (setup.duration.as_secs_f64() + 10.0);
    assert!(
        m.tries as f64 <= m.requests as f64 * 1.2 + reserve,
        "{} tries for {} requests",
        m.tries,
        m.requests
    );
}

#[test]
fn slow_start_gives_a_newcomer_less_at_first() {
    let newcomer_share = |algorithm: &str| {
        let mut setup = short(4, 20);
        setup.backends[3].joins_at = Duration::from_secs(5);
        setup.algorithm = algorithm.parse().unwrap();
        let m = run(&setup);
        // Tries in the five seconds after the join.
        let window: Vec<&Vec<u32>> = m.timeline[5..10].iter().collect();
        let newcomer: u32 = window.iter().map(|row| row[3]).sum();
        let all: u32 = window.iter().map(|row| row.iter().sum::<u32>()).sum();
        f64::from(newcomer) / f64::from(all)
    };
    let plain = newcomer_share("round_robin");
    let ramped = newcomer_share("slow_start:round_robin");
    assert!((plain - 0.25).abs() < 0.02, "{plain}");
    assert!(ramped < plain * 0.6, "{ramped} vs {plain}");
}

#[test]
fn peak_ewma_learns_to_avoid_a_slow_backend() {
    let mut setup = short(10, 10);
    setup.backends[0].fault = Fault::Slow(10.0);
    setup.algorithm = "peak_ewma".parse().unwrap();
    let share = run(&setup).figures().share[0];
    assert!(share < 0.02, "{share}");
    setup.algorithm = "round_robin".parse().unwrap();
    assert!((run(&setup).figures().share[0] - 0.1).abs() < 0.01);
}

#[test]
fn ring_and_rendezvous_move_about_one_key_in_n() {
    for name in ["ring_hash", "rendezvous"] {
        let moved = keys_moved(&name.parse().unwrap(), 10, 50_000, false);
        assert!((moved - 0.1).abs() < 0.02, "{name}: {moved}");
    }
}
