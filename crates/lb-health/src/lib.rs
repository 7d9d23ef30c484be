//! Resilience state machines shared by the proxy and the client pool:
//! circuit breakers, passive outlier detection, active-check rise/fall,
//! retry policy, backoff, retry budgets and hedging.
//!
//! Everything here is a pure state machine: time comes in as a
//! [`Timestamp`](lb_core::Timestamp) from the caller's [`Clock`](lb_core::Clock),
//! randomness through the [`Rng`] trait, and nothing does I/O. The crate is
//! `no_std` + `alloc` without its default `std` feature. The `tokio` feature
//! adds [`prober`], the active HTTP health checker.
//!
//! Per request, the pieces compose like this: the breaker gates admission,
//! the outlier detector keeps ejected endpoints out of the pick set, the
//! retry budget gates retries, and one deadline bounds everything.
//!
//! ```
//! use core::time::Duration;
//! use lb_core::{Clock, Endpoint, EndpointSet, ManualClock, Outcome, Report};
//! use lb_health::{CircuitBreaker, Method, OutlierConfig, OutlierDetector, RetryBudget,
//!                 RetryPolicy, Settings, SplitMix64};
//!
//! let clock = ManualClock::new();
//! let set = EndpointSet::new(
//!     ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
//!     clock.now(),
//! );
//! let breaker = CircuitBreaker::new(Settings::failure_ratio("backend-service", 3, 0.6));
//! let detector = OutlierDetector::new(OutlierConfig::more_than_five_failures(), set.clone());
//! let budget = RetryBudget::default();
//! let policy = RetryPolicy::default();
//! let mut rng = SplitMix64::new(1);
//!
//! let mut attempt = policy.start(Method::Get, clock.now());
//! budget.deposit(clock.now());
//! // First try on endpoint 0: the breaker admits it, the endpoint refuses the connection.
//! let ticket = breaker.allow(clock.now()).unwrap();
//! let report = Report { outcome: Outcome::ConnectError, latency: Duration::from_millis(1), at: clock.now() };
//! breaker.record(ticket, report.outcome, report.at);
//! detector.record(0, &report);
//! attempt.tried(0);
//! let retry = attempt.next(report.outcome, clock.now(), &budget, &mut rng).unwrap();
//! assert_eq!(retry.exclude, [0], "the retry goes to another endpoint");
//! assert!(retry.after <= Duration::from_millis(25), "Envoy's first backoff: U(0, 25 ms)");
//! ```

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod active;
mod breaker;
mod outlier;
#[cfg(feature = "tokio")]
pub mod prober;
mod retry;
mod rng;

pub use active::{
    ActiveCheckConfig, ActiveCheckError, CheckResult, Classification, ExpectedStatus, InitialState, RiseFall,
    Transition,
};
pub use breaker::{
    CircuitBreaker, Counts, Rejected, Settings, SlidingWindow, SlidingWindowBreaker, State, Ticket, Verdict,
    WindowSettings, WindowSettingsError, WindowState,
};
pub use outlier::{FailurePercentage, OutlierConfig, OutlierDetector, SuccessRate, TickSummary};
pub use retry::backoff::{Backoff, Jitter};
pub use retry::budget::{BudgetError, RetryBudget};
pub use retry::gate::RetryGate;
pub use retry::hedging::{Hedge, HedgeDecision, HedgeStep, Hedging};
pub use retry::policy::{
    Attempts, GiveUp, MAX_ATTEMPTS, Method, Retry, RetryOn, RetryPolicy, parse_retry_after,
};
pub use retry::throttle::{RetryThrottle, ThrottleError};
pub use rng::{Rng, SplitMix64};
