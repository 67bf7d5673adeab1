//! Reads every raw partition in one deterministic order: by ingest timestamp,
//! then partition, then offset.
//!
//! A record is released only when no other partition can still deliver an
//! earlier one: each other partition either has a buffered record (which
//! sorts after it) or is at its end and the record is older than the grace
//! period, so anything appended later carries a later timestamp. The same log
//! therefore always yields the same order, live or replayed, which makes the
//! identifier graph reproducible (`rapportctl reidentify` relies on it).
//!
//! A bounded reader (a re-identification) knows the last offset it may read
//! on each partition. It never waits on the grace period: a partition short
//! of its bound always has an earlier record still to come, and a partition
//! at its bound has ended. Its order is therefore the sorted order of exactly
//! the records within the bounds, whatever the timing of the fetches.

use std::collections::VecDeque;
use std::time::Duration;

use rapport_common::broker::{Admission, BrokerKind, OffsetGate};
use rapport_common::kafka::HealthContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// One raw record, owned.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

impl RawRecord {
    fn order_key(&self) -> (i64, i32, i64) {
        (self.timestamp_ms, self.partition, self.offset)
    }
}

#[derive(Default)]
struct PartitionBuffer {
    queue: VecDeque<RawRecord>,
    /// The consumer reported the end of the partition after the last record
    /// we buffered: nothing more was there at that moment.
    at_end: bool,
    /// Unix ms as of which the broker's reported end (in the client's
    /// statistics) was the next offset to buffer: the end of the partition without
    /// the consumer's end-of-partition event, which can be lost (a pause
    /// and resume drops it, and it is not sent again at the same offset).
    end_reported_as_of_ms: Option<i64>,
    paused: bool,
    /// The last offset this reader may deliver, for a bounded reader.
    bound: Option<i64>,
    /// Bounded partitions only: every record up to the bound was buffered
    /// (or there is none to read), so nothing will be added.
    ended: bool,
}

impl PartitionBuffer {
    fn bounded(&self) -> bool {
        self.bound.is_some() || self.ended
    }
}

/// The decision of the ordering rule, as pure logic (tested below).
fn releasable(buffers: &[PartitionBuffer], now_ms: i64, grace_ms: i64) -> Option<usize> {
    let (chosen, head) = buffers
        .iter()
        .enumerate()
        .filter_map(|(index, buffer)| buffer.queue.front().map(|record| (index, record)))
        .min_by_key(|(_, record)| record.order_key())?;
    let others_settled = buffers.iter().enumerate().all(|(index, buffer)| {
        index == chosen
            || !buffer.queue.is_empty()
            || buffer.ended
            || (!buffer.bounded()
                && (buffer.at_end && head.timestamp_ms <= now_ms - grace_ms
                    || buffer
                        .end_reported_as_of_ms
                        .is_some_and(|as_of| head.timestamp_ms <= as_of - grace_ms)))
    });
    others_settled.then_some(chosen)
}

/// Where each partition of a bounded reader stops: the last offset to read,
/// or `None` for a partition of which nothing is to be read.
pub type Bounds = [Option<i64>];

pub struct OrderedReader {
    consumer: BaseConsumer<HealthContext>,
    /// Which records of each partition to take: from the first offset
    /// wanted, each once (see `rapport_common::broker`).
    gate: OffsetGate,
    broker: BrokerKind,
    topic: String,
    buffers: Vec<PartitionBuffer>,
    grace_ms: i64,
    buffering: Buffering,
}

/// How much a reader buffers per partition before it stops fetching it.
#[derive(Debug, Clone, Copy)]
pub struct Buffering {
    /// A partition is paused once this many of its records wait.
    pub pause_above: usize,
    /// And fetched again once fewer than this many wait.
    pub resume_below: usize,
    /// At most this many records are taken from the client per call.
    pub polls_per_fill: usize,
}

impl Default for Buffering {
    fn default() -> Self {
        Self {
            pause_above: 20_000,
            resume_below: 5_000,
            polls_per_fill: 10_000,
        }
    }
}

