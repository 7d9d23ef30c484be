//! The event loop: simulated time on a [`ManualClock`], one event at a time,
//! through the real balancers, breakers, outlier detectors, retry policy and
//! budget, exactly as lb-engine drives them around a request.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_algorithms::{Algorithm, AnyBalancer};
use lb_core::{
    Balancer, Build, Clock, Endpoint, EndpointSet, Exclusions, ManualClock, Outcome, OwnedPick, PickContext,
    Report, Timestamp,
};
use lb_health::{
    Attempts, CircuitBreaker, Method, OutlierConfig, OutlierDetector, RetryBudget, RetryGate, RetryPolicy,
    Rng, Settings, SplitMix64, Ticket,
};

use crate::setup::{Fault, Health, Keys, Load, Setup, exponential};
use crate::stats::Measured;

/// Simulated time starts here, so endpoints present from the start count as
/// old (slow start ramps only the ones that join later).
const ORIGIN: Duration = Duration::from_secs(600);
/// A refused connection is known after one round trip.
const REFUSED_AFTER: Duration = Duration::from_millis(1);
/// How often the owner's timer ticks the balancer and the outlier detector.
const TICK: Duration = Duration::from_millis(100);
/// After the arrivals stop, requests still unanswered this much later count as failed.
const DRAIN: Duration = Duration::from_secs(60);
/// A run ends after this many events whatever happens.
const MAX_EVENTS: u64 = 200_000_000;
/// The proxy's per-try timeout under [`Health::Full`].
const PER_TRY_TIMEOUT: Duration = Duration::from_secs(1);
/// Envoy's panic threshold: below this share of eligible endpoints, ignore health.
const PANIC_BELOW: f64 = 0.5;

/// How a backend answered one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Served,
    Refused,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A request arrives from `client`.
    Arrival { client: u32 },
    /// A worker of `backend` finished the try.
    Done { backend: u32, req: u32, try_id: u64, answer: Answer },
    /// The answer reaches the caller.
    Reply { req: u32, try_id: u64, answer: Answer },
    /// The try's per-try timeout fired.
    TryTimeout { req: u32, try_id: u64 },
    /// A retry's backoff is over.
    Retry { req: u32 },
    /// The owner's upkeep timer.
    Tick,
    /// A backend joins the set.
    Join { backend: u32 },
}

/// A try waiting in a backend's queue.
#[derive(Debug, Clone, Copy)]
struct Job {
    req: u32,
    try_id: u64,
}

#[derive(Debug)]
struct Backend {
    busy: u32,
    queue: VecDeque<Job>,
    joined_at: Option<Timestamp>,
}

/// One balancer with its own view of the backends: the proxy, or one client.
struct View {
    balancer: Arc<AnyBalancer>,
    /// Set index to backend number, and back.
    backend_of: Vec<u32>,
    index_of: Vec<Option<usize>>,
    /// Per backend, kept across rebuilds (by backend number, as lb-engine keeps them by id).
    breakers: Vec<Option<CircuitBreaker>>,
    outlier: Option<OutlierDetector>,
    budget: Option<RetryBudget>,
    generation: u64,
}

/// The try in progress of one request.
struct Try {
    id: u64,
    pick: OwnedPick<AnyBalancer>,
    ticket: Option<Ticket>,
    backend: u32,
    started: Timestamp,
}

struct Request<'p> {
    client: u32,
    view: u32,
    arrived: Timestamp,
    key: [u8; 8],
    current: Option<Try>,
    attempts: Option<Attempts<'p>>,
    /// Backends tried, so a retry goes elsewhere.
    tried: Exclusions,
    rng: SplitMix64,
}

/// Plays `setup` and measures it. The same setup (seed included) gives the
/// same measurements, bit for bit.
pub fn run(setup: &Setup) -> Measured {
    let policy = policy(setup.health);
    let mut sim = Sim::new(setup, &policy);
    sim.play();
    sim.measured.finish();
    sim.measured
}

fn policy(health: Health) -> RetryPolicy {
    match health {
        Health::Bare => RetryPolicy { max_attempts: 1, ..RetryPolicy::default() },
        Health::RetriesUnbudgeted => RetryPolicy::default(),
        Health::Full => RetryPolicy { per_try_timeout: Some(PER_TRY_TIMEOUT), ..RetryPolicy::default() },
    }
}

