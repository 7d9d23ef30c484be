//! What one simulated run is made of: backends, clients, keys, the
//! balancer and the health machinery. Plain data; [`crate::run`] plays it.

use core::time::Duration;

use lb_algorithms::Algorithm;
use lb_health::Rng;

/// How long a backend takes to serve one request once a worker takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    /// Always the same.
    Constant(Duration),
    /// Exponential with this mean.
    Exponential(Duration),
    /// Log-normal with this median and shape `sigma` (0.5: p99 ≈ 3.2 × median),
    /// the usual shape of service latencies.
    LogNormal {
        /// The median.
        median: Duration,
        /// The standard deviation of the logarithm.
        sigma: f64,
    },
}

impl ServiceTime {
    /// One draw.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            ServiceTime::Constant(d) => d,
            ServiceTime::Exponential(mean) => mean.mul_f64(exponential(rng)),
            ServiceTime::LogNormal { median, sigma } => median.mul_f64((sigma * normal(rng)).exp()),
        }
    }

    /// The mean, to size loads against capacity.
    pub fn mean(&self) -> Duration {
        match *self {
            ServiceTime::Constant(d) | ServiceTime::Exponential(d) => d,
            ServiceTime::LogNormal { median, sigma } => median.mul_f64((sigma * sigma / 2.0).exp()),
        }
    }
}

/// A draw of the unit exponential distribution.
pub(crate) fn exponential(rng: &mut impl Rng) -> f64 {
    -(1.0 - rng.unit()).ln()
}

/// A draw of the standard normal distribution (Box–Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let (u, v) = (1.0 - rng.unit(), rng.unit());
    (-2.0 * u.ln()).sqrt() * (core::f64::consts::TAU * v).cos()
}

/// How a backend misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// It does not.
    None,
    /// Every request takes this many times longer.
    Slow(f64),
    /// Refuses every connection (a crashed process on a live host).
    Dead,
    /// Refuses connections for `down` out of every `period`, starting `down` before each period ends.
    Flapping {
        /// The cycle.
        period: Duration,
        /// How long it is down in each cycle.
        down: Duration,
    },
    /// Serves every request and answers 503.
    Failing,
    /// Starts `factor` times slower and warms up linearly over `warm` (a JIT, cold caches).
    Cold {
        /// The slowdown when it joins.
        factor: f64,
        /// How long until it runs at full speed.
        warm: Duration,
    },
}

/// One simulated backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// Its service time when healthy.
    pub service: ServiceTime,
    /// Requests it serves at once; the rest wait in its FIFO queue.
    pub concurrency: u32,
    /// The weight discovery announces (right or wrong).
    pub weight: u32,
    /// How it misbehaves.
    pub fault: Fault,
    /// When it joins the set (at the start when zero).
    pub joins_at: Duration,
}

impl BackendSpec {
    /// A healthy backend of weight 1 serving `concurrency` requests at once.
    pub fn new(service: ServiceTime, concurrency: u32) -> Self {
        BackendSpec { service, concurrency, weight: 1, fault: Fault::None, joins_at: Duration::ZERO }
    }

    /// Requests per second it serves at full load.
    pub fn capacity(&self) -> f64 {
        f64::from(self.concurrency) / self.service.mean().as_secs_f64()
    }
}

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Open loop: Poisson arrivals at this rate per second, whatever the latency.
    Open {
        /// Requests per second.
        rate: f64,
    },
    /// Closed loop: each client sends, waits for the answer, thinks, sends again.
    Closed {
        /// How many clients.
        clients: u32,
        /// Mean think time (exponential).
        think: Duration,
    },
}

/// Which keys requests carry (read only by hashing algorithms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keys {
    /// Uniform over this many keys.
    Uniform(u32),
    /// Key 0 takes `hot_share` of the requests, the rest are uniform over `count` keys.
    Hot {
        /// How many keys.
        count: u32,
        /// The hot key's share, 0 to 1.
        hot_share: f64,
    },
}

