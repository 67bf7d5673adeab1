//! RocksDB behind a small interface: open a database with named column
//! families, read, and stage writes in a [`Staged`] batch that reads its own
//! writes and commits atomically, state and offsets together. Values that
//! grow with history can instead be appended to ([`Sealed::commit_appending`]);
//! RocksDB combines the deltas (see [`crate::merge`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamilyDescriptor, DBWithThreadMode, Direction, IteratorMode, MultiThreaded, Options,
    WriteBatch,
};

/// Column families can be created and dropped while the database is shared
/// (projection versions come and go at run time).
type DB = DBWithThreadMode<MultiThreaded>;

use crate::{Error, Result};

/// One key and its value, as RocksDB hands them out.
pub type Entry = (Box<[u8]>, Box<[u8]>);

/// A RocksDB database shared by a service's threads.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    tuning: Tuning,
}

/// How every column family of a store is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    pub merging: Merging,
    /// Bytes a column family's memtable holds before RocksDB flushes it to
    /// a file; `None` keeps RocksDB's default (64 MiB). Where commits skip
    /// the write-ahead log ([`Durability::SourceLog`]), this is also how
    /// much folding a crash can undo: a small value makes crash tests
    /// recover from a state flushed part-way.
    pub memtable_bytes: Option<usize>,
}

impl From<Merging> for Tuning {
    fn from(merging: Merging) -> Self {
        Self {
            merging,
            memtable_bytes: None,
        }
    }
}

/// When RocksDB merges the files its flushes write into the data below.
/// Until then a read searches each of those files, so the choice is between
/// reads and rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merging {
    /// RocksDB's default, after 4 flushed files: for a store that is read
    /// on every write, such as identity's graph, where a lookup of a new
    /// identifier searches every file.
    Early,
    /// After 16 flushed files: for projections, which a fold appends to
    /// without reading. Each merge rewrites the data already merged, so a
    /// rebuild that waits for 16 files rewrites it a quarter as often; with
    /// deltas left unfolded by flushes (see [`family_options`]), RocksDB's
    /// compaction took half the CPU per record it did, and a rebuild's
    /// CPU per record, compaction included, fell by about 30 %. A query
    /// searches up to 16 more files for a profile.
    Late,
}

impl Store {
    /// Opens (or creates) the database at `path`, creating any missing column
    /// family in `families` and keeping those that already exist; merging
    /// [`Merging::Early`].
    pub fn open(path: &Path, families: &[&str]) -> Result<Self> {
        Self::open_tuned(path, families, Merging::Early.into())
    }

