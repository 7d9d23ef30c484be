//! Failures handled through the real data path: a backend dying under load,
//! passive ejection, active health checks and the circuit breaker.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use common::{Backend, config, eventually, full, get, proxy};
use http::{Response, StatusCode};
use lb_core::{HealthStatus, ManualClock};

/// A backend answering `status` (changeable) with its name.
async fn switchable(name: &'static str, status: Arc<AtomicU16>) -> Backend {
    Backend::start(move |_req| {
        let status = Arc::clone(&status);
        async move {
            let mut r = Response::new(full(name));
            *r.status_mut() = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
            r
        }
    })
    .await
}

async fn start_with_clock(text: &str, clock: Arc<ManualClock>) -> lb_proxy::RunningProxy {
    let config = lb_proxy::Config::parse(text, "test.toml").unwrap();
    lb_proxy::Proxy::new(config).with_clock(clock).start().await.unwrap()
}

/// The health of the endpoint at `backend` in the `web` upstream.
fn status_of(proxy: &lb_proxy::RunningProxy, backend: &Backend) -> HealthStatus {
    let address = backend.addr.to_string();
    proxy.endpoint_status("web").into_iter().find(|(a, _)| *a == address).expect("the endpoint is listed").1
}

#[tokio::test]
async fn killing_a_backend_under_steady_traffic_fails_no_request() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let c = Backend::named("c").await;
    let proxy = proxy(&config("round_robin", &[(a.addr, 1), (b.addr, 1), (c.addr, 1)], "")).await;
    let addr = proxy.listen_addresses()[0];
    let mut b = Some(b);
    let mut failures = Vec::new();
    let mut served_after_kill = std::collections::BTreeSet::new();
    for i in 0..300 {
        if i == 100 {
            b.take().unwrap().kill().await;
        }
        let (status, body) = get(addr, "/", &[]).await;
        if status != StatusCode::OK {
            failures.push((i, status, body));
        } else if i > 100 {
            served_after_kill.insert(body);
        }
    }
    assert!(failures.is_empty(), "failed client requests: {failures:?}");
    assert_eq!(served_after_kill.into_iter().collect::<Vec<_>>(), ["a", "c"]);
    proxy.shutdown().await;
    a.kill().await;
    c.kill().await;
}

#[tokio::test]
async fn a_failing_backend_is_ejected_and_returns_after_the_ejection_time() {
    let bad_status = Arc::new(AtomicU16::new(500));
    let bad = switchable("bad", Arc::clone(&bad_status)).await;
    let good = Backend::named("good").await;
    let extra = "retry.attempts = 1\n[upstreams.web.outlier_detection]\nconsecutive_5xx = 3\n\
                 base_ejection_time = \"30s\"\nmax_ejection_percent = 50";
    let clock = Arc::new(ManualClock::new());
    let proxy =
        start_with_clock(&config("round_robin", &[(bad.addr, 1), (good.addr, 1)], extra), Arc::clone(&clock))
            .await;
    let addr = proxy.listen_addresses()[0];
    let mut errors = 0;
    for _ in 0..6 {
        if get(addr, "/", &[]).await.0 != StatusCode::OK {
            errors += 1;
        }
    }
    assert_eq!(errors, 3, "three 5xx in a row eject the backend");
    assert_eq!(status_of(&proxy, &bad), HealthStatus::Ejected);
    bad_status.store(200, Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(get(addr, "/", &[]).await, (StatusCode::OK, "good".to_string()), "ejected: no traffic");
    }
    let rounds = proxy.upkeep_rounds("web").unwrap();
    clock.advance(Duration::from_secs(29));
    // Two more rounds: at least one of them read the clock after the advance.
    assert!(eventually(|| proxy.upkeep_rounds("web").unwrap() >= rounds + 2).await, "the upkeep runs");
    assert_eq!(status_of(&proxy, &bad), HealthStatus::Ejected, "29 s is not enough");
    clock.advance(Duration::from_secs(1));
    assert!(eventually(|| status_of(&proxy, &bad) == HealthStatus::Healthy).await, "back after 30 s");
    let bodies: std::collections::BTreeSet<String> =
        futures_util::future::join_all((0..4).map(|_| get(addr, "/", &[])))
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect();
    assert!(bodies.contains("bad"), "the returned backend takes traffic again: {bodies:?}");
    proxy.shutdown().await;
    bad.kill().await;
    good.kill().await;
}

#[tokio::test]
async fn an_active_health_check_takes_a_backend_out_and_back_in() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&healthy);
    let checked = Backend::start(move |req| {
        let healthy = flag.load(Ordering::SeqCst);
        async move {
            let mut r = Response::new(full("checked"));
            if req.uri().path() == "/health" && !healthy {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }
    })
    .await;
    let other = Backend::named("other").await;
    let extra = "[upstreams.web.health_check]\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2";
    let proxy = proxy(&config("round_robin", &[(checked.addr, 1), (other.addr, 1)], extra)).await;
    let addr = proxy.listen_addresses()[0];
    healthy.store(false, Ordering::SeqCst);
    assert!(
        eventually(|| status_of(&proxy, &checked) == HealthStatus::Unhealthy).await,
        "two failed checks take it out"
    );
    for _ in 0..6 {
        assert_eq!(get(addr, "/", &[]).await.1, "other");
    }
    healthy.store(true, Ordering::SeqCst);
    assert!(
        eventually(|| status_of(&proxy, &checked) == HealthStatus::Healthy).await,
        "two passed checks bring it back"
    );
    let bodies: Vec<String> = futures_util::future::join_all((0..4).map(|_| get(addr, "/", &[])))
        .await
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert!(bodies.iter().any(|b| b == "checked"), "{bodies:?}");
    proxy.shutdown().await;
    checked.kill().await;
    other.kill().await;
}

