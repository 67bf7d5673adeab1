//! Where a projection version stands and what part of the log it holds:
//! plain types that the reading, folding and version-keeping modules all
//! use, so that none of them imports another for them.

use std::collections::BTreeMap;

use rapport_common::store::Store;
use rapport_common::{Result, keys};

/// Where a rebuild starts: one type for the stored spec, the admin API
/// and `rapportctl` (postcard stores it by variant, so the order of the
/// variants is part of the stored format).
pub use rapport_common::admin::StartFrom;

/// What part of the log a version holds.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub from: StartFrom,
    /// Hold only records received at or before this instant.
    pub until_ms: Option<i64>,
}

/// The receive times a version folds; records outside only advance its
/// offsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWindow {
    pub not_before_ms: Option<i64>,
    pub not_after_ms: Option<i64>,
}

impl TimeWindow {
    pub fn holds(&self, timestamp_ms: i64) -> bool {
        self.not_before_ms.is_none_or(|start| timestamp_ms >= start)
            && self.not_after_ms.is_none_or(|end| timestamp_ms <= end)
    }
}

/// Where a projection stands: the last applied offset per partition and,
/// per (partition, raw partition), the last applied source position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    pub offsets: BTreeMap<i32, i64>,
    pub watermarks: BTreeMap<(i32, i32), (i64, u32)>,
}

fn decode_offset(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

pub(crate) fn encode_watermark(offset: i64, index: u32) -> Vec<u8> {
    let mut bytes = offset.to_be_bytes().to_vec();
    bytes.extend_from_slice(&index.to_be_bytes());
    bytes
}

fn decode_watermark(bytes: &[u8]) -> Option<(i64, u32)> {
    Some((
        decode_offset(bytes)?,
        u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?),
    ))
}

impl Positions {
    /// Reads the stored positions of a projection.
    pub fn load(store: &Store, family: &str) -> Result<Self> {
        let mut positions = Positions::default();
        for (key, value) in store.scan_prefix(family, &[keys::OFFSET], usize::MAX)? {
            if let (Ok(partition), Some(offset)) =
                (keys::decode_offset(&key), decode_offset(&value))
            {
                positions.offsets.insert(partition, offset);
            }
        }
        for (key, value) in store.scan_prefix(family, &[keys::WATERMARK], usize::MAX)? {
            if let (Ok(pair), Some(mark)) = (keys::decode_watermark(&key), decode_watermark(&value))
            {
                positions.watermarks.insert(pair, mark);
            }
        }
        Ok(positions)
    }
}
