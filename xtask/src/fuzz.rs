//! The fuzz targets at length: every `fuzz::` proptest of the parsers that
//! take outside input, run with `LB_FUZZ_CASES` set to thousands of cases
//! (a plain `cargo test` runs each a few hundred times). Part of the full
//! `cargo xtask reliability`; docs/reliability.md, "Bad input never panics".

use std::time::{Duration, Instant};

use crate::cmd;

/// One fuzz target: a proptest `#[test]` in a crate's library tests.
struct Target {
    package: &'static str,
    /// The test's path inside the library.
    test: &'static str,
    /// Cases to run, chosen so that all targets take about three minutes on
    /// the dev profile on the 2-core project box: the slow generators get fewer.
    cases: u32,
}

const fn target(package: &'static str, test: &'static str, cases: u32) -> Target {
    Target { package, test, cases }
}

/// Every fuzz target, by crate.
const TARGETS: &[Target] = &[
    target("lb-proxy", "http1::fuzz::request_heads_from_arbitrary_bytes", 15_000),
    target("lb-proxy", "http1::fuzz::request_heads_near_valid", 15_000),
    target("lb-proxy", "http1::fuzz::chunked_bodies_from_arbitrary_bytes", 20_000),
    target("lb-proxy", "http1::fuzz::chunked_bodies_near_valid", 20_000),
    target("lb-proxy", "http1::fuzz::length_bodies_stop_at_their_length", 10_000),
    target("lb-proxy", "http1::fuzz::response_heads_from_arbitrary_bytes", 20_000),
    target("lb-proxy", "http1::fuzz::response_heads_near_valid", 15_000),
    target("lb-proxy", "config::fuzz::config_from_arbitrary_text", 15_000),
    target("lb-proxy", "config::fuzz::config_from_token_soup", 15_000),
    target("lb-proxy", "config::fuzz::config_with_mutated_keys", 8_000),
    target("lb-proxy", "config::fuzz::config_with_mutated_bytes", 15_000),
    target("lb-discovery", "fuzz::endpoint_files_from_arbitrary_text", 15_000),
    target("lb-discovery", "fuzz::endpoint_files_from_token_soup", 50_000),
    target("lb-discovery", "fuzz::endpoint_files_generated_then_mutated", 5_000),
    target("lb-discovery", "fuzz::dns_srv_answers", 8_000),
    target("lb-discovery", "fuzz::dns_host_answers", 20_000),
    target("lb-consul", "fuzz::health_answers_from_arbitrary_bytes", 40_000),
    target("lb-consul", "fuzz::health_answers_from_token_soup", 50_000),
    target("lb-consul", "fuzz::health_answers_with_values_replaced", 8_000),
];

/// Builds the library tests of every crate with targets, then runs each
/// target alone, printing its cases and time; fails when one fails.
pub(crate) fn run() -> Result<(), String> {
    let cargo = cmd::cargo();
    let mut packages: Vec<&str> = TARGETS.iter().map(|t| t.package).collect();
    packages.sort_unstable();
    packages.dedup();
    cmd::step("fuzz targets: building the library tests");
    let mut build = vec!["test", "--no-run", "--lib"];
    for package in &packages {
        build.extend(["--package", package]);
    }
    cmd::run(&cargo, &build)?;

    let mut results = Vec::new();
    for target in TARGETS {
        cmd::step(&format!("fuzz {} {} ({} cases)", target.package, target.test, target.cases));
        let cases = target.cases.to_string();
        let args = ["test", "--quiet", "--package", target.package, "--lib", target.test, "--", "--exact"];
        let started = Instant::now();
        let outcome = cmd::run_with_env(&cargo, &args, &[("LB_FUZZ_CASES", &cases)]);
        results.push((target, started.elapsed(), outcome.is_ok()));
    }

    println!("\n{:<14} {:<55} {:>7} {:>8} {:>9}  result", "crate", "target", "cases", "time", "cases/s");
    let mut total = Duration::ZERO;
    for (target, took, passed) in &results {
        total += *took;
        println!(
            "{:<14} {:<55} {:>7} {:>7.1}s {:>9.0}  {}",
            target.package,
            target.test,
            target.cases,
            took.as_secs_f64(),
            f64::from(target.cases) / took.as_secs_f64(),
            if *passed { "ok" } else { "FAILED" }
        );
    }
    let cases: u32 = TARGETS.iter().map(|t| t.cases).sum();
    println!("{} targets, {cases} cases in {:.1} s", TARGETS.len(), total.as_secs_f64());
    let failed: Vec<&str> = results.iter().filter(|(_, _, passed)| !passed).map(|(t, _, _)| t.test).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets failed (each failure prints its minimal input): {}", failed.join(", ")))
    }
}
