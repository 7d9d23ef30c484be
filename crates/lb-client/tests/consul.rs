//! The reqwest pool discovering its endpoints from Consul, end to end:
//! `lb_consul::HealthWatch` as the pool's source, against the CONTRACT FAKE
//! `lb_consul::testing::FakeConsul` (NOT Consul: a scripted server that keeps
//! Consul's documented HTTP API), with real loopback HTTP backends registered
//! in it as instances of the service `web`.
//!
//! Every wait is bounded in tries and in time, and fails the test when the
//! awaited answer never comes.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::Pool;
use lb_consul::testing::{FakeConsul, Instance};
use lb_consul::{ConsulClient, ConsulConfig, HealthWatch, Registration};
use support::http::Backend;

/// Most requests one bounded poll sends.
const TRIES: usize = 250;
/// The pause between two tries of a poll whose condition does not hold yet.
const PAUSE: Duration = Duration::from_millis(20);
/// The longest any poll may take, whatever its tries.
const POLL_LIMIT: Duration = Duration::from_secs(15);
/// Answers in a row from the same endpoint that say the other one is out
/// (round robin over two endpoints would alternate).
const IN_A_ROW: usize = 4;

/// Who answered one request to the service: the backend's name, or what went wrong.
async fn answer(pool: &Pool<Algorithm>) -> String {
    match pool.get("http://web/").send().await {
        Ok(response) if response.status() == 200 => {
            let body = response.text().await.unwrap_or_default();
            body.split_whitespace().next().unwrap_or_default().to_string()
        }
        Ok(response) => format!("status {}", response.status()),
        Err(error) => format!("error: {error}"),
    }
}

/// Sends requests (at most [`TRIES`], [`PAUSE`] apart, within [`POLL_LIMIT`])
/// until `done` holds for the answers so far; fails the test with them otherwise.
async fn poll(pool: &Pool<Algorithm>, what: &str, mut done: impl FnMut(&[String]) -> bool) {
    let mut answers = Vec::new();
    let polled = tokio::time::timeout(POLL_LIMIT, async {
        for _ in 0..TRIES {
            answers.push(answer(pool).await);
            if done(&answers) {
                return true;
            }
            tokio::time::sleep(PAUSE).await;
        }
        false
    })
    .await;
    let last = &answers[answers.len().saturating_sub(20)..];
    assert!(
        matches!(polled, Ok(true)),
        "{what}: not within {TRIES} requests or {POLL_LIMIT:?}; {} answers, the last: {last:?}",
        answers.len()
    );
}

/// Who answered `n` requests sent one after the other, counted by name.
async fn spread(pool: &Pool<Algorithm>, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(answer(pool).await).or_insert(0) += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(name, n)| (name.to_string(), *n)).collect()
}

/// The pool's endpoint addresses, sorted.
fn addresses(pool: &Pool<Algorithm>) -> Vec<String> {
    let mut all: Vec<String> = pool.endpoints().iter().map(|(e, _)| e.address().to_string()).collect();
    all.sort();
    all
}

fn sorted(addresses: &[&Backend]) -> Vec<String> {
    let mut all: Vec<String> = addresses.iter().map(|b| b.addr.to_string()).collect();
    all.sort();
    all
}

#[tokio::test]
async fn the_pool_follows_consul_instances_going_critical_and_new_ones_registering() {
    let a = Backend::start("a", Duration::ZERO).await;
    let b = Backend::start("b", Duration::ZERO).await;
    let c = Backend::start("c", Duration::ZERO).await;
    let fake = FakeConsul::start().await;
    // Instances on their own nodes at 127.0.0.1 (the node's address), passing.
    fake.put(Instance::passing("node-a", "web-a", "web", a.addr.port()));
    fake.put(Instance::passing("node-b", "web-b", "web", b.addr.port()));
    fake.put(Instance::passing("node-x", "db-1", "db", c.addr.port()));

    let consul = ConsulClient::new(ConsulConfig::new(&fake.url()).unwrap()).unwrap();
    let watch = HealthWatch::new(consul.clone(), "web")
        .wait(Duration::from_secs(5))
        .min_interval(Duration::from_millis(10));
    let pool = Pool::builder("web", Algorithm::RoundRobin).source(watch).build().unwrap();

    // Traffic reaches both instances (and only them: `db` is another service).
    poll(&pool, "both instances answer", |seen| {
        seen.iter().any(|s| s == "a") && seen.iter().any(|s| s == "b")
    })
    .await;
    assert_eq!(addresses(&pool), sorted(&[&a, &b]));
    assert_eq!(spread(&pool, 20).await, counts(&[("a", 10), ("b", 10)]), "round robin over both");

    // web-a's service check goes critical: it leaves, though its server still answers.
    fake.set_check("node-a", "web-a", "service:web-a", "critical");
    poll(&pool, "only b answers once web-a is critical", |seen| {
        seen.len() >= IN_A_ROW && seen[seen.len() - IN_A_ROW..].iter().all(|s| s == "b")
    })
    .await;
    let a_hits = a.hits();
    assert_eq!(spread(&pool, 20).await, counts(&[("b", 20)]));
    assert_eq!(a.hits(), a_hits, "the critical instance gets no request");
    assert_eq!(addresses(&pool), sorted(&[&b]));

    // A new instance registers itself through the agent API (no check: passing at once).
    consul.register(&Registration::new("web-c", "web", c.addr.port()).address("127.0.0.1")).await.unwrap();
    assert!(fake.instance("fake-node", "web-c").is_some(), "registered in the fake");
    poll(&pool, "the new instance answers", |seen| seen.iter().any(|s| s == "c")).await;
    assert_eq!(addresses(&pool), sorted(&[&b, &c]));
    assert_eq!(spread(&pool, 20).await, counts(&[("b", 10), ("c", 10)]), "round robin over b and c");
    assert_eq!(a.hits(), a_hits, "web-a is still out");

    // The watch asked Consul's health endpoint for `web` with blocking queries.
    let requests = fake.requests();
    assert!(requests.iter().any(|r| r.path == "/v1/health/service/web" && r.index.is_some()), "{requests:?}");
}
