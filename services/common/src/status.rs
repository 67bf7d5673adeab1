//! What a consuming worker reports to operators: applied offsets against the
//! log's end, lag, throughput and the last error. The worker thread writes,
//! the `/v1/admin/status` handler reads.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::kafka::BrokerHealth;

/// Shared between a worker and the status endpoint.
pub struct WorkerStatus {
    topic: String,
    consumer: OnceLock<Arc<BrokerHealth>>,
    applied: Mutex<BTreeMap<i32, i64>>,
    processed_total: AtomicU64,
    samples: Mutex<VecDeque<(Instant, u64)>>,
    last_error: Mutex<Option<LastError>>,
    /// Batches committed since the worker started.
    batches_total: AtomicU64,
    /// Partitions the worker has read to their end since it started.
    /// Partitions read to their end, each with the offset after the last
    /// record read then (0 when not known).
    ends_reached: Mutex<BTreeMap<i32, i64>>,
    /// Where the worker started partitions it had no position for, found
    /// by a search (a rebuild from a time), and how.
    starts: Mutex<BTreeMap<i32, (i64, String)>>,
}

/// One partition's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartitionStatus {
    pub partition: i32,
    /// Last applied offset; absent before the first record.
    pub applied_offset: Option<i64>,
    /// The partition's end (next offset) as the last fetch reported it, or
    /// the offset after the applied one when that is later (the report
    /// can be up to a second old).
    pub log_end: Option<i64>,
    /// Records between the applied offset and the end.
    pub lag: Option<i64>,
    /// Where reading started when it was sought (a rebuild from a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_offset: Option<i64>,
    /// How that start was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_found_by: Option<String>,
    /// Whether the worker has read the partition to its end since it
    /// started (a fetch at the end came back empty). A `log_end` the worker
    /// has applied nothing of is only trusted with this: a broker that lost
    /// a topic for a moment reports an end of 0.
    #[serde(default)]
    pub reached_end: bool,
}

/// The last error a worker met, and whether it has got over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastError {
    pub message: String,
    /// When it happened (Unix milliseconds, wall clock).
    pub at_ms: i64,
    /// Batches committed since: more than zero means the worker got over it.
    pub batches_since: u64,
}

/// The report `/v1/admin/status` serves for one consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsumerReport {
    pub topic: String,
    pub partitions: Vec<PartitionStatus>,
    pub total_lag: i64,
    /// Records processed per second over the last ten seconds.
    pub events_per_second: f64,
    pub last_error: Option<LastError>,
}

const RATE_WINDOW: Duration = Duration::from_secs(10);

