//! The access log: one JSON object per line in its own file, each value
//! from the request escaped so nothing can forge a line.

mod common;

use std::time::Duration;

use common::{Backend, config, get, proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn json_access_lines_go_to_their_file_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let backend = Backend::named("a").await;
    let text = format!(
        "[global]\naccess_log = \"json\"\naccess_log_file = \"{}\"\n{}",
        file.display(),
        config("round_robin", &[(backend.addr, 1)], "")
    );
    let proxy = proxy(&text).await;
    let addr = proxy.listen_addresses()[0];
    assert_eq!(get(addr, "/one?x=1", &[]).await.0, 200);
    // A request id made to look like a second line, sent raw.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(
        b"GET /two HTTP/1.1\r\nHost: t\r\nX-Request-Id: a\"b\\c {\"forged\": 1}\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await.unwrap().unwrap();
    // A line is written once its response is sent: wait (bounded) for both.
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    assert!(common::eventually(|| read().lines().count() >= 2).await, "{}", read());
    let written: Vec<String> = read().lines().map(str::to_owned).collect();
    assert_eq!(written.len(), 2, "{written:?}");
    let entries: Vec<serde_json::Value> = written.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries[0]["uri"], "/one?x=1");
    assert_eq!(entries[0]["status"], 200);
    assert_eq!(entries[0]["backend"], backend.addr.to_string());
    assert_eq!(entries[1]["request_id"], "a\"b\\c {\"forged\": 1}", "kept whole, escaped by JSON");
    proxy.shutdown().await;
    backend.kill().await;
}
