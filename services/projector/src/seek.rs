//! Where a rebuild that starts at a time (`--from time:T`) begins reading
//! each partition, so that it seeks there instead of reading the partition
//! from its beginning and skipping.
//!
//! The broker's offset-for-timestamp lookup is asked first, and taken only
//! when the records around the offset it names confirm it: tansu 0.6 answers
//! with the first record *batch written* after T on memory storage, and
//! offset 0 instead of the log end when no record is that late. When the
//! check fails or the lookup errs, a binary search over single-record reads
//! finds the start instead.
//!
//! What makes a start correct is that no record at or after T lies before
//! it. Ingest stamps each raw record with the time it received it and
//! identity copies that stamp to the customer records it emits in
//! `(timestamp, partition, offset)` order, so a customer-topic partition's
//! timestamps only go back by as much as a raw partition's can: by less than
//! identity's reorder grace, the time ingest may take to reach the broker
//! (which identity's own ordering already relies on). The start is therefore
//! sought for T minus that grace, and records before T that it lets in are
//! left out by the fold. Records identity produces again after a crash
//! repeat an earlier stretch with older stamps; any start the search can
//! return is still correct there, because every record of the repeated
//! stretch before the start has a copy after it (the fold applies a copy
//! once). Should the reads show timestamps going back further than the
//! grace, nothing before can be ruled out and the partition is read from
//! its first record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rapport_common::broker::BrokerKind;
use rapport_common::config::{Config, KafkaConfig};
use rapport_common::kafka::HealthContext;
use rapport_common::status::WorkerStatus;
use rapport_common::{Error, Result};
use rapport_projections::time::format_rfc3339;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::position::{Positions, StartFrom};

/// A record as the search sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// Single-record reads of one partition.
pub trait PartitionLog {
    /// The first record at or after `offset`; `None` when there is none.
    fn first_from(&mut self, offset: i64) -> Result<Option<Seen>>;
}

/// The offsets of a partition's records: `low` up to, not including, `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub low: i64,
    pub end: i64,
}

/// What the broker answered to "the first offset whose timestamp is at or
/// after T".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerAnswer {
    Offset(i64),
    /// No record is that late (Kafka's `-1`): the start is the log end.
    NoneThatLate,
    Unavailable(String),
}

/// The time a rebuild starts at, and how far timestamps may go back within
/// a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub at_ms: i64,
    pub disorder_ms: i64,
}

impl Wanted {
    /// The time to seek to: every record at or after `at_ms` follows the
    /// first record at or after this one.
    pub fn seek_ms(&self) -> i64 {
        self.at_ms.saturating_sub(self.disorder_ms)
    }
}

/// How a partition's start was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// The broker's lookup, confirmed by the records around it.
    Broker,
    /// A binary search, because the broker's answer was wrong or missing
    /// (why).
    Search(String),
    /// The partition's first record: the records read went back in time
    /// further than they may (where), so no earlier start can be trusted.
    FirstRecord(String),
}

impl std::fmt::Display for FoundBy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FoundBy::Broker => write!(formatter, "the broker's lookup, confirmed"),
            FoundBy::Search(why) => write!(formatter, "a search ({why})"),
            FoundBy::FirstRecord(why) => write!(formatter, "the first record ({why})"),
        }
    }
}

/// Where a partition starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Start {
    pub offset: i64,
    pub found_by: FoundBy,
    /// Single-record reads it took.
    pub reads: u32,
}

/// The reads of one search, kept to check the timestamps' order.
struct Reads<'a> {
    log: &'a mut dyn PartitionLog,
    seen: Vec<Seen>,
}

