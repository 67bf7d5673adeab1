//! The three stages a worker runs a batch through (poll, fold, commit),
//! and the same fold and commit for records already in memory.

use std::time::Instant;

use rapport_common::kafka::Outgoing;

use rapport_common::Result;
use rapport_common::store::{Sealed, Store};

use super::fold::{
    Committed, Consumed, DeadLetters, Folded, Incoming, ListChanges, Projection, Rules,
    WholeWrites, fold_batch, record_commit,
};
use super::metrics::ApplyMetrics;
use crate::position::{Positions, TimeWindow};

/// A batch being committed on a thread of its own, while the next batch is
/// folded on top of it (reading `sealed`).
pub(crate) struct InFlight<'scope, 'a> {
    pub(crate) sealed: Sealed<'a>,
    /// Also lists the profiles the batch changed, once it is written: the
    /// folding thread is the busier of the two.
    pub(crate) thread: std::thread::ScopedJoinHandle<'scope, (Result<()>, Committed)>,
}

impl<'scope, 'a: 'scope> InFlight<'scope, 'a> {
    pub(crate) fn start<'env>(
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
    pub(crate) fn settle(self) -> Result<Committed> {
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
pub(crate) fn spawn_stage<'scope, T: Send + 'scope>(
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
pub(crate) struct Pipeline<'scope, 'env, 'a> {
    pub(crate) scope: &'scope std::thread::Scope<'scope, 'env>,
    pub(crate) projection: Projection<'a>,
    pub(crate) rules: Rules<'a>,
    pub(crate) metrics: &'a ApplyMetrics,
    pub(crate) whole_writes: WholeWrites,
    /// The positions batches are folded on, one batch ahead of the
    /// committed ones.
    pub(crate) folded_positions: Positions,
    pub(crate) in_flight: Option<InFlight<'scope, 'a>>,
}

impl<'scope, 'env, 'a: 'scope> Pipeline<'scope, 'env, 'a> {
    pub(crate) fn new(
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
    pub(crate) fn push(
        &mut self,
        records: &[Incoming<'_>],
        publish: &mut dyn FnMut(&[Outgoing]) -> Result<()>,
    ) -> Result<Option<Committed>> {
        let folding = Instant::now();
        let folded = fold_batch(
            self.projection,
            records,
            &self.folded_positions,
            self.in_flight.as_ref().map(|in_flight| &in_flight.sealed),
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
    pub(crate) fn settle(&mut self) -> Result<Option<Committed>> {
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
