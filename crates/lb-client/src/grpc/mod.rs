//! A balanced channel for tonic-generated clients.
//!
//! [`BalancedChannel`] holds one lazily connected tonic `Channel` per
//! endpoint and picks among them per call with any `lb-algorithms`
//! algorithm (round robin unless told otherwise, as gRPC's `round_robin`
//! policy, guide §3.2), or your own [`Build`] (the guide's custom picker,
//! §4.3). Endpoints come from DNS (`dns:///name:port`), Consul, or any
//! discovery channel.
//!
//! Dead endpoints are not picked (unlike tonic's `balance_channel`,
//! grpc-rust#2839): a call that could not connect ejects nothing by itself,
//! but it counts as a local-origin failure for the endpoint's breaker and
//! outlier detector, which take the endpoint out; and the call itself,
//! which never reached a server, is sent again to another endpoint when its
//! body was complete (every unary call), under the retry budget. Endpoints
//! discovery removes are gone from the next generation at once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lb_algorithms::Algorithm;
//! use lb_client::grpc::BalancedChannel;
//!
//! // gRPC's `dns:///` target with round robin, as in the guide's §3.2 ...
//! let by_dns = BalancedChannel::round_robin("echo").dns("dns:///echo.internal:50051")?.build()?;
//! // ... or a Consul service's healthy instances, picked by peak-EWMA.
//! let consul = lb_consul::ConsulClient::from_env()?;
//! let by_consul = BalancedChannel::builder("echo", "peak_ewma".parse::<Algorithm>()?)
//!     .source(lb_consul::HealthWatch::new(consul, "echo"))
//!     .build()?;
//! // Either is the channel of a tonic-generated client: `EchoClient::new(by_dns)`.
//! # drop((by_dns, by_consul)); Ok(()) }
//! ```

mod replay;
mod tls;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lb_core::{Build, Clock, Endpoint, EndpointSet, MonotonicClock, Outcome};
use lb_engine::Retries;
use lb_health::{Method, RetryOn, RetryPolicy};
use opentelemetry::global::BoxedTracer;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{BoxError, Service};

use crate::otel::{CallSpan, Tracing};
use crate::resilience::ResilienceConfig;
use crate::{Balance, Error, NoKey};
use lb_core::Exclusions;
use replay::Buffered;

/// How many endpoints a call that could not connect tries in all.
const MAX_CONNECT_ATTEMPTS: u32 = 3;

/// gRPC's transparent retry as a policy of the one retry engine: only a call
/// no server saw (a connect error) goes again, at once, to another endpoint,
/// under the retry budget.
fn transparent_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: MAX_CONNECT_ATTEMPTS,
        retry_on: RetryOn { connect_error: true, ..RetryOn::nothing() },
        ..RetryPolicy::default()
    }
}

/// A tower service for tonic-generated clients (`EchoClient::new(channel)`),
/// balancing every call over the endpoints. Cheap to clone.
pub struct BalancedChannel<A: Build> {
    balance: Balance<A, Channel, NoKey>,
    /// Where call spans go, if tracing is on.
    tracing: Option<Arc<Tracing>>,
}

impl<A: Build> Clone for BalancedChannel<A> {
    fn clone(&self) -> Self {
        BalancedChannel { balance: self.balance.clone(), tracing: self.tracing.clone() }
    }
}

impl<A: Build> std::fmt::Debug for BalancedChannel<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedChannel").field("balance", &self.balance).finish()
    }
}

impl<A: Build + 'static> BalancedChannel<A> {
    /// The endpoints currently known, with their health.
    pub fn endpoints(&self) -> Vec<(Endpoint, lb_core::HealthStatus)> {
        self.balance.endpoints()
    }
}

impl<A: Build + 'static> Service<http::Request<Body>> for BalancedChannel<A> {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.balance, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let balance = self.balance.clone();
        let tracing = self.tracing.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            // The span is named after the call (`package.Service/Method`); every attempt carries its traceparent.
            let mut span = tracing.as_ref().map(|tracing| {
                let name = parts.uri.path().trim_start_matches('/').to_owned();
                let span = tracing.start(name, balance.service_name(), "POST");
                tracing.inject(&span, &mut parts.headers);
                span
            });
            let generation = balance.generation();
            let mut excluded = Exclusions::new();
            let data = match replay::buffer(body).map_err(BoxError::from)? {
                Buffered::Streaming(body) => {
                    let sent = balance.dispatch(
                        &generation,
                        http::Request::from_parts(parts, body),
                        &mut excluded,
                    )?;
                    let (result, outcome) = sent.await;
                    end_span(span, &result, outcome);
                    return result;
                }
                Buffered::Complete(data) => data,
            };
            let now = || balance.shared_clock().now();
            balance.resilience().deposit(now());
            let policy = transparent_retry();
            // gRPC calls are POSTs: only the connect-error rule lets them go again.
            let mut retries = Retries::new(&policy, Method::Post, None);
            loop {
                let request = http::Request::from_parts(parts.clone(), replay::replay(&data));
                let (result, outcome) = balance.dispatch(&generation, request, &mut excluded)?.await;
                let (budget, seeds) = (balance.resilience().budget(), balance.resilience().jitter());
                // A connect error is retried at once: there is no wait to take.
                if retries.after_failure(outcome, now(), budget, seeds).is_none() {
                    end_span(span, &result, outcome);
                    return result;
                }
                balance.resilience().labels().retried();
                if let Some(span) = span.as_mut() {
                    span.retry(retries.attempt() - 1, outcome);
                }
            }
        })
    }
}