impl Reads<'_> {
    fn first_from(&mut self, offset: i64) -> Result<Option<Seen>> {
        let found = self.log.first_from(offset)?;
        if let Some(seen) = found {
            if seen.offset < offset {
                return Err(Error::Config(format!(
                    "asked for the first record from offset {offset}, the log gave offset {}",
                    seen.offset
                )));
            }
            self.seen.push(seen);
        }
        Ok(found)
    }

    /// Whether `offset` is a start for `seek_ms`: its record is at or after
    /// it and the one before is not. `Err` says why not.
    fn confirms(
        &mut self,
        span: Span,
        seek_ms: i64,
        offset: i64,
    ) -> Result<std::result::Result<(), String>> {
        if offset < span.low || offset > span.end {
            return Ok(Err(format!(
                "it named offset {offset}, outside the records {}..{}",
                span.low, span.end
            )));
        }
        if offset < span.end {
            match self.first_from(offset)? {
                Some(seen) if seen.timestamp_ms >= seek_ms => {}
                Some(seen) => {
                    return Ok(Err(format!(
                        "the record at offset {} is from {}, earlier",
                        seen.offset,
                        format_rfc3339(seen.timestamp_ms)
                    )));
                }
                None => return Ok(Err(format!("no record at offset {offset}"))),
            }
        }
        if offset > span.low {
            match self.first_from(offset - 1)? {
                Some(seen) if seen.timestamp_ms < seek_ms => {}
                Some(seen) => {
                    return Ok(Err(format!(
                        "the record at offset {} before it is from {}, already that late",
                        seen.offset,
                        format_rfc3339(seen.timestamp_ms)
                    )));
                }
                None => return Ok(Err(format!("no record at offset {}", offset - 1))),
            }
        }
        Ok(Ok(()))
    }

    /// Binary search for an offset whose record is at or after `seek_ms`
    /// while the one before is not (or the log's end/low). Keeps the
    /// invariant that the first record from `high` is that late (or there
    /// is none) and the one before `low` is not (or `low` is the span's).
    fn search(&mut self, span: Span, seek_ms: i64) -> Result<i64> {
        let (mut low, mut high) = (span.low, span.end);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.first_from(middle)? {
                Some(seen) if seen.timestamp_ms < seek_ms => low = (seen.offset + 1).min(high),
                Some(_) | None => high = middle,
            }
        }
        Ok(low)
    }

    /// Where the records read, in offset order, went back in time by more
    /// than `disorder_ms`, if anywhere.
    fn disorder(&self, disorder_ms: i64) -> Option<String> {
        let mut seen = self.seen.clone();
        seen.sort_by_key(|seen| seen.offset);
        let mut latest: Option<Seen> = None;
        for record in seen {
            if let Some(before) = latest {
                if record.timestamp_ms < before.timestamp_ms.saturating_sub(disorder_ms) {
                    return Some(format!(
                        "offset {} is from {}, offset {} from {}",
                        before.offset,
                        format_rfc3339(before.timestamp_ms),
                        record.offset,
                        format_rfc3339(record.timestamp_ms)
                    ));
                }
                if record.timestamp_ms <= before.timestamp_ms {
                    continue;
                }
            }
            latest = Some(record);
        }
        None
    }
}

/// Where to start reading a partition holding the records `span` so that
/// no record at or after `wanted.at_ms` lies before the start (see the
/// module's notes): the broker's answer for [`Wanted::seek_ms`] when the
/// records around it confirm it, else the result of a binary search, else
/// (timestamps out of order) the partition's first record.
pub fn find_start(
    log: &mut dyn PartitionLog,
    span: Span,
    wanted: Wanted,
    broker: BrokerAnswer,
) -> Result<Start> {
    let seek_ms = wanted.seek_ms();
    let mut reads = Reads {
        log,
        seen: Vec::new(),
    };
    let (offset, found_by) = {
        let answered = match broker {
            BrokerAnswer::Offset(offset) => Ok(offset),
            BrokerAnswer::NoneThatLate => Ok(span.end),
            BrokerAnswer::Unavailable(reason) => Err(format!("the lookup failed: {reason}")),
        };
        let checked = match answered {
            Ok(offset) => reads
                .confirms(span, seek_ms, offset)?
                .map(|()| offset)
                .map_err(|why| format!("the broker's offset {offset} is wrong: {why}")),
            Err(why) => Err(why),
        };
        match checked {
            Ok(offset) => (offset, FoundBy::Broker),
            Err(why) => (reads.search(span, seek_ms)?, FoundBy::Search(why)),
        }
    };
    let count = reads.seen.len() as u32;
    if let Some(where_) = reads.disorder(wanted.disorder_ms) {
        return Ok(Start {
            offset: span.low,
            found_by: FoundBy::FirstRecord(format!("timestamps go back: {where_}")),
            reads: count,
        });
    }
    Ok(Start {
        offset,
        found_by,
        reads: count,
    })
}

