//! The balanced tonic channel against three real tonic servers, with a
//! generated client.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::grpc::BalancedChannel;
use lb_core::{Endpoint, EndpointSet, Timestamp};
use support::grpc::GrpcBackend;
use support::grpc::echo::SayRequest;
use support::grpc::echo::echo_client::EchoClient;

async fn three() -> Vec<GrpcBackend> {
    let mut servers = Vec::new();
    for name in ["g0", "g1", "g2"] {
        servers.push(GrpcBackend::start(name).await);
    }
    servers
}

fn endpoints(servers: &[&GrpcBackend]) -> Vec<Endpoint> {
    servers.iter().map(|s| Endpoint::new(s.addr)).collect()
}

async fn say(
    client: &mut EchoClient<BalancedChannel<Algorithm>>,
    text: &str,
) -> Result<String, tonic::Status> {
    let reply = client.say(SayRequest { text: text.to_string() }).await?.into_inner();
    assert_eq!(reply.text, text);
    Ok(reply.server)
}

#[tokio::test]
async fn round_robin_spreads_calls_evenly() {
    let servers = three().await;
    let channel = BalancedChannel::round_robin("echo")
        .endpoints(endpoints(&servers.iter().collect::<Vec<_>>()))
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel);
    for i in 0..300 {
        say(&mut client, &format!("hello {i}")).await.unwrap();
    }
    let hits: Vec<u64> = servers.iter().map(GrpcBackend::hits).collect();
    assert_eq!(hits, [100, 100, 100]);
}

#[tokio::test]
async fn a_stopped_server_is_never_picked_again_and_no_call_fails() {
    let mut servers = three().await;
    let channel = BalancedChannel::builder("echo", Algorithm::RoundRobin)
        .endpoints(endpoints(&servers.iter().collect::<Vec<_>>()))
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel.clone());
    for _ in 0..30 {
        say(&mut client, "warm").await.unwrap();
    }
    servers[1].stop().await;
    let before = servers[1].hits();
    for i in 0..300 {
        let server = say(&mut client, &format!("after {i}")).await.expect("every call succeeds");
        assert_ne!(server, "g1");
    }
    assert_eq!(servers[1].hits(), before);
    assert_eq!(servers[0].hits() + servers[2].hits(), 20 + 300);
    let dead =
        channel.endpoints().into_iter().find(|(e, _)| e.address().port() == servers[1].addr.port()).unwrap();
    assert!(!dead.1.is_eligible(), "the stopped server is ejected: {:?}", dead.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_come_and_go_while_traffic_runs() {
    let mut servers = three().await;
    let (tx, rx) = tokio::sync::watch::channel(EndpointSet::new(
        endpoints(&[&servers[0], &servers[1]]),
        Timestamp::ZERO,
    ));
    let channel = BalancedChannel::builder("echo", Algorithm::RoundRobin).discovery(rx).build().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let mut client = EchoClient::new(channel.clone());
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        workers.spawn(async move {
            // Bounded: at most 5000 calls per worker, whatever happens.
            for i in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match say(&mut client, &format!("w{w} {i}")).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    let wait_for_calls = |n: u64| {
        let ok = Arc::clone(&ok);
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            // Bounded at 10 s; normally a few milliseconds.
            for _ in 0..5000 {
                if ok.load(Ordering::Relaxed) >= target {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let wait_for_endpoints = |count: usize| {
        let channel = channel.clone();
        async move {
            for _ in 0..5000 {
                if channel.endpoints().len() == count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("discovery never reached {count} endpoints");
        }
    };

    wait_for_calls(100).await;
    tx.send_replace(EndpointSet::new(endpoints(&[&servers[0], &servers[1], &servers[2]]), Timestamp::ZERO));
    wait_for_endpoints(3).await;
    wait_for_calls(200).await;
    assert!(servers[2].hits() > 0, "the added server takes traffic");

    tx.send_replace(EndpointSet::new(endpoints(&[&servers[1], &servers[2]]), Timestamp::ZERO));
    wait_for_endpoints(2).await;
    servers[0].stop().await;
    let removed_hits = servers[0].hits();
    wait_for_calls(200).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed");
    assert_eq!(servers[0].hits(), removed_hits, "the removed server got nothing after it left");
    let total: u64 = servers.iter().map(GrpcBackend::hits).sum();
    assert_eq!(total, ok.load(Ordering::Relaxed));
}

#[tokio::test]
async fn dns_targets_are_checked() {
    let err = BalancedChannel::builder("echo", Algorithm::RoundRobin).dns("echo:50051").unwrap_err();
    assert!(err.to_string().contains("dns://"), "{err}");
    let err = BalancedChannel::builder("echo", Algorithm::RoundRobin).dns("dns:///echo").unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
    let server = GrpcBackend::start("literal").await;
    let channel = BalancedChannel::builder("echo", Algorithm::RoundRobin)
        .dns(&format!("dns:///{}", server.addr))
        .unwrap()
        .build()
        .unwrap();
    let mut client = EchoClient::new(channel);
    assert_eq!(say(&mut client, "hi").await.unwrap(), "literal");
}