impl WorkerStatus {
    pub fn new(topic: &str) -> Arc<Self> {
        Arc::new(Self {
            topic: topic.to_owned(),
            consumer: OnceLock::new(),
            applied: Mutex::new(BTreeMap::new()),
            processed_total: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::new()),
            last_error: Mutex::new(None),
            batches_total: AtomicU64::new(0),
            ends_reached: Mutex::new(Default::default()),
            starts: Mutex::new(BTreeMap::new()),
        })
    }

    /// Gives the status access to the consumer's view of the log's end.
    pub fn attach_consumer(&self, health: Arc<BrokerHealth>) {
        let _ = self.consumer.set(health);
    }

    /// Records a committed batch: the offsets it reached and how many records it processed.
    pub fn record_batch(&self, offsets: &BTreeMap<i32, i64>, processed: u64) {
        self.applied.lock().expect("status lock").extend(
            offsets
                .iter()
                .map(|(partition, offset)| (*partition, *offset)),
        );
        let total = self.processed_total.fetch_add(processed, Ordering::Relaxed) + processed;
        self.batches_total.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut samples = self.samples.lock().expect("status lock");
        samples.push_back((now, total));
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Records where reading `partition` starts and how that was found.
    pub fn record_start(&self, partition: i32, offset: i64, found_by: &str) {
        self.starts
            .lock()
            .expect("status lock")
            .insert(partition, (offset, found_by.to_owned()));
    }

    /// Records that reading `partition` came to its end.
    pub fn record_end_reached(&self, partition: i32) {
        self.record_end_reached_at(partition, 0);
    }

    /// Records that reading `partition` came to its end, the last record
    /// read then being the one before `next`. The first end counts.
    pub fn record_end_reached_at(&self, partition: i32, next: i64) {
        self.ends_reached
            .lock()
            .expect("status lock")
            .entry(partition)
            .or_insert(next);
    }

    /// The partitions read to their end since the worker started.
    pub fn ends_reached(&self) -> std::collections::BTreeSet<i32> {
        self.ends_reached
            .lock()
            .expect("status lock")
            .keys()
            .copied()
            .collect()
    }

    /// Each partition read to its end, with the offset after the last record
    /// read then.
    pub fn ends_reached_at(&self) -> BTreeMap<i32, i64> {
        self.ends_reached.lock().expect("status lock").clone()
    }

    /// The partitions read to their end whose records up to that end are
    /// also applied: reading a record comes before folding and committing
    /// it, and what is read is not yet in the store.
    pub fn ends_applied(&self) -> std::collections::BTreeSet<i32> {
        let applied = self.applied.lock().expect("status lock").clone();
        self.ends_reached
            .lock()
            .expect("status lock")
            .iter()
            .filter(|(partition, next)| {
                **next == 0
                    || applied
                        .get(partition)
                        .is_some_and(|offset| offset + 1 >= **next)
            })
            .map(|(partition, _)| *partition)
            .collect()
    }

    /// The last applied offset of each partition.
    pub fn applied(&self) -> BTreeMap<i32, i64> {
        self.applied.lock().expect("status lock").clone()
    }

    pub fn record_error(&self, error: &str) {
        // Wall-clock time for operators to read; nothing folds it.
        let at_ms = crate::now_ms();
        let mut last_error = self.last_error.lock().expect("status lock");
        *last_error = Some(LastError {
            message: error.to_owned(),
            at_ms,
            // Counted back from the running total when reported.
            batches_since: self.batches_total.load(Ordering::Relaxed),
        });
    }

    pub fn report(&self) -> ConsumerReport {
        let applied = self.applied.lock().expect("status lock").clone();
        let ends = self
            .consumer
            .get()
            .map(|health| health.log_ends(&self.topic))
            .unwrap_or_default();
        let starts = self.starts.lock().expect("status lock").clone();
        let ends_reached = self.ends_reached();
        let partitions: std::collections::BTreeSet<i32> = applied
            .keys()
            .chain(ends.keys())
            .chain(starts.keys())
            .copied()
            .collect();
        let partitions: Vec<PartitionStatus> = partitions
            .into_iter()
            .map(|partition| {
                let applied_offset = applied.get(&partition).copied();
                // The end comes from statistics up to a second old, so it can
                // lie before a record already applied; that record's being
                // there says more.
                let log_end = match (ends.get(&partition).copied(), applied_offset) {
                    (Some(end), Some(applied)) => Some(end.max(applied + 1)),
                    (end, _) => end,
                };
                let start = starts.get(&partition);
                // Before the first record is applied, what lies before the
                // start is not to be read, so it is not lag either.
                let next = applied_offset
                    .map(|offset| offset + 1)
                    .or(start.map(|(offset, _)| *offset))
                    .unwrap_or(0);
                let lag = log_end.map(|end| (end - next).max(0));
                PartitionStatus {
                    partition,
                    applied_offset,
                    log_end,
                    lag,
                    start_offset: start.map(|(offset, _)| *offset),
                    start_found_by: start.map(|(_, found_by)| found_by.clone()),
                    reached_end: ends_reached.contains(&partition),
                }
            })
            .collect();
        let total_lag = partitions.iter().filter_map(|status| status.lag).sum();
        let now = Instant::now();
        let samples = self.samples.lock().expect("status lock");
        let events_per_second = match (samples.front(), samples.back()) {
            (Some((first_at, first)), Some((_, last)))
                if now.duration_since(*first_at) > Duration::from_millis(500) =>
            {
                (last - first) as f64 / now.duration_since(*first_at).as_secs_f64()
            }
            _ => 0.0,
        };
        ConsumerReport {
            topic: self.topic.clone(),
            partitions,
            total_lag,
            events_per_second,
            last_error: self
                .last_error
                .lock()
                .expect("status lock")
                .clone()
                .map(|error| LastError {
                    batches_since: self.batches_total.load(Ordering::Relaxed) - error.batches_since,
                    ..error
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_end_is_never_shown_before_a_record_already_applied() {
        let status = WorkerStatus::new("t");
        let health = Arc::new(BrokerHealth::default());
        // Partition 0's report is older than the last batch; partition 1's
        // is ahead of it.
        health.record_log_end("t", 0, 95, 1);
        health.record_log_end("t", 1, 50, 1);
        status.attach_consumer(health);
        status.record_batch(&BTreeMap::from([(0, 99), (1, 39)]), 50);
        let report = status.report();
        let shown: Vec<_> = report
            .partitions
            .iter()
            .map(|partition| (partition.log_end, partition.lag))
            .collect();
        assert_eq!(shown, vec![(Some(100), Some(0)), (Some(50), Some(10))]);
        assert_eq!(report.total_lag, 10);
    }

    #[test]
    fn lag_counts_what_is_left_after_the_applied_offset() {
        let status = WorkerStatus::new("t");
        status.record_batch(&BTreeMap::from([(0, 9), (1, 4)]), 15);
        let report = status.report();
        assert_eq!(report.partitions.len(), 2);
        assert_eq!(report.partitions[0].applied_offset, Some(9));
        // Without a consumer attached the end is unknown, and so is the lag.
        assert_eq!(report.partitions[0].lag, None);
        assert_eq!(report.total_lag, 0);
        status.record_error("broker gone");
        let error = status.report().last_error.unwrap();
        assert_eq!(
            (error.message.as_str(), error.batches_since),
            ("broker gone", 0)
        );
        assert!(error.at_ms > 0);
        status.record_batch(&BTreeMap::from([(0, 12)]), 3);
        status.record_batch(&BTreeMap::from([(0, 14)]), 2);
        let got_over = status.report().last_error.unwrap();
        assert_eq!(
            got_over.batches_since, 2,
            "a worker that commits again got over it"
        );
        status.record_error("broker gone again");
        assert_eq!(status.report().last_error.unwrap().batches_since, 0);
    }

    #[test]
    fn a_partition_counts_as_read_to_its_end_only_once_the_worker_said_so() {
        let status = WorkerStatus::new("t");
        status.record_batch(&BTreeMap::from([(0, 9), (1, 4)]), 15);
        assert!(
            status
                .report()
                .partitions
                .iter()
                .all(|partition| !partition.reached_end)
        );
        status.record_end_reached(1);
        let reached: Vec<bool> = status
            .report()
            .partitions
            .iter()
            .map(|partition| partition.reached_end)
            .collect();
        assert_eq!(reached, vec![false, true]);
    }
}
