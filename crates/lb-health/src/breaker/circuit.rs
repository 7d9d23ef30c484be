//! gobreaker's circuit breaker, lock-free.
//!
//! Semantics follow sony/gobreaker v2: Closed counts results and trips to
//! Open when `ready_to_trip(&counts)` says so; Open rejects until `timeout`
//! passes, then HalfOpen admits `max_requests` trial calls; that many
//! consecutive successes close it, any failure reopens it. Every state
//! change and every `interval` reset starts a new generation.

use alloc::borrow::Cow;
use alloc::sync::Arc;
use core::fmt;
use core::time::Duration;

use lb_core::{Outcome, Report, Timestamp};

use super::word::{GenCounter, NEVER, OwnLines, StateCell, Streak, Word, deadline_after};
use super::{Rejected, Ticket, Verdict};

/// A gobreaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls flow; results are counted.
    Closed,
    /// Calls are rejected until the timeout passes.
    Open,
    /// A few trial calls decide between Closed and Open.
    HalfOpen,
}

impl State {
    /// The value of the `breaker_state` gauge that the proxy and the client
    /// both publish: 0 closed, 1 open, 2 half-open.
    pub const fn gauge_value(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    const fn code(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    const fn from_code(code: u8) -> State {
        match code {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        })
    }
}

/// What the breaker counted in the current generation (gobreaker's `Counts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Calls admitted (excluded ones are taken back).
    pub requests: u64,
    /// Calls that succeeded.
    pub total_successes: u64,
    /// Calls that failed.
    pub total_failures: u64,
    /// Length of the current run of successes.
    pub consecutive_successes: u64,
    /// Length of the current run of failures.
    pub consecutive_failures: u64,
}

impl Counts {
    /// `total_failures / requests`, or 0 before any request.
    pub fn failure_ratio(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.total_failures as f64 / self.requests as f64 }
    }
}

type TripFn = dyn Fn(&Counts) -> bool + Send + Sync;
type OutcomeFn = dyn Fn(Outcome) -> bool + Send + Sync;
type ChangeFn = dyn Fn(&str, State, State) + Send + Sync;

/// How a [`CircuitBreaker`] behaves; gobreaker's `Settings`, with its defaults.
///
/// ```
/// use core::time::Duration;
/// use lb_health::Settings;
///
/// let s = Settings::new("backend-service")
///     .max_requests(3)
///     .interval(Duration::from_secs(60))
///     .timeout(Duration::from_secs(10))
///     .ready_to_trip(|c| c.requests >= 3 && c.failure_ratio() >= 0.6);
/// assert_eq!(s.name(), "backend-service");
/// ```
#[derive(Clone)]
pub struct Settings {
    name: Cow<'static, str>,
    max_requests: u32,
    interval: Duration,
    timeout: Duration,
    ready_to_trip: Option<Arc<TripFn>>,
    is_successful: Option<Arc<OutcomeFn>>,
    is_excluded: Option<Arc<OutcomeFn>>,
    on_state_change: Option<Arc<ChangeFn>>,
}

/// gobreaker's default `Timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// gobreaker's default trip rule trips after more than this many consecutive failures.
const DEFAULT_CONSECUTIVE_FAILURES: u64 = 5;

