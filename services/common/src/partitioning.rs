//! Which partition of a keyed topic a key lands on: Kafka's default
//! partitioner (murmur2 of the key, made positive, modulo the partition
//! count), which every Rapport producer uses (`partitioner =
//! murmur2_random`, as Java clients do). A projector needs it to know which
//! process holds a customer id's profile without asking every process.
//!
//! Hand-written: it is the twenty lines of Kafka's own `Utils.murmur2`,
//! whose seed and tail handling differ from the generic MurmurHash2 that
//! hashing crates carry; the tests pin it to Kafka's published values.

/// Kafka's murmur2 of `data` (a signed 32-bit value in Java).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (index, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * index);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `count` that a record keyed `key` is written to.
pub fn partition_of(key: &[u8], count: i32) -> i32 {
    debug_assert!(count > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The values Kafka's own test of `Utils.murmur2` checks.
    #[test]
    fn murmur2_gives_kafkas_values() {
        for (key, expected) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key.as_bytes()), expected, "{key}");
        }
    }

    proptest! {
        #[test]
        fn every_key_lands_on_a_partition_of_the_topic(key in proptest::collection::vec(any::<u8>(), 0..64), count in 1i32..512) {
            let partition = partition_of(&key, count);
            prop_assert!((0..count).contains(&partition));
        }
    }
}