    /// [`Store::open`], with `tuning` for every column family, those
    /// [created](Store::create_family) later included.
    pub fn open_tuned(path: &Path, families: &[&str], tuning: Tuning) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|source| Error::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Compactions run at the lowest CPU priority (nice 19): they can
        // wait, while the fold, the commit and flushes (which RocksDB runs
        // on a pool of its own) are what keeps a projection current. A
        // rebuild then takes the cores first and leaves compaction the
        // slack, and on a machine shared with the broker, so does the
        // broker. Compaction cannot fall behind without limit: with too
        // many unmerged files RocksDB slows writes down itself, which
        // frees the cores for it. The environment is RocksDB's default,
        // shared by every store of the process.
        let mut env = rocksdb::Env::new().map_err(|source| Error::Storage {
            context: "creating RocksDB's environment".into(),
            source,
        })?;
        env.lower_thread_pool_cpu_priority();
        options.set_env(&env);
        let mut names: Vec<String> = DB::list_cf(&options, path).unwrap_or_default();
        for family in families {
            if !names.iter().any(|name| name == family) {
                names.push((*family).to_owned());
            }
        }
        let descriptors = names
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, family_options(tuning)));
        let db = DB::open_cf_descriptors(&options, path, descriptors).map_err(|source| {
            Error::Storage {
                context: format!("opening {}", path.display()),
                source,
            }
        })?;
        Ok(Self {
            db: Arc::new(db),
            tuning,
        })
    }

    fn family(&self, family: &str) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.db
            .cf_handle(family)
            .ok_or_else(|| Error::MissingColumnFamily(family.to_owned()))
    }

    pub fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(&self.family(family)?, key)
            .map_err(|source| Error::Storage {
                context: format!("reading {family}"),
                source,
            })
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        family: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let handle = self.family(family)?;
        let iterator = self
            .db
            .iterator_cf(&handle, IteratorMode::From(prefix, Direction::Forward));
        let mut entries = Vec::new();
        for item in iterator {
            let (key, value) = item.map_err(|source| Error::Storage {
                context: format!("scanning {family}"),
                source,
            })?;
            if !key.starts_with(prefix) || entries.len() >= limit {
                break;
            }
            entries.push((key.to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    /// Hands every entry whose key starts with `prefix` to `visit`, in key
    /// order, without collecting them: for scans too big to hold at once.
    pub fn visit_prefix(
        &self,
        family: &str,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let handle = self.family(family)?;
        let iterator = self
            .db
            .iterator_cf(&handle, IteratorMode::From(prefix, Direction::Forward));
        for item in iterator {
            let (key, value) = item.map_err(|source| Error::Storage {
                context: format!("scanning {family}"),
                source,
            })?;
            if !key.starts_with(prefix) {
                break;
            }
            visit(&key, &value)?;
        }
        Ok(())
    }

    /// Entries under `prefix` with keys strictly below `before` (or all when
    /// `None`), newest-key first.
    pub fn scan_prefix_reverse(
        &self,
        family: &str,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        // The first key after every key with this prefix.
        let mut upper = prefix.to_vec();
        while let Some(last) = upper.pop() {
            if last < u8::MAX {
                upper.push(last + 1);
                break;
            }
        }
        let start = match before {
            Some(before) => before.to_vec(),
            None => upper.clone(),
        };
        let mode = if start.is_empty() {
            IteratorMode::End
        } else {
            IteratorMode::From(&start, Direction::Reverse)
        };
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(&self.family(family)?, mode) {
            let (key, value) = item.map_err(|source| Error::Storage {
                context: format!("scanning {family}"),
                source,
            })?;
            // Reverse seek lands on the last key <= start; skip start itself.
            if key.as_ref() >= start.as_slice() && !start.is_empty() {
                continue;
            }
            if !key.starts_with(prefix) || entries.len() >= limit {
                break;
            }
            entries.push((key.to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    /// Opens an existing database (such as a [`Store::checkpoint`]) for
    /// reading only, with every column family it has.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let options = Options::default();
        let names = DB::list_cf(&options, path).map_err(|source| Error::Storage {
            context: format!("listing the column families of {}", path.display()),
            source,
        })?;
        let descriptors = names
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, family_options(Merging::Early.into())));
        let db = DB::open_cf_descriptors_read_only(&options, path, descriptors, false).map_err(
            |source| Error::Storage {
                context: format!("opening {} read-only", path.display()),
                source,
            },
        )?;
        Ok(Self {
            db: Arc::new(db),
            tuning: Merging::Early.into(),
        })
    }

    /// Writes a consistent copy of the whole database, as it stands now, to
    /// the new directory `path`. SST files are hard links, so it is cheap on
    /// the same file system; later writes do not change it.
    pub fn checkpoint(&self, path: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(path))
            .map_err(|source| Error::Storage {
                context: format!("writing a checkpoint to {}", path.display()),
                source,
            })
    }

    /// Every entry of `family` with a key at or after `from`, in key order,
    /// read lazily (for comparing large families without holding them).
    pub fn entries_from<'a>(
        &'a self,
        family: &str,
        from: &[u8],
    ) -> Result<impl Iterator<Item = Result<Entry>> + 'a> {
        let handle = self.family(family)?;
        let context = format!("reading {family}");
        Ok(self
            .db
            .iterator_cf(&handle, IteratorMode::From(from, Direction::Forward))
            .map(move |item| {
                item.map_err(|source| Error::Storage {
                    context: context.clone(),
                    source,
                })
            }))
    }

    /// Leaves no bytes of `family`'s deleted values on disk: RocksDB keeps
    /// a deleted value in its memtable, its write-ahead log and its files
    /// until a flush and a compaction drop it, so this flushes (which
    /// retires the log that held it) and rewrites every file of the family.
    pub fn purge(&self, family: &str) -> Result<()> {
        self.flush(family)?;
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        options.set_exclusive_manual_compaction(true);
        self.db.compact_range_cf_opt(
            &self.family(family)?,
            None::<&[u8]>,
            None::<&[u8]>,
            &options,
        );
        Ok(())
    }

    /// Writes `family`'s memtable to disk and waits until it is there: what
    /// was committed with [`Durability::SourceLog`] then survives a crash.
    pub fn flush(&self, family: &str) -> Result<()> {
        self.db
            .flush_cf(&self.family(family)?)
            .map_err(|source| Error::Storage {
                context: format!("flushing {family}"),
                source,
            })
    }

    /// Whether the column family exists.
    pub fn has_family(&self, family: &str) -> bool {
        self.db.cf_handle(family).is_some()
    }

    /// Starts a batch of writes to `family`.
    pub fn stage<'a>(&'a self, family: &'a str) -> Staged<'a> {
        Staged {
            store: self,
            family,
            writes: BTreeMap::new(),
            unread: PackedWrites::default(),
            behind: None,
        }
    }

    /// Starts a batch of writes to `family` that follows `earlier`, a sealed
    /// batch that may still be committing on another thread: reads see
    /// `earlier`'s writes as if it had committed. `earlier` must commit
    /// before this batch does.
    pub fn stage_after<'a>(&'a self, family: &'a str, earlier: &Sealed<'a>) -> Staged<'a> {
        debug_assert_eq!(
            family, earlier.family,
            "a batch follows one of its own family"
        );
        Staged {
            behind: Some(earlier.writes.clone()),
            ..self.stage(family)
        }
    }

    /// Creates a column family if it does not exist yet.
    pub fn create_family(&self, family: &str) -> Result<()> {
        if self.db.cf_handle(family).is_some() {
            return Ok(());
        }
        self.db
            .create_cf(family, &family_options(self.tuning))
            .map_err(|source| Error::Storage {
                context: format!("creating {family}"),
                source,
            })
    }

    /// Drops a column family and everything in it.
    pub fn drop_family(&self, family: &str) -> Result<()> {
        self.db.drop_cf(family).map_err(|source| Error::Storage {
            context: format!("dropping {family}"),
            source,
        })
    }

    /// Reads, from one consistent snapshot of the database, every entry of
    /// each family whose key starts with one of `prefixes`, and hands them to
    /// `visit` family by family in key order. Used to compare versions at
    /// the same instant.
    pub fn visit_snapshot(
        &self,
        families: &[&str],
        prefixes: &[u8],
        mut visit: impl FnMut(usize, &[u8], &[u8]),
    ) -> Result<()> {
        let snapshot = self.db.snapshot();
        for (index, family) in families.iter().enumerate() {
            let handle = self.family(family)?;
            for item in snapshot.iterator_cf(&handle, IteratorMode::Start) {
                let (key, value) = item.map_err(|source| Error::Storage {
                    context: format!("reading {family}"),
                    source,
                })?;
                if key.first().is_some_and(|tag| prefixes.contains(tag)) {
                    visit(index, &key, &value);
                }
            }
        }
        Ok(())
    }

    /// RocksDB's estimate of the bytes a column family's compactions still
    /// have to rewrite to bring its levels into shape: work deferred, not
    /// lost (see [`Store::open`] on compaction priority).
    pub fn pending_compaction_bytes(&self, family: &str) -> u64 {
        self.int_property(family, "rocksdb.estimate-pending-compaction-bytes")
    }

    /// Approximate bytes on disk of a column family.
    pub fn size_on_disk(&self, family: &str) -> u64 {
        self.int_property(family, "rocksdb.total-sst-files-size")
    }

    /// An integer property of a column family; 0 when there is none.
    fn int_property(&self, family: &str, name: &str) -> u64 {
        self.family(family)
            .ok()
            .and_then(|handle| self.db.property_int_value_cf(&handle, name).ok().flatten())
            .unwrap_or(0)
    }
}