/// Ends a call's span with its HTTP status or its error.
fn end_span(span: Option<CallSpan>, result: &Result<http::Response<Body>, BoxError>, outcome: Outcome) {
    if let Some(span) = span {
        span.end(None, result.as_ref().ok().map(|r| r.status().as_u16()), outcome);
    }
}

/// Where a [`BalancedChannel`] finds its endpoints.
enum Target {
    Static(Vec<Endpoint>),
    Watch(watch::Receiver<EndpointSet>),
    Stream(lb_discovery::ChangeStream),
}

/// Configures a [`BalancedChannel`]; start with [`BalancedChannel::builder`].
#[must_use = "a builder does nothing until built"]
pub struct ChannelBuilder<A> {
    service: String,
    algorithm: A,
    target: Target,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    resilience: ResilienceConfig,
    clock: Arc<dyn Clock>,
    tracer: Option<BoxedTracer>,
    tls: Option<lb_tls::ClientTls>,
}

impl<A> std::fmt::Debug for ChannelBuilder<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelBuilder").field("service", &self.service).finish_non_exhaustive()
    }
}

impl BalancedChannel<lb_algorithms::Algorithm> {
    /// Starts a builder with gRPC's default policy, round robin (guide §3.2).
    pub fn round_robin(service: &str) -> ChannelBuilder<lb_algorithms::Algorithm> {
        BalancedChannel::builder(service, lb_algorithms::Algorithm::RoundRobin)
    }
}

impl<A: Build + 'static> BalancedChannel<A> {
    /// Starts a builder for the service `service` (a name for metrics),
    /// picking with `algorithm` (`Algorithm::RoundRobin` is gRPC's default).
    pub fn builder(service: &str, algorithm: A) -> ChannelBuilder<A> {
        ChannelBuilder {
            service: service.to_string(),
            algorithm,
            target: Target::Static(Vec::new()),
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
            resilience: ResilienceConfig::default(),
            clock: Arc::new(MonotonicClock::new()),
            tracer: None,
            tls: None,
        }
    }
}

