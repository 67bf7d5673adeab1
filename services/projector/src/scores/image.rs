//! The scoreboard's image on disk, so that a restarted projector answers
//! its first scores request without scanning every profile and scoring
//! everyone again.
//!
//! When the projector stops, after its workers stopped, each board is
//! written to its version's column family: everyone's facts, and for the
//! [`KEPT_DAYS`] kept `as_of`s read most the fitted models, the RFM
//! values and everyone's labels.
//! When it starts, before any request, the image is read back in place of
//! the scan — but only if it describes exactly the stored state: it keeps
//! the version's positions (offsets and source watermarks) and the
//! analytics configuration it was made under, and is ignored unless both
//! still match. The board subscribes to the change feed before it reads
//! the positions, so every batch applied after the image is replayed onto
//! it. The image is deleted as soon as it is read or found stale: it never
//! outlives the changes (erasures among them) applied after it.
//!
//! Keys (tag `S`, see `rapport_common::keys`): part `m` index 0 holds the
//! [`Meta`]; part `f` holds everyone's facts by slot, in chunks of
//! [`CHUNK`] slots; part `s` holds each snapshot's entries in turn, by
//! slot, in chunks.
//! Values are postcard. The meta is written last, so an image cut short
//! by a crash has none and is ignored. Writes bypass RocksDB's log, like
//! every write of a projection's family, and are flushed at the end.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rapport_common::store::{Durability, PackedWrites, Store};
use rapport_common::{Error, Result, keys};
use rapport_projections::analytics::config::AnalyticsConfig;
use rapport_projections::analytics::rfm::RfmDistribution;
use rapport_projections::analytics::scoring::{CustomerFacts, PopulationModels, StoredModels};
use serde::{Deserialize, Serialize};

use super::{Board, Entry, Persons, Snapshot};
use crate::changes::Changes;
use crate::position::Positions;

/// Changes when the stored form does; an image of another format is ignored.
const FORMAT: u32 = 1;
/// The scored days an image keeps, those read most: after a restart they
/// answer at once, others are scored again when asked for. Each day costs
/// some 64 bytes a person in memory, and its share of the time to read the
/// image back.
pub const KEPT_DAYS: usize = 2;
/// People per stored chunk.
const CHUNK: usize = 20_000;
const META: u8 = b'm';
const FACTS: u8 = b'f';
const SNAPSHOT_ROWS: u8 = b's';

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    /// The analytics configuration as JSON: labels depend on it.
    config: String,
    offsets: Vec<(i32, i64)>,
    watermarks: Vec<((i32, i32), (i64, u32))>,
    /// The board's slots, and the chunks they are stored in.
    slots: u64,
    facts_chunks: u32,
    root_of: Vec<(String, String)>,
    snapshots: Vec<SnapshotMeta>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotMeta {
    as_of: i64,
    models: StoredModels,
    buyers: u64,
    changed_since_fit: u64,
    population_at_fit: u64,
    /// Its entries, by slot.
    entries: u64,
    /// Its rows are part `s`, chunks `first_chunk..first_chunk + chunks`.
    first_chunk: u32,
    chunks: u32,
}

fn encoded(value: &impl Serialize) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|error| Error::Io {
        context: "encoding the scoreboard's image".into(),
        source: std::io::Error::other(error),
    })
}

fn config_text(config: &AnalyticsConfig) -> String {
    serde_json::to_string(config).unwrap_or_default()
}

