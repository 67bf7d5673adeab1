//! Folding a batch of customer records into a projection's staged writes:
//! decoding, skipping what was applied before, dead letters, and the
//! positions the batch commits with.

use prost::Message as _;
use rapport_common::config::TopicNames;
use rapport_common::kafka::{Outgoing, Refused};

use rapport_common::store::{Durability, PackedWrites, Sealed, Staged, Store};
use rapport_common::{Result, keys, merge};
use rapport_projections::customer_view::{self, EffectOf, ProfileState};
use rapport_proto::v1 as proto;
use rdkafka::message::Message;

use super::metrics::ApplyMetrics;
use crate::changes::Changes;
use crate::position::{Positions, TimeWindow, encode_watermark};

/// The column family of the unified customer view, version 1.
pub const CUSTOMER_VIEW: &str = "customer_view.v1";

/// A record as consumed: where it sits and its bytes.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    /// Set on a record re-submitted from the dead letters: which letter.
    pub retry_of: Option<String>,
}

/// Every so many records of a profile, the commit writes the profile whole
/// instead of appending them: RocksDB folds the deltas in its memtable only
/// when it flushes, and a busy profile under light traffic could otherwise
/// collect thousands there, each read then combining them all. Counted per
/// hash slot, not per profile, so that the memory is fixed; a collision only
/// makes a profile's whole write come early.
pub(crate) struct WholeWrites {
    pub(crate) records_per_slot: Vec<u16>,
    pub(crate) every: u16,
}

impl Default for WholeWrites {
    fn default() -> Self {
        Self::every(128)
    }
}

impl WholeWrites {
    pub(crate) fn every(records: u16) -> Self {
        Self {
            records_per_slot: vec![0; 1 << 16],
            every: records.max(1),
        }
    }

    /// Counts `records` more records of the profile stored under
    /// `profile_key`; true when it is time to write the profile whole.
    pub(crate) fn due(&mut self, profile_key: &[u8], records: usize) -> bool {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::hash::DefaultHasher::new();
        profile_key.hash(&mut hasher);
        let slot = hasher.finish() as usize % self.records_per_slot.len();
        let count = &mut self.records_per_slot[slot];
        *count = count.saturating_add(u16::try_from(records).unwrap_or(u16::MAX));
        if *count >= self.every {
            *count = 0;
            return true;
        }
        false
    }
}

/// Folds one record into the staged customer view. The record itself,
/// as read, is the delta appended to its profile (see
/// `rapport_common::merge`): nothing reads, builds or encodes a profile
/// while folding.
pub(crate) fn fold_customer_view(
    staged: &mut Staged<'_>,
    appended: &mut PackedWrites,
    record: &proto::CustomerRecord,
    payload: &[u8],
    scratch: &mut String,
) {
    let customer_id = record.customer_id.as_str();
    appended.push(
        |key| keys::push_profile(key, customer_id),
        |value| merge::push_record_delta(value, payload),
    );
    customer_view::for_each_effect(record, |effect| match effect {
        EffectOf::Timeline(event) => staged.put_unread(
            |key| keys::push_timeline(key, customer_id, event.occurred_at_ms, &event.event_id),
            |value| customer_view::push_timeline_value(value, event, scratch),
        ),
        EffectOf::IndexIdentifier(identifier) => staged.put_unread(
            |key| keys::push_identifier(key, &identifier),
            |value| value.extend_from_slice(customer_id.as_bytes()),
        ),
        EffectOf::ConflictRecorded(entry) => staged.put_unread(
            |key| {
                key.extend(keys::conflict(
                    entry.received_at_ms,
                    &entry.conflict.claimant,
                    &entry.conflict.identifier,
                ))
            },
            |value| serialise_into(value, &entry),
        ),
    });
}

/// Appends `value` in postcard to `bytes`.
pub(crate) fn serialise_into(bytes: &mut Vec<u8>, value: &impl serde::Serialize) {
    *bytes = postcard::to_extend(value, std::mem::take(bytes)).expect("stored values serialise");
}

/// Where refused records go: the customer topic they came from and the
/// dead-letter topic, and how to publish dead letters (before the commit, so
/// a crash can never skip a record without its dead letter).
pub struct DeadLetters<'a> {
    pub topics: &'a TopicNames,
    pub publish: &'a mut dyn FnMut(&[Outgoing]) -> Result<()>,
}

/// How the service names itself in dead letters.
pub const SERVICE: &str = "projector";

/// A record to apply, borrowed from the consumer's buffers or from a
/// [`Consumed`]: copying every payload cost more than decoding some of them.
pub(crate) struct Incoming<'a> {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: i64,
    pub(crate) key: &'a [u8],
    pub(crate) payload: &'a [u8],
    pub(crate) retry_of: Option<String>,
}

impl<'a> From<&'a Consumed> for Incoming<'a> {
    fn from(consumed: &'a Consumed) -> Self {
        Self {
            partition: consumed.partition,
            offset: consumed.offset,
            timestamp_ms: consumed.timestamp_ms,
            key: &consumed.key,
            payload: &consumed.payload,
            retry_of: consumed.retry_of.clone(),
        }
    }
}

