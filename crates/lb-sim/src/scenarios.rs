//! The nine scenarios of issue 18, each a list of [`Case`]s: one per
//! relevant algorithm, with and without the health machinery.

use core::time::Duration;

use lb_algorithms::Algorithm;

use crate::setup::{Fault, Health, Keys, Load, Setup};

/// One scenario: its number, a file-name slug and a title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// 1 to 9, as in the issue.
    pub number: u8,
    /// For file names: `docs/scenarios/<slug>-cdf.svg`.
    pub slug: &'static str,
    /// What it shows.
    pub title: &'static str,
}

/// Every scenario, in order.
pub const SCENARIOS: [Scenario; 9] = [
    Scenario { number: 1, slug: "1-uniform", title: "Uniform backends" },
    Scenario { number: 2, slug: "2-heterogeneous", title: "Heterogeneous capacity, weights right and wrong" },
    Scenario { number: 3, slug: "3-one-slow", title: "One of ten backends 10x slower" },
    Scenario { number: 4, slug: "4-one-dead", title: "One of five backends dead" },
    Scenario { number: 5, slug: "5-flapping", title: "One of ten flapping (down 5 s of every 30 s)" },
    Scenario { number: 6, slug: "6-all-failing", title: "Every backend failing (retry amplification)" },
    Scenario {
        number: 7,
        slug: "7-hot-key",
        title: "A hot key under hashing, with and without bounded loads",
    },
    Scenario {
        number: 8,
        slug: "8-scale-up",
        title: "Scale up: a cold backend joins, with and without slow start",
    },
    Scenario {
        number: 9,
        slug: "9-client-vs-server",
        title: "Client-side (50 clients) against server-side (one proxy)",
    },
];

/// One run of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Which scenario.
    pub scenario: Scenario,
    /// The algorithm as configured (`Algorithm`'s display name).
    pub algorithm: String,
    /// The scenario's variant ("weights wrong", "client-side", ...); empty when it has one.
    pub variant: &'static str,
    /// The health machinery.
    pub health: Health,
    /// The backend whose share of the load is plotted over time (`None`: the busiest in each bucket).
    pub watch: Option<usize>,
    /// The run itself.
    pub setup: Setup,
}

/// Algorithms that balance any traffic.
const GENERAL: [&str; 8] = [
    "round_robin",
    "weighted_round_robin",
    "least_conn",
    "p2c",
    "peak_ewma",
    "ring_hash",
    "maglev",
    "bounded_load",
];
/// The ones that use no key.
const LOAD_AWARE: [&str; 5] = ["round_robin", "weighted_round_robin", "least_conn", "p2c", "peak_ewma"];
/// Hashing, for the hot key.
const HASHING: [&str; 5] = ["ring_hash", "maglev", "rendezvous", "bounded_load", "bounded_load:maglev"];
/// The ones that differ when each client balances on its own.
const CLIENT: [&str; 4] = ["round_robin", "least_conn", "p2c", "peak_ewma"];
/// Hashing algorithms whose key movement is measured.
pub const KEYED: [&str; 6] = ["ring_hash", "fnv_ring", "maglev", "rendezvous", "jump", "bounded_load"];

/// Utilization of the backends' capacity the open-loop scenarios run at.
pub const UTILIZATION: f64 = 0.7;

fn algorithm(name: &str) -> Algorithm {
    name.parse().expect("the scenario names are known algorithms")
}

struct Builder {
    seed: u64,
    cases: Vec<Case>,
}

impl Builder {
    fn add(&mut self, scenario: u8, variant: &'static str, names: &[&str], healths: &[Health], base: &Setup) {
        let scenario = SCENARIOS[usize::from(scenario) - 1];
        for name in names {
            for &health in healths {
                let setup = Setup { algorithm: algorithm(name), health, seed: self.seed, ..base.clone() };
                let watch = match scenario.number {
                    7 => None,
                    8 => Some(base.backends.len() - 1),
                    _ => Some(0),
                };
                self.cases.push(Case {
                    scenario,
                    algorithm: setup.algorithm.to_string(),
                    variant,
                    health,
                    watch,
                    setup,
                });
            }
        }
    }
}

