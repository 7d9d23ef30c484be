//! Real tonic servers of the test `Echo` service.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

pub mod echo {
    tonic::include_proto!("echo");
}

use echo::echo_server::{Echo, EchoServer};
use echo::{SayReply, SayRequest};

struct Named {
    name: String,
    hits: Arc<AtomicU64>,
    traceparents: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl Echo for Named {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        self.hits.fetch_add(1, Ordering::Relaxed);
        let traceparent =
            request.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(String::from);
        self.traceparents.lock().unwrap().push(traceparent);
        Ok(Response::new(SayReply { text: request.into_inner().text, server: self.name.clone() }))
    }
}

/// A running Echo server; stopped gracefully by `stop`, or when dropped.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicU64>,
    traceparents: Arc<Mutex<Vec<Option<String>>>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl GrpcBackend {
    pub async fn start(name: &str) -> GrpcBackend {
        GrpcBackend::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind 127.0.0.1:0")
    }

    /// Starts a server on `addr`; fails if the address is taken.
    pub async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<GrpcBackend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let traceparents = Arc::new(Mutex::new(Vec::new()));
        let service = EchoServer::new(Named {
            name: name.to_string(),
            hits: Arc::clone(&hits),
            traceparents: Arc::clone(&traceparents),
        });
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(GrpcBackend {
            addr,
            name: name.to_string(),
            hits,
            traceparents,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The `traceparent` each call carried, in order.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.traceparents.lock().unwrap().clone()
    }

    /// Stops at once, as a crash would: the listener and every connection close.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Stops accepting, lets calls in flight finish, and waits (bounded) until the server is gone.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
