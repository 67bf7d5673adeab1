//! The identity service: the only writer of the identifier graph.
//!
//! It reads the raw topic in a deterministic order ([`reader`]), drops events
//! whose `event_id` it has seen, resolves each event to a canonical customer
//! id with the pure rules in `rapport_projections::identity`, and produces
//! the result to the customer topic keyed by that id. Graph changes and the
//! consumed offsets are committed in one RocksDB batch, only after the broker
//! acknowledged every record they produced; after a crash the same records
//! may be produced again and consumers skip them by their source position.

pub mod admin;
pub mod compare;
pub mod erasure;
mod erasure_http;
pub mod generations;
pub mod reader;
pub mod vault;
mod vault_http;
pub mod versions;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message as _;
use rapport_common::config::{Config, TopicNames};
use rapport_common::kafka::{Outgoing, Refused, produce_all};
use rapport_common::metrics::{Counter, Gauge, Registry};
use rapport_common::status::WorkerStatus;
use rapport_common::store::{Staged, Store};
use rapport_common::{Error, Result, keys};
use rapport_projections::identity::{
    Conflict, GraphChange, GraphView, Identifier, Profile, ReadPosition, Resolution,
    identifiers_of, resolve,
};
use rapport_proto::v1::{self as proto, customer_record::Body};

use crate::generations::{ErasedView, Generations};
use crate::reader::{OrderedReader, RawRecord};

/// The column family holding the graph, seen event ids and raw offsets.
pub const FAMILY: &str = "identity.graph.v1";

/// How the service names itself in dead letters.
pub const SERVICE: &str = "identity";

/// The graph as a batch in progress sees it: committed state plus the
/// batch's own writes. Storage errors are kept and reported after resolving.
struct StagedGraph<'a, 'b> {
    staged: &'a RefCell<Staged<'b>>,
    failure: RefCell<Option<Error>>,
}

impl StagedGraph<'_, '_> {
    fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.staged.borrow().get(key) {
            Ok(value) => value,
            Err(error) => {
                self.failure.borrow_mut().get_or_insert(error);
                None
            }
        }
    }
}

