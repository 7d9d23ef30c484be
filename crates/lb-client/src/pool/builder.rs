//! Configuring a [`Pool`]: endpoints, algorithm, timeouts, connection pool
//! and resilience. The defaults follow the production checklist of the
//! user's guide (§7.3): a 30 s overall request timeout (Go's
//! `Client.Timeout`), pooled idle connections closed after 90 s
//! (`IdleConnTimeout`), at most 10 idle connections per endpoint
//! (`MaxIdleConnsPerHost`), a 10 s connect timeout that covers the TLS
//! handshake (`TLSHandshakeTimeout`), and no redirects followed
//! (`CheckRedirect` returning `ErrUseLastResponse`). Go's
//! `ExpectContinueTimeout` has no counterpart: reqwest 0.13 offers no such
//! setting and sends a request body right after its head.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_core::{Build, Clock, Endpoint, EndpointSet, Member, MonotonicClock};
use lb_health::{Hedging, RetryPolicy};
use opentelemetry::global::BoxedTracer;
use tokio::sync::watch;

use super::{Pool, Shared};
use crate::Error;
use crate::attempt::Guard;
use crate::live::{self, AbortOnDrop};
use crate::resilience::{Resilience, ResilienceConfig};
use lb_engine::Live;

/// Settings the send loop reads per request.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) timeout: Duration,
    /// The retry policy for requests as their method says.
    pub(crate) retry: RetryPolicy,
    /// The same policy for requests marked idempotent whatever their method.
    pub(crate) retry_marked_idempotent: RetryPolicy,
    pub(crate) hedging: Option<Hedging>,
}

/// Where the pool's endpoints come from.
enum Source {
    Static(Vec<Endpoint>),
    Watch(watch::Receiver<EndpointSet>),
    Stream(lb_discovery::ChangeStream, lb_discovery::SourceStatus),
}

/// Builds a [`Pool`]; start with [`Pool::builder`].
#[must_use = "a builder does nothing until built"]
pub struct PoolBuilder<A> {
    service: String,
    algorithm: A,
    source: Source,
    connections: ClientSettings,
    timeout: Duration,
    max_connection_age: Option<Duration>,
    retry: RetryPolicy,
    hedging: Option<Hedging>,
    resilience: ResilienceConfig,
    clock: Arc<dyn Clock>,
    tracer: Option<BoxedTracer>,
}

impl<A> std::fmt::Debug for PoolBuilder<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder").field("service", &self.service).finish_non_exhaustive()
    }
}

