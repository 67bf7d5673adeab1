//! Compares two identifier graphs key by key: a checksum of each and the
//! first keys where they differ, streaming both in key order so that graphs
//! of any size are compared in constant memory.

use rapport_common::digest::Digest;
use rapport_common::store::Entry;
use rapport_common::{Result, keys};
use serde::Serialize;

/// The key tags that make up a graph: profiles (nodes with their links),
/// identifier owners, recorded conflicts and seen event ids. Raw offsets
/// (`O`) are compared on their own: they say *where* each graph stands.
pub const GRAPH_TAGS: [u8; 4] = [
    keys::GRAPH_NODE,
    keys::IDENTIFIER,
    keys::CONFLICT_SEEN,
    keys::SEEN_EVENT,
];

/// How many differing keys a comparison lists.
pub const MAX_DIFFERENCES: usize = 10;

pub use rapport_common::admin::GraphSummary;

/// Where two graphs differ at one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The key in words, e.g. `identifier email:a@b.com`.
    pub key: String,
    /// `only in left`, `only in right` or `values differ`.
    pub difference: &'static str,
}

/// Two graphs side by side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    pub left: GraphSummary,
    pub right: GraphSummary,
    /// Same offsets, same entries.
    pub equal: bool,
    /// Up to [`MAX_DIFFERENCES`] differing keys, in key order.
    pub first_differences: Vec<Difference>,
}

/// A key in words, for people reading a comparison.
pub fn describe_key(key: &[u8]) -> String {
    let described = match key.first() {
        Some(&keys::GRAPH_NODE) => keys::decode_graph_node(key).map(|id| format!("profile {id}")),
        Some(&keys::IDENTIFIER) => keys::decode_identifier(key).map(|identifier| {
            format!(
                "identifier {}:{}",
                identifier.kind.as_str(),
                identifier.value
            )
        }),
        Some(&keys::CONFLICT_SEEN) => {
            keys::decode_conflict_seen(key).map(|(claimant, identifier)| {
                format!(
                    "conflict {claimant} claims {}:{}",
                    identifier.kind.as_str(),
                    identifier.value
                )
            })
        }
        Some(&keys::SEEN_EVENT) => keys::decode_seen_event(key).map(|id| format!("event {id}")),
        Some(&keys::OFFSET) => {
            keys::decode_offset(key).map(|partition| format!("offset of raw partition {partition}"))
        }
        _ => Err(keys::MalformedKey(key.to_vec())),
    };
    described.unwrap_or_else(|_| format!("{:02x?}", key))
}

/// Walks one side: offsets are collected, graph entries digested and
/// handed out; other keys are skipped.
struct Side<I> {
    entries: I,
    summary: GraphSummary,
    digest: Digest,
}

