use super::*;
use std::sync::Mutex;
use std::vec::Vec;

const MS: Duration = Duration::from_millis(1);

fn at_ms(ms: u64) -> Timestamp {
    Timestamp::from_nanos(ms * 1_000_000)
}

fn settings(window: SlidingWindow, minimum_calls: u32) -> WindowSettings {
    let mut s = WindowSettings::new("w");
    s.window = window;
    s.minimum_calls = minimum_calls;
    s.permitted_half_open_calls = 3;
    s.wait_in_open = Duration::from_secs(5);
    s.slow_call_duration = 100 * MS;
    s.slow_call_rate_threshold = 60.0;
    s
}

fn call(b: &SlidingWindowBreaker, outcome: Outcome, latency: Duration, now: Timestamp) {
    let t = b.allow(now).expect("admitted");
    b.record(t, outcome, latency, now);
}

#[test]
fn count_window_trips_at_the_failure_rate_once_minimum_calls_are_in() {
    let b = SlidingWindowBreaker::new(settings(SlidingWindow::Count(4), 10)).unwrap();
    let now = Timestamp::ZERO;
    let closed = b.generation();
    for _ in 0..3 {
        call(&b, Outcome::Success, MS, now);
    }
    assert_eq!(b.rates(now), None, "3 calls are below min(minimum_calls, window size)");
    call(&b, Outcome::Http5xx(500), MS, now);
    assert_eq!(b.rates(now), Some((25.0, 0.0)));
    call(&b, Outcome::Http5xx(500), MS, now); // the oldest success slides out: 2 of 4
    assert_eq!(b.state(now), WindowState::Open);
    assert_ne!(b.generation(), closed, "a transition starts a new generation");
    assert_eq!(b.allow(at_ms(4_999)), Err(Rejected::Open));
}

#[test]
fn slow_calls_trip_on_their_own_rate() {
    let b = SlidingWindowBreaker::new(settings(SlidingWindow::Count(5), 5)).unwrap();
    let now = Timestamp::ZERO;
    for latency in [MS, 100 * MS, 200 * MS, MS] {
        call(&b, Outcome::Success, latency, now);
    }
    call(&b, Outcome::Success, 150 * MS, now);
    assert_eq!(b.rates(now), Some((0.0, 60.0)));
    assert_eq!(b.state(now), WindowState::Open);
}

#[test]
fn time_window_forgets_old_seconds() {
    let b = SlidingWindowBreaker::new(settings(SlidingWindow::Time(3), 4)).unwrap();
    call(&b, Outcome::Reset, MS, at_ms(0));
    call(&b, Outcome::Reset, MS, at_ms(900));
    call(&b, Outcome::Success, MS, at_ms(1_500));
    assert_eq!(b.rates(at_ms(1_500)), None, "3 calls, 4 needed");
    // At 3.2 s second 0 (both failures) has left the window.
    call(&b, Outcome::Success, MS, at_ms(3_200));
    call(&b, Outcome::Success, MS, at_ms(3_300));
    assert_eq!(b.rates(at_ms(3_300)), None, "only 3 calls within the last 3 s");
    call(&b, Outcome::Reset, MS, at_ms(3_400));
    assert_eq!(b.rates(at_ms(3_400)), Some((25.0, 0.0)));
    assert_eq!(b.state(at_ms(3_400)), WindowState::Closed);
    call(&b, Outcome::Reset, MS, at_ms(3_500));
    assert_eq!(b.state(at_ms(3_500)), WindowState::Closed, "2 of 5 is 40 %");
    call(&b, Outcome::Reset, MS, at_ms(3_600));
    assert_eq!(b.state(at_ms(3_600)), WindowState::Open, "3 of 6 is 50 %");
}

#[test]
fn half_open_judges_exactly_the_permitted_calls() {
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    let s = settings(SlidingWindow::Count(2), 2)
        .on_state_change(move |_, from, to| log.lock().unwrap().push((from, to)));
    let b = SlidingWindowBreaker::new(s).unwrap();
    call(&b, Outcome::Timeout, MS, Timestamp::ZERO);
    call(&b, Outcome::Timeout, MS, Timestamp::ZERO);
    let t = at_ms(5_000);
    let tickets: Vec<Ticket> = (0..3).map(|_| b.allow(t).unwrap()).collect();
    assert_eq!(b.allow(t), Err(Rejected::TooManyRequests));
    b.record(tickets[0], Outcome::Success, MS, t);
    b.record(tickets[1], Outcome::Timeout, MS, t);
    assert_eq!(b.state(t), WindowState::HalfOpen, "waits for all permitted calls");
    b.record(tickets[2], Outcome::Success, MS, t);
    assert_eq!(b.state(t), WindowState::Closed, "1 of 3 failed: 33 % < 50 %");
    assert_eq!(b.rates(t), None, "the window starts empty");
    call(&b, Outcome::Timeout, MS, t);
    call(&b, Outcome::Timeout, MS, t);
    let t = at_ms(10_000);
    let tickets: Vec<Ticket> = (0..3).map(|_| b.allow(t).unwrap()).collect();
    for ticket in tickets {
        b.record(ticket, Outcome::Http5xx(503), MS, t);
    }
    assert_eq!(b.state(t), WindowState::Open);
    let log = seen.lock().unwrap().clone();
    use WindowState::*;
    assert_eq!(
        log,
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open)
        ]
    );
}

