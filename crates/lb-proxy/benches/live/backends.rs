//! Local backends that behave like the simulator's: a service time drawn
//! from the same distribution, at most `concurrency` requests served at
//! once (the rest wait their turn, FIFO), slow by a factor, or dead (a port
//! nobody listens on: connections are refused).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lb_health::SplitMix64;
use lb_sim::{Fault, Setup};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The running backends, in the setup's order.
pub(crate) struct Backends {
    pub(crate) addresses: Vec<SocketAddr>,
    tasks: JoinSet<()>,
}

impl Backends {
    /// Stops every backend (their accept loops and connections end).
    pub(crate) fn stop(mut self) {
        self.tasks.abort_all();
    }
}

pub(crate) async fn start(setup: &Setup) -> Backends {
    let mut backends = Backends { addresses: Vec::new(), tasks: JoinSet::new() };
    for (i, spec) in setup.backends.iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a backend");
        backends.addresses.push(listener.local_addr().expect("its address"));
        if spec.fault == Fault::Dead {
            continue; // dropped: the port refuses connections
        }
        let factor = if let Fault::Slow(f) = spec.fault { f } else { 1.0 };
        let service = spec.service;
        // Tokio's semaphore is fair: waiters are served in arrival order, the simulator's FIFO.
        let workers = Arc::new(Semaphore::new(spec.concurrency as usize));
        let rng = Arc::new(Mutex::new(SplitMix64::new(setup.seed ^ (i as u64 + 1))));
        backends.tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (workers, rng) = (Arc::clone(&workers), Arc::clone(&rng));
                connections.spawn(async move {
                    let serve = service_fn(move |_request: hyper::Request<hyper::body::Incoming>| {
                        let (workers, rng) = (Arc::clone(&workers), Arc::clone(&rng));
                        async move {
                            let _worker = workers.acquire().await.expect("never closed");
                            let time =
                                service.sample(&mut *rng.lock().expect("not poisoned")).mul_f64(factor);
                            tokio::time::sleep(time).await;
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), serve)
                        .await;
                });
            }
        });
    }
    backends
}
