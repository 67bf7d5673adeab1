//! Showing sealed personal data: the tokens of an answer are opened with
//! their subjects' data keys just before it leaves (`[erased]` where a key
//! is gone), and identifiers a caller gives in clear are pseudonymized as
//! ingest did it, so that the index finds them.
//!
//! Answers are opened as serialized JSON text rather than as a
//! `serde_json::Value`, which would sort every object's fields. That is
//! sound because a token is `sealed:` and URL-safe base64, none of which
//! JSON escapes: a token appears in the text exactly as in the string that
//! holds it, and ends at the same character. What replaces it is escaped
//! for JSON. Opening is pure given a map of keys; only [`open_answer`] asks
//! the [`Vault`], once per answer, so tests need no vault server.

use std::collections::HashMap;
use std::time::Instant;

use rapport_common::http::ApiError;
use rapport_common::privacy::{self, KeyRef, SecretKey};
use rapport_common::vault_client::VaultClient;
use rapport_projections::identity::{Identifier, IdentifierKind};

/// Data keys by subject and key id; `None` where the vault has none (an
/// erased person's).
pub type DataKeys = HashMap<(String, String), Option<SecretKey>>;

/// Where the projector gets its keys: the vault on identity in service, a
/// map in tests.
pub trait Vault: Send + Sync {
    /// The key ingest pseudonymizes identifiers with.
    fn pseudonym_key(&self) -> &SecretKey;
    /// The data keys asked for. Blocking: call it off the async runtime.
    fn lookup(&self, wanted: &[KeyRef]) -> rapport_common::Result<DataKeys>;
}

impl Vault for VaultClient {
    fn pseudonym_key(&self) -> &SecretKey {
        VaultClient::pseudonym_key(self)
    }

    fn lookup(&self, wanted: &[KeyRef]) -> rapport_common::Result<DataKeys> {
        VaultClient::lookup(self, wanted, Instant::now())
    }
}

/// The keys the tokens of `json` need, each once.
pub(crate) fn wanted_keys(json: &str) -> Vec<KeyRef> {
    let mut wanted = Vec::new();
    privacy::token_keys(json, &mut wanted);
    wanted
        .sort_by(|left, right| (&left.subject, &left.key_id).cmp(&(&right.subject, &right.key_id)));
    wanted.dedup();
    wanted
}

/// The clear text of one sealed value, or `None` where its key is missing
/// or does not open it. Logs name the key and event, never text.
fn open_one(sealed: &privacy::SealedValue, keys: &DataKeys) -> Option<String> {
    let key = keys
        .get(&(sealed.subject.clone(), sealed.key_id.clone()))?
        .as_ref()?;
    match privacy::open(key, sealed) {
        Ok(bytes) => {
            let opened = String::from_utf8(bytes).ok();
            if opened.is_none() {
                tracing::warn!(subject = %sealed.subject, key_id = %sealed.key_id, "a sealed value is not UTF-8 text; shown as erased");
            }
            opened
        }
        Err(error) => {
            tracing::warn!(subject = %sealed.subject, key_id = %sealed.key_id, %error, "a sealed value does not open with its key; shown as erased");
            None
        }
    }
}

/// `json` (serialized JSON) with every token opened, escaped as a JSON
/// string's content, or [`privacy::ERASED`].
pub(crate) fn open_json(json: &str, keys: &DataKeys) -> String {
    privacy::replace_tokens(json, |sealed| {
        let opened = open_one(sealed, keys)?;
        let quoted = serde_json::Value::String(opened).to_string();
        Some(quoted[1..quoted.len() - 1].to_owned())
    })
}

/// What a client gets when the vault does not answer: tokens are never
/// shown in their place.
fn vault_unavailable() -> ApiError {
    ApiError::Unavailable {
        message: "personal data cannot be shown now: the vault on identity did not answer"
            .to_owned(),
        retry_after_s: 5,
    }
}

/// `json` (serialized JSON) with every token opened with keys from
/// `vault`, asked once for all of them. Without a vault (sealing off) the
/// answer passes as it is, and one without tokens costs no lookup.
/// Blocking.
pub(crate) fn open_answer(vault: Option<&dyn Vault>, json: String) -> Result<String, ApiError> {
    let Some(vault) = vault else {
        return Ok(json);
    };
    if !privacy::holds_token(&json) {
        return Ok(json);
    }
    let wanted = wanted_keys(&json);
    if wanted.is_empty() {
        return Ok(json);
    }
    let keys = vault.lookup(&wanted).map_err(|error| {
        tracing::warn!(keys = wanted.len(), %error, "the vault did not answer a key lookup");
        vault_unavailable()
    })?;
    Ok(open_json(&json, &keys))
}

