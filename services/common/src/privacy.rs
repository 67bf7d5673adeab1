//! Personal data on the log: identifiers travel as pseudonyms (a keyed
//! hash, so linking never needs the clear value) and personal fields as
//! values sealed with a data key of the event's subject. Destroying a
//! subject's data keys makes every sealed value of theirs unreadable, on
//! every topic and in every projection, however often the log is replayed.
//!
//! The primitives come from RustCrypto: HMAC-SHA-256 for pseudonyms and
//! XChaCha20-Poly1305 for sealing, whose 192-bit nonces can be drawn at
//! random for every value without counting.

use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
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

    /// 64 lowercase hex digits, as [`to_hex`](Self::to_hex) writes them.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; KEY_BYTES];
        hex_into(text, &mut bytes)?;
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub subjects: Vec<String>,
}

/// One data key by subject and id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub subject: String,
    pub key_id: String,
}

/// `POST /v1/vault/keys/lookup`: these data keys, where they still exist.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub keys: Vec<KeyRef>,
}

/// A data key as the vault answers it: 64 hex digits, or `null` where the
/// vault has none (destroyed by an erasure, or never made).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeyAnswer {
    pub subject: String,
    pub key_id: String,
    pub key: Option<String>,
}

/// The answer of both key routes, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KeysAnswer {
    pub keys: Vec<KeyAnswer>,
}

/// `GET /v1/vault/pseudonym-key`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PseudonymKeyAnswer {
    pub key: String,
}

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// A wrong key, a value moved to another subject or key, or altered
    /// bytes.
    #[error("the sealed value does not open with this key")]
    Refused,
}

/// A data key as the vault hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKey {
    pub subject: String,
    pub key_id: String,
    pub key: SecretKey,
}

/// The first byte of a token's bytes: the layout below. Tokens of the
/// first layout (a protobuf `Sealed`, whose first byte is a field tag,
/// 0x0a) are still read.
const TOKEN_FORMAT: u8 = 2;
/// Bytes of a data key's id (16 hex digits as text).
const KEY_ID_BYTES: usize = 8;
/// Format, subject (the 16 bytes a pseudonym's hex digits spell) and key
/// id: the token's header, which is also the associated data, so a value
/// opens only under the subject and key it names.
const HEADER_BYTES: usize = 1 + PSEUDONYM_BYTES + KEY_ID_BYTES;
/// Poly1305's tag.
const TAG_BYTES: usize = 16;
/// Nonces drawn from the system at once: most events seal fewer values.
const NONCE_POOL: usize = 4;

/// A value as a token carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub subject: String,
    pub key_id: String,
    nonce: [u8; NONCE_BYTES],
    ciphertext: Vec<u8>,
    /// What the cipher authenticates beside the ciphertext.
    associated: Vec<u8>,
}

/// The header of a token sealed with `key`; `None` when its subject is not
/// a pseudonym of generation 0 or its key id not 16 hex digits, which a
/// vault never hands out.
fn header(key: &DataKey) -> Option<[u8; HEADER_BYTES]> {
    let mut header = [0u8; HEADER_BYTES];
    header[0] = TOKEN_FORMAT;
    let digits = key.subject.strip_prefix(PSEUDONYM_PREFIX)?;
    hex_into(digits, &mut header[1..1 + PSEUDONYM_BYTES])?;
    hex_into(&key.key_id, &mut header[1 + PSEUDONYM_BYTES..])?;
    Some(header)
}

/// `text`'s lowercase hex digits into `out`, which they must fill
/// exactly.
fn hex_into(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != 2 * out.len() {
        return None;
    }
    let digit = |byte: u8| match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    };
    for (pair, slot) in text.as_bytes().chunks_exact(2).zip(out.iter_mut()) {
        *slot = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

/// Seals values with one data key, setting its cipher and header up once
/// and drawing nonces from the system a few at a time.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    header: [u8; HEADER_BYTES],
    nonces: std::cell::RefCell<([u8; NONCE_BYTES * NONCE_POOL], usize)>,
}

impl Sealer {
    pub fn new(key: &DataKey) -> crate::Result<Self> {
        let header = header(key).ok_or_else(|| {
            crate::Error::Config(format!(
                "data key {} of {} is not one the vault issues",
                key.key_id, key.subject
            ))
        })?;
        Ok(Self {
            cipher: XChaCha20Poly1305::new(key.key.as_bytes().into()),
            header,
            nonces: std::cell::RefCell::new(([0; NONCE_BYTES * NONCE_POOL], NONCE_POOL)),
        })
    }

