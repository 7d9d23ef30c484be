//! `cargo xtask bench proxy`: lb-proxy against nginx and HAProxy, side by side.
//!
//! One one-thread hyper backend; the targets in rotation: direct, nginx with
//! one worker and upstream keepalive, HAProxy with one thread and
//! `http-reuse always`, lb-proxy with one worker thread, a one-thread tokio
//! TCP relay that parses nothing (the ceiling for any proxy on this box), and
//! lb-proxy with two worker threads. Each figure is the median of the rounds.
//!
//! - **Unpinned**: wrk, the backend and the proxy share both cores. Per
//!   target: req/s at 50 connections, added p50/p99 latency at 1 connection,
//!   the proxy's CPU seconds per 100k requests (user + system, from /proc),
//!   peak RSS and the share of backend connections reused.
//! - **Pinned** (with taskset): wrk and the backend on CPU 0, each proxy alone
//!   on CPU 1, so the proxy's core is the bottleneck: req/s per proxy core
//!   and CPU per request.
//! - **Memory**: RSS growth per client connection that sent half a request
//!   head (3,000 of them), which is what a slow or hostile client costs.
//! - **TLS**: nginx and lb-proxy terminating TLS with the same ECDSA P-256
//!   certificate (made at run time): req/s on kept-alive TLS connections,
//!   and full handshakes per second (one request per connection), with the
//!   CPU per 100k of each.
//!
//! - **Instructions**: nginx, HAProxy and lb-proxy once more under valgrind's
//!   callgrind, the user-space instructions per request of a fixed load: a
//!   figure this noisy box cannot blur (see `instructions.rs`).
//!
//! Needs wrk, nginx, haproxy, taskset and valgrind (the xtask installs
//! them); a missing peer is reported and skipped.

mod instructions;
mod load;
mod targets;

use std::path::{Path, PathBuf};

use load::{LATENCY_SECS, Round, THROUGHPUT_SECS};
use targets::{BackendServer, Launch, RELAY_ENV, Target};

const ROUNDS: usize = 5;

fn main() {
    if let Ok(spec) = std::env::var(RELAY_ENV) {
        return targets::run_tcp_relay(&spec);
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not, and must not start a long run.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "proxy benchmark: run it with `cargo xtask bench proxy` (or `cargo bench -p lb-proxy --bench proxy`)"
        );
        return;
    }
    let Some(wrk) = targets::which("wrk") else {
        eprintln!("wrk is not installed; run `cargo xtask bench proxy` to install it");
        return;
    };
    let work = std::env::temp_dir().join(format!("lb-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("temp dir");
    let backend = targets::start_backend();
    println!("backend (one-thread hyper) on {}", backend.address);

    let mut all = vec![Target::direct(backend.address)];
    type Start<'a> = &'a dyn Fn() -> Result<Target, String>;
    let starts: [(&str, Start<'_>); 5] = [
        ("nginx", &|| targets::start_nginx(&work, backend.address, Launch::Native)),
        ("HAProxy", &|| targets::start_haproxy(&work, backend.address, Launch::Native)),
        ("lb-proxy", &|| targets::start_lb_proxy(&work, backend.address, 1, Launch::Native)),
        ("tcp relay", &|| targets::start_tcp_relay(backend.address)),
        ("lb-proxy 2w", &|| targets::start_lb_proxy(&work, backend.address, 2, Launch::Native)),
    ];
    for (name, start) in starts {
        match start() {
            Ok(t) => all.push(t),
            Err(why) => eprintln!("skipped {name}: {why}"),
        }
    }
    for t in &all {
        targets::wait_until_serving(t.address);
    }

    let unpinned = rounds(&wrk, &all, &backend, "unpinned", true);
    let mut report = unpinned_table(&all, &unpinned);
    let pinned_targets: Vec<&Target> =
        all.iter().filter(|t| t.is_proxy() && t.name != "lb-proxy 2w").collect();
    let pinned_ok = targets::which("taskset").is_some()
        && load::pin(&[std::process::id()], 0)
        && pinned_targets.iter().all(|t| load::pin(&t.pids(), 1));
    if pinned_ok {
        let pinned = rounds_of(&wrk, &pinned_targets, &backend, "pinned");
        report.push_str(&pinned_table(&pinned_targets, &pinned));
    } else {
        report.push_str("\nPinned runs skipped: taskset is missing or refused.\n");
    }
    report.push_str(&memory_table(&all));
    report.push_str(&tls_table(&wrk, &work, &backend));
    report.push_str(&tls_backend_table(&wrk, &work));
    report.push_str(&instructions::instructions_table(&wrk, &work, &backend));
    println!("\n{report}");
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"), PathBuf::from);
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("proxy-bench.md"), &report);
    for t in all {
        t.stop();
    }
    let _ = std::fs::remove_dir_all(&work);
}

fn rounds(
    wrk: &Path,
    targets: &[Target],
    backend: &BackendServer,
    mode: &str,
    latency: bool,
) -> Vec<Vec<Round>> {
    let mut results: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (i, target) in targets.iter().enumerate() {
            let r = load::measure(wrk, target, backend, latency);
            print_round(mode, round, target, &r);
            results[i].push(r);
        }
    }
    results
}