#[tokio::test]
async fn the_breaker_opens_then_recovers_through_half_open() {
    let status = Arc::new(AtomicU16::new(500));
    let backend = switchable("only", Arc::clone(&status)).await;
    let extra = "retry.attempts = 1\n[upstreams.web.circuit_breaker]\nconsecutive_failures = 3\nopen_timeout = \"10s\"\nhalf_open_requests = 1";
    let clock = Arc::new(ManualClock::new());
    let proxy =
        start_with_clock(&config("round_robin", &[(backend.addr, 1)], extra), Arc::clone(&clock)).await;
    let addr = proxy.listen_addresses()[0];
    for _ in 0..3 {
        assert_eq!(get(addr, "/", &[]).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let seen = backend.requests.load(Ordering::SeqCst);
    assert_eq!(get(addr, "/", &[]).await.0, StatusCode::SERVICE_UNAVAILABLE, "open: refused locally");
    assert_eq!(backend.requests.load(Ordering::SeqCst), seen, "the open breaker sent nothing");
    let admin = proxy.admin_address().unwrap();
    assert!(
        common::metrics(admin)
            .await
            .contains(&format!("breaker_state{{upstream=\"web\",backend=\"{}\"}} 1", backend.addr))
    );

    status.store(200, Ordering::SeqCst);
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        get(addr, "/", &[]).await,
        (StatusCode::OK, "only".to_string()),
        "half-open lets a trial through"
    );
    assert_eq!(get(addr, "/", &[]).await.0, StatusCode::OK, "one success closed it");
    assert!(
        common::metrics(admin)
            .await
            .contains(&format!("breaker_state{{upstream=\"web\",backend=\"{}\"}} 0", backend.addr))
    );
    proxy.shutdown().await;
    backend.kill().await;
}

/// The guide's gobreaker rule, `Requests >= 3 && TotalFailures / Requests >= 0.6`, checked after
/// each failure: failing twice then succeeding does not trip it; 3 failures of 5 do.
#[tokio::test]
async fn the_guide_preset_trips_at_three_failures_of_five_but_not_two_of_three() {
    let status = Arc::new(AtomicU16::new(200));
    let backend = switchable("only", Arc::clone(&status)).await;
    let extra = "retry.attempts = 1\n[upstreams.web.circuit_breaker]\npreset = \"guide\"";
    let clock = Arc::new(ManualClock::new());
    let proxy =
        start_with_clock(&config("round_robin", &[(backend.addr, 1)], extra), Arc::clone(&clock)).await;
    let addr = proxy.listen_addresses()[0];
    let answer = |code: u16| {
        status.store(code, Ordering::SeqCst);
        async move { get(addr, "/", &[]).await.0 }
    };
    for code in [500, 500, 200, 200] {
        assert_eq!(answer(code).await.as_u16(), code, "2 failures of 3 do not trip");
    }
    // The guide's 60 s interval clears the closed breaker's counts.
    clock.advance(Duration::from_secs(60));
    for code in [200, 200, 500, 500, 500] {
        assert_eq!(answer(code).await.as_u16(), code);
    }
    let seen = backend.requests.load(Ordering::SeqCst);
    assert_eq!(answer(200).await, StatusCode::SERVICE_UNAVAILABLE, "3 failures of 5 (0.6) tripped it");
    assert_eq!(backend.requests.load(Ordering::SeqCst), seen, "open: nothing sent");
    // The guide's 10 s timeout, then 3 half-open trials close it.
    clock.advance(Duration::from_secs(10));
    for _ in 0..3 {
        assert_eq!(answer(200).await, StatusCode::OK, "half-open lets the trials through");
    }
    assert_eq!(answer(200).await, StatusCode::OK, "closed again");
    proxy.shutdown().await;
    backend.kill().await;
}

/// The guide's passive check takes an endpoint out after *more than* 5 failures in a row:
/// with `preset = "guide"` the 5th failure leaves it in and the 6th ejects it.
#[tokio::test]
async fn the_guide_outlier_preset_ejects_at_the_sixth_failure() {
    let bad = switchable("bad", Arc::new(AtomicU16::new(500))).await;
    let good = Backend::named("good").await;
    let extra = "retry.attempts = 1\n[upstreams.web.outlier_detection]\npreset = \"guide\"\nmax_ejection_percent = 50";
    let proxy = common::proxy(&config("round_robin", &[(bad.addr, 1), (good.addr, 1)], extra)).await;
    let addr = proxy.listen_addresses()[0];
    let failures = || bad.requests.load(Ordering::SeqCst);
    for _ in 0..20 {
        if failures() == 5 {
            break;
        }
        get(addr, "/", &[]).await;
    }
    assert_eq!(failures(), 5);
    assert_eq!(status_of(&proxy, &bad), HealthStatus::Healthy, "5 failures in a row are not more than 5");
    for _ in 0..4 {
        if failures() == 6 {
            break;
        }
        get(addr, "/", &[]).await;
    }
    assert_eq!(failures(), 6);
    assert_eq!(status_of(&proxy, &bad), HealthStatus::Ejected, "the 6th ejects");
    proxy.shutdown().await;
    bad.kill().await;
    good.kill().await;
}