impl<A: Build + 'static> ChannelBuilder<A> {
    /// A fixed list of endpoints.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        self.target = Target::Static(endpoints.into_iter().collect());
        self
    }

    /// Follows a discovery channel (`lb_discovery::watch_snapshots`, `lb-consul`).
    pub fn discovery(mut self, endpoints: watch::Receiver<EndpointSet>) -> Self {
        self.target = Target::Watch(endpoints);
        self
    }

    /// Resolves a gRPC-style DNS target: `dns:///name:port` through the
    /// system resolver, or `dns://server:port/name:port` through that name
    /// server; re-resolved at the records' TTL.
    pub fn dns(mut self, target: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Config(format!("bad DNS target `{target}`: {reason}"));
        let rest = target.strip_prefix("dns://").ok_or_else(|| bad("it must start with dns://"))?;
        let (authority, name) = rest.split_once('/').ok_or_else(|| bad("write dns:///name:port"))?;
        let server = match authority {
            "" => None,
            server => Some(server.parse().map_err(|_| bad("the DNS server must be ip:port"))?),
        };
        let address: lb_core::Address =
            name.parse().map_err(|e: lb_core::AddressError| bad(&e.to_string()))?;
        let query = match address {
            lb_core::Address::Host { host, port } => lb_discovery::DnsQuery::Host { name: host, port },
            lb_core::Address::Socket(socket) => {
                self.target = Target::Static(vec![Endpoint::new(socket)]);
                return Ok(self);
            }
        };
        let config = lb_discovery::DnsConfig::default();
        let source = match server {
            None => lb_discovery::DnsSource::system(query, config),
            Some(server) => lb_discovery::DnsSource::with_name_servers(query, &[server], config),
        }
        .map_err(|e| Error::Config(e.to_string()))?;
        Ok(self.source(source))
    }

    /// Follows any discovery source, such as `lb_consul::HealthWatch` for
    /// a service's healthy Consul instances.
    pub fn source(mut self, source: impl lb_discovery::Source) -> Self {
        self.target = Target::Stream(lb_discovery::changes(source));
        self
    }

    /// How long connecting to one endpoint may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A deadline for every call on every endpoint (default none: use gRPC deadlines).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Replaces the resilience settings.
    pub fn resilience(mut self, config: ResilienceConfig) -> Self {
        self.resilience = config;
        self
    }

    /// The clock health state machines read.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Traces every call with OpenTelemetry (default off), as the reqwest
    /// pool does (see `PoolBuilder::tracer`): a CLIENT span per call, named
    /// `package.Service/Method`, retries as events, and the span's
    /// `traceparent` on every attempt.
    pub fn tracer(mut self, tracer: BoxedTracer) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// Speaks TLS to the endpoints with these settings (lb-tls: a CA file
    /// or the system's roots, the name to verify and send as SNI, a client
    /// certificate), offering ALPN `h2`.
    pub fn tls(mut self, tls: lb_tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Builds the channel. With a DNS target or a source it must run inside
    /// a tokio runtime (the discovery task starts here). Connections are made
    /// lazily, on first use.
    pub fn build(self) -> Result<BalancedChannel<A>, Error> {
        let builder = Balance::builder(&self.service, self.algorithm)
            .resilience(self.resilience)
            .clock(Arc::clone(&self.clock));
        let builder = match self.target {
            Target::Static(endpoints) => builder.endpoints(endpoints),
            Target::Watch(rx) => builder.discovery(rx),
            Target::Stream(changes) => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(Error::Config(
                        "a discovered channel must be built inside a tokio runtime".to_string(),
                    ));
                }
                builder.discovery(lb_discovery::watch_snapshots(changes, Arc::clone(&self.clock)))
            }
        };
        let tls = match &self.tls {
            Some(tls) => Some(tls.connector(&[b"h2"])?),
            None => None,
        };
        let connect_timeout = self.connect_timeout;
        let request_timeout = self.request_timeout;
        let balance = builder.build(move |endpoint: &Endpoint| {
            channel_to(endpoint, connect_timeout, request_timeout, tls.as_ref())
        })?;
        // Inside a runtime, follow discovery at once, not at the first call.
        balance.start();
        Ok(BalancedChannel { balance, tracing: self.tracer.map(|tracer| Arc::new(Tracing::new(tracer))) })
    }
}

/// A lazily connected channel to one endpoint.
fn channel_to(
    endpoint: &Endpoint,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    tls: Option<&lb_tls::TlsConnector>,
) -> Channel {
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(endpoint.address().to_string())
        .path_and_query("/")
        .build()
        // An `Address` is always a valid authority; were it not, the
        // unroutable fallback fails to connect and the endpoint is ejected.
        .unwrap_or_else(|_| http::Uri::from_static("http://0.0.0.0:0/"));
    let mut tonic_endpoint =
        tonic::transport::Endpoint::from(uri).connect_timeout(connect_timeout).tcp_nodelay(true);
    if let Some(timeout) = request_timeout {
        tonic_endpoint = tonic_endpoint.timeout(timeout);
    }
    match tls {
        // A host that cannot be a TLS name fails each connect (never plain text instead).
        Some(tls) => {
            tonic_endpoint.connect_with_connector_lazy(tls::TlsConnector::new(endpoint.address(), tls))
        }
        None => tonic_endpoint.connect_lazy(),
    }
}

#[cfg(test)]
mod tests {
    use lb_core::{Outcome, Timestamp};
    use lb_health::{GiveUp, SplitMix64};

    use super::*;

    #[test]
    fn only_a_call_no_server_saw_goes_again_at_once_and_at_most_three_times_in_all() {
        let policy = transparent_retry();
        let (now, mut rng) = (Timestamp::ZERO, SplitMix64::new(0));
        let mut attempts = policy.start(Method::Post, now);
        for _ in 1..MAX_CONNECT_ATTEMPTS {
            let retry = attempts.next(Outcome::ConnectError, now, &(), &mut rng).unwrap();
            assert_eq!(retry.after, Duration::ZERO);
        }
        assert_eq!(attempts.next(Outcome::ConnectError, now, &(), &mut rng), Err(GiveUp::AttemptsExhausted));
        for seen_by_a_server in [Outcome::Reset, Outcome::Timeout, Outcome::Http5xx(503)] {
            let mut attempts = policy.start(Method::Post, now);
            assert_eq!(attempts.next(seen_by_a_server, now, &(), &mut rng), Err(GiveUp::NotRetryable));
        }
    }
}
