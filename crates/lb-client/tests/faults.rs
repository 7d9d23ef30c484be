//! The client side under the reliability suite's faults (docs/reliability.md):
//! an endpoint killed mid-traffic, an endpoint that hangs, a DNS record
//! removed mid-traffic. Idempotent calls never fail, and retries stay within
//! the retry budget (20 % of requests plus 10 per second).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb_algorithms::Algorithm;
use lb_client::Pool;
use lb_client::grpc::BalancedChannel;
use lb_discovery::testing::Dnsmasq;
use lb_discovery::{DnsConfig, DnsQuery, DnsSource};
use lb_health::RetryPolicy;
use support::endpoint;
use support::grpc::GrpcBackend;
use support::grpc::echo::SayRequest;
use support::grpc::echo::echo_client::EchoClient;
use support::http::Backend;

const CALLS: usize = 600;
const WORKERS: usize = 6;

/// Runs [`CALLS`] GETs from [`WORKERS`] tasks, calling `midway` once after a
/// third of them; how many failed (an error or a status other than 200).
async fn traffic(pool: &Pool<Algorithm>, midway: impl FnOnce()) -> usize {
    let half = |pool: &Pool<Algorithm>, calls: usize| {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..WORKERS {
            let pool = pool.clone();
            tasks.spawn(async move {
                let mut failed = 0;
                for i in 0..calls / WORKERS {
                    let answer = pool.get(&format!("/call/{worker}/{i}")).send().await;
                    failed += usize::from(!answer.is_ok_and(|r| r.status() == 200));
                }
                failed
            });
        }
        tasks
    };
    let mut failed = 0;
    let mut first = half(pool, CALLS / 3);
    while let Some(done) = first.join_next().await {
        failed += done.expect("a worker");
    }
    midway();
    let mut rest = half(pool, CALLS - CALLS / 3);
    while let Some(done) = rest.join_next().await {
        failed += done.expect("a worker");
    }
    failed
}

async fn backends(n: usize) -> Vec<Backend> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(Backend::start(&format!("b{i}"), Duration::ZERO).await);
    }
    all
}

/// The budget's bound on retries for `requests` requests made within `seconds`.
fn budget(requests: usize, seconds: f64) -> f64 {
    requests as f64 * 0.2 + 10.0 * seconds.max(10.0)
}

#[test]
fn an_endpoint_killed_mid_traffic_fails_no_idempotent_call() {
    support::metrics::run(false, |recorded| async move {
        let servers = backends(3).await;
        let pool = Pool::builder("killed", Algorithm::RoundRobin)
            .endpoints(servers.iter().map(|b| endpoint(b.addr)))
            .build()
            .unwrap();
        let started = Instant::now();
        let failed = traffic(&pool, || servers[0].stop()).await;
        assert_eq!(failed, 0, "{failed} of {CALLS} calls failed");
        let retries = recorded.scrape().counter("retries_total", &[("upstream", "killed")]);
        assert!(retries >= 1.0, "calls met the dead endpoint and were retried");
        assert!(retries <= budget(CALLS, started.elapsed().as_secs_f64()), "{retries} retries");
    });
}

#[test]
fn a_hung_endpoint_costs_a_per_try_timeout_not_a_failure() {
    support::metrics::run(false, |recorded| async move {
        let servers = backends(3).await;
        servers[0].hold_until(u64::MAX); // Reads every request, answers none.
        let per_try = Duration::from_millis(100);
        let policy = RetryPolicy { per_try_timeout: Some(per_try), ..RetryPolicy::default() };
        let pool = Pool::builder("hung", Algorithm::RoundRobin)
            .endpoints(servers.iter().map(|b| endpoint(b.addr)))
            .retry(policy)
            .build()
            .unwrap();
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..60 {
            let call = Instant::now();
            let answer = pool.get(&format!("/call/{i}")).send().await.expect("no call fails");
            assert_eq!(answer.status(), 200);
            slowest = slowest.max(call.elapsed());
        }
        // A try that meets the hung endpoint ends at per_try, then one backoff (at most 250 ms).
        assert!(slowest <= per_try + Duration::from_millis(250) + Duration::from_millis(200), "{slowest:?}");
        let m = recorded.scrape();
        let retries = m.counter("retries_total", &[("upstream", "hung")]);
        assert!(retries >= 1.0, "calls met the hung endpoint");
        assert!(retries <= budget(60, started.elapsed().as_secs_f64()), "{retries} retries");
        assert_eq!(servers[1].hits() + servers[2].hits(), 60, "every call answered by a live endpoint");
    });
}