/// How long one read may wait for the broker.
const PATIENCE: Duration = Duration::from_secs(60);

/// Single-record reads of a partition through a consumer of their own.
pub struct KafkaPartition<'a> {
    consumer: &'a BaseConsumer<HealthContext>,
    topic: &'a str,
    partition: i32,
    broker: BrokerKind,
}

impl<'a> KafkaPartition<'a> {
    /// `consumer` must report partition ends
    /// ([`assigning_consumer`](rapport_common::kafka::assigning_consumer)
    /// with `report_partition_end`); each read reassigns it.
    pub fn new(
        consumer: &'a BaseConsumer<HealthContext>,
        topic: &'a str,
        partition: i32,
        broker: BrokerKind,
    ) -> Self {
        Self {
            consumer,
            topic,
            partition,
            broker,
        }
    }

    /// Reads from `start`, handing each record to `visit` until it returns
    /// false or the partition's end is reached.
    fn read_from(&self, start: Offset, mut visit: impl FnMut(Seen) -> bool) -> Result<()> {
        rapport_common::kafka::assign(self.consumer, self.topic, &[(self.partition, start)])?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if Instant::now() > deadline {
                return Err(Error::Config(format!(
                    "could not read {}/{} from {start:?} within {PATIENCE:?}",
                    self.topic, self.partition
                )));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) if message.partition() == self.partition => {
                    let seen = Seen {
                        offset: message.offset(),
                        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                    };
                    if !visit(seen) {
                        return Ok(());
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) if partition == self.partition => {
                    return Ok(());
                }
                Some(Err(error)) => {
                    tracing::warn!(topic = self.topic, partition = self.partition, %error, "reading for a seek; retrying");
                }
                Some(Ok(_)) | None => {}
            }
        }
    }

    /// The offsets of the partition's records; `None` when it holds none.
    ///
    /// Found by reading the last record, not from ListOffsets alone, which
    /// tansu 0.6 answers with the start of the last record batch + 1
    /// instead of the end: that answer only says where to start reading
    /// towards the end.
    pub fn span(&self) -> Result<Option<Span>> {
        let mut low = None;
        self.read_from(Offset::Beginning, |seen| {
            low = Some(seen.offset);
            false
        })?;
        let Some(low) = low else {
            return Ok(None);
        };
        let near_end = self
            .consumer
            .fetch_watermarks(self.topic, self.partition, Duration::from_secs(10))
            .map_or(low, |(_, high)| high.max(low));
        let mut last = low;
        let last_record = (near_end - 1).max(low);
        self.read_from(self.broker.fetch_start(last_record), |seen| {
            last = last.max(seen.offset);
            true
        })?;
        Ok(Some(Span { low, end: last + 1 }))
    }

    /// The broker's offset-for-timestamp lookup (Kafka's ListOffsets by time).
    pub fn ask_broker(&self, at_ms: i64) -> BrokerAnswer {
        let mut wanted = TopicPartitionList::new();
        if let Err(error) =
            wanted.add_partition_offset(self.topic, self.partition, Offset::Offset(at_ms))
        {
            return BrokerAnswer::Unavailable(error.to_string());
        }
        let answer = match self
            .consumer
            .offsets_for_times(wanted, Duration::from_secs(10))
        {
            Ok(answer) => answer,
            Err(error) => return BrokerAnswer::Unavailable(error.to_string()),
        };
        let Some(element) = answer.find_partition(self.topic, self.partition) else {
            return BrokerAnswer::Unavailable("the answer left the partition out".to_owned());
        };
        match (element.error(), element.offset()) {
            (Err(error), _) => BrokerAnswer::Unavailable(error.to_string()),
            (Ok(()), Offset::Offset(offset)) => BrokerAnswer::Offset(offset),
            (Ok(()), Offset::End) => BrokerAnswer::NoneThatLate,
            (Ok(()), other) => BrokerAnswer::Unavailable(format!("it answered {other:?}")),
        }
    }
}

impl PartitionLog for KafkaPartition<'_> {
    fn first_from(&mut self, offset: i64) -> Result<Option<Seen>> {
        let mut found = None;
        // Against tansu, rewound by up to a producer batch (see
        // `BrokerKind::fetch_start`): what precedes `offset` is passed over.
        self.read_from(self.broker.fetch_start(offset), |seen| {
            if seen.offset >= offset {
                found = Some(seen);
            }
            found.is_none()
        })?;
        Ok(found)
    }
}