/// Every case of the nine scenarios, all from `seed`. `scale` shortens the
/// runs (1.0: as documented; tests use less).
pub fn cases(seed: u64, scale: f64) -> Vec<Case> {
    let both = [Health::Bare, Health::Full];
    let mut b = Builder { seed, cases: Vec::new() };
    let secs = |s: u64| Duration::from_secs(s).mul_f64(scale);
    let base = |n: usize, utilization: f64, duration: u64| Setup {
        duration: secs(duration),
        ..Setup::uniform(n, utilization)
    };

    // 1. Uniform, open loop; and closed loop (90 clients thinking 50 ms: about the same load).
    b.add(1, "open loop", &GENERAL, &both, &base(10, UTILIZATION, 60));
    let closed =
        Setup { load: Load::Closed { clients: 90, think: Duration::from_millis(50) }, ..base(10, 0.7, 60) };
    b.add(1, "closed loop", &CLIENT, &[Health::Bare], &closed);

    // 2. Capacities 8, 4, 4, 2, 2 at once; weights announced right, then all 1.
    let mut hetero = base(5, UTILIZATION, 60);
    for (spec, c) in hetero.backends.iter_mut().zip([8, 4, 4, 2, 2]) {
        spec.concurrency = c;
        spec.weight = c;
    }
    hetero.load = Load::Open { rate: hetero.capacity() * UTILIZATION };
    b.add(2, "weights right", &LOAD_AWARE, &both, &hetero);
    for spec in &mut hetero.backends {
        spec.weight = 1;
    }
    b.add(2, "weights wrong", &LOAD_AWARE, &both, &hetero);

    // 3. One of ten 10x slower (the load is sized for ten healthy ones).
    let mut slow = base(10, UTILIZATION, 60);
    slow.backends[0].fault = Fault::Slow(10.0);
    b.add(3, "", &GENERAL, &both, &slow);

    // 4. One of five refuses every connection.
    let mut dead = base(5, 0.6, 60);
    dead.backends[0].fault = Fault::Dead;
    b.add(4, "", &GENERAL, &both, &dead);

    // 5. One of ten down 5 s of every 30 s.
    let mut flapping = base(10, UTILIZATION, 90);
    flapping.backends[0].fault =
        Fault::Flapping { period: Duration::from_secs(30), down: Duration::from_secs(5) };
    b.add(5, "", &GENERAL, &both, &flapping);

    // 6. Every backend answers 503.
    let mut failing = base(5, 0.5, 30);
    for spec in &mut failing.backends {
        spec.fault = Fault::Failing;
    }
    b.add(6, "", &CLIENT, &[Health::Bare, Health::RetriesUnbudgeted, Health::Full], &failing);

    // 7. Key 0 carries 10 % of the requests.
    let hot = Setup { keys: Keys::Hot { count: 10_000, hot_share: 0.1 }, ..base(10, UTILIZATION, 60) };
    b.add(7, "", &HASHING, &both, &hot);

    // 8. Nine backends; a tenth joins at 20 s, 5x slower at first and warm after 30 s.
    let mut scale_up = base(10, UTILIZATION, 60);
    let newcomer = scale_up.backends.len() - 1;
    scale_up.backends[newcomer].joins_at = secs(20);
    scale_up.backends[newcomer].fault = Fault::Cold { factor: 5.0, warm: secs(30) };
    let slow_started: Vec<String> = CLIENT.iter().map(|n| format!("slow_start:{n}")).collect();
    let slow_started: Vec<&str> = slow_started.iter().map(String::as_str).collect();
    b.add(8, "cold join", &CLIENT, &both, &scale_up);
    b.add(8, "cold join", &slow_started, &both, &scale_up);

    // 9. The same load through one proxy (a 0.25 ms hop) or from 50 clients each on its own.
    for (fault, name) in [(Fault::Slow(10.0), "one slow"), (Fault::Dead, "one dead")] {
        let mut setup = base(10, UTILIZATION, 60);
        setup.backends[0].fault = fault;
        let server = Setup { hop: Duration::from_micros(250), ..setup.clone() };
        let client = Setup { views: 50, ..setup };
        let (server_name, client_name) = match name {
            "one slow" => ("one slow, server-side", "one slow, client-side"),
            _ => ("one dead, server-side", "one dead, client-side"),
        };
        b.add(9, server_name, &CLIENT, &[Health::Full], &server);
        b.add(9, client_name, &CLIENT, &[Health::Full], &client);
    }
    b.cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_cases_and_every_name_parses() {
        let cases = cases(1, 1.0);
        for s in SCENARIOS {
            assert!(cases.iter().any(|c| c.scenario == s), "{}", s.title);
        }
        assert!(cases.iter().all(|c| c.setup.algorithm.validate().is_ok()));
        for name in KEYED {
            assert!(algorithm(name).uses_key());
        }
        // Round robin runs with a dead backend, with the health machinery: the goal's case.
        assert!(
            cases
                .iter()
                .any(|c| c.scenario.number == 4 && c.algorithm == "round_robin" && c.health == Health::Full)
        );
    }

    #[test]
    fn scale_shortens_runs_and_the_join() {
        let short = cases(1, 0.1);
        let eight = short.iter().find(|c| c.scenario.number == 8).unwrap();
        assert_eq!(eight.setup.duration, Duration::from_secs(6));
        assert_eq!(eight.setup.backends[9].joins_at, Duration::from_secs(2));
    }
}
