//! Values RocksDB combines itself: a write appends a delta (a merge operand)
//! instead of reading, decoding and rewriting the whole value, and RocksDB
//! folds the deltas into the value whenever it reads, flushes or compacts.
//!
//! The key's tag (see [`crate::keys`]) says how its deltas combine. Today
//! only profiles (`P`) take deltas, of two kinds, told apart by their first
//! byte:
//! - a customer-topic record as it came off the log ([`push_record_delta`]),
//!   folded with `ProfileState::fold`. This is what a projector appends: it
//!   costs a copy of bytes it already has, where building, encoding and
//!   freeing a state per record was a third of a rebuild's work;
//! - an encoded `ProfileState` (its format byte, 1 or 2): what combining
//!   deltas without the value gives, and what releases before format 3
//!   appended. Combined with `ProfileState::append`, which is associative
//!   and gives byte-for-byte the state a record-by-record fold would.
//!
//! The operator is registered on every column family a
//! [`crate::store::Store`] opens or creates, so every reader of a store sees
//! combined values.

use prost::Message as _;
use rapport_projections::customer_view::ProfileState;
use rapport_proto::v1 as proto;
use rocksdb::MergeOperands;

use crate::keys;

/// Recorded by RocksDB with the options; names what combines the deltas.
pub(crate) const NAME: &str = "rapport.append.v1";

/// The first byte of a delta that is one customer record. Never a state's
/// format byte; a release that predates it refuses such a delta (its merge
/// fails, as for any value it cannot decode) rather than misreading it.
pub const RECORD_DELTA: u8 = b'R';

/// Appends the delta that folds `record`, the customer record's encoded
/// bytes as read from the customer topic, to `bytes`.
pub fn push_record_delta(bytes: &mut Vec<u8>, record: &[u8]) {
    bytes.push(RECORD_DELTA);
    bytes.extend_from_slice(record);
}

/// Folds one delta of either kind into `state`.
pub fn append_delta(state: &mut ProfileState, delta: &[u8]) -> crate::Result<()> {
    match delta.split_first() {
        Some((&RECORD_DELTA, record)) => {
            let record =
                proto::CustomerRecord::decode(record).map_err(crate::Error::RecordDelta)?;
            state.fold(&record);
        }
        _ => state.append(&ProfileState::decode(delta)?),
    }
    Ok(())
}

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
    let combined = (|| -> crate::Result<ProfileState> {
        let mut state = match existing {
            Some(bytes) => ProfileState::decode(bytes)?,
            None => ProfileState::default(),
        };
        for delta in deltas {
            append_delta(&mut state, delta)?;
        }
        Ok(state)
    })();
    match combined {
        Ok(state) => Some(state.encode()),
        Err(error) => {
            tracing::error!(key = ?key, %error, "a stored profile or profile delta does not decode");
            None
        }
    }
}
