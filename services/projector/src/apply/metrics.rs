//! The counters, gauges and histograms of one projection's worker.

use rapport_common::metrics::{Counter, Gauge, Histogram, Registry, seconds_buckets};

/// Counters of one projection.
#[derive(Clone)]
pub struct ApplyMetrics {
    pub applied: Counter,
    pub duplicates: Counter,
    pub undecodable: Counter,
    pub batches: Counter,
    /// Where a worker's time goes. The polling thread: polling records.
    /// The applying thread: waiting for the polling thread's next batch,
    /// folding it, and waiting for the previous batch's commit.
    pub polling_us: Counter,
    pub waiting_for_records_us: Counter,
    pub folding_us: Counter,
    pub waiting_for_commit_us: Counter,
    /// 1 while the worker reads far behind the log's end, with short
    /// fetch waits (`kafka::Fetching::CatchingUp`); 0 once it reached the
    /// end of every partition it owns.
    pub catching_up: Gauge,
    /// From ingest receiving an event to the commit of the batch that
    /// applied it, observed while the worker is at the end of the log.
    pub freshness: Histogram,
    pub(crate) registry: Registry,
    pub(crate) family: String,
}

/// The counter of one projection's records with one outcome.
fn outcome(registry: &Registry, family: &str, name: &str) -> Counter {
    registry.counter(
        "rapport_projector_records_total",
        "Customer-topic records by outcome.",
        &[("projection", family), ("outcome", name)],
    )
}

/// Records of the projection `family` sent to the dead letters so far.
pub fn dead_letters(registry: &Registry, family: &str) -> u64 {
    outcome(registry, family, "dead_letter").get()
}

impl ApplyMetrics {
    pub fn new(registry: &Registry, family: &str) -> Self {
        let outcome = |name| outcome(registry, family, name);
        let stage = |thread, name| {
            registry.counter(
                "rapport_projector_worker_microseconds_total",
                "Time a worker's threads spent per stage: the polling thread's poll; the applying thread's wait_for_records (the polling thread's next batch), fold, and wait_for_commit (the previous batch still committing).",
                &[("projection", family), ("thread", thread), ("stage", name)],
            )
        };
        Self {
            applied: outcome("applied"),
            duplicates: outcome("duplicate"),
            undecodable: outcome("dead_letter"),
            batches: registry.counter(
                "rapport_projector_batches_total",
                "Committed write batches.",
                &[("projection", family)],
            ),
            polling_us: stage("poll", "poll"),
            waiting_for_records_us: stage("apply", "wait_for_records"),
            folding_us: stage("apply", "fold"),
            waiting_for_commit_us: stage("apply", "wait_for_commit"),
            catching_up: registry.gauge(
                "rapport_projector_catching_up",
                "1 while the worker reads far behind the end of the customer topic with short fetch waits, 0 once it reached the end of every partition it owns.",
                &[("projection", family)],
            ),
            freshness: registry.histogram(
                "rapport_projector_freshness_seconds",
                "Time from ingest receiving an event to the projection committing it, for events applied while the worker is at the end of the customer topic (not while catching up).",
                seconds_buckets,
                &[("projection", family)],
            ),
            registry: registry.clone(),
            family: family.to_owned(),
        }
    }

    pub(crate) fn applied_offset(&self, partition: i32) -> Gauge {
        let partition = partition.to_string();
        self.registry.gauge(
            "rapport_projector_applied_offset",
            "Last applied offset per partition.",
            &[("projection", &self.family), ("partition", &partition)],
        )
    }

    /// Records of a partition past the last one applied, by the end the
    /// consumer's fetches last reported.
    pub(crate) fn lag_records(&self, partition: i32) -> Gauge {
        let partition = partition.to_string();
        self.registry.gauge(
            "rapport_projector_lag_records",
            "Records of each owned partition not applied yet, by the partition end the consumer's fetches last reported (librdkafka statistics, once a second).",
            &[("projection", &self.family), ("partition", &partition)],
        )
    }

    /// Set once, when the worker starts: how far the state on disk had got.
    pub(crate) fn resumed_offset(&self, partition: i32) -> Gauge {
        let partition = partition.to_string();
        self.registry.gauge(
            "rapport_projector_resumed_offset",
            "Last applied offset per owned partition found in the store when this worker started; -1 when none was stored.",
            &[("projection", &self.family), ("partition", &partition)],
        )
    }
}
