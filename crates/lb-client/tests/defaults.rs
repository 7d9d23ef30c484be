//! The pool's defaults against real loopback backends: the production
//! checklist of the user's guide (§7.3: idle connections, timeouts,
//! redirects) and its passive health rule (§5.1: more than 5 failures in a
//! row take a backend out).

mod support;

use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::{Error, Pool};
use lb_core::HealthStatus;
use support::http::Backend;
use support::{endpoint, refused_address};

/// The health of the endpoint at `addr` as the pool sees it.
fn health_of<A: lb_core::Build + 'static>(pool: &Pool<A>, addr: std::net::SocketAddr) -> HealthStatus {
    pool.endpoints()
        .into_iter()
        .find(|(e, _)| e.address().to_string() == addr.to_string())
        .map(|(_, health)| health)
        .expect("the endpoint is in the pool")
}

#[tokio::test]
async fn a_redirect_is_returned_as_it_is_never_followed() {
    let elsewhere = Backend::start("elsewhere", Duration::ZERO).await;
    let moved = Backend::start("moved", Duration::ZERO).await;
    let location = format!("http://{}/new", elsewhere.addr);
    moved.redirect_to(&location);
    let pool =
        Pool::builder("redirects", Algorithm::RoundRobin).endpoints([endpoint(moved.addr)]).build().unwrap();
    let response = pool.get("/old").send().await.unwrap();
    assert_eq!(response.status(), 302, "the application sees the redirect itself");
    assert_eq!(response.headers()["location"], location.as_str());
    assert_eq!(elsewhere.hits(), 0, "nobody followed it");
    assert_eq!(moved.hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_nobody_answers_fails_at_the_30_second_overall_timeout() {
    let silent = Backend::start("silent", Duration::ZERO).await;
    silent.hold_until(u64::MAX);
    let pool =
        Pool::builder("timeouts", Algorithm::RoundRobin).endpoints([endpoint(silent.addr)]).build().unwrap();
    let started = tokio::time::Instant::now();
    // Bounded by the test itself, so a missing timeout fails here instead of hanging.
    let result = tokio::time::timeout(Duration::from_secs(600), pool.get("/").send())
        .await
        .expect("the pool gave up on its own");
    let waited = started.elapsed();
    let Err(Error::Request { source, .. }) = result else { panic!("a timeout error, not {result:?}") };
    assert!(source.is_timeout(), "{source:?}");
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "gave up after {waited:?}, not 30 s"
    );
    assert_eq!(silent.connections(), 1, "one attempt: the 30 s cover every attempt, and none was left");
}

#[tokio::test]
async fn at_most_ten_idle_connections_are_kept_per_endpoint() {
    let backend = Backend::start("busy", Duration::ZERO).await;
    let pool =
        Pool::builder("idle", Algorithm::RoundRobin).endpoints([endpoint(backend.addr)]).build().unwrap();
    let burst = |all: u64| {
        // Every answer waits until the whole burst has arrived: 15 requests at once, 15 connections in use.
        backend.hold_until(all);
        let requests: Vec<_> = (0..15)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.get("/").send().await.unwrap().bytes().await.unwrap() })
            })
            .collect();
        async move {
            for request in requests {
                request.await.unwrap();
            }
        }
    };
    burst(15).await;
    assert_eq!(backend.connections(), 15);
    // Back in the pool they are 15 idle connections, and the pool keeps 10 of them.
    tokio::time::timeout(Duration::from_secs(20), backend.closed_at_least(5))
        .await
        .expect("five of the fifteen idle connections are closed");
    burst(30).await;
    assert_eq!(backend.connections(), 20, "the next burst reused the ten kept and opened five");
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_reused_for_90_seconds_and_no_longer() {
    let backend = Backend::start("idle", Duration::ZERO).await;
    let pool = Pool::builder("idle-timeout", Algorithm::RoundRobin)
        .endpoints([endpoint(backend.addr)])
        .build()
        .unwrap();
    pool.get("/").send().await.unwrap().bytes().await.unwrap();
    // Paused time: each wait for the loopback socket may move the clock to the
    // next timer (the 1 s sweep), so the bounds keep a margin from 90 s.
    tokio::time::advance(Duration::from_secs(80)).await;
    pool.get("/").send().await.unwrap().bytes().await.unwrap();
    assert_eq!(backend.connections(), 1, "idle for 80 s: reused");
    tokio::time::advance(Duration::from_secs(100)).await;
    pool.get("/").send().await.unwrap().bytes().await.unwrap();
    assert_eq!(backend.connections(), 2, "idle for 100 s: closed, a new one was made");
}

