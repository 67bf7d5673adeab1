//! Sealing an event before it reaches the log: identifiers become
//! pseudonyms (what identity links by) with a sealed copy for display, and
//! every personal text (profile fields, visited URLs, ticket subjects,
//! survey comments) becomes a sealed token, all with the data key of the
//! event's subject, the pseudonym of its strongest identifier. Erasing the
//! person destroys that key; the log keeps nothing readable of them.

use rapport_common::privacy::{DataKey, Sealer, SecretKey, pseudonym};
use rapport_projections::identity::{Identifier, IdentifierKind, identifiers_of};
use rapport_proto::v1 as proto;
use rapport_proto::v1::event::Payload;

/// Where the keys come from: the vault, or a fixed set in tests.
pub trait KeySource: Send + Sync + 'static {
    fn pseudonym_key(&self) -> &SecretKey;
    /// The data key of each subject, in order. Blocking.
    fn issue(&self, subjects: &[String]) -> Result<Vec<DataKey>, String>;
}

impl KeySource for rapport_common::vault_client::VaultClient {
    fn pseudonym_key(&self) -> &SecretKey {
        rapport_common::vault_client::VaultClient::pseudonym_key(self)
    }

    fn issue(&self, subjects: &[String]) -> Result<Vec<DataKey>, String> {
        rapport_common::vault_client::VaultClient::issue(self, subjects, std::time::Instant::now())
            .map_err(|error| error.to_string())
    }
}

/// The subject of an event: the pseudonym of its strongest identifier (or
/// of its id, for an event without a usable one).
pub fn subject(event: &proto::Event, pseudonym_key: &SecretKey) -> String {
    let customer = event.customer.clone().unwrap_or_default();
    match identifiers_of(&customer).into_iter().next() {
        Some(identifier) => pseudonym(pseudonym_key, identifier.kind.as_str(), &identifier.value),
        None => pseudonym(pseudonym_key, "event", &event.event_id),
    }
}