impl Settings {
    /// gobreaker's defaults: one half-open trial call, counts never cleared,
    /// 60 s open, trip after more than 5 consecutive failures.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Settings {
            name: name.into(),
            max_requests: 1,
            interval: Duration::ZERO,
            timeout: DEFAULT_TIMEOUT,
            ready_to_trip: None,
            is_successful: None,
            is_excluded: None,
            on_state_change: None,
        }
    }

    /// The ratio preset: `max_requests` half-open trials, counts cleared
    /// every 60 s, 10 s open, and a trip once at least `min_requests` calls
    /// were made and `failure_ratio` of them failed. `failure_ratio(name, 3, 0.6)`
    /// is the classic gobreaker example.
    pub fn failure_ratio(name: impl Into<Cow<'static, str>>, min_requests: u32, failure_ratio: f64) -> Self {
        let min_requests = u64::from(min_requests);
        Settings::new(name)
            .max_requests(3)
            .interval(Duration::from_secs(60))
            .timeout(Duration::from_secs(10))
            .ready_to_trip(move |c| c.requests >= min_requests && c.failure_ratio() >= failure_ratio)
    }

    /// Half-open admits at most this many calls, and closes after this many
    /// consecutive successes; 0 means 1.
    pub fn max_requests(mut self, max_requests: u32) -> Self {
        self.max_requests = max_requests.max(1);
        self
    }

    /// Closed clears its counts every `interval`; zero never clears.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Open turns half-open after `timeout`; zero means the default 60 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = if timeout.is_zero() { DEFAULT_TIMEOUT } else { timeout };
        self
    }

    /// Decides, after each failure in Closed, whether to trip.
    pub fn ready_to_trip(mut self, f: impl Fn(&Counts) -> bool + Send + Sync + 'static) -> Self {
        self.ready_to_trip = Some(Arc::new(f));
        self
    }

    /// Decides which outcomes count as success (default: [`Outcome::is_success`]).
    pub fn is_successful(mut self, f: impl Fn(Outcome) -> bool + Send + Sync + 'static) -> Self {
        self.is_successful = Some(Arc::new(f));
        self
    }

    /// Decides which outcomes count as neither success nor failure
    /// (default: [`Outcome::LocallyRejected`]).
    pub fn is_excluded(mut self, f: impl Fn(Outcome) -> bool + Send + Sync + 'static) -> Self {
        self.is_excluded = Some(Arc::new(f));
        self
    }

    /// Called with `(name, from, to)` on every state change, by the thread that made it.
    pub fn on_state_change(mut self, f: impl Fn(&str, State, State) + Send + Sync + 'static) -> Self {
        self.on_state_change = Some(Arc::new(f));
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    fn verdict(&self, outcome: Outcome) -> Verdict {
        if self.is_excluded.as_ref().map_or(outcome == Outcome::LocallyRejected, |f| f(outcome)) {
            Verdict::Excluded
        } else if self.is_successful.as_ref().map_or(outcome.is_success(), |f| f(outcome)) {
            Verdict::Success
        } else {
            Verdict::Failure
        }
    }

    fn trips(&self, counts: &Counts) -> bool {
        match &self.ready_to_trip {
            Some(f) => f(counts),
            None => counts.consecutive_failures > DEFAULT_CONSECUTIVE_FAILURES,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("max_requests", &self.max_requests)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("custom_ready_to_trip", &self.ready_to_trip.is_some())
            .finish_non_exhaustive()
    }
}

/// A gobreaker-style circuit breaker whose hot path takes no lock.
///
/// Admission in Closed is one load and one `fetch_add`; recording a success
/// is two loads and one `fetch_add`. The counters live on cache lines of
/// their own, away from the state word and settings every call reads.
/// Share it behind an `Arc`.
///
/// ```
/// use core::time::Duration;
/// use lb_core::{Clock, ManualClock, Outcome};
/// use lb_health::{CircuitBreaker, Rejected, Settings, State};
///
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::new(Settings::failure_ratio("backend-service", 3, 0.6));
/// for _ in 0..3 {
///     let ticket = breaker.allow(clock.now()).unwrap();
///     breaker.record(ticket, Outcome::Http5xx(503), clock.now());
/// }
/// assert_eq!(breaker.state(clock.now()), State::Open);
/// assert_eq!(breaker.allow(clock.now()), Err(Rejected::Open));
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(breaker.state(clock.now()), State::HalfOpen);
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: Settings,
    word: StateCell,
    tally: OwnLines<Tally>,
}

/// The current generation's counts, written on every call.
#[derive(Debug, Default)]
struct Tally {
    requests: GenCounter,
    successes: GenCounter,
    failures: GenCounter,
    streak: Streak,
}

const CLOSED: u8 = State::Closed.code();

