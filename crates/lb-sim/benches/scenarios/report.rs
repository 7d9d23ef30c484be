//! The figures as a terminal table and as `docs/scenarios/README.md`, and
//! the goals checked against them.

use std::fmt::Write;
use std::time::Duration;

use lb_sim::scenarios::{KEYED, SCENARIOS};
use lb_sim::{Health, keys_moved as moved};

use crate::Outcome;
use crate::plot::Plot;

/// Endpoints before the change, and keys mapped, for the key-movement table.
const KEY_ENDPOINTS: usize = 10;
const KEYS: u32 = 100_000;

/// What each scenario sets up, for the README.
const SETUPS: [&str; 9] = [
    "Ten identical backends (log-normal service time, median 20 ms, sigma 0.5, 4 requests at once, FIFO queue) at 70 % of their capacity, Poisson arrivals for 60 s; and a closed loop of 90 clients thinking 50 ms.",
    "Five backends serving 8, 4, 4, 2 and 2 requests at once at 70 % of the total; weights announced equal to the capacities (right), then all 1 (wrong).",
    "Ten backends, backend 0 ten times slower; the load is 70 % of ten healthy backends' capacity.",
    "Five backends at 60 % load, backend 0 refuses every connection (answer after 1 ms).",
    "Ten backends, backend 0 refuses connections during the last 5 s of every 30 s; 90 s.",
    "Five backends that all answer 503 at 50 % load for 30 s: how many tries each request costs.",
    "Ten backends; key 0 carries 10 % of the requests, the rest spread over 10 000 keys. Only hashing algorithms.",
    "Nine backends at 78 % load; a tenth joins at 20 s, five times slower at first and warm after 30 s, with and without slow start (30 s window, 10 % floor); the load plot watches the newcomer. Key movement for scale down and up is the table below.",
    "Ten backends, one 10x slow (or dead), at 70 % load: one proxy with the global view (0.25 ms hop) against 50 clients each balancing on its own.",
];

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 { format!("{ms:.0}") } else { format!("{ms:.1}") }
}

fn percent(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

/// The fixed-width table printed at the end of the run.
pub(crate) fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<20} {:<24} {:<22} {:<18} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "scenario",
        "variant",
        "algorithm",
        "health",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "success",
        "tries",
        "max/mean"
    );
    for o in outcomes {
        let f = &o.figures;
        let _ = writeln!(
            out,
            "{:<20} {:<24} {:<22} {:<18} {:>8} {:>8} {:>8} {:>9} {:>8.3} {:>8.2}",
            o.case.scenario.slug,
            o.case.variant,
            o.case.algorithm,
            o.case.health.label(),
            ms(f.p50),
            ms(f.p99),
            ms(f.p999),
            percent(f.success),
            f.attempts,
            f.max_over_mean
        );
    }
    out
}

/// Key movement per hashing algorithm: (name, share moved on a removal, on an addition).
pub(crate) fn keys_moved() -> Vec<(&'static str, f64, f64)> {
    KEYED
        .iter()
        .map(|&name| {
            let algorithm = name.parse().expect("a known algorithm");
            (
                name,
                moved(&algorithm, KEY_ENDPOINTS, KEYS, false),
                moved(&algorithm, KEY_ENDPOINTS, KEYS, true),
            )
        })
        .collect()
}

/// One of the goals, with the figure that answers it.
pub(crate) struct Goal {
    pub(crate) goal: String,
    pub(crate) figure: String,
    pub(crate) met: bool,
}

fn find<'a>(
    outcomes: &'a [Outcome],
    scenario: u8,
    variant: &str,
    algorithm: &str,
    health: Health,
) -> Option<&'a Outcome> {
    outcomes.iter().find(|o| {
        o.case.scenario.number == scenario
            && o.case.variant == variant
            && o.case.algorithm == algorithm
            && o.case.health == health
    })
}

