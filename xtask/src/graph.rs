//! The dependency rules of docs/ARCHITECTURE.md, checked against the crate
//! graph `cargo metadata` reports: which of our crates may depend on which
//! (normal dependencies; tests and benchmarks may use more), and which
//! crates may pull in the async runtime and HTTP stacks at all.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cmd;

/// Our crates and the crates of ours each may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("lb-core", &[]),
    ("lb-algorithms", &["lb-core"]),
    // lb-tls only behind `tokio` (the prober's checks over TLS); see IO_STACKS.
    ("lb-health", &["lb-core", "lb-tls"]),
    ("lb-discovery", &["lb-core"]),
    ("lb-tls", &[]),
    ("lb-consul", &["lb-core", "lb-discovery", "lb-tls"]),
    ("lb-engine", &["lb-core", "lb-health", "lb-discovery"]),
    ("lb-client", &["lb-core", "lb-algorithms", "lb-health", "lb-discovery", "lb-engine", "lb-tls"]),
    (
        "lb-proxy",
        &["lb-core", "lb-algorithms", "lb-health", "lb-discovery", "lb-consul", "lb-engine", "lb-tls"],
    ),
    // Dev-facing: the simulator drives the pure crates; no product depends on it.
    ("lb-sim", &["lb-core", "lb-algorithms", "lb-health"]),
];

/// Runtime and HTTP crates the pure crates must not depend on (unless optional, behind a feature);
/// lb-tls is one of them, since it brings tokio.
const IO_STACKS: &[&str] = &["tokio", "hyper", "hyper-util", "reqwest", "lb-tls"];
const PURE: &[&str] = &["lb-core", "lb-algorithms", "lb-health", "lb-sim"];

/// One broken rule, said plainly.
fn violations(metadata: &Value) -> Result<Vec<String>, String> {
    let packages = metadata["packages"].as_array().ok_or("cargo metadata has no packages")?;
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut found = Vec::new();
    let mut seen = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        let Some(ours) = allowed.get(name) else { continue };
        seen.push(name);
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let (dep, kind) = (dependency["name"].as_str().unwrap_or_default(), &dependency["kind"]);
            // `kind` is null for normal dependencies, "dev" or "build" otherwise.
            if !kind.is_null() {
                continue;
            }
            if allowed.contains_key(dep) && !ours.contains(&dep) {
                found.push(format!("{name} depends on {dep}, which docs/ARCHITECTURE.md does not allow"));
            }
            let optional = dependency["optional"].as_bool().unwrap_or(false);
            if PURE.contains(&name) && IO_STACKS.contains(&dep) && !optional {
                found.push(format!("{name} depends on {dep} without a feature gate; it must stay pure"));
            }
        }
    }
    for (name, _) in ALLOWED {
        if !seen.contains(name) {
            found.push(format!("{name} is listed in the rules but not in the workspace"));
        }
    }
    Ok(found)
}

/// Checks the workspace's crate graph against the rules.
pub(crate) fn check() -> Result<(), String> {
    cmd::step("crate graph against docs/ARCHITECTURE.md");
    let output = std::process::Command::new(cmd::cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(cmd::workspace_root())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let found = violations(&metadata)?;
    if found.is_empty() {
        println!("{} crates follow their dependency rules", ALLOWED.len());
        return Ok(());
    }
    Err(format!("the crate graph breaks docs/ARCHITECTURE.md:\n  {}", found.join("\n  ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, deps: &[(&str, Option<&str>, bool)]) -> Value {
        let deps: Vec<Value> = deps
            .iter()
            .map(|(n, kind, optional)| serde_json::json!({ "name": n, "kind": kind, "optional": optional }))
            .collect();
        serde_json::json!({ "name": name, "dependencies": deps })
    }

    fn workspace(extra: Vec<Value>) -> Value {
        let mut packages: Vec<Value> = ALLOWED.iter().map(|(n, _)| package(n, &[])).collect();
        packages.extend(extra);
        serde_json::json!({ "packages": packages })
    }

    #[test]
    fn forbidden_edges_and_ungated_io_are_reported() {
        assert!(violations(&workspace(Vec::new())).unwrap().is_empty());
        let bad = workspace(vec![
            package("lb-core", &[("lb-algorithms", None, false)]),
            package("lb-client", &[("lb-proxy", None, false), ("lb-consul", Some("dev"), false)]),
            package("lb-health", &[("tokio", None, true), ("hyper", None, false)]),
            package("lb-proxy", &[("lb-sim", None, false)]),
            package("lb-sim", &[("lb-engine", None, false), ("tokio", Some("dev"), false)]),
        ]);
        let found = violations(&bad).unwrap();
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found[0].starts_with("lb-core depends on lb-algorithms"));
        assert!(found[1].starts_with("lb-client depends on lb-proxy"));
        assert!(found[2].starts_with("lb-health depends on hyper without a feature gate"));
        assert!(found[3].starts_with("lb-proxy depends on lb-sim"));
        assert!(found[4].starts_with("lb-sim depends on lb-engine"));
    }
}