fn address(backend: u32) -> SocketAddr {
    let [_, _, hi, lo] = backend.to_be_bytes();
    SocketAddr::from(([10, 1, hi, lo], 80))
}

/// Bounded loads' promise, checked right after a pick: the picked endpoint
/// holds at most ⌈c·m·w/W⌉ of the `m` requests in flight. `None` for other algorithms.
fn bound_kept(algorithm: &Algorithm, view: &View, pick: &OwnedPick<AnyBalancer>) -> Option<bool> {
    let Algorithm::BoundedLoad { balance_factor, .. } = algorithm else { return None };
    let set = view.balancer.endpoints();
    let c_milli = (balance_factor * 1000.0).clamp(1001.0, 1_000_000.0) as u128;
    let total = u128::from(set.in_flight_total());
    let weight = u128::from(pick.endpoint().weight());
    let eligible = u128::from(set.eligible_weight()).max(1);
    let cap = (c_milli * total * weight).div_ceil(1000 * eligible);
    let load = set.get(pick.index()).map_or(0, |m| m.state().in_flight());
    Some(u128::from(load) <= cap)
}

fn stretch(seed: u64, salt: u64) -> u64 {
    SplitMix64::new(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

struct Sim<'a, 'p> {
    setup: &'a Setup,
    policy: &'p RetryPolicy,
    clock: ManualClock,
    rng: SplitMix64,
    events: BinaryHeap<Reverse<(Timestamp, u64, Event)>>,
    seq: u64,
    backends: Vec<Backend>,
    views: Vec<View>,
    requests: Vec<Option<Request<'p>>>,
    free: Vec<u32>,
    outstanding: u64,
    next_try: u64,
    end: Timestamp,
    measured: Measured,
}

impl<'a, 'p> Sim<'a, 'p> {
    fn new(setup: &'a Setup, policy: &'p RetryPolicy) -> Self {
        let clock = ManualClock::new();
        clock.set(Timestamp::ZERO + ORIGIN);
        let n = setup.backends.len();
        let backends = setup
            .backends
            .iter()
            .map(|b| Backend {
                busy: 0,
                queue: VecDeque::new(),
                joined_at: b.joins_at.is_zero().then_some(Timestamp::ZERO),
            })
            .collect();
        let mut sim = Sim {
            setup,
            policy,
            rng: SplitMix64::new(setup.seed),
            events: BinaryHeap::new(),
            seq: 0,
            backends,
            views: Vec::new(),
            requests: Vec::new(),
            free: Vec::new(),
            outstanding: 0,
            next_try: 0,
            end: Timestamp::ZERO + ORIGIN + setup.duration,
            measured: Measured::new(n, setup),
            clock,
        };
        let start = sim.clock.now();
        for v in 0..setup.views.max(1) {
            let view = sim.build_view(v, None, start);
            sim.views.push(view);
        }
        for (b, spec) in setup.backends.iter().enumerate() {
            if !spec.joins_at.is_zero() {
                sim.at(start + spec.joins_at, Event::Join { backend: b as u32 });
            }
        }
        match setup.load {
            Load::Open { rate } => {
                let first = sim.interarrival(rate);
                sim.at(start + first, Event::Arrival { client: 0 });
            }
            Load::Closed { clients, think } => {
                for client in 0..clients {
                    let wait = think.mul_f64(exponential(&mut sim.rng));
                    sim.at(start + wait, Event::Arrival { client });
                }
            }
        }
        sim.at(start, Event::Tick);
        sim
    }

    fn at(&mut self, when: Timestamp, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((when, self.seq, event)));
    }

    fn interarrival(&mut self, rate: f64) -> Duration {
        Duration::from_secs_f64(exponential(&mut self.rng) / rate.max(1e-9))
    }

    /// Builds (or rebuilds, after a join) view `v` over the backends present.
    fn build_view(&self, v: u32, old: Option<View>, now: Timestamp) -> View {
        let present: Vec<u32> = (0..self.backends.len() as u32)
            .filter(|&b| self.backends[b as usize].joined_at.is_some())
            .collect();
        let endpoints = present.iter().map(|&b| {
            Endpoint::new(address(b))
                .with_id(format!("b{b:03}").as_str())
                .with_weight(self.setup.backends[b as usize].weight)
        });
        let set = match &old {
            Some(old) => old.balancer.endpoints().replaced(endpoints, now),
            None => EndpointSet::new(endpoints, Timestamp::ZERO),
        };
        let balancer = Arc::new(self.setup.algorithm.build(set.clone()));
        let generation = old.as_ref().map_or(0, |o| o.generation + 1);
        balancer.seed_rng(stretch(self.setup.seed, u64::from(v) << 32 | generation));
        balancer.tick(now);
        let mut backend_of = Vec::with_capacity(set.len());
        let mut index_of = vec![None; self.backends.len()];
        for (i, member) in set.iter().enumerate() {
            let b: u32 = member.endpoint().id().as_str()[1..].parse().expect("ids are b<number>");
            backend_of.push(b);
            index_of[b as usize] = Some(i);
        }
        // Breakers, the budget and the detector's counters outlive a rebuild, as in lb-engine.
        if let Some(old) = old {
            let outlier = old.outlier.map(|detector| detector.with_set(set));
            return View { balancer, backend_of, index_of, outlier, generation, ..old };
        }
        let full = self.setup.health == Health::Full;
        let breaker = || CircuitBreaker::new(Settings::failure_ratio("backend", 3, 0.6));
        View {
            balancer,
            backend_of,
            index_of,
            breakers: (0..self.backends.len()).map(|_| full.then(breaker)).collect(),
            outlier: full.then(|| OutlierDetector::new(OutlierConfig::more_than_five_failures(), set)),
            budget: full.then(RetryBudget::default),
            generation,
        }
    }

    fn play(&mut self) {
        let hard_end = self.end + DRAIN;
        while let Some(Reverse((when, _, event))) = self.events.pop() {
            if when > hard_end || self.measured.events >= MAX_EVENTS {
                break;
            }
            self.measured.events += 1;
            self.clock.set(when);
            match event {
                Event::Arrival { client } => self.arrive(client, when),
                Event::Done { backend, req, try_id, answer } => self.done(backend, req, try_id, answer, when),
                Event::Reply { req, try_id, answer } => {
                    let outcome = match answer {
                        Answer::Served => Outcome::Success,
                        Answer::Refused => Outcome::ConnectError,
                        Answer::Failed => Outcome::Http5xx(503),
                    };
                    self.reply(req, try_id, outcome, when);
                }
                Event::TryTimeout { req, try_id } => self.reply(req, try_id, Outcome::Timeout, when),
                Event::Retry { req } => self.start_try(req, when),
                Event::Tick => self.tick(when),
                Event::Join { backend } => self.join(backend, when),
            }
        }
        // Whatever is still unanswered failed.
        let now = self.clock.now();
        for slot in 0..self.requests.len() {
            if self.requests[slot].is_some() {
                self.measured.unfinished += 1;
                self.finish(slot as u32, false, now);
            }
        }
    }

    fn arrive(&mut self, client: u32, now: Timestamp) {
        if now >= self.end {
            return;
        }
        let views = self.views.len() as u32;
        let (client, view) = match self.setup.load {
            Load::Open { rate } => {
                let next = self.interarrival(rate);
                self.at(now + next, Event::Arrival { client: 0 });
                let c = (self.rng.next_u64() % u64::from(views)) as u32;
                (c, c)
            }
            Load::Closed { .. } => (client, client % views),
        };
        let key = match self.setup.keys {
            Keys::Uniform(count) => self.rng.next_u64() % u64::from(count.max(1)),
            Keys::Hot { count, hot_share } => {
                if self.rng.unit() < hot_share {
                    0
                } else {
                    self.rng.next_u64() % u64::from(count.max(1))
                }
            }
        };
        if let Some(budget) = &self.views[view as usize].budget {
            budget.deposit(now);
        }
        let request = Request {
            client,
            view,
            arrived: now,
            key: key.to_le_bytes(),
            current: None,
            attempts: None,
            tried: Exclusions::new(),
            rng: SplitMix64::new(self.rng.next_u64()),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.requests[slot as usize] = Some(request);
                slot
            }
            None => {
                self.requests.push(Some(request));
                (self.requests.len() - 1) as u32
            }
        };
        self.outstanding += 1;
        self.start_try(slot, now);
    }

    /// Picks an endpoint (as lb-engine's `Attempt::start`) and sends the try.
    fn start_try(&mut self, req: u32, now: Timestamp) {
        let Some(request) = self.requests[req as usize].as_ref() else { return };
        let view = &self.views[request.view as usize];
        let mut tried = Exclusions::new();
        for &b in request.tried.as_slice() {
            if let Some(i) = view.index_of[b] {
                tried.push(i);
            }
        }
        let panic = view.outlier.is_some() && view.balancer.endpoints().eligible_share() < PANIC_BELOW;
        let mut ctx = PickContext::new().with_health_ignored(panic);
        if self.setup.algorithm.uses_key() {
            ctx = ctx.with_key(&request.key);
        }
        let mut asked = 0;
        let picked = lb_core::pick_admitted(&view.balancer, ctx, &tried, |pick| {
            asked += 1;
            let backend = view.backend_of[pick.index()] as usize;
            match &view.breakers[backend] {
                None => Some(None),
                Some(breaker) => breaker.allow(now).ok().map(Some),
            }
        });
        let Some((pick, ticket)) = picked else {
            // Every endpoint refused: answered at once, locally.
            self.measured.rejected_locally += 1;
            self.finish(req, false, now);
            return;
        };
        // The promise holds for the balancer's own choice: not for a retry's
        // (tried endpoints excluded), one a breaker turned down, or panic mode.
        let first_choice = tried.is_empty() && asked == 1 && !panic;
        let within_bound = first_choice.then(|| bound_kept(&self.setup.algorithm, view, &pick));
        let backend = view.backend_of[pick.index()];
        if let Some(Some(kept)) = within_bound {
            self.measured.bound(kept);
        }
        let id = self.next_try;
        self.next_try += 1;
        let request = self.requests[req as usize].as_mut().expect("checked above");
        request.tried.push(backend as usize);
        request.current = Some(Try { id, pick, ticket, backend, started: now });
        self.measured.tried(backend as usize, now - (Timestamp::ZERO + ORIGIN));
        if let Some(timeout) = self.policy.per_try_timeout {
            self.at(now + timeout, Event::TryTimeout { req, try_id: id });
        }
        self.send(backend, Job { req, try_id: id }, now);
    }

    fn send(&mut self, backend: u32, job: Job, now: Timestamp) {
        if self.is_down(backend, now) {
            let at = now + REFUSED_AFTER + self.setup.hop;
            self.at(at, Event::Reply { req: job.req, try_id: job.try_id, answer: Answer::Refused });
            return;
        }
        let b = &mut self.backends[backend as usize];
        if b.busy < self.setup.backends[backend as usize].concurrency {
            b.busy += 1;
            self.serve(backend, job, now);
        } else {
            b.queue.push_back(job);
        }
    }

    fn is_down(&self, backend: u32, now: Timestamp) -> bool {
        match self.setup.backends[backend as usize].fault {
            Fault::Dead => true,
            Fault::Flapping { period, down } => {
                let t = (now - Timestamp::ZERO - ORIGIN).as_nanos() % period.as_nanos().max(1);
                t >= period.saturating_sub(down).as_nanos()
            }
            _ => false,
        }
    }

    fn serve(&mut self, backend: u32, job: Job, now: Timestamp) {
        let spec = &self.setup.backends[backend as usize];
        let base = spec.service.sample(&mut self.rng);
        let (time, answer) = match spec.fault {
            Fault::Slow(factor) => (base.mul_f64(factor), Answer::Served),
            Fault::Failing => (base, Answer::Failed),
            Fault::Cold { factor, warm } => {
                let joined = self.backends[backend as usize].joined_at.unwrap_or(now);
                let age = (now - joined).as_secs_f64() / warm.as_secs_f64().max(1e-9);
                (base.mul_f64(1.0 + (factor - 1.0) * (1.0 - age).max(0.0)), Answer::Served)
            }
            _ => (base, Answer::Served),
        };
        self.at(now + time, Event::Done { backend, req: job.req, try_id: job.try_id, answer });
    }

    fn done(&mut self, backend: u32, req: u32, try_id: u64, answer: Answer, now: Timestamp) {
        let b = &mut self.backends[backend as usize];
        match b.queue.pop_front() {
            Some(next) => self.serve(backend, next, now),
            None => b.busy -= 1,
        }
        self.at(now + self.setup.hop, Event::Reply { req, try_id, answer });
    }

    /// A try ended (answered, refused or timed out): everyone learns, as in
    /// lb-engine's `Attempt::finish`; then the retry policy decides.
    fn reply(&mut self, req: u32, try_id: u64, outcome: Outcome, now: Timestamp) {
        let Some(request) = self.requests[req as usize].as_mut() else { return };
        if request.current.as_ref().is_none_or(|t| t.id != try_id) {
            return; // a late answer to a try that already timed out
        }
        let attempt = request.current.take().expect("checked above");
        let view = &self.views[request.view as usize];
        let report = Report { outcome, latency: now - attempt.started, at: now };
        if let (Some(breaker), Some(ticket)) = (&view.breakers[attempt.backend as usize], attempt.ticket) {
            breaker.record(ticket, outcome, now);
        }
        if let Some(detector) = &view.outlier {
            detector.record_id(attempt.pick.endpoint().id(), &report);
        }
        attempt.pick.complete(report);
        if outcome.is_success() {
            self.finish(req, true, now);
            return;
        }
        let (policy, arrived) = (self.policy, request.arrived);
        let attempts = request.attempts.get_or_insert_with(|| policy.start(Method::Get, arrived));
        attempts.tried(attempt.backend as usize);
        let gate: &dyn RetryGate = match &view.budget {
            Some(budget) => budget,
            None => &(),
        };
        let wait = attempts.next(outcome, now, gate, &mut request.rng).ok().map(|retry| retry.after);
        match wait {
            Some(after) => self.at(now + after, Event::Retry { req }),
            None => self.finish(req, false, now),
        }
    }

    fn finish(&mut self, req: u32, ok: bool, now: Timestamp) {
        let Some(request) = self.requests[req as usize].take() else { return };
        // An unfinished try is cancelled: it blames nobody (its pick's drop ends the count).
        if let Some(attempt) = request.current
            && let (Some(breaker), Some(ticket)) =
                (&self.views[request.view as usize].breakers[attempt.backend as usize], attempt.ticket)
        {
            breaker.record_verdict(ticket, lb_health::Verdict::Excluded, now);
        }
        self.free.push(req);
        self.outstanding -= 1;
        self.measured.request(now - request.arrived, ok);
        if let Load::Closed { think, .. } = self.setup.load {
            let wait = think.mul_f64(exponential(&mut self.rng));
            self.at(now + wait, Event::Arrival { client: request.client });
        }
    }

    fn tick(&mut self, now: Timestamp) {
        for view in &self.views {
            view.balancer.tick(now);
            if let Some(detector) = &view.outlier {
                detector.tick(now);
            }
        }
        if now < self.end || self.outstanding > 0 {
            self.at(now + TICK, Event::Tick);
        }
    }

    fn join(&mut self, backend: u32, now: Timestamp) {
        self.backends[backend as usize].joined_at = Some(now);
        let old = std::mem::take(&mut self.views);
        self.views =
            old.into_iter().enumerate().map(|(v, view)| self.build_view(v as u32, Some(view), now)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ids_are_distinct_per_backend() {
        assert_ne!(address(1), address(257));
        assert_eq!(address(258).to_string(), "10.1.1.2:80");
    }

    #[test]
    fn a_flapping_backend_is_down_at_the_end_of_each_period() {
        let mut setup = Setup::uniform(1, 0.5);
        setup.backends[0].fault =
            Fault::Flapping { period: Duration::from_secs(30), down: Duration::from_secs(5) };
        let policy = policy(Health::Bare);
        let sim = Sim::new(&setup, &policy);
        let at = |s: u64| Timestamp::ZERO + ORIGIN + Duration::from_secs(s);
        assert!(!sim.is_down(0, at(0)) && !sim.is_down(0, at(24)));
        assert!(sim.is_down(0, at(25)) && sim.is_down(0, at(29)) && !sim.is_down(0, at(30)));
        assert!(sim.is_down(0, at(56)));
    }
}
