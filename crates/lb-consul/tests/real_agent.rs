//! Against a real Consul agent, when one is configured. Ignored by default:
//! no agent can be installed on the CI machines.
//!
//! Run with `CONSUL_HTTP_ADDR=127.0.0.1:8500 cargo test -p lb-consul --test real_agent -- --ignored`
//! (and `CONSUL_HTTP_TOKEN` when ACLs are on).

use std::convert::Infallible;
use std::time::Duration;

use futures_util::StreamExt;
use lb_consul::{ConsulClient, HealthWatch, HttpCheck, Registration};
use lb_core::Change;

#[tokio::test]
#[ignore = "needs a real Consul agent: set CONSUL_HTTP_ADDR"]
async fn registers_watches_and_deregisters_on_a_real_agent() {
    if std::env::var_os("CONSUL_HTTP_ADDR").is_none() {
        eprintln!("skipped: CONSUL_HTTP_ADDR is not set, so there is no Consul agent to talk to");
        return;
    }
    // A local health endpoint for the agent's HTTP check to call.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let ok = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
                        "ok",
                    ))))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, ok).await;
            });
        }
    });

    let client = ConsulClient::from_env().unwrap();
    let service = format!("lb-consul-test-{port}");
    let registration = Registration::new(format!("{service}-1"), &service, port).address("127.0.0.1").check(
        HttpCheck::new(
            format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .deregister_critical_after(Duration::from_secs(60)),
    );
    let guard = client.register_guarded(&registration).await.unwrap();
    let mut stream = lb_discovery::changes(
        HealthWatch::new(client, &service)
            .wait(Duration::from_secs(2))
            .min_interval(Duration::from_millis(100)),
    );
    let appeared = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(change) = stream.next().await {
            match change {
                Change::Snapshot(all) if !all.is_empty() => return all[0].address().port(),
                Change::Add(endpoint) => return endpoint.address().port(),
                _ => {}
            }
        }
        panic!("the stream ended");
    })
    .await
    .expect("the instance passes its check within 30 s");
    assert_eq!(appeared, port);

    guard.deregister().await.unwrap();
    let removed = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.expect("removal seen");
    assert!(matches!(removed, Some(Change::Remove(_))), "{removed:?}");
}
