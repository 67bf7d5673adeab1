//! Values RocksDB combines itself: a write appends a delta (a merge operand)
//! instead of reading, decoding and rewriting the whole value, and RocksDB
//! folds the deltas into the value whenever it reads, flushes or compacts.
//!
//! The key's tag (see [`crate::keys`]) says how its deltas combine. Today
//! only profiles (`P`) take deltas: each is a `ProfileState` folded from
//! later records, combined with `ProfileState::append`, which is associative
//! and gives byte-for-byte the state a record-by-record fold would. The
//! operator is registered on every column family a [`crate::store::Store`]
//! opens or creates, so every reader of a store sees combined values.

use rapport_projections::customer_view::ProfileState;
use rocksdb::MergeOperands;

use crate::keys;

/// Recorded by RocksDB with the options; names what combines the deltas.
pub(crate) const NAME: &str = "rapport.append.v1";

/// RocksDB's merge callback, for full merges (onto `existing`, or onto
/// nothing) and partial ones (deltas combined into one delta) alike: both
/// give an encoded state. `None` tells RocksDB the merge failed, which it
/// reports as corruption to the read or compaction that needed it.
pub(crate) fn combine(
    key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    match key.first() {
        Some(&keys::PROFILE) => append_profiles(key, existing, operands.iter()),
        _ => {
            tracing::error!(key = ?key, "a delta was written to a key whose values do not combine");
            None
        }
    }
}

fn append_profiles<'a>(
    key: &[u8],
    existing: Option<&[u8]>,
    deltas: impl Iterator<Item = &'a [u8]>,
) -> Option<Vec<u8>> {
    let decode = |bytes: &[u8]| {
        ProfileState::decode(bytes)
            .inspect_err(|error| {
                tracing::error!(key = ?key, %error, "a stored profile or profile delta does not decode");
            })
            .ok()
    };
    let mut state = match existing {
        Some(bytes) => decode(bytes)?,
        None => ProfileState::default(),
    };
    for delta in deltas {
        state.append(&decode(delta)?);
    }
    Some(state.encode())
}