impl GraphView for StagedGraph<'_, '_> {
    fn owner(&self, identifier: &Identifier) -> Option<String> {
        self.read(&keys::identifier(identifier))
            .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    fn profile(&self, id: &str) -> Option<Profile> {
        let bytes = self.read(&keys::graph_node(id))?;
        match postcard::from_bytes(&bytes) {
            Ok(profile) => Some(profile),
            Err(error) => {
                self.failure
                    .borrow_mut()
                    .get_or_insert(Error::State(error.into()));
                None
            }
        }
    }

    fn conflict_recorded(&self, identifier: &Identifier, claimant: &str) -> bool {
        self.read(&keys::conflict_seen(identifier, claimant))
            .is_some()
    }
}

fn stage_changes(staged: &mut Staged<'_>, changes: &[GraphChange]) {
    for change in changes {
        match change {
            GraphChange::PutProfile(profile) => {
                staged.put(
                    keys::graph_node(&profile.id),
                    postcard::to_stdvec(profile).expect("profiles serialise"),
                );
            }
            GraphChange::PutOwner(identifier, owner) => {
                staged.put(keys::identifier(identifier), owner.as_bytes().to_vec())
            }
            GraphChange::PutConflict(Conflict {
                identifier,
                claimant,
                ..
            }) => staged.put(keys::conflict_seen(identifier, claimant), Vec::new()),
        }
    }
}

/// The customer-topic records one resolved event yields, in the order they
/// must be produced, each with its key.
pub fn records_for(
    resolution: &Resolution,
    event: proto::Event,
    raw: &RawRecord,
) -> Vec<proto::CustomerRecord> {
    let position = |index: u32| {
        Some(proto::SourcePosition {
            raw_partition: raw.partition,
            raw_offset: raw.offset,
            index,
        })
    };
    let received_at_ms = event.received_at_ms;
    let cause_event_id = event.event_id.clone();
    let mut bodies: Vec<(String, Body)> = Vec::new();
    for absorbed in &resolution.absorbed {
        bodies.push((
            absorbed.clone(),
            Body::MergedAway(proto::ProfileMergedAway {
                into: resolution.customer_id.clone(),
                cause_event_id: cause_event_id.clone(),
            }),
        ));
    }
    if !resolution.absorbed.is_empty() {
        bodies.push((
            resolution.customer_id.clone(),
            Body::Merged(proto::CustomersMerged {
                absorbed: resolution.absorbed.clone(),
                cause_event_id: cause_event_id.clone(),
            }),
        ));
    }
    for conflict in &resolution.conflicts {
        bodies.push((
            resolution.customer_id.clone(),
            Body::Conflict(proto::IdentityConflictRecorded {
                identifier: Some(conflict.identifier.to_proto()),
                owner: conflict.owner.clone(),
                claimant: conflict.claimant.clone(),
                cause_event_id: cause_event_id.clone(),
            }),
        ));
    }
    let linked = resolution.linked.iter().map(Identifier::to_proto).collect();
    bodies.push((
        resolution.customer_id.clone(),
        Body::Event(proto::EventResolved {
            event: Some(event),
            linked,
        }),
    ));
    bodies
        .into_iter()
        .enumerate()
        .map(|(index, (customer_id, body))| proto::CustomerRecord {
            customer_id,
            source: position(index as u32),
            received_at_ms,
            body: Some(body),
        })
        .collect()
}

/// Counters the service exposes at `/metrics`.
#[derive(Clone)]
pub struct IdentityMetrics {
    pub resolved: Counter,
    pub duplicates: Counter,
    pub dead_letters: Counter,
    pub merges: Counter,
    pub conflicts: Counter,
    pub produced: Counter,
    pub batches: Counter,
    pub last_received_at_ms: Gauge,
    registry: Registry,
}

impl IdentityMetrics {
    pub fn new(registry: &Registry) -> Self {
        let outcome = |name| {
            registry.counter(
                "rapport_identity_events_total",
                "Raw events by outcome.",
                &[("outcome", name)],
            )
        };
        Self {
            resolved: outcome("resolved"),
            duplicates: outcome("duplicate"),
            dead_letters: outcome("dead_letter"),
            merges: registry.counter(
                "rapport_identity_merges_total",
                "Profiles absorbed into another.",
                &[],
            ),
            conflicts: registry.counter(
                "rapport_identity_conflicts_total",
                "Identifier clashes between known customers.",
                &[],
            ),
            produced: registry.counter(
                "rapport_identity_records_produced_total",
                "Records produced to the customer topic.",
                &[],
            ),
            batches: registry.counter("rapport_identity_batches_total", "Committed batches.", &[]),
            last_received_at_ms: registry.gauge(
                "rapport_identity_last_received_at_ms",
                "Ingest time of the last resolved event.",
                &[],
            ),
            registry: registry.clone(),
        }
    }

    /// The last committed raw offset of a partition.
    pub fn applied_offset(&self, partition: i32) -> Gauge {
        let partition = partition.to_string();
        self.registry.gauge(
            "rapport_identity_applied_offset",
            "Last committed raw-topic offset per partition.",
            &[("partition", &partition)],
        )
    }

    /// Raw records of a partition not resolved yet, by the end the
    /// consumer's fetches last reported.
    pub fn lag_records(&self, partition: i32) -> Gauge {
        let partition = partition.to_string();
        self.registry.gauge(
            "rapport_identity_lag_records",
            "Raw-topic records of each partition not resolved yet, by the partition end the consumer's fetches last reported (librdkafka statistics, once a second).",
            &[("partition", &partition)],
        )
    }

