//! An upgraded connection (WebSocket) after both sides agreed on `101`:
//! bytes are copied both ways until both sides have closed, or until no
//! byte moved either way for the idle timeout (HAProxy's `timeout tunnel`;
//! nginx closes a quiet WebSocket after its `proxy_read_timeout`).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::duplex::Duplex;

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TunnelEnd {
    /// Both sides closed.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Copies between `client` and `endpoint` as the module docs say.
pub(crate) async fn copy_both_ways<S: Duplex, E: Duplex>(
    client: &mut S,
    endpoint: &mut E,
    idle: Duration,
) -> io::Result<TunnelEnd> {
    let (mut client_in, mut client_out) = client.split();
    let (mut endpoint_in, mut endpoint_out) = endpoint.split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut client_done, mut endpoint_done) = (false, false);
    let quiet = tokio::time::sleep(idle);
    tokio::pin!(quiet);
    while !(client_done && endpoint_done) {
        tokio::select! {
            read = client_in.read(&mut up), if !client_done => match read? {
                0 => {
                    client_done = true;
                    endpoint_out.shutdown().await?;
                }
                n => endpoint_out.write_all(&up[..n]).await?,
            },
            read = endpoint_in.read(&mut down), if !endpoint_done => match read? {
                0 => {
                    endpoint_done = true;
                    client_out.shutdown().await?;
                }
                n => client_out.write_all(&down[..n]).await?,
            },
            () = &mut quiet => return Ok(TunnelEnd::Idle),
        }
        quiet.as_mut().reset(tokio::time::Instant::now() + idle);
    }
    Ok(TunnelEnd::Closed)
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (far, _) = listener.accept().await.unwrap();
        (near, far)
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_flow_both_ways_and_a_quiet_tunnel_closes() {
        let (mut client, mut client_side) = pair().await;
        let (mut endpoint_side, mut endpoint) = pair().await;
        let tunnel = tokio::spawn(async move {
            copy_both_ways(&mut client_side, &mut endpoint_side, Duration::from_secs(60)).await
        });
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        endpoint.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        endpoint.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        // Paused time runs ahead once everything is idle: the timeout fires at 60 s.
        assert_eq!(tunnel.await.unwrap().unwrap(), TunnelEnd::Idle);
    }

    #[tokio::test]
    async fn a_tunnel_ends_when_both_sides_close() {
        let (mut client, mut client_side) = pair().await;
        let (mut endpoint_side, mut endpoint) = pair().await;
        let tunnel = tokio::spawn(async move {
            copy_both_ways(&mut client_side, &mut endpoint_side, Duration::from_secs(60)).await
        });
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        endpoint.read_to_end(&mut rest).await.unwrap();
        endpoint.shutdown().await.unwrap();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(tunnel.await.unwrap().unwrap(), TunnelEnd::Closed);
    }
}