/// Which of lb-health's machinery is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// One attempt per request; no breaker, no ejection.
    Bare,
    /// Retries (3 attempts, Envoy's backoff) with no budget and nothing else:
    /// to show retry amplification.
    RetriesUnbudgeted,
    /// What lb-proxy runs with the guide's presets (and lb-client's pool by
    /// default): retries under a budget (20 %, 10/s, 10 s), the guide's
    /// breaker per endpoint (ratio 0.6 of at least 3, 10 s open), the
    /// guide's outlier detection (the 6th failure in a row ejects, for 30 s
    /// and more), a 1 s per-try timeout and the 50 % panic threshold.
    Full,
}

impl Health {
    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Health::Bare => "bare",
            Health::RetriesUnbudgeted => "retries, no budget",
            Health::Full => "health",
        }
    }
}

/// One run: everything [`crate::run`] needs, and nothing it may not repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    /// The backends; backend `i` is endpoint id `b{i:03}`.
    pub backends: Vec<BackendSpec>,
    /// How requests arrive.
    pub load: Load,
    /// Which keys they carry.
    pub keys: Keys,
    /// The balancing algorithm.
    pub algorithm: Algorithm,
    /// The health machinery.
    pub health: Health,
    /// Independent balancers ("views"): 1 is a proxy with the global view;
    /// more are clients each balancing on their own (client `c` uses view `c % views`).
    pub views: u32,
    /// Extra network time per attempt (the proxy's hop), paid on the way back.
    pub hop: Duration,
    /// Requests arrive during this long; the run then drains.
    pub duration: Duration,
    /// Width of the load-over-time buckets.
    pub bucket: Duration,
    /// Every random draw follows from it.
    pub seed: u64,
}

impl Setup {
    /// `n` identical backends (log-normal, median 20 ms, sigma 0.5, 4 at
    /// once) under Poisson load at `utilization` of their capacity, round
    /// robin, bare, one view, 60 s.
    pub fn uniform(n: usize, utilization: f64) -> Self {
        let backend =
            BackendSpec::new(ServiceTime::LogNormal { median: Duration::from_millis(20), sigma: 0.5 }, 4);
        let rate = backend.capacity() * n as f64 * utilization;
        Setup {
            backends: vec![backend; n],
            load: Load::Open { rate },
            keys: Keys::Uniform(10_000),
            algorithm: Algorithm::RoundRobin,
            health: Health::Bare,
            views: 1,
            hop: Duration::ZERO,
            duration: Duration::from_secs(60),
            bucket: Duration::from_secs(1),
            seed: 1,
        }
    }

    /// The total capacity of the backends present from the start, in requests per second.
    pub fn capacity(&self) -> f64 {
        self.backends.iter().filter(|b| b.joins_at.is_zero()).map(BackendSpec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_health::SplitMix64;

    #[test]
    fn draws_have_the_advertised_means() {
        let mut rng = SplitMix64::new(3);
        for service in [
            ServiceTime::Exponential(Duration::from_millis(10)),
            ServiceTime::LogNormal { median: Duration::from_millis(10), sigma: 0.5 },
            ServiceTime::Constant(Duration::from_millis(10)),
        ] {
            let n = 200_000;
            let mean = (0..n).map(|_| service.sample(&mut rng).as_secs_f64()).sum::<f64>() / f64::from(n);
            let want = service.mean().as_secs_f64();
            assert!((mean / want - 1.0).abs() < 0.02, "{service:?}: {mean} vs {want}");
        }
    }

    #[test]
    fn capacity_counts_only_the_backends_there_at_the_start() {
        let mut setup = Setup::uniform(4, 0.5);
        let one = setup.backends[0].capacity();
        assert!((one - 4.0 / 0.02 / (0.125f64).exp()).abs() < 1e-6);
        setup.backends[3].joins_at = Duration::from_secs(5);
        assert!((setup.capacity() - 3.0 * one).abs() < 1e-6);
    }
}