/// The goals of issue 18, checked against this run.
pub(crate) fn goals(outcomes: &[Outcome], keys: &[(&str, f64, f64)]) -> Vec<Goal> {
    let mut goals = Vec::new();
    for health in [Health::Bare, Health::Full] {
        let healthy = find(outcomes, 1, "open loop", "peak_ewma", health);
        let slow = find(outcomes, 3, "", "peak_ewma", health);
        if let (Some(healthy), Some(slow)) = (healthy, slow) {
            let ratio = slow.figures.p99.as_secs_f64() / healthy.figures.p99.as_secs_f64();
            goals.push(Goal {
                goal: format!("one of ten 10x slow: peak-EWMA p99 ≤ 1.2x all-healthy ({})", health.label()),
                figure: format!("{} ms vs {} ms: {ratio:.2}x", ms(slow.figures.p99), ms(healthy.figures.p99)),
                met: ratio <= 1.2,
            });
        }
    }
    let dead: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.case.scenario.number == 4 && o.case.health == Health::Full).collect();
    if let Some(worst) = dead.iter().min_by(|a, b| a.figures.success.total_cmp(&b.figures.success)) {
        let rr = dead.iter().find(|o| o.case.algorithm == "round_robin").map_or(0.0, |o| o.figures.success);
        goals.push(Goal {
            goal: "one of five dead: ≥ 99.9 % success with retries, every algorithm, round robin included"
                .into(),
            figure: format!(
                "round robin {}; lowest {} ({})",
                percent(rr),
                percent(worst.figures.success),
                worst.case.algorithm
            ),
            met: worst.figures.success >= 0.999,
        });
    }
    let failing: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.case.scenario.number == 6 && o.case.health == Health::Full).collect();
    if !failing.is_empty() {
        // 20 % of the requests, plus 10 retries a second of reserve, each living 10 s.
        let bound = |o: &Outcome| {
            1.2 + 10.0 * (o.case.setup.duration.as_secs_f64() + 10.0) / o.requests.max(1) as f64
        };
        let worst = failing
            .iter()
            .max_by(|a, b| (a.figures.attempts - bound(a)).total_cmp(&(b.figures.attempts - bound(b))))
            .expect("not empty");
        goals.push(Goal {
            goal: "every backend failing: tries per request ≤ 1 + budget ratio (0.2) + reserve".into(),
            figure: format!(
                "at most {:.3} ({}) against a bound of {:.3}; {:.2} without a budget",
                worst.figures.attempts,
                worst.case.algorithm,
                bound(worst),
                outcomes
                    .iter()
                    .find(|o| o.case.scenario.number == 6 && o.case.health == Health::RetriesUnbudgeted)
                    .map_or(0.0, |o| o.figures.attempts)
            ),
            met: failing.iter().all(|o| o.figures.attempts <= bound(o)),
        });
    }
    let bounded: Vec<&Outcome> = outcomes.iter().filter(|o| o.bound_checks > 0).collect();
    let checks: u64 = bounded.iter().map(|o| o.bound_checks).sum();
    let violations: u64 = bounded.iter().map(|o| o.bound_violations).sum();
    goals.push(Goal {
        goal: "bounded loads: no backend ever above ⌈c·m/n⌉".into(),
        figure: format!("{violations} of {checks} picks above the cap, over {} runs", bounded.len()),
        met: violations == 0 && checks > 0,
    });
    let ideal = (1.0 / KEY_ENDPOINTS as f64, 1.0 / (KEY_ENDPOINTS + 1) as f64);
    for name in ["ring_hash", "rendezvous"] {
        if let Some(&(_, removed, added)) = keys.iter().find(|k| k.0 == name) {
            goals.push(Goal {
                goal: format!("key movement, {name}: 1/n on a removal (and 1/(n+1) on an addition)"),
                figure: format!(
                    "{} removed (1/n = {}), {} added (1/(n+1) = {})",
                    percent(removed),
                    percent(ideal.0),
                    percent(added),
                    percent(ideal.1)
                ),
                met: (removed - ideal.0).abs() <= 0.1 * ideal.0 && (added - ideal.1).abs() <= 0.1 * ideal.1,
            });
        }
    }
    if let Some(&(_, removed, added)) = keys.iter().find(|k| k.0 == "maglev") {
        goals.push(Goal {
            goal: "key movement, Maglev: near-minimal as the paper predicts (taken here: at least 1/n, at most 1.5/n)".into(),
            figure: format!("{} removed, {} added (M = 65537, n = {KEY_ENDPOINTS})", percent(removed), percent(added)),
            met: removed >= 0.99 * ideal.0 && removed <= 1.5 * ideal.0 && added <= 1.5 * ideal.1,
        });
    }
    goals
}

