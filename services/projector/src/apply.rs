//! The projector framework: folds customer-topic records into a projection's
//! column family, one atomic `WriteBatch` per batch of records holding the
//! state, the last applied offset of every partition and the source
//! watermarks that let re-produced records be skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use rapport_common::config::{Config, TopicNames};
use rapport_common::kafka::{Fetching, Outgoing, Refused, produce_all};
use rapport_common::metrics::{Counter, Gauge, Registry};
use rapport_common::status::WorkerStatus;

use rapport_common::store::{Durability, PackedWrites, Sealed, Staged, Store};
use rapport_common::{Result, keys, merge};
use rapport_projections::customer_view::{self, EffectOf, ProfileState};
use rapport_proto::v1 as proto;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::position::{Bounds, Positions, StartFrom, TimeWindow, encode_watermark};

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
    registry: Registry,
    family: String,
}

impl ApplyMetrics {
    pub fn new(registry: &Registry, family: &str) -> Self {
        let outcome = |name| {
            registry.counter(
                "rapport_projector_records_total",
                "Customer-topic records by outcome.",
                &[("projection", family), ("outcome", name)],
            )
        };
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
            registry: registry.clone(),
            family: family.to_owned(),
        }
    }

    fn applied_offset(&self, partition: i32) -> Gauge {
        let partition = partition.to_string();
        self.registry.gauge(
            "rapport_projector_applied_offset",
            "Last applied offset per partition.",
            &[("projection", &self.family), ("partition", &partition)],
        )
    }

    /// Set once, when the worker starts: how far the state on disk had got.
    fn resumed_offset(&self, partition: i32) -> Gauge {
        let partition = partition.to_string();
        self.registry.gauge(
            "rapport_projector_resumed_offset",
            "Last applied offset per owned partition found in the store when this worker started; -1 when none was stored.",
            &[("projection", &self.family), ("partition", &partition)],
        )
    }
}

/// Every so many records of a profile, the commit writes the profile whole
/// instead of appending them: RocksDB folds the deltas in its memtable only
/// when it flushes, and a busy profile under light traffic could otherwise
/// collect thousands there, each read then combining them all. Counted per
/// hash slot, not per profile, so that the memory is fixed; a collision only
/// makes a profile's whole write come early.
pub(crate) struct WholeWrites {
    records_per_slot: Vec<u16>,
    every: u16,
}

impl Default for WholeWrites {
    fn default() -> Self {
        Self::every(128)
    }
}

impl WholeWrites {
    fn every(records: u16) -> Self {
        Self {
            records_per_slot: vec![0; 1 << 16],
            every: records.max(1),
        }
    }

    /// Counts `records` more records of the profile stored under
    /// `profile_key`; true when it is time to write the profile whole.
    fn due(&mut self, profile_key: &[u8], records: usize) -> bool {
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
fn fold_customer_view(
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
fn serialise_into(bytes: &mut Vec<u8>, value: &impl serde::Serialize) {
    *bytes = postcard::to_extend(value, std::mem::take(bytes)).expect("stored values serialise");
}

/// Profiles changed by committed batches, for views derived in memory from a
/// projection (the analytics scoreboard). Nothing accumulates until someone
/// [`subscribe`](Changes::subscribe)s, so a version nobody scores costs nothing.
#[derive(Clone, Default)]
pub struct Changes(Arc<std::sync::Mutex<Option<std::collections::HashSet<String>>>>);

impl Changes {
    /// Starts collecting changed profile ids (from now on).
    pub fn subscribe(&self) {
        let mut pending = self.0.lock().expect("changes lock");
        pending.get_or_insert_with(Default::default);
    }

    /// Profile ids changed since the last call; empty before `subscribe`.
    pub fn take(&self) -> Vec<String> {
        let mut pending = self.0.lock().expect("changes lock");
        pending
            .as_mut()
            .map(|ids| ids.drain().collect())
            .unwrap_or_default()
    }

    /// Whether someone [`subscribe`](Changes::subscribe)d: until then a
    /// worker does not list what its batches change.
    fn subscribed(&self) -> bool {
        self.0.lock().expect("changes lock").is_some()
    }

    /// Whether anything changed since the last [`take`](Changes::take).
    pub fn pending(&self) -> bool {
        let pending = self.0.lock().expect("changes lock");
        pending.as_ref().is_some_and(|ids| !ids.is_empty())
    }

    /// Whether both are the same feed (of the same worker).
    pub fn same_feed(&self, other: &Changes) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn record(&self, profiles: Vec<String>) {
        if let Some(pending) = self.0.lock().expect("changes lock").as_mut() {
            pending.extend(profiles);
        }
    }
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
struct Incoming<'a> {
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
    key: &'a [u8],
    payload: &'a [u8],
    retry_of: Option<String>,
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
struct Outcomes {
    applied: u64,
    duplicates: u64,
    undecodable: u64,
}

/// The column family a worker folds into, in its store.
#[derive(Clone, Copy)]
struct Projection<'a> {
    store: &'a Store,
    family: &'a str,
}

/// A batch folded into sealed writes and profile deltas, not committed yet.
struct Folded<'a> {
    projection: Projection<'a>,
    sealed: Sealed<'a>,
    /// The deltas of the profiles to write whole rather than append to (see
    /// [`WholeWrites`]), in key order; the commit reads and rewrites them.
    whole: PackedWrites,
    /// The other profiles' deltas, in key order.
    appended: PackedWrites,
    next: Positions,
    outcomes: Outcomes,
    refused: Vec<Outgoing>,
    /// Records consumed, those outside the window included.
    records: usize,
    /// Whether to list the profiles the batch changed.
    list_changes: ListChanges<'a>,
}

/// Whether a batch lists the profiles it changed, for [`Changes`]: a
/// rebuild nobody scores skips decoding every profile key of every batch.
#[derive(Clone, Copy)]
enum ListChanges<'a> {
    Always,
    Never,
    /// Asked after the batch is written: a subscriber that arrives later
    /// scans after the write and sees the batch anyway.
    IfSubscribed(&'a Changes),
}

impl ListChanges<'_> {
    fn now(self) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::IfSubscribed(changes) => changes.subscribed(),
        }
    }
}

