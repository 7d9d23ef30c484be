//! The Consul health watch: a blocking-query loop that is an lb-discovery source.

use std::time::Duration;

use lb_core::Endpoint;
use lb_discovery::Source;
use tokio::time::Instant;

use crate::blocking::{Backoff, RateLimiter, index_to_send, next_index};
use crate::client::{ConsulClient, HealthQuery};
use crate::endpoints::endpoints_from;
use crate::error::ConsulError;

/// The default `wait` of each blocking query (Consul's own default is 5 minutes).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// The default average spacing of queries (bursts of 2 are allowed).
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Watches the healthy instances of one service with blocking queries on
/// `/v1/health/service/:service`.
///
/// Turn it into a change stream with [`lb_discovery::changes`]: the first
/// answer is the snapshot, later answers become diffs, an unchanged answer
/// (a `wait` that expired) emits nothing, and a failed query is logged while
/// the last good set stays. The loop follows Consul's blocking-query rules:
/// the first query does not block; later ones send the last `X-Consul-Index`
/// (an index that went backwards resets to 0, and 0 is sent as 1); the
/// client timeout exceeds `wait * 17 / 16`; queries are rate-limited (bursts
/// of 2, then one per [`min_interval`](Self::min_interval)); errors back off
/// exponentially with jitter. See [`endpoints_from`](crate::endpoints_from)
/// for how health, weights and addresses map to endpoints.
#[derive(Debug)]
pub struct HealthWatch {
    client: ConsulClient,
    service: String,
    query: HealthQuery,
    zone_meta_key: Option<String>,
    limiter: RateLimiter,
    backoff: Backoff,
    /// `None` until the first answer; then the index to block on.
    index: Option<u64>,
    failures: u32,
    pause: Option<Duration>,
}

impl HealthWatch {
    /// Watches `service` through `client`.
    pub fn new(client: ConsulClient, service: impl Into<String>) -> Self {
        HealthWatch {
            client,
            service: service.into(),
            query: HealthQuery { wait: DEFAULT_WAIT, ..HealthQuery::default() },
            zone_meta_key: None,
            limiter: RateLimiter::new(DEFAULT_MIN_INTERVAL, 2),
            backoff: Backoff::default(),
            index: None,
            failures: 0,
            pause: None,
        }
    }

    /// Keeps only instances with this tag (repeat for several; all must match).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.query.tags.push(tag.into());
        self
    }

    /// Asks this datacenter instead of the agent's own.
    pub fn datacenter(mut self, dc: impl Into<String>) -> Self {
        self.query.datacenter = Some(dc.into());
        self
    }

    /// How long Consul may hold each query (default 60 s, at most 10 min).
    /// Consul accepts sub-second waits such as 100 ms.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.query.wait = wait;
        self
    }

    /// The average spacing of queries; bursts of 2 pass at once (default 500 ms).
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.limiter = RateLimiter::new(interval, 2);
        self
    }

    /// The backoff after failed queries (default 500 ms doubling to 30 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Uses this `Service.Meta` entry as the endpoint's zone.
    pub fn zone_from_meta(mut self, key: impl Into<String>) -> Self {
        self.zone_meta_key = Some(key.into());
        self
    }

    async fn round(&mut self) -> Result<Vec<Endpoint>, ConsulError> {
        if let Some(pause) = self.pause.take() {
            tokio::time::sleep(pause).await;
        }
        let delay = self.limiter.reserve(Instant::now());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.query.index = self.index.map(index_to_send);
        match self.client.health_service(&self.service, &self.query).await {
            Ok(answer) => {
                self.failures = 0;
                let previous = self.index.unwrap_or(0);
                if answer.index < previous {
                    tracing::info!(service = %self.service, previous, returned = answer.index, "Consul index went backwards; resetting");
                }
                self.index = Some(next_index(previous, answer.index));
                Ok(endpoints_from(&answer.value, self.zone_meta_key.as_deref()))
            }
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                self.pause = Some(self.backoff.delay(self.failures));
                Err(error)
            }
        }
    }
}

impl Source for HealthWatch {
    type Error = ConsulError;

    fn describe(&self) -> String {
        match &self.query.datacenter {
            Some(dc) => format!("consul service {} in {dc}", self.service),
            None => format!("consul service {}", self.service),
        }
    }

    async fn next_list(&mut self) -> Option<Result<Vec<Endpoint>, ConsulError>> {
        Some(self.round().await)
    }
}