/// The options of every column family: the defaults, `tuning`, and the
/// operator that combines appended deltas (registered everywhere, so that
/// any store this crate opens reads them).
fn family_options(tuning: Tuning) -> Options {
    // A batch's keys arrive sorted, each kind (the first byte, see
    // `keys`) in a run of its own: remembering where the last key of each
    // kind went into the memtable makes the next insert a short walk
    // instead of a search from the top of the skip list. Inserting was the
    // commit's main cost in a rebuild; this option halves it. The option
    // has no setter of its own in the C API, hence the string.
    let mut options = Options::default()
        .get_options_from_string("memtable_insert_with_hint_prefix_extractor=fixed:1")
        .expect("RocksDB knows the memtable insert hint option");
    // Deltas are combined when RocksDB reads or compacts a profile, not
    // when it flushes one: a flush that combined a profile's deltas decoded
    // each record and encoded a state, which the compaction then decoded
    // again. Declining those partial merges halved the CPU flushes take
    // in a rebuild; the compaction, which folds every delta into the value
    // below it, does the work once.
    options.set_merge_operator(
        crate::merge::NAME,
        crate::merge::combine,
        crate::merge::decline_partial,
    );
    if let Some(bytes) = tuning.memtable_bytes {
        options.set_write_buffer_size(bytes);
    }
    if tuning.merging == Merging::Late {
        options.set_level_zero_file_num_compaction_trigger(16);
        // RocksDB slows writes down (and then stops them) when this many
        // files wait, so that compaction catches up; above the trigger by
        // as much as RocksDB's defaults are (20 and 36 against 4).
        options.set_level_zero_slowdown_writes_trigger(32);
        options.set_level_zero_stop_writes_trigger(48);
    }
    options
}

/// Writes staged for one column family, visible to reads through this batch
/// and written to disk in one atomic `WriteBatch` by [`Staged::commit`].
pub struct Staged<'a> {
    store: &'a Store,
    family: &'a str,
    writes: Writes,
    /// Writes nobody reads back before they commit (see [`Staged::put_unread`]).
    unread: PackedWrites,
    /// The writes of the sealed batch this one follows, if it may not have
    /// committed yet.
    behind: Option<Arc<Writes>>,
}

type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Key-value pairs back to back in one buffer, for writes a batch never
/// reads back: a tree insert and two allocations for each record's timeline
/// entry showed in profiles of a rebuild.
#[derive(Debug, Default)]
pub struct PackedWrites {
    bytes: Vec<u8>,
    /// Per pair: where its key starts, where its value starts and ends.
    bounds: Vec<(usize, usize, usize)>,
    /// Whether `bounds` is in key order (see [`PackedWrites::sort`]).
    in_order: bool,
}

