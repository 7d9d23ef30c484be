//! One request's retry state under lb-health's [`RetryPolicy`], shared by
//! every attempt loop: the proxy's, the reqwest pool's and the tower
//! balancer's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lb_core::{Outcome, Timestamp};
use lb_health::{Attempts, Method, RetryBudget, RetryPolicy, SplitMix64};

/// Seeds for one upstream's jitter: an atomic counter, so no lock and no
/// system call per request, and different draws for concurrent requests.
#[derive(Debug)]
pub struct JitterSeeds(AtomicU64);

/// SplitMix64's increment: consecutive seeds give unrelated sequences.
const SEED_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

impl JitterSeeds {
    /// Seeds starting at `first`.
    pub fn new(first: u64) -> Self {
        JitterSeeds(AtomicU64::new(first))
    }

    /// Seeds starting somewhere that differs between processes and between
    /// calls (std's per-thread random hash keys; no system call after the first).
    pub fn random() -> Self {
        use std::hash::BuildHasher;
        JitterSeeds::new(std::collections::hash_map::RandomState::new().hash_one(0u8))
    }

    /// A generator for one request's waits.
    pub fn next(&self) -> SplitMix64 {
        SplitMix64::new(self.0.fetch_add(SEED_STEP, Ordering::Relaxed))
    }
}

/// Whether and when a request goes again. Made per request; the policy's
/// [`Attempts`] and the jitter generator are made at the first failure, so a
/// request answered at once pays nothing for them.
#[derive(Debug)]
pub struct Retries<'p> {
    policy: &'p RetryPolicy,
    method: Method,
    /// When the request must be over, besides the policy's own deadline.
    until: Option<Timestamp>,
    attempts: Option<Attempts<'p>>,
    rng: Option<SplitMix64>,
}

impl<'p> Retries<'p> {
    /// The retry state of a `method` request under `policy`, ending at
    /// `until` if given (a proxy counts from when the request arrived).
    pub fn new(policy: &'p RetryPolicy, method: Method, until: Option<Timestamp>) -> Self {
        Retries { policy, method, until, attempts: None, rng: None }
    }

    /// The policy's state for this request, started at `now` if it was not yet.
    pub fn attempts(&mut self, now: Timestamp) -> &mut Attempts<'p> {
        let (policy, method, until) = (self.policy, self.method, self.until);
        self.attempts.get_or_insert_with(|| {
            let attempts = policy.start(method, now);
            match until {
                Some(deadline) => attempts.until(deadline),
                None => attempts,
            }
        })
    }

    /// The number of the try about to start (after a granted retry), from 1.
    pub fn attempt(&self) -> u32 {
        self.attempts.as_ref().map_or(1, Attempts::attempt)
    }

    /// The wait before another try after one failed with `outcome` and no
    /// answer (or `None`: the request ends). The budget is asked last.
    pub fn after_failure(
        &mut self,
        outcome: Outcome,
        now: Timestamp,
        budget: &RetryBudget,
        seeds: &JitterSeeds,
    ) -> Option<Duration> {
        if outcome == Outcome::Success {
            return None;
        }
        let mut rng = self.rng.take().unwrap_or_else(|| seeds.next());
        let wait = self.attempts(now).next(outcome, now, budget, &mut rng).ok().map(|retry| retry.after);
        self.rng = Some(rng);
        wait
    }

    /// Whether an answer with `status` can be retried at all: no policy
    /// retries one below 400, so a caller can skip reading the clock and
    /// the answer's `Retry-After` for it.
    pub fn may_retry_answer(status: u16) -> bool {
        status >= 400
    }

    /// The wait before another try after an endpoint answered with `status`
    /// (or `None`: the answer is the response). A 429 or 503 whose
    /// `Retry-After` asked for a wait gets that wait instead of the backoff
    /// (RFC 9110 §10.2.3); one past the deadline is not taken.
    pub fn after_answer(
        &mut self,
        status: u16,
        retry_after: Option<Duration>,
        now: Timestamp,
        budget: &RetryBudget,
        seeds: &JitterSeeds,
    ) -> Option<Duration> {
        if !Self::may_retry_answer(status) {
            return None;
        }
        if let Some(asked) = retry_after.filter(|_| matches!(status, 429 | 503)) {
            let attempts = self.attempts(now);
            return attempts.next_after_retry_after(status, asked, now, budget).ok().map(|r| r.after);
        }
        let mut rng = self.rng.take().unwrap_or_else(|| seeds.next());
        let wait =
            self.attempts(now).next_after_status(status, now, budget, &mut rng).ok().map(|retry| retry.after);
        self.rng = Some(rng);
        wait
    }
}

