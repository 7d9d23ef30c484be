//! Every kind of bad configuration names file:line:column and the reason;
//! the annotated example is accepted, by the library and by `lb-proxy check`.

use std::path::Path;
use std::process::Command;

use lb_proxy::{Config, ConfigError};

const GOOD_UPSTREAM: &str = "[upstreams.web]\ndiscovery.static.endpoints = [\"127.0.0.1:9000\"]\n";

fn error(text: &str) -> String {
    Config::parse(text, "lb.toml").expect_err("the config is refused").to_string()
}

#[test]
fn the_annotated_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lb.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.upstreams.len(), 4);
    assert_eq!(config.routes.len(), 4);
    let retry = &config.upstreams["web"].get_ref().retry;
    assert_eq!(retry.backoff, lb_proxy::config::BackoffKind::FullJitter);
    assert_eq!(*retry.backoff_max.get_ref(), std::time::Duration::from_millis(250));
}

#[test]
fn check_accepts_the_example_and_rejects_a_bad_file_precisely() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["check", "--config"])
        .arg(manifest.join("examples/lb.toml"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration is valid"));

    let dir = std::env::temp_dir().join(format!("lb-proxy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, format!("{GOOD_UPSTREAM}\n[[routes]]\nupstream = \"api\"\n")).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_lb-proxy")).args(["check", "--config"]).arg(&bad).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:5:12: route refers to unknown upstream `api`; defined upstreams: [web]"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let e = Config::load("/nonexistent/lb.toml").unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().starts_with("/nonexistent/lb.toml: cannot read the file"), "{e}");
}

#[test]
fn syntax_errors_point_at_the_spot() {
    let e = error("[global]\nworker_threads = = 2\n");
    assert!(e.starts_with("lb.toml:2:"), "{e}");
}

#[test]
fn unknown_keys_are_rejected_where_they_are() {
    let e = error(&format!("{GOOD_UPSTREAM}algoritm = \"p2c\"\n"));
    assert!(e.starts_with("lb.toml:3:1: unknown field `algoritm`"), "{e}");
    let e = error("[global]\nworkers = 2\n");
    assert!(e.starts_with("lb.toml:2:1: unknown field `workers`"), "{e}");
    let e = error(&format!("{GOOD_UPSTREAM}[upstreams.web.retry]\nattempt = 3\n"));
    assert!(e.starts_with("lb.toml:4:1: unknown field `attempt`"), "{e}");
}

#[test]
fn bad_values_say_what_is_expected() {
    let e = error("[[listeners]]\nlisten = \"localhost\"\n");
    assert!(e.starts_with("lb.toml:2:10: invalid socket address"), "{e}");
    let e = error(&format!("{GOOD_UPSTREAM}[upstreams.web.timeouts]\nconnect = \"soon\"\n"));
    assert!(e.starts_with("lb.toml:4:11: `soon` is not a duration"), "{e}");
    let e = error("[upstreams.web]\ndiscovery.static.endpoints = [\"nohost\"]\n");
    assert!(e.starts_with("lb.toml:2:31: `nohost` has no port"), "{e}");
    let e = error(&format!("{GOOD_UPSTREAM}host_header = \"sometimes\"\n"));
    assert!(e.starts_with("lb.toml:3:15: unknown variant `sometimes`"), "{e}");
    let e = error("[upstreams.web]\ndiscovery.carrier_pigeon = {}\n");
    assert!(e.contains("unknown variant `carrier_pigeon`"), "{e}");
}

