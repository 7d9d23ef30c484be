//! Developer automation for the lb workspace, run as `cargo xtask <command>`.
//!
//! Everything a developer or CI does beyond a plain `cargo build` lives here,
//! so the README's commands are the whole story.

mod apt;
mod bench;
mod cmd;
mod fuzz;
mod graph;
mod mutants;
mod reliability;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer automation for lb")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the Debian packages the tests need, then run fmt, the crate-graph rules, clippy,
    /// tests (under nextest and under plain `cargo test`), doctests, every example, the no_std builds
    /// and the quick reliability scenarios.
    Test(test::Args),
    /// Run criterion benchmarks side by side with the peer crates and servers, the
    /// simulated scenarios (`scenarios`: docs/scenarios/) and scenarios 3 and 4 for real
    /// next to their simulation (`live`: docs/scenarios/live.md).
    Bench(bench::Args),
    /// Run the reliability scenarios: the real lb-proxy binary under load while backends die,
    /// hang or misbehave and clients flood it (docs/reliability.md); then, in the full run, the
    /// fuzz targets of the parsers of outside input at length. Exits non-zero when a promise is
    /// broken.
    Reliability(reliability::Args),
    /// Run the fuzz targets of the parsers of outside input at length, as the end of
    /// `reliability` does (docs/reliability.md, "Bad input never panics").
    Fuzz,
    /// Run cargo-mutants on lb-algorithms and lb-health, one shard at a time (installed when
    /// missing); exits non-zero when a mutant survives the tests.
    Mutants(mutants::Args),
    /// Install the Debian packages the tests need (what `test` does first).
    Deps,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Test(args) => test::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Reliability(args) => reliability::run(&args),
        Command::Fuzz => fuzz::run(),
        Command::Mutants(args) => mutants::run(&args),
        Command::Deps => apt::install_missing(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err}");
            ExitCode::FAILURE
        }
    }
}