#[cfg(test)]
mod tests {
    use lb_health::{Backoff, RetryOn};

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            retry_on: RetryOn { statuses: vec![429], ..RetryOn::default() },
            backoff: Backoff::Constant(Duration::from_millis(10)),
            ..RetryPolicy::default()
        }
    }

    fn budget() -> RetryBudget {
        RetryBudget::new(Duration::from_secs(10), 100, 1.0).unwrap()
    }

    #[test]
    fn a_success_costs_nothing_and_a_failure_waits_its_backoff() {
        let (policy, budget, seeds) = (policy(), budget(), JitterSeeds::new(1));
        let mut retries = Retries::new(&policy, Method::Get, None);
        assert_eq!(retries.after_failure(Outcome::Success, Timestamp::ZERO, &budget, &seeds), None);
        assert_eq!(retries.after_answer(200, None, Timestamp::ZERO, &budget, &seeds), None);
        assert!(retries.attempts.is_none(), "nothing was made for a success");
        assert_eq!(retries.attempt(), 1);
        let wait = retries.after_failure(Outcome::Reset, Timestamp::ZERO, &budget, &seeds);
        assert_eq!(wait, Some(Duration::from_millis(10)));
        assert_eq!(retries.attempt(), 2);
        assert_eq!(
            retries.after_failure(Outcome::ConnectError, Timestamp::ZERO, &budget, &seeds),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retries.after_failure(Outcome::Reset, Timestamp::ZERO, &budget, &seeds),
            None,
            "3 attempts made"
        );
    }

    #[test]
    fn statuses_follow_retry_on_and_retry_after_replaces_the_backoff() {
        let (policy, budget, seeds) = (policy(), budget(), JitterSeeds::new(1));
        let mut retries = Retries::new(&policy, Method::Get, None);
        assert_eq!(retries.after_answer(404, None, Timestamp::ZERO, &budget, &seeds), None, "not listed");
        let asked = Some(Duration::from_secs(2));
        assert_eq!(
            retries.after_answer(429, asked, Timestamp::ZERO, &budget, &seeds),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retries.after_answer(429, None, Timestamp::ZERO, &budget, &seeds),
            Some(Duration::from_millis(10))
        );
    }

    #[test]
    fn any_listed_error_status_goes_again_from_400_up() {
        let policy =
            RetryPolicy { retry_on: RetryOn { statuses: vec![400], ..RetryOn::default() }, ..policy() };
        let (budget, seeds) = (budget(), JitterSeeds::new(1));
        let mut retries = Retries::new(&policy, Method::Get, None);
        assert_eq!(
            retries.after_answer(400, None, Timestamp::ZERO, &budget, &seeds),
            Some(Duration::from_millis(10))
        );
    }

    #[test]
    fn the_deadline_given_ends_retries() {
        let (policy, budget, seeds) = (policy(), budget(), JitterSeeds::new(1));
        let until = Timestamp::ZERO + Duration::from_millis(5);
        let mut retries = Retries::new(&policy, Method::Get, Some(until));
        assert_eq!(
            retries.after_failure(Outcome::Reset, Timestamp::ZERO, &budget, &seeds),
            None,
            "10 ms wait passes it"
        );
        let mut asked = Retries::new(&policy, Method::Get, Some(until));
        let wait = asked.after_answer(503, Some(Duration::from_secs(1)), Timestamp::ZERO, &budget, &seeds);
        assert_eq!(wait, None, "a Retry-After past the deadline is not taken");
    }

    #[test]
    fn requests_draw_different_jitter_from_the_same_seeds() {
        use lb_health::Rng;
        let seeds = JitterSeeds::new(3);
        let mut firsts: Vec<u64> = (0..8).map(|_| seeds.next().next_u64()).collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 8, "{firsts:?}");
    }
}
