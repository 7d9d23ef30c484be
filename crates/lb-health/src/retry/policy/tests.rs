use super::*;
use crate::retry::budget::RetryBudget;
use crate::rng::SplitMix64;

const MS: Duration = Duration::from_millis(1);

fn policy() -> RetryPolicy {
    RetryPolicy { backoff: Backoff::Constant(10 * MS), ..RetryPolicy::default() }
}

#[test]
fn retries_prefer_other_endpoints_until_attempts_run_out() {
    let p = policy();
    let mut rng = SplitMix64::new(1);
    let now = Timestamp::ZERO;
    let mut a = p.start(Method::Get, now);
    a.tried(4);
    let r = a.next(Outcome::Http5xx(503), now, &(), &mut rng).unwrap();
    assert_eq!((r.after, r.exclude, r.attempt), (10 * MS, &[4][..], 2));
    a.tried(1);
    a.tried(1);
    assert_eq!(a.next(Outcome::Reset, now, &(), &mut rng).unwrap().exclude, [4, 1]);
    assert_eq!(a.next(Outcome::Reset, now, &(), &mut rng), Err(GiveUp::AttemptsExhausted));
    assert_eq!(a.attempt(), 3);
}

#[test]
fn tried_endpoints_beyond_the_most_attempts_are_not_noted() {
    let p = policy();
    let mut a = p.start(Method::Get, Timestamp::ZERO);
    for index in 0..MAX_ATTEMPTS as usize + 3 {
        a.tried(index);
    }
    let expected: alloc::vec::Vec<usize> = (0..MAX_ATTEMPTS as usize).collect();
    assert_eq!(a.excluded(), expected, "as many as there can be attempts, and no more");
}

#[test]
fn only_chosen_failures_are_retried() {
    let p = policy();
    let mut rng = SplitMix64::new(1);
    let now = Timestamp::ZERO;
    let mut a = p.start(Method::Get, now);
    assert_eq!(a.next(Outcome::Http5xx(500), now, &(), &mut rng), Err(GiveUp::NotRetryable));
    assert_eq!(a.next(Outcome::Success, now, &(), &mut rng), Err(GiveUp::NotRetryable));
    assert_eq!(a.next_after_status(429, now, &(), &mut rng), Err(GiveUp::NotRetryable));
    let p = RetryPolicy {
        retry_on: RetryOn { any_5xx: true, statuses: alloc::vec![429], ..RetryOn::nothing() },
        ..policy()
    };
    let mut a = p.start(Method::Get, now);
    assert!(a.next(Outcome::Http5xx(500), now, &(), &mut rng).is_ok());
    assert!(a.next_after_status(429, now, &(), &mut rng).is_ok());
    assert_eq!(a.next(Outcome::Timeout, now, &(), &mut rng), Err(GiveUp::NotRetryable));
}

#[test]
fn non_idempotent_methods_retry_only_unsent_requests_unless_allowed() {
    let p = policy();
    let mut rng = SplitMix64::new(1);
    let now = Timestamp::ZERO;
    assert_eq!(Method::parse("POST"), Method::Post);
    assert_eq!(Method::from("post"), Method::Other, "methods are case-sensitive");
    let mut a = p.start(Method::Post, now);
    assert_eq!(a.next(Outcome::Http5xx(503), now, &(), &mut rng), Err(GiveUp::NotIdempotent));
    assert!(a.next(Outcome::ConnectError, now, &(), &mut rng).is_ok(), "never sent, safe to resend");
    let p = RetryPolicy { retry_non_idempotent: true, ..policy() };
    assert!(p.start(Method::Patch, now).next(Outcome::Timeout, now, &(), &mut rng).is_ok());
}

#[test]
fn committed_responses_are_never_retried() {
    let p = policy();
    let mut rng = SplitMix64::new(1);
    let mut a = p.start(Method::Get, Timestamp::ZERO);
    assert!(!a.is_committed(), "nothing reached the caller yet");
    let shown = std::format!("{a:?}");
    assert!(
        shown.starts_with("Attempts") && shown.contains("attempt: 1") && shown.contains("committed: false"),
        "{shown}"
    );
    a.commit();
    assert!(a.is_committed());
    assert_eq!(a.next(Outcome::Reset, Timestamp::ZERO, &(), &mut rng), Err(GiveUp::Committed));
}

