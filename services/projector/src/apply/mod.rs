//! The projector framework: folds customer-topic records into a projection's
//! column family, one atomic `WriteBatch` per batch of records holding the
//! state, the last applied offset of every partition and the source
//! watermarks that let re-produced records be skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rapport_common::config::Config;
use rapport_common::kafka::{Fetching, Outgoing, produce_all};
use rapport_common::status::WorkerStatus;

use rapport_common::Result;
use rapport_common::store::Store;
use rdkafka::Offset;

use crate::changes::Changes;
use crate::position::{Bounds, Positions, StartFrom, TimeWindow};
use fold::{Committed, Incoming, ListChanges, Projection, Rules, record_commit};
use pipeline::{Pipeline, spawn_stage};
use poll::{CatchingUp, Polled, Poller};
use rapport_common::broker::OffsetGate;

mod fold;
mod metrics;
mod pipeline;
mod poll;

pub use fold::{CUSTOMER_VIEW, Consumed, DeadLetters, SERVICE};
pub use metrics::{ApplyMetrics, dead_letters};
pub use pipeline::{apply_batch, apply_from_memory};
#[cfg(test)]
mod tests;

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
    let broker = config.kafka.broker_kind;
    let mut gate = OffsetGate::default();
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
            gate.start_at(*partition, next);
        }
        starts.push((
            *partition,
            start.map_or(Offset::Beginning, |next| broker.fetch_start(next)),
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
        broker,
        gate,
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
                observe_freshness(&metrics, &committed.received_ms);
                changes.record(record_commit(&metrics, &mut positions, committed));
                status.record_batch(&positions.offsets, records);
            }
            report_lag(&metrics, &context.health, topic, &owned, &positions);
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

/// Observes how long after ingest received them a batch's records were
/// committed, while the worker is at the end of the log: a rebuild's
/// records are old by design.
fn observe_freshness(metrics: &ApplyMetrics, received_ms: &[i64]) {
    if metrics.catching_up.get() != 0 {
        return;
    }
    let now_ms = rapport_common::now_ms();
    for received in received_ms {
        metrics
            .freshness
            .observe((now_ms - received).max(0) as f64 / 1000.0);
    }
}

/// Sets each owned partition's lag: the records between the last applied
/// and the end the consumer's fetches last reported.
fn report_lag(
    metrics: &ApplyMetrics,
    health: &rapport_common::kafka::BrokerHealth,
    topic: &str,
    owned: &[i32],
    positions: &Positions,
) {
    for partition in owned {
        if let Some((end, _)) = health.log_end_reported(topic, *partition) {
            let next = positions
                .offsets
                .get(partition)
                .map_or(0, |offset| offset + 1);
            metrics.lag_records(*partition).set((end - next).max(0));
        }
    }
}
