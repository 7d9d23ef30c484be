//! The proxy discovering an upstream from Consul, end to end: a proxy started
//! from TOML with `discovery.consul = { service, address }`, against the
//! CONTRACT FAKE `lb_consul::testing::FakeConsul` (NOT Consul: a scripted
//! server that keeps Consul's documented HTTP API), with real loopback HTTP
//! backends registered in it as instances of the service `web`.
//!
//! Every wait is bounded in tries and in time, and fails the test when the
//! awaited answer never comes.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Backend, get};
use http::StatusCode;
use lb_consul::testing::{FakeConsul, Instance};
use lb_consul::{ConsulClient, ConsulConfig, Registration};

/// Most requests one bounded poll sends.
const TRIES: usize = 250;
/// The pause between two tries of a poll whose condition does not hold yet.
const PAUSE: Duration = Duration::from_millis(20);
/// The longest any poll may take, whatever its tries.
const POLL_LIMIT: Duration = Duration::from_secs(20);
/// Answers in a row from the same endpoint that say the other one is out
/// (round robin over two endpoints would alternate).
const IN_A_ROW: usize = 4;

/// Who answered one request through the proxy: the backend's name, or the status.
async fn answer(proxy: SocketAddr) -> String {
    match get(proxy, "/", &[]).await {
        (StatusCode::OK, body) => body,
        (status, body) => format!("status {status}: {body}"),
    }
}

/// Sends requests (at most [`TRIES`], [`PAUSE`] apart, within [`POLL_LIMIT`])
/// until `done` holds for the answers so far; fails the test with them otherwise.
async fn poll(proxy: SocketAddr, what: &str, mut done: impl FnMut(&[String]) -> bool) {
    let mut answers = Vec::new();
    let polled = tokio::time::timeout(POLL_LIMIT, async {
        for _ in 0..TRIES {
            answers.push(answer(proxy).await);
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
async fn spread(proxy: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(answer(proxy).await).or_insert(0) += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(name, n)| (name.to_string(), *n)).collect()
}

/// The upstream's endpoint addresses, sorted.
fn addresses(proxy: &lb_proxy::RunningProxy) -> Vec<String> {
    let mut all: Vec<String> = proxy.endpoint_status("web").into_iter().map(|(address, _)| address).collect();
    all.sort();
    all
}

fn sorted(backends: &[&Backend]) -> Vec<String> {
    let mut all: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    all.sort();
    all
}

#[tokio::test]
async fn the_proxy_follows_consul_instances_going_critical_and_new_ones_registering() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let c = Backend::named("c").await;
    let fake = FakeConsul::start().await;
    // Instances on their own nodes at 127.0.0.1 (the node's address), passing.
    fake.put(Instance::passing("node-a", "web-a", "web", a.addr.port()));
    fake.put(Instance::passing("node-b", "web-b", "web", b.addr.port()));
    fake.put(Instance::passing("node-x", "db-1", "db", c.addr.port()));

    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
listen = "127.0.0.1:0"

[[routes]]
upstream = "web"

[upstreams.web]
algorithm = "round_robin"
discovery.consul = {{ service = "web", address = "{}" }}
"#,
        fake.url()
    );
    let proxy = common::proxy(&config).await;
    let addr = proxy.listen_addresses()[0];

    // Traffic reaches both instances (and only them: `db` is another service).
    poll(addr, "both instances answer", |seen| {
        seen.iter().any(|s| s == "a") && seen.iter().any(|s| s == "b")
    })
    .await;
    assert_eq!(addresses(&proxy), sorted(&[&a, &b]));
    assert_eq!(spread(addr, 20).await, counts(&[("a", 10), ("b", 10)]), "round robin over both");

    // web-a's service check goes critical: it leaves, though its server still answers.
    fake.set_check("node-a", "web-a", "service:web-a", "critical");
    poll(addr, "only b answers once web-a is critical", |seen| {
        seen.len() >= IN_A_ROW && seen[seen.len() - IN_A_ROW..].iter().all(|s| s == "b")
    })
    .await;
    let a_requests = a.requests.load(Ordering::SeqCst);
    assert_eq!(spread(addr, 20).await, counts(&[("b", 20)]));
    assert_eq!(a.requests.load(Ordering::SeqCst), a_requests, "the critical instance gets no request");
    assert_eq!(addresses(&proxy), sorted(&[&b]));

    // A new instance registers itself through the agent API (no check: passing at once).
    let consul = ConsulClient::new(ConsulConfig::new(&fake.url()).unwrap()).unwrap();
    consul.register(&Registration::new("web-c", "web", c.addr.port()).address("127.0.0.1")).await.unwrap();
    assert!(fake.instance("fake-node", "web-c").is_some(), "registered in the fake");
    poll(addr, "the new instance answers", |seen| seen.iter().any(|s| s == "c")).await;
    assert_eq!(addresses(&proxy), sorted(&[&b, &c]));
    assert_eq!(spread(addr, 20).await, counts(&[("b", 10), ("c", 10)]), "round robin over b and c");
    assert_eq!(a.requests.load(Ordering::SeqCst), a_requests, "web-a is still out");

    // The proxy watched Consul's health endpoint for `web` with blocking queries.
    let requests = fake.requests();
    assert!(requests.iter().any(|r| r.path == "/v1/health/service/web" && r.index.is_some()), "{requests:?}");

    proxy.shutdown().await;
    a.kill().await;
    b.kill().await;
    c.kill().await;
}

/// An `https://` agent with `verify_incoming`: the `tls` table's CA file,
/// server name and client certificate (paths relative to the config file)
/// get the proxy in; a config whose client key is missing fails to start
/// and names the file.
#[tokio::test]
async fn the_proxy_reaches_an_https_agent_with_the_tls_table() {
    let a = Backend::named("a").await;
    let pki = lb_tls::testing::TestPki::new(&["server.dc1.consul"]);
    let fake = FakeConsul::start_tls(pki.server_config(true, &[b"http/1.1"])).await;
    fake.put(Instance::passing("node-a", "web-a", "web", a.addr.port()));

    let config = |client_key: &str| {
        format!(
            r#"
[admin]
enabled = false

[[listeners]]
listen = "127.0.0.1:0"

[[routes]]
upstream = "web"

[upstreams.web]
algorithm = "round_robin"
discovery.consul = {{ service = "web", address = "{}", tls = {{ ca_file = "ca.pem", server_name = "server.dc1.consul", client_cert = "client.pem", client_key = "{client_key}" }} }}
"#,
            fake.url()
        )
    };
    let path = pki.dir().join("lb.toml");
    std::fs::write(&path, config("client.key")).unwrap();
    let loaded = lb_proxy::Config::load(&path).unwrap();
    let proxy = lb_proxy::Proxy::new(loaded).start().await.unwrap();
    poll(proxy.listen_addresses()[0], "the instance answers", |seen| seen.iter().any(|s| s == "a")).await;
    proxy.shutdown().await;

    std::fs::write(&path, config("missing.key")).unwrap();
    let Err(err) = lb_proxy::Proxy::new(lb_proxy::Config::load(&path).unwrap()).start().await else {
        panic!("no client key, no start");
    };
    let missing = pki.dir().join("missing.key");
    assert!(err.to_string().contains(&format!("{}: No such file", missing.display())), "{err}");
}
