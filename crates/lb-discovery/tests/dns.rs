//! The DNS source against a real `dnsmasq` on 127.0.0.1 at an ephemeral port.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lb_core::{Change, Endpoint};
use lb_discovery::testing::Dnsmasq;
use lb_discovery::{ChangeStream, DnsConfig, DnsError, DnsQuery, DnsSource, Source, changes};

const WAIT: Duration = Duration::from_secs(8);

fn config() -> DnsConfig {
    DnsConfig {
        min_ttl: Duration::from_millis(200),
        max_ttl: Duration::from_secs(1),
        retry_after: Duration::from_millis(100),
        query_timeout: Duration::from_millis(500),
    }
}

fn source(server: SocketAddr, query: DnsQuery) -> DnsSource {
    DnsSource::with_name_servers(query, &[server], config()).unwrap()
}

/// Waits (bounded) for the next change, then takes those queued with it.
async fn next_batch(stream: &mut ChangeStream) -> Vec<Change> {
    let first =
        tokio::time::timeout(WAIT, stream.next()).await.expect("an event in time").expect("a live stream");
    let mut batch = vec![first];
    while let Some(Some(change)) = stream.next().now_or_never() {
        batch.push(change);
    }
    batch
}

fn host(ip: &str, port: u16) -> Endpoint {
    Endpoint::new(SocketAddr::new(ip.parse().unwrap(), port)).with_meta("dns.name", "web.test.")
}

fn srv(ip: &str, port: u16, weight: u32, target: &str) -> Endpoint {
    Endpoint::new(SocketAddr::new(ip.parse().unwrap(), port))
        .with_weight(weight)
        .with_meta("dns.name", "_http._tcp.web.test.")
        .with_meta("dns.target", target)
        .with_meta("dns.priority", "10")
}

const FIRST: &[&str] = &[
    // Names under .test that are not listed get NXDOMAIN instead of REFUSED.
    "--local=/test/",
    "--host-record=web.test,127.0.0.11",
    "--host-record=web.test,127.0.0.12",
    "--host-record=a.web.test,127.0.0.21",
    "--host-record=b.web.test,127.0.0.22",
    "--host-record=c.web.test,127.0.0.23",
    "--srv-host=_http._tcp.web.test,a.web.test,8080,10,5",
    "--srv-host=_http._tcp.web.test,b.web.test,8081,10,1",
    // A backup at a worse priority: not used while priority 10 has targets.
    "--srv-host=_http._tcp.web.test,c.web.test,9000,20,1",
];

const SECOND: &[&str] = &[
    "--local=/test/",
    "--host-record=web.test,127.0.0.12",
    "--host-record=web.test,127.0.0.13",
    "--host-record=a.web.test,127.0.0.21",
    "--host-record=d.web.test,127.0.0.24",
    "--srv-host=_http._tcp.web.test,a.web.test,8080,10,7",
    "--srv-host=_http._tcp.web.test,d.web.test,8082,10,2",
];

#[tokio::test]
async fn records_resolve_and_a_changed_server_emits_the_diff() {
    let mut dnsmasq = Dnsmasq::start(FIRST);
    let server = dnsmasq.addr();
    let mut hosts = changes(source(server, DnsQuery::Host { name: "web.test.".into(), port: 80 }));
    let mut services = changes(source(server, DnsQuery::Srv { name: "_http._tcp.web.test.".into() }));

    // The first rounds may race dnsmasq's start; failed rounds retry and emit nothing.
    assert_eq!(
        next_batch(&mut hosts).await,
        [Change::Snapshot(vec![host("127.0.0.11", 80), host("127.0.0.12", 80)])]
    );
    let first = next_batch(&mut services).await;
    assert_eq!(
        first,
        [Change::Snapshot(vec![
            srv("127.0.0.21", 8080, 5, "a.web.test."),
            srv("127.0.0.22", 8081, 1, "b.web.test.")
        ])]
    );

    let port = dnsmasq.port();
    drop(dnsmasq);
    dnsmasq = Dnsmasq::start_on(port, SECOND);

    assert_eq!(
        next_batch(&mut hosts).await,
        [Change::Remove(host("127.0.0.11", 80).id().clone()), Change::Add(host("127.0.0.13", 80))]
    );
    assert_eq!(
        next_batch(&mut services).await,
        [
            Change::Remove(srv("127.0.0.22", 8081, 1, "b.web.test.").id().clone()),
            Change::Update(srv("127.0.0.21", 8080, 7, "a.web.test.")),
            Change::Add(srv("127.0.0.24", 8082, 2, "d.web.test.")),
        ]
    );
    drop(dnsmasq);
}

#[test]
fn an_empty_server_list_is_refused() {
    let query = DnsQuery::Host { name: "web.test.".into(), port: 80 };
    let err = DnsSource::with_name_servers(query, &[], config()).unwrap_err();
    assert!(matches!(err, DnsError::NoNameServers), "{err}");
}

#[tokio::test]
async fn a_dead_server_fails_the_round_and_an_unknown_name_is_an_error() {
    let dnsmasq = Dnsmasq::start(FIRST);
    let server = dnsmasq.addr();
    let mut unknown = source(server, DnsQuery::Host { name: "nope.test.".into(), port: 80 });
    // Bounded retry while dnsmasq starts: until it answers, the error is a timeout or refusal.
    let mut answered = None;
    for _ in 0..40 {
        match unknown.next_list().await.expect("a round") {
            Err(DnsError::Lookup { source, .. }) if source.is_nx_domain() || source.is_no_records_found() => {
                answered = Some(source);
                break;
            }
            other => {
                assert!(other.is_err(), "an unknown name never resolves: {other:?}");
                eprintln!("not yet NXDOMAIN: {other:?}");
            }
        }
    }
    assert!(answered.is_some(), "dnsmasq answered NXDOMAIN within 40 rounds");
    drop(dnsmasq);

    let mut dead = source(server, DnsQuery::Host { name: "web.test.".into(), port: 80 });
    let err = tokio::time::timeout(WAIT, dead.next_list()).await.unwrap().unwrap().unwrap_err();
    assert!(err.to_string().starts_with("DNS lookup of web.test. failed"), "{err}");
}
