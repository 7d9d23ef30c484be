//! The HTTP/2 front under abuse, driven by a raw client (the `h2` crate, and
//! hand-written frames where the crate will not misbehave): rapid reset
//! (CVE-2023-44487) and CONTINUATION floods close the connection with
//! GOAWAY while other clients keep being served, and the limits of
//! `[global.http2]` are what clients are told. Rapid reset is caught two
//! ways, whichever comes first: h2's bound on streams reset before the
//! proxy took them up, and Envoy's rule on streams reset within a second
//! of opening (more than half of at least 500).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Backend, config, proxy};
use h2::Reason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP/2 (prior knowledge) connection to `address`, driven by its own task.
async fn connect(
    address: std::net::SocketAddr,
) -> (h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(address).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    (client, tokio::spawn(connection))
}

/// One GET on `client`: its status, or None when the connection refused it.
async fn get(client: &mut h2::client::SendRequest<bytes::Bytes>) -> Option<u16> {
    let ready = tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await.ok()?.ok()?;
    *client = ready;
    let (response, _) = client.send_request(http::Request::get("http://x/").body(()).unwrap(), true).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), response).await.ok()?.ok()?;
    Some(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_enhance_your_calm_while_others_are_served() {
    let backend = Backend::named("a").await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let address = proxy.listen_addresses()[0];

    // A well-behaved client on its own connection, all along.
    let (mut polite, _polite_connection) = connect(address).await;
    let served = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..200 {
            statuses.push(get(&mut polite).await);
        }
        statuses
    });

    // Open a stream and reset it at once (dropping it sends RST_STREAM), as fast as possible.
    let (mut attacker, connection) = connect(address).await;
    let mut opened = 0;
    for _ in 0..20_000 {
        attacker = match tokio::time::timeout(Duration::from_secs(5), attacker.ready()).await {
            Ok(Ok(ready)) => ready,
            _ => break,
        };
        match attacker.send_request(http::Request::get("http://x/").body(()).unwrap(), true) {
            Ok((response, _)) => drop(response),
            Err(_) => break,
        }
        opened += 1;
    }
    let ended =
        tokio::time::timeout(Duration::from_secs(5), connection).await.expect("the connection ends").unwrap();
    let closed = ended.expect_err("closed by the proxy");
    // The GOAWAY, unless the close behind it broke a write of ours before we read it.
    let said_calm =
        closed.is_go_away() && closed.is_remote() && closed.reason() == Some(Reason::ENHANCE_YOUR_CALM);
    assert!(said_calm || closed.is_io(), "{closed:?}");
    assert!(opened < 2_000, "{opened} streams opened and reset before the GOAWAY");
    let reached = backend.requests.load(Ordering::SeqCst);

    let statuses = served.await.unwrap();
    assert!(statuses.iter().all(|s| *s == Some(200)), "the polite client: {statuses:?}");
    // Streams the proxy took up before their reset may have gone out; the connection is closed
    // once more than half of 500 streams were reset within a second of opening.
    assert!(reached <= 200 + 1_000, "{reached} requests reached the backend; 200 were the polite client's");
    proxy.shutdown().await;
}

/// Writes one raw frame.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_with_goaway() {
    const HEADERS: u8 = 0x1;
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const CONTINUATION: u8 = 0x9;
    let backend = Backend::named("a").await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let mut stream = TcpStream::connect(proxy.listen_addresses()[0]).await.unwrap();

    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut opening, SETTINGS, 0, 0, &[]);
    // GET http://x/ (HPACK: indexed :method, :scheme, :path; literal :authority), END_STREAM, no END_HEADERS.
    frame(&mut opening, HEADERS, 0x1, 1, &[0x82, 0x86, 0x84, 0x41, 0x01, b'x']);
    stream.write_all(&opening).await.unwrap();
    // Then header fields forever: `x-a: aaa...` (literal, new name), 16 KiB per CONTINUATION.
    let mut field = vec![0x00, 0x03, b'x', b'-', b'a', 0x60];
    field.extend_from_slice(&[b'a'; 0x60]);
    let payload: Vec<u8> = field.iter().copied().cycle().take(field.len() * 160).collect();
    let mut one = Vec::new();
    frame(&mut one, CONTINUATION, 0, 1, &payload);

    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut seen)).await;
        seen
    });
    let mut written = 0usize;
    for _ in 0..4096 {
        // 64 MiB in all: far more than any buffer on the way.
        if write.write_all(&one).await.is_err() {
            break;
        }
        written += one.len();
    }
    let seen = reader.await.unwrap();
    assert!(written < 32 << 20, "{written} bytes of CONTINUATION were taken in");
    // The frames the proxy sent: its SETTINGS, ..., and a GOAWAY.
    let mut at = 0;
    let mut kinds = Vec::new();
    while at + 9 <= seen.len() {
        let length = u32::from_be_bytes([0, seen[at], seen[at + 1], seen[at + 2]]) as usize;
        kinds.push(seen[at + 3]);
        at += 9 + length;
    }
    assert!(kinds.contains(&GOAWAY), "frames from the proxy: {kinds:?}");
    assert_eq!(backend.requests.load(Ordering::SeqCst), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn clients_are_told_the_configured_limits() {
    let backend = Backend::named("a").await;
    let text = config("round_robin", &[(backend.addr, 1)], "").replacen(
        "[admin]",
        "[global.http2]\nmax_concurrent_streams = 3\n\n[admin]",
        1,
    );
    let proxy = proxy(&text).await;
    let (mut client, _connection) = connect(proxy.listen_addresses()[0]).await;
    assert_eq!(get(&mut client).await, Some(200));
    assert_eq!(client.current_max_send_streams(), 3, "the SETTINGS the proxy sent");
    proxy.shutdown().await;
}