/// The goals as a terminal table.
pub(crate) fn goal_table(goals: &[Goal]) -> String {
    let mut out = String::from("\ngoals of issue 18:\n");
    for g in goals {
        let _ = writeln!(out, "  [{}] {}: {}", if g.met { "met" } else { "NOT met" }, g.goal, g.figure);
    }
    out
}

/// `docs/scenarios/README.md`.
pub(crate) fn readme(
    outcomes: &[Outcome],
    keys: &[(&str, f64, f64)],
    goals: &[Goal],
    plots: &[Plot],
    scale: f64,
    elapsed: Duration,
) -> String {
    let mut md = String::from("# Scenarios: the algorithms and the health machinery, simulated\n\n");
    md.push_str(
        "Written by `cargo xtask bench scenarios` (`crates/lb-sim/benches/scenarios/`); do not edit by hand. \
         Every figure comes from `lb-sim`, which drives the real `lb-algorithms` balancers and the real \
         `lb-health` breaker (the guide's preset: ratio 0.6 of at least 3, 10 s open), the guide's outlier \
         detection (the 6th failure in a row ejects), the retry policy (3 attempts, Envoy's backoff, 1 s per try) and the retry budget \
         (20 %, 10/s, 10 s) on a simulated clock. `health` is all of those plus the 50 % panic threshold; \
         `bare` is one attempt and nothing else. Latencies count every request, failed ones included, \
         from arrival to final answer; `tries` is tries sent to backends per request; `max/mean` is the \
         busiest backend's share of the tries over the mean share.\n\n",
    );
    let _ = writeln!(
        md,
        "Seed {}, {} runs{}, {:.0} s of wall time on the machine that wrote it. \
         [`docs/choosing.md`](../choosing.md) reads these figures; [live.md](live.md) puts scenarios 3 \
         and 4 played for real (`cargo xtask bench live`) next to them.\n",
        crate::SEED,
        outcomes.len(),
        if scale == 1.0 { String::new() } else { format!(" at scale {scale}") },
        elapsed.as_secs_f64()
    );
    md.push_str("## Goals of issue 18\n\n| goal | figure | met? |\n|---|---|---|\n");
    for g in goals {
        let _ = writeln!(md, "| {} | {} | {} |", g.goal, g.figure, if g.met { "yes" } else { "**no**" });
    }
    for s in SCENARIOS {
        let _ = writeln!(md, "\n## {}. {}\n\n{}\n", s.number, s.title, SETUPS[usize::from(s.number) - 1]);
        for p in plots.iter().filter(|p| p.scenario == s.number) {
            let _ = writeln!(md, "![{}]({})", p.alt, p.file);
        }
        md.push_str(
            "\n| variant | algorithm | health | p50 ms | p99 ms | p99.9 ms | success | tries | max/mean |\n",
        );
        md.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|\n");
        for o in outcomes.iter().filter(|o| o.case.scenario == s) {
            let f = &o.figures;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.2} |",
                o.case.variant,
                o.case.algorithm,
                o.case.health.label(),
                ms(f.p50),
                ms(f.p99),
                ms(f.p999),
                percent(f.success),
                f.attempts,
                f.max_over_mean
            );
        }
        if s.number == 8 {
            let _ = writeln!(
                md,
                "\nKeys moved ({KEYS} keys, {KEY_ENDPOINTS} endpoints; ideal 1/n = {} on a removal, 1/(n+1) = {} on an addition):\n",
                percent(1.0 / KEY_ENDPOINTS as f64),
                percent(1.0 / (KEY_ENDPOINTS + 1) as f64)
            );
            md.push_str("| algorithm | one removed | one added |\n|---|---:|---:|\n");
            for (name, removed, added) in keys {
                let _ = writeln!(md, "| {name} | {} | {} |", percent(*removed), percent(*added));
            }
        }
    }
    md
}