impl OrderedReader {
    /// Assigns all `partitions` of `topic`, each starting after its entry in
    /// `applied` (or at the beginning). With `bounds`, each partition stops
    /// after its bound (see [`Bounds`]) and the grace period is not used.
    /// `broker` says what the brokers run (see `rapport_common::broker`).
    pub fn new(
        consumer: BaseConsumer<HealthContext>,
        topic: &str,
        partitions: i32,
        applied: &[Option<i64>],
        grace: Duration,
        bounds: Option<&Bounds>,
        broker: BrokerKind,
    ) -> rapport_common::Result<Self> {
        let applied_of = |partition: i32| applied.get(partition as usize).copied().flatten();
        let mut gate = OffsetGate::default();
        for partition in 0..partitions {
            if let Some(offset) = applied_of(partition) {
                gate.start_at(partition, offset + 1);
            }
        }
        let buffers: Vec<PartitionBuffer> = (0..partitions)
            .map(|partition| match bounds {
                None => PartitionBuffer::default(),
                Some(bounds) => {
                    let bound = bounds.get(partition as usize).copied().flatten();
                    let ended = match (bound, applied_of(partition)) {
                        (None, _) => true,
                        (Some(bound), Some(applied)) => applied >= bound,
                        (Some(_), None) => false,
                    };
                    PartitionBuffer {
                        bound,
                        ended,
                        ..PartitionBuffer::default()
                    }
                }
            })
            .collect();
        // Partitions with nothing left to read are not fetched at all.
        let starts: Vec<(i32, Offset)> = (0..partitions)
            .filter(|partition| !buffers[*partition as usize].ended)
            .map(|partition| match applied_of(partition) {
                Some(offset) => (partition, broker.fetch_start(offset + 1)),
                None => (partition, Offset::Beginning),
            })
            .collect();
        if !starts.is_empty() {
            rapport_common::kafka::assign(&consumer, topic, &starts)?;
        }
        Ok(Self {
            consumer,
            gate,
            broker,
            topic: topic.to_owned(),
            buffers,
            grace_ms: grace.as_millis() as i64,
            buffering: Buffering::default(),
        })
    }

    /// The same reader with other buffering limits.
    pub fn with_buffering(mut self, buffering: Buffering) -> Self {
        self.buffering = buffering;
        self
    }

    /// A bounded reader that delivered every record up to its bounds.
    pub fn finished(&self) -> bool {
        self.buffers
            .iter()
            .all(|buffer| buffer.ended && buffer.queue.is_empty())
    }

    /// Waits up to `wait` for records, buffers what is available, and returns
    /// up to `max` records in order (possibly none).
    pub fn next_batch(&mut self, max: usize, wait: Duration) -> Vec<RawRecord> {
        self.fill(wait);
        self.note_reported_ends();
        let mut batch = Vec::new();
        while batch.len() < max {
            match releasable(&self.buffers, rapport_common::now_ms(), self.grace_ms) {
                Some(index) => batch.extend(self.buffers[index].queue.pop_front()),
                None => break,
            }
        }
        self.apply_backpressure();
        batch
    }

    fn fill(&mut self, wait: Duration) {
        let mut timeout = wait;
        // Drain what is ready, without waiting again once something came.
        for _ in 0..self.buffering.polls_per_fill {
            let Some(result) = self.consumer.poll(timeout) else {
                return;
            };
            timeout = Duration::ZERO;
            match result {
                Ok(message) => {
                    let partition = message.partition();
                    let Some(buffer) = self.buffers.get_mut(partition as usize) else {
                        continue;
                    };
                    let offset = message.offset();
                    // A record before the start of a rewound fetch, or one
                    // delivered again (identity would drop the copies by
                    // event id, but their offsets are not theirs).
                    if buffer.ended || self.gate.admit(partition, offset) != Admission::Take {
                        continue;
                    }
                    buffer.at_end = false;
                    buffer.end_reported_as_of_ms = None;
                    if buffer.bound.is_none_or(|bound| offset <= bound) {
                        buffer.queue.push_back(RawRecord {
                            partition,
                            offset,
                            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                            key: message.key().unwrap_or_default().to_vec(),
                            payload: message.payload().unwrap_or_default().to_vec(),
                        });
                    }
                    if buffer.bound.is_some_and(|bound| offset >= bound) {
                        buffer.ended = true;
                        self.stop_fetching(partition);
                    }
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    if let Some(buffer) = self.buffers.get_mut(partition as usize) {
                        buffer.at_end = true;
                    }
                }
                Err(error) => {
                    tracing::warn!(topic = %self.topic, %error, "consumer error; retrying")
                }
            }
        }
    }

    /// Marks partitions whose every record is buffered by the client's
    /// last statistics, as of when the fetch behind them may have been
    /// made: the statistics interval, plus as long again for the fetch.
    fn note_reported_ends(&mut self) {
        let health = &self.consumer.context().health;
        for (partition, buffer) in self.buffers.iter_mut().enumerate() {
            if buffer.bounded() || !buffer.queue.is_empty() || buffer.at_end {
                continue;
            }
            buffer.end_reported_as_of_ms = self
                .gate
                .next(partition as i32)
                .and_then(|next| health.end_reached_as_of(&self.topic, partition as i32, next));
        }
    }

