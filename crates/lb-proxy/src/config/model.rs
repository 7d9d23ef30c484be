//! The configuration file's shape, as serde reads it.
//!
//! Every table rejects unknown keys. Values that later rules check keep
//! their position in the file (`Spanned`) so those errors can point at them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_core::Address;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::duration;

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub global: Global,
    /// The admin listener (metrics, health of the proxy itself).
    #[serde(default)]
    pub admin: Admin,
    /// Where clients connect.
    #[serde(default)]
    pub listeners: Vec<Spanned<Listener>>,
    /// Which upstream serves which host and path.
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    /// The upstreams by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<Upstream>>,
    /// OpenTelemetry tracing; off when the section is absent.
    #[serde(default)]
    pub tracing: Option<Tracing>,
    /// The text this configuration was parsed from (empty when built otherwise).
    #[serde(skip)]
    pub text: String,
}

/// OpenTelemetry tracing: a server span per request, exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tracing {
    /// The collector's OTLP/HTTP traces URL (protobuf), plain `http://`.
    pub otlp_endpoint: Spanned<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// The tracer's (instrumentation scope's) name; the guide's is `load-balancer`.
    pub tracer_name: String,
    /// Share of new traces sampled, 0 to 1; a caller's sampled flag always wins.
    pub sample_ratio: Spanned<f64>,
    /// How long one export may take.
    #[serde(with = "duration")]
    pub export_timeout: Duration,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            otlp_endpoint: Spanned::new(0..0, "http://127.0.0.1:4318/v1/traces".to_string()),
            service_name: "lb-proxy".to_string(),
            tracer_name: "load-balancer".to_string(),
            sample_ratio: Spanned::new(0..0, 1.0),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Process-wide settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// Runtime worker threads; 1 runs everything on one thread.
    pub worker_threads: Spanned<usize>,
    /// The largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: Spanned<usize>,
    /// The most request header fields accepted (1 to 256).
    pub max_headers: Spanned<usize>,
    /// The largest request body accepted, in bytes; 0 means no limit.
    pub max_body_bytes: u64,
    /// An upgraded connection (WebSocket) closes after this long with no byte either way
    /// (HAProxy's `timeout tunnel`).
    #[serde(with = "duration::positive")]
    pub tunnel_idle_timeout: Duration,
    /// How much of a request body is kept so the request can be retried.
    pub replay_buffer_bytes: usize,
    /// Close a client connection idle this long between requests.
    #[serde(with = "duration")]
    pub client_idle_timeout: Duration,
    /// Once a request head has begun, all of it must arrive within this (nginx's `client_header_timeout`).
    #[serde(with = "duration::positive")]
    pub client_header_timeout: Duration,
    /// The longest wait between two reads of a request body (nginx's `client_body_timeout`).
    #[serde(with = "duration::positive")]
    pub client_body_timeout: Duration,
    /// The longest wait for one write to a client (nginx's `send_timeout`).
    #[serde(with = "duration::positive")]
    pub send_timeout: Duration,
    /// Networks (CIDR) whose `X-Forwarded-*` and `Forwarded` fields are kept and
    /// extended; from any other peer they are replaced (Envoy trusts no hop by default).
    pub trusted_proxies: Vec<Spanned<String>>,
    /// On stop, how long requests in flight get to finish before their connections are dropped.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// One line per request: off, `key=value` text, or JSON Lines.
    pub access_log: AccessLog,
    /// Where access lines go (appended), relative to the configuration file; stdout when absent.
    pub access_log_file: Option<PathBuf>,
    /// Limits of the HTTP/2 front (`[global.http2]`).
    pub http2: Http2Limits,
}