/// How a worker folds every batch.
#[derive(Clone, Copy)]
struct Rules<'a> {
    /// Records received outside it only advance the offsets.
    window: TimeWindow,
    /// Where refused records go, and what they name as their source.
    topics: &'a TopicNames,
    list_changes: ListChanges<'a>,
}

/// A batch that is on disk.
struct Committed {
    next: Positions,
    outcomes: Outcomes,
    changed: Vec<String>,
    records: usize,
}

impl Folded<'_> {
    /// Writes the profiles due whole and commits them with the rest of the
    /// batch. Must run after every earlier batch committed: a profile
    /// written whole is read from the store.
    fn write(&self) -> Result<()> {
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
    fn committed(self) -> Committed {
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
        }
    }

    fn commit(self) -> Result<Committed> {
        self.write()?;
        Ok(self.committed())
    }
}

/// A batch being committed on a thread of its own, while the next batch is
/// folded on top of it (reading `sealed`).
struct InFlight<'scope, 'a> {
    sealed: Sealed<'a>,
    /// Also lists the profiles the batch changed, once it is written: the
    /// folding thread is the busier of the two.
    thread: std::thread::ScopedJoinHandle<'scope, (Result<()>, Committed)>,
}

impl<'scope, 'a: 'scope> InFlight<'scope, 'a> {
    fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        folded: Folded<'a>,
        family: &str,
    ) -> Result<Self> {
        let sealed = folded.sealed.clone();
        let thread = spawn_stage(scope, "commit", family, move || {
            (folded.write(), folded.committed())
        })?;
        Ok(Self { sealed, thread })
    }

    /// Waits until the batch is on disk (or failed to get there).
    fn settle(self) -> Result<Committed> {
        let (written, committed) = self
            .thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        drop(self.sealed);
        written?;
        Ok(committed)
    }
}

/// Starts one of a worker's stage threads, named after the stage and the
/// projection's version (`commit-v1`), so that `top` and profiles tell
/// them apart.
fn spawn_stage<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    stage: &str,
    family: &str,
    work: impl FnOnce() -> T + Send + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, T>> {
    let version = family.rsplit('.').next().unwrap_or(family);
    std::thread::Builder::new()
        .name(format!("{stage}-{version}"))
        .spawn_scoped(scope, work)
        .map_err(|source| rapport_common::Error::Io {
            context: format!("starting the {stage} thread of {family}"),
            source,
        })
}

/// Batches folded one ahead of their commit: the caller's thread folds
/// batch n+1 while a scoped thread encodes and commits batch n. Batch n+1
/// reads through batch n's writes (profiles are only appended to, never
/// read), so it sees exactly what a sequential fold would, and batches
/// still commit one at a time, in order, each with its own offsets and
/// watermarks: a crash loses at most the uncommitted tail.
struct Pipeline<'scope, 'env, 'a> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    projection: Projection<'a>,
    rules: Rules<'a>,
    metrics: &'a ApplyMetrics,
    whole_writes: WholeWrites,
    /// The positions batches are folded on, one batch ahead of the
    /// committed ones.
    folded_positions: Positions,
    in_flight: Option<InFlight<'scope, 'a>>,
}

