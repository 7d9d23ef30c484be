//! The vocabulary both sides of lb share: endpoints, immutable endpoint
//! snapshots, the [`Balancer`] trait with its feedback handle, request
//! outcomes, health, discovery changes and an injectable clock.
//!
//! `lb-core` has no I/O and no async runtime, and is `no_std` (with `alloc`)
//! when its default `std` feature is off. Algorithms, health state machines,
//! discovery, the client pool and the proxy all speak these types.
//!
//! A pick is [`Balancer::select`] (lock-free, allocation-free) wrapped in a
//! [`Pick`] that counts the request as in flight and carries the outcome back
//! to the balancer, so load-aware algorithms learn from every request.
//!
//! # A proxy-shaped caller
//!
//! A proxy picks per request, with an affinity key taken from the request,
//! and reports how the upstream answered. The trivial balancer here takes the
//! first eligible endpoint; real ones live in `lb-algorithms`.
//!
//! ```
//! use core::time::Duration;
//! use lb_core::{Balancer, BalancerExt, Clock, Endpoint, EndpointSet, ManualClock,
//!               Outcome, PickContext, Report};
//!
//! struct FirstEligible(EndpointSet);
//!
//! impl Balancer for FirstEligible {
//!     fn endpoints(&self) -> &EndpointSet { &self.0 }
//!     fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
//!         (0..self.0.len()).find(|&i| self.0.is_eligible(i, ctx))
//!     }
//! }
//!
//! let clock = ManualClock::new();
//! let set = EndpointSet::new(
//!     ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse::<std::net::SocketAddr>().unwrap())),
//!     clock.now(),
//! );
//! let upstream = FirstEligible(set);
//!
//! // One forwarded request: pick, forward, report.
//! let cookie = b"session=42";
//! let started = clock.now();
//! let pick = upstream.pick(&PickContext::new().with_key(cookie)).expect("an endpoint");
//! assert_eq!(pick.endpoint().address().to_string(), "10.0.0.1:80");
//! clock.advance(Duration::from_millis(3)); // ... the upstream answers 502 ...
//! let now = clock.now();
//! pick.complete(Report { outcome: Outcome::from_status(502), latency: now - started, at: now });
//! ```
//!
//! # A client-shaped caller
//!
//! A client pool retries on another endpoint by excluding the ones it tried,
//! through the same trait.
//!
//! ```
//! use core::time::Duration;
//! use lb_core::{Balancer, BalancerExt, Endpoint, EndpointSet, Outcome, PickContext,
//!               Report, Timestamp};
//!
//! struct FirstEligible(EndpointSet);
//!
//! impl Balancer for FirstEligible {
//!     fn endpoints(&self) -> &EndpointSet { &self.0 }
//!     fn select(&self, ctx: &PickContext<'_>) -> Option<usize> {
//!         (0..self.0.len()).find(|&i| self.0.is_eligible(i, ctx))
//!     }
//! }
//!
//! let set = EndpointSet::new(
//!     ["users-1:8080", "users-2:8080", "users-3:8080"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
//!     Timestamp::ZERO,
//! );
//! let pool = FirstEligible(set);
//!
//! let mut tried = Vec::new();
//! let answered_by = loop {
//!     let Some(pick) = pool.pick(&PickContext::new().excluding(&tried)) else { break None };
//!     // Pretend the first two endpoints refuse the connection.
//!     let outcome = if tried.len() < 2 { Outcome::ConnectError } else { Outcome::Success };
//!     tried.push(pick.index());
//!     let host = pick.endpoint().address().to_string();
//!     pick.complete(Report { outcome, latency: Duration::from_millis(1), at: Timestamp::ZERO });
//!     if outcome.is_success() { break Some(host) }
//! };
//! assert_eq!(answered_by.as_deref(), Some("users-3:8080"));
//! ```
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod balancer;
mod clock;
mod discovery;
mod endpoint;
mod exclusions;
mod health;
mod outcome;
mod set;

pub use balancer::{Balancer, BalancerExt, Build, OwnedPick, Pick, PickContext};
#[cfg(feature = "std")]
pub use clock::MonotonicClock;
pub use clock::{Clock, ManualClock, Timestamp};
pub use discovery::Change;
pub use endpoint::{Address, AddressError, DiscoveryHealth, Endpoint, EndpointId};
pub use exclusions::{Exclusions, pick_admitted};
pub use health::{EndpointState, HealthFlag, HealthStatus};
pub use outcome::{ErrorType, Outcome, Report};
pub use set::{EndpointSet, Member};