impl PackedWrites {
    pub fn with_capacity(pairs: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            bounds: Vec::with_capacity(pairs),
            in_order: false,
        }
    }

    /// Adds a pair whose key and value the two functions append to the buffer.
    pub fn push(&mut self, key: impl FnOnce(&mut Vec<u8>), value: impl FnOnce(&mut Vec<u8>)) {
        let key_start = self.bytes.len();
        key(&mut self.bytes);
        let value_start = self.bytes.len();
        value(&mut self.bytes);
        self.bounds.push((key_start, value_start, self.bytes.len()));
        self.in_order = false;
    }

    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// Puts the pairs in key order now, so that [`PackedWrites::sorted`]
    /// need not: on the thread that has time for it, rather than the one
    /// that writes to RocksDB. Pairs of one key keep the order they were
    /// pushed in.
    pub fn sort(&mut self) {
        Self::by_key(&self.bytes, &mut self.bounds);
        self.in_order = true;
    }

    /// Stable, so that pairs of one key keep the order they were pushed in.
    fn by_key(bytes: &[u8], bounds: &mut [(usize, usize, usize)]) {
        bounds.sort_by(|left, right| bytes[left.0..left.1].cmp(&bytes[right.0..right.1]));
    }

    /// The pairs in key order (RocksDB inserts them fastest so); pairs of
    /// one key stay in the order they were pushed, so the last one wins.
    pub fn sorted(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let order: std::borrow::Cow<'_, [(usize, usize, usize)]> = if self.in_order {
            std::borrow::Cow::Borrowed(&self.bounds)
        } else {
            let mut order = self.bounds.clone();
            Self::by_key(&self.bytes, &mut order);
            std::borrow::Cow::Owned(order)
        };
        (0..order.len()).map(move |index| {
            let (key_start, value_start, end) = order[index];
            (
                &self.bytes[key_start..value_start],
                &self.bytes[value_start..end],
            )
        })
    }

    /// Moves the pairs of every key that `take` picks into a new
    /// `PackedWrites`, both left in key order. `take` sees each key once,
    /// with how many pairs it has; pairs of one key keep their order.
    pub fn split_off_keys(&mut self, mut take: impl FnMut(&[u8], usize) -> bool) -> PackedWrites {
        if !self.in_order {
            self.sort();
        }
        let bytes = &self.bytes;
        let same_key = |left: &(usize, usize, usize), right: &(usize, usize, usize)| {
            bytes[left.0..left.1] == bytes[right.0..right.1]
        };
        let mut taken = PackedWrites::default();
        let mut kept = Vec::new();
        let mut seen = 0;
        for run in self.bounds.chunk_by(same_key) {
            let (key_start, value_start, _) = run[0];
            if take(&bytes[key_start..value_start], run.len()) {
                // Most batches take nothing: the kept pairs are copied only
                // once something is taken.
                if kept.capacity() == 0 {
                    kept.reserve(self.bounds.len());
                    kept.extend_from_slice(&self.bounds[..seen]);
                }
                for &(key_start, value_start, end) in run {
                    taken.push(
                        |key| key.extend_from_slice(&bytes[key_start..value_start]),
                        |value| value.extend_from_slice(&bytes[value_start..end]),
                    );
                }
            } else if kept.capacity() > 0 {
                kept.extend_from_slice(run);
            }
            seen += run.len();
        }
        if kept.capacity() > 0 {
            self.bounds = kept;
        }
        taken.in_order = true;
        taken
    }

    /// About what the pairs take in a `WriteBatch`.
    fn batch_bytes(&self) -> usize {
        self.bytes.len() + 16 * self.bounds.len()
    }
}

impl<Key: AsRef<[u8]>, Value: AsRef<[u8]>> FromIterator<(Key, Value)> for PackedWrites {
    fn from_iter<Pairs: IntoIterator<Item = (Key, Value)>>(pairs: Pairs) -> Self {
        let mut packed = PackedWrites::default();
        for (key, value) in pairs {
            packed.push(
                |bytes| bytes.extend_from_slice(key.as_ref()),
                |bytes| bytes.extend_from_slice(value.as_ref()),
            );
        }
        packed
    }
}

impl<'a> Staged<'a> {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let earlier = || self.behind.as_ref().and_then(|writes| writes.get(key));
        match self.writes.get(key).or_else(earlier) {
            Some(staged) => Ok(staged.clone()),
            None => self.store.get(self.family, key),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Stages a write that neither this batch nor one staged after it reads
    /// before it commits ([`Staged::get`] does not see it), to a key no
    /// other kind of write of the batch touches; such writes land first, in
    /// key order. The functions append the key and the value to a buffer.
    pub fn put_unread(&mut self, key: impl FnOnce(&mut Vec<u8>), value: impl FnOnce(&mut Vec<u8>)) {
        self.unread.push(key, value);
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.unread.is_empty()
    }

    /// Writes everything staged atomically (and durably, via the WAL).
    pub fn commit(self) -> Result<()> {
        self.seal().commit()
    }

    /// Freezes the batch so that it can be committed on another thread
    /// while the next batch is staged after it ([`Store::stage_after`]).
    pub fn seal(mut self) -> Sealed<'a> {
        self.unread.sort();
        Sealed {
            store: self.store,
            family: self.family,
            writes: Arc::new(self.writes),
            unread: Arc::new(self.unread),
        }
    }
}

/// How a commit survives a crash of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Through RocksDB's write-ahead log: on disk once the commit returns.
    WriteAheadLog,
    /// Only through the log the writes were folded from. RocksDB keeps them
    /// in its memtable until it flushes (when the memtable is full, on
    /// [`Store::flush`], and when the database closes); a crash loses what
    /// was not flushed, together with the positions committed beside it,
    /// so the folding resumes from the last flushed positions and redoes
    /// the rest. Only for a column family that every write reaches this
    /// way: recovery would replay a logged write on top of the state as of
    /// the last flush, without the unlogged writes that came before it.
    SourceLog,
}

/// A staged batch that takes no more writes: it can be committed (once) on
/// one thread while later batches read through it on another.
#[derive(Clone)]
pub struct Sealed<'a> {
    store: &'a Store,
    family: &'a str,
    writes: Arc<Writes>,
    unread: Arc<PackedWrites>,
}

