//! Each header rule, observed at a real backend that echoes what it received.

mod common;

use std::collections::BTreeMap;

use common::{Backend, TestBody, config, full, get, proxy};
use http::{Request, Response};
use hyper::body::Incoming;

/// Answers with the request headers it saw, one `name: value` per line, sorted.
async fn echo_headers(req: Request<Incoming>) -> Response<TestBody> {
    let mut lines: Vec<String> =
        req.headers().iter().map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("?"))).collect();
    lines.sort();
    let mut response = Response::new(full(lines.join("\n")));
    // Hop-by-hop headers from the backend must not reach the client.
    response.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
    response.headers_mut().insert("connection", "x-internal".parse().unwrap());
    response.headers_mut().insert("x-internal", "secret".parse().unwrap());
    response
}

fn parse(body: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in body.lines() {
        let (k, v) = line.split_once(": ").unwrap();
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    map
}

async fn seen_with(upstream_extra: &str, headers: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    let backend = Backend::start(echo_headers).await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], upstream_extra)).await;
    let (status, body) = get(proxy.listen_addresses()[0], "/path?q=1", headers).await;
    assert_eq!(status, 200);
    proxy.shutdown().await;
    backend.kill().await;
    parse(&body)
}

async fn seen_from(
    trusted: &str,
    upstream_extra: &str,
    headers: &[(&str, &str)],
) -> BTreeMap<String, Vec<String>> {
    let backend = Backend::start(echo_headers).await;
    let text = format!(
        "[global]\ntrusted_proxies = [{trusted}]\n{}",
        config("round_robin", &[(backend.addr, 1)], upstream_extra)
    );
    let proxy = proxy(&text).await;
    let (status, body) = get(proxy.listen_addresses()[0], "/path?q=1", headers).await;
    assert_eq!(status, 200);
    proxy.shutdown().await;
    backend.kill().await;
    parse(&body)
}

#[tokio::test]
async fn forwarding_headers_describe_this_hop_and_trust_no_one_by_default() {
    let spoofed = [
        ("host", "shop.example"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "evil"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=evil;host=evil"),
        // A hop-by-hop listing cannot remove what the proxy vouches for.
        ("connection", "host, x-forwarded-host, content-length"),
    ];
    let seen = seen_with("", &spoofed).await;
    assert_eq!(seen["x-forwarded-for"], ["127.0.0.1"], "replaced, not appended to");
    assert_eq!(seen["x-forwarded-proto"], ["http"]);
    assert_eq!(seen["x-forwarded-host"], ["shop.example"]);
    assert_eq!(seen["host"], ["shop.example"]);
    assert!(!seen.contains_key("forwarded"), "an untrusted Forwarded is dropped; ours is opt-in: {seen:?}");
    let seen = seen_with("forwarded_header = true", &spoofed).await;
    assert_eq!(seen["forwarded"], ["for=127.0.0.1;proto=http;host=shop.example"]);
}

#[tokio::test]
async fn a_trusted_proxy_extends_the_chain() {
    let from_proxy =
        [("host", "shop.example"), ("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")];
    let seen = seen_from("\"127.0.0.0/8\"", "forwarded_header = true", &from_proxy).await;
    assert_eq!(seen["x-forwarded-for"], ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(seen["x-forwarded-proto"], ["https"], "the real scheme, as the trusted hop saw it");
    assert_eq!(seen["x-forwarded-host"], ["shop.example"]);
    assert_eq!(seen["forwarded"], ["for=127.0.0.1;proto=http;host=shop.example"]);
}

#[tokio::test]
async fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
    let seen = seen_with(
        "",
        &[
            ("connection", "keep-alive, x-trace-hop"),
            ("x-trace-hop", "1"),
            ("keep-alive", "timeout=9"),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;
    for gone in ["connection", "x-trace-hop", "keep-alive", "te", "transfer-encoding", "upgrade"] {
        assert!(!seen.contains_key(gone), "{gone} reached the backend: {seen:?}");
    }
    assert_eq!(seen["x-end-to-end"], ["kept"]);
}

#[tokio::test]
async fn hop_by_hop_headers_from_the_backend_do_not_reach_the_client() {
    let backend = Backend::start(echo_headers).await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let req = Request::get(format!("http://{}/", proxy.listen_addresses()[0])).body(full("")).unwrap();
    let response = common::client().request(req).await.unwrap();
    assert!(response.headers().get("keep-alive").is_none());
    assert!(response.headers().get("x-internal").is_none(), "named in the backend's Connection header");
    assert!(response.headers().get("x-request-id").is_some(), "the request id is echoed to the client");
    proxy.shutdown().await;
    backend.kill().await;
}

#[tokio::test]
async fn host_is_preserved_rewritten_or_set() {
    let backend = Backend::start(echo_headers).await;
    let addr = backend.addr;
    let preserved = seen_with("", &[("host", "shop.example")]).await;
    assert_eq!(preserved["host"], ["shop.example"]);
    let proxy_cfg = config("round_robin", &[(addr, 1)], "host_header = \"endpoint\"");
    let p = proxy(&proxy_cfg).await;
    let (_, body) = get(p.listen_addresses()[0], "/", &[("host", "shop.example")]).await;
    assert_eq!(parse(&body)["host"], [addr.to_string()]);
    p.shutdown().await;
    backend.kill().await;
    let set = seen_with("host_header = { set = \"internal.example\" }", &[("host", "shop.example")]).await;
    assert_eq!(set["host"], ["internal.example"]);
}

#[tokio::test]
async fn request_ids_are_propagated_or_generated() {
    let kept = seen_with("", &[("x-request-id", "trace-42")]).await;
    assert_eq!(kept["x-request-id"], ["trace-42"]);
    let made = seen_with("", &[]).await;
    assert_eq!(made["x-request-id"][0].len(), 33, "{made:?}");
}
