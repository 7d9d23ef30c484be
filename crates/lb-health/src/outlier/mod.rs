//! Passive health: Envoy-style outlier detection over an [`EndpointSet`].
//!
//! The hot path ([`OutlierDetector::record`]) touches only the endpoint's
//! atomics; a consecutive-failure streak reaching its limit ejects the
//! endpoint there and then. The owner calls [`OutlierDetector::tick`]
//! periodically, off the hot path: it returns endpoints whose ejection is
//! over and, once per interval, runs the success-rate and
//! failure-percentage detectors and decays ejection multipliers (gRFC A50).
//! Ejection raises [`HealthFlag::Ejected`] on the endpoint's state, which
//! balancers already skip; nothing else in the set changes.

mod config;
mod counters;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use lb_core::{EndpointId, EndpointSet, HealthFlag, Report, Timestamp};

pub use config::{FailurePercentage, OutlierConfig, SuccessRate};
use counters::{Counters, NOT_EJECTED};

/// `next_interval` before the first tick.
const UNSCHEDULED: u64 = u64::MAX;

/// What one [`OutlierDetector::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickSummary {
    /// Whether the interval detectors ran.
    pub interval_ran: bool,
    /// Endpoints the interval detectors ejected.
    pub ejected: usize,
    /// Endpoints whose ejection ended.
    pub returned: usize,
}

/// Ejects endpoints that fail more than their peers; one per endpoint set.
///
/// ```
/// use core::time::Duration;
/// use lb_core::{Endpoint, EndpointSet, HealthStatus, Outcome, Report, Timestamp};
/// use lb_health::{OutlierConfig, OutlierDetector};
///
/// let set = EndpointSet::new(
///     ["a:80", "b:80"].map(|a| Endpoint::new(a.parse::<lb_core::Address>().unwrap())),
///     Timestamp::ZERO,
/// );
/// let detector = OutlierDetector::new(OutlierConfig::more_than_five_failures(), set.clone());
/// let failure = Report { outcome: Outcome::ConnectError, latency: Duration::ZERO, at: Timestamp::ZERO };
/// for _ in 0..6 { detector.record(0, &failure); }
/// assert_eq!(set.get(0).unwrap().state().status(), HealthStatus::Ejected);
/// // 30 s later the owner's periodic tick lets it back in.
/// detector.tick(Timestamp::ZERO + Duration::from_secs(30));
/// assert!(set.get(0).unwrap().state().is_eligible());
/// ```
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    set: EndpointSet,
    counters: Box<[Arc<Counters>]>,
    ejected: AtomicUsize,
    next_interval: AtomicU64,
}

impl OutlierDetector {
    /// A detector for `set` with nothing ejected.
    pub fn new(config: OutlierConfig, set: EndpointSet) -> Self {
        let counters = set.iter().map(|_| Arc::new(Counters::default())).collect();
        OutlierDetector::assemble(config, set, counters, UNSCHEDULED)
    }

    /// The detector for a new snapshot: endpoints that stay keep their
    /// counters and ejections (matched by id); new ones start fresh.
    pub fn with_set(&self, set: EndpointSet) -> Self {
        let counters = set
            .iter()
            .map(|m| match self.set.index_of(m.endpoint().id()) {
                Some(i) => Arc::clone(&self.counters[i]),
                None => Arc::new(Counters::default()),
            })
            .collect();
        let next = self.next_interval.load(Ordering::Acquire);
        OutlierDetector::assemble(self.config.clone(), set, counters, next)
    }

    fn assemble(config: OutlierConfig, set: EndpointSet, counters: Box<[Arc<Counters>]>, next: u64) -> Self {
        let ejected = counters.iter().filter(|c| c.is_ejected()).count();
        OutlierDetector {
            config,
            set,
            counters,
            ejected: AtomicUsize::new(ejected),
            next_interval: AtomicU64::new(next),
        }
    }

    /// The settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// The endpoint set it watches; indices refer to it.
    pub fn set(&self) -> &EndpointSet {
        &self.set
    }

    /// Endpoints ejected now.
    pub fn ejected_count(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }

    /// Whether the endpoint at `index` is ejected.
    pub fn is_ejected(&self, index: usize) -> bool {
        self.counters.get(index).is_some_and(|c| c.is_ejected())
    }

    /// How many times the endpoint at `index` counts as ejected (the ejection
    /// time multiplier).
    pub fn ejection_multiplier(&self, index: usize) -> u32 {
        self.counters.get(index).map_or(0, |c| c.multiplier.load(Ordering::Relaxed))
    }

    /// Counts one finished request to the endpoint at `index` (an index into
    /// [`set`](Self::set)); may eject it. Atomics only. Returns whether this
    /// report ejected the endpoint.
    #[inline]
    pub fn record(&self, index: usize, report: &Report) -> bool {
        let Some(counters) = self.counters.get(index) else { return false };
        if counters.is_ejected() || !counters.count(report.outcome, &self.config) {
            return false;
        }
        self.eject(index, report.at)
    }

    /// Like [`record`](Self::record), for a caller holding an endpoint id
    /// rather than an index into this snapshot.
    pub fn record_id(&self, id: &EndpointId, report: &Report) -> bool {
        self.set.index_of(id).is_some_and(|i| self.record(i, report))
    }