/// Writes `board` as the image of the version in `family`, in place of any
/// earlier one; the days it kept. `positions` must be where the version
/// stands, with every change up to there in `board`.
pub(super) fn write(
    store: &Store,
    family: &str,
    board: &Board,
    positions: &Positions,
    config: &AnalyticsConfig,
) -> Result<usize> {
    discard(store, family)?;
    let commit = |pieces: Vec<(Vec<u8>, Vec<u8>)>| -> Result<()> {
        let mut staged = store.stage(family);
        for (key, value) in pieces {
            staged.put(key, value);
        }
        staged.seal().commit_with(
            &PackedWrites::default(),
            &PackedWrites::default(),
            Durability::SourceLog,
        )
    };
    let mut facts_chunks = 0;
    for chunk in board.persons.slots.chunks(CHUNK) {
        let chunk: Vec<Option<(&str, &CustomerFacts)>> = chunk
            .iter()
            .map(|slot| slot.as_ref().map(|(id, facts)| (&**id, &**facts)))
            .collect();
        commit(vec![(
            keys::scoreboard_image(FACTS, facts_chunks),
            encoded(&chunk)?,
        )])?;
        facts_chunks += 1;
    }
    // The days read most (the later on a tie), in the board's order.
    let mut kept: Vec<usize> = (0..board.snapshots.len()).collect();
    kept.sort_by_key(|&index| {
        let reads = board.snapshots[index].reads.load(Ordering::Relaxed);
        std::cmp::Reverse((reads, index))
    });
    kept.truncate(KEPT_DAYS);
    kept.sort_unstable();
    let mut snapshots = Vec::new();
    let mut next_chunk = 0;
    for snapshot in kept.into_iter().map(|index| &board.snapshots[index]) {
        let first_chunk = next_chunk;
        for chunk in snapshot.entries.chunks(CHUNK) {
            commit(vec![(
                keys::scoreboard_image(SNAPSHOT_ROWS, next_chunk),
                encoded(&chunk)?,
            )])?;
            next_chunk += 1;
        }
        snapshots.push(SnapshotMeta {
            as_of: snapshot.as_of,
            models: snapshot.models.to_stored(),
            buyers: snapshot.buyers as u64,
            changed_since_fit: snapshot.changed_since_fit as u64,
            population_at_fit: snapshot.population_at_fit as u64,
            entries: snapshot.entries.len() as u64,
            first_chunk,
            chunks: next_chunk - first_chunk,
        });
    }
    let meta = Meta {
        format: FORMAT,
        config: config_text(config),
        offsets: positions.offsets.iter().map(|(p, o)| (*p, *o)).collect(),
        watermarks: positions.watermarks.iter().map(|(k, v)| (*k, *v)).collect(),
        slots: board.persons.slots.len() as u64,
        facts_chunks,
        root_of: board
            .root_of
            .iter()
            .map(|(member, root)| (member.clone(), root.clone()))
            .collect(),
        snapshots,
    };
    let days = meta.snapshots.len();
    commit(vec![(keys::scoreboard_image(META, 0), encoded(&meta)?)])?;
    store.flush(family)?;
    Ok(days)
}

/// Deletes the image of the version in `family`, if there is one.
pub(super) fn discard(store: &Store, family: &str) -> Result<()> {
    let mut staged = store.stage(family);
    store.visit_prefix(family, &[keys::SCOREBOARD_IMAGE], |key, _| {
        staged.delete(key.to_vec());
        Ok(())
    })?;
    if staged.is_empty() {
        return Ok(());
    }
    staged.seal().commit_with(
        &PackedWrites::default(),
        &PackedWrites::default(),
        Durability::SourceLog,
    )?;
    store.flush(family)
}

/// Whether the version in `family` has an image.
pub(super) fn exists(store: &Store, family: &str) -> Result<bool> {
    Ok(store
        .get(family, &keys::scoreboard_image(META, 0))?
        .is_some())
}

/// The board the image of `family` holds, if it describes the stored state
/// exactly; the image is deleted either way. Subscribes `changes` first, so
/// that what is applied from now on reaches the board.
pub(super) fn read(
    store: &Store,
    family: &str,
    changes: Option<Changes>,
    config: &AnalyticsConfig,
) -> Result<Option<Board>> {
    let Some(meta) = store.get(family, &keys::scoreboard_image(META, 0))? else {
        return Ok(None);
    };
    if let Some(changes) = &changes {
        changes.subscribe();
    }
    let positions = Positions::load(store, family)?;
    let board = match postcard::from_bytes::<Meta>(&meta) {
        Ok(meta) if meta.format != FORMAT => {
            tracing::info!(
                format = meta.format,
                "the scoreboard's image is of another format; scanning instead"
            );
            None
        }
        Ok(meta) if meta.config != config_text(config) => {
            tracing::info!(
                "the scoreboard's image was made under another analytics configuration; scanning instead"
            );
            None
        }
        Ok(meta)
            if meta
                .offsets
                .iter()
                .copied()
                .ne(positions.offsets.iter().map(|(p, o)| (*p, *o)))
                || meta
                    .watermarks
                    .iter()
                    .copied()
                    .ne(positions.watermarks.iter().map(|(k, v)| (*k, *v))) =>
        {
            tracing::info!(
                "the version moved on since the scoreboard's image was made; scanning instead"
            );
            None
        }
        Ok(meta) => match board_of(store, family, meta, changes, config) {
            Ok(board) => Some(board),
            Err(reason) => {
                tracing::warn!(%reason, "the scoreboard's image does not read; scanning instead");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "the scoreboard's image does not read; scanning instead");
            None
        }
    };
    discard(store, family)?;
    Ok(board)
}

