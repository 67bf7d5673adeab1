//! Polling the customer topic into batches: catching up with short fetch
//! waits, handing over to the steady consumer at the end, and knowing
//! where a bounded version ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rapport_common::status::WorkerStatus;

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use rapport_common::broker::{Admission, BrokerKind, OffsetGate};

use super::metrics::ApplyMetrics;

/// What the polling thread hands the applying thread.
pub(crate) enum Polled<'consumer> {
    /// Records to apply, in the order consumed.
    Records(Vec<rdkafka::message::BorrowedMessage<'consumer>>),
    /// Nothing arrived for a while.
    Idle,
    /// A bounded version read every partition it owns to its end.
    Finished,
}

/// Polls the customer topic into batches for the applying thread, and
/// keeps track of where a bounded version ends.
pub(crate) struct Poller<'a> {
    pub(crate) consumer: &'a ProjectorConsumer,
    /// Until the worker reaches the end of the log: how it gets there.
    pub(crate) catching_up: Option<CatchingUp<'a>>,
    /// After that, the consumer that read until then.
    pub(crate) retired: Option<&'a ProjectorConsumer>,
    /// Where both consumers report the log's end.
    pub(crate) health: &'a rapport_common::kafka::BrokerHealth,
    pub(crate) topic: &'a str,
    pub(crate) owned: &'a [i32],
    /// What the brokers run, and so where fetches start and how ends show.
    pub(crate) broker: BrokerKind,
    /// Which records of each partition to take: from the first wanted,
    /// each offset once.
    pub(crate) gate: OffsetGate,
    /// For a bounded version: a record received after this instant shows
    /// that its partition holds nothing more the version wants.
    pub(crate) past_end_ms: Option<i64>,
    /// Partitions a bounded version has finished: it saw a record received
    /// past its end, or the end of the partition (the end lies in the
    /// past, so nothing received by then can still arrive).
    pub(crate) done: std::collections::BTreeSet<i32>,
    pub(crate) max_batch: usize,
    pub(crate) status: &'a WorkerStatus,
    pub(crate) metrics: &'a ApplyMetrics,
}

pub(crate) type ProjectorConsumer =
    rdkafka::consumer::BaseConsumer<rapport_common::kafka::HealthContext>;

/// A worker on its way from where it started to the end of the log, read
/// with short fetch waits (`kafka::Fetching::CatchingUp`).
pub(crate) struct CatchingUp<'a> {
    /// The consumer, waiting longer, that takes the partitions over at the
    /// end.
    pub(crate) steady: &'a ProjectorConsumer,
    /// Where the worker started each partition it owns.
    pub(crate) starts: Vec<(i32, Offset)>,
    /// The offset after the last record polled from each partition.
    pub(crate) next: BTreeMap<i32, i64>,
    /// The partitions whose end the catching-up consumer reached.
    pub(crate) reached_end: std::collections::BTreeSet<i32>,
}

impl CatchingUp<'_> {
    /// Whether the catching-up consumer has read `partition` to its end:
    /// librdkafka said so, or the worker's position (the record after the
    /// last one polled, or `first_wanted` when that is later) reached the
    /// end its fetches last reported.
    ///
    /// The second is needed where the records before the end are gone:
    /// tansu 0.6 then answers a fetch below the end with neither a record
    /// nor an end of partition, while reporting the end. Seen with `make
    /// run` over existing data, when tansu's SQLite storage had deleted the
    /// log under retention.ms = -1 (see `rapport_common::topics`): the
    /// projector, started at an idle end, kept fetching every 5 ms until
    /// something new arrived.
    pub(crate) fn read_to_end(&self, partition: i32, poller: &Poller<'_>) -> bool {
        let position = self
            .next
            .get(&partition)
            .copied()
            .max(poller.gate.first_wanted(partition))
            .unwrap_or(0);
        self.reached_end.contains(&partition)
            || poller
                .health
                .end_reached_as_of(poller.topic, partition, position)
                .is_some()
    }
}

impl<'a> Poller<'a> {
    /// Polls until `stop` is set, a bounded version is finished, or the
    /// applying thread is gone.
    pub(crate) fn run(
        mut self,
        stop: &AtomicBool,
        batches: std::sync::mpsc::SyncSender<Polled<'a>>,
    ) {
        let bounded = self.past_end_ms.is_some();
        while !stop.load(Ordering::Relaxed) {
            if bounded
                && self
                    .owned
                    .iter()
                    .all(|partition| self.done.contains(partition))
            {
                let _ = batches.send(Polled::Finished);
                return;
            }
            let polling = Instant::now();
            let batch = self.poll_batch(polling + Duration::from_millis(50));
            if self.catching_up.as_ref().is_some_and(|catching_up| {
                self.owned
                    .iter()
                    .all(|partition| catching_up.read_to_end(*partition, &self))
            }) {
                self.hand_over();
            }
            self.serve_idle_consumer();
            self.metrics
                .polling_us
                .increment(polling.elapsed().as_micros() as u64);
            let polled = if batch.is_empty() {
                Polled::Idle
            } else {
                Polled::Records(batch)
            };
            if batches.send(polled).is_err() {
                // The applying thread stopped (it failed, and says why).
                return;
            }
        }
    }