/// Three backends on 127.0.0.31-33 sharing one port, as DNS A records need.
async fn three_on_one_port() -> Vec<Backend> {
    for _ in 0..20 {
        let at = |last: u8, port: u16| SocketAddr::from(([127, 0, 0, last], port));
        let first = Backend::start_on("d1", Duration::ZERO, at(31, 0)).await.expect("bind");
        let port = first.addr.port();
        let second = Backend::start_on("d2", Duration::ZERO, at(32, port)).await;
        let third = Backend::start_on("d3", Duration::ZERO, at(33, port)).await;
        if let (Ok(second), Ok(third)) = (second, third) {
            return vec![first, second, third];
        }
    }
    panic!("no port free on all three addresses after 20 tries");
}

/// Polls (every 20 ms, at most 5 s) until the pool sees `n` endpoints.
async fn sees(pool: &Pool<Algorithm>, n: usize) -> bool {
    for _ in 0..250 {
        if pool.endpoints().len() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_dns_record_removed_mid_traffic_drains_its_endpoint_before_it_goes() {
    let servers = three_on_one_port().await;
    let records = |servers: &[Backend]| -> Vec<String> {
        let mut records = vec!["--local=/test/".to_string()];
        records.extend(servers.iter().map(|s| format!("--host-record=web.test,{}", s.addr.ip())));
        records
    };
    let dns = Dnsmasq::start(&records(&servers));
    let port = dns.port();
    // dnsmasq may still be starting: a failed round is retried soon, not after the default 5 s.
    let config = DnsConfig {
        min_ttl: Duration::from_millis(100),
        retry_after: Duration::from_millis(100),
        ..DnsConfig::default()
    };
    let query = DnsQuery::Host { name: "web.test.".into(), port: servers[0].addr.port() };
    let source = DnsSource::with_name_servers(query, &[dns.addr()], config).unwrap();
    let pool = Pool::builder("dns", Algorithm::RoundRobin).source(source).build().unwrap();
    assert!(sees(&pool, 3).await, "the pool resolved all three");
    let mut dns = Some(dns);
    let failed = traffic(&pool, || {
        // dnsmasq restarted on its port without the third record.
        drop(dns.take());
        dns = Some(Dnsmasq::start_on(port, &records(&servers[..2])));
    })
    .await;
    assert_eq!(failed, 0);
    assert!(sees(&pool, 2).await, "the removed record left the pool");
    let removed_hits = servers[2].hits();
    servers[2].stop();
    let failed = traffic(&pool, || {}).await;
    assert_eq!(failed, 0, "{failed} calls failed after the removed endpoint went away");
    assert_eq!(servers[2].hits(), removed_hits, "the removed endpoint got nothing more");
    drop(dns);
}

#[tokio::test]
async fn a_grpc_endpoint_killed_mid_traffic_fails_no_call() {
    let mut servers =
        [GrpcBackend::start("g0").await, GrpcBackend::start("g1").await, GrpcBackend::start("g2").await];
    let channel = BalancedChannel::round_robin("echo")
        .endpoints(servers.iter().map(|s| endpoint(s.addr)))
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel);
    let mut failed = Vec::new();
    for i in 0..300 {
        if i == 100 {
            servers[0].kill();
        }
        if let Err(status) = client.say(SayRequest { text: format!("{i}") }).await {
            failed.push((i, status.code()));
        }
    }
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert_eq!(servers[1].hits() + servers[2].hits() + servers[0].hits(), 300);
}