    fn nonce(&self) -> crate::Result<[u8; NONCE_BYTES]> {
        let mut pool = self.nonces.borrow_mut();
        let (bytes, used) = &mut *pool;
        if *used == NONCE_POOL {
            getrandom::fill(bytes).map_err(|error| {
                crate::Error::Config(format!("the system has no randomness: {error}"))
            })?;
            *used = 0;
        }
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&bytes[*used * NONCE_BYTES..(*used + 1) * NONCE_BYTES]);
        *used += 1;
        Ok(nonce)
    }

    /// `text` sealed into a token: [`TOKEN_PREFIX`] and the URL-safe
    /// base64 of header, nonce, ciphertext and tag.
    pub fn seal_text(&self, text: &str) -> crate::Result<String> {
        use base64::Engine as _;
        let nonce = self.nonce()?;
        let mut bytes = Vec::with_capacity(HEADER_BYTES + NONCE_BYTES + text.len() + TAG_BYTES);
        bytes.extend_from_slice(&self.header);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(text.as_bytes());
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                &self.header,
                (&mut bytes[HEADER_BYTES + NONCE_BYTES..]).into(),
            )
            .map_err(|_| crate::Error::Config("sealing failed".to_owned()))?;
        bytes.extend_from_slice(&tag);
        let mut token = String::with_capacity(TOKEN_PREFIX.len() + bytes.len().div_ceil(3) * 4);
        token.push_str(TOKEN_PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&bytes, &mut token);
        Ok(token)
    }
}

/// Opens a value a [`Sealer`] sealed, with the key it names.
pub fn open(key: &SecretKey, sealed: &SealedValue) -> Result<Vec<u8>, OpenError> {
    XChaCha20Poly1305::new(key.as_bytes().into())
        .decrypt(
            &XNonce::from(sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &sealed.associated,
            },
        )
        .map_err(|_| OpenError::Refused)
}

/// What a sealed text token starts with.
pub const TOKEN_PREFIX: &str = "sealed:";
/// What a reader shows for a value whose key was destroyed.
pub const ERASED: &str = "[erased]";

/// `text` sealed into a token with `key`.
pub fn seal_text(key: &DataKey, text: &str) -> crate::Result<String> {
    Sealer::new(key)?.seal_text(text)
}

/// The sealed value of a whole token (`None`: not a token).
pub fn parse_token(text: &str) -> Option<SealedValue> {
    use base64::Engine as _;
    let encoded = text.strip_prefix(TOKEN_PREFIX)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    match bytes.first() {
        Some(&TOKEN_FORMAT) => {
            if bytes.len() < HEADER_BYTES + NONCE_BYTES + TAG_BYTES {
                return None;
            }
            let (header, rest) = bytes.split_at(HEADER_BYTES);
            let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
            let mut subject = String::with_capacity(PSEUDONYM_PREFIX.len() + 2 * PSEUDONYM_BYTES);
            subject.push_str(PSEUDONYM_PREFIX);
            push_hex(&mut subject, &header[1..1 + PSEUDONYM_BYTES]);
            let mut key_id = String::with_capacity(2 * KEY_ID_BYTES);
            push_hex(&mut key_id, &header[1 + PSEUDONYM_BYTES..]);
            Some(SealedValue {
                subject,
                key_id,
                nonce: nonce.try_into().ok()?,
                ciphertext: ciphertext.to_vec(),
                associated: header.to_vec(),
            })
        }
        _ => first_format(&bytes),
    }
}

/// A token of the first layout: a protobuf `Sealed` that names its event,
/// bound to event, subject and key id.
fn first_format(bytes: &[u8]) -> Option<SealedValue> {
    use prost::Message as _;
    let sealed = rapport_proto::v1::Sealed::decode(bytes).ok()?;
    if sealed.subject.is_empty() || sealed.ciphertext.is_empty() {
        return None;
    }
    let mut associated = Vec::new();
    for part in [&sealed.event_id, &sealed.subject, &sealed.key_id] {
        associated.extend_from_slice(part.as_bytes());
        associated.push(0);
    }
    Some(SealedValue {
        nonce: sealed.nonce.as_slice().try_into().ok()?,
        subject: sealed.subject,
        key_id: sealed.key_id,
        ciphertext: sealed.ciphertext,
        associated,
    })
}

/// Whether `text` holds a sealed token anywhere.
pub fn holds_token(text: &str) -> bool {
    text.contains(TOKEN_PREFIX)
}