    /// Up to `max_batch` records: waits up to 100 ms for the first, and
    /// until `deadline` for the rest.
    pub(crate) fn poll_batch(
        &mut self,
        deadline: Instant,
    ) -> Vec<rdkafka::message::BorrowedMessage<'a>> {
        let mut batch = Vec::new();
        let mut repeated = 0u64;
        while batch.len() < self.max_batch {
            let wait = if batch.is_empty() {
                Duration::from_millis(100)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    let admission = self.gate.admit(partition, offset);
                    if admission == Admission::Repeated {
                        repeated += 1;
                        continue;
                    }
                    if let Some(catching_up) = &mut self.catching_up {
                        catching_up.next.insert(partition, offset + 1);
                    }
                    if self
                        .past_end_ms
                        .is_some_and(|end| message.timestamp().to_millis().unwrap_or(0) > end)
                    {
                        self.finish(partition);
                    } else if admission == Admission::Take {
                        batch.push(message);
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    let mut next = 0;
                    if let Some(catching_up) = &mut self.catching_up {
                        catching_up.reached_end.insert(partition);
                        next = catching_up
                            .next
                            .get(&partition)
                            .copied()
                            .max(self.gate.first_wanted(partition))
                            .unwrap_or(0);
                    }
                    self.status.record_end_reached_at(partition, next);
                    if self.past_end_ms.is_some() {
                        self.finish(partition);
                    }
                }
                Some(Err(error)) => {
                    let topic = self.topic;
                    tracing::warn!(topic, %error, "consumer error; retrying");
                    self.status
                        .record_error(&format!("consuming {topic}: {error}"));
                    break;
                }
                None => break,
            }
        }
        if repeated > 0 {
            let topic = self.topic;
            tracing::warn!(
                topic,
                repeated,
                "the broker delivered offsets it had already delivered; dropped those records"
            );
        }
        batch
    }

    /// Serves what librdkafka queued for the consumer that is not reading
    /// (statistics, errors): it hands them out only when polled, and one
    /// never polled would hold a statistics report a second for as long
    /// as the process runs. It has no partitions, so it has no records.
    pub(crate) fn serve_idle_consumer(&self) {
        let idle = match &self.catching_up {
            Some(catching_up) => Some(catching_up.steady),
            None => self.retired,
        };
        if let Some(idle) = idle {
            let _ = idle.poll(Duration::ZERO);
        }
    }

    /// Hands the partitions over from the catching-up consumer to the
    /// steady one, each at the record after the last one polled. Records
    /// the catching-up consumer fetched beyond it are left unread and
    /// fetched again.
    pub(crate) fn hand_over(&mut self) {
        let Some(catching_up) = self.catching_up.take() else {
            return;
        };
        let mut gate = self.gate.clone();
        let starts: Vec<(i32, Offset)> = catching_up
            .starts
            .iter()
            .map(|(partition, start)| {
                // Records before the first wanted one are polled and dropped,
                // so the later of the two is where the partition resumes.
                let next = catching_up
                    .next
                    .get(partition)
                    .copied()
                    .max(gate.first_wanted(*partition));
                match next {
                    Some(next) => {
                        gate.start_at(*partition, next);
                        (*partition, self.broker.fetch_start(next))
                    }
                    // Nothing polled and nothing wanted first: the start
                    // still holds (the beginning).
                    None => (*partition, *start),
                }
            })
            .collect();
        let projection = &self.metrics.family;
        if let Err(error) = rapport_common::kafka::assign(catching_up.steady, self.topic, &starts) {
            // Still correct, only quicker to ask an idle broker again.
            tracing::warn!(projection, %error, "could not hand the partitions to the steady consumer; keeping the catching-up one");
            self.status.record_error(&error.to_string());
            return;
        }
        if let Err(error) = self.consumer.unassign() {
            // It stops fetching once it holds its bound of records.
            tracing::warn!(projection, %error, "could not unassign the catching-up consumer");
        }
        self.consumer.context().stop_reporting_ends();
        self.retired = Some(self.consumer);
        self.consumer = catching_up.steady;
        self.gate = gate;
        self.metrics.catching_up.set(0);
        tracing::info!(
            projection,
            offsets = ?starts,
            "caught up with the customer topic; fetching with the steady wait from here"
        );
    }

    /// Stops fetching a partition a bounded version has finished.
    pub(crate) fn finish(&mut self, partition: i32) {
        if self.done.insert(partition) {
            let mut list = TopicPartitionList::new();
            list.add_partition(self.topic, partition);
            let _ = self.consumer.pause(&list);
        }
    }
}
