//! `worker_threads = 2`: two threads accept on the same address, each with
//! its own pooled endpoint connections.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Backend, config, get, proxy};
use http::StatusCode;

#[tokio::test]
async fn two_workers_share_the_listener_and_keep_their_own_pools() {
    let backend = Backend::named("a").await;
    let text = format!("[global]\nworker_threads = 2\n{}", config("round_robin", &[(backend.addr, 1)], ""));
    let proxy = proxy(&text).await;
    let address = proxy.listen_addresses()[0];
    // One request per new client connection, one at a time: each worker
    // reuses its own single pooled connection, so the backend sees exactly
    // one connection per worker that served.
    for _ in 0..40 {
        assert_eq!(get(address, "/", &[]).await, (StatusCode::OK, "a".to_string()));
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 40);
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        2,
        "both workers accepted client connections (40 connections all on one: 1 in 2^39)"
    );
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown()).await.expect("both workers stop");
    assert!(tokio::net::TcpStream::connect(address).await.is_err(), "every worker closed its socket");
    backend.kill().await;
}
