//! User-space instructions per proxied request, counted by callgrind.
//!
//! CPU seconds on this shared 2-core box move by ±10 % from run to run;
//! an instruction count does not. Each proxy runs once more under
//! valgrind's callgrind, is warmed, has its counters zeroed, serves a fixed
//! wrk load, and has its counters dumped: the total over the requests
//! served is its instructions per request. System calls are not counted
//! (the kernel's share is in the CPU tables), nor is the time an
//! instruction takes: it is a deterministic figure for the user-space work
//! alone, the "user CPU" goal.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use crate::targets::{self, BackendServer, Launch, Target};

/// Seconds of load before the counters are zeroed, and while they count.
const WARM_SECS: u32 = 3;
const COUNT_SECS: u32 = 10;

/// Instructions per request for nginx, HAProxy and lb-proxy, and the ratios.
pub(crate) fn instructions_table(wrk: &Path, work: &Path, backend: &BackendServer) -> String {
    let Some(control) = targets::which("callgrind_control") else {
        return "\nInstructions per request skipped: valgrind is not installed.\n".to_string();
    };
    type Start<'a> = &'a dyn Fn(Launch<'_>) -> Result<Target, String>;
    let starts: [(&str, Start<'_>); 3] = [
        ("nginx", &|launch| targets::start_nginx(work, backend.address, launch)),
        ("HAProxy", &|launch| targets::start_haproxy(work, backend.address, launch)),
        ("lb-proxy", &|launch| targets::start_lb_proxy(work, backend.address, 1, launch)),
    ];
    let mut counted = Vec::new();
    for (name, start) in starts {
        let out = work.join(format!("callgrind-{}.out", name.to_lowercase()));
        match start(Launch::Callgrind(&out)).and_then(|target| count(wrk, &control, target, backend, &out)) {
            Ok(per_request) => {
                println!("[callgrind] {name}: {per_request:.0} instructions per request");
                counted.push((name, per_request));
            }
            Err(why) => eprintln!("[callgrind] skipped {name}: {why}"),
        }
    }
    let ours = counted.iter().find(|(name, _)| *name == "lb-proxy").map(|(_, n)| *n);
    let mut table = format!(
        "\n### User-space instructions per request (callgrind, wrk -t1 -c10, {COUNT_SECS} s after {WARM_SECS} s of warm-up)\n\n\
         | target | instructions per request | lb-proxy ÷ target |\n|---|---:|---:|\n"
    );
    for (name, per_request) in &counted {
        let ratio = ours.map_or("-".to_string(), |ours| format!("{:.2}×", ours / per_request));
        table.push_str(&format!("| {name} | {per_request:.0} | {ratio} |\n"));
    }
    table
}

/// Warms `target`, counts a fixed load and stops it; instructions per request.
fn count(
    wrk: &Path,
    control: &Path,
    target: Target,
    backend: &BackendServer,
    out: &Path,
) -> Result<f64, String> {
    let pid = target.child.as_ref().map(|child| child.id().to_string()).ok_or("no process")?;
    let result = (|| {
        // Valgrind starts a program about fifty times slower than it runs.
        targets::wait_until_serving_within(target.address, std::time::Duration::from_secs(60))?;
        let url = format!("http://{}/", target.address);
        wrk_for(wrk, WARM_SECS, &url)?;
        callgrind_control(control, "-z", &pid)?;
        let before = backend.requests.load(Ordering::Relaxed);
        wrk_for(wrk, COUNT_SECS, &url)?;
        let served = backend.requests.load(Ordering::Relaxed) - before;
        callgrind_control(control, "-d", &pid)?;
        let dump = out.with_file_name(format!("{}.1", out.file_name().unwrap_or_default().to_string_lossy()));
        let text = std::fs::read_to_string(&dump).map_err(|e| format!("{}: {e}", dump.display()))?;
        let total: u64 = text
            .lines()
            .find_map(|line| line.strip_prefix("summary:").or_else(|| line.strip_prefix("totals:")))
            .and_then(|n| n.trim().parse().ok())
            .ok_or("no instruction total in the dump")?;
        if served == 0 {
            return Err("no request was served".to_string());
        }
        Ok(total as f64 / served as f64)
    })();
    target.stop();
    result
}

fn wrk_for(wrk: &Path, secs: u32, url: &str) -> Result<(), String> {
    let status = Command::new(wrk)
        .args(["-t1", "-c10", &format!("-d{secs}s"), url])
        .output()
        .map_err(|e| e.to_string())?
        .status;
    status.success().then_some(()).ok_or_else(|| format!("wrk ended with {status}"))
}

fn callgrind_control(control: &Path, action: &str, pid: &str) -> Result<(), String> {
    let output = Command::new(control).args([action, pid]).output().map_err(|e| e.to_string())?;
    output.status.success().then_some(()).ok_or_else(|| format!("callgrind_control {action} failed"))
}
