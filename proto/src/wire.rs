//! Copies of encoded messages with some fields left out, made from the wire
//! bytes without decoding the message: no allocation per field, and fields
//! this code does not know (written by a newer release) are kept as they
//! are.
//!
//! A projector keeps each record's bytes as the delta of its profile (see
//! `rapport_common::merge`); RocksDB writes, flushes and compacts those bytes
//! until it folds them. Half of a customer record is what the fold never
//! reads (the ingest listener, the identifiers the sender gave, receive
//! times), so leaving it out halves what every flush and compaction copies.

use std::fmt;

/// What to leave out of a message: fields by number, and fields holding a
/// sub-message to prune in turn.
#[derive(Debug)]
pub struct Pruning {
    pub drop: &'static [u32],
    pub within: &'static [(u32, &'static Pruning)],
}

/// Bytes that are not a protobuf message this module can walk: truncated,
/// or using the deprecated group wire types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed;

impl fmt::Display for Malformed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("not a protobuf message that can be pruned")
    }
}

impl std::error::Error for Malformed {}

/// Appends `message` without what `pruning` leaves out to `out`. On error
/// `out` is left as it was.
pub fn prune_into(message: &[u8], pruning: &Pruning, out: &mut Vec<u8>) -> Result<(), Malformed> {
    let start = out.len();
    let written = write_pruned(message, pruning, out);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// One field as it sits in the message.
struct Field<'a> {
    number: u32,
    /// The whole field: tag, length if any, contents.
    whole: &'a [u8],
    /// The tag alone.
    tag: &'a [u8],
    /// The contents of a length-delimited field.
    contents: Option<&'a [u8]>,
}

/// The fields of a message, in order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.take_field())
    }
}

impl<'a> Fields<'a> {
    fn take_field(&mut self) -> Result<Field<'a>, Malformed> {
        let field = self.rest;
        let (key, after_tag) = read_varint(field)?;
        let tag_len = field.len() - after_tag.len();
        let number = u32::try_from(key >> 3).map_err(|_| Malformed)?;
        let (contents, after) = match key & 7 {
            0 => (None, read_varint(after_tag)?.1),
            1 => (None, after_tag.get(8..).ok_or(Malformed)?),
            2 => {
                let (length, body) = read_varint(after_tag)?;
                let length = usize::try_from(length).map_err(|_| Malformed)?;
                let contents = body.get(..length).ok_or(Malformed)?;
                (Some(contents), &body[length..])
            }
            5 => (None, after_tag.get(4..).ok_or(Malformed)?),
            _ => return Err(Malformed),
        };
        self.rest = after;
        Ok(Field {
            number,
            whole: &field[..field.len() - after.len()],
            tag: &field[..tag_len],
            contents,
        })
    }
}

/// What a field becomes in the copy.
enum Kept<'a> {
    Dropped,
    Verbatim,
    Pruned(&'a [u8], &'static Pruning),
}

fn kept<'a>(field: &Field<'a>, pruning: &Pruning) -> Kept<'a> {
    if pruning.drop.contains(&field.number) {
        return Kept::Dropped;
    }
    match (
        field.contents,
        pruning
            .within
            .iter()
            .find(|(number, _)| *number == field.number),
    ) {
        (Some(contents), Some((_, inner))) => Kept::Pruned(contents, inner),
        _ => Kept::Verbatim,
    }
}

fn write_pruned(message: &[u8], pruning: &Pruning, out: &mut Vec<u8>) -> Result<(), Malformed> {
    for field in (Fields { rest: message }) {
        let field = field?;
        match kept(&field, pruning) {
            Kept::Dropped => {}
            Kept::Verbatim => out.extend_from_slice(field.whole),
            Kept::Pruned(contents, inner) => {
                out.extend_from_slice(field.tag);
                // One pass: the sub-message is written first and its new
                // length put in front of it, a move of a few bytes.
                let at = out.len();
                write_pruned(contents, inner, out)?;
                let (length, used) = varint((out.len() - at) as u64);
                out.splice(at..at, length[..used].iter().copied());
            }
        }
    }
    Ok(())
}

fn read_varint(bytes: &[u8]) -> Result<(u64, &[u8]), Malformed> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((value, &bytes[index + 1..]));
        }
    }
    Err(Malformed)
}

