//! The client's metrics, read from a Prometheus exposition: the proxy's
//! names, kinds and labels, a HELP text for each, series that appear only
//! once they happen, and the caller's own failures never counted against an
//! endpoint. Each test has a recorder of its own (see `support::metrics`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use lb_algorithms::Algorithm;
use lb_client::{Error, Pool, telemetry};
use lb_core::HealthStatus;
use support::http::Backend;
use support::metrics::{Exposition, run};
use support::{endpoint, refused_address};

/// The contract: name, kind and HELP text of every metric.
const EXPECTED: [(&str, &str, &str); 8] = [
    (
        "request_duration_seconds",
        "histogram",
        "Time from picking an endpoint to its response head (or failure), per endpoint, in seconds.",
    ),
    (
        "request_errors_total",
        "counter",
        "Failed requests by endpoint and error type (connect, timeout, reset, http_5xx, rejected).",
    ),
    (
        "requests_total",
        "counter",
        "Requests sent, by upstream, endpoint (\"-\" when the client refused the request itself) and status \
         (HTTP status, error without one, 499 when the caller gave up first).",
    ),
    ("requests_in_flight", "gauge", "Requests in flight to an endpoint."),
    ("endpoint_healthy", "gauge", "1 when an endpoint can be picked, 0 when a health mechanism took it out."),
    ("breaker_state", "gauge", "An endpoint's circuit breaker: 0 closed, 1 open, 2 half-open."),
    ("retries_total", "counter", "Retries made (hedged copies included), by upstream."),
    ("ejections_total", "counter", "Times an endpoint was ejected by outlier detection."),
];

/// The label names of every series of `name`.
fn label_names(m: &Exposition, name: &str) -> Vec<Vec<String>> {
    let mut sets: Vec<Vec<String>> = m
        .series(name, &[])
        .map(|s| {
            let mut keys: Vec<String> = s.labels.keys().cloned().collect();
            keys.sort();
            keys
        })
        .collect();
    sets.dedup();
    sets
}

#[test]
fn every_metric_has_the_proxys_name_kind_labels_and_a_help_text() {
    run(false, |recorded| async move {
        let good = Backend::start("good", Duration::ZERO).await;
        let bad = Backend::start("bad", Duration::ZERO).await;
        bad.answer_with(503);
        let pool = Pool::builder("described", Algorithm::RoundRobin)
            .endpoints([endpoint(good.addr), endpoint(bad.addr), endpoint(refused_address())])
            .build()
            .unwrap();
        for _ in 0..30 {
            assert_eq!(pool.get("/").send().await.unwrap().status(), 200);
        }
        // A second pool describes the metrics again, with nowhere to send.
        let empty = Pool::builder("described", Algorithm::RoundRobin).build().unwrap();
        assert!(matches!(empty.get("/").send().await, Err(Error::NoEndpoint(_))));

        let m = recorded.scrape();
        for (name, kind, help) in EXPECTED {
            assert_eq!(m.kind(name), Some(kind), "{name} in\n{}", m.text);
            assert_eq!(m.help(name), Some(help), "{name}");
            assert_eq!(telemetry::help(name), Some(help), "{name}: the library's text");
            assert_eq!(m.text.matches(&format!("# HELP {name} ")).count(), 1, "one HELP line for {name}");
        }
        assert_eq!(telemetry::NAMES.len(), EXPECTED.len());
        let keys = |names: &[&str]| vec![names.iter().map(|n| n.to_string()).collect::<Vec<_>>()];
        assert_eq!(label_names(&m, "request_duration_seconds"), keys(&["backend"]));
        assert_eq!(label_names(&m, "request_errors_total"), keys(&["backend", "error_type"]));
        assert_eq!(label_names(&m, "requests_total"), keys(&["backend", "status", "upstream"]));
        assert_eq!(label_names(&m, "retries_total"), keys(&["upstream"]));
        for name in ["requests_in_flight", "endpoint_healthy", "breaker_state", "ejections_total"] {
            assert_eq!(label_names(&m, name), keys(&["backend", "upstream"]), "{name}");
        }
        let error_types = m.label_values("request_errors_total", "error_type", &[]);
        assert_eq!(error_types, ["connect", "http_5xx", "rejected"]);
        assert_eq!(
            m.counter("request_errors_total", &[("backend", "-"), ("error_type", "rejected")]),
            1.0,
            "the request with nowhere to go, refused by the client itself"
        );
        assert_eq!(
            m.counter("requests_total", &[("upstream", "described"), ("backend", "-"), ("status", "error")]),
            1.0
        );
        assert_eq!(
            m.counter("ejections_total", &[("upstream", "described")]),
            1.0,
            "one of three may be out"
        );
    });
}