    /// Set once, when the resolver starts: the last committed raw offset of
    /// a partition found in the store.
    pub fn resumed_offset(&self, partition: i32) -> Gauge {
        let partition = partition.to_string();
        self.registry.gauge(
            "rapport_identity_resumed_offset",
            "Last committed raw-topic offset per partition found in the store when the resolver started; -1 when none was stored.",
            &[("partition", &partition)],
        )
    }
}

/// What one batch of raw records yields: customer records and dead letters.
#[derive(Debug, Default)]
pub struct BatchOutput {
    pub records: Vec<proto::CustomerRecord>,
    pub dead_letters: Vec<Outgoing>,
}

impl BatchOutput {
    /// Everything to produce, customer records keyed by customer id, and
    /// the dead letters when `with_dead_letters`.
    fn outgoing(&self, topics: &TopicNames, with_dead_letters: bool) -> Vec<Outgoing> {
        let records = self.records.iter().map(|record| Outgoing {
            topic: topics.customer.clone(),
            key: record.customer_id.as_bytes().to_vec(),
            payload: record.encode_to_vec(),
            timestamp_ms: Some(record.received_at_ms),
            headers: Vec::new(),
        });
        let letters = self
            .dead_letters
            .iter()
            .filter(|_| with_dead_letters)
            .cloned();
        records.chain(letters).collect()
    }
}

/// Resolves one batch of raw records into staged graph changes and the
/// records to produce. Nothing is committed here. A record that cannot be
/// resolved becomes a dead letter and the batch goes on. Identifiers an
/// erasure cut off are renamed into their new generation first.
fn resolve_batch<'a>(
    staged: Staged<'a>,
    batch: &[RawRecord],
    topics: &TopicNames,
    metrics: &IdentityMetrics,
    erased: &ErasedView<'_>,
) -> Result<(Staged<'a>, BatchOutput)> {
    let staged = RefCell::new(staged);
    let mut output = BatchOutput::default();
    for raw in batch {
        let refuse = |reason: String| {
            metrics.dead_letters.increment(1);
            tracing::warn!(partition = raw.partition, offset = raw.offset, %reason, "raw record sent to dead letters");
            Refused {
                service: SERVICE,
                reason,
                topic: &topics.raw,
                partition: raw.partition,
                offset: raw.offset,
                key: &raw.key,
                payload: &raw.payload,
                timestamp_ms: raw.timestamp_ms,
            }
            .into_outgoing(&topics.deadletters)
        };
        let mut event = match proto::Event::decode(raw.payload.as_slice()) {
            Ok(event) => event,
            Err(error) => {
                output.dead_letters.push(refuse(format!(
                    "the raw record does not decode as rapport.events.v1.Event: {error}"
                )));
                continue;
            }
        };
        if let Some(customer) = event.customer.as_mut() {
            erased.rename(customer, raw.partition, raw.offset);
        }
        let identifiers = identifiers_of(&event.customer.clone().unwrap_or_default());
        if event.event_id.is_empty() || identifiers.is_empty() {
            output.dead_letters.push(refuse(
                "the event has no event_id or no customer identifier".to_owned(),
            ));
            continue;
        }
        let seen_key = keys::seen_event(&event.event_id);
        if staged.borrow().get(&seen_key)?.is_some() {
            metrics.duplicates.increment(1);
            continue;
        }
        let position = ReadPosition {
            received_at_ms: raw.timestamp_ms,
            raw_partition: raw.partition,
            raw_offset: raw.offset,
        };
        let graph = StagedGraph {
            staged: &staged,
            failure: RefCell::new(None),
        };
        let resolution = resolve(&graph, &identifiers, position);
        if let Some(error) = graph.failure.into_inner() {
            return Err(error);
        }
        {
            let mut staged = staged.borrow_mut();
            staged.put(seen_key, Vec::new());
            stage_changes(&mut staged, &resolution.changes);
        }
        metrics.resolved.increment(1);
        metrics.merges.increment(resolution.absorbed.len() as u64);
        metrics
            .conflicts
            .increment(resolution.conflicts.len() as u64);
        metrics.last_received_at_ms.set(event.received_at_ms);
        output.records.extend(records_for(&resolution, event, raw));
    }
    Ok((staged.into_inner(), output))
}

/// What one resolver worker reads and writes: the live one, or a
/// re-identification into a new version (see [`versions`]).
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The column family of its graph, seen event ids and raw offsets.
    pub family: String,
    /// Raw topic in, customer topic (or its new version) out.
    pub topics: TopicNames,
    /// Per raw partition the last offset to read; `None` follows the head.
    pub bounds: Option<Vec<Option<i64>>>,
    /// Whether refused records go to the dead-letter topic. A
    /// re-identification only counts them: the live resolver sent them.
    pub dead_letters: bool,
    /// Kafka client id.
    pub client_id: String,
    /// Erased identifiers, by where their erasures cut the log.
    pub generations: Arc<Generations>,
    /// Whether erasures wait for this resolver's batches: the live one's,
    /// whose committed offsets are where they cut.
    pub cuts_erasures: bool,
}

impl Resolver {
    /// The live resolver: its graph in [`FAMILY`], following the head.
    pub fn live(config: &Config, generations: Arc<Generations>) -> Self {
        Self {
            family: FAMILY.to_owned(),
            topics: config.topics.clone(),
            bounds: None,
            dead_letters: true,
            client_id: "rapport-identity".to_owned(),
            generations,
            cuts_erasures: true,
        }
    }
}

/// Why a resolver stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `stop` was set.
    Asked,
    /// A bounded resolver resolved every record up to its bounds.
    ReachedBounds,
}

