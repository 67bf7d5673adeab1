//! The one definition of Rapport's topics (`infra/topics.toml`, built into
//! every binary): names, partitions, replication and topic configuration.
//! Everything that creates a topic takes its configuration from here:
//! `rapportctl topics create`, identity's re-identification topics and the
//! end-to-end tests.

use std::collections::BTreeMap;

use rdkafka::admin::{NewTopic, TopicReplication};
use serde::Deserialize;

use crate::config::TopicNames;
use crate::{Error, Result};

/// The text of `infra/topics.toml` as this binary was built.
pub const BUILT_IN: &str = include_str!("../../../infra/topics.toml");

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDefinition {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Topic-level configuration, as Kafka names it.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    topic: Vec<TopicDefinition>,
}

/// Parses and checks a topic definition file.
pub fn parse(text: &str) -> Result<Vec<TopicDefinition>> {
    let parsed: TopicFile = toml::from_str(text)
        .map_err(|error| Error::Config(format!("the topic definition: {error}")))?;
    for topic in &parsed.topic {
        if topic.partitions < 1 || topic.replication_factor < 1 {
            return Err(Error::Config(format!(
                "topic {}: partitions and replication_factor must be at least 1",
                topic.name
            )));
        }
    }
    Ok(parsed.topic)
}

/// The built-in definition.
pub fn built_in() -> Vec<TopicDefinition> {
    parse(BUILT_IN).expect("infra/topics.toml is checked by this module's tests")
}

/// Which of Rapport's topics a topic plays, whatever it is called (tests and
/// re-identification versions use other names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Raw,
    Customer,
    DeadLetters,
    Keys,
    Projectors,
}

/// The built-in configuration of the topic playing `role`, for a topic
/// created under another name.
pub fn config_for(role: Role) -> BTreeMap<String, String> {
    let names = TopicNames::default();
    let name = match role {
        Role::Raw => names.raw,
        Role::Customer => names.customer,
        Role::DeadLetters => names.deadletters,
        Role::Keys => names.keys,
        Role::Projectors => names.projectors,
    };
    built_in()
        .into_iter()
        .find(|topic| topic.name == name)
        .map(|topic| topic.config)
        .unwrap_or_default()
}

/// A topic to create with `config` as its topic-level configuration.
pub fn new_topic<'a>(
    name: &'a str,
    partitions: i32,
    replication_factor: i32,
    config: &'a BTreeMap<String, String>,
) -> NewTopic<'a> {
    config.iter().fold(
        NewTopic::new(
            name,
            partitions,
            TopicReplication::Fixed(replication_factor),
        ),
        |topic, (key, value)| topic.set(key, value),
    )
}

/// The keys whose value on the broker differs from the definition, with
/// both values (`None` where the broker does not report the key).
pub fn config_drift(
    defined: &BTreeMap<String, String>,
    on_broker: &BTreeMap<String, String>,
) -> Vec<(String, String, Option<String>)> {
    defined
        .iter()
        .filter(|(key, value)| on_broker.get(*key) != Some(value))
        .map(|(key, value)| (key.clone(), value.clone(), on_broker.get(key).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_definition_names_every_configured_topic() {
        let topics = built_in();
        let names = TopicNames::default();
        for name in [
            &names.raw,
            &names.customer,
            &names.deadletters,
            &names.keys,
            &names.projectors,
        ] {
            assert!(
                topics.iter().any(|topic| &topic.name == name),
                "{name} is not defined"
            );
        }
        for role in [
            Role::Raw,
            Role::Customer,
            Role::DeadLetters,
            Role::Keys,
            Role::Projectors,
        ] {
            assert!(!config_for(role).is_empty(), "{role:?}");
        }
    }

    /// tansu 0.6 with SQLite storage reads retention.ms = -1 literally:
    /// every record is older than -1 ms, so its retention job deletes the
    /// whole log when the broker starts and every ten minutes after. Kafka
    /// reads the largest value as unlimited too, so that is what we define.
    #[test]
    fn every_topic_keeps_its_records_for_good_on_both_brokers() {
        for topic in built_in() {
            assert_eq!(
                topic.config.get("retention.ms").map(String::as_str),
                Some("9223372036854775807"),
                "{}",
                topic.name
            );
        }
    }

    #[test]
    fn drift_lists_the_keys_the_broker_has_otherwise() {
        let defined = BTreeMap::from([
            ("retention.ms".to_owned(), "9223372036854775807".to_owned()),
            ("cleanup.policy".to_owned(), "delete".to_owned()),
            ("max.message.bytes".to_owned(), "1048576".to_owned()),
        ]);
        let on_broker = BTreeMap::from([
            ("retention.ms".to_owned(), "-1".to_owned()),
            ("cleanup.policy".to_owned(), "delete".to_owned()),
            ("segment.ms".to_owned(), "1000".to_owned()),
        ]);
        assert_eq!(
            config_drift(&defined, &on_broker),
            vec![
                ("max.message.bytes".to_owned(), "1048576".to_owned(), None),
                (
                    "retention.ms".to_owned(),
                    "9223372036854775807".to_owned(),
                    Some("-1".to_owned())
                ),
            ]
        );
    }

    #[test]
    fn a_definition_with_no_partitions_is_refused() {
        let error =
            parse("[[topic]]\nname = \"t\"\npartitions = 0\nreplication_factor = 1\n").unwrap_err();
        assert!(error.to_string().contains("at least 1"), "{error}");
        assert!(parse("[[topic]]\nname = \"t\"\nnope = 1\n").is_err());
    }
}