#[test]
fn the_deadline_bounds_every_attempt() {
    let p =
        RetryPolicy { per_try_timeout: Some(30 * MS), deadline: Some(50 * MS), max_attempts: 99, ..policy() };
    let mut rng = SplitMix64::new(1);
    let t0 = Timestamp::ZERO;
    let mut a = p.start(Method::Get, t0);
    assert_eq!(a.deadline(), Some(t0 + 50 * MS));
    assert_eq!(a.try_timeout(t0), Some(30 * MS));
    assert_eq!(a.try_timeout(t0 + 35 * MS), Some(15 * MS), "cut short by the deadline");
    assert!(a.next(Outcome::Timeout, t0 + 30 * MS, &(), &mut rng).is_ok());
    assert_eq!(a.next(Outcome::Timeout, t0 + 40 * MS, &(), &mut rng), Err(GiveUp::DeadlineExceeded));
    assert_eq!(RetryPolicy::default().start(Method::Get, t0).try_timeout(t0), None);
}

#[test]
fn gates_can_veto() {
    let p = RetryPolicy { max_attempts: 5, ..policy() };
    let mut rng = SplitMix64::new(1);
    let now = Timestamp::ZERO;
    let budget = RetryBudget::new(Duration::from_secs(1), 1, 0.0).unwrap();
    let mut a = p.start(Method::Get, now);
    assert!(a.next(Outcome::Reset, now, &budget, &mut rng).is_ok(), "the reserve allows one");
    assert_eq!(a.next(Outcome::Reset, now, &budget, &mut rng), Err(GiveUp::BudgetExhausted));
    let throttle = crate::RetryThrottle::new(2, 1.0).unwrap();
    throttle.on_failure();
    assert_eq!(a.next(Outcome::Reset, now, &(&throttle, &budget), &mut rng), Err(GiveUp::BudgetExhausted));
    assert_eq!(a.attempt(), 2, "refused retries do not count as attempts");
}

#[test]
fn server_pushback_replaces_the_backoff_or_stops_retries() {
    let p = RetryPolicy {
        max_attempts: 5,
        backoff: Backoff::Exponential {
            base: 10 * MS,
            cap: Duration::from_secs(1),
            jitter: crate::Jitter::None,
        },
        ..RetryPolicy::default()
    };
    let mut rng = SplitMix64::new(1);
    let now = Timestamp::ZERO;
    let mut a = p.start(Method::Get, now);
    assert_eq!(a.next(Outcome::Http5xx(503), now, &(), &mut rng).unwrap().after, 10 * MS);
    assert_eq!(a.next(Outcome::Http5xx(503), now, &(), &mut rng).unwrap().after, 20 * MS);
    let pushed = a.next_after_pushback(Outcome::Http5xx(503), Some(700 * MS), now, &()).unwrap();
    assert_eq!((pushed.after, pushed.attempt), (700 * MS, 4));
    assert_eq!(
        a.next(Outcome::Http5xx(503), now, &(), &mut rng).unwrap().after,
        10 * MS,
        "backoff restarted"
    );
    let mut b = p.start(Method::Get, now);
    assert_eq!(b.next_after_pushback(Outcome::Http5xx(503), None, now, &()), Err(GiveUp::PushedBack));
    assert_eq!(b.attempt(), 1);
}

#[test]
fn a_connect_error_is_retried_at_once_and_does_not_advance_the_backoff() {
    let p = RetryPolicy {
        max_attempts: 5,
        backoff: Backoff::Exponential { base: 100 * MS, cap: 400 * MS, jitter: crate::Jitter::Equal },
        ..RetryPolicy::default()
    };
    let mut rng = SplitMix64::new(7);
    let now = Timestamp::ZERO;
    let mut a = p.start(Method::Get, now);
    assert_eq!(a.next(Outcome::ConnectError, now, &(), &mut rng).unwrap().after, Duration::ZERO);
    let first = a.next(Outcome::Reset, now, &(), &mut rng).unwrap().after;
    assert!((50 * MS..=100 * MS).contains(&first), "the first wait is step 1: {first:?}");
    let second = a.next(Outcome::Timeout, now, &(), &mut rng).unwrap().after;
    assert!((100 * MS..=200 * MS).contains(&second), "the exponent counts waited retries: {second:?}");
    assert_eq!(a.next(Outcome::ConnectError, now, &(), &mut rng).unwrap().after, Duration::ZERO);
    assert_eq!(a.next(Outcome::ConnectError, now, &(), &mut rng), Err(GiveUp::AttemptsExhausted));
}

