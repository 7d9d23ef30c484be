//! `lb-proxy`: the server-side reverse proxy of lb, on hyper 1.x.
//!
//! A TOML [`Config`] names listeners, routes (host and path prefix to
//! upstream) and upstreams (discovery, algorithm, health, retries, timeouts,
//! limits). [`Proxy::start`] binds the listeners and forwards each request:
//! it loads the upstream's current snapshot (swapped atomically when
//! discovery changes it), picks an endpoint with an `lb-algorithms`
//! balancer, sends the request over a pooled keep-alive connection, streams
//! both bodies, and reports the outcome to the balancer, the circuit breaker
//! and the metrics. Failures before the response starts are retried on
//! another endpoint under a retry budget, after a jittered backoff
//! (Envoy's 25 ms to 250 ms full jitter by default; a connect error goes
//! again at once).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let config = lb_proxy::Config::parse(r#"
//!     [admin]
//!     enabled = false
//!
//!     [[listeners]]
//!     listen = "127.0.0.1:0"
//!
//!     [[routes]]
//!     path_prefix = "/"
//!     upstream = "web"
//!
//!     [upstreams.web]
//!     algorithm = "weighted_round_robin"
//!     discovery.static.endpoints = [{ address = "127.0.0.1:9", weight = 2 }]
//! "#, "inline.toml").unwrap();
//! let proxy = lb_proxy::Proxy::new(config).start().await.unwrap();
//! assert_eq!(proxy.listen_addresses().len(), 1);
//! proxy.shutdown().await;
//!
//! let error = lb_proxy::Config::parse("[[routes]]\nupstream = \"nope\"\n", "bad.toml").unwrap_err();
//! assert_eq!(error.to_string(), "bad.toml:2:12: route refers to unknown upstream `nope`; defined upstreams: []");
//! # });
//! ```

mod access_log;
mod admin;
mod attempt;
mod background;
mod balancing;
mod body;
mod bounded;
pub mod config;
mod consul;
pub mod demo;
mod duplex;
mod forward;
mod front;
#[cfg(test)]
mod fuzzing;
mod headers;
mod health;
mod http1;
mod otel;
mod path;
mod pool;
mod reload;
mod retry;
mod route;
mod runtime;
mod server;
mod signals;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod upstream;
mod workers;

pub use access_log::AccessEntry;
pub use admin::{ReloadRequest, metrics_handle};
pub use config::{Config, ConfigError};
pub use reload::ReloadError;
pub use server::{Proxy, RunningProxy, StartError};
pub use signals::{ReloadSignal, StopSignal};