#[test]
fn operator_states_and_stale_tickets() {
    let b = SlidingWindowBreaker::new(settings(SlidingWindow::Count(2), 2)).unwrap();
    let now = Timestamp::ZERO;
    let stale = b.allow(now).unwrap();
    b.force_open(now);
    assert_eq!(b.allow(at_ms(60_000)), Err(Rejected::ForcedOpen), "no timeout ends a forced open");
    b.disable(now);
    for _ in 0..10 {
        call(&b, Outcome::Reset, MS, now);
    }
    assert_eq!(b.state(now), WindowState::Disabled);
    b.reset(now);
    b.record(stale, Outcome::Reset, MS, now);
    call(&b, Outcome::Success, MS, now);
    assert_eq!(b.rates(now), None, "the stale failure was ignored");
    let report = Report { outcome: Outcome::Success, latency: MS, at: now };
    b.record_report(b.allow(now).unwrap(), &report);
    assert_eq!(b.rates(now), Some((0.0, 0.0)));
}

#[test]
fn a_stale_ticket_s_fast_success_is_not_counted_either() {
    let b = SlidingWindowBreaker::new(settings(SlidingWindow::Count(2), 1)).unwrap();
    let now = Timestamp::ZERO;
    let stale = b.allow(now).unwrap();
    b.reset(now);
    b.record(stale, Outcome::Success, MS, now);
    assert_eq!(b.rates(now), None, "a success from before the reset is not in the new window");
}

#[test]
fn a_late_result_for_a_second_its_bucket_has_left_is_dropped() {
    // Seconds 1 and 4 share a bucket of a 3 s window: a result stamped at
    // 1 s arriving after 4 s must not take the bucket back and empty it.
    let b = SlidingWindowBreaker::new(settings(SlidingWindow::Time(3), 1)).unwrap();
    let late = b.allow(at_ms(1_000)).unwrap();
    call(&b, Outcome::Success, MS, at_ms(4_000));
    b.record(late, Outcome::Success, MS, at_ms(1_000));
    assert_eq!(b.rates(at_ms(4_000)), Some((0.0, 0.0)), "the success at 4 s is still counted");
}

#[test]
fn bad_settings_are_refused() {
    let mut s = WindowSettings::new("bad");
    s.window = SlidingWindow::Time(0);
    assert_eq!(SlidingWindowBreaker::new(s.clone()).unwrap_err(), WindowSettingsError::EmptyWindow);
    s.window = SlidingWindow::Count(10);
    s.failure_rate_threshold = 0.0;
    assert_eq!(SlidingWindowBreaker::new(s.clone()).unwrap_err(), WindowSettingsError::BadThreshold(0.0));
    s.failure_rate_threshold = 50.0;
    s.permitted_half_open_calls = 0;
    assert_eq!(SlidingWindowBreaker::new(s).unwrap_err(), WindowSettingsError::BadPermits(0));
}

#[test]
fn concurrent_half_open_callers_get_only_the_permits() {
    let b = SlidingWindowBreaker::new(settings(SlidingWindow::Count(1), 1)).unwrap();
    call(&b, Outcome::Reset, MS, Timestamp::ZERO);
    let t = at_ms(5_000);
    assert_eq!(crate::breaker::concurrent_admissions(4, 2_000, || b.allow(t).is_ok()), 3);
}

