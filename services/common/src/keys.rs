//! Every RocksDB key Rapport writes is built here.
//!
//! Scheme: one ASCII tag byte says what the key is, then its parts. Integers
//! are big-endian (offsets and times shifted by 2^63 so that negative values
//! sort first), and strings that are followed by another part carry a
//! big-endian `u16` length, so every key decodes to exactly one value and
//! prefixes of one profile never run into another's.
//!
//! | tag | parts | value |
//! | --- | --- | --- |
//! | `O` | partition `u32` | last applied offset `i64` |
//! | `W` | partition `u32`, raw partition `u32` | last applied source (raw offset `i64`, index `u32`) |
//! | `P` | profile id (rest) | profile state, with deltas appended to it (see `merge`) |
//! | `T` | profile id (len), time `i64`, event id (rest) | timeline entry |
//! | `I` | identifier kind tag `u8`, value (rest) | profile id |
//! | `C` | time `i64`, claimant (len), identifier kind `u8`, value (rest) | conflict |
//! | `E` | event id (rest) | nothing: the event was seen (identity) |
//! | `G` | profile id (rest) | identity graph node (identity) |
//! | `X` | claimant (len), kind `u8`, value (rest) | nothing: conflict seen (identity) |
//! | `R` | dead letter `partition:offset` (rest) | nothing: that retry was applied |
//! | `V` | version name (rest) | a graph version's spec (identity) |
//! | `K` | subject (len), key id (rest) | a data key, 32 bytes (vault) |
//! | `N` | nothing | the pseudonym key, 32 bytes (vault) |
//! | `Z` | erasure id (rest) | an erasure's record (identity) |
//! | `S` | part `u8`, index `u32` | a piece of the scoreboard's image (projector, see `scores::image`) |

use rapport_projections::identity::{Identifier, IdentifierKind};

pub const OFFSET: u8 = b'O';
pub const WATERMARK: u8 = b'W';
pub const PROFILE: u8 = b'P';
pub const TIMELINE: u8 = b'T';
pub const IDENTIFIER: u8 = b'I';
pub const CONFLICT: u8 = b'C';
pub const SEEN_EVENT: u8 = b'E';
pub const GRAPH_NODE: u8 = b'G';
pub const CONFLICT_SEEN: u8 = b'X';
pub const RETRIED: u8 = b'R';
pub const VERSION_SPEC: u8 = b'V';
pub const DATA_KEY: u8 = b'K';
pub const PSEUDONYM_KEY: u8 = b'N';
pub const ERASURE: u8 = b'Z';
pub const SCOREBOARD_IMAGE: u8 = b'S';

/// Where the vault keeps data key `key_id` of `subject`.
pub fn data_key(subject: &str, key_id: &str) -> Vec<u8> {
    let mut key = data_key_prefix(subject);
    key.extend_from_slice(key_id.as_bytes());
    key
}

/// The prefix of every data key of `subject`.
pub fn data_key_prefix(subject: &str) -> Vec<u8> {
    let mut key = vec![DATA_KEY];
    push_sized(&mut key, subject);
    key
}

pub fn decode_data_key(key: &[u8]) -> Result<(String, String), MalformedKey> {
    let mut reader = Reader::new(key, DATA_KEY)?;
    let subject = reader.sized_text()?;
    Ok((subject, reader.rest_text()?))
}