/// A consumer for [`KafkaPartition`] reads: it reports partition ends,
/// and fetches wait at most 5 ms for data (tansu holds every fetch for the
/// whole wait, and a seek makes a few dozen short reads).
pub fn seek_consumer(kafka: &KafkaConfig) -> Result<BaseConsumer<HealthContext>> {
    let mut kafka = kafka.clone();
    kafka
        .properties
        .entry("fetch.wait.max.ms".to_owned())
        .or_insert_with(|| "5".to_owned());
    let (consumer, _) =
        rapport_common::kafka::assigning_consumer(&kafka, "rapport-projector-seek", true)?;
    Ok(consumer)
}

/// Finds the start of one partition on the broker: its span, the broker's
/// answer, then [`find_start`]. `None` for a partition without records.
pub fn find_start_on_broker(
    consumer: &BaseConsumer<HealthContext>,
    topic: &str,
    partition: i32,
    wanted: Wanted,
    ask_broker: bool,
    broker: BrokerKind,
) -> Result<Option<Start>> {
    let mut log = KafkaPartition::new(consumer, topic, partition, broker);
    let Some(span) = log.span()? else {
        return Ok(None);
    };
    let answer = if ask_broker {
        log.ask_broker(wanted.seek_ms())
    } else {
        BrokerAnswer::Unavailable("not asked".to_owned())
    };
    find_start(&mut log, span, wanted, answer).map(Some)
}

