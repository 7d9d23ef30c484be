//! `cargo xtask bench [SUITE...]`: criterion suites, each comparing us with
//! our peers in the same run so ratios survive a noisy machine, and the
//! simulated scenarios (`scenarios`, lb-sim).

use crate::cmd;

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Suites to run (all when none is named).
    suites: Vec<String>,
}

/// A named benchmark target: `cargo bench -p <package> --bench <bench>`.
struct Suite {
    name: &'static str,
    package: &'static str,
    bench: &'static str,
}

/// Every suite `cargo xtask bench` knows.
const SUITES: &[Suite] = &[
    Suite { name: "algorithms", package: "lb-algorithms", bench: "algorithms" },
    Suite { name: "health", package: "lb-health", bench: "health" },
    Suite { name: "client", package: "lb-client", bench: "client" },
    Suite { name: "proxy", package: "lb-proxy", bench: "proxy" },
    // lb-sim's nine scenarios: a plain binary (progress bar, table, goals, plots in docs/scenarios/).
    Suite { name: "scenarios", package: "lb-sim", bench: "scenarios" },
    // Scenarios 3 and 4 for real (lb-proxy, lb-client's pool) next to their simulated twins.
    Suite { name: "live", package: "lb-proxy", bench: "live" },
];

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let chosen: Vec<&Suite> = if args.suites.is_empty() {
        SUITES.iter().collect()
    } else {
        args.suites
            .iter()
            .map(|name| {
                SUITES.iter().find(|s| s.name == name).ok_or_else(|| {
                    let known: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
                    format!("unknown bench suite `{name}`; known: {}", known.join(", "))
                })
            })
            .collect::<Result<_, _>>()?
    };
    if chosen.is_empty() {
        return Err("no benchmark suites are defined yet".to_string());
    }
    let cargo = cmd::cargo();
    for suite in chosen {
        if suite.name == "proxy" {
            crate::apt::install_bench_packages()?;
        }
        cmd::step(&format!("bench {}", suite.name));
        cmd::run(&cargo, &["bench", "--package", suite.package, "--bench", suite.bench])?;
    }
    Ok(())
}