/// Seals every event of a batch, or none (the vault did not answer).
pub fn seal_batch(events: &mut [proto::Event], keys: &dyn KeySource) -> Result<(), String> {
    let subjects: Vec<String> = events
        .iter()
        .map(|event| subject(event, keys.pseudonym_key()))
        .collect();
    let data_keys = keys.issue(&subjects)?;
    for (event, key) in events.iter_mut().zip(&data_keys) {
        seal_event(event, key, keys.pseudonym_key()).map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// Seals one event with its subject's data key.
pub fn seal_event(
    event: &mut proto::Event,
    key: &DataKey,
    pseudonym_key: &SecretKey,
) -> rapport_common::Result<()> {
    // One cipher set-up for every value of the event.
    let sealer = Sealer::new(key)?;
    let sealed = |text: &mut String| -> rapport_common::Result<()> {
        if !text.is_empty() {
            *text = sealer.seal_text(text)?;
        }
        Ok(())
    };
    if let Some(customer) = event.customer.as_mut() {
        for (kind, value, shown) in [
            (
                IdentifierKind::CustomerId,
                &mut customer.customer_id,
                &mut customer.customer_id_sealed,
            ),
            (
                IdentifierKind::Email,
                &mut customer.email,
                &mut customer.email_sealed,
            ),
            (
                IdentifierKind::Phone,
                &mut customer.phone,
                &mut customer.phone_sealed,
            ),
            (
                IdentifierKind::AnonymousId,
                &mut customer.anonymous_id,
                &mut customer.anonymous_id_sealed,
            ),
        ] {
            shown.clear();
            match Identifier::normalised(kind, value) {
                Some(identifier) => {
                    *value = pseudonym(pseudonym_key, kind.as_str(), &identifier.value);
                    *shown = sealer.seal_text(&identifier.value)?;
                }
                None => value.clear(),
            }
        }
    }
    match event.payload.as_mut() {
        Some(Payload::CustomerRegistered(profile) | Payload::CustomerUpdated(profile)) => {
            for text in [
                &mut profile.name,
                &mut profile.email,
                &mut profile.phone,
                &mut profile.city,
            ] {
                sealed(text)?;
            }
            for value in profile.attributes.values_mut() {
                sealed(value)?;
            }
        }
        Some(Payload::WebPageViewed(view)) => {
            sealed(&mut view.url)?;
            sealed(&mut view.referrer)?;
        }
        Some(
            Payload::EmailSent(mail)
            | Payload::EmailOpened(mail)
            | Payload::EmailClicked(mail)
            | Payload::EmailBounced(mail),
        ) => sealed(&mut mail.url)?,
        Some(Payload::TicketOpened(ticket)) => sealed(&mut ticket.subject)?,
        Some(Payload::SurveyAnswered(survey)) => sealed(&mut survey.comment)?,
        Some(Payload::CustomTracked(tracked)) => {
            for value in tracked.properties.values_mut() {
                sealed(value)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use rapport_common::privacy::{open, parse_token, replace_tokens};

    struct FixedKeys {
        pseudonym_key: SecretKey,
        data_key: SecretKey,
    }

    impl KeySource for FixedKeys {
        fn pseudonym_key(&self) -> &SecretKey {
            &self.pseudonym_key
        }
        fn issue(&self, subjects: &[String]) -> Result<Vec<DataKey>, String> {
            Ok(subjects
                .iter()
                .map(|subject| DataKey {
                    subject: subject.clone(),
                    key_id: "00000000000000a1".into(),
                    key: self.data_key.clone(),
                })
                .collect())
        }
    }

    fn keys() -> FixedKeys {
        FixedKeys {
            pseudonym_key: SecretKey::random().unwrap(),
            data_key: SecretKey::random().unwrap(),
        }
    }

    fn event(payload: Payload) -> proto::Event {
        proto::Event {
            event_id: "0193a5b0-0000-7000-8000-000000000001".into(),
            r#type: "x".into(),
            customer: Some(proto::CustomerIdentifiers {
                customer_id: "c-ada".into(),
                email: " Ada@Example.com ".into(),
                phone: "no digits".into(),
                email_sealed: "sealed:forged".into(),
                ..Default::default()
            }),
            payload: Some(payload),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_personal_is_left_in_clear_and_everything_opens_again() {
        let keys = keys();
        let mut events = vec![
            event(Payload::CustomerRegistered(proto::CustomerProfile {
                name: "Ada Lovelace".into(),
                email: "ada@example.com".into(),
                phone: "+44 20 7946 0000".into(),
                city: "London".into(),
                attributes: [("source".to_owned(), "friend of Babbage".to_owned())].into(),
            })),
            event(Payload::WebPageViewed(proto::PageViewed {
                url: "https://shop.example/ada".into(),
                referrer: "https://search.example/?q=ada".into(),
                ..Default::default()
            })),
            event(Payload::SurveyAnswered(proto::SurveyAnswered {
                comment: "Ada says hi".into(),
                ..Default::default()
            })),
            event(Payload::TicketOpened(proto::TicketOpened {
                subject: "Ada's parcel".into(),
                ..Default::default()
            })),
            event(Payload::CustomTracked(proto::CustomTracked {
                name: "Gift Note Written".into(),
                properties: [("note".to_owned(), "for Charles Babbage".to_owned())].into(),
            })),
        ];
        seal_batch(&mut events, &keys).unwrap();
        for event in &events {
            let bytes = event.encode_to_vec();
            for clear in [
                "Lovelace",
                "ada@example",
                "London",
                "Babbage",
                "7946",
                "c-ada",
                "shop.example",
                "parcel",
                "says hi",
                "search.example",
            ] {
                assert!(
                    !bytes
                        .windows(clear.len())
                        .any(|window| window == clear.as_bytes()),
                    "{clear} is in clear in {event:?}"
                );
            }
            let customer = event.customer.as_ref().unwrap();
            let expected = pseudonym(&keys.pseudonym_key, "customer_id", "c-ada");
            assert_eq!(customer.customer_id, expected);
            assert_eq!(
                customer.email,
                pseudonym(&keys.pseudonym_key, "email", "ada@example.com"),
                "pseudonyms are of normalised values"
            );
            assert!(customer.phone.is_empty() && customer.phone_sealed.is_empty());
            // The forged token was replaced by ingest's own
            let shown = parse_token(&customer.email_sealed).unwrap();
            assert_eq!(open(&keys.data_key, &shown).unwrap(), b"ada@example.com");
            assert_eq!(
                shown.subject, expected,
                "the subject is the strongest identifier"
            );
        }
        let Some(Payload::CustomerRegistered(profile)) = &events[0].payload else {
            unreachable!()
        };
        let opened = replace_tokens(&profile.name, |sealed| {
            String::from_utf8(open(&keys.data_key, sealed).ok()?).ok()
        });
        assert_eq!(opened, "Ada Lovelace");
        assert_eq!(profile.attributes.keys().next().unwrap(), "source");
    }

    #[test]
    fn the_same_identifier_gets_the_same_pseudonym_whatever_its_spelling() {
        let keys = keys();
        let spelled = |email: &str| {
            let mut one = event(Payload::IdentityLinked(proto::IdentityLinked {}));
            one.customer = Some(proto::CustomerIdentifiers {
                email: email.into(),
                ..Default::default()
            });
            let mut batch = vec![one];
            seal_batch(&mut batch, &keys).unwrap();
            batch.remove(0).customer.unwrap().email
        };
        assert_eq!(spelled("Ada@Example.com"), spelled(" ada@example.com"));
        assert_ne!(spelled("ada@example.com"), spelled("bob@example.com"));
    }
}
