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

    /// 64 hex digits, for the vault's answers to services.
    pub fn to_hex(&self) -> String {
        let mut text = String::with_capacity(2 * KEY_BYTES);
        push_hex(&mut text, &self.0);
        text
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 2 * KEY_BYTES || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; KEY_BYTES];
        for (slot, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            *slot = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

/// Whether `text` is a pseudonym as [`pseudonym`] makes them.
pub use rapport_projections::identity::is_pseudonym;

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
    push_hex(&mut text, &digest[..PSEUDONYM_BYTES]);
    text
}

/// Appends `bytes` as lowercase hex digits. (Not `format!` per byte: in a
/// pseudonym that cost three times the hash.)
pub fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// Most keys one vault request may name.
pub const MAX_KEYS_PER_REQUEST: usize = 10_000;

/// `POST /v1/vault/keys`: the data key of each subject, made if missing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub subjects: Vec<String>,
}

/// One data key by subject and id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub subject: String,
    pub key_id: String,
}

/// `POST /v1/vault/keys/lookup`: these data keys, where they still exist.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub keys: Vec<KeyRef>,
}

/// A data key as the vault answers it: 64 hex digits, or `null` where the
/// vault has none (destroyed by an erasure, or never made).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyAnswer {
    pub subject: String,
    pub key_id: String,
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeysAnswer {
    pub keys: Vec<KeyAnswer>,
}

/// `GET /v1/vault/pseudonym-key`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PseudonymKeyAnswer {
    pub key: String,
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
    let mut data = Vec::with_capacity(event_id.len() + subject.len() + key_id.len() + 3);
    for part in [event_id, subject, key_id] {
        data.extend_from_slice(part.as_bytes());
        data.push(0);
    }
    data
}

/// A data key as the vault hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKey {
    pub subject: String,
    pub key_id: String,
    pub key: SecretKey,
}

/// Seals `plaintext`, which came with event `event_id`, with `key`.
pub fn seal(key: &DataKey, event_id: &str, plaintext: &[u8]) -> crate::Result<Sealed> {
    Sealer::new(key).seal(event_id, plaintext)
}

/// Seals values with one data key, setting its cipher up once.
pub struct Sealer<'a> {
    key: &'a DataKey,
    cipher: XChaCha20Poly1305,
}

impl<'a> Sealer<'a> {
    pub fn new(key: &'a DataKey) -> Self {
        Self {
            key,
            cipher: XChaCha20Poly1305::new(key.key.as_bytes().into()),
        }
    }

    /// `text`, which came with event `event_id`, sealed into a token.
    pub fn seal_text(&self, event_id: &str, text: &str) -> crate::Result<String> {
        use base64::Engine as _;
        use prost::Message as _;
        let sealed = self.seal(event_id, text.as_bytes())?;
        let mut token = String::from(TOKEN_PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_string(sealed.encode_to_vec(), &mut token);
        Ok(token)
    }

    fn seal(&self, event_id: &str, plaintext: &[u8]) -> crate::Result<Sealed> {
        let key = self.key;
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|error| {
            crate::Error::Config(format!("the system has no randomness: {error}"))
        })?;
        let ciphertext = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &associated_data(event_id, &key.subject, &key.key_id),
                },
            )
            .map_err(|_| crate::Error::Config("sealing failed".to_owned()))?;
        Ok(Sealed {
            subject: key.subject.clone(),
            key_id: key.key_id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
            event_id: event_id.to_owned(),
        })
    }
}

/// Opens a value [`seal`] sealed, with the key it names.
pub fn open(key: &SecretKey, sealed: &Sealed) -> Result<Vec<u8>, OpenError> {
    if sealed.nonce.len() != NONCE_BYTES {
        return Err(OpenError::Nonce(sealed.nonce.len()));
    }
    let nonce: [u8; NONCE_BYTES] = sealed.nonce.as_slice().try_into().expect("length checked");
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &associated_data(&sealed.event_id, &sealed.subject, &sealed.key_id),
            },
        )
        .map_err(|_| OpenError::Refused)
}

/// What a sealed text token starts with.
pub const TOKEN_PREFIX: &str = "sealed:";
/// What a reader shows for a value whose key was destroyed.
pub const ERASED: &str = "[erased]";

/// `text`, which came with event `event_id`, sealed into a token.
pub fn seal_text(key: &DataKey, event_id: &str, text: &str) -> crate::Result<String> {
    Sealer::new(key).seal_text(event_id, text)
}

/// The sealed value of a whole token (`None`: not a token).
pub fn parse_token(text: &str) -> Option<Sealed> {
    use base64::Engine as _;
    use prost::Message as _;
    let encoded = text.strip_prefix(TOKEN_PREFIX)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    Sealed::decode(bytes.as_slice())
        .ok()
        .filter(|sealed| !sealed.subject.is_empty() && !sealed.ciphertext.is_empty())
}

/// Whether `text` holds a sealed token anywhere.
pub fn holds_token(text: &str) -> bool {
    text.contains(TOKEN_PREFIX)
}