impl Sealed<'_> {
    /// Writes the batch atomically (and durably, via the WAL).
    pub fn commit(&self) -> Result<()> {
        self.commit_with(
            &PackedWrites::default(),
            &PackedWrites::default(),
            Durability::WriteAheadLog,
        )
    }

    /// Writes the batch and appends each of `deltas` to the value of its
    /// key (a RocksDB merge, combined as [`crate::merge`] says), atomically,
    /// in one `WriteBatch`; a delta lands after a staged write of its key.
    pub fn commit_appending(&self, deltas: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.commit_with(
            &PackedWrites::default(),
            &deltas.iter().map(|(key, delta)| (key, delta)).collect(),
            Durability::WriteAheadLog,
        )
    }

    /// Writes the batch, then `puts`, then appends `deltas`, atomically, in
    /// one `WriteBatch`, as durable as `durability` says. Nothing reads
    /// `puts` or `deltas` before they are committed, neither this batch nor
    /// a batch staged after it: use them only for keys that the staging
    /// does not read, and for values that are cheaper to produce on the
    /// committing thread.
    pub fn commit_with(
        &self,
        puts: &PackedWrites,
        deltas: &PackedWrites,
        durability: Durability,
    ) -> Result<()> {
        let handle = self.store.family(self.family)?;
        // Sized up front: growing a batch of many megabytes copies it again and again.
        let bytes = self
            .writes
            .iter()
            .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len) + 16)
            .sum::<usize>()
            + [&*self.unread, puts, deltas]
                .iter()
                .map(|packed| packed.batch_bytes())
                .sum::<usize>();
        let mut batch = WriteBatch::with_capacity_bytes(bytes);
        for (key, value) in self.unread.sorted() {
            batch.put_cf(&handle, key, value);
        }
        for (key, value) in self.writes.iter() {
            match value {
                Some(value) => batch.put_cf(&handle, key, value),
                None => batch.delete_cf(&handle, key),
            }
        }
        for (key, value) in puts.sorted() {
            batch.put_cf(&handle, key, value);
        }
        for (key, delta) in deltas.sorted() {
            batch.merge_cf(&handle, key, delta);
        }
        let mut options = rocksdb::WriteOptions::default();
        options.disable_wal(durability == Durability::SourceLog);
        self.store
            .db
            .write_opt(batch, &options)
            .map_err(|source| Error::Storage {
                context: format!("writing {}", self.family),
                source,
            })
    }
}

#[cfg(test)]
impl Store {
    /// Moves everything of `family` from the memtable into one sorted run,
    /// so that tests see deltas combined by flushes and compactions too.
    fn flush_and_compact(&self, family: &str) {
        let handle = self.family(family).unwrap();
        self.db.flush_cf(&handle).unwrap();
        let mut options = rocksdb::CompactOptions::default();
        // Rewrite the bottom level too, folding the deltas found there.
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(&handle, None::<&[u8]>, None::<&[u8]>, &options);
    }

    /// Moves what `family` holds in its memtable into a file of its own.
    fn flush_only(&self, family: &str) {
        self.db.flush_cf(&self.family(family).unwrap()).unwrap();
    }

    /// The merge operands in `family`'s files, as RocksDB counts them.
    fn merge_operands_on_disk(&self, family: &str) -> u64 {
        let handle = self.family(family).unwrap();
        let properties = self
            .db
            .property_value_cf(&handle, "rocksdb.aggregated-table-properties")
            .unwrap()
            .unwrap_or_default();
        properties
            .split("; ")
            .find_map(|pair| pair.strip_prefix("# merge operands="))
            .map_or(0, |count| count.trim().parse().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use rapport_projections::customer_view::ProfileState;
    use rapport_proto::v1 as proto;

    /// A page view or an order of customer c-1, as the customer topic carries it.
    fn record(index: i64) -> proto::CustomerRecord {
        use proto::event::Payload;
        let payload = if index % 3 == 0 {
            Payload::OrderPlaced(proto::OrderPlaced {
                order_id: format!("o-{index}"),
                total_minor: 100 * index,
                currency: "USD".into(),
                items: vec![],
            })
        } else {
            Payload::WebPageViewed(proto::PageViewed {
                url: format!("/{index}"),
                ..Default::default()
            })
        };
        proto::CustomerRecord {
            customer_id: "c-1".into(),
            source: Some(proto::SourcePosition::default()),
            received_at_ms: index,
            body: Some(proto::customer_record::Body::Event(proto::EventResolved {
                event: Some(proto::Event {
                    event_id: format!("e-{index}"),
                    r#type: if index % 3 == 0 {
                        "order.placed"
                    } else {
                        "web.page_viewed"
                    }
                    .into(),
                    occurred_at_ms: 1_000 * index,
                    channel: "web".into(),
                    payload: Some(payload),
                    ..Default::default()
                }),
                linked: vec![],
            })),
        }
    }

    /// How a delta carries its record.
    #[derive(Clone, Copy)]
    enum Delta {
        /// The record's own bytes, as the projector appends them.
        Record,
        /// The record folded into an empty state, as releases before format
        /// 3 appended them (and as combining deltas still leaves them).
        State,
    }

    /// Appends the records `range` to c-1's profile, one delta per record,
    /// in one batch, and folds them into `folded` the plain way too.
    fn append_records(
        store: &Store,
        range: std::ops::Range<i64>,
        kind: Delta,
        folded: &mut ProfileState,
    ) {
        use prost::Message as _;
        let deltas: Vec<(Vec<u8>, Vec<u8>)> = range
            .map(|index| {
                folded.apply(&record(index));
                let delta = match kind {
                    Delta::Record => {
                        let mut delta = Vec::new();
                        crate::merge::push_record_delta(&mut delta, &record(index).encode_to_vec());
                        delta
                    }
                    Delta::State => {
                        let mut delta = ProfileState::default();
                        delta.apply(&record(index));
                        delta.encode()
                    }
                };
                (keys::profile("c-1"), delta)
            })
            .collect();
        store
            .stage("view")
            .seal()
            .commit_appending(&deltas)
            .unwrap();
    }

    fn stored_profile(store: &Store) -> Vec<u8> {
        store.get("view", &keys::profile("c-1")).unwrap().unwrap()
    }

    #[test]
    fn appended_deltas_read_back_as_the_folded_profile_before_and_after_compaction() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("db");
        let mut folded = ProfileState::default();
        {
            let store = Store::open(&path, &["view"]).unwrap();
            append_records(&store, 0..5, Delta::Record, &mut folded);
            assert_eq!(stored_profile(&store), folded.encode(), "from the memtable");
            store.flush_and_compact("view");
            append_records(&store, 5..7, Delta::State, &mut folded);
            append_records(&store, 7..9, Delta::Record, &mut folded);
            assert_eq!(
                stored_profile(&store),
                folded.encode(),
                "deltas on a compacted value"
            );
            let scanned = store.scan_prefix("view", &[keys::PROFILE], 10).unwrap();
            assert_eq!(scanned, vec![(keys::profile("c-1"), folded.encode())]);
            store.checkpoint(&directory.path().join("copy")).unwrap();
        }
        // Reopened: the WAL is replayed and flushed, deltas and all.
        let store = Store::open(&path, &["view"]).unwrap();
        assert_eq!(stored_profile(&store), folded.encode());
        append_records(&store, 9..12, Delta::Record, &mut folded);
        store.flush_and_compact("view");
        assert_eq!(stored_profile(&store), folded.encode());
        assert_eq!(folded.event_counts["order.placed"], 4);
        let frozen = Store::open_read_only(&directory.path().join("copy")).unwrap();
        let mut at_checkpoint = ProfileState::default();
        (0..9).for_each(|index| {
            at_checkpoint.apply(&record(index));
        });
        assert_eq!(
            frozen.get("view", &keys::profile("c-1")).unwrap(),
            Some(at_checkpoint.encode())
        );
    }