fn rounds_of(wrk: &Path, targets: &[&Target], backend: &BackendServer, mode: &str) -> Vec<Vec<Round>> {
    let mut results: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (i, target) in targets.iter().enumerate() {
            let r = load::measure(wrk, target, backend, false);
            print_round(mode, round, target, &r);
            results[i].push(r);
        }
    }
    results
}

fn print_round(mode: &str, round: usize, target: &Target, r: &Round) {
    println!(
        "{mode} round {} {:<11} {:>9.0} req/s  p50 {:>7.1} us  p99 {:>7.1} us  cpu/100k {:>18}  reuse {:>8}",
        round + 1,
        target.name,
        r.rps,
        r.p50_us,
        r.p99_us,
        r.cpu_per_100k.map_or("-".into(), |(u, s)| format!("{:.2}s ({u:.2} + {s:.2})", u + s)),
        r.reuse.map_or("-".into(), |x| format!("{:.3}%", x * 100.0))
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Medians of one target's rounds.
struct Summary {
    rps: f64,
    user: f64,
    sys: f64,
}

fn summarize(rounds: &[Round]) -> Summary {
    Summary {
        rps: median(rounds.iter().map(|r| r.rps).collect()),
        user: median(rounds.iter().filter_map(|r| r.cpu_per_100k.map(|c| c.0)).collect()),
        sys: median(rounds.iter().filter_map(|r| r.cpu_per_100k.map(|c| c.1)).collect()),
    }
}

fn cpu_text(s: &Summary) -> String {
    if s.user.is_finite() {
        format!("{:.2} ({:.2} + {:.2})", s.user + s.sys, s.user, s.sys)
    } else {
        "-".into()
    }
}

fn ratio(ours: f64, theirs: f64) -> String {
    if ours.is_finite() && theirs.is_finite() && theirs > 0.0 {
        format!("{:.2}×", ours / theirs)
    } else {
        "-".into()
    }
}

fn unpinned_table(targets: &[Target], results: &[Vec<Round>]) -> String {
    let summaries: Vec<Summary> = results.iter().map(|r| summarize(r)).collect();
    let ours = targets.iter().position(|t| t.name == "lb-proxy").map(|i| &summaries[i]);
    // Added latency is taken within each round (target minus direct), then the median.
    let added = |i: usize, f: &dyn Fn(&Round) -> f64| {
        median(results[i].iter().zip(&results[0]).map(|(r, direct)| f(r) - f(direct)).collect())
    };
    let direct_p50 = median(results[0].iter().map(|r| r.p50_us).collect());
    let direct_p99 = median(results[0].iter().map(|r| r.p99_us).collect());
    let mut table = format!(
        "Unpinned: wrk -t1; {ROUNDS} rounds rotating between targets; medians. req/s at 50 connections ({THROUGHPUT_SECS} s); \
         added latency at 1 connection ({LATENCY_SECS} s), target minus direct within each round \
         (direct: p50 {direct_p50:.0} us, p99 {direct_p99:.0} us).\n\n\
         | target | req/s (c50) | lb-proxy ÷ target | added p50 | added p99 | CPU s / 100k req (user + sys) | lb-proxy CPU ÷ target (total / user) | peak RSS | backend conn reuse |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for (i, t) in targets.iter().enumerate() {
        let s = &summaries[i];
        let shown = |v: f64| if t.is_proxy() { format!("{v:+.0} us") } else { "-".to_string() };
        let cpu_ratio = match ours {
            Some(o) if t.is_proxy() => {
                format!("{} / {}", ratio(o.user + o.sys, s.user + s.sys), ratio(o.user, s.user))
            }
            _ => "-".into(),
        };
        let reuse = median(results[i].iter().filter_map(|r| r.reuse).collect());
        let rss = load::status_kib(&t.pids(), "VmHWM:")
            .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        table.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
            t.name,
            s.rps,
            ours.map_or("-".into(), |o| ratio(o.rps, s.rps)),
            shown(added(i, &|r| r.p50_us)),
            shown(added(i, &|r| r.p99_us)),
            cpu_text(s),
            cpu_ratio,
            if t.is_proxy() { rss } else { "-".into() },
            if reuse.is_finite() { format!("{:.3} %", reuse * 100.0) } else { "-".into() },
        ));
    }
    let one = targets.iter().position(|t| t.name == "lb-proxy");
    let two = targets.iter().position(|t| t.name == "lb-proxy 2w");
    if let (Some(one), Some(two)) = (one, two) {
        table.push_str(&format!(
            "\nlb-proxy with 2 worker threads ÷ 1: {} in req/s (unpinned; wrk and the backend use the same 2 cores).\n",
            ratio(summaries[two].rps, summaries[one].rps)
        ));
    }
    table
}

