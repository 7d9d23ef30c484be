//! Consul for lb: watch a service's healthy instances as an lb-discovery
//! source, and register a service (with an HTTP check) so others find it.
//!
//! It speaks Consul's documented HTTP API directly with reqwest:
//! [`HealthWatch`] runs blocking queries on `/v1/health/service/:service`,
//! [`ConsulClient::register_guarded`] announces an instance and returns a
//! [`RegistrationGuard`] that takes it back on shutdown. The address and
//! token come from [`ConsulConfig`], which reads `CONSUL_HTTP_ADDR` and
//! `CONSUL_HTTP_TOKEN` as Consul's CLI does; the token travels in
//! `X-Consul-Token`.
//!
//! # Why not an existing crate
//!
//! The crates.io release of `consulrs` (0.1.0, 2021) has no health
//! endpoint, is unmaintained since 2022, pulls reqwest 0.11, hyper 0.14 and
//! native-tls, and carries a future-incompatibility warning; `rs-consul`
//! does not expose checks, `Meta` or `Weights`, which are exactly what
//! balancing needs. The four calls lb makes are small, so they live here.
//!
//! # Health rules
//!
//! The query does not send `passing`, because that would hide warning
//! instances and `Weights.Warning` could never apply. Instead, any instance
//! with a critical check (node checks such as `serfHealth` included) is
//! dropped; a warning instance stays at its warning weight and is marked
//! degraded (its [`lb_core::Endpoint::discovery_health`] is `Warning`, which
//! [`lb_discovery::watch_snapshots`] turns into the `DiscoveryWarning` health flag).
//!
//! # TLS
//!
//! An `https://` agent is verified with [`lb_tls`] on rustls: against the
//! system's roots, or `CONSUL_CACERT`; for `CONSUL_TLS_SERVER_NAME` when
//! set; showing `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY` to an agent
//! with `verify_incoming`. `CONSUL_HTTP_SSL=true` makes a bare `host:port`
//! https, and `CONSUL_HTTP_SSL_VERIFY=false` turns verification off, as
//! Consul's CLI does. A file that cannot be used is named in the error
//! [`ConsulClient::new`] returns.
//!
//! # Testing
//!
//! With the `testing` feature, [`testing::FakeConsul`] is a contract fake
//! of the Consul HTTP API endpoints above (NOT Consul) for tests: this
//! crate's own, and the Consul end-to-end tests of `lb-client` and
//! `lb-proxy`.
//!
//! ```
//! use lb_consul::{ServiceEntry, endpoints_from};
//!
//! // One entry as Consul documents it (trimmed): a warning instance.
//! let body = r#"[{
//!   "Node": {"Node": "foobar", "Address": "10.1.10.12", "Datacenter": "dc1"},
//!   "Service": {"ID": "redis", "Service": "redis", "Tags": ["primary"], "Address": "",
//!               "Port": 8000, "Meta": {"redis_version": "4.0"},
//!               "Weights": {"Passing": 10, "Warning": 1}},
//!   "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
//!              {"CheckID": "service:redis", "Status": "warning", "ServiceID": "redis"}]
//! }]"#;
//! let entries: Vec<ServiceEntry> = serde_json::from_str(body).unwrap();
//! let endpoints = endpoints_from(&entries, None);
//! assert_eq!(endpoints[0].id().as_str(), "foobar/redis");
//! assert_eq!(endpoints[0].address().to_string(), "10.1.10.12:8000");
//! assert_eq!(endpoints[0].weight(), 1, "the warning weight");
//! ```
//!
//! Wiring a watch to snapshots (needs an agent, so not run here):
//!
//! ```no_run
//! # async fn demo() -> Result<(), lb_consul::ConsulError> {
//! use std::time::Duration;
//! use lb_consul::{ConsulClient, HealthWatch};
//! use lb_core::MonotonicClock;
//!
//! let client = ConsulClient::from_env()?;
//! let watch = HealthWatch::new(client, "web").tag("v2").wait(Duration::from_secs(30));
//! let mut snapshots = lb_discovery::watch_snapshots(lb_discovery::changes(watch), MonotonicClock::new());
//! while snapshots.changed().await.is_ok() {
//!     let set = snapshots.borrow_and_update().clone();
//!     println!("web has {} healthy instances", set.len());
//! }
//! # Ok(()) }
//! ```

mod api;
mod blocking;
mod client;
mod config;
mod endpoints;
mod error;
#[cfg(test)]
mod fuzz;
mod registration;
#[cfg(feature = "testing")]
pub mod testing;
mod watch;

pub use api::{AgentService, CheckStatus, HealthCheck, HttpCheck, Node, Registration, ServiceEntry, Weights};
pub use blocking::{
    Backoff, MAX_WAIT, MIN_WAIT, RateLimiter, go_duration, index_to_send, next_index, request_timeout,
};
pub use client::{ConsulClient, HealthQuery, Indexed};
pub use config::{
    ADDR_ENV, CACERT_ENV, CLIENT_CERT_ENV, CLIENT_KEY_ENV, ConsulConfig, DEFAULT_ADDR, HTTP_SSL_ENV,
    HTTP_SSL_VERIFY_ENV, TLS_SERVER_NAME_ENV, TOKEN_ENV,
};
pub use endpoints::{aggregate_status, endpoints_from, meta_keys};
pub use error::ConsulError;
pub use lb_tls::ClientTls;
pub use registration::RegistrationGuard;
pub use watch::{DEFAULT_MIN_INTERVAL, DEFAULT_WAIT, HealthWatch};
