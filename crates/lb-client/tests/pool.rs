//! The reqwest pool against real loopback backends.

mod support;

use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::{Error, Pool};
use support::http::Backend;
use support::{endpoint, refused_address};

async fn backends(n: usize) -> Vec<Backend> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(Backend::start(&format!("b{i}"), Duration::ZERO).await);
    }
    all
}

#[tokio::test]
async fn requests_to_the_service_name_reach_every_endpoint() {
    let servers = backends(3).await;
    let pool = Pool::builder("users", Algorithm::RoundRobin)
        .endpoints(servers.iter().map(|b| endpoint(b.addr)))
        .build()
        .unwrap();
    for _ in 0..30 {
        let response = pool.get("http://users/v1/me").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().ends_with(" /v1/me"));
    }
    let hits: Vec<u64> = servers.iter().map(Backend::hits).collect();
    assert_eq!(hits, [10, 10, 10], "round robin spreads evenly");
}

#[test]
fn one_of_five_down_still_serves_almost_everything_within_budget() {
    support::metrics::run(false, |recorded| async move {
        let servers = backends(4).await;
        let dead = refused_address();
        let pool = Pool::builder("orders", Algorithm::RoundRobin)
            .endpoints(servers.iter().map(|b| endpoint(b.addr)).chain([endpoint(dead)]))
            .build()
            .unwrap();
        let total = 2000;
        let mut ok = 0;
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let pool = pool.clone();
            tasks.spawn(async move {
                let mut ok = 0;
                for i in 0..total / 8 {
                    let response = pool.get(&format!("/item/{worker}/{i}")).send().await;
                    if response.is_ok_and(|r| r.status() == 200) {
                        ok += 1;
                    }
                }
                ok
            });
        }
        while let Some(done) = tasks.join_next().await {
            ok += done.unwrap();
        }
        assert!(ok * 1000 >= total * 999, "only {ok} of {total} succeeded");
        let served: u64 = servers.iter().map(Backend::hits).sum();
        assert_eq!(served, ok as u64, "every success came from a live backend, exactly once");
        let dead_label = dead.to_string();
        let m = recorded.scrape();
        let dead_attempts = m.counter("requests_total", &[("upstream", "orders"), ("backend", &dead_label)]);
        let retries = m.counter("retries_total", &[("upstream", "orders")]);
        assert!(dead_attempts >= 1.0, "the dead endpoint was tried");
        assert!(dead_attempts <= 20.0, "its breaker and ejection keep it out: {dead_attempts} attempts");
        // The budget allows 20 % of requests plus 10 per second of reserve; we stay far below.
        assert!(
            retries >= 1.0 && retries <= dead_attempts,
            "failures were retried: {retries} retries, {dead_attempts} failures"
        );
        assert!(retries * 5.0 <= f64::from(total), "{retries} retries exceed the 20 % budget");
    });
}

#[tokio::test]
async fn a_gateway_error_is_retried_on_another_endpoint_but_a_post_is_not() {
    let servers = backends(2).await;
    servers[0].answer_with(503);
    let pool = Pool::builder("billing", Algorithm::RoundRobin)
        .endpoints(servers.iter().map(|b| endpoint(b.addr)))
        .build()
        .unwrap();
    for _ in 0..4 {
        let response = pool.get("/invoice").send().await.unwrap();
        assert_eq!(response.status(), 200, "a GET that met a 503 was retried elsewhere");
    }
    let mut saw_503 = false;
    for _ in 0..4 {
        let response = pool.post("/invoice").body("x").send().await.unwrap();
        saw_503 |= response.status() == 503;
    }
    assert!(saw_503, "a POST that reached an endpoint is never sent twice");
}

#[tokio::test]
async fn a_refused_post_is_sent_to_another_endpoint() {
    let server = Backend::start("live", Duration::ZERO).await;
    let pool = Pool::builder("payments", Algorithm::RoundRobin)
        .endpoints([endpoint(refused_address()), endpoint(server.addr)])
        .build()
        .unwrap();
    for _ in 0..6 {
        let response = pool.post("/pay").body("1").send().await.unwrap();
        assert_eq!(response.status(), 200, "the refused endpoint never saw the POST, so it may go elsewhere");
    }
    assert_eq!(server.hits(), 6);
}

