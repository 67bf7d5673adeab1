//! A multiset of `i64` that answers "how many values are ≤ v" in O(log n):
//! the exact population counts RFM scoring needs, kept up to date one customer
//! at a time instead of re-sorting everybody.
//!
//! It is a treap whose node priorities are a hash of the key, so its shape
//! depends only on the set of keys it holds, never on insertion order or on a
//! random source; the expected depth is still logarithmic.

const NO_NODE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    key: i64,
    multiplicity: u64,
    /// Sum of multiplicities in the subtree rooted here.
    subtree_count: u64,
    left: u32,
    right: u32,
}

/// Not serialised: its layout depends on update history, so owners store the
/// values themselves and rebuild it (see `RfmPopulation`).
#[derive(Debug, Clone)]
pub(crate) struct CountingMultiset {
    nodes: Vec<Node>,
    free_slots: Vec<u32>,
    root: u32,
    len: u64,
}

/// SplitMix64's finaliser: a fixed, well-mixed priority per key.
fn priority_of(key: i64) -> u64 {
    let mut mixed = (key as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^ (mixed >> 31)
}

impl Default for CountingMultiset {
    fn default() -> Self {
        Self::new()
    }
}

impl CountingMultiset {
    pub(crate) fn new() -> Self {
        CountingMultiset {
            nodes: Vec::new(),
            free_slots: Vec::new(),
            root: NO_NODE,
            len: 0,
        }
    }

    /// The multiset holding each key of `counts` as many times as it says;
    /// `counts` must be in increasing key order with no key twice. Builds
    /// the treap in one pass (the Cartesian tree of the keys by priority,
    /// the same shape inserts would give), in O(n).
    pub(crate) fn from_sorted_counts(counts: impl IntoIterator<Item = (i64, u64)>) -> Self {
        let mut set = CountingMultiset::new();
        // The right spine of the tree built so far, root first.
        let mut spine: Vec<u32> = Vec::new();
        for (key, count) in counts {
            set.len += count;
            set.nodes.push(Node {
                key,
                multiplicity: count,
                subtree_count: count,
                left: NO_NODE,
                right: NO_NODE,
            });
            let slot = (set.nodes.len() - 1) as u32;
            let priority = priority_of(key);
            // Nodes of lower priority move below the new one, as its left
            // subtree; on a tie the smaller key stays above, as in `merge`.
            let mut below = NO_NODE;
            while let Some(&top) = spine.last() {
                if priority_of(set.nodes[top as usize].key) >= priority {
                    break;
                }
                spine.pop();
                set.refresh(top);
                below = top;
            }
            set.nodes[slot as usize].left = below;
            if let Some(&parent) = spine.last() {
                set.nodes[parent as usize].right = slot;
            }
            spine.push(slot);
        }
        set.root = spine.first().copied().unwrap_or(NO_NODE);
        while let Some(node) = spine.pop() {
            set.refresh(node);
        }
        set
    }

    /// Each key with its multiplicity, in increasing key order.
    pub(crate) fn counts(&self) -> Vec<(i64, u64)> {
        let mut counts = Vec::new();
        let mut pending = Vec::new();
        let mut cursor = self.root;
        while cursor != NO_NODE || !pending.is_empty() {
            while cursor != NO_NODE {
                pending.push(cursor);
                cursor = self.nodes[cursor as usize].left;
            }
            let Some(node) = pending.pop() else { break };
            let node = &self.nodes[node as usize];
            counts.push((node.key, node.multiplicity));
            cursor = node.right;
        }
        counts
    }

    /// Both multisets in one.
    pub(crate) fn merged(&self, other: &CountingMultiset) -> Self {
        let (left, right) = (self.counts(), other.counts());
        let mut counts = Vec::with_capacity(left.len() + right.len());
        let (mut left, mut right) = (left.into_iter().peekable(), right.into_iter().peekable());
        loop {
            let next = match (left.peek(), right.peek()) {
                (Some(l), Some(r)) if l.0 == r.0 => {
                    let (key, count) = (l.0, l.1 + r.1);
                    left.next();
                    right.next();
                    (key, count)
                }
                (Some(l), Some(r)) if l.0 < r.0 => left.next().expect("peeked"),
                (Some(_), Some(_)) | (None, Some(_)) => right.next().expect("peeked"),
                (Some(_), None) => left.next().expect("peeked"),
                (None, None) => break,
            };
            counts.push(next);
        }
        Self::from_sorted_counts(counts)
    }

    /// The multiset of `keys`, in any order.
    pub(crate) fn from_keys(mut keys: Vec<i64>) -> Self {
        keys.sort_unstable();
        let mut counts: Vec<(i64, u64)> = Vec::new();
        for key in keys {
            match counts.last_mut() {
                Some((last, count)) if *last == key => *count += 1,
                _ => counts.push((key, 1)),
            }
        }
        Self::from_sorted_counts(counts)
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn insert(&mut self, key: i64) {
        self.len += 1;
        if self.adjust_existing(key, 1) {
            return;
        }
        let slot = self.allocate(key);
        let (smaller, larger) = self.split(self.root, key, false);
        let left = self.merge(smaller, slot);
        self.root = self.merge(left, larger);
    }

    /// Removes one occurrence of `key`; false if there was none.
    pub(crate) fn remove(&mut self, key: i64) -> bool {
        let Some(multiplicity) = self.multiplicity_of(key) else {
            return false;
        };
        self.len -= 1;
        if multiplicity > 1 {
            self.adjust_existing(key, -1);
            return true;
        }
        let (smaller, at_least) = self.split(self.root, key, false);
        let (only_key, larger) = self.split(at_least, key, true);
        self.free_slots.push(only_key);
        self.root = self.merge(smaller, larger);
        true
    }

    /// How many stored values are ≤ `key`.
    pub(crate) fn count_at_most(&self, key: i64) -> u64 {
        let mut count = 0;
        let mut cursor = self.root;
        while cursor != NO_NODE {
            let node = &self.nodes[cursor as usize];
            if key < node.key {
                cursor = node.left;
            } else {
                count += self.subtree_count(node.left) + node.multiplicity;
                if key == node.key {
                    break;
                }
                cursor = node.right;
            }
        }
        count
    }

    fn multiplicity_of(&self, key: i64) -> Option<u64> {
        let mut cursor = self.root;
        while cursor != NO_NODE {
            let node = &self.nodes[cursor as usize];
            match key.cmp(&node.key) {
                std::cmp::Ordering::Less => cursor = node.left,
                std::cmp::Ordering::Greater => cursor = node.right,
                std::cmp::Ordering::Equal => return Some(node.multiplicity),
            }
        }
        None
    }

    /// Adds `delta` to an existing key's multiplicity and to every subtree
    /// count on the way down; false (and no change) if the key is absent.
    fn adjust_existing(&mut self, key: i64, delta: i64) -> bool {
        if self.multiplicity_of(key).is_none() {
            return false;
        }
        let mut cursor = self.root;
        while cursor != NO_NODE {
            let node = &mut self.nodes[cursor as usize];
            node.subtree_count = node.subtree_count.wrapping_add_signed(delta);
            match key.cmp(&node.key) {
                std::cmp::Ordering::Less => cursor = node.left,
                std::cmp::Ordering::Greater => cursor = node.right,
                std::cmp::Ordering::Equal => {
                    node.multiplicity = node.multiplicity.wrapping_add_signed(delta);
                    break;
                }
            }
        }
        true
    }

    fn allocate(&mut self, key: i64) -> u32 {
        let node = Node {
            key,
            multiplicity: 1,
            subtree_count: 1,
            left: NO_NODE,
            right: NO_NODE,
        };
        match self.free_slots.pop() {
            Some(slot) => {
                self.nodes[slot as usize] = node;
                slot
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn subtree_count(&self, node: u32) -> u64 {
        if node == NO_NODE {
            0
        } else {
            self.nodes[node as usize].subtree_count
        }
    }

    fn refresh(&mut self, node: u32) {
        let (left, right) = {
            let current = &self.nodes[node as usize];
            (current.left, current.right)
        };
        let total = self.subtree_count(left)
            + self.subtree_count(right)
            + self.nodes[node as usize].multiplicity;
        self.nodes[node as usize].subtree_count = total;
    }

    /// Splits into (keys < `key`, keys ≥ `key`), or with `key_goes_left`
    /// into (keys ≤ `key`, keys > `key`).
    fn split(&mut self, node: u32, key: i64, key_goes_left: bool) -> (u32, u32) {
        if node == NO_NODE {
            return (NO_NODE, NO_NODE);
        }
        let node_key = self.nodes[node as usize].key;
        let goes_left = node_key < key || (key_goes_left && node_key == key);
        if goes_left {
            let right = self.nodes[node as usize].right;
            let (middle, rest) = self.split(right, key, key_goes_left);
            self.nodes[node as usize].right = middle;
            self.refresh(node);
            (node, rest)
        } else {
            let left = self.nodes[node as usize].left;
            let (rest, middle) = self.split(left, key, key_goes_left);
            self.nodes[node as usize].left = middle;
            self.refresh(node);
            (rest, node)
        }
    }

    /// Joins two treaps where every key of `smaller` is below every key of
    /// `larger`.
    fn merge(&mut self, smaller: u32, larger: u32) -> u32 {
        if smaller == NO_NODE {
            return larger;
        }
        if larger == NO_NODE {
            return smaller;
        }
        let smaller_priority = priority_of(self.nodes[smaller as usize].key);
        let larger_priority = priority_of(self.nodes[larger as usize].key);
        if smaller_priority >= larger_priority {
            let right = self.nodes[smaller as usize].right;
            let merged = self.merge(right, larger);
            self.nodes[smaller as usize].right = merged;
            self.refresh(smaller);
            smaller
        } else {
            let left = self.nodes[larger as usize].left;
            let merged = self.merge(smaller, left);
            self.nodes[larger as usize].left = merged;
            self.refresh(larger);
            larger
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_duplicates_and_extremes() {
        let mut multiset = CountingMultiset::new();
        for key in [5, 5, -3, i64::MIN, i64::MAX, 5] {
            multiset.insert(key);
        }
        assert_eq!(multiset.len(), 6);
        assert_eq!(multiset.count_at_most(5), 5);
        assert_eq!(multiset.count_at_most(4), 2);
        assert_eq!(multiset.count_at_most(i64::MIN), 1);
        assert_eq!(multiset.count_at_most(i64::MAX), 6);
        assert!(multiset.remove(5));
        assert!(!multiset.remove(7));
        assert_eq!(multiset.count_at_most(5), 4);
        assert!(multiset.remove(i64::MIN));
        assert_eq!(multiset.count_at_most(0), 1);
    }

    /// Each key's children's keys and subtree count.
    type Nodes = std::collections::BTreeMap<i64, (Option<i64>, Option<i64>, u64)>;

    /// The root's key and every node: the tree's shape, whatever the slots.
    fn shape(set: &CountingMultiset) -> (Option<i64>, Nodes) {
        let key_of = |node: u32| (node != NO_NODE).then(|| set.nodes[node as usize].key);
        let mut nodes = std::collections::BTreeMap::new();
        let mut pending = vec![set.root];
        while let Some(node) = pending.pop() {
            if node == NO_NODE {
                continue;
            }
            let current = &set.nodes[node as usize];
            nodes.insert(
                current.key,
                (
                    key_of(current.left),
                    key_of(current.right),
                    current.subtree_count,
                ),
            );
            pending.extend([current.left, current.right]);
        }
        (key_of(set.root), nodes)
    }

    proptest! {
        #[test]
        fn built_at_once_is_the_tree_inserts_make(keys in proptest::collection::vec(-50_i64..50, 0..300), more in proptest::collection::vec(-60_i64..60, 0..20)) {
            let mut inserted = CountingMultiset::new();
            for key in &keys {
                inserted.insert(*key);
            }
            let mut built = CountingMultiset::from_keys(keys.clone());
            prop_assert_eq!(built.len(), inserted.len());
            prop_assert_eq!(shape(&built), shape(&inserted));
            // And it goes on like any other.
            for key in more {
                built.insert(key);
                inserted.insert(key);
                prop_assert_eq!(built.remove(key + 1), inserted.remove(key + 1));
            }
            for probe in -61_i64..61 {
                prop_assert_eq!(built.count_at_most(probe), inserted.count_at_most(probe));
            }
        }

        #[test]
        fn counts_equal_a_sorted_list(operations in proptest::collection::vec((any::<bool>(), -20_i64..20), 0..200)) {
            let mut multiset = CountingMultiset::new();
            let mut plain: Vec<i64> = Vec::new();
            for (insert, key) in operations {
                if insert {
                    multiset.insert(key);
                    plain.push(key);
                } else {
                    let position = plain.iter().position(|value| *value == key);
                    prop_assert_eq!(multiset.remove(key), position.is_some());
                    if let Some(position) = position {
                        plain.swap_remove(position);
                    }
                }
                prop_assert_eq!(multiset.len(), plain.len() as u64);
            }
            for probe in -21_i64..21 {
                let at_most = plain.iter().filter(|value| **value <= probe).count() as u64;
                prop_assert_eq!(multiset.count_at_most(probe), at_most);
            }
        }
    }
}