/// What one HTTP/2 client connection may use; the defaults are Envoy's
/// edge recommendations where it has one, nginx's otherwise.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Limits {
    /// Streams a client may have open at once (nginx `http2_max_concurrent_streams`, 128).
    pub max_concurrent_streams: Spanned<u32>,
    /// Flow-control window of each stream, in bytes: what a client may send
    /// before the proxy reads it (Envoy edge: 64 KiB).
    pub initial_stream_window: Spanned<u32>,
    /// Flow-control window of the whole connection, in bytes (Envoy edge: 1 MiB).
    pub initial_connection_window: Spanned<u32>,
    /// The largest frame payload accepted, in bytes (16 KiB to 16 MiB - 1; RFC 9113's default 16 KiB).
    pub max_frame_size: Spanned<u32>,
    /// Streams a client may reset before the proxy has taken them up; one
    /// more closes the connection with GOAWAY `ENHANCE_YOUR_CALM`, the
    /// rapid-reset defence (CVE-2023-44487).
    pub max_pending_reset_streams: usize,
    /// Streams the proxy may reset for a client's protocol errors before it
    /// closes the connection with GOAWAY `ENHANCE_YOUR_CALM`.
    pub max_error_reset_streams: usize,
    /// Send a PING on a connection after this long without a frame (0s: never).
    #[serde(with = "duration")]
    pub keepalive_interval: Duration,
    /// Close the connection when a PING gets no answer within this.
    #[serde(with = "duration::positive")]
    pub keepalive_timeout: Duration,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: Spanned::new(0..0, 128),
            initial_stream_window: Spanned::new(0..0, 64 * 1024),
            initial_connection_window: Spanned::new(0..0, 1024 * 1024),
            max_frame_size: Spanned::new(0..0, 16 * 1024),
            max_pending_reset_streams: 20,
            max_error_reset_streams: 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl Default for Global {
    fn default() -> Self {
        Global {
            worker_threads: Spanned::new(0..0, 1),
            max_header_bytes: Spanned::new(0..0, 64 * 1024),
            max_headers: Spanned::new(0..0, 100),
            max_body_bytes: 1 << 30,
            tunnel_idle_timeout: Duration::from_secs(3600),
            replay_buffer_bytes: 64 * 1024,
            client_idle_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            access_log: AccessLog::Off,
            access_log_file: None,
            http2: Http2Limits::default(),
        }
    }
}

/// The access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccessLog {
    /// No access log.
    #[default]
    Off,
    /// `key=value` text.
    Text,
    /// One JSON object per line.
    Json,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address of the admin HTTP listener (`/metrics`, `/healthz`).
    pub listen: Spanned<SocketAddr>,
    /// Whether the admin listener runs.
    pub enabled: bool,
    /// Upper bounds, in seconds, of `request_duration_seconds`' buckets (Prometheus' defaults).
    pub histogram_buckets: Spanned<Vec<f64>>,
    /// A bearer token every admin request must carry (`Authorization: Bearer ...`); the
    /// `LB_ADMIN_TOKEN` environment variable gives one when this is absent. Required when the
    /// admin listener is not on a loopback address.
    pub token: Option<String>,
    /// Allow the POST actions: `/reload`, and draining an endpoint and putting it back.
    pub actions: bool,
}

/// The environment variable that gives the admin token when the file does not.
pub const ADMIN_TOKEN_ENV: &str = "LB_ADMIN_TOKEN";

impl Admin {
    /// The token in force: the file's, else [`ADMIN_TOKEN_ENV`]'s (when not empty).
    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok()).filter(|t| !t.is_empty())
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: Spanned::new(0..0, SocketAddr::from(([127, 0, 0, 1], 9901))),
            enabled: true,
            histogram_buckets: Spanned::new(0..0, crate::telemetry::DEFAULT_BUCKETS.to_vec()),
            token: None,
            actions: false,
        }
    }
}

/// One client-facing listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A name for logs and metrics (the address when absent).
    #[serde(default)]
    pub name: Option<String>,
    /// The address to bind.
    pub listen: Spanned<SocketAddr>,
    /// The most client connections open at once; past it a new one is
    /// closed as soon as it is accepted (and counted), never queued.
    #[serde(default = "ten_thousand")]
    pub max_connections: Spanned<usize>,
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<Spanned<ListenerTls>>,
    /// Answer every request with a 308 to the same URL over https (a plain listener only).
    #[serde(default = "no")]
    pub redirect_to_https: Spanned<bool>,
}

/// The certificates a TLS listener shows (files relative to the configuration file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Chosen by the client's SNI; the first is the default, for clients
    /// that send no name or one no certificate holds.
    pub certificates: Vec<TlsCertificate>,
}

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// The chain, leaf first.
    pub cert_file: PathBuf,
    /// The leaf's private key.
    pub key_file: PathBuf,
}

