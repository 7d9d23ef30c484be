//! The client reports through the `metrics` facade with the names the
//! proxy uses.

mod support;

use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::Pool;
use support::endpoint;
use support::http::Backend;

#[tokio::test]
async fn requests_errors_retries_and_ejections_are_counted_by_name() {
    support::metrics::install();
    let good = Backend::start("good", Duration::ZERO).await;
    let bad = Backend::start("bad", Duration::ZERO).await;
    bad.answer_with(503);
    let pool = Pool::builder("metered", Algorithm::RoundRobin)
        .endpoints([endpoint(good.addr), endpoint(bad.addr)])
        .build()
        .unwrap();
    for _ in 0..20 {
        assert_eq!(pool.get("/").send().await.unwrap().status(), 200);
    }
    let (good, bad) = (good.addr.to_string(), bad.addr.to_string());
    let m = support::metrics::read();
    let served =
        m.counter("requests_total", &[("upstream", "metered"), ("backend", &good), ("status", "200")]);
    let failed =
        m.counter("requests_total", &[("upstream", "metered"), ("backend", &bad), ("status", "503")]);
    assert_eq!(served, 20);
    assert!(failed >= 1, "the 503s are counted");
    assert_eq!(m.counter("request_errors_total", &[("backend", &bad), ("error_type", "http_5xx")]), failed);
    assert_eq!(m.counter("retries_total", &[("upstream", "metered")]), failed, "each 503 was retried once");
    assert_eq!(
        m.counter("ejections_total", &[("upstream", "metered"), ("backend", &bad)]),
        1,
        "5 in a row eject"
    );
    assert_eq!(m.gauge("breaker_state", &[("upstream", "metered"), ("backend", &bad)]), Some(0.0));
    assert_eq!(m.gauge("requests_in_flight", &[("upstream", "metered"), ("backend", &good)]), Some(0.0));
    assert!(m.histogram_len("request_duration_seconds", &[("backend", &good)]) >= 20);
}

#[tokio::test]
async fn an_open_breaker_shows_in_its_gauge() {
    support::metrics::install();
    let good = Backend::start("good", Duration::ZERO).await;
    let bad = Backend::start("bad", Duration::ZERO).await;
    bad.answer_with(502);
    let resilience = lb_client::ResilienceConfig { outlier: None, ..lb_client::ResilienceConfig::default() };
    let pool = Pool::builder("breakered", Algorithm::RoundRobin)
        .endpoints([endpoint(good.addr), endpoint(bad.addr)])
        .resilience(resilience)
        .build()
        .unwrap();
    for _ in 0..30 {
        assert_eq!(pool.get("/").send().await.unwrap().status(), 200);
    }
    let bad_label = bad.addr.to_string();
    let m = support::metrics::read();
    let labels = [("upstream", "breakered"), ("backend", bad_label.as_str())];
    assert_eq!(m.gauge("breaker_state", &labels), Some(1.0), "open after more than 5 failures");
    assert_eq!(bad.hits(), 6, "an open breaker lets nothing through");
    assert_eq!(m.counter("ejections_total", &labels), 0);
}
