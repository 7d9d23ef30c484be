//! Client-side load balancing: the application knows a service's endpoints
//! and picks one itself for each request.
//!
//! Three front ends share one engine:
//!
//! - [`Pool`]: a reqwest client for a logical service. A request to
//!   `http://users/v1/me` goes to an endpoint picked for it, with timeouts,
//!   pooled connections, a maximum connection age, retries on another
//!   endpoint (`lb_health::RetryPolicy`) under a shared budget, optional
//!   hedging, per-endpoint circuit breakers and in-flight limits, passive
//!   outlier ejection, optional active health checks, and per-request
//!   affinity keys for consistent-hash algorithms.
//! - [`Balance`]: a tower [`Service`](tower::Service) (and [`BalanceLayer`])
//!   that balances any cloneable per-endpoint service, such as a hyper client.
//! - [`grpc`]: a balanced tonic channel for generated clients, whose picker
//!   is any `lb-algorithms` algorithm (round robin by default) and whose
//!   endpoints come from DNS, Consul or any discovery channel.
//!
//! The engine: discovery publishes [`EndpointSet`](lb_core::EndpointSet)
//! snapshots on a `tokio::sync::watch` channel (see `lb_discovery::watch_snapshots`);
//! each one is turned into a balancer (`lb_core::Build`) off the hot path and
//! swapped in atomically. Every request picks with
//! [`OwnedPick`](lb_core::OwnedPick), asks the endpoint's breaker, and
//! reports its outcome and latency back, so least-connections, P2C and
//! peak-EWMA see real load. Metrics use the names in [`telemetry`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use lb_client::Pool;
//! use lb_core::{Endpoint, HealthStatus};
//!
//! let endpoints = ["127.0.0.1:8081", "127.0.0.1:8082"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap()));
//! let pool = Pool::builder("users", lb_algorithms::Algorithm::RoundRobin).endpoints(endpoints).build().unwrap();
//! assert_eq!(pool.endpoints().len(), 2);
//! assert!(pool.endpoints().iter().all(|(_, health)| *health == HealthStatus::Healthy));
//! // `pool.get("/v1/me").send().await` would now go to one of them.
//! # });
//! ```

mod attempt;
mod balance;
mod classify;
mod error;
pub mod grpc;
mod live;
mod otel;
mod pool;
mod resilience;
pub mod telemetry;

pub use balance::{
    Balance, BalanceBuilder, BalanceLayer, HeaderKey, MakeEndpoint, NoKey, RequestKey, RequestMethod,
    ResponseOutcome, Retrying,
};
pub use classify::error_chain;
pub use error::Error;
pub use pool::{Pool, PoolBuilder, RequestBuilder};
pub use resilience::{BudgetConfig, ResilienceConfig};