impl ListenerTls {
    /// The settings as lb-tls takes them.
    pub fn to_server_tls(&self) -> lb_tls::ServerTls {
        let certificates = self
            .certificates
            .iter()
            .map(|c| lb_tls::CertificateFiles {
                cert_file: c.cert_file.clone(),
                key_file: c.key_file.clone(),
            })
            .collect();
        lb_tls::ServerTls { certificates }
    }

    /// The rustls configuration: the certificates read, ALPN `h2` then `http/1.1`.
    ///
    /// # Errors
    /// The file at fault and why.
    pub fn server_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, lb_tls::TlsError> {
        Ok(self.reloadable_server_config()?.0)
    }

    /// As [`server_config`](Self::server_config), with the handle a reload
    /// swaps renewed certificates in through.
    ///
    /// # Errors
    /// The file at fault and why.
    pub fn reloadable_server_config(
        &self,
    ) -> Result<(std::sync::Arc<rustls::ServerConfig>, lb_tls::ServedCertificates), lb_tls::TlsError> {
        self.to_server_tls().reloadable_server_config(&[b"h2", b"http/1.1"])
    }
}

fn no() -> Spanned<bool> {
    Spanned::new(0..0, false)
}

fn ten_thousand() -> Spanned<usize> {
    Spanned::new(0..0, 10_000)
}

/// One routing rule: requests whose host and path match go to `upstream`.
///
/// The most specific rule wins: an exact host beats any host, then the
/// longest path prefix.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The `Host` to match (port ignored, case-insensitive); any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// The path prefix to match; `/` matches everything.
    #[serde(default = "root_path")]
    pub path_prefix: Spanned<String>,
    /// The upstream that serves the match.
    pub upstream: Spanned<String>,
}

fn root_path() -> Spanned<String> {
    Spanned::new(0..0, "/".to_string())
}

/// A named group of endpoints and how to balance, protect and forward to them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Where the endpoints come from.
    pub discovery: Spanned<Discovery>,
    /// The selection algorithm, by name (`weighted_round_robin`, the default; `round_robin`, `least_conn`, ...).
    #[serde(default = "default_algorithm")]
    pub algorithm: Spanned<String>,
    /// How requests reach the endpoints: HTTP/1.1, HTTP/2 in cleartext (gRPC), or HTTP/2 over TLS.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the endpoints (and their health checks); plain TCP when absent.
    #[serde(default)]
    pub tls: Option<Spanned<TlsClient>>,
    /// Parameters of the algorithm; each takes its default when absent.
    #[serde(default)]
    pub algorithm_params: AlgorithmParams,
    /// Where hash algorithms take their key from.
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    /// What `Host` header the endpoint sees.
    #[serde(default)]
    pub host_header: HostHeader,
    /// Also send the RFC 7239 `Forwarded` header (the `X-Forwarded-*` headers are always sent).
    #[serde(default)]
    pub forwarded_header: bool,
    /// The `Upgrade` protocols tunnelled to this upstream once an endpoint
    /// answers 101 with one of them; any other `Upgrade` is dropped (HTTP/1.1 only).
    #[serde(default = "websocket_only")]
    pub upgrade_protocols: Vec<String>,
    /// Active HTTP health checks; none when absent.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive outlier detection; none when absent.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// A circuit breaker per endpoint; none when absent.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Retries on another endpoint.
    #[serde(default)]
    pub retry: Retry,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Connection and concurrency limits.
    #[serde(default)]
    pub limits: Limits,
    /// Ramp a new endpoint's share of traffic up over this window.
    #[serde(default, with = "duration::option")]
    pub slow_start: Option<Duration>,
    /// When fewer than this share (percent) of the endpoints are healthy,
    /// balance over all of them (Envoy's panic threshold); 0 turns it off.
    #[serde(default = "fifty_percent")]
    pub panic_threshold: Spanned<u8>,
}

fn fifty_percent() -> Spanned<u8> {
    Spanned::new(0..0, 50)
}

fn websocket_only() -> Vec<String> {
    vec!["websocket".to_string()]
}

