//! What a run measured, and the figures the scenarios report.

use core::time::Duration;

use crate::setup::Setup;

/// Everything one run counted. Latencies are kept whole (sorted when the
/// run ends), so any percentile and the CDF can be read exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Each request's latency from arrival to its final answer (or failure), in nanoseconds, sorted.
    pub latencies: Vec<u64>,
    /// Requests that arrived.
    pub requests: u64,
    /// Requests answered successfully.
    pub succeeded: u64,
    /// Tries sent to backends (first attempts and retries).
    pub tries: u64,
    /// Requests failed at once because every endpoint refused (breakers open).
    pub rejected_locally: u64,
    /// Requests still unanswered when the run stopped (counted as failed).
    pub unfinished: u64,
    /// Tries per backend.
    pub per_backend: Vec<u64>,
    /// Tries per backend per time bucket: `timeline[bucket][backend]`.
    pub timeline: Vec<Vec<u32>>,
    /// Bounded-load picks checked against ⌈c·m·w/W⌉, and how many were above it.
    pub bound_checks: u64,
    /// Picks that broke the bound (zero when the algorithm keeps its promise).
    pub bound_violations: u64,
    /// Events played.
    pub events: u64,
    bucket: Duration,
}

impl Measured {
    pub(crate) fn new(backends: usize, setup: &Setup) -> Self {
        let buckets = setup.duration.as_nanos().div_ceil(setup.bucket.as_nanos().max(1)) as usize;
        Measured {
            latencies: Vec::new(),
            requests: 0,
            succeeded: 0,
            tries: 0,
            rejected_locally: 0,
            unfinished: 0,
            per_backend: vec![0; backends],
            timeline: vec![vec![0; backends]; buckets],
            bound_checks: 0,
            bound_violations: 0,
            events: 0,
            bucket: setup.bucket,
        }
    }

    pub(crate) fn tried(&mut self, backend: usize, since_start: Duration) {
        self.tries += 1;
        self.per_backend[backend] += 1;
        let bucket = (since_start.as_nanos() / self.bucket.as_nanos().max(1)) as usize;
        if let Some(row) = self.timeline.get_mut(bucket) {
            row[backend] += 1;
        }
    }

    pub(crate) fn request(&mut self, latency: Duration, ok: bool) {
        self.requests += 1;
        self.succeeded += u64::from(ok);
        self.latencies.push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(crate) fn bound(&mut self, kept: bool) {
        self.bound_checks += 1;
        self.bound_violations += u64::from(!kept);
    }

    pub(crate) fn finish(&mut self) {
        self.latencies.sort_unstable();
    }

    /// The latency at quantile `q` (0 to 1) over every request, failed ones included.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.latencies.len() as f64).ceil() as usize).max(1) - 1;
        Duration::from_nanos(self.latencies[rank.min(self.latencies.len() - 1)])
    }

    /// The figures the scenarios report.
    pub fn figures(&self) -> Figures {
        let n = self.per_backend.len().max(1) as f64;
        let tries = self.tries.max(1) as f64;
        let share: Vec<f64> = self.per_backend.iter().map(|&t| t as f64 / tries).collect();
        let max_share = share.iter().copied().fold(0.0, f64::max);
        Figures {
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            success: self.succeeded as f64 / self.requests.max(1) as f64,
            attempts: self.tries as f64 / self.requests.max(1) as f64,
            max_over_mean: if self.tries == 0 { 0.0 } else { max_share * n },
            share,
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Share of requests answered successfully, 0 to 1.
    pub success: f64,
    /// Tries per request (1.0: no retries; below 1 when some were refused locally).
    pub attempts: f64,
    /// Each backend's share of the tries.
    pub share: Vec<f64>,
    /// The busiest backend's share over the mean share (1.0: perfectly even).
    pub max_over_mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_ranks_of_the_sorted_latencies() {
        let mut m = Measured::new(2, &Setup::uniform(2, 0.5));
        for ms in (1..=1000).rev() {
            m.request(Duration::from_millis(ms), ms % 100 != 0);
        }
        m.finish();
        assert_eq!(m.quantile(0.5), Duration::from_millis(500));
        assert_eq!(m.quantile(0.99), Duration::from_millis(990));
        assert_eq!(m.quantile(0.999), Duration::from_millis(999));
        assert_eq!(m.quantile(0.0), Duration::from_millis(1));
        assert_eq!(m.figures().success, 0.99);
    }

    #[test]
    fn shares_and_max_over_mean_follow_the_tries() {
        let mut m = Measured::new(4, &Setup::uniform(4, 0.5));
        for (backend, count) in [(0, 4), (1, 2), (2, 1), (3, 1)] {
            for _ in 0..count {
                m.tried(backend, Duration::from_millis(1500));
            }
        }
        let f = m.figures();
        assert_eq!(f.share, [0.5, 0.25, 0.125, 0.125]);
        assert_eq!(f.max_over_mean, 2.0);
        assert_eq!(m.timeline[1], [4, 2, 1, 1]);
    }
}