fn pinned_table(targets: &[&Target], results: &[Vec<Round>]) -> String {
    let summaries: Vec<Summary> = results.iter().map(|r| summarize(r)).collect();
    let ours = targets.iter().position(|t| t.name == "lb-proxy").map(|i| &summaries[i]);
    let mut table = String::from(
        "\nPinned: wrk and the backend on CPU 0, each proxy alone on CPU 1; req/s at 50 connections per proxy core.\n\n\
         | proxy | req/s per proxy core | lb-proxy ÷ target | CPU s / 100k req (user + sys) | lb-proxy CPU ÷ target (total / user) |\n\
         |---|---|---|---|---|\n",
    );
    for (t, s) in targets.iter().zip(&summaries) {
        let (rps_ratio, cpu_ratio) = match ours {
            Some(o) => (
                ratio(o.rps, s.rps),
                format!("{} / {}", ratio(o.user + o.sys, s.user + s.sys), ratio(o.user, s.user)),
            ),
            None => ("-".into(), "-".into()),
        };
        table.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} |\n",
            t.name,
            s.rps,
            rps_ratio,
            cpu_text(s),
            cpu_ratio
        ));
    }
    table
}

/// nginx and lb-proxy terminating TLS, unpinned, rotating for [`ROUNDS`] rounds.
fn tls_table(wrk: &Path, work: &Path, backend: &BackendServer) -> String {
    // rcgen's default key is ECDSA P-256.
    let pki = lb_tls::testing::TestPki::new(&["127.0.0.1", "localhost"]);
    let (cert, key) = (&pki.server_cert, &pki.server_key);
    let mut targets = Vec::new();
    for start in [targets::start_nginx_tls, targets::start_lb_proxy_tls] {
        match start(work, backend.address, cert, key) {
            Ok(t) => targets.push(t),
            Err(why) => eprintln!("skipped a TLS target: {why}"),
        }
    }
    for t in &targets {
        targets::wait_until_serving(t.address);
    }
    let mut kept: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
    let mut fresh: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (i, target) in targets.iter().enumerate() {
            let r = load::measure_tls(wrk, target, backend, false);
            print_round("tls keep-alive", round, target, &r);
            kept[i].push(r);
            let r = load::measure_tls(wrk, target, backend, true);
            print_round("tls handshakes", round, target, &r);
            fresh[i].push(r);
        }
    }
    let ours = targets.iter().position(|t| t.name == "lb-proxy TLS");
    let (kept, fresh): (Vec<Summary>, Vec<Summary>) =
        (kept.iter().map(|r| summarize(r)).collect(), fresh.iter().map(|r| summarize(r)).collect());
    let mut table = String::from(
        "\nTLS (unpinned; one ECDSA P-256 certificate for both; TLS 1.3 as wrk negotiates it): req/s on 50 \
         kept-alive connections, and full handshakes per second (one request per connection).\n\n\
         | proxy | req/s kept-alive | lb-proxy ÷ target | CPU s / 100k | handshakes/s | lb-proxy ÷ target | CPU s / 100k handshakes |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (i, t) in targets.iter().enumerate() {
        let ratio_of = |all: &[Summary]| ours.map_or("-".into(), |o| ratio(all[o].rps, all[i].rps));
        table.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.0} | {} | {} |\n",
            t.name,
            kept[i].rps,
            ratio_of(&kept),
            cpu_text(&kept[i]),
            fresh[i].rps,
            ratio_of(&fresh),
            cpu_text(&fresh[i]),
        ));
    }
    drop(pki);
    for t in targets {
        t.stop();
    }
    table
}