impl<'scope, 'env, 'a: 'scope> Pipeline<'scope, 'env, 'a> {
    fn new(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        projection: Projection<'a>,
        positions: &Positions,
        rules: Rules<'a>,
        metrics: &'a ApplyMetrics,
    ) -> Self {
        Self {
            scope,
            projection,
            rules,
            metrics,
            whole_writes: WholeWrites::default(),
            folded_positions: positions.clone(),
            in_flight: None,
        }
    }

    /// Folds `records` on top of the batch still committing, hands the
    /// records it refuses to `publish` (before anything of the batch
    /// commits), waits for the previous batch and starts this one's
    /// commit. Returns the previous batch, now on disk.
    fn push(
        &mut self,
        records: &[Incoming<'_>],
        publish: &mut dyn FnMut(&[Outgoing]) -> Result<()>,
    ) -> Result<Option<Committed>> {
        let folding = Instant::now();
        let folded = fold_batch(
            self.projection,
            records,
            &self.folded_positions,
            self.in_flight.as_ref(),
            &mut self.whole_writes,
            self.rules,
        )?;
        if !folded.refused.is_empty() {
            publish(&folded.refused)?;
        }
        self.metrics
            .folding_us
            .increment(folding.elapsed().as_micros() as u64);
        // Batch n must be on disk before n+1 may commit.
        let previous = self.settle()?;
        self.folded_positions = folded.next.clone();
        self.in_flight = Some(InFlight::start(self.scope, folded, self.projection.family)?);
        Ok(previous)
    }

    /// Waits for the batch still committing, if any.
    fn settle(&mut self) -> Result<Option<Committed>> {
        let Some(flight) = self.in_flight.take() else {
            return Ok(None);
        };
        let waiting = Instant::now();
        let committed = flight.settle()?;
        self.metrics
            .waiting_for_commit_us
            .increment(waiting.elapsed().as_micros() as u64);
        Ok(Some(committed))
    }
}

/// Applies batches of records held in memory the way a worker applies what
/// it consumes (folded one ahead of their commit), on top of the stored
/// positions: the fold and the commit without a broker, for benchmarks.
/// Returns the positions reached.
pub fn apply_from_memory(
    store: &Store,
    family: &str,
    batches: &[Vec<Consumed>],
    metrics: &ApplyMetrics,
    dead_letters: DeadLetters<'_>,
) -> Result<Positions> {
    let mut positions = Positions::load(store, family)?;
    std::thread::scope(|scope| -> Result<()> {
        let mut pipeline = Pipeline::new(
            scope,
            Projection { store, family },
            &positions,
            Rules {
                window: TimeWindow::default(),
                topics: dead_letters.topics,
                // Benchmarks and tests: nobody scores.
                list_changes: ListChanges::Never,
            },
            metrics,
        );
        for batch in batches {
            let incoming: Vec<Incoming<'_>> = batch.iter().map(Incoming::from).collect();
            if let Some(committed) = pipeline.push(&incoming, dead_letters.publish)? {
                record_commit(metrics, &mut positions, committed);
            }
        }
        if let Some(committed) = pipeline.settle()? {
            record_commit(metrics, &mut positions, committed);
        }
        Ok(())
    })?;
    Ok(positions)
}

/// Folds a batch on top of `positions` (and of `after`, the previous batch
/// when it may still be committing) into one sealed set of writes: the
/// state, the offsets and the source watermarks.
fn fold_batch<'a>(
    projection: Projection<'a>,
    records: &[Incoming<'_>],
    positions: &Positions,
    after: Option<&InFlight<'_, 'a>>,
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
        Some(earlier) => store.stage_after(family, &earlier.sealed),
        None => store.stage(family),
    };
    let mut next = positions.clone();
    let mut outcomes = Outcomes::default();
    let mut refused = Vec::new();
    let mut appended = PackedWrites::with_capacity(records.len(), 256 * records.len());
    // Room for each record's timeline summary, reused.
    let mut scratch = String::new();
    for consumed in records {
        next.offsets.insert(consumed.partition, consumed.offset);
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
        list_changes,
    })
}