    #[test]
    fn flushes_leave_deltas_for_reads_and_compactions_to_fold() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &["view"]).unwrap();
        let mut folded = ProfileState::default();
        append_records(&store, 0..4, Delta::Record, &mut folded);
        store.flush_only("view");
        assert_eq!(
            store.merge_operands_on_disk("view"),
            4,
            "one operand per delta, not one combined"
        );
        assert_eq!(
            stored_profile(&store),
            folded.encode(),
            "read from the file"
        );
        // A second file, so that the compaction merges rather than moves.
        append_records(&store, 4..6, Delta::Record, &mut folded);
        store.flush_and_compact("view");
        assert_eq!(
            store.merge_operands_on_disk("view"),
            0,
            "folded by compaction"
        );
        assert_eq!(stored_profile(&store), folded.encode(), "compacted");
    }

    /// A column family's option as RocksDB wrote it to the newest OPTIONS
    /// file of the database at `directory`.
    fn stored_option(directory: &Path, family: &str, option: &str) -> String {
        let newest = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|file| {
                file.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("OPTIONS-")
            })
            .max()
            .unwrap();
        let options = std::fs::read_to_string(newest).unwrap();
        let section = options
            .split("[CFOptions \"")
            .find(|section| section.starts_with(&format!("{family}\"")))
            .unwrap();
        let prefix = format!("{option}=");
        section
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_store_merging_late_gives_every_family_the_later_trigger() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path();
        let store = Store::open_tuned(path, &["opened"], Merging::Late.into()).unwrap();
        // Created after opening, as projection versions are.
        store.create_family("created").unwrap();
        drop(store);
        Store::open(&path.join("early"), &["view"]).unwrap();
        let trigger = "level0_file_num_compaction_trigger";
        assert_eq!(stored_option(path, "opened", trigger), "16");
        assert_eq!(stored_option(path, "created", trigger), "16");
        assert_eq!(stored_option(&path.join("early"), "view", trigger), "4");
    }

    #[test]
    fn a_memtable_size_reaches_every_family_and_makes_flushes() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path();
        let tuning = Tuning {
            merging: Merging::Late,
            memtable_bytes: Some(64 << 10),
        };
        let store = Store::open_tuned(path, &["opened"], tuning).unwrap();
        store.create_family("created").unwrap();
        // 512 KiB of writes that skip the write-ahead log, as a
        // projection's: fewer flushes than the 16 files a compaction waits for.
        let value = vec![7u8; 1000];
        for batch in 0..16 {
            let mut staged = store.stage("created");
            for index in 0..32 {
                staged.put(format!("k{batch:03}{index:03}").into_bytes(), value.clone());
            }
            staged
                .seal()
                .commit_with(
                    &PackedWrites::default(),
                    &PackedWrites::default(),
                    Durability::SourceLog,
                )
                .unwrap();
        }
        // Flushes run in the background: wait until none is pending.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while store.int_property("created", "rocksdb.num-immutable-mem-table") > 0
            || store.int_property("created", "rocksdb.mem-table-flush-pending") > 0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "flushes never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let files = store.int_property("created", "rocksdb.num-files-at-level0");
        assert!(
            files >= 4,
            "a 64 KiB memtable flushed {files} times for 512 KiB"
        );
        drop(store);
        let bytes = "write_buffer_size";
        assert_eq!(stored_option(path, "opened", bytes), "65536");
        assert_eq!(stored_option(path, "created", bytes), "65536");
    }

    #[test]
    fn profiles_written_whole_by_older_releases_take_deltas() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &["view"]).unwrap();
        let mut earlier = ProfileState::default();
        (0..4).for_each(|index| {
            earlier.apply(&record(index));
        });
        // Format 2, as releases that rewrote whole profiles stored them, and
        // format 1 (the same state without the facts format 2 added).
        let format_two = earlier.encode();
        let mut format_one = vec![1];
        format_one.extend(postcard::to_stdvec(&earlier).unwrap());
        for (name, stored) in [("format 2", format_two), ("format 1", format_one)] {
            let mut staged = store.stage("view");
            staged.put(keys::profile("c-1"), stored.clone());
            staged.commit().unwrap();
            let mut folded = ProfileState::decode(&stored).unwrap();
            append_records(&store, 4..7, Delta::Record, &mut folded);
            assert_eq!(stored_profile(&store), folded.encode(), "{name}");
            store.flush_and_compact("view");
            assert_eq!(stored_profile(&store), folded.encode(), "{name}, compacted");
        }
    }

    #[test]
    fn a_delta_to_a_key_that_does_not_combine_fails_its_reads() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &["view"]).unwrap();
        let sealed = store.stage("view").seal();
        sealed
            .commit_appending(&[(keys::offset(0), vec![1])])
            .unwrap();
        assert!(store.get("view", &keys::offset(0)).is_err());
    }

    #[test]
    fn a_record_delta_that_does_not_decode_fails_its_reads() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &["view"]).unwrap();
        let mut garbled = Vec::new();
        crate::merge::push_record_delta(&mut garbled, &[0xff]);
        let sealed = store.stage("view").seal();
        sealed
            .commit_appending(&[(keys::profile("c-1"), garbled)])
            .unwrap();
        assert!(store.get("view", &keys::profile("c-1")).is_err());
    }

    #[test]
    fn split_off_keys_moves_every_pair_of_the_picked_keys_in_order() {
        let mut packed: PackedWrites = [("b", "1"), ("a", "1"), ("b", "2"), ("c", "1"), ("a", "2")]
            .into_iter()
            .collect();
        let mut seen = Vec::new();
        let taken = packed.split_off_keys(|key, pairs| {
            seen.push((key.to_vec(), pairs));
            key != b"a"
        });
        let pairs = |packed: &PackedWrites| -> Vec<(Vec<u8>, Vec<u8>)> {
            packed
                .sorted()
                .map(|(key, value)| (key.to_vec(), value.to_vec()))
                .collect()
        };
        let owned = |pairs: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
            pairs
                .iter()
                .map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(
            seen,
            [(b"a".to_vec(), 2), (b"b".to_vec(), 2), (b"c".to_vec(), 1)]
        );
        assert_eq!(pairs(&packed), owned(&[("a", "1"), ("a", "2")]));
        assert_eq!(pairs(&taken), owned(&[("b", "1"), ("b", "2"), ("c", "1")]));
        // Nothing picked: everything stays.
        let none = packed.split_off_keys(|_, _| false);
        assert!(none.is_empty());
        assert_eq!(packed.len(), 2);
    }

    /// Commits `key` to `family`, as durable as `durability` says.
    fn commit_one(store: &Store, family: &str, key: &[u8], durability: Durability) {
        let mut staged = store.stage(family);
        staged.put(key.to_vec(), b"1".to_vec());
        staged
            .seal()
            .commit_with(
                &PackedWrites::default(),
                &PackedWrites::default(),
                durability,
            )
            .unwrap();
    }

    #[test]
    fn a_crash_loses_source_log_writes_not_yet_flushed_and_nothing_else() {
        const CHILD: &str = "RAPPORT_STORE_CRASH_CHILD";
        if let Ok(path) = std::env::var(CHILD) {
            // The crashing process: it exits without closing the store (no
            // destructor runs), as a kill -9 would leave it.
            let store = Store::open(Path::new(&path), &["view", "meta"]).unwrap();
            commit_one(&store, "view", b"flushed", Durability::SourceLog);
            store.flush("view").unwrap();
            commit_one(&store, "view", b"unflushed", Durability::SourceLog);
            commit_one(&store, "meta", b"logged", Durability::WriteAheadLog);
            std::process::exit(3);
        }
        let directory = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::tests::a_crash_loses_source_log_writes_not_yet_flushed_and_nothing_else",
            ])
            .env(CHILD, directory.path())
            .status()
            .unwrap();
        assert_eq!(
            status.code(),
            Some(3),
            "the writing process ran and crashed"
        );
        let store = Store::open(directory.path(), &["view", "meta"]).unwrap();
        assert!(store.get("view", b"flushed").unwrap().is_some());
        assert!(
            store.get("view", b"unflushed").unwrap().is_none(),
            "not flushed, not logged: gone, to be redone from the source"
        );
        assert!(store.get("meta", b"logged").unwrap().is_some());
    }

    #[test]
    fn staged_writes_are_read_back_and_land_together() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &["view"]).unwrap();
        let mut staged = store.stage("view");
        staged.put(b"a".to_vec(), b"1".to_vec());
        assert_eq!(staged.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            store.get("view", b"a").unwrap(),
            None,
            "nothing is visible before commit"
        );
        staged.commit().unwrap();
        assert_eq!(store.get("view", b"a").unwrap(), Some(b"1".to_vec()));
        drop(store);
        let reopened = Store::open(directory.path(), &["view"]).unwrap();
        assert_eq!(reopened.get("view", b"a").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn packed_writes_come_out_in_key_order_and_the_last_of_a_key_wins() {
        let mut packed: PackedWrites = [("b", "1"), ("a", "2"), ("c", "3"), ("a", "4")]
            .into_iter()
            .collect();
        let expected: Vec<(&[u8], &[u8])> =
            vec![(b"a", b"2"), (b"a", b"4"), (b"b", b"1"), (b"c", b"3")];
        let sorted: Vec<(&[u8], &[u8])> = packed.sorted().collect();
        assert_eq!(sorted, expected, "sorted on the way out");
        packed.sort();
        let sorted: Vec<(&[u8], &[u8])> = packed.sorted().collect();
        assert_eq!(sorted, expected, "sorted ahead");
        // A pair pushed after sorting is still put in its place.
        packed.push(|key| key.push(b'a'), |value| value.push(b'5'));
        let sorted: Vec<(Vec<u8>, Vec<u8>)> = packed
            .sorted()
            .map(|(key, value)| (key.to_vec(), value.to_vec()))
            .collect();
        assert_eq!(
            sorted[..3],
            [
                (b"a".to_vec(), b"2".to_vec()),
                (b"a".to_vec(), b"4".to_vec()),
                (b"a".to_vec(), b"5".to_vec())
            ]
        );
    }

    #[test]
    fn unread_writes_are_not_read_back_and_land_with_the_batch() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &["view"]).unwrap();
        let mut staged = store.stage("view");
        staged.put(b"offset".to_vec(), b"7".to_vec());
        for (key, value) in [("t/2", "second"), ("t/1", "first"), ("t/2", "again")] {
            staged.put_unread(
                |bytes| bytes.extend_from_slice(key.as_bytes()),
                |bytes| bytes.extend_from_slice(value.as_bytes()),
            );
        }
        assert_eq!(staged.get(b"t/1").unwrap(), None, "not read back");
        let sealed = staged.seal();
        // A batch staged after it does not see them either.
        assert_eq!(
            store.stage_after("view", &sealed).get(b"t/1").unwrap(),
            None
        );
        sealed.commit().unwrap();
        let entries: Vec<Entry> = store
            .entries_from("view", b"")
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        let entries: Vec<(&[u8], &[u8])> = entries
            .iter()
            .map(|(key, value)| (&key[..], &value[..]))
            .collect();
        assert_eq!(
            entries,
            vec![
                (&b"offset"[..], &b"7"[..]),
                (b"t/1", b"first"),
                (b"t/2", b"again")
            ]
        );
    }

    #[test]
    fn a_checkpoint_keeps_the_state_it_was_taken_at() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(&directory.path().join("db"), &["view"]).unwrap();
        let mut staged = store.stage("view");
        staged.put(b"a".to_vec(), b"1".to_vec());
        staged.put(b"b".to_vec(), b"2".to_vec());
        staged.commit().unwrap();
        let copy = directory.path().join("copy");
        store.checkpoint(&copy).unwrap();
        let mut staged = store.stage("view");
        staged.put(b"a".to_vec(), b"changed".to_vec());
        staged.commit().unwrap();

        let frozen = Store::open_read_only(&copy).unwrap();
        let entries: Vec<Entry> = frozen
            .entries_from("view", b"")
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            entries,
            vec![
                (b"a".to_vec().into(), b"1".to_vec().into()),
                (b"b".to_vec().into(), b"2".to_vec().into())
            ]
        );
        let from_b: Vec<_> = store.entries_from("view", b"b").unwrap().collect();
        assert_eq!(from_b.len(), 1);
        assert!(!frozen.has_family("nope"));
    }

    #[test]
    fn a_batch_staged_after_a_sealed_one_reads_its_writes_before_it_commits() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &["view"]).unwrap();
        let mut first = store.stage("view");
        first.put(b"a".to_vec(), b"1".to_vec());
        first.put(b"b".to_vec(), b"1".to_vec());
        let first = first.seal();
        let mut second = store.stage_after("view", &first);
        assert_eq!(second.get(b"a").unwrap(), Some(b"1".to_vec()));
        second.put(b"a".to_vec(), b"2".to_vec());
        second.delete(b"b".to_vec());
        assert_eq!(second.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(second.get(b"b").unwrap(), None, "its own delete wins");
        assert_eq!(
            store.get("view", b"a").unwrap(),
            None,
            "nothing committed yet"
        );
        first.commit().unwrap();
        assert_eq!(store.get("view", b"b").unwrap(), Some(b"1".to_vec()));
        second.commit().unwrap();
        assert_eq!(store.get("view", b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.get("view", b"b").unwrap(), None);
    }

    #[test]
    fn reverse_scans_stay_inside_the_prefix_and_below_the_cursor() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &["view"]).unwrap();
        let mut staged = store.stage("view");
        for key in ["a1", "b1", "b2", "b3", "c1"] {
            staged.put(key.as_bytes().to_vec(), vec![]);
        }
        staged.commit().unwrap();
        let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| {
            entries
                .into_iter()
                .map(|(key, _)| String::from_utf8(key).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(store.scan_prefix_reverse("view", b"b", None, 10).unwrap()),
            ["b3", "b2", "b1"]
        );
        assert_eq!(
            keys(
                store
                    .scan_prefix_reverse("view", b"b", Some(b"b3"), 1)
                    .unwrap()
            ),
            ["b2"]
        );
        assert_eq!(
            keys(store.scan_prefix("view", b"b", 2).unwrap()),
            ["b1", "b2"]
        );
    }
}
