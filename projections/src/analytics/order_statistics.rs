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

    proptest! {
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