#[tokio::test]
async fn five_failures_in_a_row_leave_an_endpoint_in_and_the_sixth_ejects_it() {
    let good = Backend::start("good", Duration::ZERO).await;
    let bad = Backend::start("bad", Duration::ZERO).await;
    bad.answer_with(503);
    let pool = Pool::builder("ejection", Algorithm::RoundRobin)
        .endpoints([endpoint(good.addr), endpoint(bad.addr)])
        .max_attempts(1)
        .build()
        .unwrap();
    for failures in 1..=6 {
        // Round robin over two: each round reaches both once.
        for _ in 0..2 {
            pool.get("/").send().await.unwrap();
        }
        assert_eq!(bad.hits(), failures);
        let expected = if failures < 6 { HealthStatus::Healthy } else { HealthStatus::Ejected };
        assert_eq!(health_of(&pool, bad.addr), expected, "after {failures} failures in a row");
    }
    for _ in 0..10 {
        assert_eq!(pool.get("/").send().await.unwrap().status(), 200, "the ejected endpoint gets nothing");
    }
    assert_eq!(bad.hits(), 6);
}

#[tokio::test]
async fn a_success_ends_the_streak() {
    let flaky = Backend::start("flaky", Duration::ZERO).await;
    let pool = Pool::builder("streak", Algorithm::RoundRobin)
        .endpoints([endpoint(flaky.addr)])
        .max_attempts(1)
        .build()
        .unwrap();
    let send = |status: u16, times: usize| {
        flaky.answer_with(status);
        let pool = pool.clone();
        async move {
            for _ in 0..times {
                assert_eq!(pool.get("/").send().await.unwrap().status(), status);
            }
        }
    };
    send(500, 5).await;
    send(200, 1).await;
    send(500, 5).await;
    assert_eq!(health_of(&pool, flaky.addr), HealthStatus::Healthy, "5, a success, 5: never 6 in a row");
    send(500, 1).await;
    assert_eq!(health_of(&pool, flaky.addr), HealthStatus::Ejected, "one endpoint may always be ejected");
}

#[tokio::test]
async fn refused_connections_count_as_failures_too() {
    let dead = refused_address();
    let pool = Pool::builder("refused", Algorithm::RoundRobin)
        .endpoints([endpoint(dead)])
        .max_attempts(1)
        .build()
        .unwrap();
    for failure in 1..=6 {
        let err = pool.get("/").send().await.unwrap_err();
        assert!(matches!(err, Error::Request { ref source, .. } if source.is_connect()), "{err:?}");
        let expected = if failure < 6 { HealthStatus::Healthy } else { HealthStatus::Ejected };
        assert_eq!(health_of(&pool, dead), expected, "after {failure} refused connections");
    }
}

/// A 503 with `Retry-After` sets the wait before the retry (RFC 9110
/// §10.2.3), as in lb-proxy; an ask past the request's timeout hands the
/// 503 back at once instead of waiting.
#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_wait_and_one_past_the_timeout_is_not_waited() {
    for (asked, status, shortest, longest) in [
        ("7", 200, Duration::from_secs(7), Duration::from_secs(12)),
        ("3600", 503, Duration::ZERO, Duration::from_secs(5)),
    ] {
        let good = Backend::start("good", Duration::ZERO).await;
        let busy = Backend::start("busy", Duration::ZERO).await;
        busy.answer_with(503);
        busy.ask_to_retry_after(asked);
        let pool = Pool::builder("retry-after", Algorithm::RoundRobin)
            .endpoints([endpoint(busy.addr), endpoint(good.addr)])
            .build()
            .unwrap();
        // Round robin over two: one of two requests starts on the busy endpoint,
        // and its retry (the tried one excluded) goes to the good one.
        for _ in 0..2 {
            let (sent, busy_before) = (tokio::time::Instant::now(), busy.hits());
            let response = pool.get("/").send().await.unwrap();
            let took = sent.elapsed();
            if busy.hits() > busy_before {
                assert_eq!(busy.hits(), busy_before + 1, "a request tries the busy endpoint once");
                assert_eq!(response.status(), status, "Retry-After: {asked}");
                assert!(took >= shortest && took < longest, "Retry-After: {asked}: waited {took:?}");
            }
        }
        // A retry moves the rotation on, so both requests may have started there.
        assert!((1..=2).contains(&busy.hits()), "Retry-After: {asked}: {} hits", busy.hits());
    }
}