#[test]
fn semantic_errors_point_at_the_offending_value() {
    let e = error(&format!("{GOOD_UPSTREAM}algorithm = \"fastest\"\n"));
    assert!(e.starts_with("lb.toml:3:13: unknown balancing algorithm `fastest`"), "{e}");
    let e = error(&format!("{GOOD_UPSTREAM}algorithm = \"maglev\"\n"));
    assert!(e.starts_with("lb.toml:3:13: algorithm `maglev` hashes a key: set hash_key"), "{e}");
    let e = error(&format!(
        "{GOOD_UPSTREAM}algorithm = \"maglev\"\nhash_key = \"path\"\nalgorithm_params = {{ table_size = 100 }}\n"
    ));
    assert!(e.starts_with("lb.toml:3:13: Maglev table size 100 is not a prime"), "{e}");
    let e = error("[global]\nworker_threads = 0\n");
    assert_eq!(e, "lb.toml:2:18: worker_threads must be at least 1");
    let e = error(&format!("{GOOD_UPSTREAM}[upstreams.web.retry]\nattempts = 9\n"));
    assert_eq!(e, "lb.toml:4:12: retry.attempts must be from 1 (no retry) to 5");
    let e = error(&format!("{GOOD_UPSTREAM}[upstreams.web.health_check]\nfall = 0\n"));
    assert_eq!(e, "lb.toml:4:8: health_check.fall must be at least 1");
    let e = error(&format!("{GOOD_UPSTREAM}[upstreams.web.outlier_detection]\nmax_ejection_percent = 101\n"));
    assert_eq!(e, "lb.toml:4:24: max_ejection_percent is at most 100");
    let e = error(&format!("{GOOD_UPSTREAM}[upstreams.web.circuit_breaker]\nhalf_open_requests = 0\n"));
    assert_eq!(e, "lb.toml:4:22: half_open_requests must be at least 1");
    let e = error(&format!("{GOOD_UPSTREAM}[upstreams.web.retry]\nbudget_window = \"2m\"\n"));
    assert!(e.starts_with("lb.toml:1:1: retry budget: retry budget ttl must be between 1 s and 60 s"), "{e}");
    let e = error("[upstreams.web]\ndiscovery.static.endpoints = []\n");
    assert_eq!(e, "lb.toml:2:1: a static upstream needs at least one endpoint");
    let e = error(&format!("{GOOD_UPSTREAM}[[routes]]\npath_prefix = \"api\"\nupstream = \"web\"\n"));
    assert_eq!(e, "lb.toml:4:15: path_prefix must start with `/`");
    let e = error("[upstreams.web.discovery.file]\npath = \"endpoints.yaml\"\n");
    assert!(e.contains("must end in .toml or .json"), "{e}");
}

#[test]
fn address_clashes_are_caught() {
    let e = error("[admin]\nlisten = \"127.0.0.1:9000\"\n[[listeners]]\nlisten = \"127.0.0.1:9000\"\n");
    assert_eq!(e, "lb.toml:4:10: 127.0.0.1:9000 is already used by another listener or the admin listener");
    let e = error("[[listeners]]\nlisten = \"0.0.0.0:80\"\n[[listeners]]\nlisten = \"0.0.0.0:80\"\n");
    assert!(e.starts_with("lb.toml:4:10:"), "{e}");
}

#[test]
fn backoff_errors_point_at_the_value() {
    let retry = format!("{GOOD_UPSTREAM}[upstreams.web.retry]\n");
    let e = error(&format!("{retry}backoff = \"linear\"\n"));
    assert!(e.starts_with("lb.toml:4:11: unknown variant `linear`"), "{e}");
    let e = error(&format!("{retry}backoff_base = \"soon\"\n"));
    assert!(e.starts_with("lb.toml:4:16: `soon` is not a duration"), "{e}");
    let e = error(&format!("{retry}backoff_base = \"1s\"\nbackoff_max = \"100ms\"\n"));
    assert_eq!(e, "lb.toml:5:15: retry.backoff_max must be at least retry.backoff_base");
    let e = error(&format!("{retry}backoff_max = \"2h\"\n"));
    assert_eq!(e, "lb.toml:4:15: retry.backoff_max is at most 1h");
    let e = error(&format!("{retry}backoff_base = \"0s\"\n"));
    assert!(e.starts_with("lb.toml:4:16: retry.backoff_base must be longer than zero"), "{e}");
    let ok = format!("{retry}backoff = \"none\"\nbackoff_base = \"0s\"\n{SERVES}");
    assert!(Config::parse(&ok, "lb.toml").is_ok(), "no wait needs no base");
}

#[test]
fn a_breaker_that_can_never_open_is_refused() {
    let e = error(&format!("{GOOD_UPSTREAM}[upstreams.web.circuit_breaker]\nconsecutive_failures = 0\n"));
    assert!(e.starts_with("lb.toml:") && e.contains("circuit_breaker never opens"), "{e}");
    let e = error(&format!("{GOOD_UPSTREAM}[upstreams.web.circuit_breaker]\nfailure_ratio = 1.5\n"));
    assert!(e.ends_with("failure_ratio must be above 0 and at most 1"), "{e}");
    let fine = format!(
        "{GOOD_UPSTREAM}[upstreams.web.circuit_breaker]\nconsecutive_failures = 0\nfailure_ratio = 0.5\n{SERVES}"
    );
    assert!(lb_proxy::Config::parse(&fine, "lb.toml").is_ok(), "0 turns the consecutive rule off");
}

/// What the shape of a file must be for it to serve anything.
const SERVES: &str = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n";

#[test]
fn a_file_that_serves_nothing_or_routes_twice_is_refused() {
    let e = error(&format!("{GOOD_UPSTREAM}[[routes]]\nupstream = \"web\"\n"));
    assert!(
        e.ends_with(
            "no [[listeners]]: the proxy would accept no connection; add one with listen = \"0.0.0.0:8080\""
        ),
        "{e}"
    );
    let e = error(&format!("[[listeners]]\nlisten = \"127.0.0.1:0\"\n{GOOD_UPSTREAM}"));
    assert!(e.contains("no [[routes]]: every request would get 404"), "{e}");
    let twice = format!("{GOOD_UPSTREAM}{SERVES}[[routes]]\nupstream = \"web\"\npath_prefix = \"/\"\n");
    let e = error(&twice);
    assert!(e.starts_with("lb.toml:7:1: duplicate route: host (any) and path_prefix `/`"), "{e}");
}

