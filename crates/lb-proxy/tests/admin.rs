//! The admin API: `/upstreams/{name}`, `/config` with secrets redacted, the
//! bearer token, the POST actions (drain, undrain, reload) and their switch.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Backend, config, get, proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret-token";

/// One admin request; `(status, body)`.
async fn admin(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(35), stream.read_to_string(&mut text)).await.unwrap().unwrap();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn with_admin(text: &str, lines: &str) -> String {
    text.replace("[admin]\n", &format!("[admin]\n{lines}"))
}

#[tokio::test]
async fn reads_need_the_token_and_show_one_upstream_and_the_redacted_config() {
    let backend = Backend::named("a").await;
    let text =
        with_admin(&config("round_robin", &[(backend.addr, 1)], ""), &format!("token = \"{TOKEN}\"\n"));
    let proxy = proxy(&text).await;
    let addr = proxy.admin_address().unwrap();

    assert_eq!(admin(addr, "GET", "/upstreams/web", None).await.0, 401, "no token");
    assert_eq!(admin(addr, "GET", "/metrics", Some("wrong-token!")).await.0, 401, "a wrong token");
    let (status, body) = admin(addr, "GET", "/upstreams/web", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["endpoints"][0]["address"], backend.addr.to_string());
    assert_eq!(view["endpoints"][0]["status"], "healthy");
    assert_eq!(admin(addr, "GET", "/upstreams/nope", Some(TOKEN)).await.0, 404);

    let (status, body) = admin(addr, "GET", "/config", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let shown =
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["toml"].as_str().unwrap().to_string();
    assert!(shown.contains("[upstreams.web]") && shown.contains("token = \"(redacted)\""), "{shown}");
    assert!(!shown.contains(TOKEN), "the token leaked: {shown}");

    assert_eq!(admin(addr, "POST", "/metrics", Some(TOKEN)).await.0, 405);
    proxy.shutdown().await;
    backend.kill().await;
}

#[tokio::test]
async fn actions_are_off_unless_enabled() {
    let backend = Backend::named("a").await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let addr = proxy.admin_address().unwrap();
    let drain = format!("/upstreams/web/endpoints/{}/drain", backend.addr);
    assert_eq!(admin(addr, "POST", &drain, None).await.0, 403);
    assert_eq!(admin(addr, "POST", "/reload", None).await.0, 403);
    assert_eq!(get(proxy.listen_addresses()[0], "/", &[]).await.1, "a", "nothing was drained");
    proxy.shutdown().await;
    backend.kill().await;
}

#[tokio::test]
async fn a_drained_endpoint_gets_no_requests_until_it_is_put_back() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let text = with_admin(&config("round_robin", &[(a.addr, 1), (b.addr, 1)], ""), "actions = true\n");
    let proxy = proxy(&text).await;
    let (admin_addr, listen) = (proxy.admin_address().unwrap(), proxy.listen_addresses()[0]);

    let (status, body) =
        admin(admin_addr, "POST", &format!("/upstreams/web/endpoints/{}/drain", a.addr), None).await;
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    let drained =
        view["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == a.addr.to_string()).unwrap();
    assert_eq!((drained["status"].as_str(), drained["cause"].as_str()), (Some("drained"), Some("operator")));
    for _ in 0..20 {
        assert_eq!(get(listen, "/", &[]).await.1, "b", "a drained endpoint got a request");
    }

    let undrain = format!("/upstreams/web/endpoints/{}/undrain", a.addr);
    assert_eq!(admin(admin_addr, "POST", &undrain, None).await.0, 200);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        seen.insert(get(listen, "/", &[]).await.1);
    }
    assert_eq!(seen.len(), 2, "both endpoints serve again: {seen:?}");
    let unknown = admin(admin_addr, "POST", "/upstreams/web/endpoints/127.0.0.1:9/drain", None).await;
    assert_eq!(unknown.0, 404);
    proxy.shutdown().await;
    a.kill().await;
    b.kill().await;
}

#[tokio::test]
async fn post_reload_answers_501_when_nothing_reloads_an_embedded_proxy() {
    let backend = Backend::named("a").await;
    let text = with_admin(&config("round_robin", &[(backend.addr, 1)], ""), "actions = true\n");
    let proxy = proxy(&text).await;
    assert_eq!(admin(proxy.admin_address().unwrap(), "POST", "/reload", None).await.0, 501);
    proxy.shutdown().await;
    backend.kill().await;
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap()
}

/// `lb-proxy run` answers `POST /reload` as it does SIGHUP: a good file
/// applies, a bad one is refused with its error and the running one stays.
#[tokio::test]
async fn post_reload_reloads_the_file_of_lb_proxy_run() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin_addr) = (free_port(), free_port());
    let file = dir.path().join("lb.toml");
    let write = |backend: SocketAddr| {
        let text = format!(
            "[admin]\nlisten = \"{admin_addr}\"\nactions = true\ntoken = \"{TOKEN}\"\n[[listeners]]\nlisten = \"{listen}\"\n\
             [[routes]]\nupstream = \"web\"\n[upstreams.web]\ndiscovery.static.endpoints = [\"{backend}\"]\n"
        );
        std::fs::write(&file, text).unwrap();
    };
    write(a.addr);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["run", "--config"])
        .arg(&file)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if TcpStream::connect(admin_addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(listen, "/", &[]).await.1, "a");

    write(b.addr);
    let (status, body) = admin(admin_addr, "POST", "/reload", Some(TOKEN)).await;
    assert_eq!((status, body.as_str()), (200, r#"{"reloaded":true}"#));
    assert_eq!(get(listen, "/", &[]).await.1, "b", "the new file applied");

    std::fs::write(&file, "[upstreams.web]\nalgorithm = \"no_such_algorithm\"\n").unwrap();
    let (status, body) = admin(admin_addr, "POST", "/reload", Some(TOKEN)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("lb.toml:") && body.contains("the running configuration stays"), "{body}");
    assert_eq!(get(listen, "/", &[]).await.1, "b", "the running configuration stayed");

    let _ = child.kill();
    let _ = child.wait();
    a.kill().await;
    b.kill().await;
}
