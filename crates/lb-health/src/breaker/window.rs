//! resilience4j's sliding-window circuit breaker.
//!
//! Closed keeps a sliding window of results, count-based (the last N calls)
//! or time-based (N one-second buckets). Once the window holds
//! `minimum_calls`, a failure rate or slow-call rate at or above its
//! threshold opens the breaker. After `wait_in_open`, half-open grants
//! `permitted_half_open_calls` permits and compares the rates of exactly
//! those calls. DISABLED and FORCED_OPEN are operator states.

use alloc::borrow::Cow;
use alloc::sync::Arc;
use core::fmt;
use core::time::Duration;

use lb_core::{Outcome, Report, Timestamp};

use super::word::{GenCounter, NEVER, OwnLines, StateCell, Word, deadline_after};
use super::{Rejected, Ticket, Verdict};
use storage::{CALL, FAILED, SLOW, Totals, Window, rates};

/// A resilience4j breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowState {
    /// Calls flow into the sliding window.
    Closed,
    /// Calls are rejected until `wait_in_open` passes.
    Open,
    /// A fixed number of trial calls decide.
    HalfOpen,
    /// Everything is admitted and nothing is recorded.
    Disabled,
    /// Everything is rejected until an operator resets it.
    ForcedOpen,
}

impl WindowState {
    const ALL: [WindowState; 5] = [
        WindowState::Closed,
        WindowState::Open,
        WindowState::HalfOpen,
        WindowState::Disabled,
        WindowState::ForcedOpen,
    ];

    const fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> WindowState {
        WindowState::ALL.get(usize::from(code)).copied().unwrap_or(WindowState::Closed)
    }
}

/// Which calls the closed state's window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last N calls (resilience4j `COUNT_BASED`).
    Count(u32),
    /// The calls of the last N seconds, in one-second buckets (`TIME_BASED`).
    Time(u32),
}

/// Why [`WindowSettings`] were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WindowSettingsError {
    /// The window must hold at least one call or one second.
    #[error("the sliding window size must be at least 1")]
    EmptyWindow,
    /// A rate threshold is a percentage in (0, 100].
    #[error("rate threshold {0} is not a percentage in (0, 100]")]
    BadThreshold(f64),
    /// Half-open needs between 1 and 65535 permits.
    #[error("permitted half-open calls must be between 1 and 65535, not {0}")]
    BadPermits(u32),
}

type ChangeFn = dyn Fn(&str, WindowState, WindowState) + Send + Sync;

/// How a [`SlidingWindowBreaker`] behaves; resilience4j's defaults.
#[derive(Clone)]
pub struct WindowSettings {
    /// Name for callbacks and logs.
    pub name: Cow<'static, str>,
    /// The closed state's window (default: the last 100 calls).
    pub window: SlidingWindow,
    /// Rates are computed only once the window holds this many calls (default 100).
    pub minimum_calls: u32,
    /// Failure percentage that opens the breaker (default 50).
    pub failure_rate_threshold: f64,
    /// Slow-call percentage that opens the breaker (default 100).
    pub slow_call_rate_threshold: f64,
    /// Calls at least this long are slow (default 60 s).
    pub slow_call_duration: Duration,
    /// Trial calls admitted in half-open (default 10).
    pub permitted_half_open_calls: u32,
    /// Time spent open before half-open (default 60 s).
    pub wait_in_open: Duration,
    on_state_change: Option<Arc<ChangeFn>>,
}

impl WindowSettings {
    /// resilience4j's defaults under `name`.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        WindowSettings {
            name: name.into(),
            window: SlidingWindow::Count(100),
            minimum_calls: 100,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(60),
            permitted_half_open_calls: 10,
            wait_in_open: Duration::from_secs(60),
            on_state_change: None,
        }
    }

    /// Called with `(name, from, to)` on every state change, by the thread that made it.
    pub fn on_state_change(
        mut self,
        f: impl Fn(&str, WindowState, WindowState) + Send + Sync + 'static,
    ) -> Self {
        self.on_state_change = Some(Arc::new(f));
        self
    }

    fn validate(&self) -> Result<(), WindowSettingsError> {
        let (SlidingWindow::Count(size) | SlidingWindow::Time(size)) = self.window;
        if size == 0 {
            return Err(WindowSettingsError::EmptyWindow);
        }
        for t in [self.failure_rate_threshold, self.slow_call_rate_threshold] {
            if !(t > 0.0 && t <= 100.0) {
                return Err(WindowSettingsError::BadThreshold(t));
            }
        }
        if !(1..=u32::from(u16::MAX)).contains(&self.permitted_half_open_calls) {
            return Err(WindowSettingsError::BadPermits(self.permitted_half_open_calls));
        }
        Ok(())
    }
}

