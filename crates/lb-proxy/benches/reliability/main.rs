//! `cargo xtask reliability`: the real `lb-proxy` binary under load while
//! things break, with a promise per scenario (issue 15; docs/reliability.md).
//! Every backend is a child process (this binary again, so it can be
//! SIGKILLed), the load is wrk or the bench's own clients, everything is on
//! 127.0.0.1 and bounded in time. Prints a table, one row per scenario, and
//! exits non-zero when a promise is broken.
//!
//! `--quick` runs every scenario smaller and shorter (within 3 minutes, on a
//! debug build, inside `cargo xtask test`); the full run makes the figures.

mod backend;
mod bodies;
mod faults;
mod floods;
mod harness;
mod lifecycle;
mod misbehaving;

use harness::{Bench, Outcome, Scale};

/// The scenarios in issue 15's order.
const SCENARIOS: &[fn(&Bench) -> Outcome] = &[
    faults::backend_killed,
    faults::backend_hangs,
    lifecycle::reloads,
    lifecycle::drain,
    floods::slowloris,
    floods::connection_flood,
    bodies::big_bodies,
    misbehaving::misbehaving_backend,
    faults::retry_storm,
    bodies::uploads_under_faults,
];

fn main() {
    if let Ok(spec) = std::env::var(backend::BACKEND_ENV) {
        return backend::run(&spec);
    }
    // `cargo bench` adds `--bench`; `--quick` and scenario numbers are ours.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scale = Scale { quick: args.iter().any(|a| a == "--quick") };
    let only: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let wrk = harness::which("wrk").expect("wrk is not installed (cargo xtask reliability installs it)");
    let bench = Bench { work: harness::tempdir(), wrk, scale };
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for (n, scenario) in SCENARIOS.iter().enumerate() {
        if only.is_empty() || only.contains(&(n + 1)) {
            let outcome = scenario(&bench);
            println!(
                "{} — {}: {}",
                outcome.scenario,
                if outcome.kept { "kept" } else { "BROKEN" },
                outcome.figure
            );
            results.push(outcome);
        }
    }
    let _ = std::fs::remove_dir_all(&bench.work);
    println!("\n| scenario | figure | promise | kept |\n|---|---|---|---|");
    for r in &results {
        println!("| {} | {} | {} | {} |", r.scenario, r.figure, r.promise, if r.kept { "yes" } else { "NO" });
    }
    println!("\n{} scenario(s) in {:.0} s", results.len(), started.elapsed().as_secs_f64());
    if results.iter().any(|r| !r.kept) {
        eprintln!("a promise was broken");
        std::process::exit(1);
    }
}
