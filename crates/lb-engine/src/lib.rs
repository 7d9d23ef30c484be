//! What the proxy and the client both do around a request, written once.
//!
//! `lb-proxy` and `lb-client` are thin adapters over this crate:
//!
//! - [`Live`] holds an upstream's current [`Generation`]: a balancer over
//!   one endpoint set, each endpoint's [`Extra`] (its [`EndpointGuard`] and
//!   the product's own per-endpoint data) and the outlier detector. A new
//!   set builds a new generation off the hot path; endpoints that stay keep
//!   their extras, health and counters, matched by id.
//! - [`follow`](follow::follow) and [`follow_changes`](follow::follow_changes)
//!   feed discovery into it; [`Upkeep`] and [`every`](upkeep::every) run its
//!   timers and active checks.
//! - [`Attempt`] is one try: pick past tried, full and refusing endpoints,
//!   admit, and report the outcome to the breaker, the extra's metrics, the
//!   outlier detector and the balancer (or give everything back when
//!   dropped). [`Retries`] decides whether and when the request goes again,
//!   under lb-health's `RetryPolicy` and the retry budget.
//! - [`names`] are the metric and span attribute names both publish.
//!
//! ```
//! use std::sync::Arc;
//! use lb_core::{Clock, Endpoint, EndpointSet, Exclusions, ManualClock, Member, Outcome, PickContext, Timestamp};
//! use lb_engine::{Attempt, EndpointGuard, Extra, Live};
//!
//! #[derive(Clone)]
//! struct Backend(Arc<EndpointGuard>);
//! impl Extra for Backend {
//!     type Status = u16;
//!     fn guard(&self) -> &EndpointGuard { &self.0 }
//! }
//!
//! let set = EndpointSet::new(["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())), Timestamp::ZERO);
//! let live = Live::new(lb_algorithms::Algorithm::RoundRobin, set, |_: &Member| Backend(Arc::new(EndpointGuard::new(None, None))), None);
//! let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
//! let generation = live.load();
//! let attempt = Attempt::start(&generation, PickContext::new(), &Exclusions::new(), &clock, clock.now()).unwrap();
//! assert_eq!(generation.endpoints().members()[attempt.index()].state().in_flight(), 1);
//! attempt.finish(Outcome::Success, 200);
//! # use lb_core::Balancer;
//! ```

pub mod attempt;
pub mod follow;
pub mod generation;
pub mod guard;
pub mod names;
pub mod retries;
pub mod upkeep;

pub use attempt::Attempt;
pub use generation::{Extra, Generation, Live};
pub use guard::{Admission, EndpointGuard};
pub use retries::{JitterSeeds, Retries};
pub use upkeep::Upkeep;
