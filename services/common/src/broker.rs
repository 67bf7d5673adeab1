//! What Rapport's readers need from a partition, and where the broker in
//! use falls short of it: every offset once, in order, from a given
//! position, and a reliable sign that the end is reached.
//!
//! Apache Kafka gives all of that as is. The local broker, tansu 0.6, does
//! not quite (docs/broker.md lists how), and every workaround for it lives
//! here, switched on by `[kafka] broker_kind = "tansu"` and off for
//! `"kafka"`. The projector's poller, identity's reader, the time seek and
//! the operator tools take their start offsets and their record admission
//! from this module; partition ends come from `BrokerHealth::end_reached_as_of`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The most records Rapport's producers put in one record batch, and so
/// the furthest a reader rewinds against tansu (see
/// [`BrokerKind::fetch_start`]).
pub const MAX_RECORDS_PER_BATCH: i64 = 10_000;

/// Which implementation of the Kafka protocol the services talk to. The
/// key is `broker_kind` rather than `broker` so that it cannot be mistaken
/// for `brokers`, the addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// Apache Kafka or a managed service that speaks it faithfully (MSK,
    /// Confluent Cloud, Aiven, Redpanda): no workarounds.
    Kafka,
    /// tansu 0.6, what `make run`, `make test` and `make bench` start: the
    /// default, so that a local setup is right without saying anything.
    #[default]
    Tansu,
}

impl BrokerKind {
    /// Where to start fetching so that the record at `next` is delivered.
    ///
    /// tansu answers a fetch at an offset inside a record batch with the
    /// batches that start after it, silently skipping the rest of the batch
    /// that holds the offset (Kafka returns the whole batch and the client
    /// drops what precedes the offset). So against tansu a reader starts up
    /// to one producer batch earlier and its [`OffsetGate`] drops what
    /// precedes `next`: at most one batch read twice per partition on a
    /// restart or a resume.
    pub fn fetch_start(self, next: i64) -> rdkafka::Offset {
        match self {
            BrokerKind::Kafka => rdkafka::Offset::Offset(next.max(0)),
            BrokerKind::Tansu => rdkafka::Offset::Offset((next - MAX_RECORDS_PER_BATCH).max(0)),
        }
    }

    /// Whether a paused partition must be pointed at [`Self::fetch_start`]
    /// before it is resumed: librdkafka resumes after the last record the
    /// application took, which can lie inside a record batch.
    pub fn seeks_before_resume(self) -> bool {
        self == BrokerKind::Tansu
    }
}

/// What an [`OffsetGate`] says of a delivered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The next record of its partition: take it.
    Take,
    /// Before the first offset wanted, delivered because the fetch started
    /// a batch early ([`BrokerKind::fetch_start`]): drop it.
    BeforeStart,
    /// At or before an offset already taken: drop it. Kafka never delivers
    /// an offset twice; tansu does where a partition's log has a gap (its
    /// fetch steps forward by the number of records it found, so it serves
    /// the records after the gap again, labelled with earlier offsets).
    Repeated,
}

#[derive(Debug, Clone, Copy, Default)]
struct Gate {
    first_wanted: i64,
    last_taken: Option<i64>,
}

/// Which delivered records a reader takes, partition by partition, so that
/// it sees every offset once, in order, from where it asked to start.
/// Against Kafka nothing is ever dropped here and the gate costs a map
/// lookup per record.
#[derive(Debug, Clone, Default)]
pub struct OffsetGate {
    partitions: BTreeMap<i32, Gate>,
}

impl OffsetGate {
    /// Wants `partition`'s records from `next` on (a start, or a resume at
    /// [`BrokerKind::fetch_start`]`(next)`). What was taken before still
    /// counts: an offset at or before it stays a repeat.
    pub fn start_at(&mut self, partition: i32, next: i64) {
        self.partitions.entry(partition).or_default().first_wanted = next;
    }

    /// Judges a delivered record, and counts it taken when it is.
    pub fn admit(&mut self, partition: i32, offset: i64) -> Admission {
        let gate = self.partitions.entry(partition).or_default();
        if gate.last_taken.is_some_and(|last| offset <= last) {
            Admission::Repeated
        } else if offset < gate.first_wanted {
            Admission::BeforeStart
        } else {
            gate.last_taken = Some(offset);
            Admission::Take
        }
    }