/// `value` as a varint: the bytes, and how many of them it takes.
fn varint(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0; 10];
    let mut used = 0;
    while value >= 0x80 {
        bytes[used] = (value as u8) | 0x80;
        value >>= 7;
        used += 1;
    }
    bytes[used] = value as u8;
    (bytes, used + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Inner {
        #[prost(string, tag = "1")]
        kept: String,
        #[prost(string, tag = "2")]
        dropped: String,
        #[prost(int64, tag = "3")]
        number: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Outer {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(fixed64, tag = "2")]
        dropped_fixed: u64,
        #[prost(message, optional, tag = "3")]
        inner: Option<Inner>,
        #[prost(message, repeated, tag = "4")]
        many: Vec<Inner>,
        #[prost(fixed32, tag = "5")]
        small: u32,
        #[prost(sint64, tag = "6")]
        dropped_varint: i64,
    }

    static INNER: Pruning = Pruning {
        drop: &[2],
        within: &[],
    };
    static OUTER: Pruning = Pruning {
        drop: &[2, 6],
        within: &[(3, &INNER), (4, &INNER)],
    };

    fn inner(tag: &str, filler: usize) -> Inner {
        Inner {
            kept: format!("kept-{tag}"),
            dropped: "x".repeat(filler),
            number: -7,
        }
    }

    #[test]
    fn pruning_drops_the_named_fields_at_every_depth_and_keeps_the_rest() {
        // Given a message with fields to drop at the top and in sub-messages,
        // one of them long enough that its length takes two bytes
        let outer = Outer {
            name: "n".into(),
            dropped_fixed: 9,
            inner: Some(inner("a", 300)),
            many: vec![inner("b", 1), inner("c", 0)],
            small: 5,
            dropped_varint: -300,
        };
        let mut out = b"before".to_vec();
        // When it is pruned
        prune_into(&outer.encode_to_vec(), &OUTER, &mut out).unwrap();
        // Then what follows the earlier bytes decodes as the message with
        // those fields cleared
        assert_eq!(&out[..6], b"before");
        let pruned = Outer::decode(&out[6..]).unwrap();
        let clear = |mut inner: Inner| {
            inner.dropped.clear();
            inner
        };
        assert_eq!(
            pruned,
            Outer {
                dropped_fixed: 0,
                dropped_varint: 0,
                inner: outer.inner.clone().map(clear),
                many: outer.many.iter().cloned().map(clear).collect(),
                ..outer.clone()
            }
        );
        // and is shorter by what was dropped
        assert!(out.len() - 6 < outer.encoded_len() - 300);
    }

    #[test]
    fn fields_pruning_does_not_name_survive_even_unknown_ones() {
        // Given a message from a writer with a field this reader lacks
        #[derive(Clone, PartialEq, prost::Message)]
        struct Newer {
            #[prost(string, tag = "1")]
            name: String,
            #[prost(string, tag = "40")]
            added: String,
        }
        let newer = Newer {
            name: "n".into(),
            added: "kept".into(),
        };
        let mut out = Vec::new();
        prune_into(&newer.encode_to_vec(), &OUTER, &mut out).unwrap();
        assert_eq!(Newer::decode(&out[..]).unwrap(), newer);
    }

    #[test]
    fn a_truncated_message_is_refused_and_nothing_is_written() {
        let bytes = Outer {
            name: "name".into(),
            inner: Some(inner("a", 3)),
            ..Default::default()
        }
        .encode_to_vec();
        for cut in 1..bytes.len() {
            let mut out = b"kept".to_vec();
            // Some cuts still end on a field boundary; the rest must fail.
            if prune_into(&bytes[..cut], &OUTER, &mut out).is_err() {
                assert_eq!(out, b"kept");
            }
        }
        let mut out = Vec::new();
        assert_eq!(prune_into(&bytes[..3], &OUTER, &mut out), Err(Malformed));
        assert!(out.is_empty());
        // A group (wire type 3) is not walked.
        assert_eq!(prune_into(&[0x0b], &OUTER, &mut out), Err(Malformed));
    }

    #[test]
    fn varints_read_back_what_is_written() {
        for (value, length) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            let (bytes, used) = varint(value);
            assert_eq!(used, length, "{value}");
            assert_eq!(read_varint(&bytes[..used]).unwrap(), (value, &[][..]));
        }
    }
}