#[test]
fn ejection_times_and_weights_are_checked() {
    let e = error(&format!(
        "{GOOD_UPSTREAM}[upstreams.web.outlier_detection]\nbase_ejection_time = \"10m\"\nmax_ejection_time = \"5m\"\n{SERVES}"
    ));
    assert!(e.ends_with("outlier_detection.base_ejection_time is longer than max_ejection_time"), "{e}");
    let e = error(&format!(
        "[upstreams.web]\ndiscovery.static.endpoints = [{{ address = \"127.0.0.1:9\", weight = 0 }}]\n{SERVES}"
    ));
    assert!(e.starts_with("lb.toml:2:31: weight must be at least 1"), "{e}");
}

#[test]
fn serde_jargon_is_translated() {
    let e = error(
        "[upstreams.web]\ndiscovery.static.endpoints = [\"127.0.0.1:9\"]\ndiscovery.dns.name = \"x\"\n",
    );
    assert_eq!(e, "lb.toml:2:1: discovery takes exactly one source: static, file, dns or consul");
    let e = error("[upstreams.web]\ndiscovery.static.endpoints = [\"127.0.0.1:9\"]\nhash_key = \"header\"\n");
    assert_eq!(
        e,
        "lb.toml:3:12: hash_key `header`, `cookie` and `query` need a name: write hash_key = { header = \"x-user-id\" }"
    );
    let e = error("[upstreams.web]\ndiscovery = \"static\"\n");
    assert!(e.starts_with("lb.toml:2:13: discovery needs its source's settings"), "{e}");
    let e = error(
        "[upstreams.web]\ndiscovery.static.endpoints = [\"127.0.0.1:9\"]\nhash_key = { header = \"a\", cookie = \"b\" }\n",
    );
    assert!(e.starts_with("lb.toml:3:12: hash_key takes exactly one source"), "{e}");
}

#[test]
fn an_admin_listener_other_hosts_can_reach_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: String| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .args(["check", "--config"])
            .arg(&file)
            .env_remove("LB_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let out =
        check("open-admin.toml", format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{GOOD_UPSTREAM}{SERVES}"));
    assert!(!out.status.success(), "no token: refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("open-admin.toml:2:10: the admin listener on 0.0.0.0:9901 is reachable from other hosts: set admin.token"),
        "{stderr}"
    );
    let out = check(
        "token-admin.toml",
        format!("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"t\"\n{GOOD_UPSTREAM}{SERVES}"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("note: the admin listener 0.0.0.0:9901 is reachable")
    );
    let out = check("loopback-admin.toml", format!("{GOOD_UPSTREAM}{SERVES}"));
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_grpc_health_check_needs_an_h2c_upstream() {
    let text = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n[upstreams.web]\n\
                discovery.static.endpoints = [\"127.0.0.1:9\"]\n[upstreams.web.health_check]\ngrpc_service = \"\"\n";
    let error = lb_proxy::Config::parse(text, "web.toml").unwrap_err().to_string();
    assert!(
        error
            .starts_with("web.toml:8:16: health_check.grpc_service speaks gRPC: it needs protocol = \"h2c\" (or \"h2\" over tls)"),
        "{error}"
    );
}

#[test]
fn http2_limits_outside_what_the_protocol_allows_are_refused_where_written() {
    let base = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n[upstreams.web]\n\
                discovery.static.endpoints = [\"127.0.0.1:9\"]\n[global.http2]\n";
    let cases = [
        ("max_frame_size = 1024", "web.toml:8:18: http2.max_frame_size must be from 16384 to 16777215 bytes"),
        (
            "initial_stream_window = 4294967295",
            "web.toml:8:25: http2.initial_stream_window must be from 65535 to 2147483647 bytes",
        ),
        ("max_concurrent_streams = 0", "web.toml:8:26: http2.max_concurrent_streams must be at least 1"),
    ];
    for (line, expected) in cases {
        let error = lb_proxy::Config::parse(&format!("{base}{line}\n"), "web.toml").unwrap_err().to_string();
        assert!(error.starts_with(expected), "{line}: {error}");
    }
    let fine = lb_proxy::Config::parse(
        &format!("{base}max_frame_size = 65536\nkeepalive_interval = \"0s\"\n"),
        "web.toml",
    );
    assert!(fine.is_ok(), "{fine:?}");
}
