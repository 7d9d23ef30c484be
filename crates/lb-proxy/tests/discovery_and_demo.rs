//! Live endpoint changes from a watched file, the admin metrics, the demo,
//! and the `run` command's signals (reload on SIGHUP, stop on SIGTERM).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Backend, eventually, full, get};
use http::{Response, StatusCode};

#[tokio::test]
async fn a_file_change_moves_traffic_and_in_flight_requests_finish() {
    let dir = std::env::temp_dir().join(format!("lb-proxy-discovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.toml");
    let (release, released) = tokio::sync::watch::channel(false);
    let old = Backend::start(move |req: http::Request<hyper::body::Incoming>| {
        let mut released = released.clone();
        async move {
            if req.uri().path() == "/slow" {
                let _ = released.wait_for(|r| *r).await;
            }
            Response::new(full("old"))
        }
    })
    .await;
    let new = Backend::named("new").await;
    std::fs::write(&file, format!("[[endpoints]]\naddress = \"{}\"\n", old.addr)).unwrap();
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n\
         [upstreams.web.discovery.file]\npath = \"{}\"\n",
        file.display()
    );
    let proxy = common::proxy(&text).await;
    let addr = proxy.listen_addresses()[0];
    let mut first = (StatusCode::SERVICE_UNAVAILABLE, String::new());
    for _ in 0..250 {
        first = get(addr, "/", &[]).await;
        if first.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(first, (StatusCode::OK, "old".to_string()), "the file's first list is served");

    let in_flight = tokio::spawn(async move { get(addr, "/slow", &[]).await });
    assert!(eventually(|| old.requests.load(Ordering::SeqCst) >= 2).await, "the slow request is in flight");
    std::fs::write(&file, format!("[[endpoints]]\naddress = \"{}\"\n", new.addr)).unwrap();
    let mut moved = false;
    for _ in 0..250 {
        if get(addr, "/", &[]).await.1 == "new" {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(moved, "traffic follows the file");
    release.send(true).unwrap();
    assert_eq!(
        in_flight.await.unwrap(),
        (StatusCode::OK, "old".to_string()),
        "the removed endpoint finished its request"
    );

    let metrics = common::metrics(proxy.admin_address().unwrap()).await;
    for name in [
        "requests_total{upstream=\"web\"",
        "request_duration_seconds",
        "requests_in_flight{upstream=\"web\"",
        "endpoint_healthy{upstream=\"web\"",
        "breaker_state{upstream=\"web\"",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(
        metrics
            .contains(&format!("requests_total{{upstream=\"web\",backend=\"{}\",status=\"200\"}}", new.addr)),
        "{metrics}"
    );
    proxy.shutdown().await;
    old.kill().await;
    new.kill().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_demo_serves_by_weight_and_exposes_metrics() {
    let args = lb_proxy::demo::DemoArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        backend_ports: vec![0, 0, 0],
    };
    let demo = lb_proxy::demo::start(&args).await.unwrap();
    let addr = demo.proxy.listen_addresses()[0];
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let (status, body) = get(addr, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        *counts.entry(body).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        [
            ("hello from backend-1\n".to_string(), 20),
            ("hello from backend-2\n".to_string(), 10),
            ("hello from backend-3\n".to_string(), 10)
        ]
        .into()
    );
    let text = demo.instructions();
    assert!(text.contains(&format!("curl -s http://{addr}/")), "{text}");
    assert!(common::metrics(demo.proxy.admin_address().unwrap()).await.contains("requests_total"));
    demo.shutdown().await;
}

/// Sends `signal` to `child` and waits (bounded) for a clean exit.
fn stops_cleanly_on(child: &mut std::process::Child, signal: &str) {
    let killed = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..250 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("did not stop on {signal}")
    });
    assert!(status.success(), "clean exit on {signal}: {status}");
}

fn the_demo_binary_prints_what_to_try_and_stops_on(signal: &str) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--backend-ports", "0", "0", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("lb-proxy demo: proxy on http://127.0.0.1:"), "{first}");
    let rest: Vec<String> = lines.by_ref().take(6).map(Result::unwrap).collect();
    assert!(rest.iter().any(|l| l.contains("/metrics")), "{rest:?}");
    stops_cleanly_on(&mut child, signal);
    let tail: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(tail.iter().any(|l| l == "stopping"), "{tail:?}");
}

#[test]
fn the_demo_binary_prints_what_to_try_and_stops_on_ctrl_c() {
    the_demo_binary_prints_what_to_try_and_stops_on("-INT");
}

#[test]
fn the_demo_binary_stops_on_sigterm() {
    the_demo_binary_prints_what_to_try_and_stops_on("-TERM");
}

/// The next line of the proxy's log that contains `needle` (bounded wait).
async fn log_line_with(logs: &mut tokio::sync::mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = logs.recv().await {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    });
    found.await.ok().flatten().unwrap_or_else(|| panic!("no log line with `{needle}`"))
}

