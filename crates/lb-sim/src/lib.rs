//! A deterministic, seeded discrete-event simulator of load balancing, to
//! choose an algorithm by seeing it.
//!
//! It drives the real balancers of `lb-algorithms` and the real breaker,
//! outlier detector, retry policy and retry budget of `lb-health`, as
//! `lb-engine` drives them around each request, on a simulated
//! [`Clock`](lb_core::Clock) (a [`ManualClock`](lb_core::ManualClock) moved
//! from event to event). Backends are simulated (service-time distributions,
//! concurrency with a FIFO queue, faults: slow, dead, flapping, failing, cold)
//! and so are clients (open-loop Poisson arrivals, or closed loops). Nothing
//! reads the wall clock and every loop is bounded: the same [`Setup`] gives
//! the same [`Measured`] on every run.
//!
//! [`scenarios::cases`] lists the nine scenarios of issue 18;
//! `cargo xtask bench scenarios` plays them, prints the table and writes the
//! plots and figures to `docs/scenarios/`.
//!
//! ```
//! use std::time::Duration;
//! use lb_sim::{Fault, Health, Setup, run};
//!
//! // Ten backends at 70 % load, one of them 10x slower, for 5 simulated
//! // seconds; one attempt per request, no breaker, no ejection.
//! let mut setup = Setup { duration: Duration::from_secs(5), ..Setup::uniform(10, 0.7) };
//! setup.backends[0].fault = Fault::Slow(10.0);
//! assert_eq!(setup.health, Health::Bare);
//!
//! setup.algorithm = "round_robin".parse().unwrap();
//! let round_robin = run(&setup).figures();
//! setup.algorithm = "peak_ewma".parse().unwrap();
//! let peak_ewma = run(&setup).figures();
//!
//! // Round robin keeps sending a tenth of the load to the slow one; peak-EWMA learns.
//! assert!(round_robin.share[0] > 0.09);
//! assert!(peak_ewma.share[0] < 0.02);
//! assert!(peak_ewma.p99 < round_robin.p99);
//! assert_eq!(run(&setup), run(&setup), "same seed, same result");
//! ```

mod keys;
pub mod scenarios;
mod setup;
mod sim;
mod stats;

pub use keys::keys_moved;
pub use setup::{BackendSpec, Fault, Health, Keys, Load, ServiceTime, Setup};
pub use sim::run;
pub use stats::{Figures, Measured};