impl CircuitBreaker {
    /// A closed breaker at generation 0.
    pub fn new(settings: Settings) -> Self {
        // The first interval starts at the first call that sees it expired.
        let deadline_ms = if settings.interval.is_zero() { NEVER } else { 0 };
        CircuitBreaker {
            word: StateCell::new(Word { state: State::Closed.code(), generation: 0, deadline_ms }),
            settings,
            tally: OwnLines::default(),
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The state at `now`, moving Open to HalfOpen or clearing Closed's
    /// counts if their time has come.
    pub fn state(&self, now: Timestamp) -> State {
        State::from_code(self.current(now).state)
    }

    /// The current generation.
    pub fn generation(&self) -> u32 {
        self.word.load().generation
    }

    /// What the current generation has counted so far.
    pub fn counts(&self) -> Counts {
        self.counts_of(self.word.load().generation)
    }

    /// Asks to make a call at `now`.
    #[inline]
    pub fn allow(&self, now: Timestamp) -> Result<Ticket, Rejected> {
        let word = self.word.load();
        if word.state == CLOSED && !word.expired(now) {
            self.tally.requests.increment(word.generation);
            return Ok(Ticket { generation: word.generation });
        }
        self.allow_otherwise(now)
    }

    /// Admission when the state word read by `allow` is not a live Closed one.
    #[inline(never)]
    fn allow_otherwise(&self, now: Timestamp) -> Result<Ticket, Rejected> {
        let word = self.current(now);
        match State::from_code(word.state) {
            State::Closed => {
                self.tally.requests.increment(word.generation);
                Ok(Ticket { generation: word.generation })
            }
            State::Open => Err(Rejected::Open),
            State::HalfOpen => {
                if self.tally.requests.increment_below(word.generation, u64::from(self.settings.max_requests))
                {
                    Ok(Ticket { generation: word.generation })
                } else {
                    Err(Rejected::TooManyRequests)
                }
            }
        }
    }

    /// Records how an admitted call ended, classified by the settings'
    /// `is_excluded` and `is_successful`.
    #[inline]
    pub fn record(&self, ticket: Ticket, outcome: Outcome, now: Timestamp) {
        self.record_verdict(ticket, self.settings.verdict(outcome), now);
    }

    /// Records a finished call from its [`Report`] (outcome and time).
    pub fn record_report(&self, ticket: Ticket, report: &Report) {
        self.record(ticket, report.outcome, report.at);
    }

    /// Records an already classified result. A ticket from an older
    /// generation changes nothing.
    #[inline]
    pub fn record_verdict(&self, ticket: Ticket, verdict: Verdict, now: Timestamp) {
        let word = self.word.load();
        let generation = ticket.generation;
        if verdict == Verdict::Success
            && word.state == CLOSED
            && word.generation == generation
            && !word.expired(now)
        {
            // A success in Closed never changes state: count it and go.
            let successes = self.tally.successes.increment(generation);
            self.tally.streak.success(generation, successes);
            return;
        }
        self.record_otherwise(ticket, verdict, now);
    }

    /// Every result but a success on a live Closed word.
    #[inline(never)]
    fn record_otherwise(&self, ticket: Ticket, verdict: Verdict, now: Timestamp) {
        // Reloaded: passing the word in costs the fast path its spills.
        let word = self.current(now);
        let generation = ticket.generation;
        if word.generation != generation {
            return;
        }
        let state = State::from_code(word.state);
        match verdict {
            Verdict::Excluded => self.tally.requests.decrement(generation),
            Verdict::Success => {
                let successes = self.tally.successes.increment(generation);
                let run = self.tally.streak.success(generation, successes);
                if state == State::HalfOpen && run >= u64::from(self.settings.max_requests) {
                    self.transition(word, State::Closed, now);
                }
            }
            Verdict::Failure => {
                self.tally.failures.increment(generation);
                self.tally.streak.failure(generation);
                let trip = match state {
                    State::Closed => self.settings.trips(&self.counts_of(generation)),
                    _ => true,
                };
                if trip {
                    self.transition(word, State::Open, now);
                }
            }
        }
    }

    /// Reads the state word, first making the time-driven transitions due at
    /// `now`: Open to HalfOpen after the timeout, a fresh Closed generation
    /// after the interval.
    #[inline]
    fn current(&self, now: Timestamp) -> Word {
        let word = self.word.load();
        if word.expired(now) { self.advance(word, now) } else { word }
    }

    /// The time-driven transitions, out of the hot path.
    #[cold]
    fn advance(&self, mut word: Word, now: Timestamp) -> Word {
        // Each failed swap means another thread moved the state on; a few suffice.
        for _ in 0..8 {
            if !word.expired(now) {
                return word;
            }
            let to = match State::from_code(word.state) {
                State::Open => State::HalfOpen,
                _ => State::Closed,
            };
            self.transition(word, to, now);
            word = self.word.load();
        }
        word
    }

    /// Moves from `from` to a new generation in state `to`; the winning thread
    /// tells `on_state_change`.
    fn transition(&self, from: Word, to: State, now: Timestamp) {
        let deadline_ms = match to {
            State::Closed => deadline_after(now, self.settings.interval),
            State::Open => deadline_after(now, self.settings.timeout),
            State::HalfOpen => NEVER,
        };
        let before = State::from_code(from.state);
        if self.word.swap_if(from, from.next(to.code(), deadline_ms))
            && before != to
            && let Some(f) = &self.settings.on_state_change
        {
            f(&self.settings.name, before, to);
        }
    }

    fn counts_of(&self, generation: u32) -> Counts {
        let tally = &*self.tally;
        let total_successes = tally.successes.get(generation);
        let (consecutive_successes, consecutive_failures) = tally.streak.get(generation, total_successes);
        Counts {
            requests: tally.requests.get(generation),
            total_successes,
            total_failures: tally.failures.get(generation),
            consecutive_successes,
            consecutive_failures,
        }
    }
}

#[cfg(test)]
mod tests;
