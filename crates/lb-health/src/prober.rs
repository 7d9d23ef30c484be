//! The active HTTP health checker (feature `tokio`): one task per endpoint
//! sends a request every interval (with jitter) on the hyper 1.x client,
//! classifies the answer and drives that endpoint's [`RiseFall`].

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lb_core::{Address, EndpointId, EndpointSet, Member};
use tokio::task::JoinHandle;

use crate::active::{ActiveCheckConfig, ActiveCheckError, CheckResult, RiseFall};
use crate::rng::SplitMix64;

/// The most body a check reads when it looks for the expected text.
const MAX_BODY: usize = 64 * 1024;

/// Sends health checks; cheap to clone (the client and config are shared).
#[derive(Debug, Clone)]
pub struct Prober {
    config: Arc<ActiveCheckConfig>,
    method: Method,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Prober {
    /// A prober for `config`. Every check opens a fresh connection, so a dead
    /// listener is noticed at once (as HAProxy does).
    pub fn new(config: ActiveCheckConfig) -> Result<Self, ActiveCheckError> {
        config.validate()?;
        let method = Method::from_bytes(config.method.as_bytes())
            .map_err(|_| ActiveCheckError::BadMethod(config.method.clone()))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .http2_only(config.http2)
            .build(connector);
        Ok(Prober { config: Arc::new(config), method, client })
    }

    /// The settings.
    pub fn config(&self) -> &ActiveCheckConfig {
        &self.config
    }

    /// Checks `address` once, bounded by the timeout; a connection failure
    /// or timeout is [`CheckResult::Critical`].
    pub async fn check(&self, address: &Address) -> CheckResult {
        match tokio::time::timeout(self.config.timeout, self.exchange(address)).await {
            Ok(Some((status, body))) => self.config.classify(status, &body),
            Ok(None) | Err(_) => CheckResult::Critical,
        }
    }

    async fn exchange(&self, address: &Address) -> Option<(u16, Bytes)> {
        let host = self.config.host.clone().unwrap_or_else(|| address_text(address));
        let request = Request::builder()
            .method(self.method.clone())
            .uri(format!("http://{}{}", address_text(address), self.config.path))
            .header(header::HOST, host)
            .header(header::USER_AGENT, "lb-health")
            .body(Empty::new())
            .ok()?;
        let response = self.client.request(request).await.ok()?;
        let status = response.status().as_u16();
        if self.config.expected_body.is_none() {
            return Some((status, Bytes::new()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY).collect().await.ok()?.to_bytes();
        Some((status, body))
    }

    /// Starts checking one endpoint until the returned task is dropped.
    /// `seed` makes its jitter reproducible.
    pub fn spawn(&self, member: &Member, seed: u64) -> ProbeTask {
        let prober = self.clone();
        let address = member.endpoint().address().clone();
        let state = Arc::clone(member.state());
        let mut rise_fall = RiseFall::new(&prober.config);
        // Before the first check: an initially unhealthy endpoint is out at once.
        rise_fall.apply_to(&state);
        let handle = tokio::spawn(async move {
            let mut rng = SplitMix64::new(seed);
            loop {
                let result = prober.check(&address).await;
                rise_fall.record(result, &state);
                tokio::time::sleep(prober.config.next_delay(&mut rng)).await;
            }
        });
        ProbeTask { handle }
    }

    /// Starts one task per member of `set`.
    pub fn watch(&self, set: &EndpointSet) -> ProbeSet {
        let mut probes = ProbeSet { prober: self.clone(), tasks: BTreeMap::new() };
        probes.update(set);
        probes
    }
}

fn address_text(address: &Address) -> String {
    format!("{address}")
}

/// A running check task; dropping it stops the checks.
#[derive(Debug)]
pub struct ProbeTask {
    handle: JoinHandle<()>,
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The check tasks of a whole endpoint set.
#[derive(Debug)]
pub struct ProbeSet {
    prober: Prober,
    tasks: BTreeMap<EndpointId, ProbeTask>,
}

impl ProbeSet {
    /// Follows a new snapshot: keeps the tasks of endpoints that stay (so
    /// their rise/fall runs continue), starts tasks for new ones and stops
    /// the tasks of removed ones.
    pub fn update(&mut self, set: &EndpointSet) {
        self.tasks.retain(|id, _| set.index_of(id).is_some());
        for member in set {
            let id = member.endpoint().id();
            if !self.tasks.contains_key(id) {
                let seed = id
                    .as_str()
                    .bytes()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
                self.tasks.insert(id.clone(), self.prober.spawn(member, seed));
            }
        }
    }

    /// Endpoints being checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no endpoint is being checked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The per-check timeout in force.
    pub fn timeout(&self) -> Duration {
        self.prober.config.timeout
    }
}
