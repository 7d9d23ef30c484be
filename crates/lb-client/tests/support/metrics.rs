//! One Prometheus recorder per test, and its exposition read back with a
//! real text-format parser.
//!
//! Each test runs on its own current-thread runtime inside
//! `metrics::with_local_recorder`, so everything it records (the pool's
//! requests and its background tasks alike, all polled on that thread) goes
//! to its own recorder: tests running at once in one process never see, or
//! reset, each other's series.

use std::future::Future;

use lb_client::telemetry;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use prometheus_parse::{Sample, Scrape, Value};

/// Runs `test` with a fresh recorder of its own, which it reads through the
/// [`Recorded`] it is given. `paused` starts the runtime with paused time.
pub fn run<F, Fut>(paused: bool, test: F)
where
    F: FnOnce(Recorded) -> Fut,
    Fut: Future<Output = ()>,
{
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(telemetry::REQUEST_DURATION_SECONDS.to_string()),
            &telemetry::DURATION_BUCKETS,
        )
        .expect("valid buckets")
        .build_recorder();
    let recorded = Recorded { handle: recorder.handle() };
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(paused)
            .build()
            .expect("a runtime");
        runtime.block_on(test(recorded));
        // Tasks dropped with the runtime still record into this recorder.
        drop(runtime);
    });
}

/// The recorder of one test.
#[derive(Clone)]
pub struct Recorded {
    handle: PrometheusHandle,
}

impl Recorded {
    /// The exposition as a scrape would see it now, parsed.
    pub fn scrape(&self) -> Exposition {
        let text = self.handle.render();
        let scrape =
            Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).expect("a valid exposition");
        Exposition { text, scrape }
    }
}

/// One parsed exposition.
pub struct Exposition {
    /// The text as rendered, for failure messages.
    pub text: String,
    scrape: Scrape,
}

impl Exposition {
    /// Every series of the metric `name` whose labels include all of `labels`.
    pub fn series<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.scrape
            .samples
            .iter()
            .filter(move |s| s.metric == name)
            .filter(move |s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
    }

    /// The sum of the counter `name` over every series with `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels)
            .map(|s| match s.value {
                Value::Counter(v) => v,
                ref other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    /// The value of the gauge `name` with `labels`, if it exists.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series(name, labels).next().map(|s| match s.value {
            Value::Gauge(v) => v,
            ref other => panic!("{name} is not a gauge: {other:?}"),
        })
    }

    /// How many observations the histogram `name` with `labels` holds.
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series(name, labels).next().map(|s| match &s.value {
            Value::Histogram(buckets) => {
                buckets.iter().find(|b| b.less_than.is_infinite()).expect("a +Inf bucket").count
            }
            other => panic!("{name} is not a histogram: {other:?}"),
        })
    }

    /// The kind of the metric `name` (`counter`, `gauge`, `histogram`,
    /// `summary` or `untyped`), read from its samples.
    pub fn kind(&self, name: &str) -> Option<&'static str> {
        self.series(name, &[]).next().map(|s| match s.value {
            Value::Counter(_) => "counter",
            Value::Gauge(_) => "gauge",
            Value::Histogram(_) => "histogram",
            Value::Summary(_) => "summary",
            Value::Untyped(_) => "untyped",
        })
    }

    /// The HELP text of the metric `name`.
    pub fn help(&self, name: &str) -> Option<&str> {
        self.scrape.docs.get(name).map(String::as_str)
    }

    /// The values of label `key` over the series of `name` with `labels`, sorted.
    pub fn label_values(&self, name: &str, key: &str, labels: &[(&str, &str)]) -> Vec<String> {
        let mut values: Vec<String> =
            self.series(name, labels).filter_map(|s| s.labels.get(key).map(str::to_string)).collect();
        values.sort();
        values
    }
}