    /// Ejects the endpoint at `index` if it is not ejected yet and the
    /// ejection limit allows.
    fn eject(&self, index: usize, now: Timestamp) -> bool {
        let counters = &self.counters[index];
        // Claim the endpoint first, so two racing detectors eject it once.
        if counters
            .ejected_at
            .compare_exchange(
                NOT_EJECTED,
                now.as_nanos().min(NOT_EJECTED - 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return false;
        }
        if !self.reserve_ejection() {
            counters.ejected_at.store(NOT_EJECTED, Ordering::Release);
            return false;
        }
        counters.multiplier.fetch_add(1, Ordering::Relaxed);
        counters.clear_streaks();
        if let Some(member) = self.set.get(index) {
            member.state().set_flag(HealthFlag::Ejected, true);
        }
        true
    }

    /// Envoy's limit: eject while under `max_ejection_percent`, and always
    /// allow one.
    fn reserve_ejection(&self) -> bool {
        let hosts = self.set.len();
        let percent = self.config.max_ejection_percent as usize;
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                (e == 0 || 100 * e < percent * hosts).then_some(e + 1)
            })
            .is_ok()
    }

    /// The periodic work, off the hot path: returns endpoints whose ejection
    /// is over, and once per interval runs the interval detectors and decays
    /// multipliers. Call it every second or so.
    pub fn tick(&self, now: Timestamp) -> TickSummary {
        let mut summary = TickSummary { returned: self.return_due(now), ..TickSummary::default() };
        let due = self.next_interval.load(Ordering::Acquire);
        if due != UNSCHEDULED && now.as_nanos() < due {
            return summary;
        }
        let next = (now + self.config.interval).as_nanos();
        // The first tick only starts the clock: there is no interval behind it yet.
        if self.next_interval.compare_exchange(due, next, Ordering::AcqRel, Ordering::Acquire).is_ok()
            && due != UNSCHEDULED
        {
            summary.interval_ran = true;
            summary.ejected = self.run_interval(now);
        }
        summary
    }

    /// Runs the interval detectors now, whatever the schedule; returns how
    /// many endpoints they ejected.
    pub fn on_interval(&self, now: Timestamp) -> usize {
        self.return_due(now);
        self.run_interval(now)
    }

    fn return_due(&self, now: Timestamp) -> usize {
        let mut returned = 0;
        for (i, c) in self.counters.iter().enumerate() {
            let Some(since) = c.ejected_since() else { continue };
            let times = c.multiplier.load(Ordering::Relaxed);
            if now < since + self.config.ejection_time(times) {
                continue;
            }
            if c.ejected_at
                .compare_exchange(since.as_nanos(), NOT_EJECTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                c.clear_streaks();
                if let Some(m) = self.set.get(i) {
                    m.state().set_flag(HealthFlag::Ejected, false);
                }
                returned += 1;
            }
        }
        // Recount: the truth is in the counters, whatever raced.
        self.ejected.store(self.counters.iter().filter(|c| c.is_ejected()).count(), Ordering::Release);
        returned
    }

    fn run_interval(&self, now: Timestamp) -> usize {
        let volumes: Vec<(u32, u32)> = self.counters.iter().map(|c| c.take_interval()).collect();
        let mut ejected = 0;
        if let Some(sr) = self.config.success_rate {
            for i in success_rate_outliers(&volumes, sr) {
                ejected += usize::from(self.eject(i, now));
            }
        }
        if let Some(fp) = self.config.failure_percentage {
            for i in failure_percentage_outliers(&volumes, fp) {
                ejected += usize::from(self.eject(i, now));
            }
        }
        // gRFC A50: a host that stayed in for an interval earns one ejection back.
        for c in self.counters.iter().filter(|c| !c.is_ejected()) {
            let _ = c.multiplier.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| m.checked_sub(1));
        }
        ejected
    }
}

/// Indices whose success rate is below `mean - stdev * factor`.
fn success_rate_outliers(volumes: &[(u32, u32)], cfg: SuccessRate) -> Vec<usize> {
    let rates: Vec<(usize, f64)> = volumes
        .iter()
        .enumerate()
        .filter(|(_, (s, f))| s + f >= cfg.request_volume.max(1))
        .map(|(i, &(s, f))| (i, 100.0 * f64::from(s) / f64::from(s + f)))
        .collect();
    if rates.len() < cfg.minimum_hosts.max(1) as usize {
        return Vec::new();
    }
    let n = rates.len() as f64;
    let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = rates.iter().map(|(_, r)| (r - mean) * (r - mean)).sum::<f64>() / n;
    let threshold = mean - libm::sqrt(variance) * f64::from(cfg.stdev_factor) / 1000.0;
    rates.into_iter().filter(|&(_, r)| r < threshold).map(|(i, _)| i).collect()
}

/// Indices failing at least `threshold` percent of their requests.
fn failure_percentage_outliers(volumes: &[(u32, u32)], cfg: FailurePercentage) -> Vec<usize> {
    let judged: Vec<(usize, u32, u32)> = volumes
        .iter()
        .enumerate()
        .filter(|(_, (s, f))| s + f >= cfg.request_volume.max(1))
        .map(|(i, &(s, f))| (i, s, f))
        .collect();
    if judged.is_empty() || judged.len() < cfg.minimum_hosts as usize {
        return Vec::new();
    }
    judged
        .into_iter()
        .filter(|&(_, s, f)| u64::from(f) * 100 >= u64::from(cfg.threshold) * u64::from(s + f))
        .map(|(i, _, _)| i)
        .collect()
}

#[cfg(test)]
mod tests;