#[test]
fn racing_writers_keep_count_totals_equal_to_the_slots() {
    use core::sync::atomic::Ordering;
    let window = Window::new(SlidingWindow::Count(7));
    std::thread::scope(|s| {
        for thread in 0..4u8 {
            let window = &window;
            s.spawn(move || {
                for i in 0..5_000u32 {
                    // Mostly plain successes, so both the skip and the overwrite race.
                    let kind = match (i + u32::from(thread)) % 9 {
                        0 => CALL | FAILED,
                        1 => CALL | SLOW,
                        _ => CALL,
                    };
                    window.add(kind, Timestamp::ZERO);
                }
            });
        }
    });
    let Window::Count { slots, .. } = &window else { unreachable!() };
    let held: Vec<u8> = slots.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let count = |flag: u8| held.iter().filter(|&&k| k & flag != 0).count() as u64;
    let expected = Totals { calls: count(CALL), failures: count(FAILED), slow: count(SLOW) };
    assert_eq!(window.totals(Timestamp::ZERO), expected, "slots {held:?}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn kind(code: u8) -> u8 {
        [CALL, CALL | FAILED, CALL | SLOW, CALL | FAILED | SLOW][usize::from(code % 4)]
    }

    fn model(calls: &[(u64, u8)]) -> Totals {
        let count = |flag: u8| calls.iter().filter(|(_, k)| k & flag != 0).count() as u64;
        Totals { calls: calls.len() as u64, failures: count(FAILED), slow: count(SLOW) }
    }

    proptest! {
        #[test]
        fn count_window_totals_match_the_last_n_calls(
            size in 1u32..20,
            codes in proptest::collection::vec(0u8..4, 0..100),
        ) {
            let window = Window::new(SlidingWindow::Count(size));
            let mut calls = Vec::new();
            for code in codes {
                window.add(kind(code), Timestamp::ZERO);
                calls.push((0, kind(code)));
                let start = calls.len().saturating_sub(size as usize);
                prop_assert_eq!(window.totals(Timestamp::ZERO), model(&calls[start..]));
            }
        }

        #[test]
        fn a_call_lands_in_the_slot_its_cursor_names(size in 1u32..2_000, start in any::<u64>()) {
            let window = Window::new(SlidingWindow::Count(size));
            let Window::Count { slots, cursor, .. } = &window else { unreachable!() };
            cursor.store(start, core::sync::atomic::Ordering::Relaxed);
            window.add(CALL | FAILED, Timestamp::ZERO);
            let written: Vec<usize> = (0..slots.len())
                .filter(|&i| slots[i].load(core::sync::atomic::Ordering::Relaxed) != 0)
                .collect();
            prop_assert_eq!(written, std::vec![(start % u64::from(size)) as usize]);
        }

        #[test]
        fn time_window_totals_match_the_last_n_seconds(
            size in 1u32..8,
            events in proptest::collection::vec((0u8..4, 0u64..1500), 0..100),
        ) {
            let window = Window::new(SlidingWindow::Time(size));
            let mut calls = Vec::new();
            let mut now_ms = 0u64;
            for (code, step) in events {
                now_ms += step;
                let now = at_ms(now_ms);
                window.add(kind(code), now);
                calls.push((now_ms / 1000, kind(code)));
                let oldest = (now_ms / 1000).saturating_sub(u64::from(size) - 1);
                let live: Vec<_> = calls.iter().copied().filter(|(s, _)| *s >= oldest).collect();
                prop_assert_eq!(window.totals(now), model(&live));
            }
        }

        #[test]
        fn half_open_never_admits_more_than_permitted(
            ops in proptest::collection::vec((0u8..4, 0usize..32), 1..150),
        ) {
            let b = SlidingWindowBreaker::new(settings(SlidingWindow::Count(2), 2)).unwrap();
            let mut now = Timestamp::ZERO;
            let mut tickets: Vec<Ticket> = Vec::new();
            let mut admitted = std::collections::BTreeMap::<u32, u32>::new();
            for (op, pick) in ops {
                match op {
                    0 | 1 => {
                        let half_open = b.state(now) == WindowState::HalfOpen;
                        if let Ok(t) = b.allow(now) {
                            if half_open {
                                let n = admitted.entry(t.generation()).or_default();
                                *n += 1;
                                prop_assert!(*n <= 3, "{} trial calls admitted", n);
                            }
                            tickets.push(t);
                        }
                    }
                    2 => {
                        if let Some(&t) = tickets.get(pick % tickets.len().max(1)) {
                            let outcome = if pick % 3 == 0 { Outcome::Success } else { Outcome::Http5xx(503) };
                            b.record(t, outcome, MS, now);
                        }
                    }
                    _ => now = now + Duration::from_secs(pick as u64 / 4),
                }
            }
        }
    }
}

#[test]
fn a_reset_from_open_starts_with_an_empty_window() {
    let b = SlidingWindowBreaker::new(settings(SlidingWindow::Count(4), 4)).unwrap();
    let now = Timestamp::ZERO;
    for _ in 0..4 {
        call(&b, Outcome::Http5xx(500), MS, now);
    }
    assert_eq!(b.state(now), WindowState::Open);
    b.reset(now);
    assert_eq!(b.state(now), WindowState::Closed);
    assert_eq!(b.rates(now), None, "the failures before the reset are forgotten");
    // Three fresh successes and one failure: 25 %, under the 50 % threshold.
    for _ in 0..3 {
        call(&b, Outcome::Success, MS, now);
    }
    call(&b, Outcome::Http5xx(500), MS, now);
    assert_eq!(b.state(now), WindowState::Closed);
}

#[test]
fn settings_debug_names_the_breaker_and_its_thresholds() {
    let text = std::format!("{:?}", settings(SlidingWindow::Count(10), 4));
    for part in ["WindowSettings", "name: \"w\"", "minimum_calls: 4", "permitted_half_open_calls: 3"] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
}

#[test]
fn a_time_window_forgets_a_second_exactly_its_length_later() {
    let w = Window::new(SlidingWindow::Time(3));
    w.add(CALL | FAILED, at_ms(500));
    assert_eq!(w.totals(at_ms(2_900)).calls, 1, "seconds 0 to 2 are in");
    // Nothing was written in second 3, so second 0's bucket is still there, and must not count.
    assert_eq!(w.totals(at_ms(3_000)).calls, 0, "second 0 is out at second 3");
}