/// Publishes what a committed batch changed: positions, gauges, counters.
fn record_commit(
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

/// Applies a batch of consumed records and commits it with the positions.
/// Records received outside `window` only advance the offsets.
/// `positions` is updated only when the commit succeeded. Returns the ids of
/// the profiles the batch changed.
pub fn apply_batch(
    store: &Store,
    family: &str,
    records: &[Consumed],
    positions: &mut Positions,
    metrics: &ApplyMetrics,
    window: TimeWindow,
    dead_letters: DeadLetters<'_>,
) -> Result<Vec<String>> {
    let incoming: Vec<Incoming<'_>> = records.iter().map(Incoming::from).collect();
    let folded = fold_batch(
        Projection { store, family },
        &incoming,
        positions,
        None,
        // One batch on its own: its profiles get one delta each.
        &mut WholeWrites::default(),
        Rules {
            window,
            topics: dead_letters.topics,
            // The caller gets the list.
            list_changes: ListChanges::Always,
        },
    )?;
    if !folded.refused.is_empty() {
        (dead_letters.publish)(&folded.refused)?;
    }
    let committed = folded.commit()?;
    Ok(record_commit(metrics, positions, committed))
}

/// The dead letter a re-submitted record came from, if it is one.
fn retry_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::Headers as _;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|header| header.key == rapport_common::kafka::RETRY_HEADER)
        .and_then(|header| header.value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// How a worker is steered and observed from outside its thread.
pub struct WorkerLinks {
    /// Set to stop after the current batch.
    pub stop: Arc<AtomicBool>,
    pub status: Arc<WorkerStatus>,
    pub changes: Changes,
}

/// Consumes the customer topic and applies it until `links.stop` is set.
/// Blocking: run it on its own thread.
pub fn run(
    config: &Config,
    store: &Store,
    family: &str,
    metrics: ApplyMetrics,
    bounds: &Bounds,
    links: &WorkerLinks,
) -> Result<()> {
    let WorkerLinks {
        stop,
        status,
        changes,
    } = links;
    // Ends of partitions are reported whether bounded or not: the status
    // says a partition was read to its end only once a fetch found it so.
    // A worker starts behind the log (a rebuild, a restart) and reads with
    // short fetch waits until it reaches the end of every partition, then
    // hands its partitions to a consumer that waits longer (see
    // `kafka::Fetching`). Both report to one health, which the status reads.
    let context = rapport_common::kafka::HealthContext::default();
    status.attach_consumer(context.health.clone());
    let consumer_fetching = |fetching| {
        rapport_common::kafka::assigning_consumer_with(
            &config.kafka,
            "rapport-projector",
            true,
            fetching,
            context.for_another_client(),
        )
    };
    let consumer = consumer_fetching(Fetching::CatchingUp)?;
    // A bounded version stops at its end, so it never hands over.
    let steady = match bounds.until_ms {
        None => Some(consumer_fetching(Fetching::Steady)?),
        Some(_) => None,
    };
    let topic = &config.topics.customer;
    let count =
        rapport_common::kafka::wait_for_partitions(&consumer, topic, Duration::from_secs(60))?;
    let owned: Vec<i32> = if config.projector.partitions.is_empty() {
        (0..count).collect()
    } else {
        config.projector.partitions.clone()
    };
    let mut positions = Positions::load(store, family)?;
    for (partition, offset) in &positions.offsets {
        metrics.applied_offset(*partition).set(*offset);
    }
    for partition in &owned {
        let stored = positions.offsets.get(partition).copied();
        metrics.resumed_offset(*partition).set(stored.unwrap_or(-1));
    }
    status.record_batch(&positions.offsets, 0);
    let mut first_wanted: BTreeMap<i32, i64> = BTreeMap::new();
    let sought = crate::seek::time_starts(config, topic, &owned, &positions, &bounds.from, status)?;
    let mut starts = Vec::new();
    for partition in &owned {
        let start = match (positions.offsets.get(partition), &bounds.from) {
            (Some(offset), _) => Some(offset + 1),
            (
                None,
                StartFrom::Offset {
                    partition: chosen,
                    offset,
                },
            ) if chosen == partition => Some(*offset),
            (None, StartFrom::Time { .. }) => sought.get(partition).copied(),
            (None, _) => None,
        };
        if let Some(next) = start {
            first_wanted.insert(*partition, next);
        }
        starts.push((
            *partition,
            start.map_or(Offset::Beginning, rapport_common::kafka::fetch_start),
        ));
    }
    rapport_common::kafka::assign(&consumer, topic, &starts)?;
    metrics.catching_up.set(1);
    tracing::info!(topic, projection = family, partitions = ?owned, offsets = ?positions.offsets, "projector starting after its stored offsets");

    let (producer, _) =
        rapport_common::kafka::producer(&config.kafka, "rapport-projector", None, 10_000)?;
    let window = TimeWindow {
        not_before_ms: match bounds.from {
            StartFrom::Time { at_ms } => Some(at_ms),
            _ => None,
        },
        not_after_ms: bounds.until_ms,
    };
    // Within a partition, receive times go back by less than identity's
    // reorder grace (see `seek`), so a record received by `until` can follow
    // one received a little after it; past `until` plus the grace none can.
    let disorder_ms = config.identity.reorder_grace_ms as i64;
    let poller = Poller {
        consumer: &consumer,
        catching_up: steady.as_ref().map(|steady| CatchingUp {
            steady,
            starts,
            next: BTreeMap::new(),
            reached_end: Default::default(),
        }),
        retired: None,
        health: &context.health,
        topic,
        owned: &owned,
        first_wanted,
        last_taken: BTreeMap::new(),
        past_end_ms: bounds
            .until_ms
            .map(|until| until.saturating_add(disorder_ms)),
        done: Default::default(),
        max_batch: config.projector.max_batch.max(1),
        status,
        metrics: &metrics,
    };
    // Three stages: a thread polls batch n+2 while this one folds batch
    // n+1 and a third commits batch n (see `Pipeline`). Polling is on its
    // own thread because the fold does not wait for it there: on the
    // applying thread it took a third of a rebuild's time.
    let applied = std::thread::scope(|scope| -> Result<()> {
        let (batches, polled) = std::sync::mpsc::sync_channel(1);
        spawn_stage(scope, "poll", family, move || poller.run(stop, batches))?;
        let mut pipeline = Pipeline::new(
            scope,
            Projection { store, family },
            &positions,
            Rules {
                window,
                topics: &config.topics,
                list_changes: ListChanges::IfSubscribed(changes),
            },
            &metrics,
        );
        let mut landed = |committed: Result<Option<Committed>>| -> Result<()> {
            let committed =
                committed.inspect_err(|error| status.record_error(&error.to_string()))?;
            if let Some(committed) = committed {
                let records = committed.records as u64;
                changes.record(record_commit(&metrics, &mut positions, committed));
                status.record_batch(&positions.offsets, records);
            }
            Ok(())
        };
        let mut publish = |refused: &[Outgoing]| produce_all(&producer, refused);
        loop {
            let waiting = Instant::now();
            let next = polled.recv();
            metrics
                .waiting_for_records_us
                .increment(waiting.elapsed().as_micros() as u64);
            match next {
                Ok(Polled::Records(batch)) => {
                    let incoming: Vec<Incoming<'_>> = batch.iter().map(Incoming::from).collect();
                    landed(pipeline.push(&incoming, &mut publish))?;
                }
                // Idle: let the last batch land so that status and changes are current.
                Ok(Polled::Idle) => landed(pipeline.settle())?,
                Ok(Polled::Finished) => {
                    landed(pipeline.settle())?;
                    tracing::info!(projection = family, "bounded rebuild reached its end");
                    return Ok(());
                }
                // Asked to stop: the poller is gone.
                Err(std::sync::mpsc::RecvError) => return landed(pipeline.settle()),
            }
        }
    });
    metrics.catching_up.set(0);
    // Batches skip RocksDB's log; a stopped or finished worker puts what
    // they wrote on disk, so that a restart need not read it again.
    applied?;
    store.flush(family)
}

/// What the polling thread hands the applying thread.
enum Polled<'consumer> {
    /// Records to apply, in the order consumed.
    Records(Vec<rdkafka::message::BorrowedMessage<'consumer>>),
    /// Nothing arrived for a while.
    Idle,
    /// A bounded version read every partition it owns to its end.
    Finished,
}

/// Polls the customer topic into batches for the applying thread, and
/// keeps track of where a bounded version ends.
struct Poller<'a> {
    consumer: &'a ProjectorConsumer,
    /// Until the worker reaches the end of the log: how it gets there.
    catching_up: Option<CatchingUp<'a>>,
    /// After that, the consumer that read until then.
    retired: Option<&'a ProjectorConsumer>,
    /// Where both consumers report the log's end.
    health: &'a rapport_common::kafka::BrokerHealth,
    topic: &'a str,
    owned: &'a [i32],
    /// The first offset each partition must deliver; earlier records a
    /// rewound fetch returns are dropped (see `kafka::fetch_start`).
    first_wanted: BTreeMap<i32, i64>,
    /// The offset of the last record taken from each partition. A record
    /// at or before it is dropped: Kafka never delivers an offset twice,
    /// but tansu 0.6 does where a partition's log has a gap (its fetch
    /// steps forward by the number of records it found, so it serves the
    /// records after the gap again, labelled with earlier offsets).
    last_taken: BTreeMap<i32, i64>,
    /// For a bounded version: a record received after this instant shows
    /// that its partition holds nothing more the version wants.
    past_end_ms: Option<i64>,
    /// Partitions a bounded version has finished: it saw a record received
    /// past its end, or the end of the partition (the end lies in the
    /// past, so nothing received by then can still arrive).
    done: std::collections::BTreeSet<i32>,
    max_batch: usize,
    status: &'a WorkerStatus,
    metrics: &'a ApplyMetrics,
}