impl<I: Iterator<Item = Result<Entry>>> Side<I> {
    fn next_graph_entry(&mut self) -> Result<Option<Entry>> {
        for item in self.entries.by_ref() {
            let (key, value) = item?;
            match key.first() {
                Some(&keys::OFFSET) => {
                    if let (Ok(partition), Ok(bytes)) =
                        (keys::decode_offset(&key), <[u8; 8]>::try_from(&*value))
                    {
                        self.summary
                            .offsets
                            .insert(partition, i64::from_be_bytes(bytes));
                    }
                }
                Some(tag) if GRAPH_TAGS.contains(tag) => {
                    self.summary.keys += 1;
                    self.digest.entry(&key, &value);
                    return Ok(Some((key, value)));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    fn finish(mut self) -> GraphSummary {
        self.summary.checksum = self.digest.hex();
        self.summary
    }
}

/// Compares two graphs given as their entries in key order (as RocksDB
/// iterates a column family).
pub fn compare(
    left: impl Iterator<Item = Result<Entry>>,
    right: impl Iterator<Item = Result<Entry>>,
) -> Result<Comparison> {
    let mut left = Side {
        entries: left,
        summary: GraphSummary::default(),
        digest: Digest::default(),
    };
    let mut right = Side {
        entries: right,
        summary: GraphSummary::default(),
        digest: Digest::default(),
    };
    let mut differences = Vec::new();
    let mut differing = false;
    let mut note = |differences: &mut Vec<Difference>, key: &[u8], difference| {
        differing = true;
        if differences.len() < MAX_DIFFERENCES {
            differences.push(Difference {
                key: describe_key(key),
                difference,
            });
        }
    };
    let (mut on_left, mut on_right) = (left.next_graph_entry()?, right.next_graph_entry()?);
    loop {
        match (&on_left, &on_right) {
            (None, None) => break,
            (Some((key, _)), None) => {
                note(&mut differences, key, "only in left");
                on_left = left.next_graph_entry()?;
            }
            (None, Some((key, _))) => {
                note(&mut differences, key, "only in right");
                on_right = right.next_graph_entry()?;
            }
            (Some((left_key, left_value)), Some((right_key, right_value))) => {
                match left_key.cmp(right_key) {
                    std::cmp::Ordering::Less => {
                        note(&mut differences, left_key, "only in left");
                        on_left = left.next_graph_entry()?;
                    }
                    std::cmp::Ordering::Greater => {
                        note(&mut differences, right_key, "only in right");
                        on_right = right.next_graph_entry()?;
                    }
                    std::cmp::Ordering::Equal => {
                        if left_value != right_value {
                            note(&mut differences, left_key, "values differ");
                        }
                        on_left = left.next_graph_entry()?;
                        on_right = right.next_graph_entry()?;
                    }
                }
            }
        }
    }
    let (left, right) = (left.finish(), right.finish());
    Ok(Comparison {
        equal: !differing && left.offsets == right.offsets,
        left,
        right,
        first_differences: differences,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use rapport_projections::identity::{Identifier, IdentifierKind};

    fn entries(list: &[(Vec<u8>, &[u8])]) -> impl Iterator<Item = Result<Entry>> {
        let mut sorted: Vec<Entry> = list
            .iter()
            .map(|(key, value)| (key.clone().into(), value.to_vec().into()))
            .collect();
        sorted.sort();
        sorted.into_iter().map(Ok)
    }

    const SEVEN: [u8; 8] = 7i64.to_be_bytes();
    const EIGHT: [u8; 8] = 8i64.to_be_bytes();

    fn graph() -> Vec<(Vec<u8>, &'static [u8])> {
        let email = Identifier::new(IdentifierKind::Email, "a@b.com");
        vec![
            (keys::offset(0), &SEVEN),
            (keys::graph_node("c-1"), b"node c-1"),
            (keys::identifier(&email), b"c-1"),
            (keys::conflict_seen(&email, "c-2"), b""),
            (keys::seen_event("e-1"), b""),
        ]
    }

    #[test]
    fn equal_graphs_compare_equal_with_equal_checksums() {
        let comparison = compare(entries(&graph()), entries(&graph())).unwrap();
        assert!(comparison.equal, "{comparison:?}");
        assert_eq!(comparison.left, comparison.right);
        assert_eq!(comparison.left.keys, 4);
        assert_eq!(comparison.left.offsets, BTreeMap::from([(0, 7)]));
        assert!(comparison.first_differences.is_empty());
    }

    #[test]
    fn the_checksum_is_deterministic_and_sees_every_byte() {
        let checksum = |graph: &[(Vec<u8>, &[u8])]| {
            compare(entries(graph), entries(&[])).unwrap().left.checksum
        };
        assert_eq!(checksum(&graph()), checksum(&graph()));
        let mut changed = graph();
        changed[2].1 = b"c-2";
        assert_ne!(checksum(&graph()), checksum(&changed));
        // Moving a byte from the key to the value changes it too.
        let moved: Vec<(Vec<u8>, &[u8])> = vec![(keys::seen_event("e-1"), b"x")];
        let other: Vec<(Vec<u8>, &[u8])> = vec![(keys::seen_event("e-1x"), b"")];
        assert_ne!(checksum(&moved), checksum(&other));
    }

    #[test]
    fn differing_graphs_name_the_differing_keys() {
        let email = Identifier::new(IdentifierKind::Email, "a@b.com");
        let mut right = graph();
        // The identifier belongs to someone else, and one more event was seen.
        right[2].1 = b"prospect-9";
        right.push((keys::seen_event("e-2"), b""));
        let comparison = compare(entries(&graph()), entries(&right)).unwrap();
        assert!(!comparison.equal);
        assert_ne!(comparison.left.checksum, comparison.right.checksum);
        assert_eq!(
            comparison.first_differences,
            vec![
                Difference {
                    key: "event e-2".to_owned(),
                    difference: "only in right"
                },
                Difference {
                    key: format!("identifier email:{}", email.value),
                    difference: "values differ"
                },
            ]
        );
    }

    #[test]
    fn graphs_at_different_offsets_are_not_equal() {
        let mut right = graph();
        right[0].1 = &EIGHT;
        let comparison = compare(entries(&graph()), entries(&right)).unwrap();
        assert!(comparison.first_differences.is_empty());
        assert!(
            !comparison.equal,
            "same entries, but not the same log prefix"
        );
    }

    #[test]
    fn keys_are_described_in_words() {
        let phone = Identifier::new(IdentifierKind::Phone, "+861380000");
        assert_eq!(
            describe_key(&keys::conflict_seen(&phone, "c-2")),
            "conflict c-2 claims phone:+861380000"
        );
        assert_eq!(describe_key(&keys::graph_node("c-1")), "profile c-1");
        assert_eq!(describe_key(&[0xee]), "[ee]");
    }
}
