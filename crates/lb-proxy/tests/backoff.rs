//! The wait between retries: taken before a retry after the request went
//! out, skipped after a connect error, and never past the request deadline.
//!
//! Time is tokio's paused clock where a wait is measured, so a minutes-long
//! backoff passes at once and the check is on virtual time, not wall clock.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{Backend, config, full, proxy};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

/// Long enough that only the backoff under test ends a wait.
const GENEROUS_TIMEOUTS: &str =
    "[upstreams.web.timeouts]\nconnect = \"1h\"\nper_try = \"1h\"\nrequest = \"2h\"\nidle = \"2h\"";

async fn unavailable() -> Backend {
    Backend::start(|_req| async {
        let mut r = Response::new(full("unavailable"));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    })
    .await
}

/// GETs `/` through the proxy with no client-side timeout (a paused clock
/// would fire one before the backoff).
async fn get(proxy: SocketAddr) -> (StatusCode, String) {
    let req = Request::get(format!("http://{proxy}/")).body(full("")).unwrap();
    let resp = common::client().request(req).await.expect("the proxy answers");
    let status = resp.status();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn retry(backoff: &str) -> String {
    format!("[upstreams.web.retry]\nattempts = 2\nretry_on = [\"gateway_error\"]\n{backoff}\n")
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_503_waits_the_backoff_and_an_immediate_one_does_not() {
    let bad = unavailable().await;
    let good = Backend::named("good").await;
    // Equal jitter from a 10-minute base waits 5 to 10 minutes.
    let waiting = retry("backoff = \"equal_jitter\"\nbackoff_base = \"10m\"\nbackoff_max = \"10m\"");
    let eager = retry("backoff = \"none\"");
    for (extra, shortest, longest) in [
        (waiting, Duration::from_secs(300), Duration::from_secs(601)),
        (eager, Duration::ZERO, Duration::from_secs(300)),
    ] {
        let text =
            config("round_robin", &[(bad.addr, 1), (good.addr, 1)], &format!("{extra}{GENEROUS_TIMEOUTS}"));
        let proxy = proxy(&text).await;
        let addr = proxy.listen_addresses()[0];
        let bad_before = bad.requests.load(SeqCst);
        let mut retried = 0;
        // Round robin starts on either endpoint; of two requests at least one starts on the bad one.
        for _ in 0..2 {
            let sent = tokio::time::Instant::now();
            let bad_seen = bad.requests.load(SeqCst);
            assert_eq!(get(addr).await, (StatusCode::OK, "good".to_string()));
            let took = sent.elapsed();
            if bad.requests.load(SeqCst) > bad_seen {
                retried += 1;
                assert!(took >= shortest && took < longest, "{extra}: the retry came after {took:?}");
            }
        }
        // A retry moves round robin on, so both requests may start on the bad endpoint.
        assert!(retried >= 1, "{extra}: some request started on the bad endpoint");
        assert_eq!(bad.requests.load(SeqCst) - bad_before, retried);
        proxy.shutdown().await;
    }
    bad.kill().await;
    good.kill().await;
}

#[tokio::test]
async fn a_wait_that_would_pass_the_request_deadline_returns_the_answer_instead() {
    let bad = unavailable().await;
    let good = Backend::named("good").await;
    let extra = format!(
        "{}[upstreams.web.timeouts]\nrequest = \"2s\"",
        retry("backoff = \"equal_jitter\"\nbackoff_base = \"10s\"\nbackoff_max = \"10s\"")
    );
    let proxy = proxy(&config("round_robin", &[(bad.addr, 1), (good.addr, 1)], &extra)).await;
    let addr = proxy.listen_addresses()[0];
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(get(addr).await.0);
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE], "the 503 is passed on");
    assert_eq!(good.requests.load(SeqCst), 1, "no retry reached the good endpoint");
    let metrics = common::metrics(proxy.admin_address().unwrap()).await;
    assert!(!metrics.contains("retries_total{upstream=\"web\"} 1"), "{metrics}");
    proxy.shutdown().await;
    bad.kill().await;
    good.kill().await;
}

#[tokio::test]
async fn a_connect_error_is_retried_at_once_whatever_the_backoff() {
    // A port that was just free: connecting to it is refused.
    let refused = common::refused_address();
    let good = Backend::named("good").await;
    let extra = format!(
        "{}[upstreams.web.timeouts]\nrequest = \"2s\"",
        "[upstreams.web.retry]\nattempts = 2\nbackoff = \"equal_jitter\"\nbackoff_base = \"10s\"\nbackoff_max = \"10s\"\n"
    );
    let proxy = proxy(&config("round_robin", &[(refused, 1), (good.addr, 1)], &extra)).await;
    let addr = proxy.listen_addresses()[0];
    for _ in 0..2 {
        assert_eq!(
            get(addr).await,
            (StatusCode::OK, "good".to_string()),
            "a 10 s wait would pass the 2 s deadline"
        );
    }
    assert_eq!(good.requests.load(SeqCst), 2);
    proxy.shutdown().await;
    good.kill().await;
}

/// A 503 whose `Retry-After` asks for `seconds`.
async fn unavailable_for(seconds: &'static str) -> Backend {
    Backend::start(move |_req| async move {
        let mut r = Response::new(full("unavailable"));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(seconds));
        r
    })
    .await
}

/// `Retry-After` on a 503 replaces the backoff (RFC 9110 §10.2.3): the
/// retry waits what the server asked for, and an ask that would pass the
/// request deadline passes the 503 on at once instead of waiting.
#[tokio::test(start_paused = true)]
async fn a_retry_after_header_sets_the_wait_and_one_past_the_deadline_is_not_waited() {
    let asks_7s = unavailable_for("7").await;
    let asks_3h = unavailable_for("10800").await;
    let good = Backend::named("good").await;
    // A 1 ms backoff: only the header can make the wait 7 s.
    let extra = format!("{}{GENEROUS_TIMEOUTS}", retry("backoff_base = \"1ms\"\nbackoff_max = \"1ms\""));
    for (bad, answer, shortest, longest) in [
        (&asks_7s, (StatusCode::OK, "good"), Duration::from_secs(7), Duration::from_secs(8)),
        (&asks_3h, (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), Duration::ZERO, Duration::from_secs(1)),
    ] {
        let proxy = proxy(&config("round_robin", &[(bad.addr, 1), (good.addr, 1)], &extra)).await;
        let addr = proxy.listen_addresses()[0];
        let mut seen = false;
        for _ in 0..2 {
            let (sent, bad_seen) = (tokio::time::Instant::now(), bad.requests.load(SeqCst));
            let got = get(addr).await;
            if bad.requests.load(SeqCst) > bad_seen {
                seen = true;
                let took = sent.elapsed();
                assert_eq!((got.0, got.1.as_str()), answer);
                assert!(took >= shortest && took < longest, "waited {took:?}");
            }
        }
        assert!(seen, "a request started on the endpoint that asks for a wait");
        proxy.shutdown().await;
    }
    for backend in [asks_7s, asks_3h, good] {
        backend.kill().await;
    }
}