impl<'a> From<&'a rdkafka::message::BorrowedMessage<'_>> for Incoming<'a> {
    fn from(message: &'a rdkafka::message::BorrowedMessage<'_>) -> Self {
        Self {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
            key: message.key().unwrap_or_default(),
            payload: message.payload().unwrap_or_default(),
            retry_of: retry_of(message),
        }
    }
}

/// Records of a batch by outcome.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcomes {
    pub(crate) applied: u64,
    pub(crate) duplicates: u64,
    pub(crate) undecodable: u64,
}

/// The column family a worker folds into, in its store.
#[derive(Clone, Copy)]
pub(crate) struct Projection<'a> {
    pub(crate) store: &'a Store,
    pub(crate) family: &'a str,
}

/// A batch folded into sealed writes and profile deltas, not committed yet.
pub(crate) struct Folded<'a> {
    pub(crate) projection: Projection<'a>,
    pub(crate) sealed: Sealed<'a>,
    /// The deltas of the profiles to write whole rather than append to (see
    /// [`WholeWrites`]), in key order; the commit reads and rewrites them.
    pub(crate) whole: PackedWrites,
    /// The other profiles' deltas, in key order.
    pub(crate) appended: PackedWrites,
    pub(crate) next: Positions,
    pub(crate) outcomes: Outcomes,
    pub(crate) refused: Vec<Outgoing>,
    /// Records consumed, those outside the window included.
    pub(crate) records: usize,
    /// When ingest received each record consumed (its timestamp), for the
    /// freshness the service reports once the batch is committed.
    pub(crate) received_ms: Vec<i64>,
    /// Whether to list the profiles the batch changed.
    pub(crate) list_changes: ListChanges<'a>,
}

/// Whether a batch lists the profiles it changed, for [`Changes`]: a
/// rebuild nobody scores skips decoding every profile key of every batch.
#[derive(Clone, Copy)]
pub(crate) enum ListChanges<'a> {
    Always,
    Never,
    /// Asked after the batch is written: a subscriber that arrives later
    /// scans after the write and sees the batch anyway.
    IfSubscribed(&'a Changes),
}

impl ListChanges<'_> {
    pub(crate) fn now(self) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::IfSubscribed(changes) => changes.subscribed(),
        }
    }
}

/// How a worker folds every batch.
#[derive(Clone, Copy)]
pub(crate) struct Rules<'a> {
    /// Records received outside it only advance the offsets.
    pub(crate) window: TimeWindow,
    /// Where refused records go, and what they name as their source.
    pub(crate) topics: &'a TopicNames,
    pub(crate) list_changes: ListChanges<'a>,
}

/// A batch that is on disk.
pub(crate) struct Committed {
    pub(crate) next: Positions,
    pub(crate) outcomes: Outcomes,
    pub(crate) changed: Vec<String>,
    pub(crate) records: usize,
    pub(crate) received_ms: Vec<i64>,
}

impl Folded<'_> {
    /// Writes the profiles due whole and commits them with the rest of the
    /// batch. Must run after every earlier batch committed: a profile
    /// written whole is read from the store.
    pub(crate) fn write(&self) -> Result<()> {
        let Projection { store, family } = self.projection;
        let deltas: Vec<(&[u8], &[u8])> = self.whole.sorted().collect();
        let mut whole = PackedWrites::default();
        for profile in deltas.chunk_by(|left, right| left.0 == right.0) {
            let key = profile[0].0;
            let mut state = match store.get(family, key)? {
                Some(bytes) => ProfileState::decode(&bytes)?,
                None => ProfileState::default(),
            };
            for (_, delta) in profile {
                merge::append_delta(&mut state, delta)?;
            }
            whole.push(
                |bytes| bytes.extend_from_slice(key),
                |value| state.encode_into(value),
            );
        }
        // Every write of a projection's column family is a batch like this
        // one, so it can skip RocksDB's log: the customer topic is the log
        // (see `Durability::SourceLog`).
        self.sealed
            .commit_with(&whole, &self.appended, Durability::SourceLog)
    }

    /// What the batch changed, once it is on disk.
    pub(crate) fn committed(self) -> Committed {
        // Both in key order: a profile with several records is listed once.
        let mut changed = Vec::new();
        let listed = self
            .list_changes
            .now()
            .then(|| self.appended.sorted().chain(self.whole.sorted()));
        for (key, _) in listed.into_iter().flatten() {
            if let Ok(profile_id) = keys::decode_profile(key)
                && changed.last() != Some(&profile_id)
            {
                changed.push(profile_id);
            }
        }
        Committed {
            next: self.next,
            outcomes: self.outcomes,
            changed,
            records: self.records,
            received_ms: self.received_ms,
        }
    }

    pub(crate) fn commit(self) -> Result<Committed> {
        self.write()?;
        Ok(self.committed())
    }
}

