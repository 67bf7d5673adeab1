//! The topics defined in infra/topics.toml against the cluster: create the
//! missing ones, describe them, and report where one drifted from its definition.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rapport_common::topics::{self, TopicDefinition};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

fn load_topics(file: Option<&PathBuf>) -> anyhow::Result<Vec<TopicDefinition>> {
    let text = match file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => topics::BUILT_IN.to_owned(),
    };
    Ok(topics::parse(&text)?)
}

fn partition_counts(
    brokers: &rapport_common::config::KafkaConfig,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let consumer: BaseConsumer = rapport_common::kafka::client_config(brokers, "rapportctl")
        .create()
        .context("creating a client")?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .context("reading cluster metadata")?;
    Ok(metadata
        .topics()
        .iter()
        .map(|topic| (topic.name().to_owned(), topic.partitions().len()))
        .collect())
}

/// Each named topic's configuration as the broker reports it.
async fn broker_configs(
    admin: &AdminClient<DefaultClientContext>,
    names: &[&str],
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    if names.is_empty() {
        // librdkafka refuses a request for nothing.
        return Ok(BTreeMap::new());
    }
    let specifiers: Vec<ResourceSpecifier<'_>> = names
        .iter()
        .map(|name| ResourceSpecifier::Topic(name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .describe_configs(&specifiers, &options)
        .await
        .context("reading the topics' configuration")?;
    let mut configs = BTreeMap::new();
    for (name, result) in names.iter().zip(results) {
        let resource =
            result.with_context(|| format!("reading the configuration of topic {name}"))?;
        let entries = resource
            .entries
            .into_iter()
            .filter_map(|entry| entry.value.map(|value| (entry.name, value)))
            .collect();
        configs.insert((*name).to_owned(), entries);
    }
    Ok(configs)
}

/// The defined topics and how the cluster holds them.
struct Cluster {
    topics: Vec<TopicDefinition>,
    /// Partition count of every topic on the cluster.
    existing: BTreeMap<String, usize>,
    admin: AdminClient<DefaultClientContext>,
    /// Configuration of each defined topic the cluster has.
    configs: BTreeMap<String, BTreeMap<String, String>>,
}

impl Cluster {
    async fn read(
        config: &rapport_common::config::Config,
        file: Option<&PathBuf>,
    ) -> anyhow::Result<Self> {
        let topics = load_topics(file)?;
        let existing = partition_counts(&config.kafka)?;
        let admin: AdminClient<DefaultClientContext> =
            rapport_common::kafka::client_config(&config.kafka, "rapportctl")
                .create()
                .context("creating an admin client")?;
        let present: Vec<&str> = topics
            .iter()
            .filter(|topic| existing.get(&topic.name).is_some_and(|count| *count > 0))
            .map(|topic| topic.name.as_str())
            .collect();
        let configs = broker_configs(&admin, &present).await?;
        Ok(Self {
            topics,
            existing,
            admin,
            configs,
        })
    }
}

/// Says how an existing topic's configuration differs from its definition;
/// returns whether it does.
fn report_drift(topic: &TopicDefinition, on_broker: &BTreeMap<String, String>) -> bool {
    let drift = topics::config_drift(&topic.config, on_broker);
    for (key, defined, actual) in &drift {
        eprintln!(
            "{}: {key} is {} on the broker but {defined} in the definition",
            topic.name,
            actual.as_deref().unwrap_or("not set")
        );
        if key == "retention.ms" && actual.as_deref() == Some("-1") {
            eprintln!(
                "{}: Kafka reads -1 as unlimited too, but tansu 0.6 with SQLite storage (make run's broker) reads it literally and deletes every record of the topic when it starts and every ten minutes; on that broker this log has lost its history and cannot be replayed",
                topic.name
            );
        }
    }
    !drift.is_empty()
}

pub(crate) async fn create(
    config: &rapport_common::config::Config,
    file: Option<&PathBuf>,
    replication_factor: Option<i32>,
) -> anyhow::Result<()> {
    let Cluster {
        topics,
        existing,
        admin,
        configs,
    } = Cluster::read(config, file).await?;
    let mut failed = false;
    let mut drifted = false;
    for topic in &topics {
        if let Some(on_broker) = configs.get(&topic.name) {
            let partitions = existing[&topic.name];
            if partitions as i32 == topic.partitions {
                println!("{}: exists with {} partitions", topic.name, partitions);
            } else {
                eprintln!(
                    "{}: exists with {} partitions but the definition says {}",
                    topic.name, partitions, topic.partitions
                );
                failed = true;
            }
            drifted |= report_drift(topic, on_broker);
            continue;
        }
        let new_topic = topics::new_topic(
            &topic.name,
            topic.partitions,
            replication_factor.unwrap_or(topic.replication_factor),
            &topic.config,
        );
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .context("creating topics")?;
        for result in results {
            match result {
                Ok(name) => println!("{name}: created with {} partitions", topic.partitions),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    println!("{name}: already exists")
                }
                Err((name, code)) => {
                    eprintln!("{name}: could not be created: {code}");
                    failed = true;
                }
            }
        }
    }
    if drifted {
        eprintln!(
            "rapportctl never changes an existing topic: alter it with your Kafka tools. tansu 0.6 cannot alter a topic; for `make run`, stop it, delete ./data and start afresh"
        );
    }
    if failed || drifted {
        bail!("some topics are not as defined");
    }
    Ok(())
}

pub(crate) async fn describe(
    config: &rapport_common::config::Config,
    file: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let Cluster {
        topics,
        existing,
        configs,
        ..
    } = Cluster::read(config, file).await?;
    println!(
        "{:<32} {:>10} {:>10}  config",
        "topic", "defined", "on broker"
    );
    for topic in &topics {
        let actual = existing
            .get(&topic.name)
            .map_or("missing".to_owned(), |count| count.to_string());
        let config = match configs.get(&topic.name) {
            None => "-".to_owned(),
            Some(on_broker) => {
                let drift = topics::config_drift(&topic.config, on_broker);
                if drift.is_empty() {
                    "as defined".to_owned()
                } else {
                    drift
                        .iter()
                        .map(|(key, defined, actual)| {
                            format!(
                                "{key}={} (defined {defined})",
                                actual.as_deref().unwrap_or("unset")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            }
        };
        println!(
            "{:<32} {:>10} {:>10}  {config}",
            topic.name, topic.partitions, actual
        );
    }
    Ok(())
}
