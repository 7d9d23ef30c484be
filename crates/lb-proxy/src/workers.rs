//! `worker_threads = N`: a thread per core, each with its own one-thread
//! runtime, its own `SO_REUSEPORT` socket on every listener address (the
//! kernel spreads new connections over them) and its own stacks of pooled
//! endpoint connections. A request lives and dies on the thread that
//! accepted its connection: no lock is contended and no wakeup crosses
//! threads. Worker 0 is the thread that started the proxy, which also runs
//! discovery, health checks and the admin listener.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{oneshot, watch};

use crate::front::FrontSettings;
use crate::runtime::Runtime;
use crate::server::WorkerSocket;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread is (0 on any thread that is not a worker's).
#[inline]
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// A listening socket for `address`; with `reuse_port`, more can share it.
pub(crate) fn listen(address: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The worker threads beyond the first, running until a stop and their drain end.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    finished: Vec<oneshot::Receiver<()>>,
}

/// What every worker serves with.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) runtime: Arc<ArcSwap<Runtime>>,
    pub(crate) settings: FrontSettings,
    pub(crate) stopped: watch::Receiver<bool>,
    pub(crate) drain_timeout: Duration,
}

impl Workers {
    /// Starts one thread per entry of `listeners` (workers 1, 2, ...), each serving its sockets.
    pub(crate) fn spawn(listeners: Vec<Vec<WorkerSocket>>, serving: &Serving) -> std::io::Result<Workers> {
        let mut finished = Vec::with_capacity(listeners.len());
        for (i, sockets) in listeners.into_iter().enumerate() {
            let (done, finished_rx) = oneshot::channel();
            let serving = serving.clone();
            std::thread::Builder::new().name(format!("lb-worker-{}", i + 1)).spawn(move || {
                WORKER.with(|w| w.set(i + 1));
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    tracing::error!(worker = i + 1, "cannot build the worker's runtime");
                    return;
                };
                runtime.block_on(async move {
                    let mut serving_tasks = Vec::new();
                    for WorkerSocket { socket, cap, tls, settings } in sockets {
                        match tokio::net::TcpListener::from_std(socket) {
                            Ok(listener) => serving_tasks.push(tokio::spawn(crate::server::serve_proxy(
                                listener,
                                Serving { settings, ..serving.clone() },
                                cap,
                                tls,
                            ))),
                            Err(error) => tracing::error!(worker = i + 1, %error, "cannot serve a listener"),
                        }
                    }
                    for task in serving_tasks {
                        let _ = task.await;
                    }
                });
                let _ = done.send(());
            })?;
            finished.push(finished_rx);
        }
        Ok(Workers { finished })
    }

    /// Waits until every worker has drained and stopped.
    pub(crate) async fn join(self) {
        for finished in self.finished {
            let _ = finished.await;
        }
    }
}