impl fmt::Debug for WindowSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowSettings")
            .field("name", &self.name)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("failure_rate_threshold", &self.failure_rate_threshold)
            .field("slow_call_rate_threshold", &self.slow_call_rate_threshold)
            .field("slow_call_duration", &self.slow_call_duration)
            .field("permitted_half_open_calls", &self.permitted_half_open_calls)
            .field("wait_in_open", &self.wait_in_open)
            .finish_non_exhaustive()
    }
}

/// A resilience4j-style breaker over a sliding window; lock-free on every path.
///
/// In Closed, admission is one load; recording a fast success is one
/// `fetch_add` (the count window's cursor) and a few loads, as a slot that
/// already holds the same kind of call is left as it is.
///
/// ```
/// use core::time::Duration;
/// use lb_core::{Outcome, Timestamp};
/// use lb_health::{SlidingWindow, SlidingWindowBreaker, WindowSettings, WindowState};
///
/// let mut settings = WindowSettings::new("inventory");
/// settings.window = SlidingWindow::Count(10);
/// settings.minimum_calls = 4;
/// let breaker = SlidingWindowBreaker::new(settings).unwrap();
/// let now = Timestamp::ZERO;
/// for outcome in [Outcome::Success, Outcome::Timeout, Outcome::Success, Outcome::Timeout] {
///     let ticket = breaker.allow(now).unwrap();
///     breaker.record(ticket, outcome, Duration::from_millis(5), now);
/// }
/// assert_eq!(breaker.state(now), WindowState::Open, "2 of 4 failed: 50 %");
/// ```
#[derive(Debug)]
pub struct SlidingWindowBreaker {
    settings: WindowSettings,
    word: StateCell,
    // Written on every call: off the lines of the state word and settings.
    window: OwnLines<Window>,
    trial_permits: GenCounter,
    trial_calls: GenCounter,
    trial_failures: GenCounter,
    trial_slow: GenCounter,
}