/// nginx's default: smooth weighted round robin, which honours weights.
fn default_algorithm() -> Spanned<String> {
    Spanned::new(0..0, "weighted_round_robin".to_string())
}

/// Tuning of the selection algorithms; a key that does not apply to the chosen algorithm is ignored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgorithmParams {
    /// `p2c`: Envoy's `active_request_bias` (default 1.0).
    pub active_request_bias: Option<f64>,
    /// `peak_ewma`: decay time constant (default 10 s).
    #[serde(with = "duration::option")]
    pub tau: Option<Duration>,
    /// `peak_ewma`: RTT of an endpoint not yet measured (default 30 ms).
    #[serde(with = "duration::option")]
    pub default_rtt: Option<Duration>,
    /// `ring_hash`, `bounded_load`: ring points per unit of weight (default 160).
    pub points_per_weight: Option<u32>,
    /// `maglev`, `bounded_load:maglev`: table size, a prime (default 65537).
    pub table_size: Option<u32>,
    /// `bounded_load`: balance factor c > 1 (default 1.25).
    pub balance_factor: Option<f64>,
    /// Slow start: the share a new endpoint starts from, in percent (default 10).
    pub slow_start_min_weight_percent: Option<u8>,
    /// Slow start: how fast the ramp rises (Envoy's `aggression`, default 1.0: linear).
    pub slow_start_aggression: Option<f64>,
    /// `fnv_ring`: points per unit of weight (default 160).
    pub replicas: Option<u32>,
}

/// The protocol spoken to an upstream's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 in cleartext with prior knowledge, one multiplexed connection per endpoint (gRPC).
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`), one multiplexed connection per endpoint; needs `tls`.
    H2,
}

impl UpstreamProtocol {
    /// Whether requests go as HTTP/2 streams on one shared connection.
    pub fn is_http2(self) -> bool {
        matches!(self, UpstreamProtocol::H2c | UpstreamProtocol::H2)
    }

    /// The ALPN protocol offered over TLS.
    pub fn alpn(self) -> &'static [u8] {
        if self.is_http2() { b"h2" } else { b"http/1.1" }
    }
}

/// Where an upstream's endpoints come from; exactly one source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// A fixed list in the file.
    Static(StaticDiscovery),
    /// A file of endpoints, watched for changes.
    File(FileDiscovery),
    /// A DNS name, re-resolved periodically.
    Dns(DnsDiscovery),
    /// A Consul service's healthy instances.
    Consul(ConsulDiscovery),
}

/// A fixed list of endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticDiscovery {
    /// The endpoints.
    pub endpoints: Vec<StaticEndpoint>,
}

/// One endpoint of a static list: `"host:port"` or `{ address, weight, id }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEndpoint {
    /// `ip:port` or `host:port`.
    pub address: Address,
    /// Relative share of traffic, at least 1.
    pub weight: u32,
    /// A name for the endpoint (defaults to the address).
    pub id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailedEndpoint {
    #[serde(deserialize_with = "address")]
    address: Address,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    id: Option<String>,
}

fn address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for StaticEndpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;
        impl<'de> serde::de::Visitor<'de> for EndpointVisitor {
            type Value = StaticEndpoint;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"host:port\" or { address = \"host:port\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<StaticEndpoint, E> {
                let address = text.parse().map_err(E::custom)?;
                Ok(StaticEndpoint { address, weight: 1, id: None })
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<StaticEndpoint, M::Error> {
                let d = DetailedEndpoint::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if d.weight == 0 {
                    // As the file source: 0 would never be picked; leaving the endpoint out drains it.
                    return Err(serde::de::Error::custom(
                        "weight must be at least 1 (to drain an endpoint, leave it out of the list)",
                    ));
                }
                Ok(StaticEndpoint { address: d.address, weight: d.weight, id: d.id })
            }
        }
        deserializer.deserialize_any(EndpointVisitor)
    }
}

fn one() -> u32 {
    1
}

/// A watched file of endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDiscovery {
    /// The file, relative to the configuration file's directory.
    pub path: PathBuf,
}

