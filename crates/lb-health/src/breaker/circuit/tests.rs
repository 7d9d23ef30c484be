use super::*;
use std::sync::Mutex;
use std::vec::Vec;

const SEC: Duration = Duration::from_secs(1);

fn at(secs: u64) -> Timestamp {
    Timestamp::from_nanos(secs * 1_000_000_000)
}

fn fail(b: &CircuitBreaker, now: Timestamp) {
    let t = b.allow(now).expect("admitted");
    b.record(t, Outcome::ConnectError, now);
}

fn succeed(b: &CircuitBreaker, now: Timestamp) {
    let t = b.allow(now).expect("admitted");
    b.record(t, Outcome::Success, now);
}

#[test]
fn default_trips_after_more_than_five_consecutive_failures() {
    let b = CircuitBreaker::new(Settings::new("d"));
    for _ in 0..5 {
        fail(&b, at(0));
    }
    succeed(&b, at(0));
    for _ in 0..5 {
        fail(&b, at(0));
    }
    assert_eq!(b.state(at(0)), State::Closed, "a success broke the run");
    assert_eq!(b.counts().consecutive_failures, 5);
    fail(&b, at(0));
    assert_eq!(b.state(at(0)), State::Open);
    assert_eq!(b.allow(at(59)), Err(Rejected::Open));
    assert_eq!(b.state(at(60)), State::HalfOpen, "default timeout is 60 s");
    assert_eq!(b.counts(), Counts::default(), "a new generation starts from zero");
}

#[test]
fn ratio_preset_needs_volume_and_ratio() {
    let b = CircuitBreaker::new(Settings::failure_ratio("r", 3, 0.6));
    fail(&b, at(0));
    fail(&b, at(0));
    assert_eq!(b.state(at(0)), State::Closed, "two requests are below the minimum");
    succeed(&b, at(0));
    fail(&b, at(0));
    assert_eq!(b.state(at(0)), State::Open);

    let b = CircuitBreaker::new(Settings::failure_ratio("r", 3, 0.6));
    succeed(&b, at(0));
    succeed(&b, at(0));
    fail(&b, at(0));
    assert_eq!(b.state(at(0)), State::Closed, "1/3 is below 0.6");
}

#[test]
fn half_open_admits_max_requests_and_closes_after_that_many_successes() {
    let b = CircuitBreaker::new(Settings::failure_ratio("h", 1, 0.5));
    fail(&b, at(0));
    assert_eq!(b.state(at(10)), State::HalfOpen);
    let tickets: Vec<Ticket> = (0..3).map(|_| b.allow(at(10)).unwrap()).collect();
    assert_eq!(b.allow(at(10)), Err(Rejected::TooManyRequests));
    b.record(tickets[0], Outcome::LocallyRejected, at(10));
    let extra = b.allow(at(10)).expect("an excluded result gives its permit back");
    for t in [tickets[1], tickets[2]] {
        b.record(t, Outcome::Success, at(10));
    }
    assert_eq!(b.state(at(10)), State::HalfOpen);
    b.record(extra, Outcome::Success, at(10));
    assert_eq!(b.state(at(10)), State::Closed);
}

#[test]
fn any_half_open_failure_reopens() {
    let b = CircuitBreaker::new(Settings::failure_ratio("h", 1, 0.5));
    fail(&b, at(0));
    let t = b.allow(at(10)).unwrap();
    succeed(&b, at(10));
    b.record_report(t, &lb_core::Report { outcome: Outcome::Timeout, latency: SEC, at: at(10) });
    assert_eq!(b.state(at(10)), State::Open);
    assert_eq!(b.state(at(19)), State::Open, "the timeout restarts at the reopening");
    assert_eq!(b.state(at(20)), State::HalfOpen);
}

#[test]
fn interval_clears_counts_and_ignores_older_tickets() {
    let b = CircuitBreaker::new(Settings::new("i").interval(60 * SEC));
    fail(&b, at(0));
    let old = b.allow(at(1)).unwrap();
    let generation = b.generation();
    assert_eq!(b.counts().total_failures, 1);
    assert_eq!(b.state(at(60)), State::Closed);
    assert_eq!(b.generation(), generation + 1);
    assert_eq!(b.counts(), Counts::default());
    b.record(old, Outcome::Reset, at(61));
    assert_eq!(b.counts(), Counts::default(), "a stale result is ignored");
}