#[test]
fn a_status_series_appears_when_it_first_happens() {
    run(false, |recorded| async move {
        let backend = Backend::start("statuses", Duration::ZERO).await;
        let addr = backend.addr.to_string();
        let pool = Pool::builder("statuses", Algorithm::RoundRobin)
            .endpoints([endpoint(backend.addr)])
            .max_attempts(1)
            .build()
            .unwrap();
        let labels = [("upstream", "statuses"), ("backend", addr.as_str())];
        for _ in 0..3 {
            pool.get("/").send().await.unwrap();
        }
        let m = recorded.scrape();
        assert_eq!(
            m.label_values("requests_total", "status", &labels),
            ["200"],
            "nothing else pre-registered"
        );
        assert_eq!(m.counter("requests_total", &labels), 3.0);
        assert_eq!(
            m.series("request_errors_total", &[]).count(),
            0,
            "no error happened, no error series:\n{}",
            m.text
        );
        assert_eq!(m.histogram_count("request_duration_seconds", &[("backend", &addr)]), Some(3.0));

        for status in [404, 418, 404, 503] {
            backend.answer_with(status);
            pool.get("/").send().await.unwrap();
        }
        let m = recorded.scrape();
        assert_eq!(m.label_values("requests_total", "status", &labels), ["200", "404", "418", "503"]);
        assert_eq!(m.counter("requests_total", &[("status", "404")]), 2.0);
        assert_eq!(m.counter("requests_total", &[("status", "418")]), 1.0, "a rare status is counted too");
        assert_eq!(m.label_values("request_errors_total", "error_type", &[("backend", &addr)]), ["http_5xx"]);
        assert_eq!(m.series("retries_total", &[]).count(), 0, "no retry, no retry series");
    });
}

#[test]
fn a_request_the_caller_drops_counts_as_499_and_never_against_the_endpoint() {
    run(false, |recorded| async move {
        let slow = Backend::start("slow", Duration::ZERO).await;
        slow.hold_until(u64::MAX);
        let addr = slow.addr.to_string();
        let pool =
            Pool::builder("dropped", Algorithm::RoundRobin).endpoints([endpoint(slow.addr)]).build().unwrap();
        // More than the breaker and the outlier detector would forgive, were they the endpoint's failures.
        for arrived in 1..=7 {
            let send = pool.get("/").send();
            tokio::select! {
                result = send => panic!("nobody answers, yet: {result:?}"),
                () = slow.arrived(arrived) => {}
            }
            // Leaving the select dropped the request in flight.
        }
        let labels = [("upstream", "dropped"), ("backend", addr.as_str())];
        let m = recorded.scrape();
        assert_eq!(m.label_values("requests_total", "status", &labels), ["499"]);
        assert_eq!(m.counter("requests_total", &labels), 7.0);
        assert_eq!(m.series("request_errors_total", &[]).count(), 0, "not the endpoint's error:\n{}", m.text);
        assert_eq!(m.gauge("requests_in_flight", &labels), Some(0.0));
        assert_eq!(m.gauge("breaker_state", &labels), Some(0.0), "the breaker stays closed");
        assert_eq!(m.gauge("endpoint_healthy", &labels), Some(1.0));
        assert_eq!(m.series("ejections_total", &[]).count(), 0);
        assert_eq!(pool.endpoints()[0].1, HealthStatus::Healthy);
    });
}

#[test]
fn a_request_body_that_fails_is_the_callers_fault_not_the_endpoints() {
    run(false, |recorded| async move {
        let backend = Backend::start("uploads", Duration::ZERO).await;
        let addr = backend.addr.to_string();
        let pool = Pool::builder("uploads", Algorithm::RoundRobin)
            .endpoints([endpoint(backend.addr)])
            .build()
            .unwrap();
        for _ in 0..7 {
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from_static(b"part one"))),
                Err(std::io::Error::other("the file being uploaded broke")),
            ];
            let body =
                reqwest::Body::wrap(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
            let err = pool.post("/upload").body(body).send().await.unwrap_err();
            assert!(matches!(err, Error::Request { .. }), "{err:?}");
        }
        let labels = [("upstream", "uploads"), ("backend", addr.as_str())];
        let m = recorded.scrape();
        assert_eq!(m.label_values("requests_total", "status", &labels), ["499"]);
        assert_eq!(m.counter("requests_total", &labels), 7.0);
        assert_eq!(m.series("request_errors_total", &[]).count(), 0, "not the endpoint's error:\n{}", m.text);
        assert_eq!(m.gauge("requests_in_flight", &labels), Some(0.0));
        assert_eq!(m.gauge("breaker_state", &labels), Some(0.0));
        assert_eq!(pool.endpoints()[0].1, HealthStatus::Healthy, "seven failed uploads eject nobody");
        assert_eq!(pool.post("/upload").body("whole").send().await.unwrap().status(), 200);
        assert_eq!(backend.hits(), 1, "the broken uploads were never answered");
    });
}