/// A DNS name to resolve, re-resolved as its records' TTL says.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    /// The name: A/AAAA records when `port` is set, SRV records (which carry ports and weights) otherwise.
    pub name: String,
    /// The port every A/AAAA address gets.
    #[serde(default)]
    pub port: Option<u16>,
    /// Re-resolve no sooner than this, whatever the TTL.
    #[serde(default = "one_second", with = "duration")]
    pub min_ttl: Duration,
    /// Re-resolve no later than this, whatever the TTL.
    #[serde(default = "five_minutes", with = "duration")]
    pub max_ttl: Duration,
    /// Name servers to ask instead of the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub name_servers: Vec<SocketAddr>,
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

/// A Consul service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulDiscovery {
    /// The service name.
    pub service: String,
    /// The Consul agent's HTTP address (defaults to `CONSUL_HTTP_ADDR` or `http://127.0.0.1:8500`).
    #[serde(default)]
    pub address: Option<String>,
    /// The datacenter; the agent's own when absent.
    #[serde(default)]
    pub datacenter: Option<String>,
    /// Only instances with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// TLS to an `https://` agent; absent: Consul's own variables
    /// (`CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`).
    #[serde(default)]
    pub tls: Option<TlsClient>,
}

/// How the proxy verifies a server it connects to over TLS, and the
/// certificate it shows; files are relative to the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClient {
    /// Trust only the CA certificates in this PEM file (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the certificate for this name instead of the host connected to.
    #[serde(default)]
    pub server_name: Option<String>,
    /// A client certificate chain (PEM) for mutual TLS; needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert` (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Accept any certificate (tests only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl TlsClient {
    /// The settings as lb-tls takes them.
    pub fn to_client_tls(&self) -> lb_tls::ClientTls {
        lb_tls::ClientTls {
            ca_file: self.ca_file.clone(),
            server_name: self.server_name.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        }
    }

    /// Makes each file path relative to `base` (the configuration file's directory).
    pub(crate) fn resolve_relative_paths(&mut self, base: &Path) {
        for file in [&mut self.ca_file, &mut self.client_cert, &mut self.client_key].into_iter().flatten() {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
    }
}

/// Where a hash algorithm finds its key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
    /// The request path (without the query).
    Path,
    /// A query parameter's value.
    Query(String),
}

/// What `Host` header the endpoint sees.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HostHeader {
    /// The client's `Host`, unchanged.
    #[default]
    Preserve,
    /// The endpoint's own `host:port`.
    Endpoint,
    /// A fixed value.
    Set(String),
}

/// Active health checks: an HTTP GET, or the gRPC health protocol.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The path to GET.
    #[serde(default = "health_path")]
    pub path: String,
    /// Check with `grpc.health.v1.Health/Check` for this service (`""`: the
    /// whole server) instead of a GET; needs `protocol = "h2c"`.
    #[serde(default)]
    pub grpc_service: Option<Spanned<String>>,
    /// Time between checks of one endpoint.
    #[serde(default = "two_seconds", with = "duration")]
    pub interval: Duration,
    /// How long one check may take.
    #[serde(default = "one_second", with = "duration")]
    pub timeout: Duration,
    /// Consecutive passes that bring an endpoint back.
    #[serde(default = "two")]
    pub rise: Spanned<u32>,
    /// Consecutive failures that take an endpoint out.
    #[serde(default = "three")]
    pub fall: Spanned<u32>,
}

fn health_path() -> String {
    "/health".to_string()
}
fn two_seconds() -> Duration {
    Duration::from_secs(2)
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn two() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}
fn three() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}

/// Passive outlier detection (Envoy's consecutive detectors).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// `"guide"`: the user's guide's passive check, which takes an endpoint out
    /// after more than 5 failures in a row, of any kind: the 6th ejects.
    pub preset: Option<OutlierPreset>,
    /// Eject after this many 5xx answers in a row (default 5, Envoy's; guide 6).
    pub consecutive_5xx: Option<u32>,
    /// How often ejection multipliers decay (and the ejection clock is checked).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Eject after this many connect errors, timeouts or resets in a row,
    /// counted apart from 5xx (default 5); 0 counts them with the 5xx (guide).
    pub consecutive_local_origin_failures: Option<u32>,
    /// The first ejection's length; the n-th lasts n times as long.
    #[serde(with = "duration")]
    pub base_ejection_time: Duration,
    /// The longest ejection.
    #[serde(with = "duration")]
    pub max_ejection_time: Duration,
    /// At most this share of endpoints ejected at once (one may always be).
    pub max_ejection_percent: Spanned<u8>,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            preset: None,
            consecutive_5xx: None,
            interval: Duration::from_secs(10),
            consecutive_local_origin_failures: None,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: Spanned::new(0..0, 10),
        }
    }
}

