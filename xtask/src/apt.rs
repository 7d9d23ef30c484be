//! The Debian packages the test suites need, installed when missing.
//!
//! Add a line to [`PACKAGES`] when a suite starts a real server.

use crate::cmd;

/// A Debian package a test suite needs.
struct Package {
    /// The Debian package name.
    name: &'static str,
    /// Which suite needs it, printed when it is installed.
    needed_by: &'static str,
}

/// Every package any test suite needs.
const PACKAGES: &[Package] = &[
    Package {
        name: "dnsmasq",
        needed_by: "lb-discovery and lb-client DNS tests (a real resolver on 127.0.0.1)",
    },
    Package {
        name: "protobuf-compiler",
        needed_by: "lb-client gRPC tests (protoc for tonic code generation)",
    },
    Package { name: "wrk", needed_by: "the reliability scenarios (load generator)" },
    Package { name: "chromium", needed_by: "lb-proxy's dashboard test (a real headless browser)" },
    Package { name: "prometheus", needed_by: "lb-proxy's Prometheus test (a real server and promtool)" },
    Package { name: "curl", needed_by: "lb-proxy's TLS termination test (HTTP/1.1 and HTTP/2 over TLS)" },
    Package { name: "openssl", needed_by: "lb-proxy's TLS termination test (`openssl s_client` for ALPN)" },
    Package {
        name: "nghttp2-client",
        needed_by: "lb-proxy's TLS termination test (`h2load`, HTTP/2 load over TLS)",
    },
];

/// The packages `cargo xtask bench proxy` compares lb-proxy with, and drives it with.
const BENCH_PACKAGES: &[Package] = &[
    Package { name: "nginx", needed_by: "the proxy benchmark (peer: nginx, one worker)" },
    Package { name: "haproxy", needed_by: "the proxy benchmark (peer: HAProxy, one thread)" },
    Package { name: "wrk", needed_by: "the proxy benchmark (load generator)" },
    Package { name: "util-linux", needed_by: "the proxy benchmark (taskset, for the pinned mode)" },
    Package { name: "valgrind", needed_by: "the proxy benchmark (callgrind, instructions per request)" },
];

fn is_installed(name: &str) -> bool {
    let status = std::process::Command::new("dpkg-query").args(["-W", "-f=${Status}", name]).output();
    matches!(status, Ok(out) if String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// Installs the packages in [`PACKAGES`] that are missing: `apt-get update`
/// once, then one `apt-get install -y`.
pub(crate) fn install_missing() -> Result<(), String> {
    install(PACKAGES, "Debian packages for the test suites")
}

/// Installs what `cargo xtask reliability` needs: the test packages (wrk is one).
pub(crate) fn install_reliability_packages() -> Result<(), String> {
    install_missing()
}

/// Installs the packages in [`BENCH_PACKAGES`] that are missing, the same way.
pub(crate) fn install_bench_packages() -> Result<(), String> {
    install(BENCH_PACKAGES, "Debian packages for the proxy benchmark")
}

fn install(packages: &[Package], step: &str) -> Result<(), String> {
    cmd::step(step);
    let missing: Vec<&Package> = packages.iter().filter(|p| !is_installed(p.name)).collect();
    for p in packages.iter().filter(|p| !missing.iter().any(|m| m.name == p.name)) {
        println!("present: {} ({})", p.name, p.needed_by);
    }
    if missing.is_empty() {
        println!("nothing to install ({} package(s) listed)", packages.len());
        return Ok(());
    }
    for p in &missing {
        println!("installing: {} (for {})", p.name, p.needed_by);
    }
    if !cmd::succeeds("apt-get", &["--version"]) {
        return Err("apt-get is not available; install these by hand: ".to_string()
            + &missing.iter().map(|p| p.name).collect::<Vec<_>>().join(" "));
    }
    cmd::run("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(|p| p.name));
    cmd::run("apt-get", &args)
}