/// Piece `index` of `part` of the scoreboard's image.
pub fn scoreboard_image(part: u8, index: u32) -> Vec<u8> {
    let mut key = vec![SCOREBOARD_IMAGE, part];
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Where identity keeps erasure `id`'s record.
pub fn erasure(id: &str) -> Vec<u8> {
    let mut key = vec![ERASURE];
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn decode_erasure(key: &[u8]) -> Result<String, MalformedKey> {
    Reader::new(key, ERASURE)?.rest_text()
}

/// Where the vault keeps the pseudonym key.
pub fn pseudonym_key() -> Vec<u8> {
    vec![PSEUDONYM_KEY]
}

/// Why a key could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed storage key {0:02x?}")]
pub struct MalformedKey(pub Vec<u8>);

fn ordered_i64(value: i64) -> [u8; 8] {
    ((value as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ordered_i64(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

fn push_sized(key: &mut Vec<u8>, text: &str) {
    let length = u16::try_from(text.len()).expect("ids are validated to be short");
    key.extend_from_slice(&length.to_be_bytes());
    key.extend_from_slice(text.as_bytes());
}

/// Reads keys part by part.
struct Reader<'a> {
    whole: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(key: &'a [u8], tag: u8) -> Result<Self, MalformedKey> {
        match key.split_first() {
            Some((&first, rest)) if first == tag => Ok(Self { whole: key, rest }),
            _ => Err(MalformedKey(key.to_vec())),
        }
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], MalformedKey> {
        let (head, tail) = self
            .rest
            .split_at_checked(N)
            .ok_or_else(|| MalformedKey(self.whole.to_vec()))?;
        self.rest = tail;
        Ok(head.try_into().expect("split at N"))
    }
    fn sized_text(&mut self) -> Result<String, MalformedKey> {
        let length = u16::from_be_bytes(self.bytes::<2>()?) as usize;
        let (head, tail) = self
            .rest
            .split_at_checked(length)
            .ok_or_else(|| MalformedKey(self.whole.to_vec()))?;
        self.rest = tail;
        String::from_utf8(head.to_vec()).map_err(|_| MalformedKey(self.whole.to_vec()))
    }
    fn rest_text(self) -> Result<String, MalformedKey> {
        String::from_utf8(self.rest.to_vec()).map_err(|_| MalformedKey(self.whole.to_vec()))
    }
    fn kind(&mut self) -> Result<IdentifierKind, MalformedKey> {
        let [tag] = self.bytes::<1>()?;
        IdentifierKind::from_tag(tag).ok_or_else(|| MalformedKey(self.whole.to_vec()))
    }
}

pub fn offset(partition: i32) -> Vec<u8> {
    let mut key = vec![OFFSET];
    key.extend_from_slice(&(partition as u32).to_be_bytes());
    key
}

pub fn decode_offset(key: &[u8]) -> Result<i32, MalformedKey> {
    let mut reader = Reader::new(key, OFFSET)?;
    Ok(u32::from_be_bytes(reader.bytes()?) as i32)
}

pub fn watermark(partition: i32, raw_partition: i32) -> Vec<u8> {
    let mut key = vec![WATERMARK];
    key.extend_from_slice(&(partition as u32).to_be_bytes());
    key.extend_from_slice(&(raw_partition as u32).to_be_bytes());
    key
}

pub fn decode_watermark(key: &[u8]) -> Result<(i32, i32), MalformedKey> {
    let mut reader = Reader::new(key, WATERMARK)?;
    Ok((
        u32::from_be_bytes(reader.bytes()?) as i32,
        u32::from_be_bytes(reader.bytes()?) as i32,
    ))
}

pub fn profile(profile_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + profile_id.len());
    push_profile(&mut key, profile_id);
    key
}

/// Appends the key of [`profile`] to `bytes`.
pub fn push_profile(bytes: &mut Vec<u8>, profile_id: &str) {
    bytes.push(PROFILE);
    bytes.extend_from_slice(profile_id.as_bytes());
}

pub fn decode_profile(key: &[u8]) -> Result<String, MalformedKey> {
    Reader::new(key, PROFILE)?.rest_text()
}

/// The prefix under which all timeline entries of one profile sort by time.
pub fn timeline_prefix(profile_id: &str) -> Vec<u8> {
    let mut key = vec![TIMELINE];
    push_sized(&mut key, profile_id);
    key
}

pub fn timeline(profile_id: &str, occurred_at_ms: i64, event_id: &str) -> Vec<u8> {
    let mut key = Vec::new();
    push_timeline(&mut key, profile_id, occurred_at_ms, event_id);
    key
}

/// Appends the key of [`timeline`] to `bytes`.
pub fn push_timeline(bytes: &mut Vec<u8>, profile_id: &str, occurred_at_ms: i64, event_id: &str) {
    bytes.push(TIMELINE);
    push_sized(bytes, profile_id);
    bytes.extend_from_slice(&ordered_i64(occurred_at_ms));
    bytes.extend_from_slice(event_id.as_bytes());
}

pub fn decode_timeline(key: &[u8]) -> Result<(String, i64, String), MalformedKey> {
    let mut reader = Reader::new(key, TIMELINE)?;
    let profile_id = reader.sized_text()?;
    let at = from_ordered_i64(reader.bytes()?);
    Ok((profile_id, at, reader.rest_text()?))
}

pub fn identifier(identifier: &Identifier) -> Vec<u8> {
    let mut key = Vec::new();
    push_identifier(&mut key, identifier);
    key
}

/// Appends the key of [`identifier`] to `bytes`.
pub fn push_identifier(bytes: &mut Vec<u8>, identifier: &Identifier) {
    bytes.extend_from_slice(&[IDENTIFIER, identifier.kind.tag()]);
    bytes.extend_from_slice(identifier.value.as_bytes());
}

pub fn decode_identifier(key: &[u8]) -> Result<Identifier, MalformedKey> {
    let mut reader = Reader::new(key, IDENTIFIER)?;
    let kind = reader.kind()?;
    Ok(Identifier::new(kind, reader.rest_text()?))
}

pub fn conflict(received_at_ms: i64, claimant: &str, identifier: &Identifier) -> Vec<u8> {
    let mut key = vec![CONFLICT];
    key.extend_from_slice(&ordered_i64(received_at_ms));
    push_sized(&mut key, claimant);
    key.push(identifier.kind.tag());
    key.extend_from_slice(identifier.value.as_bytes());
    key
}

pub fn decode_conflict(key: &[u8]) -> Result<(i64, String, Identifier), MalformedKey> {
    let mut reader = Reader::new(key, CONFLICT)?;
    let at = from_ordered_i64(reader.bytes()?);
    let claimant = reader.sized_text()?;
    let kind = reader.kind()?;
    Ok((at, claimant, Identifier::new(kind, reader.rest_text()?)))
}

pub fn seen_event(event_id: &str) -> Vec<u8> {
    let mut key = vec![SEEN_EVENT];
    key.extend_from_slice(event_id.as_bytes());
    key
}

pub fn decode_seen_event(key: &[u8]) -> Result<String, MalformedKey> {
    Reader::new(key, SEEN_EVENT)?.rest_text()
}

pub fn graph_node(profile_id: &str) -> Vec<u8> {
    let mut key = vec![GRAPH_NODE];
    key.extend_from_slice(profile_id.as_bytes());
    key
}

pub fn decode_graph_node(key: &[u8]) -> Result<String, MalformedKey> {
    Reader::new(key, GRAPH_NODE)?.rest_text()
}

pub fn conflict_seen(identifier: &Identifier, claimant: &str) -> Vec<u8> {
    let mut key = vec![CONFLICT_SEEN];
    push_sized(&mut key, claimant);
    key.push(identifier.kind.tag());
    key.extend_from_slice(identifier.value.as_bytes());
    key
}

/// The claimant and the identifier of a recorded conflict.
pub fn decode_conflict_seen(key: &[u8]) -> Result<(String, Identifier), MalformedKey> {
    let mut reader = Reader::new(key, CONFLICT_SEEN)?;
    let claimant = reader.sized_text()?;
    let kind = reader.kind()?;
    Ok((claimant, Identifier::new(kind, reader.rest_text()?)))
}

pub fn version_spec(version: &str) -> Vec<u8> {
    let mut key = vec![VERSION_SPEC];
    key.extend_from_slice(version.as_bytes());
    key
}

pub fn decode_version_spec(key: &[u8]) -> Result<String, MalformedKey> {
    Reader::new(key, VERSION_SPEC)?.rest_text()
}

pub fn retried(dead_letter: &str) -> Vec<u8> {
    let mut key = vec![RETRIED];
    key.extend_from_slice(dead_letter.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_decodes_to_what_built_it() {
        assert_eq!(decode_offset(&offset(7)), Ok(7));
        assert_eq!(decode_watermark(&watermark(3, 11)), Ok((3, 11)));
        assert_eq!(decode_profile(&profile("c-42")), Ok("c-42".to_owned()));
        assert_eq!(
            decode_timeline(&timeline("c-42", -5, "e-1")),
            Ok(("c-42".to_owned(), -5, "e-1".to_owned()))
        );
        let email = Identifier::new(IdentifierKind::Email, "a@b.com");
        assert_eq!(decode_identifier(&identifier(&email)), Ok(email.clone()));
        assert_eq!(
            decode_conflict(&conflict(99, "c-2", &email)),
            Ok((99, "c-2".to_owned(), email.clone()))
        );
        assert_eq!(decode_seen_event(&seen_event("e-1")), Ok("e-1".to_owned()));
        assert_eq!(decode_graph_node(&graph_node("c-1")), Ok("c-1".to_owned()));
        assert_eq!(
            decode_conflict_seen(&conflict_seen(&email, "c-3")),
            Ok(("c-3".to_owned(), email))
        );
        assert_eq!(
            decode_version_spec(&version_spec("r2")),
            Ok("r2".to_owned())
        );
        assert_eq!(
            decode_data_key(&data_key("p_0a", "k1")),
            Ok(("p_0a".to_owned(), "k1".to_owned()))
        );
        assert!(data_key("p_0a", "k1").starts_with(&data_key_prefix("p_0a")));
        assert_eq!(decode_erasure(&erasure("e-1")), Ok("e-1".to_owned()));
        assert!(!data_key("p_0ab", "k1").starts_with(&data_key_prefix("p_0a")));
    }

    #[test]
    fn wrong_tags_and_truncation_are_refused() {
        assert!(decode_offset(&profile("x")).is_err());
        assert!(decode_timeline(&[TIMELINE, 0, 9, b'a']).is_err());
        assert!(decode_identifier(&[IDENTIFIER, b'z', b'v']).is_err());
    }

    #[test]
    fn timelines_sort_by_time_within_a_profile_and_never_interleave() {
        let mut keys = [
            timeline("c-1", 10, "b"),
            timeline("c-1", -3, "a"),
            timeline("c-10", 0, "a"),
            timeline("c-1", 10, "a"),
        ];
        keys.sort();
        let decoded: Vec<_> = keys
            .iter()
            .map(|key| decode_timeline(key).unwrap())
            .collect();
        assert_eq!(decoded[0], ("c-1".to_owned(), -3, "a".to_owned()));
        assert_eq!(decoded[1], ("c-1".to_owned(), 10, "a".to_owned()));
        assert_eq!(decoded[2], ("c-1".to_owned(), 10, "b".to_owned()));
        assert_eq!(decoded[3].0, "c-10");
        assert!(
            keys.iter()
                .take(3)
                .all(|key| key.starts_with(&timeline_prefix("c-1")))
        );
        assert!(!keys[3].starts_with(&timeline_prefix("c-1")));
    }
}