#[tokio::test]
async fn the_same_key_always_reaches_the_same_endpoint() {
    let servers = backends(4).await;
    let pool = Pool::builder("profiles", "ring_hash".parse::<Algorithm>().unwrap())
        .endpoints(servers.iter().map(|b| endpoint(b.addr)))
        .build()
        .unwrap();
    for user in ["alice", "bob", "carol"] {
        let mut homes = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let body = pool.get("/profile").hash_key(user).send().await.unwrap().text().await.unwrap();
            homes.insert(body.split(' ').next().unwrap().to_string());
        }
        assert_eq!(homes.len(), 1, "{user} was sent to {homes:?}");
    }
}

#[tokio::test]
async fn endpoints_added_after_a_scale_up_get_their_share() {
    let mut servers = backends(2).await;
    let pool = Pool::builder("search", Algorithm::RoundRobin)
        .endpoints(servers.iter().map(|b| endpoint(b.addr)))
        .build()
        .unwrap();
    for _ in 0..10 {
        pool.get("/q").send().await.unwrap();
    }
    servers.push(Backend::start("new", Duration::ZERO).await);
    pool.set_endpoints(servers.iter().map(|b| endpoint(b.addr)));
    for _ in 0..30 {
        pool.get("/q").send().await.unwrap();
    }
    assert_eq!(servers[2].hits(), 10, "the new endpoint takes a third of the traffic at once");
}

