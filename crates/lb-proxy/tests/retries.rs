//! Retry rules: which failures and methods go again, and the replay limit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Backend, config, full, get, proxy};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

async fn failing(status: StatusCode, calls: Arc<AtomicUsize>) -> Backend {
    Backend::start(move |req: Request<hyper::body::Incoming>| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let _ = req.into_body().collect().await;
            let mut r = Response::new(full("failing"));
            *r.status_mut() = status;
            r
        }
    })
    .await
}

async fn post(addr: std::net::SocketAddr, body: String) -> (StatusCode, String) {
    let req = Request::post(format!("http://{addr}/")).body(full(body)).unwrap();
    let resp = common::client().request(req).await.unwrap();
    let status = resp.status();
    (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

#[tokio::test]
async fn a_gateway_error_is_retried_on_another_endpoint_for_idempotent_methods_only() {
    let calls = Arc::new(AtomicUsize::new(0));
    let bad = failing(StatusCode::SERVICE_UNAVAILABLE, Arc::clone(&calls)).await;
    let good = Backend::start(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("good got {} bytes", body.len())))
    })
    .await;
    let extra = "[upstreams.web.retry]\nattempts = 2\nretry_on = [\"gateway_error\"]";
    let proxy = proxy(&config("round_robin", &[(bad.addr, 1), (good.addr, 1)], extra)).await;
    let addr = proxy.listen_addresses()[0];
    // Round robin starts on the first endpoint in id order; send two to cover both orders.
    for _ in 0..2 {
        assert_eq!(get(addr, "/", &[]).await, (StatusCode::OK, "good got 0 bytes".to_string()));
    }
    let before = calls.load(Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(post(addr, "payload".to_string()).await.0);
    }
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "a POST is not retried after a 503: {statuses:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst) - before, 1, "the failing endpoint saw the POST once");
    let metrics = common::metrics(proxy.admin_address().unwrap()).await;
    assert!(metrics.contains("retries_total{upstream=\"web\"}"), "{metrics}");
    proxy.shutdown().await;
    bad.kill().await;
    good.kill().await;
}

#[tokio::test]
async fn a_body_within_the_replay_buffer_is_replayed_and_a_bigger_one_is_not_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let bad = failing(StatusCode::BAD_GATEWAY, Arc::clone(&calls)).await;
    let good = Backend::start(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("good got {} bytes", body.len())))
    })
    .await;
    let extra = "[upstreams.web.retry]\nattempts = 2\nretry_on = [\"gateway_error\"]\nnon_idempotent = true";
    let text = config("round_robin", &[(bad.addr, 1), (good.addr, 1)], extra).replacen(
        "[admin]",
        "[global]\nreplay_buffer_bytes = 1024\n[admin]",
        1,
    );
    let proxy = proxy(&text).await;
    let addr = proxy.listen_addresses()[0];
    let small: Vec<_> = futures_util::future::join_all((0..2).map(|_| post(addr, "s".repeat(1000)))).await;
    assert!(small.iter().all(|r| *r == (StatusCode::OK, "good got 1000 bytes".to_string())), "{small:?}");
    let big: Vec<_> = futures_util::future::join_all((0..2).map(|_| post(addr, "b".repeat(4000)))).await;
    assert!(
        big.iter().any(|r| r.0 == StatusCode::BAD_GATEWAY),
        "a body past the buffer is not retried: {big:?}"
    );
    assert!(big.iter().any(|r| *r == (StatusCode::OK, "good got 4000 bytes".to_string())), "{big:?}");
    assert!(proxy.replay_peak_bytes() <= 1024);
    proxy.shutdown().await;
    bad.kill().await;
    good.kill().await;
}