    /// A bounded partition reached its bound: fetch nothing more of it.
    fn stop_fetching(&mut self, partition: i32) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        match self.consumer.pause(&list) {
            Ok(()) => {
                if let Some(buffer) = self.buffers.get_mut(partition as usize) {
                    buffer.paused = true;
                }
            }
            Err(error) => {
                tracing::warn!(topic = %self.topic, partition, %error, "could not pause a partition at its bound")
            }
        }
    }

    /// Stops fetching partitions far ahead of the others, so waiting for a
    /// slow partition never buffers without bound.
    ///
    /// A resumed partition is fetched again from a producer batch earlier
    /// than the next record wanted, and what is already buffered is dropped
    /// as it comes again. librdkafka would resume after the last record
    /// this reader took, which can be inside a record batch, and tansu
    /// answers a fetch there without the rest of that batch (see
    /// `BrokerKind::fetch_start`): those records would be skipped without a
    /// trace, or, if it was the partition's last batch, the reader would
    /// wait for them for good.
    fn apply_backpressure(&mut self) {
        let Buffering {
            pause_above,
            resume_below,
            ..
        } = self.buffering;
        for partition in 0..self.buffers.len() {
            let buffer = &self.buffers[partition];
            if buffer.ended {
                continue;
            }
            let pause = if !buffer.paused && buffer.queue.len() > pause_above {
                true
            } else if buffer.paused && buffer.queue.len() < resume_below {
                false
            } else {
                continue;
            };
            let mut list = TopicPartitionList::new();
            list.add_partition(&self.topic, partition as i32);
            let result = if pause {
                self.consumer.pause(&list)
            } else {
                self.rewind(partition as i32)
                    .and_then(|()| self.consumer.resume(&list))
            };
            match result {
                Ok(()) => self.buffers[partition].paused = pause,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, partition, %error, "could not pause or resume")
                }
            }
        }
    }

    /// Points a paused partition's fetch at a producer batch before the
    /// next record it wants (see [`OrderedReader::apply_backpressure`]).
    /// Against Kafka librdkafka's own resume is right, and nothing is done.
    fn rewind(&mut self, partition: i32) -> rdkafka::error::KafkaResult<()> {
        if !self.broker.seeks_before_resume() {
            return Ok(());
        }
        let Some(next) = self.gate.next(partition) else {
            // Nothing taken yet: the fetch still starts where it was assigned.
            return Ok(());
        };
        self.consumer.seek(
            &self.topic,
            partition,
            self.broker.fetch_start(next),
            Duration::from_secs(10),
        )?;
        self.gate.start_at(partition, next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(records: &[(i64, i64)], partition: i32, at_end: bool) -> PartitionBuffer {
        PartitionBuffer {
            queue: records
                .iter()
                .map(|&(timestamp_ms, offset)| RawRecord {
                    partition,
                    offset,
                    timestamp_ms,
                    key: vec![],
                    payload: vec![],
                })
                .collect(),
            at_end,
            ..PartitionBuffer::default()
        }
    }

    fn bounded(mut buffer: PartitionBuffer, bound: i64, ended: bool) -> PartitionBuffer {
        buffer.bound = Some(bound);
        buffer.ended = ended;
        buffer
    }

    #[test]
    fn releases_the_oldest_record_when_every_partition_has_one() {
        let buffers = vec![buffer(&[(20, 0)], 0, false), buffer(&[(10, 0)], 1, false)];
        assert_eq!(releasable(&buffers, 0, 100), Some(1));
    }

    #[test]
    fn waits_for_a_partition_still_fetching() {
        let buffers = vec![buffer(&[(20, 0)], 0, false), buffer(&[], 1, false)];
        assert_eq!(releasable(&buffers, 1_000, 100), None);
    }

    #[test]
    fn an_idle_partition_holds_records_back_only_for_the_grace_period() {
        let buffers = vec![buffer(&[(1_000, 0)], 0, false), buffer(&[], 1, true)];
        assert_eq!(releasable(&buffers, 1_050, 100), None);
        assert_eq!(releasable(&buffers, 1_100, 100), Some(0));
    }

    #[test]
    fn a_partition_the_broker_reported_read_to_its_end_holds_back_only_older_time() {
        // No end-of-partition event, but the broker's reported end equals
        // the next offset as of 5 000: records up to the grace before that
        // may go, later ones wait (a record could have arrived since).
        let idle = PartitionBuffer {
            end_reported_as_of_ms: Some(5_000),
            ..buffer(&[], 1, false)
        };
        let early = vec![buffer(&[(4_900, 0)], 0, false), idle];
        assert_eq!(releasable(&early, 1_000_000, 100), Some(0));
        let late = vec![
            buffer(&[(4_950, 0)], 0, false),
            early.into_iter().nth(1).unwrap(),
        ];
        assert_eq!(releasable(&late, 1_000_000, 100), None);
        // A bounded reader never goes by the clock.
        let bounded_idle = bounded(
            PartitionBuffer {
                end_reported_as_of_ms: Some(5_000),
                ..buffer(&[], 1, false)
            },
            9,
            false,
        );
        let buffers = vec![buffer(&[(10, 0)], 0, false), bounded_idle];
        assert_eq!(releasable(&buffers, 1_000_000, 100), None);
    }

    #[test]
    fn ties_break_by_partition_then_offset() {
        let buffers = vec![buffer(&[(5, 7)], 0, false), buffer(&[(5, 3)], 1, false)];
        assert_eq!(releasable(&buffers, 0, 0), Some(0));
    }

    #[test]
    fn a_bounded_reader_waits_for_a_partition_short_of_its_bound_whatever_the_time() {
        // Partition 1 is idle and at the log's end as far as the fetch knows,
        // but its bound says a record is still to come: no grace applies.
        let buffers = vec![
            buffer(&[(1_000, 0)], 0, false),
            bounded(buffer(&[], 1, true), 5, false),
        ];
        assert_eq!(releasable(&buffers, i64::MAX, 0), None);
    }

    #[test]
    fn a_partition_at_its_bound_holds_nothing_back() {
        let buffers = vec![
            bounded(buffer(&[(1_000, 0)], 0, false), 0, true),
            bounded(buffer(&[], 1, false), 5, true),
        ];
        // No grace period to wait out, even at the record's own instant.
        assert_eq!(releasable(&buffers, 1_000, 200), Some(0));
    }

    /// Whatever the order in which records of the bounded partitions arrive,
    /// the reader releases exactly the records within the bounds, merged by
    /// (timestamp, partition, offset) of each partition's next record.
    #[test]
    fn bounded_release_order_is_the_sorted_order_for_every_arrival_order() {
        // The timestamps of each partition's records by offset; bounds:
        // p0 up to offset 2, p1 up to 1, nothing of p2.
        let log: [&[i64]; 3] = [&[10, 30, 30, 5], &[30, 20, 1], &[0]];
        let bounds = [Some(2), Some(1), None];
        // The reference: every record within the bounds at hand, merged by
        // always taking the smallest head (offsets stay in order within a
        // partition even where timestamps do not).
        let mut heads: Vec<VecDeque<(i64, i32, i64)>> = log
            .iter()
            .enumerate()
            .map(|(partition, records)| {
                records
                    .iter()
                    .enumerate()
                    .filter(|(offset, _)| {
                        bounds[partition].is_some_and(|bound| *offset as i64 <= bound)
                    })
                    .map(|(offset, timestamp)| (*timestamp, partition as i32, offset as i64))
                    .collect()
            })
            .collect();
        let mut expected = Vec::new();
        while let Some(smallest) = heads
            .iter_mut()
            .filter(|queue| !queue.is_empty())
            .min_by_key(|queue| queue[0])
        {
            expected.extend(smallest.pop_front());
        }
        assert_eq!(expected.len(), 5);
        // Arrival schedules: which partition delivers its next record at each step.
        let schedules: [&[usize]; 4] = [
            &[0, 0, 0, 0, 1, 1, 1],
            &[1, 1, 1, 0, 0, 0, 0],
            &[0, 1, 0, 1, 0, 1, 0],
            &[1, 0, 0, 1, 1, 0, 0],
        ];
        for schedule in schedules {
            let mut buffers: Vec<PartitionBuffer> = (0..3)
                .map(|partition| PartitionBuffer {
                    bound: bounds[partition],
                    ended: bounds[partition].is_none(),
                    ..PartitionBuffer::default()
                })
                .collect();
            let mut next = [0usize; 3];
            let mut released = Vec::new();
            for &partition in schedule {
                let buffer = &mut buffers[partition];
                if buffer.ended {
                    continue;
                }
                let offset = next[partition];
                next[partition] += 1;
                if offset as i64 <= buffer.bound.unwrap() {
                    buffer.queue.push_back(RawRecord {
                        partition: partition as i32,
                        offset: offset as i64,
                        timestamp_ms: log[partition][offset],
                        key: vec![],
                        payload: vec![],
                    });
                }
                buffer.ended = offset as i64 >= buffer.bound.unwrap();
                while let Some(index) = releasable(&buffers, 0, 1_000_000) {
                    let record = buffers[index].queue.pop_front().unwrap();
                    released.push(record.order_key());
                }
            }
            assert_eq!(released, expected, "arrival schedule {schedule:?}");
            assert!(
                buffers
                    .iter()
                    .all(|buffer| buffer.ended && buffer.queue.is_empty())
            );
        }
    }
}
