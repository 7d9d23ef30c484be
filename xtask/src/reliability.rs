//! `cargo xtask reliability [--quick]`: the real lb-proxy binary under load
//! while backends die, hang, misbehave and clients flood it
//! (`crates/lb-proxy/benches/reliability`, docs/reliability.md); the full
//! run then fuzzes the parsers of outside input at length (`crate::fuzz`).

use crate::{apt, cmd, fuzz};

/// Options of `cargo xtask reliability`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Every scenario smaller and shorter, on a debug build (what `cargo xtask test` runs).
    #[arg(long)]
    quick: bool,
    /// Only these scenarios, by number (all when none is named; the fuzz targets only then).
    scenarios: Vec<u8>,
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    apt::install_reliability_packages()?;
    cmd::step(if args.quick { "reliability scenarios, quick" } else { "reliability scenarios" });
    let numbers: Vec<String> = args.scenarios.iter().map(u8::to_string).collect();
    cmd::run(&cmd::cargo(), &command(args.quick, &numbers))?;
    // The quick run's budget has no room for them; `cargo test` runs each briefly anyway.
    if !args.quick && args.scenarios.is_empty() {
        fuzz::run()?;
    }
    Ok(())
}

/// The cargo command line: the quick run reuses the test build (the dev profile).
pub(crate) fn command(quick: bool, scenarios: &[String]) -> Vec<&str> {
    let mut command = vec!["bench", "--package", "lb-proxy", "--bench", "reliability"];
    if quick {
        command.extend(["--profile", "dev"]);
    }
    command.push("--");
    if quick {
        command.push("--quick");
    }
    command.extend(scenarios.iter().map(String::as_str));
    command
}
