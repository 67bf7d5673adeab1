//! A small Prometheus registry: counters and gauges keyed by name and labels,
//! rendered in the text exposition format at `/metrics`.
//!
//! Hot paths hold an `Arc<AtomicU64>` obtained once, so updating a metric is
//! one atomic add; the lock is only taken to register or render.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<String, Arc<AtomicU64>>,
}

/// A process-wide set of metrics.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

/// A monotonically increasing count.
#[derive(Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn increment(&self, by: u64) {
        self.0.fetch_add(by, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as `i64`).
#[derive(Clone)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value as u64, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed) as i64
    }
}

fn label_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(name, value)| {
            format!(
                "{name}=\"{}\"",
                value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

impl Registry {
    fn series(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
    ) -> Arc<AtomicU64> {
        let mut families = self.families.lock().expect("metrics lock");
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        family.series.entry(label_text(labels)).or_default().clone()
    }

    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        Counter(self.series(name, help, Kind::Counter, labels))
    }

    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(self.series(name, help, Kind::Gauge, labels))
    }

    /// The Prometheus text exposition of every registered series.
    pub fn render(&self) -> String {
        let families = self.families.lock().expect("metrics lock");
        let mut text = String::new();
        for (name, family) in families.iter() {
            let kind = if family.kind == Kind::Counter {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(text, "# HELP {name} {}\n# TYPE {name} {kind}", family.help);
            for (labels, value) in &family.series {
                let raw = value.load(Ordering::Relaxed);
                match family.kind {
                    Kind::Counter => writeln!(text, "{name}{labels} {raw}"),
                    Kind::Gauge => writeln!(text, "{name}{labels} {}", raw as i64),
                }
                .expect("writing to a String");
            }
        }
        text
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
        assert!(text.contains("# TYPE rapport_events_total counter"));
        assert!(text.contains("rapport_events_total{type=\"order.\\\"placed\\\"\"} 3"));
        assert!(text.contains("rapport_lag -2"));
    }

    #[test]
    fn the_same_series_is_shared() {
        let registry = Registry::default();
        registry.counter("c", "h", &[("a", "b")]).increment(1);
        registry.counter("c", "h", &[("a", "b")]).increment(1);
        assert_eq!(registry.counter("c", "h", &[("a", "b")]).get(), 2);
    }
}
