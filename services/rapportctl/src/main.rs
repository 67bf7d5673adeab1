//! `rapportctl`: operating a Rapport deployment from the command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rapport_common::config::CommonArgs;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

/// Operate a Rapport deployment: create and inspect its topics.
///
/// Every command talks the Kafka protocol to the brokers named by --brokers
/// (or RAPPORT_BROKERS, or [kafka] brokers in --config), default 127.0.0.1:9092.
#[derive(Parser, Debug)]
#[command(version, name = "rapportctl")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or describe the topics defined in infra/topics.toml.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
}

#[derive(Subcommand, Debug)]
enum TopicsAction {
    /// Create every defined topic that does not exist yet. Existing topics are
    /// left alone (a partition-count mismatch is reported as an error).
    Create {
        /// Topic definition file; default: the copy built into rapportctl,
        /// identical to infra/topics.toml.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Override the replication factor of every topic (1 for a single
        /// local broker).
        #[arg(long)]
        replication_factor: Option<i32>,
    },
    /// Show each defined topic's partition count on the cluster.
    Describe {
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    topic: Vec<TopicDefinition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicDefinition {
    name: String,
    partitions: i32,
    replication_factor: i32,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

const BUILT_IN_TOPICS: &str = include_str!("../../../infra/topics.toml");

fn load_topics(file: Option<&PathBuf>) -> anyhow::Result<Vec<TopicDefinition>> {
    let text = match file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => BUILT_IN_TOPICS.to_owned(),
    };
    let parsed: TopicFile = toml::from_str(&text).context("parsing the topic definition")?;
    for topic in &parsed.topic {
        if topic.partitions < 1 || topic.replication_factor < 1 {
            bail!(
                "topic {}: partitions and replication_factor must be at least 1",
                topic.name
            );
        }
    }
    Ok(parsed.topic)
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

async fn create_topics(
    config: &rapport_common::config::Config,
    file: Option<&PathBuf>,
    replication_factor: Option<i32>,
) -> anyhow::Result<()> {
    let topics = load_topics(file)?;
    let existing = partition_counts(&config.kafka)?;
    let admin: AdminClient<DefaultClientContext> =
        rapport_common::kafka::client_config(&config.kafka, "rapportctl")
            .create()
            .context("creating an admin client")?;
    let mut failed = false;
    for topic in &topics {
        if let Some(&partitions) = existing.get(&topic.name)
            && partitions > 0
        {
            if partitions as i32 == topic.partitions {
                println!("{}: exists with {} partitions", topic.name, partitions);
            } else {
                eprintln!(
                    "{}: exists with {} partitions but the definition says {}",
                    topic.name, partitions, topic.partitions
                );
                failed = true;
            }
            continue;
        }
        let replication =
            TopicReplication::Fixed(replication_factor.unwrap_or(topic.replication_factor));
        let mut new_topic = NewTopic::new(&topic.name, topic.partitions, replication);
        for (key, value) in &topic.config {
            new_topic = new_topic.set(key, value);
        }
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
    if failed {
        bail!("some topics are not as defined");
    }
    Ok(())
}

fn describe_topics(
    config: &rapport_common::config::Config,
    file: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let topics = load_topics(file)?;
    let existing = partition_counts(&config.kafka)?;
    println!("{:<32} {:>10} {:>10}", "topic", "defined", "on broker");
    for topic in &topics {
        let actual = existing
            .get(&topic.name)
            .map_or("missing".to_owned(), |count| count.to_string());
        println!("{:<32} {:>10} {:>10}", topic.name, topic.partitions, actual);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rapport_common::init_logging(args.common.log_json);
    let config = args.common.load()?;
    match args.command {
        Command::Topics {
            action:
                TopicsAction::Create {
                    file,
                    replication_factor,
                },
        } => create_topics(&config, file.as_ref(), replication_factor).await,
        Command::Topics {
            action: TopicsAction::Describe { file },
        } => describe_topics(&config, file.as_ref()),
    }
}
