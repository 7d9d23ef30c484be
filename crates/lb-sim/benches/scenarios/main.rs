//! `cargo xtask bench scenarios`: plays the nine scenarios of issue 18 on
//! lb-sim, prints the figures, checks the goals, and writes the SVG
//! plots and `docs/scenarios/README.md`.
//!
//! `LB_SIM_SCALE` (default 1) shortens every run, for a quick look.

mod plot;
mod report;

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use lb_sim::scenarios::{self, Case};
use lb_sim::{Figures, Measured, run};

/// One finished case, reduced to what the report and the plots read.
pub(crate) struct Outcome {
    pub(crate) case: Case,
    pub(crate) figures: Figures,
    pub(crate) requests: u64,
    pub(crate) bound_checks: u64,
    pub(crate) bound_violations: u64,
    /// (latency in ms, fraction of requests at most that slow).
    pub(crate) cdf: Vec<(f64, f64)>,
    /// Per time bucket: the watched backend's share of the tries (or the busiest one's).
    pub(crate) watched_share: Vec<f64>,
}

/// The seed of every published figure.
const SEED: u64 = 18;

fn main() {
    let scale = std::env::var("LB_SIM_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/scenarios");
    let started = Instant::now();
    let cases = scenarios::cases(SEED, scale);
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut outcomes = Vec::with_capacity(cases.len());
    for case in cases {
        bar.set_message(format!("{} {} {}", case.scenario.slug, case.algorithm, case.health.label()));
        let measured = run(&case.setup);
        outcomes.push(reduce(case, &measured));
        bar.inc(1);
    }
    let keys = report::keys_moved();
    bar.finish_with_message("done");
    let elapsed = started.elapsed();

    print!("{}", report::table(&outcomes));
    let goals = report::goals(&outcomes, &keys);
    print!("{}", report::goal_table(&goals));
    println!("{} runs in {:.1} s", outcomes.len(), elapsed.as_secs_f64());

    std::fs::create_dir_all(&out).expect("create docs/scenarios");
    let plots = plot::write_all(&outcomes, &out).expect("write the plots");
    let readme = report::readme(&outcomes, &keys, &goals, &plots, scale, elapsed);
    std::fs::write(out.join("README.md"), readme).expect("write docs/scenarios/README.md");
    println!("wrote {} plots and README.md to {}", plots.len(), out.display());
}

fn reduce(case: Case, m: &Measured) -> Outcome {
    let figures = m.figures();
    // Evenly in the body, densely in the tail, where the algorithms differ.
    let quantiles =
        (0..198).map(|i| f64::from(i) * 0.005).chain((0..=99).map(|i| 0.99 + f64::from(i) * 0.0001));
    let cdf = quantiles.map(|q| (m.quantile(q).as_secs_f64() * 1e3, q)).collect();
    let watched_share = m
        .timeline
        .iter()
        .map(|row| {
            let all: u32 = row.iter().sum();
            let watched = match case.watch {
                Some(b) => row.get(b).copied().unwrap_or(0),
                None => row.iter().copied().max().unwrap_or(0),
            };
            if all == 0 { 0.0 } else { f64::from(watched) / f64::from(all) }
        })
        .collect();
    Outcome {
        figures,
        requests: m.requests,
        bound_checks: m.bound_checks,
        bound_violations: m.bound_violations,
        cdf,
        watched_share,
        case,
    }
}
