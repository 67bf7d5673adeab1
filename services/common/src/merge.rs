//! Values RocksDB combines itself: a write appends a delta (a merge operand)
//! instead of reading, decoding and rewriting the whole value, and RocksDB
//! folds the deltas into the value whenever it reads or compacts the key
//! (flushes leave them as they are; see [`decline_partial`]).
//!
//! The key's tag (see [`crate::keys`]) says how its deltas combine. Today
//! only profiles (`P`) take deltas, of two kinds, told apart by their first
//! byte:
//! - a customer-topic record as it came off the log, less the fields the
//!   fold never reads ([`push_record_delta`]), folded with
//!   `ProfileState::fold`. This is what a projector appends: it costs a copy
//!   of bytes it already has, where building, encoding and freeing a state
//!   per record was a third of a rebuild's work;
//! - an encoded `ProfileState` (its format byte, 1, 2 or 3): what flushes
//!   wrote when they still combined deltas without the value, and what
//!   releases before format 3 appended. Combined with
//!   `ProfileState::append`, which is associative and gives byte-for-byte
//!   the state a record-by-record fold would.
//!
//! The store registers the operator on every column family it opens or
//! creates, so every reader of a store sees combined values.

use prost::Message as _;
use rapport_projections::customer_view::{self, ProfileState};
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
/// bytes as read from the customer topic, to `bytes`: the record without
/// the fields the fold never reads (`customer_view::UNFOLDED`), about half
/// of it, which every flush and compaction then copies no more. Bytes the
/// pruning cannot walk are kept whole; they fold the same.
pub fn push_record_delta(bytes: &mut Vec<u8>, record: &[u8]) {
    bytes.push(RECORD_DELTA);
    if rapport_proto::wire::prune_into(record, &customer_view::UNFOLDED, bytes).is_err() {
        bytes.extend_from_slice(record);
    }
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

/// RocksDB's merge callback: folds the deltas onto `existing`, or onto
/// nothing, into an encoded state. `None` tells RocksDB the merge failed,
/// which it reports as corruption to the read or compaction that needed it.
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

/// RocksDB's callback for combining deltas without the value below them,
/// as a flush does: always declined, so the deltas stay as they are until a
/// read or a compaction folds them onto the value (see `store`'s family
/// options for why). A declined partial merge is not an error to RocksDB.
pub(crate) fn decline_partial(
    _key: &[u8],
    _existing: Option<&[u8]>,
    _operands: &MergeOperands,
) -> Option<Vec<u8>> {
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_delta_leaves_out_what_the_fold_never_reads() {
        // Given a record as ingest and identity write it
        let record = proto::CustomerRecord {
            customer_id: "c-1".into(),
            source: Some(proto::SourcePosition {
                raw_partition: 2,
                raw_offset: 41,
                index: 0,
            }),
            received_at_ms: 1_795_380_862_148,
            body: Some(proto::customer_record::Body::Event(proto::EventResolved {
                event: Some(proto::Event {
                    event_id: "01a20509-dcbb-76e3-933c-fe06ffcf0907".into(),
                    r#type: "order.placed".into(),
                    occurred_at_ms: 1_790_842_800_000,
                    received_at_ms: 1_795_380_862_148,
                    source: "ingest@127.0.0.1:35187".into(),
                    channel: "web".into(),
                    customer: Some(proto::CustomerIdentifiers {
                        customer_id: "c-1".into(),
                        email: "p1@example.com".into(),
                        ..Default::default()
                    }),
                    payload: Some(proto::event::Payload::OrderPlaced(proto::OrderPlaced {
                        order_id: "o-1".into(),
                        total_minor: 1020,
                        currency: "USD".into(),
                        items: vec![],
                    })),
                }),
                linked: vec![proto::Identifier {
                    kind: "email".into(),
                    value: "p1@example.com".into(),
                }],
            })),
        };
        let bytes = record.encode_to_vec();
        // When it is appended as a delta
        let mut delta = Vec::new();
        push_record_delta(&mut delta, &bytes);
        // Then the delta leaves out the sender, the receive time and the
        // source position, and folds the same
        assert!(
            delta.len() + "ingest@127.0.0.1:35187".len() + 12 < bytes.len(),
            "{} of {}",
            delta.len(),
            bytes.len()
        );
        assert!(!delta.windows(7).any(|window| window == b"ingest@"));
        let (mut from_delta, mut from_record) = (ProfileState::default(), ProfileState::default());
        append_delta(&mut from_delta, &delta).unwrap();
        from_record.fold(&record);
        assert_eq!(from_delta.encode(), from_record.encode());
    }

    #[test]
    fn bytes_the_pruning_cannot_walk_are_kept_whole_and_fail_when_folded() {
        let mut delta = Vec::new();
        push_record_delta(&mut delta, &[0x0b, 0x01]);
        assert_eq!(delta, [RECORD_DELTA, 0x0b, 0x01]);
        let folded = append_delta(&mut ProfileState::default(), &delta);
        assert!(matches!(folded, Err(crate::Error::RecordDelta(_))));
    }
}