/// nginx and lb-proxy plain to wrk and over TLS to the backend (TLS to
/// endpoints, connections kept alive and reused), rotating for [`ROUNDS`] rounds.
fn tls_backend_table(wrk: &Path, work: &Path) -> String {
    let pki = lb_tls::testing::TestPki::new(&["127.0.0.1", "localhost"]);
    let backend = targets::start_tls_backend(pki.server_config(false, &[b"http/1.1"]));
    let mut targets = Vec::new();
    for start in [targets::start_nginx_to_tls, targets::start_lb_proxy_to_tls] {
        match start(work, backend.address, &pki.ca) {
            Ok(t) => targets.push(t),
            Err(why) => eprintln!("skipped a TLS-to-backend target: {why}"),
        }
    }
    for t in &targets {
        targets::wait_until_serving(t.address);
    }
    let refs: Vec<&Target> = targets.iter().collect();
    let results: Vec<Summary> =
        rounds_of(wrk, &refs, &backend, "to TLS backend").iter().map(|r| summarize(r)).collect();
    let ours = targets.iter().position(|t| t.name == "lb-proxy to TLS");
    let mut table = String::from(
        "\nTLS to the backend (unpinned; plain from wrk, TLS 1.3 to the backend, verified, connections kept \
         alive): req/s at 50 connections.\n\n| proxy | req/s | lb-proxy ÷ target | CPU s / 100k req |\n|---|---|---|---|\n",
    );
    for (i, t) in targets.iter().enumerate() {
        let r = ours.map_or("-".into(), |o| ratio(results[o].rps, results[i].rps));
        table.push_str(&format!(
            "| {} | {:.0} | {} | {} |\n",
            t.name,
            results[i].rps,
            r,
            cpu_text(&results[i])
        ));
    }
    drop(pki);
    for t in targets {
        t.stop();
    }
    table
}

fn memory_table(targets: &[Target]) -> String {
    let measured: Vec<(&str, Option<f64>)> = targets
        .iter()
        .filter(|t| t.is_proxy() && t.name != "tcp relay" && t.name != "lb-proxy 2w")
        .map(|t| (t.name, load::memory_per_half_sent_connection(t)))
        .collect();
    let ours = measured.iter().find(|(n, _)| *n == "lb-proxy").and_then(|(_, k)| *k);
    let mut table = format!(
        "\nMemory: RSS growth per client connection that sent half a request head ({} connections).\n\n\
         | proxy | KiB per half-sent connection | lb-proxy ÷ target |\n|---|---|---|\n",
        load::HALF_SENT
    );
    for (name, kib) in measured {
        let shown = kib.map_or("-".into(), |k| format!("{k:.1}"));
        let r = match (ours, kib) {
            (Some(o), Some(k)) => ratio(o, k),
            _ => "-".into(),
        };
        table.push_str(&format!("| {name} | {shown} | {r} |\n"));
    }
    table
}
