//! Announcing a service and taking it back on shutdown.

use crate::client::ConsulClient;
use crate::error::ConsulError;

/// A registered service instance that is deregistered when the guard goes.
///
/// Call [`deregister`](RegistrationGuard::deregister) on shutdown and await
/// it: that is the reliable path. Dropping the guard instead spawns the
/// deregistration on the current tokio runtime as a fallback, which a
/// runtime that is itself shutting down may never run; the check's
/// `DeregisterCriticalServiceAfter` is the last safety net.
#[derive(Debug)]
#[must_use = "dropping the guard deregisters the service"]
pub struct RegistrationGuard {
    client: ConsulClient,
    service_id: String,
    registered: bool,
}

impl RegistrationGuard {
    pub(crate) fn new(client: ConsulClient, service_id: String) -> Self {
        RegistrationGuard { client, service_id, registered: true }
    }

    /// The registered instance's id.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// Deregisters the instance now.
    ///
    /// # Errors
    /// Any [`ConsulError`]; the guard is spent either way.
    pub async fn deregister(mut self) -> Result<(), ConsulError> {
        self.registered = false;
        self.client.deregister(&self.service_id).await
    }
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        let id = std::mem::take(&mut self.service_id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let client = self.client.clone();
                runtime.spawn(async move {
                    match client.deregister(&id).await {
                        Ok(()) => tracing::info!(service_id = %id, "deregistered from Consul"),
                        Err(error) => {
                            tracing::warn!(service_id = %id, %error, "Consul deregistration failed")
                        }
                    }
                });
            }
            Err(_) => tracing::warn!(
                service_id = %id,
                "registration guard dropped outside a tokio runtime; not deregistered (call deregister().await)"
            ),
        }
    }
}
