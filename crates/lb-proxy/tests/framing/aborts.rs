//! F. A client that stops mid-upload: its request is never completed at an
//! endpoint, never retried, not charged to the endpoint, and counts as 499.

use super::common;
use super::raw::*;
use tokio::io::AsyncWriteExt;

/// `request_errors_total` of `backend`, summed over error types, from a `/metrics` page.
fn errors_total(metrics: &str, backend: std::net::SocketAddr) -> u64 {
    let backend = format!("backend=\"{backend}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("request_errors_total{") && l.contains(&backend))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Sends `head` and `part` of a body, waits until a backend has the part,
/// then hangs up, and checks what each backend saw.
async fn abort_upload(head: &str, part: &[u8]) {
    let a = RawBackend::start(echo).await;
    let b = RawBackend::start(echo).await;
    let extra = "retry.attempts = 3\nretry.retry_on = [\"connect_error\", \"reset\", \"timeout\"]\n\
                 retry.non_idempotent = true";
    let text = common::config("round_robin", &[(a.addr, 1), (b.addr, 1)], extra);
    let proxy = common::proxy(&text).await;
    let admin = proxy.admin_address().unwrap();
    let mut client = connect(proxy.listen_addresses()[0]).await;
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(part).await.unwrap();
    let tail = &part[part.len() - 5..];
    let got_it = |s: &State| s.conns.iter().any(|c| find(&c.bytes, tail).is_some());
    // Round robin starts anywhere: whichever backend gets it first.
    let in_a = tokio::select! {
        got = a.wait(got_it) => got,
        got = b.wait(got_it) => { assert!(got, "a backend got the upload's start"); false }
    };
    let (first, mut second) = if in_a { (a, b) } else { (b, a) };
    drop(client);
    assert!(first.wait_proxy_conns_closed().await, "the first backend sees the cut");
    for conn in first.proxy_conns() {
        assert!(!conn.bytes.ends_with(b"0\r\n\r\n"), "never completed: {}", show(&conn.bytes));
    }
    assert!(first.requests().is_empty(), "no complete request reached the first backend");
    second.barrier().await;
    assert!(second.proxy_conns().is_empty(), "not retried on the second backend");
    let shows = |needle: String| async move { common::admin_page_shows(admin, "/metrics", &needle).await };
    assert!(
        shows(format!("requests_total{{upstream=\"web\",backend=\"{}\",status=\"499\"}} 1", first.addr))
            .await,
        "counted as 499"
    );
    assert_eq!(errors_total(&common::metrics(admin).await, first.addr), 0, "not the endpoint's error");
    let status = proxy.endpoint_status("web");
    assert!(status.iter().all(|(_, s)| *s == lb_core::HealthStatus::Healthy), "{status:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_chunked_upload_the_client_abandons_is_cut_and_not_retried() {
    let head = "PUT /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    abort_upload(head, b"5\r\nhello\r\n").await;
}

#[tokio::test]
async fn a_content_length_upload_the_client_abandons_is_cut_and_not_retried() {
    let head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
    abort_upload(head, b"hello").await;
}
