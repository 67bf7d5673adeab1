//! Reads every raw partition in one deterministic order: by ingest timestamp,
//! then partition, then offset.
//!
//! A record is released only when no other partition can still deliver an
//! earlier one: each other partition either has a buffered record (which
//! sorts after it) or is at its end and the record is older than the grace
//! period, so anything appended later carries a later timestamp. The same log
//! therefore always yields the same order, live or replayed, which makes the
//! identifier graph reproducible (`rapportctl reidentify` relies on it).

use std::collections::VecDeque;
use std::time::Duration;

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
    paused: bool,
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
            || (buffer.at_end && head.timestamp_ms <= now_ms - grace_ms)
    });
    others_settled.then_some(chosen)
}

pub struct OrderedReader {
    consumer: BaseConsumer<HealthContext>,
    /// Per partition, the first offset to deliver; a rewound fetch returns
    /// earlier records too (see `kafka::fetch_start`).
    first_wanted: Vec<i64>,
    topic: String,
    buffers: Vec<PartitionBuffer>,
    grace_ms: i64,
}

const PAUSE_ABOVE: usize = 20_000;
const RESUME_BELOW: usize = 5_000;

impl OrderedReader {
    /// Assigns all `partitions` of `topic`, each starting after its entry in
    /// `applied` (or at the beginning).
    pub fn new(
        consumer: BaseConsumer<HealthContext>,
        topic: &str,
        partitions: i32,
        applied: &[Option<i64>],
        grace: Duration,
    ) -> rapport_common::Result<Self> {
        let starts: Vec<(i32, Offset)> = (0..partitions)
            .map(
                |partition| match applied.get(partition as usize).copied().flatten() {
                    Some(offset) => (partition, rapport_common::kafka::fetch_start(offset + 1)),
                    None => (partition, Offset::Beginning),
                },
            )
            .collect();
        rapport_common::kafka::assign(&consumer, topic, &starts)?;
        Ok(Self {
            consumer,
            first_wanted: applied
                .iter()
                .map(|offset| offset.map_or(0, |offset| offset + 1))
                .collect(),
            topic: topic.to_owned(),
            buffers: (0..partitions)
                .map(|_| PartitionBuffer::default())
                .collect(),
            grace_ms: grace.as_millis() as i64,
        })
    }

    /// Waits up to `wait` for records, buffers what is available, and returns
    /// up to `max` records in order (possibly none).
    pub fn next_batch(&mut self, max: usize, wait: Duration) -> Vec<RawRecord> {
        self.fill(wait);
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
        for _ in 0..10_000 {
            let Some(result) = self.consumer.poll(timeout) else {
                return;
            };
            timeout = Duration::ZERO;
            match result {
                Ok(message)
                    if self
                        .first_wanted
                        .get(message.partition() as usize)
                        .is_some_and(|first| message.offset() < *first) => {}
                Ok(message) => {
                    let partition = message.partition();
                    let Some(buffer) = self.buffers.get_mut(partition as usize) else {
                        continue;
                    };
                    buffer.at_end = false;
                    buffer.queue.push_back(RawRecord {
                        partition,
                        offset: message.offset(),
                        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                        key: message.key().unwrap_or_default().to_vec(),
                        payload: message.payload().unwrap_or_default().to_vec(),
                    });
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

    /// Stops fetching partitions far ahead of the others, so waiting for a
    /// slow partition never buffers without bound.
    fn apply_backpressure(&mut self) {
        for (partition, buffer) in self.buffers.iter_mut().enumerate() {
            let change = if !buffer.paused && buffer.queue.len() > PAUSE_ABOVE {
                Some(true)
            } else if buffer.paused && buffer.queue.len() < RESUME_BELOW {
                Some(false)
            } else {
                None
            };
            let Some(pause) = change else { continue };
            let mut list = TopicPartitionList::new();
            list.add_partition(&self.topic, partition as i32);
            let result = if pause {
                self.consumer.pause(&list)
            } else {
                self.consumer.resume(&list)
            };
            match result {
                Ok(()) => buffer.paused = pause,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, partition, %error, "could not pause or resume")
                }
            }
        }
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
            paused: false,
        }
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
    fn ties_break_by_partition_then_offset() {
        let buffers = vec![buffer(&[(5, 7)], 0, false), buffer(&[(5, 3)], 1, false)];
        assert_eq!(releasable(&buffers, 0, 0), Some(0));
    }
}
