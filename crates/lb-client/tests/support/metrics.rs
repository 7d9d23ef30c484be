//! A process-wide debugging recorder, to read the metrics the client emits.
//! Take one [`read`] and query it: the recorder drains what it reports.

use std::sync::OnceLock;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("no other recorder in the test process");
        snapshotter
    })
}

/// Installs the recorder; call before building what is measured.
pub fn install() {
    let _ = snapshotter();
}

/// One series: its name, its labels and its value.
type Series = (String, Vec<(String, String)>, DebugValue);

/// Every series recorded so far.
pub struct Reading(Vec<Series>);

/// Takes the current values of every series.
pub fn read() -> Reading {
    Reading(
        snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let labels =
                    key.key().labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
                (key.key().name().to_string(), labels, value)
            })
            .collect(),
    )
}

impl Reading {
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a DebugValue> + 'a {
        self.0
            .iter()
            .filter(move |(n, ..)| n == name)
            .filter(move |(_, have, _)| {
                labels.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(.., value)| value)
    }

    /// The sum of the counter `name` over every series whose labels include all of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels).map(|value| if let DebugValue::Counter(n) = value { *n } else { 0 }).sum()
    }

    /// The value of the gauge `name` with `labels`, if it was ever set.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).find_map(|value| match value {
            DebugValue::Gauge(v) => Some(v.into_inner()),
            _ => None,
        })
    }

    /// How many values the histogram `name` with `labels` recorded.
    pub fn histogram_len(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.matching(name, labels)
            .map(|value| if let DebugValue::Histogram(v) = value { v.len() } else { 0 })
            .sum()
    }
}