/// Every token in `text` replaced by what `open` makes of its sealed value
/// (the clear text, or [`ERASED`]). A token runs from its prefix to the
/// first character outside URL-safe base64.
pub fn replace_tokens(text: &str, mut open: impl FnMut(&Sealed) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(TOKEN_PREFIX) {
        out.push_str(&rest[..start]);
        let after = &rest[start + TOKEN_PREFIX.len()..];
        let length = after
            .bytes()
            .take_while(|byte| byte.is_ascii_alphanumeric() || *byte == b'-' || *byte == b'_')
            .count();
        let token = &rest[start..start + TOKEN_PREFIX.len() + length];
        match parse_token(token) {
            Some(sealed) => out.push_str(&open(&sealed).unwrap_or_else(|| ERASED.to_owned())),
            None => out.push_str(token),
        }
        rest = &after[length..];
    }
    out.push_str(rest);
    out
}

/// The subjects of the tokens in `text`, with their key ids: what a reader
/// must look up before [`replace_tokens`].
pub fn token_keys(text: &str, keys: &mut Vec<KeyRef>) {
    let mut rest = text;
    while let Some(start) = rest.find(TOKEN_PREFIX) {
        let after = &rest[start + TOKEN_PREFIX.len()..];
        let length = after
            .bytes()
            .take_while(|byte| byte.is_ascii_alphanumeric() || *byte == b'-' || *byte == b'_')
            .count();
        if let Some(sealed) = parse_token(&rest[start..start + TOKEN_PREFIX.len() + length]) {
            keys.push(KeyRef {
                subject: sealed.subject,
                key_id: sealed.key_id,
            });
        }
        rest = &after[length..];
    }
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

    fn data_key(subject: &str) -> DataKey {
        DataKey {
            subject: subject.to_owned(),
            key_id: "k1".to_owned(),
            key: SecretKey::random().unwrap(),
        }
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_as_it_was_sealed() {
        let key = data_key("p_1");
        let sealed = seal(&key, "e-1", b"Ada Lovelace").unwrap();
        assert!(
            !sealed.ciphertext.windows(3).any(|window| window == b"Ada"),
            "sealed bytes hide the text"
        );
        assert_eq!(open(&key.key, &sealed).unwrap(), b"Ada Lovelace");
        let mut other_event = sealed.clone();
        other_event.event_id = "e-2".to_owned();
        assert_eq!(open(&key.key, &other_event), Err(OpenError::Refused));
        assert_eq!(
            open(&SecretKey::random().unwrap(), &sealed),
            Err(OpenError::Refused)
        );
        let mut moved = sealed.clone();
        moved.subject = "p_2".to_owned();
        assert_eq!(open(&key.key, &moved), Err(OpenError::Refused));
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert_eq!(open(&key.key, &altered), Err(OpenError::Refused));
        // Two seals of the same text differ (fresh nonces)
        let again = seal(&key, "e-1", b"Ada Lovelace").unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn tokens_are_replaced_in_place_and_unknown_keys_read_as_erased() {
        let ada = data_key("p_1");
        let gone = data_key("p_2");
        let name = seal_text(&ada, "e-1", "Ada Lovelace").unwrap();
        let url = seal_text(&gone, "e-2", "https://shop.example/secret").unwrap();
        assert!(parse_token(&name).is_some());
        assert!(!name.contains("Ada"));
        let text = format!("registered {name}, viewed {url}.");
        let mut wanted = Vec::new();
        token_keys(&text, &mut wanted);
        assert_eq!(wanted.len(), 2);
        assert_eq!(wanted[0].subject, "p_1");
        let shown = replace_tokens(&text, |sealed| {
            (sealed.subject == "p_1")
                .then(|| String::from_utf8(open(&ada.key, sealed).ok()?).ok())
                .flatten()
        });
        assert_eq!(shown, "registered Ada Lovelace, viewed [erased].");
        assert_eq!(replace_tokens("no tokens", |_| None), "no tokens");
        assert_eq!(replace_tokens("sealed:!!", |_| None), "sealed:!!");
    }

    #[test]
    fn keys_travel_as_hex_and_pseudonyms_are_recognised() {
        let key = SecretKey::random().unwrap();
        assert_eq!(SecretKey::from_hex(&key.to_hex()), Some(key.clone()));
        assert_eq!(SecretKey::from_hex("00"), None);
        assert_eq!(SecretKey::from_hex(&"g".repeat(64)), None);
        assert_eq!(SecretKey::from_hex(&"é".repeat(32)), None);
        assert!(is_pseudonym(&pseudonym(&key, "email", "a@b.c")));
        assert!(!is_pseudonym("p_123"));
        assert!(!is_pseudonym(&format!("p_{}", "A".repeat(32))));
        assert!(!is_pseudonym("ada@example.com"));
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
            let sealed = Sealed { subject: "p_1".into(), key_id: "k".into(), nonce, ciphertext, event_id: event.clone() };
            proptest::prop_assert!(open(&key, &sealed).is_err());
            let text = format!("{event}{TOKEN_PREFIX}{event}");
            let _ = replace_tokens(&text, |_| None);
        }
    }
}
