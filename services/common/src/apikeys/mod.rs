//! API keys: what a key may do, how a secret is made and recognised, and
//! the fold of the key registry topic (`rapport.keys.v1`) that every service
//! runs to learn keys without a restart.
//!
//! A secret is `rk_<kind>_` and 64 hex digits (32 random bytes). Only its
//! SHA-256 is stored: for a random 256-bit secret a slow KDF adds nothing,
//! and looking the digest up in a map leaks at most which digests exist,
//! which does not help anyone find a secret that hashes to one.

mod gate;
mod registry;

pub use gate::{
    AuthMode, Caller, Gate, PageRefusal, RateLimits, RouteInfo, RouteTable, SESSION_COOKIE,
    ScopedRoutes, session_key,
};
pub use registry::{Registry, follow, write_record};

use std::collections::HashMap;

use prost::Message as _;
use rapport_proto::v1::{ApiKey, ApiKeyKind, ApiKeyUsed};
use sha2::{Digest as _, Sha256};

/// What a route needs of the key that calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// No key at all: `/healthz`.
    Open,
    /// `events:write`: posting events.
    Write,
    /// Reading customers, scores, segments, exports and metrics.
    Read,
    /// Everything under `/v1/admin/…`.
    Admin,
    /// The vault's keys: Rapport's own services.
    Service,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Open => "open",
            Scope::Write => "events:write",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Service => "service",
        }
    }
}

/// The three kinds of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Write,
    Read,
    Admin,
    Service,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Write, Kind::Read, Kind::Admin, Kind::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Write => "write",
            Kind::Read => "read",
            Kind::Admin => "admin",
            Kind::Service => "service",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether a key of this kind may call a route that needs `scope`. An
    /// admin key may do everything; the others only their own.
    pub fn grants(self, scope: Scope) -> bool {
        matches!(
            (self, scope),
            (_, Scope::Open)
                | (Kind::Admin, _)
                | (Kind::Write, Scope::Write)
                | (Kind::Read, Scope::Read)
                | (Kind::Service, Scope::Service)
        )
    }

    /// The kind a route's scope calls for, for refusals ("needs a read key").
    pub fn for_scope(scope: Scope) -> Option<Kind> {
        match scope {
            Scope::Open => None,
            Scope::Write => Some(Kind::Write),
            Scope::Read => Some(Kind::Read),
            Scope::Admin => Some(Kind::Admin),
            Scope::Service => Some(Kind::Service),
        }
    }

    fn prefix(self) -> String {
        format!("rk_{}_", self.as_str())
    }

    fn to_proto(self) -> ApiKeyKind {
        match self {
            Kind::Write => ApiKeyKind::Write,
            Kind::Read => ApiKeyKind::Read,
            Kind::Admin => ApiKeyKind::Admin,
            Kind::Service => ApiKeyKind::Service,
        }
    }

    fn from_proto(kind: i32) -> Option<Kind> {
        match ApiKeyKind::try_from(kind).ok()? {
            ApiKeyKind::Write => Some(Kind::Write),
            ApiKeyKind::Read => Some(Kind::Read),
            ApiKeyKind::Admin => Some(Kind::Admin),
            ApiKeyKind::Service => Some(Kind::Service),
            ApiKeyKind::Unspecified => None,
        }
    }
}

/// Random bytes in a secret: 256 bits.
const SECRET_BYTES: usize = 32;

/// SHA-256 of a presented secret: what the registry is looked up by.
pub type Digest = [u8; 32];

pub fn digest(secret: &str) -> Digest {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 * bytes.len());
    crate::privacy::push_hex(&mut text, bytes);
    text
}

fn random_bytes<const N: usize>() -> crate::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|error| crate::Error::Config(format!("the system has no randomness: {error}")))?;
    Ok(bytes)
}

/// A key as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    #[serde(serialize_with = "kind_name")]
    pub kind: Kind,
    pub name: String,
    pub created_at_ms: i64,
    /// `None`: never expires.
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// The latest use any service reported, to the minute.
    pub last_used_at_ms: Option<i64>,
    #[serde(skip)]
    digest: Digest,
}

fn kind_name<S: serde::Serializer>(kind: &Kind, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(kind.as_str())
}

impl KeyInfo {
    /// Whether the key is live at `now_ms`.
    pub fn state(&self, now_ms: i64) -> KeyState {
        if self.revoked_at_ms.is_some() {
            KeyState::Revoked
        } else if self.expires_at_ms.is_some_and(|expiry| expiry <= now_ms) {
            KeyState::Expired
        } else {
            KeyState::Live
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Live,
    Revoked,
    Expired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Live => "live",
            KeyState::Revoked => "revoked",
            KeyState::Expired => "expired",
        }
    }
}

