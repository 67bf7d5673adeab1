//! The services' Prometheus metrics: counters, gauges and histograms keyed
//! by name and labels, on the `prometheus-client` crate, served in the
//! OpenMetrics text format at `/metrics`.
//!
//! A service asks the [`Registry`] for a series once (by name, help and
//! labels) and keeps the handle: updating it is an atomic operation, and
//! asking again for the same name and labels returns the same series.
//! Counter names end in `_total`, as they appear in the exposition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter as CounterSeries;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge as GaugeSeries;
use prometheus_client::metrics::histogram::{Histogram as HistogramSeries, exponential_buckets};

type Labels = Vec<(String, String)>;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds of a histogram family, in its unit.
#[derive(Clone)]
struct Buckets(Vec<f64>);

impl MetricConstructor<HistogramSeries> for Buckets {
    fn new_metric(&self) -> HistogramSeries {
        HistogramSeries::new(self.0.iter().copied())
    }
}

#[derive(Default)]
struct Families {
    registry: prometheus_client::registry::Registry,
    counters: HashMap<&'static str, Family<Labels, CounterSeries>>,
    gauges: HashMap<&'static str, Family<Labels, GaugeSeries>>,
    histograms: HashMap<&'static str, Family<Labels, HistogramSeries, Buckets>>,
}

/// A process-wide set of metrics.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<Families>>,
}

/// A monotonically increasing count.
#[derive(Clone)]
pub struct Counter(CounterSeries);

impl Counter {
    pub fn increment(&self, by: u64) {
        self.0.inc_by(by);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down.
#[derive(Clone)]
pub struct Gauge(GaugeSeries);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.set(value);
    }

    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// A distribution of observations (latencies, ages), in buckets, so that a
/// percentile can be read in Prometheus with `histogram_quantile`.
#[derive(Clone)]
pub struct Histogram(HistogramSeries);

impl Histogram {
    pub fn observe(&self, value: f64) {
        self.0.observe(value);
    }
}

/// Buckets for durations in seconds: 100 µs doubling up to about 52 s.
pub fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(0.000_1, 2.0, 20).collect()
}

/// `help` without its final full stop, which the encoder adds.
fn sentence(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

fn label_set(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

impl Registry {
    /// The counter `name` (ending in `_total`) with `labels`.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        let mut families = self.families.lock().expect("metrics lock");
        let Families {
            registry, counters, ..
        } = &mut *families;
        let family = counters.entry(name).or_insert_with(|| {
            let family = Family::default();
            // The encoder adds the suffix back.
            let stem = name.strip_suffix("_total").unwrap_or(name);
            registry.register(stem, sentence(help), family.clone());
            family
        });
        Counter(family.get_or_create_owned(&label_set(labels)))
    }

    /// The gauge `name` with `labels`.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        let mut families = self.families.lock().expect("metrics lock");
        let Families {
            registry, gauges, ..
        } = &mut *families;
        let family = gauges.entry(name).or_insert_with(|| {
            let family = Family::default();
            registry.register(name, sentence(help), family.clone());
            family
        });
        Gauge(family.get_or_create_owned(&label_set(labels)))
    }

    /// The histogram `name` with `labels`; `buckets` (upper bounds, rising)
    /// are taken the first time the name is asked for.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        buckets: impl FnOnce() -> Vec<f64>,
        labels: &[(&str, &str)],
    ) -> Histogram {
        let mut families = self.families.lock().expect("metrics lock");
        let Families {
            registry,
            histograms,
            ..
        } = &mut *families;
        let family = histograms.entry(name).or_insert_with(|| {
            let family = Family::new_with_constructor(Buckets(buckets()));
            registry.register(name, sentence(help), family.clone());
            family
        });
        Histogram(family.get_or_create_owned(&label_set(labels)))
    }

    /// The OpenMetrics text exposition of every registered series.
    pub fn render(&self) -> String {
        let families = self.families.lock().expect("metrics lock");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &families.registry)
            .expect("writing to a String");
        text
    }

    /// The answer of a `/metrics` route.
    pub fn response(&self) -> Response {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], self.render()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_with_escaped_labels() {
        let registry = Registry::default();
        registry
            .counter(
                "rapport_events_total",
                "Events seen.",
                &[("type", "order.\"placed\"")],
            )
            .increment(3);
        registry.gauge("rapport_lag", "Lag.", &[]).set(-2);
        let text = registry.render();
        assert!(text.contains("# TYPE rapport_events counter"), "{text}");
        assert!(
            text.contains("# HELP rapport_events Events seen.\n"),
            "{text}"
        );
        assert!(
            text.contains("rapport_events_total{type=\"order.\\\"placed\\\"\"} 3"),
            "{text}"
        );
        assert!(text.contains("rapport_lag -2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_same_series_is_shared() {
        let registry = Registry::default();
        registry.counter("c_total", "h", &[("a", "b")]).increment(1);
        registry.counter("c_total", "h", &[("a", "b")]).increment(1);
        assert_eq!(registry.counter("c_total", "h", &[("a", "b")]).get(), 2);
        assert_eq!(registry.counter("c_total", "h", &[("a", "c")]).get(), 0);
    }

    #[test]
    fn a_histogram_counts_each_observation_into_its_buckets() {
        let registry = Registry::default();
        let latency = registry.histogram(
            "rapport_request_duration_seconds",
            "Request latency.",
            seconds_buckets,
            &[("route", "/v1/events")],
        );
        for seconds in [0.000_05, 0.003, 0.003, 2.0] {
            latency.observe(seconds);
        }
        let text = registry.render();
        let line = |prefix: &str| {
            text.lines()
                .find(|line| line.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
                .to_owned()
        };
        assert!(line("rapport_request_duration_seconds_count").ends_with(" 4"));
        assert!(
            line("rapport_request_duration_seconds_bucket{le=\"0.0001\",route=\"/v1/events\"}")
                .ends_with(" 1")
        );
        assert!(
            line("rapport_request_duration_seconds_bucket{le=\"0.0032\",route=\"/v1/events\"}")
                .ends_with(" 3"),
            "{text}"
        );
        assert!(
            line("rapport_request_duration_seconds_bucket{le=\"+Inf\",route=\"/v1/events\"}")
                .ends_with(" 4")
        );
    }
}