impl<A: Build + 'static> PoolBuilder<A> {
    pub(crate) fn new(service: &str, algorithm: A) -> Self {
        PoolBuilder {
            service: service.to_string(),
            algorithm,
            source: Source::Static(Vec::new()),
            connections: ClientSettings {
                https: false,
                tls: lb_tls::ClientTls::default(),
                connect_timeout: Duration::from_secs(10),
                pool_idle_timeout: Duration::from_secs(90),
                pool_max_idle_per_host: 10,
                http2_prior_knowledge: false,
            },
            timeout: Duration::from_secs(30),
            max_connection_age: Some(Duration::from_secs(300)),
            retry: RetryPolicy::default(),
            hedging: None,
            resilience: ResilienceConfig::default(),
            clock: Arc::new(MonotonicClock::new()),
            tracer: None,
        }
    }

    /// A fixed list of endpoints (replace it later with [`Pool::set_endpoints`]).
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        self.source = Source::Static(endpoints.into_iter().collect());
        self
    }

    /// Follows a discovery channel: every published set replaces the
    /// endpoints (`lb-discovery` and `lb-consul` publish through one).
    pub fn discovery(mut self, endpoints: watch::Receiver<EndpointSet>) -> Self {
        self.source = Source::Watch(endpoints);
        self
    }

    /// Follows any discovery source: `lb_discovery::DnsSource`,
    /// `lb_discovery::FileSource`, `lb_consul::HealthWatch`...
    pub fn source(mut self, source: impl lb_discovery::Source) -> Self {
        let (changes, status) = lb_discovery::watched(source);
        self.source = Source::Stream(changes, status);
        self
    }

    /// Talks HTTPS to the endpoints (rustls), verified against the system's
    /// roots under the endpoint's host; [`tls`](Self::tls) to say more.
    pub fn https(mut self, https: bool) -> Self {
        self.connections.https = https;
        self
    }

    /// Talks HTTPS to the endpoints with these settings: a CA file instead
    /// of the system's roots, the name to verify (endpoints are usually IP
    /// addresses, which a certificate seldom names), a client certificate
    /// for mutual TLS. ALPN offers `h2` and `http/1.1`. The files are read
    /// when the pool is built and again with each fresh client
    /// ([`max_connection_age`](Self::max_connection_age)), so renewed
    /// certificates are picked up.
    pub fn tls(mut self, tls: lb_tls::ClientTls) -> Self {
        self.connections.https = true;
        self.connections.tls = tls;
        self
    }

    /// The overall time a request may take, across all attempts and
    /// backoffs, reading the response body included (default 30 s, Go's
    /// `Client.Timeout` in the guide's checklist); a request can override it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a TCP connect and TLS handshake may take together (default
    /// 10 s, the guide's `TLSHandshakeTimeout`).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connections.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.connections.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per endpoint (default 10).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.connections.pool_max_idle_per_host = max;
        self
    }

    /// The longest a connection is reused (default 5 min; `None` keeps
    /// connections as long as they work). The pool swaps in a fresh reqwest
    /// client this often; requests in flight finish on the old one, whose
    /// connections then close. This re-resolves host names and rebalances
    /// long-lived connections after a scale-up (reqwest#3033).
    pub fn max_connection_age(mut self, age: Option<Duration>) -> Self {
        self.max_connection_age = age;
        self
    }

    /// Speaks HTTP/2 without negotiation (for h2c endpoints).
    pub fn http2_prior_knowledge(mut self, yes: bool) -> Self {
        self.connections.http2_prior_knowledge = yes;
        self
    }

    /// How many times a request may be sent in all, the first included
    /// (default 3, at most 5 as in gRPC). 1 disables retries.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.retry.max_attempts = attempts;
        self
    }

    /// Replaces the retry policy (`lb_health::RetryPolicy`): which failures
    /// are retried (default: refused connections, resets, timeouts, 502, 503
    /// and 504), whether non-idempotent methods may be, a per-try timeout,
    /// and the backoff (default Envoy's: 25 ms base, 250 ms cap, full
    /// jitter). Every retry also needs the shared retry budget, and the
    /// request's timeout bounds them all.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Hedges idempotent requests (default off): after `hedging.delay`
    /// without an answer a copy goes to another endpoint, up to
    /// `hedging.max_attempts` copies, each taken from the retry budget; the
    /// first good answer wins and the rest are cancelled. Replaces retries
    /// for those requests.
    pub fn hedging(mut self, hedging: Option<Hedging>) -> Self {
        self.hedging = hedging;
        self
    }

    /// Replaces the resilience settings (breakers, outlier detection,
    /// in-flight limits, active checks, retry budget).
    pub fn resilience(mut self, config: ResilienceConfig) -> Self {
        self.resilience = config;
        self
    }

    /// The clock that health state machines read (default: the monotonic clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Traces every call with OpenTelemetry (default off): a CLIENT span
    /// per call, named after its method, a child of the caller's current
    /// context, with the proxy's attributes (`lb.upstream`, `backend`,
    /// `http.response.status_code`, `error.type`) and a `retry` event per
    /// retry. Every attempt carries the span's W3C `traceparent`, so an
    /// lb-proxy and the backend behind it join the same trace. Pass, say,
    /// `opentelemetry::global::tracer("checkout")`.
    pub fn tracer(mut self, tracer: BoxedTracer) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// Builds the pool. Must run inside a tokio runtime: it starts the
    /// discovery follower and the connection rotation.
    pub fn build(mut self) -> Result<Pool<A>, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config("a pool must be built inside a tokio runtime".to_string()));
        }
        if self.service.is_empty() || reqwest::Url::parse(&format!("http://{}/", self.service)).is_err() {
            return Err(Error::Config(format!("`{}` cannot be a service name in a URL", self.service)));
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::Config("max_attempts must be at least 1".to_string()));
        }
        let client = Arc::new(ArcSwap::from_pointee(self.connections.build()?));
        let service: Arc<str> = Arc::from(self.service.as_str());
        let mut resilience = Resilience::new(self.resilience.clone(), Arc::clone(&self.clock), &service)?;
        if self.connections.https {
            resilience = resilience.checking_over(&self.connections.tls)?;
        }
        let resilience = Arc::new(resilience);
        crate::telemetry::describe();
        let source = std::mem::replace(&mut self.source, Source::Static(Vec::new()));
        let (set, follow, discovery) = match source {
            Source::Static(endpoints) => (EndpointSet::new(endpoints, self.clock.now()), None, None),
            Source::Watch(rx) => {
                let set = rx.borrow().clone();
                (set, Some(rx), None)
            }
            Source::Stream(changes, status) => {
                let rx = lb_discovery::watch_snapshots(changes, Arc::clone(&self.clock));
                (EndpointSet::empty(), Some(rx), Some(status))
            }
        };
        let new_guard = {
            let service = Arc::clone(&service);
            let resilience = Arc::clone(&resilience);
            move |member: &Member| Guard::new(&service, member, &resilience)
        };
        let live = Arc::new(Live::new(self.algorithm, set, new_guard, self.resilience.outlier.clone()));
        let mut tasks = Vec::new();
        if let Some(rx) = follow {
            tasks.push(live::follow(&live, rx));
        }
        if let Some(age) = self.max_connection_age.filter(|age| !age.is_zero()) {
            tasks.push(AbortOnDrop(rotate_clients(&client, age, self.connections.clone())));
        }
        tasks.extend(resilience.spawn_sweeper(Arc::clone(&live)));
        let retry_marked_idempotent = RetryPolicy { retry_non_idempotent: true, ..self.retry.clone() };
        let settings = Settings {
            timeout: self.timeout,
            retry: self.retry.clone(),
            retry_marked_idempotent,
            hedging: self.hedging.take(),
        };
        let scheme = if self.connections.https { "https" } else { "http" };
        Ok(Pool {
            shared: Arc::new(Shared {
                service,
                scheme,
                live,
                discovery,
                client,
                resilience,
                clock: self.clock,
                settings,
                tracing: self.tracer.take().map(crate::otel::Tracing::new),
                _tasks: tasks,
            }),
        })
    }
}

