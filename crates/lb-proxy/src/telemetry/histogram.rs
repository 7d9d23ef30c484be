//! Latency histograms with fixed buckets, recorded with three relaxed atomic
//! adds and rendered in the Prometheus text format.
//!
//! The `metrics` exporter keeps every raw sample (with a timestamp) until a
//! scrape or an upkeep drains it, which costs an allocation every few dozen
//! requests and a clock read per sample; a request here costs neither.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// Prometheus' default buckets, in seconds (client libraries' `DefBuckets`).
pub(crate) const DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One labelled histogram.
#[derive(Debug)]
pub(crate) struct Histogram {
    /// Upper bounds in nanoseconds, ascending.
    bounds: Vec<u64>,
    /// Per bucket (not cumulative), the last for `+Inf`.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds_seconds: &[f64]) -> Self {
        Histogram {
            bounds: bounds_seconds.iter().map(|s| (s * 1e9) as u64).collect(),
            counts: (0..=bounds_seconds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    #[inline]
    pub(crate) fn record(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds.partition_point(|&bound| bound < nanos);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of this histogram.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let separator = if labels.is_empty() { "" } else { "," };
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let _ = match self.bounds.get(i) {
                Some(&bound) => {
                    writeln!(
                        out,
                        "{name}_bucket{{{labels}{separator}le=\"{}\"}} {cumulative}",
                        bound as f64 / 1e9
                    )
                }
                None => writeln!(out, "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}"),
            };
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The histograms of one metric name, by label set; a label set registered
/// twice shares one histogram, and one no handle refers to any more is dropped.
#[derive(Debug)]
pub(crate) struct Family {
    name: &'static str,
    help: &'static str,
    members: Mutex<Vec<(String, Weak<Histogram>)>>,
}

impl Family {
    pub(crate) fn new(name: &'static str, help: &'static str) -> Self {
        Family { name, help, members: Mutex::new(Vec::new()) }
    }

    /// The histogram for `labels` (rendered as is: `key="value",...`), with
    /// `buckets` (upper bounds in seconds) if it is new.
    pub(crate) fn get(&self, labels: String, buckets: &[f64]) -> Arc<Histogram> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(existing) = members.iter().find(|(l, _)| *l == labels).and_then(|(_, w)| w.upgrade()) {
            return existing;
        }
        let histogram = Arc::new(Histogram::new(buckets));
        members.push((labels, Arc::downgrade(&histogram)));
        histogram
    }

    /// Appends the family in the Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let live: Vec<(&String, Arc<Histogram>)> =
            members.iter().filter_map(|(labels, weak)| Some((labels, weak.upgrade()?))).collect();
        if live.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (labels, histogram) in live {
            histogram.render(out, self.name, labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_cumulative_buckets() {
        let family = Family::new(lb_engine::names::REQUEST_DURATION_SECONDS, "Time per request.");
        let h = family.get("backend=\"a\"".to_string(), &[0.01, 0.1]);
        for ms in [1, 10, 50, 200] {
            h.record(Duration::from_millis(ms));
        }
        assert!(
            Arc::ptr_eq(&h, &family.get("backend=\"a\"".to_string(), &[1.0])),
            "one histogram per label set"
        );
        let mut out = String::new();
        family.render(&mut out);
        assert_eq!(
            out,
            "# HELP request_duration_seconds Time per request.\n# TYPE request_duration_seconds histogram\n\
             request_duration_seconds_bucket{backend=\"a\",le=\"0.01\"} 2\n\
             request_duration_seconds_bucket{backend=\"a\",le=\"0.1\"} 3\n\
             request_duration_seconds_bucket{backend=\"a\",le=\"+Inf\"} 4\n\
             request_duration_seconds_sum{backend=\"a\"} 0.261\n\
             request_duration_seconds_count{backend=\"a\"} 4\n"
        );
        drop(h);
        let mut empty = String::new();
        family.render(&mut empty);
        assert!(empty.is_empty(), "a histogram no endpoint holds is gone: {empty}");
    }
}