#[test]
fn even_an_immediate_retry_needs_time_left_and_the_gate() {
    let p = RetryPolicy { deadline: Some(50 * MS), ..policy() };
    let mut rng = SplitMix64::new(1);
    let t0 = Timestamp::ZERO;
    let mut a = p.start(Method::Get, t0);
    assert_eq!(a.next(Outcome::ConnectError, t0 + 50 * MS, &(), &mut rng), Err(GiveUp::DeadlineExceeded));
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.0).unwrap();
    assert_eq!(a.next(Outcome::ConnectError, t0, &budget, &mut rng), Err(GiveUp::BudgetExhausted));
}

#[test]
fn until_keeps_the_earlier_deadline() {
    let p = RetryPolicy { deadline: Some(50 * MS), ..policy() };
    let t0 = Timestamp::ZERO;
    assert_eq!(p.start(Method::Get, t0).until(t0 + 20 * MS).deadline(), Some(t0 + 20 * MS));
    assert_eq!(p.start(Method::Get, t0).until(t0 + 90 * MS).deadline(), Some(t0 + 50 * MS));
    assert_eq!(policy().start(Method::Get, t0).until(t0 + 90 * MS).deadline(), Some(t0 + 90 * MS));
}

#[test]
fn retry_after_replaces_the_backoff_and_restarts_it_within_the_deadline() {
    let p = RetryPolicy {
        max_attempts: 5,
        deadline: Some(Duration::from_secs(10)),
        retry_on: RetryOn { statuses: alloc::vec![429], ..RetryOn::default() },
        backoff: Backoff::Exponential { base: 100 * MS, cap: 400 * MS, jitter: crate::Jitter::None },
        ..RetryPolicy::default()
    };
    let mut rng = SplitMix64::new(1);
    let t0 = Timestamp::ZERO;
    let mut a = p.start(Method::Get, t0);
    assert_eq!(a.next(Outcome::Timeout, t0, &(), &mut rng).unwrap().after, 100 * MS);
    assert_eq!(a.next(Outcome::Timeout, t0, &(), &mut rng).unwrap().after, 200 * MS);
    let waited = a.next_after_retry_after(429, Duration::from_secs(2), t0, &()).unwrap();
    assert_eq!(waited.after, Duration::from_secs(2), "the server's wait, not the backoff");
    assert_eq!(a.next(Outcome::Timeout, t0, &(), &mut rng).unwrap().after, 100 * MS, "the backoff restarts");
    let mut b = p.start(Method::Get, t0);
    assert_eq!(
        b.next_after_retry_after(503, Duration::from_secs(10), t0, &()),
        Err(GiveUp::DeadlineExceeded),
        "a wait past the deadline is not taken"
    );
    assert_eq!(b.next_after_retry_after(418, MS, t0, &()), Err(GiveUp::NotRetryable));
}

#[test]
fn retry_after_is_read_in_its_delta_seconds_form_only() {
    assert_eq!(parse_retry_after(b"120"), Some(Duration::from_secs(120)));
    assert_eq!(parse_retry_after(b"0"), Some(Duration::ZERO));
    assert_eq!(parse_retry_after(b"9999999999"), Some(Duration::from_secs(9_999_999_999)), "ten digits");
    for bad in [&b""[..], b" ", b"1.5", b"+3", b"3s", b"99999999999", b"Fri, 31 Dec 1999 23:59:59 GMT"] {
        assert_eq!(parse_retry_after(bad), None, "{:?}", core::str::from_utf8(bad));
    }
}

#[test]
fn every_method_token_is_read_and_only_the_rfc_ones_are_idempotent() {
    let all = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST", "PATCH", "CONNECT", "PURGE"];
    let parsed: alloc::vec::Vec<Method> = all.iter().map(|m| Method::parse(m)).collect();
    use Method::*;
    assert_eq!(parsed, [Get, Head, Options, Trace, Put, Delete, Post, Patch, Connect, Other]);
    let idempotent: alloc::vec::Vec<bool> = parsed.iter().map(|m| m.is_idempotent()).collect();
    assert_eq!(idempotent, [true, true, true, true, true, true, false, false, false, false]);
}