#[test]
fn callbacks_see_every_change_once() {
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    let settings = Settings::new("cb")
        .timeout(5 * SEC)
        .ready_to_trip(|c| c.consecutive_failures >= 1)
        .is_successful(|o| o.is_success() || o == Outcome::Http5xx(501))
        .is_excluded(|o| o == Outcome::Http5xx(599))
        .on_state_change(move |name, from, to| log.lock().unwrap().push((name.into(), from, to)));
    let b = CircuitBreaker::new(settings);
    let t = b.allow(at(0)).unwrap();
    b.record(t, Outcome::Http5xx(501), at(0));
    let t = b.allow(at(0)).unwrap();
    b.record(t, Outcome::Http5xx(599), at(0));
    assert_eq!(b.counts().requests, 1, "the excluded call was taken back");
    fail(&b, at(0));
    succeed(&b, at(5));
    let seen: Vec<(std::string::String, State, State)> = seen.lock().unwrap().clone();
    let names: Vec<_> = seen.iter().map(|(n, f, t)| (n.as_str(), *f, *t)).collect();
    assert_eq!(
        names,
        [
            ("cb", State::Closed, State::Open),
            ("cb", State::Open, State::HalfOpen),
            ("cb", State::HalfOpen, State::Closed)
        ]
    );
}

#[test]
fn thousands_of_concurrent_callers_never_exceed_half_open_permits() {
    let b = CircuitBreaker::new(Settings::new("c").max_requests(7).ready_to_trip(|_| true));
    fail(&b, at(0));
    let now = at(60);
    assert_eq!(crate::breaker::concurrent_admissions(4, 2_000, || b.allow(now).is_ok()), 7);
    assert_eq!(b.state(now), State::HalfOpen);
}

