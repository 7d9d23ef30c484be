//! 100 MiB each way, streamed: the data is generated and counted on the fly,
//! never held whole, and the proxy's replay buffer stays at its bound.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Backend, TestBody, config, proxy};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
const TOTAL: u64 = 100 * 1024 * 1024;

fn generated(total: u64) -> TestBody {
    let chunks = total / CHUNK.len() as u64;
    let frames =
        futures_util::stream::iter((0..chunks).map(|_| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from_static(&CHUNK)))
        }));
    StreamBody::new(frames).boxed()
}

async fn count(mut body: Incoming) -> u64 {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            n += data.len() as u64;
        }
    }
    n
}

/// Counts an upload's bytes, or sends a generated download for `/download`.
async fn sink_or_source(req: Request<Incoming>) -> Response<TestBody> {
    if req.uri().path() == "/download" {
        return Response::new(generated(TOTAL));
    }
    let n = count(req.into_body()).await;
    Response::new(common::full(n.to_string()))
}

#[tokio::test]
async fn a_100_mib_upload_and_download_stream_through_with_a_bounded_buffer() {
    let backend = Backend::start(sink_or_source).await;
    let proxy = proxy(&config("round_robin", &[(backend.addr, 1)], "")).await;
    let addr = proxy.listen_addresses()[0];
    let client = common::client();

    // PUT may be retried, so the proxy keeps the start of its body for that.
    let upload = Request::put(format!("http://{addr}/upload")).body(generated(TOTAL)).unwrap();
    let response =
        tokio::time::timeout(Duration::from_secs(60), client.request(upload)).await.unwrap().unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, TOTAL.to_string(), "the backend received every byte");
    let peak = proxy.replay_peak_bytes();
    assert!(peak <= 64 * 1024, "the replay buffer stayed within 64 KiB: {peak}");
    assert!(peak > 0, "the first chunk was kept for a possible retry");

    let download = Request::get(format!("http://{addr}/download")).body(common::full("")).unwrap();
    let response =
        tokio::time::timeout(Duration::from_secs(60), client.request(download)).await.unwrap().unwrap();
    let received = tokio::time::timeout(Duration::from_secs(60), count(response.into_body())).await.unwrap();
    assert_eq!(received, TOTAL);
    proxy.shutdown().await;
    backend.kill().await;
}