/// [`open_answer`] for a `serde_json::Value`, as the analytics build them.
pub(crate) fn open_value(
    vault: Option<&dyn Vault>,
    value: serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    if vault.is_none() {
        return Ok(value);
    }
    let json = value.to_string();
    if !privacy::holds_token(&json) {
        return Ok(value);
    }
    let opened = open_answer(vault, json)?;
    serde_json::from_str(&opened).map_err(|error| ApiError::Internal(error.to_string()))
}

/// `identifier` as the index holds it: with a pseudonym key (sealing on),
/// the pseudonym of its normalised value; one that already is a pseudonym
/// stays as it is.
pub(crate) fn indexed(pseudonym_key: Option<&SecretKey>, identifier: Identifier) -> Identifier {
    match pseudonym_key {
        Some(key) if !privacy::is_pseudonym(&identifier.value) => {
            let value = privacy::pseudonym(key, identifier.kind.as_str(), &identifier.value);
            Identifier::new(identifier.kind, value)
        }
        _ => identifier,
    }
}

/// The id a path's customer id stands for when it is not found as given:
/// with a pseudonym key, the pseudonym of a clear customer id. Pseudonyms
/// and prospect ids are ids of the projection already.
pub(crate) fn pseudonymous_id(pseudonym_key: Option<&SecretKey>, id: &str) -> Option<String> {
    let key = pseudonym_key?;
    if privacy::is_pseudonym(id) || id.starts_with(PROSPECT_PREFIX) {
        return None;
    }
    let identifier = Identifier::normalised(IdentifierKind::CustomerId, id)?;
    Some(privacy::pseudonym(
        key,
        IdentifierKind::CustomerId.as_str(),
        &identifier.value,
    ))
}

