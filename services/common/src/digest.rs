//! Stable digests: 64-bit FNV-1a (the `fnv` crate), the same in every
//! process and release, unlike the standard library's hasher. For
//! comparing stored states and for picking stable samples, not for
//! anything an adversary chooses.

use std::hash::Hasher as _;

use fnv::FnvHasher;

/// A digest fed piece by piece.
#[derive(Default)]
pub struct Digest(FnvHasher);

impl Digest {
    /// Adds `bytes` as they are.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    /// Adds one entry of a list; lengths go first so that no two entry
    /// lists digest the same bytes.
    pub fn entry(&mut self, key: &[u8], value: &[u8]) {
        self.bytes(&(key.len() as u64).to_be_bytes());
        self.bytes(key);
        self.bytes(&(value.len() as u64).to_be_bytes());
        self.bytes(value);
    }

    pub fn value(&self) -> u64 {
        self.0.finish()
    }

    /// The digest as 16 hexadecimal digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.value())
    }
}

/// The digest of one piece of bytes.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut digest = Digest::default();
    digest.bytes(bytes);
    digest.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_fnv_1a_as_published() {
        // Test vectors of the FNV reference (www.isthe.com/chongo/tech/comp/fnv).
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn entries_are_length_prefixed() {
        let digest = |entries: &[(&[u8], &[u8])]| {
            let mut digest = Digest::default();
            for (key, value) in entries {
                digest.entry(key, value);
            }
            digest.value()
        };
        assert_ne!(digest(&[(b"ab", b"c")]), digest(&[(b"a", b"bc")]));
        assert_eq!(digest(&[(b"k", b"v")]), digest(&[(b"k", b"v")]));
    }
}
