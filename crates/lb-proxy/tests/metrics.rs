//! `/metrics`, read by a real Prometheus text-format parser: the guide's
//! names, a histogram with Prometheus' default buckets, HELP on every
//! metric, no series before something happened, and the proxy's own refusals.

mod common;

use std::collections::HashMap;

use common::{Backend, config, full, get, metrics, proxy};
use http::{Response, StatusCode};
use prometheus_parse::{Scrape, Value};

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition")
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The value of the sample `name` with exactly these labels.
fn value<'a>(scrape: &'a Scrape, name: &str, with: &[(&str, &str)]) -> Option<&'a Value> {
    let want = labels(with);
    scrape.samples.iter().find(|s| s.metric == name && *s.labels == want).map(|s| &s.value)
}

#[tokio::test]
async fn the_exposition_has_the_guides_names_a_real_histogram_and_help_text() {
    let ok = Backend::named("ok").await;
    let failing = Backend::start(|_req| async {
        let mut r = Response::new(full("no"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await;
    let proxy = proxy(&config("round_robin", &[(ok.addr, 1), (failing.addr, 1)], "retry.attempts = 1")).await;
    let admin = proxy.admin_address().unwrap();
    let (ok_addr, failing_addr) = (ok.addr.to_string(), failing.addr.to_string());
    let before = scrape(&metrics(admin).await);
    // Tests in one process share the recorder: look at this test's backends only.
    let ours = |s: &&prometheus_parse::Sample| {
        s.labels.get("backend").is_some_and(|b| *b == ok_addr || *b == failing_addr)
    };
    assert!(
        !before
            .samples
            .iter()
            .filter(ours)
            .any(|s| s.metric == "requests_total" || s.metric == "request_errors_total"),
        "no zero series before any request"
    );
    for _ in 0..4 {
        get(proxy.listen_addresses()[0], "/", &[]).await;
    }
    let after = scrape(&metrics(admin).await);
    let Some(Value::Histogram(buckets)) = value(&after, "request_duration_seconds", &[("backend", &ok_addr)])
    else {
        panic!("request_duration_seconds{{backend}} is a histogram: {:?}", after.samples);
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(bounds, [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, f64::INFINITY]);
    assert_eq!(buckets.last().map(|b| b.count), Some(2.0), "two requests went to `ok`");
    assert!(matches!(
        value(&after, "requests_total", &[("upstream", "web"), ("backend", &failing_addr), ("status", "500")]),
        Some(Value::Counter(n)) if *n == 2.0
    ));
    assert!(matches!(
        value(&after, "request_errors_total", &[("backend", &failing_addr), ("error_type", "http_5xx")]),
        Some(Value::Counter(n)) if *n == 2.0
    ));
    assert!(
        value(&after, "request_errors_total", &[("backend", &ok_addr), ("error_type", "http_5xx")]).is_none(),
        "no error series for a backend that had none"
    );
    for family in ["request_duration_seconds", "requests_total", "request_errors_total", "requests_in_flight"]
    {
        assert!(
            after.docs.get(family).is_some_and(|help| !help.is_empty()),
            "HELP for {family}: {:?}",
            after.docs
        );
    }
    proxy.shutdown().await;
    ok.kill().await;
    failing.kill().await;
}

#[tokio::test]
async fn the_proxys_own_refusals_are_counted_and_buckets_can_be_set() {
    let (release, released) = tokio::sync::watch::channel(false);
    let held = Backend::start(move |_req| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Response::new(full("done"))
        }
    })
    .await;
    let text = format!(
        "[admin]\nhistogram_buckets = [0.1, 1.0]\n{}",
        config("round_robin", &[(held.addr, 1)], "[upstreams.web.limits]\nmax_in_flight = 1")
            .replace("[admin]\n", "")
    );
    let proxy = proxy(&text).await;
    let (addr, admin) = (proxy.listen_addresses()[0], proxy.admin_address().unwrap());
    let first = tokio::spawn(async move { get(addr, "/", &[]).await });
    assert!(common::eventually(|| held.requests.load(std::sync::atomic::Ordering::SeqCst) == 1).await);
    assert_eq!(get(addr, "/", &[]).await.0, StatusCode::SERVICE_UNAVAILABLE);
    release.send(true).unwrap();
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    let scraped = scrape(&metrics(admin).await);
    assert!(matches!(
        value(&scraped, "requests_total", &[("upstream", "web"), ("backend", "-"), ("status", "503")]),
        Some(Value::Counter(n)) if *n == 1.0
    ));
    assert!(matches!(
        value(&scraped, "request_errors_total", &[("backend", "-"), ("error_type", "rejected")]),
        Some(Value::Counter(n)) if *n == 1.0
    ));
    let backend = held.addr.to_string();
    let Some(Value::Histogram(buckets)) =
        value(&scraped, "request_duration_seconds", &[("backend", &backend)])
    else {
        panic!("a histogram");
    };
    assert_eq!(buckets.iter().map(|b| b.less_than).collect::<Vec<_>>(), [0.1, 1.0, f64::INFINITY]);
    proxy.shutdown().await;
    held.kill().await;
}