#[tokio::test]
async fn the_run_command_reloads_on_sighup_keeps_running_on_a_bad_file_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let dir = std::env::temp_dir().join(format!("lb-proxy-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lb.toml");
    let write_config = |backend: std::net::SocketAddr| {
        let text = format!(
            "[admin]\nenabled = false\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n\
             [upstreams.web]\ndiscovery.static.endpoints = [\"{backend}\"]\n"
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config(a.addr);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, mut logs) = tokio::sync::mpsc::unbounded_channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let running = log_line_with(&mut logs, "lb-proxy running").await;
    let listen = running.split_once("listen=[").and_then(|(_, rest)| rest.split_once(']')).map(|(a, _)| a);
    let address: std::net::SocketAddr =
        listen.and_then(|a| a.parse().ok()).expect("the listen address is logged");
    let hangup = |child: &std::process::Child| {
        assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    };
    assert_eq!(get(address, "/", &[]).await.1, "a");

    std::fs::write(&config, "[[routes]\nbroken").unwrap();
    hangup(&child);
    let refused = log_line_with(&mut logs, "reload refused").await;
    assert!(refused.contains("lb.toml:1:"), "the error names the file and position: {refused}");
    assert_eq!(get(address, "/", &[]).await.1, "a", "the running configuration stays");

    write_config(b.addr);
    hangup(&child);
    log_line_with(&mut logs, "configuration reloaded").await;
    assert_eq!(get(address, "/", &[]).await.1, "b");

    stops_cleanly_on(&mut child, "-TERM");
    log_line_with(&mut logs, "stopping").await;
    let _ = std::fs::remove_dir_all(&dir);
    a.kill().await;
    b.kill().await;
}

/// A discovery source that breaks keeps serving its last endpoints, and
/// `/upstreams` says so: the source, its last error (for a file, with
/// line and column) and how many rounds failed since it last worked.
#[tokio::test]
async fn upstreams_shows_a_failing_discovery_source_and_its_recovery() {
    let dir = std::env::temp_dir().join(format!("lb-proxy-discovery-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.toml");
    let backend = Backend::named("a").await;
    let good = format!("[[endpoints]]\naddress = \"{}\"\n", backend.addr);
    std::fs::write(&file, &good).unwrap();
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n\
         [upstreams.web.discovery.file]\npath = \"{}\"\n",
        file.display()
    );
    let proxy = common::proxy(&text).await;
    let admin = proxy.admin_address().unwrap();
    let upstreams = || async move {
        serde_json::from_str::<serde_json::Value>(&get(admin, "/upstreams", &[]).await.1).unwrap()
    };
    let discovery = |page: &serde_json::Value| page["web"]["discovery"].clone();
    let mut fine = serde_json::Value::Null;
    for _ in 0..250 {
        fine = discovery(&upstreams().await);
        if fine["last_success_unix"].is_f64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fine["source"].as_str().unwrap().contains("endpoints.toml"), "{fine}");
    assert!(fine["last_success_unix"].as_f64().is_some(), "{fine}");
    assert!(fine["last_error"].is_null(), "{fine}");

    std::fs::write(&file, "[[endpoints]]\naddress = 17\n").unwrap();
    assert!(
        common::admin_page_shows(admin, "/upstreams", "\"errors_in_a_row\":1").await,
        "the failed round shows"
    );
    let failing = discovery(&upstreams().await);
    let error = failing["last_error"].as_str().unwrap();
    assert!(error.contains("endpoints.toml:2:"), "names file:line:column: {error}");
    assert!(failing["last_error_unix"].as_f64().is_some(), "{failing}");
    assert_eq!(
        get(proxy.listen_addresses()[0], "/", &[]).await,
        (StatusCode::OK, "a".to_string()),
        "still served"
    );

    std::fs::write(&file, &good).unwrap();
    assert!(common::admin_page_shows(admin, "/upstreams", "\"errors_in_a_row\":0").await, "recovered");
    let recovered = discovery(&upstreams().await);
    assert_eq!(recovered["last_error"].as_str(), Some(error), "the last error stays visible");
    proxy.shutdown().await;
    backend.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
