//! The signals a running proxy answers: Ctrl-C (SIGINT) and, on Unix, SIGTERM
//! stop it; SIGHUP reloads its configuration. SIGTERM
//! is how systemd, Kubernetes and `kill` ask a server to stop.

/// Stop signals. On Unix they are listened for from [`StopSignal::listen`]
/// on, so one that arrives before [`wait`](StopSignal::wait) is kept, not
/// lost; elsewhere Ctrl-C is listened for from `wait` on.
#[derive(Debug)]
pub struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    /// Starts listening. Must run inside a tokio runtime.
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignal {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignal {})
    }

    /// Waits for the first stop signal.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUP, the conventional "reload your configuration" signal; on other
/// platforms it never arrives.
#[derive(Debug)]
pub struct ReloadSignal {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl ReloadSignal {
    /// Starts listening. Must run inside a tokio runtime.
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ReloadSignal { hangup: signal(SignalKind::hangup())? })
        }
        #[cfg(not(unix))]
        Ok(ReloadSignal {})
    }

    /// Waits for the next reload request.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        let _ = self.hangup.recv().await;
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    }
}