/// A key just made: the secret, shown once, and the registry record.
pub struct NewKey {
    pub secret: String,
    pub info: KeyInfo,
}

/// Makes a key of `kind`. The caller writes [`NewKey::record`] to the
/// registry topic and shows the secret once.
pub fn create(
    kind: Kind,
    name: &str,
    created_at_ms: i64,
    expires_at_ms: Option<i64>,
) -> crate::Result<NewKey> {
    let secret = format!("{}{}", kind.prefix(), hex(&random_bytes::<SECRET_BYTES>()?));
    let id = hex(&random_bytes::<8>()?);
    let info = KeyInfo {
        id,
        kind,
        name: name.to_owned(),
        created_at_ms,
        expires_at_ms,
        revoked_at_ms: None,
        last_used_at_ms: None,
        digest: digest(&secret),
    };
    Ok(NewKey { secret, info })
}

impl KeyInfo {
    /// The registry record that defines this key: (record key, payload).
    pub fn record(&self) -> (Vec<u8>, Vec<u8>) {
        let record = ApiKey {
            id: self.id.clone(),
            kind: self.kind.to_proto() as i32,
            name: self.name.clone(),
            secret_sha256: self.digest.to_vec(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms.unwrap_or(0),
            revoked_at_ms: self.revoked_at_ms.unwrap_or(0),
        };
        (
            format!("{DEFINITION}{}", self.id).into_bytes(),
            record.encode_to_vec(),
        )
    }

    /// The record that revokes this key at `at_ms`.
    pub fn revoked(&self, at_ms: i64) -> KeyInfo {
        KeyInfo {
            revoked_at_ms: Some(at_ms),
            ..self.clone()
        }
    }
}

/// The record that says key `id` was used at `at_ms`.
pub fn usage_record(id: &str, at_ms: i64) -> (Vec<u8>, Vec<u8>) {
    (
        format!("{USAGE}{id}").into_bytes(),
        ApiKeyUsed {
            id: id.to_owned(),
            used_at_ms: at_ms,
        }
        .encode_to_vec(),
    )
}

/// The gate a service puts in front of its routes: following the key
/// registry (blocking until it is loaded), or letting everything through
/// when the configuration says `auth = "off"`.
pub fn start_gate(
    config: &crate::config::Config,
    metrics: &crate::metrics::Registry,
    service: &'static str,
) -> crate::Result<Gate> {
    let registry = match config.auth {
        AuthMode::Off => Registry::default(),
        AuthMode::Keys => follow(&config.kafka, &config.topics.keys, service)?,
    };
    Ok(Gate::new(
        config.auth,
        registry,
        config.rate_limits.clone(),
        metrics,
        service,
    ))
}

const DEFINITION: &str = "key:";
const USAGE: &str = "used:";

/// Why a registry record was skipped.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record key {0:?} is neither key:<id> nor used:<id>")]
    UnknownKey(String),
    #[error("payload does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("key {0} has no kind Rapport knows")]
    UnknownKind(String),
    #[error("key {0} has a digest of {1} bytes, not 32")]
    BadDigest(String, usize),
}

/// The registry, folded from its topic: every key ever made, by id and by
/// digest. Pure: no clock, no I/O.
#[derive(Debug, Default, Clone)]
pub struct KeyBook {
    by_id: HashMap<String, KeyInfo>,
    id_by_digest: HashMap<Digest, String>,
}

impl KeyBook {
    /// Folds one registry record. A record that does not decode is refused
    /// and changes nothing.
    pub fn apply(&mut self, key: &[u8], payload: &[u8]) -> Result<(), RecordError> {
        let key = String::from_utf8_lossy(key);
        if let Some(id) = key.strip_prefix(DEFINITION) {
            let record = ApiKey::decode(payload)?;
            let kind = Kind::from_proto(record.kind)
                .ok_or_else(|| RecordError::UnknownKind(id.to_owned()))?;
            let digest: Digest =
                record.secret_sha256.as_slice().try_into().map_err(|_| {
                    RecordError::BadDigest(id.to_owned(), record.secret_sha256.len())
                })?;
            let last_used_at_ms = self.by_id.get(id).and_then(|known| known.last_used_at_ms);
            if let Some(previous) = self.by_id.get(id) {
                self.id_by_digest.remove(&previous.digest);
            }
            self.id_by_digest.insert(digest, id.to_owned());
            let set = |value: i64| (value != 0).then_some(value);
            self.by_id.insert(
                id.to_owned(),
                KeyInfo {
                    id: id.to_owned(),
                    kind,
                    name: record.name,
                    created_at_ms: record.created_at_ms,
                    expires_at_ms: set(record.expires_at_ms),
                    revoked_at_ms: set(record.revoked_at_ms),
                    last_used_at_ms,
                    digest,
                },
            );
            Ok(())
        } else if let Some(id) = key.strip_prefix(USAGE) {
            let record = ApiKeyUsed::decode(payload)?;
            if let Some(known) = self.by_id.get_mut(id) {
                known.last_used_at_ms = known.last_used_at_ms.max(Some(record.used_at_ms));
            }
            Ok(())
        } else {
            Err(RecordError::UnknownKey(key.into_owned()))
        }
    }