/// Named outlier detection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutlierPreset {
    /// The guide's `PassiveCheck`: `failures > 5` of any kind in a row take an endpoint out.
    Guide,
}

impl OutlierDetection {
    /// `(consecutive_5xx, consecutive_local_origin_failures)` in force; 0 is off.
    pub fn consecutive(&self) -> (u32, u32) {
        let (five_xx, local) = match self.preset {
            None => (5, 5),
            Some(OutlierPreset::Guide) => (6, 0),
        };
        (self.consecutive_5xx.unwrap_or(five_xx), self.consecutive_local_origin_failures.unwrap_or(local))
    }
}

/// A per-endpoint circuit breaker (gobreaker's model): it opens when one of
/// its trip rules holds. Every key is optional; absent ones come from the
/// `preset`, or from the defaults below without one.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// Start from a named set of values: `"guide"` is the user's guide's gobreaker settings.
    pub preset: Option<BreakerPreset>,
    /// Open after this many failed requests in a row (default 5); 0 turns this rule off.
    pub consecutive_failures: Option<u32>,
    /// The ratio rule: once at least this many requests were counted... (default 3)
    pub min_requests: Option<u32>,
    /// ...open when this share of them failed, 0 < ratio ≤ 1; absent, the ratio rule is off.
    pub failure_ratio: Option<Spanned<f64>>,
    /// How long the breaker stays open before letting trial requests through (default 10 s).
    #[serde(with = "duration::option")]
    pub open_timeout: Option<Duration>,
    /// Trial requests admitted while half-open; that many successes close it (default 1).
    pub half_open_requests: Option<Spanned<u32>>,
    /// Clear the closed state's counts this often (default: never).
    #[serde(with = "duration::option")]
    pub interval: Option<Duration>,
}

/// Named breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerPreset {
    /// The guide's gobreaker example: `MaxRequests` 3, `Interval` 60 s, `Timeout` 10 s,
    /// trip when `Requests >= 3` and `TotalFailures / Requests >= 0.6`.
    Guide,
}

/// A breaker's settings once the preset and the defaults are applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerRules {
    /// 0: off.
    pub consecutive_failures: u32,
    /// `(min_requests, failure_ratio)`, when the ratio rule is on.
    pub ratio: Option<(u32, f64)>,
    /// Open, then half-open after this.
    pub open_timeout: Duration,
    /// Half-open trials; that many successes close it.
    pub half_open_requests: u32,
    /// Zero: never.
    pub interval: Duration,
}

impl CircuitBreaker {
    /// The settings in force: keys set here, else the preset's, else the defaults.
    pub fn rules(&self) -> BreakerRules {
        let base = match self.preset {
            None => BreakerRules {
                consecutive_failures: 5,
                ratio: None,
                open_timeout: Duration::from_secs(10),
                half_open_requests: 1,
                interval: Duration::ZERO,
            },
            Some(BreakerPreset::Guide) => BreakerRules {
                consecutive_failures: 0,
                ratio: Some((3, 0.6)),
                open_timeout: Duration::from_secs(10),
                half_open_requests: 3,
                interval: Duration::from_secs(60),
            },
        };
        let min_requests = self.min_requests.or(base.ratio.map(|(m, _)| m)).unwrap_or(3);
        let ratio = match &self.failure_ratio {
            Some(ratio) => Some((min_requests, *ratio.get_ref())),
            None => base.ratio.map(|(_, r)| (min_requests, r)),
        };
        BreakerRules {
            consecutive_failures: self.consecutive_failures.unwrap_or(base.consecutive_failures),
            ratio,
            open_timeout: self.open_timeout.unwrap_or(base.open_timeout),
            half_open_requests: self
                .half_open_requests
                .as_ref()
                .map_or(base.half_open_requests, |h| *h.get_ref()),
            interval: self.interval.unwrap_or(base.interval),
        }
    }
}