impl SlidingWindowBreaker {
    /// A closed breaker, or an error naming the bad setting.
    pub fn new(settings: WindowSettings) -> Result<Self, WindowSettingsError> {
        settings.validate()?;
        Ok(SlidingWindowBreaker {
            word: StateCell::new(Word {
                state: WindowState::Closed.code(),
                generation: 0,
                deadline_ms: NEVER,
            }),
            window: OwnLines(Window::new(settings.window)),
            settings,
            trial_permits: GenCounter::default(),
            trial_calls: GenCounter::default(),
            trial_failures: GenCounter::default(),
            trial_slow: GenCounter::default(),
        })
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &WindowSettings {
        &self.settings
    }

    /// The state at `now` (Open turns HalfOpen once its wait is over).
    pub fn state(&self, now: Timestamp) -> WindowState {
        WindowState::from_code(self.current(now).state)
    }

    /// The current generation.
    pub fn generation(&self) -> u32 {
        self.word.load().generation
    }

    /// The failure and slow-call rates of the closed window at `now`, in
    /// percent, or `None` below `minimum_calls`.
    pub fn rates(&self, now: Timestamp) -> Option<(f64, f64)> {
        let t = self.window.totals(now);
        let minimum = match self.settings.window {
            SlidingWindow::Count(size) => self.settings.minimum_calls.min(size),
            SlidingWindow::Time(_) => self.settings.minimum_calls,
        };
        (t.calls >= u64::from(minimum.max(1))).then(|| rates(t))
    }

    /// Asks to make a call at `now`.
    #[inline]
    pub fn allow(&self, now: Timestamp) -> Result<Ticket, Rejected> {
        let word = self.word.load();
        if word.state == WindowState::Closed.code() {
            return Ok(Ticket { generation: word.generation });
        }
        self.allow_otherwise(now)
    }

    /// Admission in every state but Closed.
    #[inline(never)]
    fn allow_otherwise(&self, now: Timestamp) -> Result<Ticket, Rejected> {
        let word = self.current(now);
        let ticket = Ticket { generation: word.generation };
        match WindowState::from_code(word.state) {
            WindowState::Closed | WindowState::Disabled => Ok(ticket),
            WindowState::Open => Err(Rejected::Open),
            WindowState::ForcedOpen => Err(Rejected::ForcedOpen),
            WindowState::HalfOpen => {
                let permits = u64::from(self.settings.permitted_half_open_calls);
                if self.trial_permits.increment_below(word.generation, permits) {
                    Ok(ticket)
                } else {
                    Err(Rejected::TooManyRequests)
                }
            }
        }
    }

    /// Records a finished call from its [`Report`].
    pub fn record_report(&self, ticket: Ticket, report: &Report) {
        self.record(ticket, report.outcome, report.latency, report.at);
    }

    /// Records how an admitted call ended and how long it took.
    #[inline]
    pub fn record(&self, ticket: Ticket, outcome: Outcome, latency: Duration, now: Timestamp) {
        self.record_verdict(ticket, Verdict::of(outcome), latency, now);
    }

    /// Records an already classified result; stale tickets change nothing.
    #[inline]
    pub fn record_verdict(&self, ticket: Ticket, verdict: Verdict, latency: Duration, now: Timestamp) {
        let word = self.word.load();
        if verdict == Verdict::Success
            && word.state == WindowState::Closed.code()
            && word.generation == ticket.generation
            && latency < self.settings.slow_call_duration
        {
            // A fast success can only lower the rates: no threshold to check.
            self.window.add(CALL, now);
            return;
        }
        self.record_otherwise(ticket, verdict, latency, now);
    }

    /// Every result but a fast success on a Closed word.
    #[inline(never)]
    fn record_otherwise(&self, ticket: Ticket, verdict: Verdict, latency: Duration, now: Timestamp) {
        // Reloaded: passing the word in costs the fast path its spills.
        let word = self.current(now);
        if word.generation != ticket.generation {
            return;
        }
        let slow = latency >= self.settings.slow_call_duration;
        let kind = match verdict {
            Verdict::Excluded => {
                self.trial_permits.decrement(word.generation);
                return;
            }
            Verdict::Success => CALL | if slow { SLOW } else { 0 },
            Verdict::Failure => CALL | FAILED | if slow { SLOW } else { 0 },
        };
        match WindowState::from_code(word.state) {
            WindowState::Closed => {
                self.window.add(kind, now);
                // Rates can only cross a threshold upward on a bad call.
                if kind != CALL && self.rates(now).is_some_and(|r| self.exceeds(r)) {
                    self.transition(word, WindowState::Open, now);
                }
            }
            WindowState::HalfOpen => self.record_trial(word, kind, now),
            _ => {}
        }
    }

    fn record_trial(&self, word: Word, kind: u8, now: Timestamp) {
        let generation = word.generation;
        if kind & FAILED != 0 {
            self.trial_failures.increment(generation);
        }
        if kind & SLOW != 0 {
            self.trial_slow.increment(generation);
        }
        let permits = u64::from(self.settings.permitted_half_open_calls);
        // Counted after the failures, so whoever sees the last call sees them all.
        if !self.trial_calls.increment_below(generation, permits)
            || self.trial_calls.get(generation) < permits
        {
            return;
        }
        let totals = Totals {
            calls: permits,
            failures: self.trial_failures.get(generation),
            slow: self.trial_slow.get(generation),
        };
        let to = if self.exceeds(rates(totals)) { WindowState::Open } else { WindowState::Closed };
        self.transition(word, to, now);
    }

    /// Holds the breaker open until [`reset`](Self::reset).
    pub fn force_open(&self, now: Timestamp) {
        self.force(WindowState::ForcedOpen, now);
    }

    /// Admits everything and records nothing until [`reset`](Self::reset).
    pub fn disable(&self, now: Timestamp) {
        self.force(WindowState::Disabled, now);
    }

    /// Back to Closed with an empty window, from any state.
    pub fn reset(&self, now: Timestamp) {
        self.force(WindowState::Closed, now);
    }

    fn force(&self, to: WindowState, now: Timestamp) {
        for _ in 0..64 {
            let word = self.word.load();
            if self.transition(word, to, now) {
                return;
            }
        }
    }

    fn exceeds(&self, (failure_rate, slow_rate): (f64, f64)) -> bool {
        failure_rate >= self.settings.failure_rate_threshold
            || slow_rate >= self.settings.slow_call_rate_threshold
    }

    #[inline]
    fn current(&self, now: Timestamp) -> Word {
        let word = self.word.load();
        if word.state == WindowState::Open.code() && word.expired(now) {
            self.advance(word, now)
        } else {
            word
        }
    }

    /// Open to HalfOpen once the wait is over, out of the hot path.
    #[cold]
    fn advance(&self, mut word: Word, now: Timestamp) -> Word {
        for _ in 0..8 {
            if word.state != WindowState::Open.code() || !word.expired(now) {
                return word;
            }
            self.transition(word, WindowState::HalfOpen, now);
            word = self.word.load();
        }
        word
    }

    fn transition(&self, from: Word, to: WindowState, now: Timestamp) -> bool {
        let deadline_ms = match to {
            WindowState::Open => deadline_after(now, self.settings.wait_in_open),
            _ => NEVER,
        };
        if !self.word.swap_if(from, from.next(to.code(), deadline_ms)) {
            return false;
        }
        let before = WindowState::from_code(from.state);
        // Nobody writes the window while half-open or in an operator state;
        // entering one is when to forget the last closed period.
        if matches!(to, WindowState::HalfOpen | WindowState::Disabled | WindowState::ForcedOpen)
            || before != WindowState::HalfOpen && to == WindowState::Closed
        {
            self.window.clear();
        }
        if before != to
            && let Some(f) = &self.settings.on_state_change
        {
            f(&self.settings.name, before, to);
        }
        true
    }
}

mod storage;
#[cfg(test)]
mod tests;