/// The first offset to read of each owned partition without a stored
/// position, for a version that starts at a time (nothing for other
/// starts). Each start is logged and shown in the worker's status.
pub fn time_starts(
    config: &Config,
    topic: &str,
    partitions: &[i32],
    positions: &Positions,
    from: &StartFrom,
    status: &WorkerStatus,
) -> Result<BTreeMap<i32, i64>> {
    let StartFrom::Time { at_ms } = *from else {
        return Ok(BTreeMap::new());
    };
    let wanted = Wanted {
        at_ms,
        disorder_ms: config.identity.reorder_grace_ms as i64,
    };
    let consumer = seek_consumer(&config.kafka)?;
    let mut starts = BTreeMap::new();
    for partition in partitions {
        if positions.offsets.contains_key(partition) {
            continue;
        }
        // An empty partition is read from its beginning; the fold leaves
        // out records before the time.
        if let Some(start) = find_start_on_broker(
            &consumer,
            topic,
            *partition,
            wanted,
            true,
            config.kafka.broker_kind,
        )? {
            tracing::info!(topic, partition, offset = start.offset, reads = start.reads, found_by = %start.found_by, "rebuild starts at a time");
            status.record_start(*partition, start.offset, &start.found_by.to_string());
            starts.insert(*partition, start.offset);
        }
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A partition held in memory: timestamps from offset `low` on.
    struct FakeLog {
        low: i64,
        timestamps: Vec<i64>,
        reads: u32,
    }

    impl FakeLog {
        fn new(low: i64, timestamps: Vec<i64>) -> Self {
            Self {
                low,
                timestamps,
                reads: 0,
            }
        }

        fn span(&self) -> Span {
            Span {
                low: self.low,
                end: self.low + self.timestamps.len() as i64,
            }
        }

        /// The first offset whose record is at or after `at_ms`: what a
        /// correct broker answers.
        fn truth(&self, at_ms: i64) -> i64 {
            self.timestamps
                .iter()
                .position(|timestamp| *timestamp >= at_ms)
                .map_or(self.span().end, |index| self.low + index as i64)
        }

        /// Whether no record at or after `at_ms` lies before `start`.
        fn nothing_missed(&self, start: i64, at_ms: i64) -> bool {
            self.timestamps
                .iter()
                .enumerate()
                .all(|(index, timestamp)| *timestamp < at_ms || self.low + index as i64 >= start)
        }
    }

    impl PartitionLog for FakeLog {
        fn first_from(&mut self, offset: i64) -> Result<Option<Seen>> {
            self.reads += 1;
            let index = (offset - self.low).max(0);
            Ok(self.timestamps.get(index as usize).map(|timestamp| Seen {
                offset: self.low + index,
                timestamp_ms: *timestamp,
            }))
        }
    }

    fn seek_in(log: &mut FakeLog, wanted: Wanted, answer: BrokerAnswer) -> Start {
        let span = log.span();
        find_start(log, span, wanted, answer).unwrap()
    }

    fn exact(at_ms: i64) -> Wanted {
        Wanted {
            at_ms,
            disorder_ms: 0,
        }
    }

    /// Every broker answer the search must survive, for `at_ms` on `log`.
    fn answers(log: &FakeLog, at_ms: i64) -> Vec<BrokerAnswer> {
        let truth = log.truth(at_ms);
        let span = log.span();
        vec![
            if truth == span.end {
                BrokerAnswer::NoneThatLate
            } else {
                BrokerAnswer::Offset(truth)
            },
            BrokerAnswer::Offset(0),
            BrokerAnswer::Offset(span.low),
            BrokerAnswer::Offset(truth - 1),
            BrokerAnswer::Offset(truth + 1),
            BrokerAnswer::Offset(span.end + 5),
            BrokerAnswer::Offset(-1),
            BrokerAnswer::NoneThatLate,
            BrokerAnswer::Unavailable("the broker is down".into()),
        ]
    }

    #[test]
    fn a_confirmed_broker_answer_costs_two_reads() {
        let mut log = FakeLog::new(100, vec![10, 20, 20, 30, 40]);
        let start = find_start(
            &mut log,
            Span { low: 100, end: 105 },
            exact(20),
            BrokerAnswer::Offset(101),
        )
        .unwrap();
        assert_eq!(
            start,
            Start {
                offset: 101,
                found_by: FoundBy::Broker,
                reads: 2
            }
        );
        // Past the last record: the broker says so and the last record confirms it.
        let mut log = FakeLog::new(100, vec![10, 20, 20, 30, 40]);
        let start = find_start(
            &mut log,
            Span { low: 100, end: 105 },
            exact(41),
            BrokerAnswer::NoneThatLate,
        )
        .unwrap();
        assert_eq!(
            (start.offset, start.found_by, start.reads),
            (105, FoundBy::Broker, 1)
        );
    }

    #[test]
    fn wrong_or_missing_answers_are_searched_past() {
        // tansu's answers: the start of a batch that holds earlier records,
        // and offset 0 when no record is that late.
        let timestamps: Vec<i64> = (0..1000).map(|index| 1_000 + index / 3).collect();
        for (at_ms, answer, why) in [
            (1_100, BrokerAnswer::Offset(290), "is from"),
            (5_000, BrokerAnswer::Offset(0), "is from"),
            (1_100, BrokerAnswer::Offset(2_000), "outside the records"),
            (1_100, BrokerAnswer::Offset(400), "already that late"),
            (
                1_100,
                BrokerAnswer::Unavailable("timed out".into()),
                "lookup failed",
            ),
        ] {
            let mut log = FakeLog::new(0, timestamps.clone());
            let truth = log.truth(at_ms);
            let start =
                find_start(&mut log, Span { low: 0, end: 1000 }, exact(at_ms), answer).unwrap();
            assert_eq!(start.offset, truth);
            assert!(
                matches!(&start.found_by, FoundBy::Search(reason) if reason.contains(why)),
                "{start:?}"
            );
            // A search, not a scan: about log2(1000) reads.
            assert!(start.reads <= 13, "{start:?}");
        }
    }

    #[test]
    fn an_empty_span_and_a_time_before_everything_start_at_the_first_record() {
        let mut log = FakeLog::new(7, vec![50, 60]);
        let start = find_start(
            &mut log,
            Span { low: 7, end: 9 },
            exact(10),
            BrokerAnswer::Offset(0),
        )
        .unwrap();
        assert_eq!(start.offset, 7);
        let mut empty = FakeLog::new(7, vec![]);
        let start = find_start(
            &mut empty,
            Span { low: 7, end: 7 },
            exact(10),
            BrokerAnswer::Unavailable("x".into()),
        )
        .unwrap();
        assert_eq!(start.offset, 7);
    }

    #[test]
    fn timestamps_going_back_further_than_allowed_fall_back_to_the_first_record() {
        let descending: Vec<i64> = (0..64).rev().map(|index| index * 1_000).collect();
        let mut log = FakeLog::new(0, descending);
        let start = find_start(
            &mut log,
            Span { low: 0, end: 64 },
            Wanted {
                at_ms: 30_000,
                disorder_ms: 200,
            },
            BrokerAnswer::Unavailable("x".into()),
        )
        .unwrap();
        assert_eq!(start.offset, 0);
        assert!(
            matches!(start.found_by, FoundBy::FirstRecord(_)),
            "{start:?}"
        );
    }

    /// Timestamps that never go back, with runs of equal ones.
    fn ordered_log() -> impl Strategy<Value = (i64, Vec<i64>)> {
        (
            0i64..50,
            proptest::collection::vec(0i64..3, 0..300).prop_map(|steps| {
                steps
                    .iter()
                    .scan(1_000, |time, step| {
                        *time += step;
                        Some(*time)
                    })
                    .collect()
            }),
        )
    }

    proptest! {
        #[test]
        fn ordered_timestamps_give_the_first_record_at_or_after_the_time(
            (low, timestamps) in ordered_log(),
            offset_in_time in 0i64..700,
        ) {
            let log = FakeLog::new(low, timestamps);
            let at_ms = 990 + offset_in_time;
            for answer in answers(&log, at_ms) {
                let mut log = FakeLog::new(log.low, log.timestamps.clone());
                let start = seek_in(&mut log, exact(at_ms), answer.clone());
                prop_assert_eq!(start.offset, log.truth(at_ms), "{:?} {:?}", answer, start);
                prop_assert!(start.reads <= 2 + 10, "{:?}", start);
            }
        }

        /// Timestamps that go back by at most the allowed disorder (ingest
        /// requests racing to a raw partition): nothing at or after the
        /// time lies before the start.
        #[test]
        fn timestamps_out_of_order_within_the_grace_lose_nothing(
            timestamps in proptest::collection::vec(0i64..400, 0..300),
            at_ms in 0i64..500,
        ) {
            // Sorted, then each stamp moved back by up to 50: the disorder
            // between any two records stays within 50.
            let mut ordered = timestamps.clone();
            ordered.sort_unstable();
            let jittered: Vec<i64> = ordered
                .iter()
                .zip(&timestamps)
                .map(|(time, noise)| time - noise % 51)
                .collect();
            let wanted = Wanted { at_ms, disorder_ms: 50 };
            let log = FakeLog::new(0, jittered);
            let truth_for_seek = log.truth(wanted.seek_ms());
            for answer in answers(&log, wanted.seek_ms()).into_iter().chain([BrokerAnswer::Offset(truth_for_seek)]) {
                let mut log = FakeLog::new(0, log.timestamps.clone());
                let start = seek_in(&mut log, wanted, answer.clone());
                prop_assert!(log.nothing_missed(start.offset, at_ms), "{:?} {:?} {:?}", log.timestamps, answer, start);
            }
        }

        /// Identity re-producing a stretch after a crash: the records of
        /// the repeated stretch come again, with their old stamps. Every
        /// record at or after the time has a copy at or after the start.
        #[test]
        fn a_stretch_produced_again_after_a_crash_loses_nothing(
            (_, timestamps) in ordered_log(),
            cut in any::<proptest::sample::Index>(),
            redo in any::<proptest::sample::Index>(),
            offset_in_time in 0i64..700,
        ) {
            // Records are identified by their index in the original order:
            // `[0, cut)` was produced, then again from `redo` on (all of it).
            let cut = cut.index(timestamps.len() + 1);
            let redo = redo.index(cut + 1);
            let order: Vec<usize> = (0..cut).chain(redo..timestamps.len()).collect();
            let log = FakeLog::new(0, order.iter().map(|index| timestamps[*index]).collect());
            let at_ms = 990 + offset_in_time;
            for answer in answers(&log, at_ms) {
                let mut log = FakeLog::new(0, log.timestamps.clone());
                let start = seek_in(&mut log, exact(at_ms), answer.clone());
                let kept: std::collections::BTreeSet<usize> = order[start.offset as usize..].iter().copied().collect();
                for (index, timestamp) in timestamps.iter().enumerate() {
                    prop_assert!(*timestamp < at_ms || kept.contains(&index), "record {} lost: {:?} {:?}", index, answer, start);
                }
            }
        }
    }
}