/// Folds a batch on top of `positions` (and of `after`, the previous batch
/// when it may still be committing) into one sealed set of writes: the
/// state, the offsets and the source watermarks.
pub(crate) fn fold_batch<'a>(
    projection: Projection<'a>,
    records: &[Incoming<'_>],
    positions: &Positions,
    after: Option<&Sealed<'a>>,
    whole_writes: &mut WholeWrites,
    rules: Rules<'a>,
) -> Result<Folded<'a>> {
    let Projection { store, family } = projection;
    let Rules {
        window,
        topics,
        list_changes,
    } = rules;
    let mut staged = match after {
        Some(earlier) => store.stage_after(family, earlier),
        None => store.stage(family),
    };
    let mut next = positions.clone();
    let mut outcomes = Outcomes::default();
    let mut refused = Vec::new();
    let mut appended = PackedWrites::with_capacity(records.len(), 256 * records.len());
    // Room for each record's timeline summary, reused.
    let mut scratch = String::new();
    let mut received_ms = Vec::with_capacity(records.len());
    for consumed in records {
        next.offsets.insert(consumed.partition, consumed.offset);
        received_ms.push(consumed.timestamp_ms);
        if !window.holds(consumed.timestamp_ms) {
            // A rebuild that starts at a time seeks near it (see `seek`) and
            // leaves out the earlier records it still reads; a bounded one
            // reads a little past its end (see `run`) and leaves out the
            // later ones.
            continue;
        }
        let decoded = match proto::CustomerRecord::decode(consumed.payload) {
            Ok(record) if record.source.is_none() => {
                Err("the customer record has no source position".to_owned())
            }
            Ok(record) if record.customer_id.is_empty() => {
                Err("the customer record has no customer id".to_owned())
            }
            Ok(record) => Ok(record),
            Err(error) => Err(format!(
                "the record does not decode as rapport.events.v1.CustomerRecord: {error}"
            )),
        };
        let record = match decoded {
            Ok(record) => record,
            Err(reason) => {
                outcomes.undecodable += 1;
                tracing::warn!(partition = consumed.partition, offset = consumed.offset, %reason, "customer record sent to dead letters");
                refused.push(
                    Refused {
                        service: SERVICE,
                        reason,
                        topic: &topics.customer,
                        partition: consumed.partition,
                        offset: consumed.offset,
                        key: consumed.key,
                        payload: consumed.payload,
                        timestamp_ms: consumed.timestamp_ms,
                    }
                    .into_outgoing(&topics.deadletters),
                );
                continue;
            }
        };
        if let Some(letter) = &consumed.retry_of {
            // A retried dead letter sits behind later records of its raw
            // partition, so the watermark would skip it; each letter is
            // applied once instead.
            let retried = keys::retried(letter);
            if staged.get(&retried)?.is_some() {
                outcomes.duplicates += 1;
                continue;
            }
            staged.put(retried, Vec::new());
        } else {
            let source = record.source.unwrap_or_default();
            let mark_key = (consumed.partition, source.raw_partition);
            let position = (source.raw_offset, source.index);
            if next
                .watermarks
                .get(&mark_key)
                .is_some_and(|last| position <= *last)
            {
                // Re-produced by identity after a crash: already applied.
                outcomes.duplicates += 1;
                continue;
            }
            next.watermarks.insert(mark_key, position);
        }
        fold_customer_view(
            &mut staged,
            &mut appended,
            &record,
            consumed.payload,
            &mut scratch,
        );
        outcomes.applied += 1;
    }
    // Offsets and watermarks are written once per batch, at their last value.
    for (partition, offset) in &next.offsets {
        if positions.offsets.get(partition) != Some(offset) {
            staged.put(keys::offset(*partition), offset.to_be_bytes().to_vec());
        }
    }
    for (pair, mark) in &next.watermarks {
        if positions.watermarks.get(pair) != Some(mark) {
            staged.put(
                keys::watermark(pair.0, pair.1),
                encode_watermark(mark.0, mark.1),
            );
        }
    }
    // Sorted here rather than by the commit, which is the longer stage; a
    // profile's deltas keep the order of its records.
    appended.sort();
    let whole =
        appended.split_off_keys(|profile_key, records| whole_writes.due(profile_key, records));
    Ok(Folded {
        projection,
        sealed: staged.seal(),
        whole,
        appended,
        next,
        outcomes,
        refused,
        records: records.len(),
        received_ms,
        list_changes,
    })
}

/// Publishes what a committed batch changed: positions, gauges, counters.
pub(crate) fn record_commit(
    metrics: &ApplyMetrics,
    positions: &mut Positions,
    committed: Committed,
) -> Vec<String> {
    for (partition, offset) in &committed.next.offsets {
        if positions.offsets.get(partition) != Some(offset) {
            metrics.applied_offset(*partition).set(*offset);
        }
    }
    *positions = committed.next;
    metrics.applied.increment(committed.outcomes.applied);
    metrics.duplicates.increment(committed.outcomes.duplicates);
    metrics
        .undecodable
        .increment(committed.outcomes.undecodable);
    metrics.batches.increment(1);
    committed.changed
}

/// The dead letter a re-submitted record came from, if it is one.
pub(crate) fn retry_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::Headers as _;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|header| header.key == rapport_common::kafka::RETRY_HEADER)
        .and_then(|header| header.value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
}
