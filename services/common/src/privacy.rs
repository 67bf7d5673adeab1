//! Personal data on the log: identifiers travel as pseudonyms (a keyed
//! hash, so linking never needs the clear value) and personal fields as
//! values sealed with a data key of the event's subject. Destroying a
//! subject's data keys makes every sealed value of theirs unreadable, on
//! every topic and in every projection, however often the log is replayed.
//!
//! The primitives come from RustCrypto: HMAC-SHA-256 for pseudonyms and
//! XChaCha20-Poly1305 for sealing, whose 192-bit nonces can be drawn at
//! random for every value without counting.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rapport_proto::v1::Sealed;
use sha2::Sha256;

/// Bytes of a data key and of the pseudonym key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// Bytes of the keyed hash kept in a pseudonym: 128 bits, as many as a
/// UUID, so collisions among a shop's identifiers are out of reach.
const PSEUDONYM_BYTES: usize = 16;
/// What every pseudonym starts with, so it is never taken for a clear value.
pub const PSEUDONYM_PREFIX: &str = "p_";

/// A secret key: a data key or the pseudonym key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_BYTES]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    /// A new random key.
    pub fn random() -> crate::Result<Self> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|error| {
            crate::Error::Config(format!("the system has no randomness: {error}"))
        })?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

/// The pseudonym of identifier `value` of kind `kind` (`"email"`, …):
/// `p_` and 32 hex digits. The same under the same key, whoever computes
/// it; without the key, not even a guessed value can be checked.
pub fn pseudonym(key: &SecretKey, kind: &str, value: &str) -> String {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(kind.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(PSEUDONYM_PREFIX.len() + 2 * PSEUDONYM_BYTES);
    text.push_str(PSEUDONYM_PREFIX);
    for byte in &digest[..PSEUDONYM_BYTES] {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the sealed value's nonce has {0} bytes, not 24")]
    Nonce(usize),
    /// A wrong key, another event's value, or altered bytes.
    #[error("the sealed value does not open with this key for this event")]
    Refused,
}

fn associated_data(event_id: &str, subject: &str, key_id: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(event_id.len() + subject.len() + key_id.len() + 2);
    for part in [event_id, subject, key_id] {
        data.extend_from_slice(part.as_bytes());
        data.push(0);
    }
    data
}

/// Seals `plaintext` for event `event_id` with data key `key_id` of
/// `subject`.
pub fn seal(
    key: &SecretKey,
    subject: &str,
    key_id: &str,
    event_id: &str,
    plaintext: &[u8],
) -> crate::Result<Sealed> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)
        .map_err(|error| crate::Error::Config(format!("the system has no randomness: {error}")))?;
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &associated_data(event_id, subject, key_id),
            },
        )
        .map_err(|_| crate::Error::Config("sealing failed".to_owned()))?;
    Ok(Sealed {
        subject: subject.to_owned(),
        key_id: key_id.to_owned(),
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Opens a value [`seal`] sealed for event `event_id`.
pub fn open(key: &SecretKey, sealed: &Sealed, event_id: &str) -> Result<Vec<u8>, OpenError> {
    if sealed.nonce.len() != NONCE_BYTES {
        return Err(OpenError::Nonce(sealed.nonce.len()));
    }
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let nonce: [u8; NONCE_BYTES] = sealed.nonce.as_slice().try_into().expect("length checked");
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &associated_data(event_id, &sealed.subject, &sealed.key_id),
            },
        )
        .map_err(|_| OpenError::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_keyed_stable_and_separate_kinds() {
        let key = SecretKey::random().unwrap();
        let other = SecretKey::random().unwrap();
        let ada = pseudonym(&key, "email", "ada@example.com");
        assert!(ada.starts_with(PSEUDONYM_PREFIX));
        assert_eq!(ada.len(), 2 + 32);
        assert_eq!(ada, pseudonym(&key, "email", "ada@example.com"));
        assert_ne!(ada, pseudonym(&other, "email", "ada@example.com"));
        assert_ne!(ada, pseudonym(&key, "phone", "ada@example.com"));
        // The separator keeps kind and value apart
        assert_ne!(pseudonym(&key, "ab", "c"), pseudonym(&key, "a", "bc"));
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_for_its_event() {
        let key = SecretKey::random().unwrap();
        let sealed = seal(&key, "p_1", "k1", "e-1", b"Ada Lovelace").unwrap();
        assert!(
            !sealed.ciphertext.windows(3).any(|window| window == b"Ada"),
            "sealed bytes hide the text"
        );
        assert_eq!(open(&key, &sealed, "e-1").unwrap(), b"Ada Lovelace");
        assert_eq!(open(&key, &sealed, "e-2"), Err(OpenError::Refused));
        assert_eq!(
            open(&SecretKey::random().unwrap(), &sealed, "e-1"),
            Err(OpenError::Refused)
        );
        let mut moved = sealed.clone();
        moved.subject = "p_2".to_owned();
        assert_eq!(open(&key, &moved, "e-1"), Err(OpenError::Refused));
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert_eq!(open(&key, &altered, "e-1"), Err(OpenError::Refused));
        // Two seals of the same text differ (fresh nonces)
        let again = seal(&key, "p_1", "k1", "e-1", b"Ada Lovelace").unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn a_key_is_never_printed() {
        let key = SecretKey::random().unwrap();
        assert_eq!(format!("{key:?}"), "SecretKey(…)");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        #[test]
        fn fuzz_any_sealed_value_opens_or_is_refused(
            nonce in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..30),
            ciphertext in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            event in ".{0,12}",
        ) {
            let key = SecretKey::from_bytes(&[7; KEY_BYTES]).unwrap();
            let sealed = Sealed { subject: "p_1".into(), key_id: "k".into(), nonce, ciphertext };
            proptest::prop_assert!(open(&key, &sealed, &event).is_err());
        }
    }
}