    /// The offset `partition` is to deliver next: after the last record
    /// taken, or the first wanted when that is later; `None` before either
    /// is known.
    pub fn next(&self, partition: i32) -> Option<i64> {
        let gate = self.partitions.get(&partition)?;
        Some(
            gate.last_taken
                .map_or(gate.first_wanted, |last| (last + 1).max(gate.first_wanted)),
        )
    }

    /// The first offset wanted of `partition`, if a start was set.
    pub fn first_wanted(&self, partition: i32) -> Option<i64> {
        self.partitions
            .get(&partition)
            .map(|gate| gate.first_wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn against_kafka_a_fetch_starts_at_the_offset_wanted() {
        assert_eq!(
            BrokerKind::Kafka.fetch_start(25_000),
            rdkafka::Offset::Offset(25_000)
        );
        assert!(!BrokerKind::Kafka.seeks_before_resume());
    }

    #[test]
    fn against_tansu_a_fetch_starts_a_producer_batch_early() {
        assert_eq!(
            BrokerKind::Tansu.fetch_start(25_000),
            rdkafka::Offset::Offset(25_000 - MAX_RECORDS_PER_BATCH)
        );
        assert_eq!(BrokerKind::Tansu.fetch_start(3), rdkafka::Offset::Offset(0));
        assert!(BrokerKind::Tansu.seeks_before_resume());
    }

    #[test]
    fn the_kind_reads_from_configuration_in_lower_case() {
        #[derive(Deserialize)]
        struct Holder {
            kind: BrokerKind,
        }
        let parsed: Holder = toml::from_str("kind = \"kafka\"").unwrap();
        assert_eq!(parsed.kind, BrokerKind::Kafka);
        assert!(toml::from_str::<Holder>("kind = \"Kafka\"").is_err());
        assert!(toml::from_str::<Holder>("kind = \"redis\"").is_err());
    }

    #[test]
    fn a_rewound_fetch_gives_each_offset_once_from_the_start() {
        let mut gate = OffsetGate::default();
        gate.start_at(0, 5);
        let taken: Vec<i64> = (0..8)
            .filter(|offset| gate.admit(0, *offset) == Admission::Take)
            .collect();
        assert_eq!(taken, vec![5, 6, 7]);
        assert_eq!(gate.next(0), Some(8));
        // A resume rewinds again: what was taken stays taken.
        gate.start_at(0, 8);
        assert_eq!(gate.admit(0, 6), Admission::Repeated);
        assert_eq!(gate.admit(0, 8), Admission::Take);
        assert_eq!(gate.next(3), None);
    }

    /// What tansu delivers: the log from a batch early, with stretches
    /// served again and runs of the same offset (its answer past a gap).
    fn deliveries() -> impl Strategy<Value = (i64, Vec<i64>)> {
        (
            0i64..50,
            prop::collection::vec((0i64..60, 1usize..4), 0..40),
        )
            .prop_map(|(first_wanted, runs)| {
                let mut delivered = Vec::new();
                for (from, length) in runs {
                    for offset in from..from + length as i64 {
                        delivered.push(offset);
                    }
                }
                (first_wanted, delivered)
            })
    }

    proptest! {
        #[test]
        fn whatever_is_delivered_the_taken_offsets_rise_and_start_where_wanted(
            (first_wanted, delivered) in deliveries()
        ) {
            let mut gate = OffsetGate::default();
            gate.start_at(2, first_wanted);
            let taken: Vec<i64> = delivered
                .iter()
                .copied()
                .filter(|offset| gate.admit(2, *offset) == Admission::Take)
                .collect();
            prop_assert!(taken.windows(2).all(|pair| pair[0] < pair[1]));
            prop_assert!(taken.iter().all(|offset| *offset >= first_wanted));
            let expected_next = taken.last().map_or(first_wanted, |last| last + 1);
            prop_assert_eq!(gate.next(2), Some(expected_next));
        }
    }
}
