//! `cargo xtask test`: the whole suite, exactly as CI runs it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{apt, cmd, graph, reliability};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Skip installing Debian packages (they must already be there).
    #[arg(long)]
    no_install: bool,
}

/// Crates that must keep building without their default (`std`) features.
const NO_STD_CRATES: &[&str] = &["lb-core", "lb-algorithms", "lb-health"];

/// A bare-metal target with 64-bit atomics (lb-core's in-flight and latency
/// counters use them) and no `std` at all: a crate that builds for it is
/// `no_std` for real, not just with its `std` feature off.
const BARE_METAL_TARGET: &str = "riscv64gc-unknown-none-elf";

/// [`BARE_METAL_TARGET`], added through rustup when missing; `None` (with a
/// warning) where rustup cannot fetch it, and the no_std crates are then
/// built for the host without their default features.
fn bare_metal_target() -> Option<&'static str> {
    let installed = || {
        std::process::Command::new("rustup").args(["target", "list", "--installed"]).output().is_ok_and(
            |out| String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == BARE_METAL_TARGET),
        )
    };
    if installed() || cmd::run("rustup", &["target", "add", BARE_METAL_TARGET]).is_ok() {
        return Some(BARE_METAL_TARGET);
    }
    println!(
        "warning: could not add the {BARE_METAL_TARGET} target through rustup; \
         building the no_std crates for the host with --no-default-features instead"
    );
    None
}

/// How long the plain `cargo test` run may take, build included, before it is
/// killed: it has no per-test timeout of its own.
const CARGO_TEST_TIMEOUT: Duration = Duration::from_secs(25 * 60);

/// How long the quick reliability run may take, its build included (the run alone is about a minute).
const RELIABILITY_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long one example may run before it is killed and the step fails.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let cargo = cmd::cargo();
    if !args.no_install {
        apt::install_missing()?;
    }

    cmd::step("format");
    cmd::run(&cargo, &["fmt", "--all", "--check"])?;

    graph::check()?;

    cmd::step("clippy (warnings are errors)");
    cmd::run(&cargo, &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])?;

    if cmd::succeeds(&cargo, &["nextest", "--version"]) {
        cmd::step("tests, each in its own process (nextest ends a hung one)");
        let profile = if std::env::var_os("CI").is_some() { "ci" } else { "default" };
        cmd::run(&cargo, &["nextest", "run", "--workspace", "--all-features", "--profile", profile])?;
    }

    // Contributors run plain `cargo test`, where the tests of one binary share a
    // process (and so its globals: a metrics recorder, environment variables).
    // The same test binaries, so this costs a run, not a build.
    cmd::step("tests and doctests under plain `cargo test`, tests of a binary sharing a process");
    let took = run_bounded(&cargo, &["test", "--workspace", "--all-features"], CARGO_TEST_TIMEOUT)
        .map_err(|e| format!("`cargo test --workspace --all-features` failed: {e}"))?;
    println!("cargo test passed in {:.1} s", took.as_secs_f64());

    cmd::step("examples (each must finish within 2 minutes)");
    run_examples(&cargo)?;

    cmd::step("no_std builds, for a bare-metal target where std does not exist");
    let bare_metal = bare_metal_target();
    for krate in NO_STD_CRATES {
        match bare_metal {
            Some(target) => {
                cmd::run(
                    &cargo,
                    &["build", "--package", krate, "--no-default-features", "--target", target],
                )?;
            }
            None => cmd::run(&cargo, &["build", "--package", krate, "--no-default-features"])?,
        }
    }

    cmd::step("reliability scenarios, quick: the real binary under load while things break");
    let quick = reliability::command(true, &[]);
    let took = run_bounded(&cargo, &quick, RELIABILITY_TIMEOUT)
        .map_err(|e| format!("the quick reliability scenarios failed: {e}"))?;
    println!("reliability scenarios passed in {:.1} s", took.as_secs_f64());

    println!("\nall checks passed");
    Ok(())
}

/// Runs every `crates/*/examples/*.rs` with `cargo run --quiet -p <crate> --example <name>`.
/// Each crate's examples are built first, so the timeout bounds the run, not the build.
fn run_examples(cargo: &str) -> Result<(), String> {
    let started = Instant::now();
    let examples = examples(&cmd::workspace_root().join("crates"))?;
    let mut packages: Vec<&str> = examples.iter().map(|(package, _)| package.as_str()).collect();
    packages.dedup();
    for package in packages {
        cmd::run(cargo, &["build", "--quiet", "--package", package, "--examples"])?;
    }
    for (package, example) in &examples {
        let args = ["run", "--quiet", "--package", package, "--example", example];
        let took = run_bounded(cargo, &args, EXAMPLE_TIMEOUT)
            .map_err(|e| format!("example `{example}` of {package} failed: {e}"))?;
        println!("example `{example}` of {package} passed in {:.1} s", took.as_secs_f64());
    }
    println!("{} examples passed in {:.1} s", examples.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Every `<crate>/examples/<name>.rs` under `crates`, as (package, example name), sorted.
fn examples(crates: &Path) -> Result<Vec<(String, String)>, String> {
    let list = |dir: &Path| -> Result<Vec<std::path::PathBuf>, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let mut paths = entries
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        paths.sort();
        Ok(paths)
    };
    let mut found = Vec::new();
    for krate in list(crates)? {
        let examples_dir = krate.join("examples");
        if !examples_dir.is_dir() {
            continue;
        }
        let package = package_name(&krate.join("Cargo.toml"))?;
        for file in list(&examples_dir)? {
            if file.extension().is_some_and(|e| e == "rs")
                && let Some(name) = file.file_stem().and_then(|s| s.to_str())
            {
                found.push((package.clone(), name.to_string()));
            }
        }
    }
    Ok(found)
}

/// The `name` of a manifest's `[package]` table.
fn package_name(manifest: &Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(manifest).map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some(value) =
                line.strip_prefix("name").map(str::trim_start).and_then(|r| r.strip_prefix('='))
        {
            return Ok(value.trim().trim_matches('"').to_string());
        }
    }
    Err(format!("{} has no [package] name", manifest.display()))
}

/// Runs `program args...` in the workspace root, killing it (and what it
/// started) when it runs longer than `timeout`; how long it took.
fn run_bounded(program: &str, args: &[&str], timeout: Duration) -> Result<Duration, String> {
    println!("$ {program} {}", args.join(" "));
    let mut command = Command::new(program);
    command.args(args).current_dir(cmd::workspace_root());
    // Its own process group, so a timeout kills the example too, not only cargo.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("could not start `{program}`: {e}"))?;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("could not wait for `{program}`: {e}"))? {
            return if status.success() {
                Ok(started.elapsed())
            } else {
                Err(format!("exited with {status}"))
            };
        }
        if started.elapsed() >= timeout {
            #[cfg(unix)]
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {} s; killed", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