type ProjectorConsumer = rdkafka::consumer::BaseConsumer<rapport_common::kafka::HealthContext>;

/// A worker on its way from where it started to the end of the log, read
/// with short fetch waits (`kafka::Fetching::CatchingUp`).
struct CatchingUp<'a> {
    /// The consumer, waiting longer, that takes the partitions over at the
    /// end.
    steady: &'a ProjectorConsumer,
    /// Where the worker started each partition it owns.
    starts: Vec<(i32, Offset)>,
    /// The offset after the last record polled from each partition.
    next: BTreeMap<i32, i64>,
    /// The partitions whose end the catching-up consumer reached.
    reached_end: std::collections::BTreeSet<i32>,
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
    fn read_to_end(
        &self,
        partition: i32,
        first_wanted: Option<i64>,
        health: &rapport_common::kafka::BrokerHealth,
        topic: &str,
    ) -> bool {
        let position = self
            .next
            .get(&partition)
            .copied()
            .max(first_wanted)
            .unwrap_or(0);
        self.reached_end.contains(&partition)
            || health
                .log_end_reported(topic, partition)
                .is_some_and(|(end, _)| position >= end)
    }
}

impl<'a> Poller<'a> {
    /// Polls until `stop` is set, a bounded version is finished, or the
    /// applying thread is gone.
    fn run(mut self, stop: &AtomicBool, batches: std::sync::mpsc::SyncSender<Polled<'a>>) {
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
                self.owned.iter().all(|partition| {
                    catching_up.read_to_end(
                        *partition,
                        self.first_wanted.get(partition).copied(),
                        self.health,
                        self.topic,
                    )
                })
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
    fn poll_batch(&mut self, deadline: Instant) -> Vec<rdkafka::message::BorrowedMessage<'a>> {
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
                    if self
                        .last_taken
                        .get(&partition)
                        .is_some_and(|last| offset <= *last)
                    {
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
                    } else if self
                        .first_wanted
                        .get(&partition)
                        .is_none_or(|first| offset >= *first)
                    {
                        self.last_taken.insert(partition, offset);
                        batch.push(message);
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    if let Some(catching_up) = &mut self.catching_up {
                        catching_up.reached_end.insert(partition);
                    }
                    self.status.record_end_reached(partition);
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
    fn serve_idle_consumer(&self) {
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
    fn hand_over(&mut self) {
        let Some(catching_up) = self.catching_up.take() else {
            return;
        };
        let mut first_wanted = self.first_wanted.clone();
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
                    .max(first_wanted.get(partition).copied());
                match next {
                    Some(next) => {
                        first_wanted.insert(*partition, next);
                        (*partition, rapport_common::kafka::fetch_start(next))
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
        self.first_wanted = first_wanted;
        self.metrics.catching_up.set(0);
        tracing::info!(
            projection,
            offsets = ?starts,
            "caught up with the customer topic; fetching with the steady wait from here"
        );
    }

    /// Stops fetching a partition a bounded version has finished.
    fn finish(&mut self, partition: i32) {
        if self.done.insert(partition) {
            let mut list = TopicPartitionList::new();
            list.add_partition(self.topic, partition);
            let _ = self.consumer.pause(&list);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_proto::v1::customer_record::Body;

    fn record(customer_id: &str, raw_offset: i64, url: &str) -> Vec<u8> {
        let event = proto::Event {
            event_id: format!("e-{raw_offset}"),
            r#type: "web.page_viewed".into(),
            occurred_at_ms: raw_offset,
            channel: "web".into(),
            payload: Some(proto::event::Payload::WebPageViewed(proto::PageViewed {
                url: url.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        proto::CustomerRecord {
            customer_id: customer_id.into(),
            source: Some(proto::SourcePosition {
                raw_partition: 0,
                raw_offset,
                index: 0,
            }),
            received_at_ms: raw_offset,
            body: Some(Body::Event(proto::EventResolved {
                event: Some(event),
                linked: vec![],
            })),
        }
        .encode_to_vec()
    }

    fn views(store: &Store) -> u64 {
        let state = ProfileState::decode(
            &store
                .get(CUSTOMER_VIEW, &keys::profile("c-1"))
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        state.event_counts["web.page_viewed"]
    }

    fn everything(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
        store.scan_prefix(CUSTOMER_VIEW, &[], usize::MAX).unwrap()
    }

    #[test]
    fn folding_on_top_of_a_batch_still_committing_equals_folding_in_one_go() {
        // Three customers that recur in every batch, so that each batch
        // appends to (and now and then rewrites whole) profiles the previous
        // one has not committed yet; a re-produced record and a retried dead
        // letter (applied once) on top.
        let mut records: Vec<Consumed> = (0..60)
            .map(|index| Consumed {
                partition: 0,
                offset: index,
                timestamp_ms: 0,
                key: Vec::new(),
                retry_of: None,
                payload: record(
                    &format!("c-{}", index % 3),
                    100 + index,
                    &format!("/{index}"),
                ),
            })
            .collect();
        records.push(Consumed {
            offset: 60,
            ..records[10].clone()
        });
        for offset in [61, 62] {
            records.push(Consumed {
                offset,
                retry_of: Some("0:7".into()),
                payload: record("c-1", 5, "/retried"),
                ..records[0].clone()
            });
        }
        let metrics = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
        let topics = TopicNames::default();
        let mut no_letters = |_: &[Outgoing]| -> Result<()> { panic!("no dead letters expected") };

        let at_once = tempfile::tempdir().unwrap();
        let expected = Store::open(at_once.path(), &[CUSTOMER_VIEW]).unwrap();
        let mut positions = Positions::default();
        let dead_letters = DeadLetters {
            topics: &topics,
            publish: &mut no_letters,
        };
        apply_batch(
            &expected,
            CUSTOMER_VIEW,
            &records,
            &mut positions,
            &metrics,
            TimeWindow::default(),
            dead_letters,
        )
        .unwrap();

        let pipelined = tempfile::tempdir().unwrap();
        let store = Store::open(pipelined.path(), &[CUSTOMER_VIEW]).unwrap();
        let changes = Changes::default();
        let mut listed = Vec::new();
        std::thread::scope(|scope| {
            let mut pipeline = Pipeline::new(
                scope,
                Projection {
                    store: &store,
                    family: CUSTOMER_VIEW,
                },
                &Positions::default(),
                Rules {
                    window: TimeWindow::default(),
                    topics: &topics,
                    list_changes: ListChanges::IfSubscribed(&changes),
                },
                &metrics,
            );
            // Often, so that profiles are also written whole on top of
            // batches still committing.
            pipeline.whole_writes = WholeWrites::every(4);
            for (index, batch) in records.chunks(2).enumerate() {
                if index == 3 {
                    changes.subscribe();
                }
                let incoming: Vec<Incoming<'_>> = batch.iter().map(Incoming::from).collect();
                let landed = pipeline.push(&incoming, &mut no_letters).unwrap();
                listed.extend(landed.map(|committed| (index, committed.changed)));
            }
            listed.extend(
                pipeline
                    .settle()
                    .unwrap()
                    .map(|last| (usize::MAX, last.changed)),
            );
        });
        // Batches list what they changed only once someone subscribed. A
        // batch lands when the next is pushed: those landing by push 2 were
        // written before the subscription, those from push 4 after it (the
        // one landing at push 3 may be either), and up to push 30 each
        // applied views (the last two hold the duplicate and the retries).
        assert_eq!(listed.len(), 32);
        for (landed_at, changed) in &listed {
            match landed_at {
                0..=2 => assert!(
                    changed.is_empty(),
                    "landed at push {landed_at}: {changed:?}"
                ),
                4..=30 => assert!(!changed.is_empty(), "landed at push {landed_at}"),
                _ => {}
            }
        }
        assert_eq!(
            views(&store),
            20 + 1,
            "c-1: twenty views and one retry, the duplicate skipped"
        );
        assert_eq!(everything(&store), everything(&expected));
    }

    #[test]
    fn applying_from_memory_continues_from_the_stored_positions() {
        // Given forty records over two partitions, the first half applied
        let records: Vec<Consumed> = (0..40)
            .map(|index| Consumed {
                partition: index as i32 % 2,
                offset: index / 2,
                timestamp_ms: 0,
                key: Vec::new(),
                retry_of: None,
                payload: record(&format!("c-{}", index % 3), 100 + index, "/p"),
            })
            .collect();
        let first = &records[..20];
        let topics = TopicNames::default();
        let mut no_letters = |_: &[Outgoing]| -> Result<()> { panic!("no dead letters expected") };
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        let first_run = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
        apply_from_memory(
            &store,
            CUSTOMER_VIEW,
            &[first.to_vec()],
            &first_run,
            DeadLetters {
                topics: &topics,
                publish: &mut no_letters,
            },
        )
        .unwrap();
        // When a second run gets the first half again, as identity
        // re-produces it after a crash (at later offsets), then the rest
        let later: Vec<Consumed> = records
            .iter()
            .map(|consumed| Consumed {
                offset: consumed.offset + 20,
                ..consumed.clone()
            })
            .collect();
        let second_run = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
        let batches: Vec<Vec<Consumed>> = later.chunks(3).map(<[_]>::to_vec).collect();
        let positions = apply_from_memory(
            &store,
            CUSTOMER_VIEW,
            &batches,
            &second_run,
            DeadLetters {
                topics: &topics,
                publish: &mut no_letters,
            },
        )
        .unwrap();
        // Then the repeated half is skipped, the positions are the last
        // offsets, and the state equals one batch of it all
        assert_eq!(second_run.duplicates.get(), 20);
        assert_eq!(positions.offsets, BTreeMap::from([(0, 39), (1, 39)]));
        let at_once = tempfile::tempdir().unwrap();
        let expected = Store::open(at_once.path(), &[CUSTOMER_VIEW]).unwrap();
        let everything_in_order: Vec<Consumed> = first.iter().cloned().chain(later).collect();
        apply_batch(
            &expected,
            CUSTOMER_VIEW,
            &everything_in_order,
            &mut Positions::default(),
            &ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW),
            TimeWindow::default(),
            DeadLetters {
                topics: &topics,
                publish: &mut no_letters,
            },
        )
        .unwrap();
        assert_eq!(everything(&store), everything(&expected));
    }

    #[test]
    fn records_received_outside_the_window_only_advance_the_offsets() {
        // Given a bounded version's window ending at 100 ms and records whose
        // receive times go back a little within the partition
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        let metrics = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
        let mut positions = Positions::default();
        let records: Vec<Consumed> = [(90, "/a"), (105, "/late"), (99, "/b"), (100, "/c")]
            .into_iter()
            .enumerate()
            .map(|(offset, (timestamp_ms, url))| Consumed {
                partition: 0,
                offset: offset as i64,
                timestamp_ms,
                key: Vec::new(),
                retry_of: None,
                payload: record("c-1", 20 + offset as i64, url),
            })
            .collect();
        // When they are applied
        apply_batch(
            &store,
            CUSTOMER_VIEW,
            &records,
            &mut positions,
            &metrics,
            TimeWindow {
                not_before_ms: Some(95),
                not_after_ms: Some(100),
            },
            DeadLetters {
                topics: &TopicNames::default(),
                publish: &mut |_: &[Outgoing]| Ok(()),
            },
        )
        .unwrap();
        // Then only those received in [95, 100] are folded, the one after a
        // later record included, and the offsets pass every record
        assert_eq!(views(&store), 2);
        assert_eq!(positions.offsets.get(&0), Some(&3));
    }

    #[test]
    fn a_profile_is_due_to_be_written_whole_every_so_many_records() {
        let mut whole_writes = WholeWrites::every(3);
        let due: Vec<bool> = (0..7).map(|_| whole_writes.due(b"Pc-1", 1)).collect();
        assert_eq!(due, [false, false, true, false, false, true, false]);
        // A batch with many records of the profile makes it due at once.
        assert!(whole_writes.due(b"Pc-1", 5));
    }

    #[test]
    fn re_produced_records_are_skipped_and_positions_survive_a_restart() {
        let directory = tempfile::tempdir().unwrap();
        let metrics = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
        let topics = TopicNames::default();
        let mut letters: Vec<Outgoing> = Vec::new();
        let mut publish = |batch: &[Outgoing]| {
            letters.extend_from_slice(batch);
            Ok(())
        };
        {
            let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
            let mut positions = Positions::load(&store, CUSTOMER_VIEW).unwrap();
            let first = vec![
                Consumed {
                    partition: 0,
                    offset: 0,
                    timestamp_ms: 0,
                    key: Vec::new(),
                    retry_of: None,
                    payload: record("c-1", 10, "/a"),
                },
                Consumed {
                    partition: 0,
                    offset: 1,
                    timestamp_ms: 0,
                    key: Vec::new(),
                    retry_of: None,
                    payload: record("c-1", 11, "/b"),
                },
            ];
            apply_batch(
                &store,
                CUSTOMER_VIEW,
                &first,
                &mut positions,
                &metrics,
                TimeWindow::default(),
                DeadLetters {
                    topics: &topics,
                    publish: &mut publish,
                },
            )
            .unwrap();
            assert_eq!(views(&store), 2);
        }
        // A new process: positions come back from RocksDB, and identity's
        // re-production of raw offset 11 (at a new customer offset) is skipped.
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        let mut positions = Positions::load(&store, CUSTOMER_VIEW).unwrap();
        assert_eq!(positions.offsets.get(&0), Some(&1));
        let again = vec![
            Consumed {
                partition: 0,
                offset: 2,
                timestamp_ms: 0,
                key: Vec::new(),
                retry_of: None,
                payload: record("c-1", 11, "/b"),
            },
            Consumed {
                partition: 0,
                offset: 3,
                timestamp_ms: 0,
                key: Vec::new(),
                retry_of: None,
                payload: record("c-1", 12, "/c"),
            },
            Consumed {
                partition: 0,
                offset: 4,
                timestamp_ms: 0,
                key: Vec::new(),
                retry_of: None,
                payload: vec![0xff, 0xff],
            },
        ];
        apply_batch(
            &store,
            CUSTOMER_VIEW,
            &again,
            &mut positions,
            &metrics,
            TimeWindow::default(),
            DeadLetters {
                topics: &topics,
                publish: &mut publish,
            },
        )
        .unwrap();
        assert_eq!(views(&store), 3);
        assert_eq!(metrics.duplicates.get(), 1);
        assert_eq!(metrics.undecodable.get(), 1);
        // The poison record went to dead letters, whole, before the commit.
        assert_eq!(letters.len(), 1);
        let letter = proto::DeadLetter::decode(letters[0].payload.as_slice()).unwrap();
        assert_eq!(
            (
                letter.service.as_str(),
                letter.source_offset,
                letter.payload.as_slice()
            ),
            ("projector", 4, &[0xff, 0xff][..])
        );
        assert_eq!(letters[0].topic, topics.deadletters);
        assert_eq!(
            Positions::load(&store, CUSTOMER_VIEW)
                .unwrap()
                .offsets
                .get(&0),
            Some(&4)
        );
    }
}
