//! Panic mode (Envoy's panic threshold): when fewer than `panic_threshold` of
//! an upstream's endpoints are healthy, requests are balanced over all of
//! them rather than refused; and the admin page says what took each one out.

mod common;

use std::sync::atomic::Ordering;

use common::{Backend, admin_page_shows, config, full, get, metrics, proxy};
use http::{Response, StatusCode};

async fn failing() -> Backend {
    Backend::start(|_req| async {
        let mut r = Response::new(full("no"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await
}

/// Two endpoints ejected after one 5xx each, so none is healthy.
fn both_ejected(extra: &str, a: &Backend, b: &Backend) -> String {
    let upstream = format!(
        "retry.attempts = 1\n{extra}\n[upstreams.web.outlier_detection]\nconsecutive_5xx = 1\n\
         consecutive_local_origin_failures = 1\nmax_ejection_percent = 100"
    );
    config("round_robin", &[(a.addr, 1), (b.addr, 1)], &upstream)
}

#[tokio::test]
async fn with_no_healthy_endpoint_panic_mode_balances_over_all_of_them() {
    let (a, b) = (failing().await, failing().await);
    let proxy = proxy(&both_ejected("", &a, &b)).await;
    let (addr, admin) = (proxy.listen_addresses()[0], proxy.admin_address().unwrap());
    for _ in 0..2 {
        assert_eq!(get(addr, "/", &[]).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert!(admin_page_shows(admin, "/upstreams", "\"panic\":true").await, "the tick saw 0 of 2 healthy");
    let seen = a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst);
    for _ in 0..4 {
        assert_eq!(
            get(addr, "/", &[]).await.0,
            StatusCode::INTERNAL_SERVER_ERROR,
            "panic: still sent, not 503"
        );
    }
    assert_eq!(a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst), seen + 4);
    assert!(metrics(admin).await.contains("panic_requests_total{upstream=\"web\"} 4"));
    let page = get(admin, "/upstreams", &[]).await.1;
    assert!(
        page.contains("\"status\":\"ejected\"") && page.contains("\"cause\":\"outlier_detection\""),
        "{page}"
    );
    proxy.shutdown().await;
    a.kill().await;
    b.kill().await;
}

#[tokio::test]
async fn a_panic_threshold_of_zero_keeps_refusing() {
    let (a, b) = (failing().await, failing().await);
    let proxy = proxy(&both_ejected("panic_threshold = 0", &a, &b)).await;
    let addr = proxy.listen_addresses()[0];
    for _ in 0..2 {
        assert_eq!(get(addr, "/", &[]).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(get(addr, "/", &[]).await.0, StatusCode::SERVICE_UNAVAILABLE, "nobody healthy, no panic");
    proxy.shutdown().await;
    a.kill().await;
    b.kill().await;
}

#[tokio::test]
async fn an_open_breaker_shows_on_the_admin_page_with_its_cause() {
    let bad = failing().await;
    let extra = "retry.attempts = 1\n[upstreams.web.circuit_breaker]\nconsecutive_failures = 2";
    let proxy = proxy(&config("round_robin", &[(bad.addr, 1)], extra)).await;
    let (addr, admin) = (proxy.listen_addresses()[0], proxy.admin_address().unwrap());
    for _ in 0..2 {
        get(addr, "/", &[]).await;
    }
    let page = get(admin, "/upstreams", &[]).await.1;
    assert!(
        page.contains("\"status\":\"breaker_open\"") && page.contains("\"cause\":\"circuit_breaker\""),
        "{page}"
    );
    proxy.shutdown().await;
    bad.kill().await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged in this test process. One global subscriber, not a
/// per-thread default: under plain `cargo test` the tests of this binary run
/// on parallel threads, and `tracing` caches each log callsite's interest
/// process-wide, so a thread-local subscriber can miss lines another test's
/// thread registered first. Tests tell their lines apart by backend address.
fn captured() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this test binary");
        captured
    })
}

/// The log lines about `backend`'s health so far.
fn health_lines(captured: &Captured, backend: std::net::SocketAddr) -> Vec<String> {
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    log.lines()
        .filter(|l| l.contains("endpoint health changed") && l.contains(&format!("backend={backend}")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_health_change_is_logged_once_with_its_cause() {
    let captured = captured();
    let (a, b) = (failing().await, failing().await);
    // An upstream name of its own, so its panic-mode line is told from other tests'.
    let text = both_ejected("", &a, &b)
        .replace("upstreams.web", "upstreams.logged")
        .replace("upstream = \"web\"", "upstream = \"logged\"");
    assert!(text.contains("upstreams.logged") && !text.contains("web"), "{text}");
    let config = lb_proxy::Config::parse(&text, "test.toml").unwrap();
    let clock = std::sync::Arc::new(lb_core::ManualClock::new());
    let proxy = lb_proxy::Proxy::new(config).with_clock(clock.clone()).start().await.unwrap();
    let addr = proxy.listen_addresses()[0];
    for _ in 0..2 {
        get(addr, "/", &[]).await;
    }
    let both =
        |n: usize| health_lines(captured, a.addr).len() == n && health_lines(captured, b.addr).len() == n;
    assert!(common::eventually(|| both(1)).await, "a tick logs each ejection");
    // The ejection ends 30 s later (on the proxy's clock); the next tick logs the return.
    clock.advance(std::time::Duration::from_secs(30));
    assert!(common::eventually(|| both(2)).await, "and each return, once");
    for backend in [a.addr, b.addr] {
        let lines = health_lines(captured, backend);
        assert!(
            lines[0].contains("to=\"ejected\"") && lines[0].contains("cause=\"outlier_detection\""),
            "{lines:?}"
        );
        assert!(lines[1].contains("from=\"ejected\"") && lines[1].contains("to=\"healthy\""), "{lines:?}");
    }
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let panic_lines = log.lines().filter(|l| l.contains("panic mode:") && l.contains("upstream=logged"));
    assert_eq!(panic_lines.count(), 1, "{log}");
    proxy.shutdown().await;
    a.kill().await;
    b.kill().await;
}