/// How the reqwest client is built, kept to build fresh ones.
#[derive(Debug, Clone)]
struct ClientSettings {
    https: bool,
    tls: lb_tls::ClientTls,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    http2_prior_knowledge: bool,
}

impl ClientSettings {
    fn build(&self) -> Result<reqwest::Client, Error> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // reqwest sets up TLS even for plain HTTP. Losing a race with
            // another installer is fine: one provider wins.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .no_proxy();
        if self.http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        if self.https {
            let alpn: &[&[u8]] = if self.http2_prior_knowledge { &[b"h2"] } else { &[b"h2", b"http/1.1"] };
            let tls = self.tls.client_config(alpn)?;
            builder = builder.tls_backend_preconfigured(rustls::ClientConfig::clone(&tls));
        }
        builder.build().map_err(Error::Client)
    }
}

/// Swaps in a fresh client every `age`, so no connection is reused for much
/// longer than that: the old client's connections close once the requests
/// still holding it finish.
fn rotate_clients(
    client: &Arc<ArcSwap<reqwest::Client>>,
    age: Duration,
    settings: ClientSettings,
) -> tokio::task::JoinHandle<()> {
    let client = Arc::downgrade(client);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(super::send::instant_after(age), age);
        loop {
            ticks.tick().await;
            let Some(client) = client.upgrade() else { break };
            match settings.build() {
                Ok(fresh) => client.store(Arc::new(fresh)),
                Err(error) => tracing::warn!(%error, "cannot build a fresh HTTP client; keeping the old one"),
            }
        }
    })
}