#[test]
fn concurrent_admit_and_record_keep_counts_consistent() {
    let b = CircuitBreaker::new(Settings::new("m").max_requests(2).timeout(SEC).interval(3 * SEC));
    std::thread::scope(|s| {
        for thread in 0..4u64 {
            let b = &b;
            s.spawn(move || {
                for i in 0..5_000u64 {
                    let now = Timestamp::from_nanos(i * 1_000_000);
                    if let Ok(t) = b.allow(now) {
                        let outcome = if (i + thread) % 5 == 0 { Outcome::Timeout } else { Outcome::Success };
                        b.record(t, outcome, now);
                    }
                }
            });
        }
    });
    let c = b.counts();
    assert!(c.total_successes + c.total_failures <= c.requests, "{c:?}");
    assert!(c.consecutive_failures == 0 || c.consecutive_successes == 0);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Allow,
        Record { ticket: usize, outcome: u8 },
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Allow),
            4 => (0usize..64, 0u8..3).prop_map(|(ticket, outcome)| Op::Record { ticket, outcome }),
            1 => (0u64..15_000).prop_map(Op::Advance),
        ]
    }

    fn outcome(code: u8) -> Outcome {
        [Outcome::Success, Outcome::Http5xx(502), Outcome::LocallyRejected][code as usize]
    }

    /// gobreaker's rules written out sequentially, with whole-millisecond
    /// time so deadlines need no rounding.
    struct Model {
        state: State,
        generation: u32,
        deadline_ns: Option<u64>,
        counts: Counts,
        settings: Settings,
    }

    impl Model {
        fn new(settings: Settings) -> Self {
            let deadline_ns = (!settings.interval.is_zero()).then_some(0);
            Model { state: State::Closed, generation: 0, deadline_ns, counts: Counts::default(), settings }
        }

        fn current(&mut self, now: u64) {
            if self.deadline_ns.is_some_and(|d| now >= d) {
                let to = if self.state == State::Open { State::HalfOpen } else { State::Closed };
                self.start(to, now);
            }
        }

        fn start(&mut self, state: State, now: u64) {
            let after = match state {
                State::Closed => self.settings.interval,
                State::Open => self.settings.timeout,
                State::HalfOpen => Duration::ZERO,
            };
            self.state = state;
            self.generation += 1;
            self.counts = Counts::default();
            self.deadline_ns = (!after.is_zero()).then(|| now + after.as_nanos() as u64);
        }

        fn allow(&mut self, now: u64) -> Result<u32, Rejected> {
            self.current(now);
            match self.state {
                State::Open => return Err(Rejected::Open),
                State::HalfOpen if self.counts.requests >= u64::from(self.settings.max_requests) => {
                    return Err(Rejected::TooManyRequests);
                }
                _ => self.counts.requests += 1,
            }
            Ok(self.generation)
        }

        fn record(&mut self, generation: u32, outcome: Outcome, now: u64) {
            self.current(now);
            if generation != self.generation {
                return;
            }
            let c = &mut self.counts;
            match self.settings.verdict(outcome) {
                Verdict::Excluded => c.requests = c.requests.saturating_sub(1),
                Verdict::Success => {
                    c.total_successes += 1;
                    c.consecutive_successes += 1;
                    c.consecutive_failures = 0;
                    let max = u64::from(self.settings.max_requests);
                    if self.state == State::HalfOpen && c.consecutive_successes >= max {
                        self.start(State::Closed, now);
                    }
                }
                Verdict::Failure => {
                    c.total_failures += 1;
                    c.consecutive_failures += 1;
                    c.consecutive_successes = 0;
                    if self.state == State::HalfOpen || self.settings.trips(&self.counts) {
                        self.start(State::Open, now);
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn matches_a_sequential_gobreaker_model(
            ops in proptest::collection::vec(op(), 1..300),
            ratio in any::<bool>(),
        ) {
            let settings = if ratio {
                Settings::failure_ratio("m", 2, 0.5).interval(20 * SEC)
            } else {
                Settings::new("m").max_requests(2).timeout(5 * SEC).interval(30 * SEC)
            };
            let b = CircuitBreaker::new(settings.clone());
            let mut model = Model::new(settings);
            let mut now = 0u64;
            let mut tickets: Vec<Ticket> = Vec::new();
            for op in ops {
                let at = Timestamp::from_nanos(now);
                match op {
                    Op::Allow => {
                        let got = b.allow(at);
                        prop_assert_eq!(got.map(|t| t.generation()), model.allow(now));
                        tickets.extend(got);
                    }
                    Op::Record { ticket, outcome: code } => {
                        let Some(&t) = tickets.get(ticket % tickets.len().max(1)) else { continue };
                        b.record(t, outcome(code), at);
                        model.record(t.generation(), outcome(code), now);
                    }
                    Op::Advance(ms) => now += ms * 1_000_000,
                }
                prop_assert_eq!(b.counts(), model.counts);
                prop_assert_eq!(b.generation(), model.generation);
                prop_assert_eq!(State::from_code(b.word.load().state), model.state);
            }
        }

        #[test]
        fn stale_results_never_change_state_and_half_open_admits_at_most_max(
            ops in proptest::collection::vec(op(), 1..200),
            max in 1u32..4,
        ) {
            let b = CircuitBreaker::new(
                Settings::failure_ratio("p", 2, 0.5).max_requests(max).interval(30 * SEC),
            );
            let mut now = Timestamp::ZERO;
            let mut tickets: Vec<Ticket> = Vec::new();
            // Half-open admissions minus excluded results, per generation.
            let mut held = std::collections::BTreeMap::<u32, i64>::new();
            for op in ops {
                match op {
                    Op::Allow => {
                        let half_open = b.state(now) == State::HalfOpen;
                        if let Ok(t) = b.allow(now) {
                            if half_open {
                                let n = held.entry(t.generation()).or_default();
                                *n += 1;
                                prop_assert!(*n <= i64::from(max));
                            }
                            tickets.push(t);
                        }
                    }
                    Op::Record { ticket, outcome: code } => {
                        let Some(&t) = tickets.get(ticket % tickets.len().max(1)) else { continue };
                        let before_word = b.current(now);
                        let before_counts = b.counts();
                        b.record(t, outcome(code), now);
                        if t.generation() != before_word.generation {
                            prop_assert_eq!(b.word.load(), before_word);
                            prop_assert_eq!(b.counts(), before_counts);
                        } else if code == 2 && before_word.state == State::HalfOpen.code() {
                            *held.entry(t.generation()).or_default() -= 1;
                        }
                    }
                    Op::Advance(ms) => now = now + Duration::from_millis(ms),
                }
            }
        }
    }
}

#[test]
fn a_breaker_is_named_by_its_settings() {
    let breaker = CircuitBreaker::new(Settings::new("payments"));
    assert_eq!(breaker.name(), "payments");
    assert_eq!(breaker.settings().name(), "payments");
}

#[test]
fn states_and_verdicts_read_as_documented() {
    let names: Vec<String> =
        [State::Closed, State::Open, State::HalfOpen].iter().map(|s| s.to_string()).collect();
    assert_eq!(names, ["closed", "open", "half-open"]);
    assert_eq!(crate::breaker::Verdict::of(Outcome::Success), crate::breaker::Verdict::Success);
    assert_eq!(crate::breaker::Verdict::of(Outcome::LocallyRejected), crate::breaker::Verdict::Excluded);
    assert_eq!(crate::breaker::Verdict::of(Outcome::Reset), crate::breaker::Verdict::Failure);
}

#[test]
fn the_published_gauge_values_are_fixed() {
    // Dashboards and alerts read these numbers from both products.
    assert_eq!(State::Closed.gauge_value(), 0);
    assert_eq!(State::Open.gauge_value(), 1);
    assert_eq!(State::HalfOpen.gauge_value(), 2);
}

#[test]
fn settings_debug_names_the_breaker_and_its_limits() {
    let text = std::format!("{:?}", Settings::new("cb").max_requests(7).ready_to_trip(|_| true));
    for part in ["Settings", "name: \"cb\"", "max_requests: 7", "custom_ready_to_trip: true"] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
}