    /// The key whose secret is `secret`, whatever its state.
    pub fn find(&self, secret: &str) -> Option<&KeyInfo> {
        self.by_id.get(self.id_by_digest.get(&digest(secret))?)
    }

    pub fn get(&self, id: &str) -> Option<&KeyInfo> {
        self.by_id.get(id)
    }

    /// Every key, oldest first.
    pub fn all(&self) -> Vec<&KeyInfo> {
        let mut keys: Vec<&KeyInfo> = self.by_id.values().collect();
        keys.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        keys
    }

    /// Adds a key directly, as if its record had been folded (tests and
    /// in-process routers).
    pub fn insert(&mut self, info: KeyInfo) {
        let (key, payload) = info.record();
        self.apply(&key, &payload)
            .expect("a record this module made decodes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_long_random_prefixed_and_found_by_its_digest_only() {
        let made = create(Kind::Read, "analysts", 1_000, None).unwrap();
        assert!(made.secret.starts_with("rk_read_"), "{}", made.secret);
        assert_eq!(made.secret.len(), "rk_read_".len() + 64);
        let other = create(Kind::Read, "analysts", 1_000, None).unwrap();
        assert_ne!(made.secret, other.secret);
        let (key, payload) = made.info.record();
        assert!(
            !payload
                .windows(16)
                .any(|window| made.secret.as_bytes()[8..].windows(16).any(|s| s == window)),
            "the record must not carry the secret"
        );
        let mut book = KeyBook::default();
        book.apply(&key, &payload).unwrap();
        assert_eq!(book.find(&made.secret).unwrap().id, made.info.id);
        assert!(book.find(&other.secret).is_none());
        assert!(book.find("rk_read_").is_none());
    }

    #[test]
    fn revocation_expiry_and_use_fold_in_any_state() {
        let made = create(Kind::Write, "shop", 1_000, Some(5_000)).unwrap();
        let mut book = KeyBook::default();
        let (key, payload) = made.info.record();
        book.apply(&key, &payload).unwrap();
        assert_eq!(
            book.find(&made.secret).unwrap().state(4_999),
            KeyState::Live
        );
        assert_eq!(
            book.find(&made.secret).unwrap().state(5_000),
            KeyState::Expired
        );
        let (used_key, used) = usage_record(&made.info.id, 2_000);
        book.apply(&used_key, &used).unwrap();
        let (older_key, older) = usage_record(&made.info.id, 1_500);
        book.apply(&older_key, &older).unwrap();
        let (key, payload) = made.info.revoked(3_000).record();
        book.apply(&key, &payload).unwrap();
        let known = book.find(&made.secret).unwrap();
        assert_eq!(known.state(0), KeyState::Revoked);
        assert_eq!(known.last_used_at_ms, Some(2_000), "latest use is kept");
        assert_eq!(book.all().len(), 1);
    }

    #[test]
    fn scopes_are_granted_to_their_kind_and_to_admin_only() {
        use Kind::*;
        for (kind, scope, granted) in [
            (Write, Scope::Write, true),
            (Write, Scope::Read, false),
            (Write, Scope::Admin, false),
            (Read, Scope::Write, false),
            (Read, Scope::Read, true),
            (Read, Scope::Admin, false),
            (Admin, Scope::Write, true),
            (Admin, Scope::Read, true),
            (Admin, Scope::Admin, true),
        ] {
            assert_eq!(kind.grants(scope), granted, "{kind:?} {scope:?}");
            assert!(kind.grants(Scope::Open));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        #[test]
        fn fuzz_any_record_is_folded_or_refused_without_change(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        ) {
            let made = create(Kind::Admin, "ops", 1, None).unwrap();
            let mut book = KeyBook::default();
            book.insert(made.info.clone());
            let mut prefixed = b"key:".to_vec();
            prefixed.extend(&key);
            for key in [key, prefixed] {
                let before = book.all().len();
                if book.apply(&key, &payload).is_err() {
                    proptest::prop_assert_eq!(book.all().len(), before);
                }
                // The admin key is found unless a record replaced its id.
                let _ = book.find(&made.secret);
            }
        }
    }
}