/// What identity names a person with no customer id yet.
const PROSPECT_PREFIX: &str = "prospect-";

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_common::privacy::{DataKey, seal_text};
    use serde_json::json;

    const ADA: &str = "p_000000000000000000000000000000ad";
    const GONE: &str = "p_000000000000000000000000000000e0";
    const UNKNOWN: &str = "p_000000000000000000000000000000f0";
    const WRONG: &str = "p_000000000000000000000000000000b0";
    const KEY_ID: &str = "00000000000000a1";

    fn data_key(subject: &str) -> DataKey {
        DataKey {
            subject: subject.to_owned(),
            key_id: KEY_ID.to_owned(),
            key: SecretKey::random().unwrap(),
        }
    }

    fn known(keys: &[&DataKey]) -> DataKeys {
        keys.iter()
            .map(|key| {
                (
                    (key.subject.clone(), key.key_id.clone()),
                    Some(key.key.clone()),
                )
            })
            .collect()
    }

    /// Opens `value` as an answer is opened: serialized, then parsed back.
    fn opened(value: &serde_json::Value, keys: &DataKeys) -> serde_json::Value {
        serde_json::from_str(&open_json(&value.to_string(), keys)).unwrap()
    }

    #[test]
    fn every_token_of_an_answer_is_collected_once_and_opened_in_place() {
        let ada = data_key(ADA);
        let name = seal_text(&ada, "Ada \"Countess\" Lovelace").unwrap();
        let url = seal_text(&ada, "https://shop.example/a?b=\\c\n").unwrap();
        let answer = json!({
            "customer_id": ADA,
            "profile": {"name": name},
            "items": [{"summary": format!("viewed {url}"), "count": 3}, {"summary": format!("registered {name}\n")}],
            "attributes": {name.clone(): "key of a map"},
        });
        let wanted = wanted_keys(&answer.to_string());
        assert_eq!(
            wanted,
            [KeyRef {
                subject: ADA.into(),
                key_id: KEY_ID.into()
            }]
        );
        assert_eq!(
            opened(&answer, &known(&[&ada])),
            json!({
                "customer_id": ADA,
                "profile": {"name": "Ada \"Countess\" Lovelace"},
                "items": [{"summary": "viewed https://shop.example/a?b=\\c\n", "count": 3}, {"summary": "registered Ada \"Countess\" Lovelace\n"}],
                "attributes": {"Ada \"Countess\" Lovelace": "key of a map"},
            })
        );
    }

    #[test]
    fn fields_keep_their_order_and_text_without_tokens_is_untouched() {
        let ada = data_key(ADA);
        #[derive(serde::Serialize)]
        struct Answer {
            zebra: String,
            apple: &'static str,
        }
        let json = serde_json::to_string(&Answer {
            zebra: seal_text(&ada, "Ada").unwrap(),
            apple: "sealed:!! is no token",
        })
        .unwrap();
        assert_eq!(
            open_json(&json, &known(&[&ada])),
            r#"{"zebra":"Ada","apple":"sealed:!! is no token"}"#
        );
        let clear = r#"{"b":"viewed /a","a":1}"#;
        assert_eq!(open_json(clear, &known(&[&ada])), clear);
    }

    #[test]
    fn a_token_whose_key_is_gone_or_wrong_reads_as_erased() {
        let ada = data_key(ADA);
        let erased = data_key(GONE);
        let unknown = data_key(UNKNOWN);
        let mut wrong = data_key(WRONG);
        let sealed_wrong = seal_text(&wrong, "Wrong").unwrap();
        wrong.key = SecretKey::random().unwrap();
        let mut keys = known(&[&ada, &wrong]);
        keys.insert((GONE.into(), KEY_ID.into()), None);
        let answer = json!([
            seal_text(&ada, "Ada").unwrap(),
            format!("met {}", seal_text(&erased, "Grace").unwrap()),
            seal_text(&unknown, "Alan").unwrap(),
            sealed_wrong,
        ]);
        assert_eq!(
            opened(&answer, &keys),
            json!(["Ada", "met [erased]", "[erased]", "[erased]"])
        );
    }

    /// A fake vault that counts its lookups and can refuse.
    struct Keys {
        pseudonym_key: SecretKey,
        keys: DataKeys,
        answers: bool,
        lookups: std::sync::atomic::AtomicUsize,
    }

    impl Vault for Keys {
        fn pseudonym_key(&self) -> &SecretKey {
            &self.pseudonym_key
        }

        fn lookup(&self, _wanted: &[KeyRef]) -> rapport_common::Result<DataKeys> {
            self.lookups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.answers {
                Ok(self.keys.clone())
            } else {
                Err(rapport_common::Error::Config("the vault is down".into()))
            }
        }
    }

    #[test]
    fn answers_without_tokens_cost_no_lookup_and_a_silent_vault_is_a_503() {
        let ada = data_key(ADA);
        let mut vault = Keys {
            pseudonym_key: SecretKey::random().unwrap(),
            keys: known(&[&ada]),
            answers: true,
            lookups: Default::default(),
        };
        let clear = json!({"customer_id": "c-1", "summary": "viewed /a", "n": 1});
        assert_eq!(open_value(Some(&vault), clear.clone()).unwrap(), clear);
        assert_eq!(vault.lookups.load(std::sync::atomic::Ordering::Relaxed), 0);

        let token = seal_text(&ada, "Ada").unwrap();
        let sealed = json!({"a": token, "b": [token, token]});
        assert_eq!(
            open_value(Some(&vault), sealed.clone()).unwrap(),
            json!({"a": "Ada", "b": ["Ada", "Ada"]})
        );
        assert_eq!(vault.lookups.load(std::sync::atomic::Ordering::Relaxed), 1);

        // Sealing off: no vault, the answer passes as it is.
        assert_eq!(open_value(None, sealed.clone()).unwrap(), sealed);

        vault.answers = false;
        let refused = open_answer(Some(&vault), sealed.to_string()).unwrap_err();
        assert!(matches!(
            refused,
            ApiError::Unavailable {
                retry_after_s: 5,
                ..
            }
        ));
    }

    #[test]
    fn clear_identifiers_are_looked_up_by_their_pseudonyms() {
        let key = SecretKey::random().unwrap();
        let email = Identifier::normalised(IdentifierKind::Email, " Ada@Example.COM ").unwrap();
        let looked_up = indexed(Some(&key), email.clone());
        assert_eq!(looked_up.kind, IdentifierKind::Email);
        assert_eq!(
            looked_up.value,
            privacy::pseudonym(&key, "email", "ada@example.com")
        );
        // A pseudonym is looked up as it is; without a key (sealing off), so is anything.
        assert_eq!(indexed(Some(&key), looked_up.clone()), looked_up);
        assert_eq!(indexed(None, email.clone()), email);

        let customer = privacy::pseudonym(&key, "customer_id", "c-00042");
        assert_eq!(
            pseudonymous_id(Some(&key), " c-00042"),
            Some(customer.clone())
        );
        assert_eq!(pseudonymous_id(Some(&key), &customer), None);
        assert_eq!(pseudonymous_id(Some(&key), "prospect-0190"), None);
        assert_eq!(pseudonymous_id(Some(&key), "  "), None);
        assert_eq!(pseudonymous_id(None, "c-00042"), None);
    }
}
