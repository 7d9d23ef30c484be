//! Live endpoint changes from a watched file, the admin metrics, and the demo.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Backend, full, get};
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
    for _ in 0..250 {
        if old.requests.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

#[test]
fn the_run_command_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = std::env::temp_dir().join(format!("lb-proxy-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lb.toml");
    std::fs::write(
        &config,
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n\
         [upstreams.web]\ndiscovery.static.endpoints = [\"127.0.0.1:9\"]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let running = lines.by_ref().take(20).map_while(Result::ok).any(|l| l.contains("lb-proxy running"));
    assert!(running, "the proxy should log that it runs");
    stops_cleanly_on(&mut child, "-TERM");
    let tail: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(tail.iter().any(|l| l.contains("stopping")), "{tail:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