/// Every token in `text` replaced by what `open` makes of its sealed value
/// (the clear text, or [`ERASED`]). A token runs from its prefix to the
/// first character outside URL-safe base64.
pub fn replace_tokens(text: &str, mut open: impl FnMut(&SealedValue) -> Option<String>) -> String {
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

    const P1: &str = "p_000000000000000000000000000000a1";
    const P2: &str = "p_000000000000000000000000000000a2";
    const KEY_ID: &str = "0123456789abcdef";

    fn data_key(subject: &str) -> DataKey {
        DataKey {
            subject: subject.to_owned(),
            key_id: KEY_ID.to_owned(),
            key: SecretKey::random().unwrap(),
        }
    }

    /// A token's bytes, and the token again from bytes.
    fn bytes_of(token: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.strip_prefix(TOKEN_PREFIX).unwrap())
            .unwrap()
    }

    fn token_of(bytes: &[u8]) -> String {
        use base64::Engine as _;
        TOKEN_PREFIX.to_owned() + &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_as_it_was_sealed() {
        let key = data_key(P1);
        let token = seal_text(&key, "Ada Lovelace").unwrap();
        assert!(!token.contains("Ada"), "{token}");
        let sealed = parse_token(&token).unwrap();
        assert_eq!(
            (sealed.subject.as_str(), sealed.key_id.as_str()),
            (P1, KEY_ID)
        );
        assert_eq!(open(&key.key, &sealed).unwrap(), b"Ada Lovelace");
        assert_eq!(
            open(&SecretKey::random().unwrap(), &sealed),
            Err(OpenError::Refused)
        );
        // Format, subject, key id, nonce, text, tag: 25 + 24 + 12 + 16 bytes
        let bytes = bytes_of(&token);
        assert_eq!(bytes.len(), 25 + 24 + 12 + 16);
        // Moved to another subject or key id, or altered: refused
        for flipped in [1, 1 + 16, bytes.len() - 1, 25 + 24] {
            let mut altered = bytes.clone();
            altered[flipped] ^= 1;
            let altered = parse_token(&token_of(&altered)).unwrap();
            assert_eq!(
                open(&key.key, &altered),
                Err(OpenError::Refused),
                "byte {flipped}"
            );
        }
        // Two seals of the same text differ (fresh nonces), also past the
        // nonces drawn at once
        let sealer = Sealer::new(&key).unwrap();
        let tokens: std::collections::BTreeSet<String> = (0..2 * NONCE_POOL + 1)
            .map(|_| sealer.seal_text("Ada Lovelace").unwrap())
            .collect();
        assert_eq!(tokens.len(), 2 * NONCE_POOL + 1);
        // A key the vault would never issue is refused
        assert!(Sealer::new(&data_key("p_1")).is_err());
        let mut odd_id = data_key(P1);
        odd_id.key_id = "k1".into();
        assert!(Sealer::new(&odd_id).is_err());
    }

    #[test]
    fn tokens_of_the_first_layout_still_open() {
        use prost::Message as _;
        // As the first layout sealed: XChaCha20-Poly1305 over event id,
        // subject and key id, in a protobuf `Sealed`.
        let key = data_key(P1);
        let nonce = [9u8; NONCE_BYTES];
        let ciphertext = XChaCha20Poly1305::new(key.key.as_bytes().into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: b"Ada",
                    aad: format!("e-1\0{P1}\0{KEY_ID}\0").as_bytes(),
                },
            )
            .unwrap();
        let first = rapport_proto::v1::Sealed {
            subject: P1.into(),
            key_id: KEY_ID.into(),
            nonce: nonce.to_vec(),
            ciphertext,
            event_id: "e-1".into(),
        };
        let token = token_of(&first.encode_to_vec());
        let sealed = parse_token(&token).unwrap();
        assert_eq!(open(&key.key, &sealed).unwrap(), b"Ada");
        let mut other_event = first.clone();
        other_event.event_id = "e-2".into();
        let moved = parse_token(&token_of(&other_event.encode_to_vec())).unwrap();
        assert_eq!(open(&key.key, &moved), Err(OpenError::Refused));
    }

    #[test]
    fn tokens_are_replaced_in_place_and_unknown_keys_read_as_erased() {
        let ada = data_key(P1);
        let gone = data_key(P2);
        let name = seal_text(&ada, "Ada Lovelace").unwrap();
        let url = seal_text(&gone, "https://shop.example/secret").unwrap();
        assert!(parse_token(&name).is_some());
        assert!(!name.contains("Ada"));
        let text = format!("registered {name}, viewed {url}.");
        let mut wanted = Vec::new();
        token_keys(&text, &mut wanted);
        assert_eq!(wanted.len(), 2);
        assert_eq!(wanted[0].subject, P1);
        let shown = replace_tokens(&text, |sealed| {
            (sealed.subject == P1)
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
        fn fuzz_any_token_opens_or_is_refused(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            format_two in proptest::prelude::any::<bool>(),
            event in ".{0,12}",
        ) {
            let key = SecretKey::from_bytes(&[7; KEY_BYTES]).unwrap();
            let mut bytes = bytes;
            if format_two && !bytes.is_empty() {
                bytes[0] = TOKEN_FORMAT;
            }
            if let Some(sealed) = parse_token(&token_of(&bytes)) {
                proptest::prop_assert!(open(&key, &sealed).is_err());
            }
            let text = format!("{event}{TOKEN_PREFIX}{event}");
            let _ = replace_tokens(&text, |_| None);
        }
    }
}
