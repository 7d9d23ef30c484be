//! Circuit breakers: gobreaker's consecutive/ratio breaker ([`CircuitBreaker`])
//! and resilience4j's sliding-window breaker ([`SlidingWindowBreaker`]).
//!
//! Both follow the same shape: [`allow`](CircuitBreaker::allow) at the start
//! of a call returns a [`Ticket`] or [`Rejected`], and the ticket goes back
//! with the call's [`Outcome`](lb_core::Outcome) to `record`. A ticket names
//! the generation it was issued in; results from an older generation are
//! ignored, so a slow call from before a trip can never close the breaker.

mod circuit;
mod window;
mod word;

pub use circuit::{CircuitBreaker, Counts, Settings, State};
pub use window::{SlidingWindow, SlidingWindowBreaker, WindowSettings, WindowSettingsError, WindowState};

use lb_core::Outcome;

/// Proof that a breaker admitted a call; hand it back to `record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "record the call's result with the ticket, or the breaker learns nothing"]
pub struct Ticket {
    generation: u32,
}

impl Ticket {
    /// The breaker generation that admitted the call.
    pub const fn generation(&self) -> u32 {
        self.generation
    }
}

/// Why a breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The breaker is open (gobreaker's `ErrOpenState`).
    #[error("circuit breaker is open")]
    Open,
    /// Half-open and all trial permits are taken (gobreaker's `ErrTooManyRequests`).
    #[error("circuit breaker is half-open and its trial calls are taken")]
    TooManyRequests,
    /// Held open by an operator (resilience4j's `FORCED_OPEN`).
    #[error("circuit breaker is forced open")]
    ForcedOpen,
}

impl Rejected {
    /// How the rejected call should be reported to the balancer: nobody's fault.
    pub const fn outcome(self) -> Outcome {
        Outcome::LocallyRejected
    }
}

/// How a finished call counts for a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Counts as a success.
    Success,
    /// Counts as a failure.
    Failure,
    /// Counts as neither, and gives back its half-open permit (gobreaker's `IsExcluded`).
    Excluded,
}

impl Verdict {
    /// The default classification: success is success, a local rejection is
    /// excluded, anything else is a failure.
    pub const fn of(outcome: Outcome) -> Verdict {
        match outcome {
            Outcome::Success => Verdict::Success,
            Outcome::LocallyRejected => Verdict::Excluded,
            _ => Verdict::Failure,
        }
    }
}

/// Calls `allow` `per_thread` times from each of `threads` threads at once;
/// returns how many calls it admitted.
#[cfg(test)]
fn concurrent_admissions(threads: usize, per_thread: usize, allow: impl Fn() -> bool + Sync) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mine = (0..per_thread).filter(|_| allow()).count();
                admitted.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    admitted.into_inner()
}