/// The last committed raw offset of each partition in `family`.
pub fn committed_offsets(store: &Store, family: &str, partitions: i32) -> Result<Vec<Option<i64>>> {
    (0..partitions)
        .map(|partition| {
            Ok(store
                .get(family, &keys::offset(partition))?
                .map(|bytes| i64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]))))
        })
        .collect()
}

/// Runs the live resolve loop until `stop` is set. Blocking: call it on its own thread.
pub fn run(
    config: &Config,
    store: &Store,
    generations: Arc<Generations>,
    stop: Arc<AtomicBool>,
    metrics: IdentityMetrics,
    status: Arc<WorkerStatus>,
) -> Result<()> {
    run_resolver(
        &Resolver::live(config, generations),
        config,
        store,
        &stop,
        &metrics,
        &status,
    )
    .map(|_| ())
}

/// Runs one resolver until `stop` is set or, when bounded, until it reached
/// its bounds. Blocking: call it on its own thread.
pub fn run_resolver(
    resolver: &Resolver,
    config: &Config,
    store: &Store,
    stop: &AtomicBool,
    metrics: &IdentityMetrics,
    status: &WorkerStatus,
) -> Result<Stopped> {
    let topics = &resolver.topics;
    let (consumer, health) =
        rapport_common::kafka::assigning_consumer(&config.kafka, &resolver.client_id, true)?;
    status.attach_consumer(health.clone());
    let partitions = rapport_common::kafka::wait_for_partitions(
        &consumer,
        &topics.raw,
        Duration::from_secs(60),
    )?;
    let applied = committed_offsets(store, &resolver.family, partitions)?;
    let stored: BTreeMap<i32, i64> = applied
        .iter()
        .enumerate()
        .filter_map(|(partition, offset)| offset.map(|offset| (partition as i32, offset)))
        .collect();
    for (partition, offset) in &stored {
        metrics.applied_offset(*partition).set(*offset);
    }
    for (partition, offset) in applied.iter().enumerate() {
        metrics
            .resumed_offset(partition as i32)
            .set(offset.unwrap_or(-1));
    }
    status.record_batch(&stored, 0);
    tracing::info!(topic = %topics.raw, family = %resolver.family, partitions, ?applied, bounds = ?resolver.bounds, "resolver starting after its stored offsets");
    let mut reader = OrderedReader::new(
        consumer,
        &topics.raw,
        partitions,
        &applied,
        Duration::from_millis(config.identity.reorder_grace_ms),
        resolver.bounds.as_deref(),
        config.kafka.broker_kind,
    )?;
    let (mut producer, _) =
        rapport_common::kafka::producer(&config.kafka, &resolver.client_id, None, 100_000)?;

    let mut next_offsets: BTreeMap<i32, i64> = (0..partitions)
        .map(|partition| {
            let applied = applied.get(partition as usize).copied().flatten();
            (partition, applied.map_or(0, |offset| offset + 1))
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        for (partition, next) in &next_offsets {
            if let Some((end, _)) = health.log_end_reported(&topics.raw, *partition) {
                metrics.lag_records(*partition).set((end - next).max(0));
            }
        }
        if resolver.bounds.is_some() && reader.finished() {
            tracing::info!(family = %resolver.family, "resolver reached its bounds");
            return Ok(Stopped::ReachedBounds);
        }
        let batch = reader.next_batch(config.identity.max_batch, Duration::from_millis(100));
        if batch.is_empty() {
            continue;
        }
        // Held until the batch is committed (see `generations`).
        let _batch_in_progress = resolver.cuts_erasures.then(|| resolver.generations.batch());
        let (mut staged, output) = resolve_batch(
            store.stage(&resolver.family),
            &batch,
            topics,
            metrics,
            &resolver.generations.view(),
        )?;
        // Nothing of this batch is committed until the broker has it all, so
        // a failed produce is retried whole with a fresh producer (an
        // idempotent producer can fail for good, e.g. when a restarted
        // broker forgot its sequence numbers); consumers skip what was
        // already delivered by its source position.
        let outgoing = output.outgoing(topics, resolver.dead_letters);
        while let Err(error) = produce_all(&producer, &outgoing) {
            tracing::warn!(%error, "producing the batch failed; retrying with a new producer");
            status.record_error(&error.to_string());
            if stop.load(Ordering::Relaxed) {
                return Err(error);
            }
            std::thread::sleep(Duration::from_secs(1));
            producer =
                rapport_common::kafka::producer(&config.kafka, &resolver.client_id, None, 100_000)?
                    .0;
        }
        let mut last_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        for raw in &batch {
            last_offsets.insert(
                raw.partition,
                raw.offset
                    .max(*last_offsets.get(&raw.partition).unwrap_or(&-1)),
            );
        }
        for (partition, offset) in &last_offsets {
            staged.put(keys::offset(*partition), offset.to_be_bytes().to_vec());
        }
        staged.commit()?;
        for (partition, offset) in &last_offsets {
            metrics.applied_offset(*partition).set(*offset);
            next_offsets.insert(*partition, offset + 1);
        }
        status.record_batch(&last_offsets, batch.len() as u64);
        metrics.produced.increment(output.records.len() as u64);
        metrics.batches.increment(1);
        tracing::debug!(
            events = batch.len(),
            records = output.records.len(),
            "identity batch committed"
        );
    }
    Ok(Stopped::Asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(offset: i64, event_id: &str, customer: proto::CustomerIdentifiers) -> RawRecord {
        let event = proto::Event {
            event_id: event_id.into(),
            r#type: "web.page_viewed".into(),
            occurred_at_ms: 1,
            received_at_ms: 10 + offset,
            customer: Some(customer),
            payload: Some(proto::event::Payload::WebPageViewed(proto::PageViewed {
                url: "/".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        RawRecord {
            partition: 0,
            offset,
            timestamp_ms: 10 + offset,
            key: b"k".to_vec(),
            payload: event.encode_to_vec(),
        }
    }

    #[test]
    fn a_batch_dedupes_resolves_and_merges_against_real_rocksdb() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[FAMILY]).unwrap();
        let metrics = IdentityMetrics::new(&Registry::default());
        let anonymous = proto::CustomerIdentifiers {
            anonymous_id: "anon-1".into(),
            ..Default::default()
        };
        let registered = proto::CustomerIdentifiers {
            customer_id: "c-1".into(),
            anonymous_id: "anon-1".into(),
            ..Default::default()
        };
        let batch = vec![
            raw(0, "e1", anonymous.clone()),
            raw(1, "e1", anonymous.clone()),
            raw(2, "e2", registered),
            RawRecord {
                payload: vec![0xff, 0x01],
                ..raw(3, "x", Default::default())
            },
        ];
        let topics = TopicNames::default();
        let generations = Generations::default();
        let (staged, output) = resolve_batch(
            store.stage(FAMILY),
            &batch,
            &topics,
            &metrics,
            &generations.view(),
        )
        .unwrap();
        let outputs = output.records;
        staged.commit().unwrap();
        assert_eq!(metrics.duplicates.get(), 1);
        assert_eq!(metrics.dead_letters.get(), 1);
        let letter = proto::DeadLetter::decode(output.dead_letters[0].payload.as_slice()).unwrap();
        assert_eq!(
            (
                letter.service.as_str(),
                letter.source_offset,
                letter.payload.as_slice()
            ),
            ("identity", 3, &[0xff, 0x01][..])
        );
        assert!(
            letter.reason.contains("does not decode"),
            "{}",
            letter.reason
        );
        let bodies: Vec<(&str, &str)> = outputs
            .iter()
            .map(|record| {
                let kind = match record.body {
                    Some(Body::Event(_)) => "event",
                    Some(Body::Merged(_)) => "merged",
                    Some(Body::MergedAway(_)) => "merged_away",
                    _ => "other",
                };
                (record.customer_id.as_str(), kind)
            })
            .collect();
        let prospect = rapport_projections::identity::prospect_id(&Identifier::new(
            rapport_projections::identity::IdentifierKind::AnonymousId,
            "anon-1",
        ));
        assert_eq!(
            bodies,
            vec![
                (prospect.as_str(), "event"),
                (prospect.as_str(), "merged_away"),
                ("c-1", "merged"),
                ("c-1", "event")
            ]
        );
        // Records of one raw event share its position and count up.
        assert_eq!(
            outputs[3].source,
            Some(proto::SourcePosition {
                raw_partition: 0,
                raw_offset: 2,
                index: 2
            })
        );
        // The committed graph remembers the event ids across batches.
        let (_, again) = resolve_batch(
            store.stage(FAMILY),
            &[raw(4, "e2", anonymous)],
            &topics,
            &metrics,
            &generations.view(),
        )
        .unwrap();
        assert!(again.records.is_empty());
    }
}