#[test]
fn requests_errors_retries_and_ejections_are_counted_by_name() {
    run(false, |recorded| async move {
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
        let m = recorded.scrape();
        let served =
            m.counter("requests_total", &[("upstream", "metered"), ("backend", &good), ("status", "200")]);
        let failed =
            m.counter("requests_total", &[("upstream", "metered"), ("backend", &bad), ("status", "503")]);
        assert_eq!(served, 20.0);
        assert_eq!(failed, 6.0, "the sixth 503 in a row ejected it");
        assert_eq!(
            m.counter("request_errors_total", &[("backend", &bad), ("error_type", "http_5xx")]),
            failed
        );
        assert_eq!(
            m.counter("retries_total", &[("upstream", "metered")]),
            failed,
            "each 503 was retried once"
        );
        assert_eq!(m.counter("ejections_total", &[("upstream", "metered"), ("backend", &bad)]), 1.0);
        assert_eq!(m.gauge("endpoint_healthy", &[("upstream", "metered"), ("backend", &bad)]), Some(0.0));
        assert_eq!(m.gauge("endpoint_healthy", &[("upstream", "metered"), ("backend", &good)]), Some(1.0));
        assert_eq!(m.gauge("requests_in_flight", &[("upstream", "metered"), ("backend", &good)]), Some(0.0));
        assert_eq!(m.histogram_count("request_duration_seconds", &[("backend", &good)]), Some(20.0));
    });
}

#[test]
fn an_open_breaker_shows_in_its_gauge() {
    run(false, |recorded| async move {
        let good = Backend::start("good", Duration::ZERO).await;
        let bad = Backend::start("bad", Duration::ZERO).await;
        bad.answer_with(502);
        let resilience =
            lb_client::ResilienceConfig { outlier: None, ..lb_client::ResilienceConfig::default() };
        let pool = Pool::builder("breakered", Algorithm::RoundRobin)
            .endpoints([endpoint(good.addr), endpoint(bad.addr)])
            .resilience(resilience)
            .build()
            .unwrap();
        for _ in 0..30 {
            assert_eq!(pool.get("/").send().await.unwrap().status(), 200);
        }
        let bad_label = bad.addr.to_string();
        let m = recorded.scrape();
        let labels = [("upstream", "breakered"), ("backend", bad_label.as_str())];
        assert_eq!(m.gauge("breaker_state", &labels), Some(1.0), "open after more than 5 failures");
        assert_eq!(bad.hits(), 6, "an open breaker lets nothing through");
        assert_eq!(m.series("ejections_total", &[]).count(), 0, "outlier detection is off");
        assert_eq!(m.gauge("endpoint_healthy", &labels), Some(1.0), "an open breaker is not a health flag");
    });
}

#[test]
fn endpoint_healthy_follows_an_ejection_and_its_end() {
    run(true, |recorded| async move {
        let clock = Arc::new(lb_core::ManualClock::new());
        let good = Backend::start("good", Duration::ZERO).await;
        let bad = Backend::start("bad", Duration::ZERO).await;
        bad.answer_with(500);
        let pool = Pool::builder("healthy", Algorithm::RoundRobin)
            .endpoints([endpoint(good.addr), endpoint(bad.addr)])
            .clock(clock.clone())
            .max_attempts(1)
            .build()
            .unwrap();
        let bad_label = bad.addr.to_string();
        let labels = [("upstream", "healthy"), ("backend", bad_label.as_str())];
        assert_eq!(recorded.scrape().gauge("endpoint_healthy", &labels), Some(1.0), "published at build");
        for _ in 0..12 {
            pool.get("/").send().await.unwrap();
        }
        assert_eq!(bad.hits(), 6);
        assert_eq!(
            recorded.scrape().gauge("endpoint_healthy", &labels),
            Some(0.0),
            "ejected on the sixth 500"
        );
        clock.advance(Duration::from_secs(30));
        // Paused time: two sweeps run (one a second) while this sleeps.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(recorded.scrape().gauge("endpoint_healthy", &labels), Some(1.0), "back after its 30 s");
        assert_eq!(pool.endpoints().iter().filter(|(_, h)| h.is_eligible()).count(), 2);
    });
}
