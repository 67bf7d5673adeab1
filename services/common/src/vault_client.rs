//! How ingest and the projector reach the vault (on identity, with a
//! service key): the pseudonym key once at start, data keys as they need
//! them. Keys are cached for a few seconds only, so that a key an erasure
//! destroyed stops being used, and shown, within that time everywhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::privacy::{
    DataKey, IssueRequest, KeyRef, KeysAnswer, LookupRequest, MAX_KEYS_PER_REQUEST,
    PseudonymKeyAnswer, SecretKey,
};
use crate::{Error, Result};

/// How long a data key (or its absence) is trusted without asking again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Entries a cache holds at most; past it, it starts afresh.
const MAX_CACHED: usize = 1_000_000;

type Cached<T> = (T, Instant);
/// Looked-up keys by subject and key id; `None`: the vault has none.
type LookedUp = HashMap<(String, String), Cached<Option<SecretKey>>>;

pub struct VaultClient {
    base: String,
    authorization: String,
    agent: ureq::Agent,
    pseudonym_key: SecretKey,
    issued: Mutex<HashMap<String, Cached<DataKey>>>,
    looked_up: Mutex<LookedUp>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn vault_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Config(format!("the vault {what}: {error}"))
}

impl VaultClient {
    /// Connects to the vault at `base` (identity's URL) with `service_key`,
    /// waiting up to `patience` for identity to answer.
    pub fn connect(base: &str, service_key: &str, patience: Duration) -> Result<Self> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let authorization = format!("Bearer {service_key}");
        let base = base.trim_end_matches('/').to_owned();
        let url = format!("{base}/v1/vault/pseudonym-key");
        let deadline = Instant::now() + patience;
        let pseudonym_key = loop {
            let attempt = agent
                .get(&url)
                .header("authorization", &authorization)
                .call()
                .map_err(|error| error.to_string())
                .and_then(|mut response| {
                    let status = response.status().as_u16();
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    if status == 200 {
                        serde_json::from_str::<PseudonymKeyAnswer>(&text)
                            .map_err(|error| error.to_string())
                    } else {
                        Err(format!("answered {status}: {text}"))
                    }
                });
            match attempt {
                Ok(answer) => {
                    break SecretKey::from_hex(&answer.key).ok_or_else(|| {
                        vault_error("sent a pseudonym key that is not 64 hex digits", &url)
                    })?;
                }
                // A refused key will not get better by waiting.
                Err(error)
                    if error.starts_with("answered 401") || error.starts_with("answered 403") =>
                {
                    return Err(vault_error(
                        "refused the service key (make one with `rapportctl keys create --kind service`)",
                        error,
                    ));
                }
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(url = %url, %error, "waiting for the vault");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(error) => return Err(vault_error(&format!("at {url} did not answer"), error)),
            }
        };
        Ok(Self {
            base,
            authorization,
            agent,
            pseudonym_key,
            issued: Mutex::default(),
            looked_up: Mutex::default(),
        })
    }

    pub fn pseudonym_key(&self) -> &SecretKey {
        &self.pseudonym_key
    }

    fn post<T: serde::Serialize>(&self, path: &str, body: &T) -> Result<KeysAnswer> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .post(&url)
            .header("authorization", &self.authorization)
            .send_json(body)
            .map_err(|error| vault_error(&format!("at {url} did not answer"), error))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            return Err(vault_error(&format!("at {url} answered {status}"), text));
        }
        serde_json::from_str(&text).map_err(|error| vault_error("answered something else", error))
    }

    /// The data key of each subject (in order), made where missing.
    /// Blocking: call it off the async runtime.
    pub fn issue(&self, subjects: &[String], now: Instant) -> Result<Vec<DataKey>> {
        let mut missing: Vec<String> = {
            let cache = lock(&self.issued);
            subjects
                .iter()
                .filter(|subject| {
                    cache
                        .get(*subject)
                        .is_none_or(|(_, at)| now.saturating_duration_since(*at) >= CACHE_TTL)
                })
                .cloned()
                .collect()
        };
        missing.sort();
        missing.dedup();
        for chunk in missing.chunks(MAX_KEYS_PER_REQUEST) {
            let answer = self.post(
                "/v1/vault/keys",
                &IssueRequest {
                    subjects: chunk.to_vec(),
                },
            )?;
            let mut cache = lock(&self.issued);
            if cache.len() + answer.keys.len() > MAX_CACHED {
                cache.clear();
            }
            for key in answer.keys {
                let secret = key
                    .key
                    .as_deref()
                    .and_then(SecretKey::from_hex)
                    .ok_or_else(|| vault_error("issued no key for", &key.subject))?;
                cache.insert(
                    key.subject.clone(),
                    (
                        DataKey {
                            subject: key.subject,
                            key_id: key.key_id,
                            key: secret,
                        },
                        now,
                    ),
                );
            }
        }
        let cache = lock(&self.issued);
        subjects
            .iter()
            .map(|subject| {
                cache
                    .get(subject)
                    .map(|(key, _)| key.clone())
                    .ok_or_else(|| vault_error("issued no key for", subject))
            })
            .collect()
    }

    /// The keys asked for, `None` where the vault has none (an erased
    /// person's). Blocking: call it off the async runtime.
    pub fn lookup(
        &self,
        wanted: &[KeyRef],
        now: Instant,
    ) -> Result<HashMap<(String, String), Option<SecretKey>>> {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < CACHE_TTL;
        let mut missing: Vec<KeyRef> = {
            let cache = lock(&self.looked_up);
            wanted
                .iter()
                .filter(|key| {
                    cache
                        .get(&(key.subject.clone(), key.key_id.clone()))
                        .is_none_or(|(_, at)| !fresh(at))
                })
                .cloned()
                .collect()
        };
        missing.sort_by(|a, b| (&a.subject, &a.key_id).cmp(&(&b.subject, &b.key_id)));
        missing.dedup();
        for chunk in missing.chunks(MAX_KEYS_PER_REQUEST) {
            let answer = self.post(
                "/v1/vault/keys/lookup",
                &LookupRequest {
                    keys: chunk.to_vec(),
                },
            )?;
            let mut cache = lock(&self.looked_up);
            if cache.len() + answer.keys.len() > MAX_CACHED {
                cache.clear();
            }
            for key in answer.keys {
                let secret = key.key.as_deref().and_then(SecretKey::from_hex);
                cache.insert((key.subject, key.key_id), (secret, now));
            }
        }
        let cache = lock(&self.looked_up);
        Ok(wanted
            .iter()
            .map(|key| {
                let id = (key.subject.clone(), key.key_id.clone());
                let found = cache.get(&id).and_then(|(secret, _)| secret.clone());
                (id, found)
            })
            .collect())
    }
}
