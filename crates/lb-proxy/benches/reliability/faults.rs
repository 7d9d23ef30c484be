//! Backends that die, hang or fail under steady GET load: scenarios 1, 2 and 9.

use std::time::{Duration, Instant};

use crate::backend::Behaviour;
use crate::harness::{Backend, Bench, Outcome, Proxy, Sections, Wrk, ms};

/// Scenario 1: one backend of three SIGKILLed a quarter into the load.
pub(crate) fn backend_killed(bench: &Bench) -> Outcome {
    let mut backends: Vec<Backend> = (0..3).map(|_| Backend::start(&Behaviour::status(200))).collect();
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let sections = Sections {
        upstream: "[upstreams.web.outlier_detection]\npreset = \"guide\"\n".to_string(),
        ..Sections::default()
    };
    let proxy = Proxy::start(&bench.work, "killed", &addresses, &sections);
    let length = bench.scale.pick(Duration::from_secs(8), Duration::from_secs(4));
    let load = Wrk::start(&bench.wrk, proxy.address, 20, length);
    std::thread::sleep(length / 4); // Paces the scenario: the kill lands under load.
    let dead = backends[0].address;
    let killed_at = Instant::now();
    backends[0].kill();
    let mut out_after = None;
    while killed_at.elapsed() < Duration::from_secs(5) {
        if proxy.endpoint_status(dead).is_some_and(|s| s != "healthy") {
            out_after = Some(killed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = load.finish();
    let out = out_after.map_or("never (5 s)".to_string(), |d| format!("{} ms", d.as_millis()));
    Outcome {
        scenario: "1. a backend of 3 SIGKILLed under GET load",
        figure: format!(
            "{} requests, {} failed; the dead endpoint out of rotation after {out}",
            result.requests,
            result.failed()
        ),
        promise: "0 failed client requests".to_string(),
        kept: result.failed() == 0 && result.requests > 0 && out_after.is_some(),
    }
}

/// Scenario 2: one backend of three accepts and never answers. Without
/// outlier detection every third request meets it, so this measures the
/// retry itself: the try times out at `per_try` and goes elsewhere.
pub(crate) fn backend_hangs(bench: &Bench) -> Outcome {
    let backends = [
        Backend::start(&Behaviour::Hang),
        Backend::start(&Behaviour::status(200)),
        Backend::start(&Behaviour::status(200)),
    ];
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let (per_try, backoff_max) = (Duration::from_millis(200), Duration::from_millis(50));
    let sections = Sections {
        upstream: format!(
            "[upstreams.web.timeouts]\nper_try = \"{}ms\"\n[upstreams.web.retry]\n\
             retry_on = [\"connect_error\", \"reset\", \"timeout\"]\nbackoff_max = \"{}ms\"\n\
             budget_percent = 50\n",
            per_try.as_millis(),
            backoff_max.as_millis()
        ),
        ..Sections::default()
    };
    let proxy = Proxy::start(&bench.work, "hang", &addresses, &sections);
    let length = bench.scale.pick(Duration::from_secs(6), Duration::from_secs(3));
    let result = Wrk::start(&bench.wrk, proxy.address, 20, length).finish();
    let timeouts = proxy.metric_sum("request_errors_total", "error_type=\"timeout\"");
    // A third of first tries meet the hung backend: the retry budget must cover them.
    let bound = per_try + backoff_max + Duration::from_millis(50);
    Outcome {
        scenario: "2. a backend of 3 hangs (accepts, never answers)",
        figure: format!(
            "{} requests, {} failed, {timeouts:.0} tries timed out; client p99 {}",
            result.requests,
            result.failed(),
            ms(result.p99)
        ),
        promise: format!(
            "0 failed; p99 ≤ per_try {} + backoff_max {} + 50 ms = {}",
            ms(per_try),
            ms(backoff_max),
            ms(bound)
        ),
        kept: result.failed() == 0 && result.requests > 0 && timeouts > 0.0 && result.p99 <= bound,
    }
}

/// Scenario 9: every backend answers 503 and 503 is retried; the budget holds attempts down.
pub(crate) fn retry_storm(bench: &Bench) -> Outcome {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(&Behaviour::status(503))).collect();
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let sections = Sections {
        upstream: "[upstreams.web.retry]\nretry_on = [\"gateway_error\"]\nattempts = 5\n\
                   budget_percent = 20\nbudget_min_per_second = 10\n"
            .to_string(),
        ..Sections::default()
    };
    let proxy = Proxy::start(&bench.work, "storm", &addresses, &sections);
    let connections = 20;
    let length = bench.scale.pick(Duration::from_secs(5), Duration::from_secs(3));
    let result = Wrk::start(&bench.wrk, proxy.address, connections, length).finish();
    let attempts = proxy.backend_requests();
    // Requests that reached the proxy: wrk's count, plus at most one per connection cut when wrk stopped.
    let requests = result.requests + u64::from(connections);
    // Finagle's budget: retries ≤ 20 % of requests + a reserve of 10 per second over the 10 s window.
    let allowed = requests as f64 * 1.2 + 10.0 * 10.0;
    let per_request = attempts as f64 / result.requests.max(1) as f64;
    Outcome {
        scenario: "9. retry storm, every backend 503",
        figure: format!("{} requests, {attempts} attempts: {per_request:.3} per request", result.requests),
        promise: format!(
            "attempts ≤ 1.2 × requests + reserve (100) = {allowed:.0}, i.e. {:.3} per request",
            allowed / result.requests.max(1) as f64
        ),
        kept: result.requests > 0 && attempts as f64 <= allowed,
    }
}