/// Retrying a failed request on another endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Total tries including the first; 1 disables retries. Clamped to 5 as in gRPC.
    pub attempts: Spanned<u32>,
    /// Which failures are retried.
    pub retry_on: Vec<RetryOn>,
    /// Retry non-idempotent methods (POST, PATCH) too.
    pub non_idempotent: bool,
    /// The retry budget: retries may add this percentage of requests...
    pub budget_percent: Spanned<u32>,
    /// ...plus this many retries per second...
    pub budget_min_per_second: u32,
    /// ...counted over this window.
    #[serde(with = "duration")]
    pub budget_window: Duration,
    /// How the wait before a retry grows and is randomised.
    pub backoff: BackoffKind,
    /// The first wait (the `initialBackoff` of `grpc`).
    #[serde(with = "duration::spanned")]
    pub backoff_base: Spanned<Duration>,
    /// The longest wait.
    #[serde(with = "duration::spanned")]
    pub backoff_max: Spanned<Duration>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: Spanned::new(0..0, 2),
            retry_on: vec![RetryOn::ConnectError, RetryOn::Reset],
            non_idempotent: false,
            budget_percent: Spanned::new(0..0, 20),
            budget_min_per_second: 10,
            budget_window: Duration::from_secs(10),
            backoff: BackoffKind::FullJitter,
            backoff_base: Spanned::new(0..0, Duration::from_millis(25)),
            backoff_max: Spanned::new(0..0, Duration::from_millis(250)),
        }
    }
}

/// The wait before a retry, `t = min(backoff_max, backoff_base * 2^(n-1))`
/// for retry `n` randomised as named (AWS, "Exponential Backoff And Jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// A uniform wait in `[0, t)`; Envoy's default.
    #[default]
    FullJitter,
    /// `t/2` plus a uniform wait in `[0, t/2)`.
    EqualJitter,
    /// `min(backoff_max, U(backoff_base, 3 * previous wait))`.
    Decorrelated,
    /// gRFC A6: `min(backoff_base * 1.6^(n-1), backoff_max) * U(0.8, 1.2)`.
    Grpc,
    /// Retry at once.
    None,
}

/// A kind of failure that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The connection could not be made.
    ConnectError,
    /// The connection broke before the response started.
    Reset,
    /// The per-try timeout expired before the response started.
    Timeout,
    /// The endpoint answered 502, 503 or 504.
    GatewayError,
    /// The endpoint answered any 5xx.
    #[serde(rename = "5xx")]
    Http5xx,
}

/// Timeouts of one upstream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Connecting to an endpoint.
    #[serde(with = "duration")]
    pub connect: Duration,
    /// The whole request, all tries included, until the response headers arrive.
    #[serde(with = "duration")]
    pub request: Duration,
    /// One try, until the response headers arrive.
    #[serde(with = "duration")]
    pub per_try: Duration,
    /// Close a pooled connection idle this long; keep it below the backend's own idle timeout.
    #[serde(with = "duration")]
    pub idle: Duration,
    /// The longest wait between two reads of a response body (nginx's `proxy_read_timeout`).
    #[serde(with = "duration::positive")]
    pub read: Duration,
    /// The longest wait for one write of a request to an endpoint (nginx's `proxy_send_timeout`).
    #[serde(with = "duration::positive")]
    pub send: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(30),
            per_try: Duration::from_secs(15),
            idle: Duration::from_secs(50),
            read: Duration::from_secs(60),
            send: Duration::from_secs(60),
        }
    }
}

/// Connection and concurrency limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Idle keep-alive connections kept per endpoint.
    pub max_idle_connections_per_endpoint: usize,
    /// Requests in flight per endpoint (with HTTP/1.1, also the most
    /// connections open to it); 0 means no limit.
    pub max_in_flight_per_endpoint: u32,
    /// Requests in flight across the upstream; 0 means no limit.
    pub max_in_flight: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_idle_connections_per_endpoint: 256, max_in_flight_per_endpoint: 0, max_in_flight: 0 }
    }
}