/// Where a piece of the image is decoded to: its part of the board's
/// slots, or of one day's entries.
enum Piece<'a> {
    Facts(&'a mut [Option<(Arc<str>, Arc<CustomerFacts>)>]),
    Entries(&'a mut [Entry]),
}

/// Decodes the pieces `meta` names, on as many threads as there are cores,
/// each straight into its place: at no time is more than a chunk per
/// thread held twice.
fn board_of(
    store: &Store,
    family: &str,
    meta: Meta,
    changes: Option<Changes>,
    config: &AnalyticsConfig,
) -> std::result::Result<Board, String> {
    let mut slots: Vec<Option<(Arc<str>, Arc<CustomerFacts>)>> = vec![None; meta.slots as usize];
    let mut kept_entries: Vec<Vec<Entry>> = meta
        .snapshots
        .iter()
        .map(|kept| vec![Entry::default(); kept.entries as usize])
        .collect();
    let mut tasks: Vec<((u8, u32), Piece<'_>)> = Vec::new();
    for (index, chunk) in slots.chunks_mut(CHUNK).enumerate() {
        tasks.push(((FACTS, index as u32), Piece::Facts(chunk)));
    }
    for (kept, entries) in meta.snapshots.iter().zip(&mut kept_entries) {
        for (index, chunk) in entries.chunks_mut(CHUNK).enumerate() {
            tasks.push((
                (SNAPSHOT_ROWS, kept.first_chunk + index as u32),
                Piece::Entries(chunk),
            ));
        }
    }
    let expected = meta.facts_chunks + meta.snapshots.iter().map(|kept| kept.chunks).sum::<u32>();
    if tasks.len() != expected as usize {
        return Err("the pieces do not match the slots".into());
    }
    let decode = |(part, index): (u8, u32), piece: Piece<'_>| -> std::result::Result<(), String> {
        let bytes = store
            .get(family, &keys::scoreboard_image(part, index))
            .map_err(|error| error.to_string())?
            .ok_or_else(|| format!("piece {} {index} is missing", part as char))?;
        let malformed = |error: postcard::Error| format!("piece {} {index}: {error}", part as char);
        let short = || format!("piece {} {index} holds too few", part as char);
        match piece {
            Piece::Facts(place) => {
                let chunk: Vec<Option<(String, CustomerFacts)>> =
                    postcard::from_bytes(&bytes).map_err(malformed)?;
                if chunk.len() != place.len() {
                    return Err(short());
                }
                for (slot, person) in place.iter_mut().zip(chunk) {
                    *slot = person.map(|(id, facts)| (Arc::from(id), Arc::new(facts)));
                }
            }
            Piece::Entries(place) => {
                let chunk: Vec<Entry> = postcard::from_bytes(&bytes).map_err(malformed)?;
                if chunk.len() != place.len() {
                    return Err(short());
                }
                for (slot, entry) in place.iter_mut().zip(chunk) {
                    *slot = entry;
                }
            }
        }
        Ok(())
    };
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let tasks = Mutex::new(tasks);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let Some((name, piece)) = tasks.lock().expect("tasks lock").pop() else {
                        break;
                    };
                    if let Err(error) = decode(name, piece) {
                        failures.lock().expect("failures lock").push(error);
                    }
                }
            });
        }
    });
    if let Some(error) = failures.into_inner().expect("failures lock").pop() {
        return Err(error);
    }
    let persons = Persons {
        count: slots.iter().flatten().count(),
        slots,
    };
    // The days' distributions, a day per core at a time.
    let mut distributions: Vec<Option<RfmDistribution>> = Vec::new();
    for days in kept_entries.chunks(threads) {
        std::thread::scope(|scope| {
            let building: Vec<_> = days
                .iter()
                .map(|entries| {
                    scope.spawn(move || {
                        RfmDistribution::from_values(
                            entries.iter().filter_map(|entry| entry.rfm.get()),
                        )
                    })
                })
                .collect();
            distributions.extend(building.into_iter().map(|thread| thread.join().ok()));
        });
    }
    if distributions.iter().any(Option::is_none) {
        return Err("counting a day's RFM values failed".into());
    }
    let snapshots: std::collections::VecDeque<Snapshot> = meta
        .snapshots
        .iter()
        .zip(kept_entries)
        .zip(distributions.into_iter().flatten())
        .map(|((kept, entries), rfm)| Snapshot {
            as_of: kept.as_of,
            rfm,
            models: Arc::new(PopulationModels::from_stored(kept.models.clone(), config)),
            buyers: kept.buyers as usize,
            labelled: entries
                .iter()
                .filter(|entry| entry.labels.is_some())
                .count(),
            entries,
            changed_since_fit: kept.changed_since_fit as usize,
            population_at_fit: kept.population_at_fit as usize,
            revision: 0,
            reads: Default::default(),
            overview: Mutex::new(None),
            gathered: None,
        })
        .collect();
    let slot_of = persons
        .slots
        .iter()
        .enumerate()
        .filter_map(|(slot, person)| Some((person.as_ref()?.0.clone(), slot as u32)))
        .collect();
    Ok(Board {
        persons,
        slot_of,
        root_of: meta.root_of.into_iter().collect(),
        snapshots,
        ..Board::empty(changes)
    })
}