#[tokio::test]
async fn discovery_updates_reach_the_pool() {
    let a = Backend::start("a", Duration::ZERO).await;
    let b = Backend::start("b", Duration::ZERO).await;
    let (tx, rx) =
        tokio::sync::watch::channel(lb_core::EndpointSet::new([endpoint(a.addr)], lb_core::Timestamp::ZERO));
    let pool = Pool::builder("catalog", Algorithm::RoundRobin).discovery(rx).build().unwrap();
    pool.get("/").send().await.unwrap();
    tx.send_modify(|set| *set = set.replaced([endpoint(b.addr)], lb_core::Timestamp::ZERO));
    // The follower task applies the update; wait for it by polling, bounded.
    for _ in 0..100 {
        if pool.endpoints().iter().any(|(e, _)| e.address().port() == b.addr.port()) {
            break;
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..5 {
        pool.get("/").send().await.unwrap();
    }
    assert_eq!((a.hits(), b.hits()), (1, 5));
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let pool = Pool::builder("users", Algorithm::RoundRobin).build().unwrap();
    let err = pool.get("/v1/me").send().await.unwrap_err();
    assert!(matches!(err, Error::NoEndpoint(ref s) if s == "users"), "{err}");
    let err = pool.get("http://orders/v1").send().await.unwrap_err();
    assert!(err.to_string().contains("service name"), "{err}");
    let err = Pool::builder("users", Algorithm::RoundRobin).max_attempts(0).build().unwrap_err();
    assert!(err.to_string().contains("max_attempts"), "{err}");
}

#[test]
fn building_outside_a_runtime_says_so() {
    let err = Pool::builder("users", Algorithm::RoundRobin).build().unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test]
async fn a_hedged_request_is_answered_by_the_fast_copy() {
    let slow = Backend::start("slow", Duration::from_secs(5)).await;
    let fast = Backend::start("fast", Duration::ZERO).await;
    let hedging = lb_health::Hedging { delay: Duration::from_millis(20), ..lb_health::Hedging::default() };
    let pool = Pool::builder("hedged", Algorithm::RoundRobin)
        .endpoints([endpoint(slow.addr), endpoint(fast.addr)])
        .hedging(Some(hedging))
        .build()
        .unwrap();
    for _ in 0..4 {
        let body = pool.get("/h").send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "fast /h", "whichever endpoint was picked first, the fast copy answers");
    }
    assert_eq!(fast.hits(), 4);
    assert_eq!(slow.hits(), 0, "the slow copies were cancelled before they answered");
}

#[tokio::test]
async fn the_retry_policy_decides_what_is_retried() {
    let servers = backends(2).await;
    servers[0].answer_with(500);
    let any_5xx = lb_health::RetryPolicy {
        retry_on: lb_health::RetryOn { any_5xx: true, ..lb_health::RetryOn::default() },
        ..lb_health::RetryPolicy::default()
    };
    let pool = Pool::builder("policy", Algorithm::RoundRobin)
        .endpoints(servers.iter().map(|b| endpoint(b.addr)))
        .retry(any_5xx)
        .build()
        .unwrap();
    for _ in 0..4 {
        assert_eq!(pool.get("/").send().await.unwrap().status(), 200, "a 500 is retried under this policy");
    }
    servers[0].answer_with(503);
    for _ in 0..4 {
        let response = pool.post("/").body("x").idempotent(true).send().await.unwrap();
        assert_eq!(response.status(), 200, "a POST marked idempotent is retried");
    }
    let once = Pool::builder("policy-once", Algorithm::RoundRobin)
        .endpoints([endpoint(servers[0].addr)])
        .max_attempts(1)
        .build()
        .unwrap();
    assert_eq!(once.get("/").send().await.unwrap().status(), 503, "one attempt: the answer as it is");
}

#[tokio::test]
async fn active_checks_keep_a_dead_endpoint_out_from_the_start() {
    let servers = backends(2).await;
    let dead = refused_address();
    let check = lb_health::ActiveCheckConfig {
        interval: Duration::from_millis(20),
        jitter: Duration::ZERO,
        rise: 1,
        fall: 1,
        initial: lb_health::InitialState::Unhealthy,
        ..lb_health::ActiveCheckConfig::default()
    };
    let resilience =
        lb_client::ResilienceConfig { active_check: Some(check), ..lb_client::ResilienceConfig::default() };
    let pool = Pool::builder("checked", Algorithm::RoundRobin)
        .endpoints(servers.iter().map(|b| endpoint(b.addr)).chain([endpoint(dead)]))
        .resilience(resilience)
        .max_attempts(1)
        .build()
        .unwrap();
    // Bounded wait for the first passing checks to bring the live endpoints in.
    for _ in 0..500 {
        if pool.endpoints().iter().filter(|(_, h)| h.is_eligible()).count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let health: Vec<_> =
        pool.endpoints().into_iter().map(|(e, h)| (e.address().port() == dead.port(), h)).collect();
    assert!(health.iter().all(|(is_dead, h)| h.is_eligible() != *is_dead), "{health:?}");
    for _ in 0..20 {
        assert_eq!(pool.get("/").send().await.unwrap().status(), 200, "one attempt, never the dead endpoint");
    }
}

#[tokio::test]
async fn connections_are_renewed_after_their_maximum_age() {
    let server = Backend::start("aged", Duration::ZERO).await;
    let pool = Pool::builder("aged", Algorithm::RoundRobin)
        .endpoints([endpoint(server.addr)])
        .max_connection_age(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    pool.get("/").send().await.unwrap();
    pool.get("/").send().await.unwrap();
    assert_eq!(server.connections(), 1, "an idle connection is reused within its age");
    // Paced requests, bounded at 4 s: a fresh connection must appear once the age has passed.
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        pool.get("/").send().await.unwrap();
        if server.connections() >= 2 {
            break;
        }
    }
    assert!(server.connections() >= 2, "the old connection was retired");
}

/// A pool following a discovery source shows that source's failures: a
/// broken endpoint file keeps the last good list and is reported with its
/// line and column until it is fixed.
#[tokio::test]
async fn the_discovery_status_shows_a_failing_source_and_its_recovery() {
    let dir = std::env::temp_dir().join(format!("lb-client-discovery-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.toml");
    std::fs::write(&file, "[[endpoints]]\naddress = 17\n").unwrap();
    let source = lb_discovery::FileSource::new(&file).unwrap();
    let pool = Pool::builder("files", Algorithm::RoundRobin).source(source).build().unwrap();
    let status = || pool.discovery_status().expect("built from a source");
    for _ in 0..250 {
        if status().errors_in_a_row > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failing = status();
    assert!(failing.last_error.as_deref().unwrap_or("").contains("endpoints.toml:2:"), "{failing:?}");
    assert_eq!(failing.last_success, None);
    assert!(pool.endpoints().is_empty());

    let server = Backend::start("files", Duration::ZERO).await;
    std::fs::write(&file, format!("[[endpoints]]\naddress = \"{}\"\n", server.addr)).unwrap();
    for _ in 0..250 {
        if !pool.endpoints().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = status();
    assert_eq!(recovered.errors_in_a_row, 0, "{recovered:?}");
    assert!(recovered.last_success.is_some());
    assert_eq!(pool.get("/").send().await.unwrap().status(), 200);
    let _ = std::fs::remove_dir_all(&dir);
}
