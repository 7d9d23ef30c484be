//! `cargo xtask test`: the whole suite, exactly as CI runs it.

use crate::{apt, cmd};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Skip installing Debian packages (they must already be there).
    #[arg(long)]
    no_install: bool,
}

/// Crates that must keep building without their default (`std`) features.
const NO_STD_CRATES: &[&str] = &["lb-core", "lb-algorithms", "lb-health"];

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let cargo = cmd::cargo();
    if !args.no_install {
        apt::install_missing()?;
    }

    cmd::step("format");
    cmd::run(&cargo, &["fmt", "--all", "--check"])?;

    cmd::step("clippy (warnings are errors)");
    cmd::run(&cargo, &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])?;

    cmd::step("tests");
    if cmd::succeeds(&cargo, &["nextest", "--version"]) {
        let profile = if std::env::var_os("CI").is_some() { "ci" } else { "default" };
        cmd::run(&cargo, &["nextest", "run", "--workspace", "--all-features", "--profile", profile])?;
    } else {
        println!("cargo-nextest not found; using cargo test");
        cmd::run(&cargo, &["test", "--workspace", "--all-features", "--lib", "--bins", "--tests"])?;
    }

    cmd::step("doctests");
    cmd::run(&cargo, &["test", "--workspace", "--all-features", "--doc"])?;

    cmd::step("no_std builds");
    for krate in NO_STD_CRATES {
        cmd::run(&cargo, &["build", "--package", krate, "--no-default-features"])?;
    }

    println!("\nall checks passed");
    Ok(())
}
