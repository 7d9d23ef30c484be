//! Endpoint selection algorithms for lb, each a [`lb_core::Balancer`] built
//! from an immutable [`lb_core::EndpointSet`].
//!
//! Every `select` is lock-free, allocation-free and syscall-free; it returns
//! only eligible endpoints (health read live from each endpoint's atomics,
//! or ignored in panic mode, `PickContext::ignoring_health`; exclusions
//! honoured) and `None` when there is none. Tables (Maglev, the
//! ketama ring, nginx's smooth WRR order, alias tables) are built off the hot
//! path when a set is built. The crate is `no_std` with `alloc`.
//!
//! | type | name | semantics from |
//! |---|---|---|
//! | [`RoundRobin`] | `round_robin` | — |
//! | [`SmoothWeightedRoundRobin`] | `weighted_round_robin` | nginx upstream round robin |
//! | [`StrideScheduler`] | `stride` | gRPC static stride scheduler |
//! | [`WeightedRandom`] | `random` | Walker/Vose alias method |
//! | [`LeastConnections`] | `least_conn` | nginx `least_conn` |
//! | [`PowerOfTwoChoices`] | `p2c` | Envoy least request, gRFC A48 |
//! | [`PeakEwma`] | `peak_ewma` | Finagle / tower peak-EWMA |
//! | [`KetamaRing`] | `ring_hash` | nginx `hash ... consistent` |
//! | [`FnvRing`] | `fnv_ring` | the user's guide (Go `ConsistentHash`, FNV-1a) |
//! | [`JumpHash`] | `jump` | Lamping & Veach 2014 |
//! | [`Maglev`] | `maglev` | Eisenbud et al. 2016, Envoy weights |
//! | [`Rendezvous`] | `rendezvous` | Thaler & Ravishankar 1998 |
//! | [`BoundedLoad`] | `bounded_load` | Mirrokni et al. 2016, HAProxy |
//! | [`SlowStart`] | `slow_start` | HAProxy `slowstart`, Envoy |
//!
//! Choose by name through [`Algorithm`]; `docs/algorithms.md` says when to
//! use which.
//!
//! ```
//! use core::time::Duration;
//! use lb_algorithms::Algorithm;
//! use lb_core::{BalancerExt, Build, Endpoint, EndpointSet, Outcome, PickContext, Report, Timestamp};
//!
//! let set = EndpointSet::new(
//!     ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
//!     Timestamp::ZERO,
//! );
//! let maglev = "maglev".parse::<Algorithm>().unwrap().build(set);
//! let pick = maglev.pick(&PickContext::new().with_key(b"session-7")).unwrap();
//! let owner = pick.index();
//! pick.complete(Report { outcome: Outcome::Success, latency: Duration::from_millis(2), at: Timestamp::ZERO });
//! // A retry after a failure asks for anyone but the owner.
//! let retry = maglev.pick(&PickContext::new().with_key(b"session-7").excluding(&[owner])).unwrap();
//! assert_ne!(retry.index(), owner);
//! ```
#![no_std]

extern crate alloc;

mod algorithm;
mod bounded;
mod error;
mod fnv_ring;
mod jump;
mod ketama;
mod least_conn;
mod maglev;
mod p2c;
mod peak_ewma;
mod random;
mod rendezvous;
mod ring;
mod round_robin;
mod slow_start;
mod stride;
mod swrr;
#[cfg(test)]
mod testing;
mod util;
mod walk;

pub use algorithm::{Algorithm, AnyBalancer, HashAlgorithm};
pub use bounded::{BoundedLoad, DEFAULT_BALANCE_FACTOR};
pub use error::AlgorithmError;
pub use fnv_ring::{DEFAULT_REPLICAS, FnvRing, fnv1a32};
pub use jump::{JumpHash, jump_bucket};
pub use ketama::{DEFAULT_POINTS_PER_WEIGHT, KetamaRing};
pub use least_conn::LeastConnections;
pub use maglev::{DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, Maglev};
pub use p2c::PowerOfTwoChoices;
pub use peak_ewma::{PeakEwma, PeakEwmaConfig};
pub use random::WeightedRandom;
pub use rendezvous::Rendezvous;
pub use ring::MAX_RING_POINTS;
pub use round_robin::RoundRobin;
pub use slow_start::{SlowStart, SlowStartConfig};
pub use stride::StrideScheduler;
pub use swrr::{MAX_SWRR_TABLE, SmoothWeightedRoundRobin};
pub use util::{Distinct, hash_key};
pub use walk::HashWalk;
