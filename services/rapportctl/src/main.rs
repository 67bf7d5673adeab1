//! `rapportctl`: operating a Rapport deployment from the command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rapport_common::config::CommonArgs;
use rapport_common::topics::{self, TopicDefinition};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

/// Operate a Rapport deployment: see where every service stands, rebuild
/// projections and the identifier graph beside the live ones and compare
/// them, inspect and re-submit dead letters, create and inspect topics.
///
/// Kafka commands talk to the brokers named by --brokers (or RAPPORT_BROKERS,
/// or [kafka] brokers in --config), default 127.0.0.1:9092. `status` asks the
/// services' admin endpoints.
#[derive(Parser, Debug)]
#[command(version, name = "rapportctl")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Base URL of the projector's query API (serves /v1/admin/status).
    #[arg(
        long,
        env = "RAPPORT_QUERY_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    query_url: String,
    /// Base URL of the identity service's admin endpoints (serves
    /// /v1/admin/status and the re-identification endpoints).
    #[arg(
        long,
        visible_alias = "identity",
        env = "RAPPORT_IDENTITY_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    identity_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Per service and projection: applied offset and log end per partition,
    /// lag, events/s, state size on disk, the bytes RocksDB's compactions
    /// still have to rewrite ("to compact": they run behind the fold, at a
    /// lower priority, and catch up once a rebuild has) and the last error.
    Status {
        /// Print the raw JSON the services answered, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a projection into a new version from the customer topic while
    /// the live version keeps serving. Shows progress until the rebuild has
    /// caught up with the head (or, with --until, reached its end).
    ///
    /// With --identity-version NAME the version is built from the customer
    /// topic that `rapportctl reidentify --version NAME` wrote instead, to
    /// see (and `verify`) the projection under that graph beside the live one.
    Replay {
        /// The projection to rebuild: customer_view.
        projection: String,
        /// Name of the new version; default the next free vN.
        #[arg(long)]
        version: Option<String>,
        /// Where to start: beginning, offset:PARTITION:OFFSET or time:RFC3339.
        /// With time:T the version holds exactly the records received at or
        /// after T: each partition is sought (the broker's offset-for-time
        /// lookup, checked against the records around it, else a binary
        /// search), not read from its beginning.
        #[arg(long, default_value = "beginning")]
        from: String,
        /// A bounded snapshot: only records ingest received at or before
        /// time:RFC3339. Query it with ?version=; it never follows the head.
        #[arg(long)]
        until: Option<String>,
        /// Make the new version live once it has caught up. Not with
        /// --identity-version: verify such a version first, then switch it
        /// with `rapportctl switch NAME --follow-other-topic`.
        #[arg(long, conflicts_with = "identity_version")]
        switch: bool,
        /// Build from the customer topic of the graph version NAME (made by
        /// `rapportctl reidentify --version NAME`; identity names the topic,
        /// <customer topic>.NAME) instead of the live customer topic. The
        /// version keeps reading that topic, which stops growing once the
        /// graph version reached its bounds; dropping the graph version
        /// deletes the topic, and this version's worker then reports an
        /// error (what it built stays queryable until `rapportctl drop`).
        #[arg(long, value_name = "NAME")]
        identity_version: Option<String>,
        /// Start the rebuild and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make a version live: queries without ?version= read it from now on.
    Switch {
        /// The version to make live, as `rapportctl status` lists it.
        version: String,
        /// Needed to make live a version built with --identity-version: it
        /// keeps reading its own topic, not the live customer topic, so
        /// queries then see only what is written there (a re-identification
        /// writes up to its bounds and no further).
        #[arg(long)]
        follow_other_topic: bool,
    },
    /// Stop a version's worker and delete its state (not the live version).
    Drop {
        /// The version to delete, as `rapportctl status` lists it.
        version: String,
    },
    /// Compare the live version with another at the same offsets: checksums
    /// of their state and the first keys that differ. Fails if they differ.
    Verify {
        /// The projection: customer_view.
        projection: String,
        /// The version to compare with the live one.
        #[arg(long)]
        other: String,
        /// How long to wait for both versions to reach the same offsets.
        #[arg(long, default_value_t = 120)]
        patience_s: u64,
    },
    /// Re-run identity resolution from the raw topic into a new version of
    /// the identifier graph and of the customer topic, beside the live ones,
    /// then compare the new graph with the live one.
    ///
    /// The new version reads exactly the raw records the live graph had
    /// resolved when it started (the live committed offsets, frozen with a
    /// checkpoint of the live graph), in the same order, so the comparison is
    /// exact while live traffic goes on. Its records go to
    /// <customer topic>.<NAME>, created with the customer topic's partitions.
    /// Shows progress until the version finished, then prints both
    /// checksums and "equal", or "different" with the first differing keys
    /// and a non-zero exit code.
    Reidentify {
        /// Name of the new version: 1-64 letters, digits, - or _, not v1
        /// (the live graph). Default: the next free vN.
        #[arg(long, value_name = "NAME")]
        version: Option<String>,
        /// Start the re-identification and return at once, without waiting
        /// or comparing (compare later with --compare NAME).
        #[arg(long)]
        no_wait: bool,
        /// Start nothing: wait until the existing version NAME finished and
        /// compare its graph with the live one.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["version", "no_wait", "drop"])]
        compare: Option<String>,
        /// Start nothing: stop the version NAME and delete its graph, its
        /// baseline and its customer topic.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["version", "no_wait"])]
        drop: Option<String>,
        /// How long to wait for the version to finish before giving up
        /// (the version keeps running; compare it later with --compare).
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        patience_s: u64,
    },
    /// Records the services refused, kept on the dead-letter topic.
    Deadletters {
        #[command(subcommand)]
        action: DeadLettersAction,
    },
    /// Create or describe the topics defined in infra/topics.toml.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
}

#[derive(Subcommand, Debug)]
enum TopicsAction {
    /// Create every defined topic that does not exist yet. Existing topics are
    /// never changed: a partition count or a configuration value (of the
    /// keys the definition sets) that differs from the definition is
    /// reported, and the command fails.
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
    /// Show each defined topic's partition count on the cluster, and the
    /// configuration values that differ from the definition.
    Describe {
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum DeadLettersAction {
    /// One line per dead letter: its offset, the refusing service, where the
    /// refused record sat and why.
    List,
    /// Everything about one dead letter, including the refused bytes.
    Show {
        /// The dead letter's offset (as `list` prints it).
        offset: i64,
    },
    /// Re-submit dead letters to the topic they came from, in their original
    /// order, after the cause was fixed. Each carries a header naming its
    /// dead letter, so the projector applies it once however often it is
    /// retried; identity drops events it already resolved by event id.
    Retry {
        /// Only letters refused by this service (identity or projector).
        #[arg(long)]
        service: Option<String>,
        /// Only letters at or after this offset.
        #[arg(long, default_value_t = 0)]
        from: i64,
        /// Show what would be re-submitted without sending anything.
        #[arg(long)]
        dry_run: bool,
    },
}

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

async fn create_topics(
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

async fn describe_topics(
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

fn fetch_status(base: &str) -> anyhow::Result<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("{}/v1/admin/status", base.trim_end_matches('/'));
    let mut response = agent
        .get(&url)
        .call()
        .with_context(|| format!("asking {url}"))?;
    response
        .body_mut()
        .read_json()
        .with_context(|| format!("reading the answer of {url}"))
}

fn admin(
    base: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut response = match (method, body) {
        ("POST", Some(body)) => agent.post(&url).send_json(&body),
        ("POST", None) => agent.post(&url).send_empty(),
        ("DELETE", _) => agent.delete(&url).call(),
        _ => agent.get(&url).call(),
    }
    .with_context(|| format!("asking {url}"))?;
    let status = response.status().as_u16();
    let answer: serde_json::Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("reading the answer of {url}"))?;
    if status >= 400 {
        let details = answer["details"]
            .as_array()
            .map(|details| {
                details
                    .iter()
                    .filter_map(|detail| detail["message"].as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        bail!(
            "{url} answered {status}: {} {details}",
            answer["error"].as_str().unwrap_or("")
        );
    }
    Ok(answer)
}

/// Draws one progress line on a terminal (and nothing elsewhere).
fn progress(line: &str) {
    use std::io::{IsTerminal as _, Write as _};
    let mut stderr = std::io::stderr();
    if stderr.is_terminal() {
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }
}

/// What `replay` builds.
struct ReplayRequest<'a> {
    projection: &'a str,
    version: Option<String>,
    from: &'a str,
    until: Option<String>,
    identity_version: Option<&'a str>,
    switch: bool,
    no_wait: bool,
}

/// The customer topic identity wrote for a graph version.
fn identity_version_topic(args: &Args, name: &str) -> anyhow::Result<String> {
    let report = admin(
        &args.identity_url,
        "GET",
        &format!("/v1/admin/versions/{name}"),
        None,
    )
    .with_context(|| {
        format!("asking identity for the graph version {name} (rapportctl status lists them)")
    })?;
    let topic = report["topic"]
        .as_str()
        .with_context(|| format!("identity did not name the topic of {name}"))?;
    if report["state"] == "failed" {
        bail!(
            "graph version {name} failed: {}; drop it with `rapportctl reidentify --drop {name}`",
            report["consumer"]["last_error"]["message"]
                .as_str()
                .unwrap_or("see the identity log")
        );
    }
    Ok(topic.to_owned())
}

fn replay(args: &Args, request: ReplayRequest<'_>) -> anyhow::Result<()> {
    let ReplayRequest {
        projection,
        version,
        from,
        until,
        identity_version,
        switch,
        no_wait,
    } = request;
    let source_topic = match identity_version {
        Some(name) => Some(identity_version_topic(args, name)?),
        None => None,
    };
    let body = serde_json::json!({"projection": projection, "version": version, "from": from, "until": until, "source_topic": source_topic});
    let created = admin(&args.query_url, "POST", "/v1/admin/replays", Some(body))?;
    let version = created["version"]
        .as_str()
        .context("the projector did not name the version")?
        .to_owned();
    println!(
        "rebuilding {projection} into version {version} from {}",
        created["topic"].as_str().unwrap_or("the customer topic")
    );
    if no_wait {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut starts_shown = std::collections::BTreeSet::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let listing = admin(&args.query_url, "GET", "/v1/admin/versions", None)?;
        let report = listing["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|report| report["version"] == version.as_str())
            .cloned()
            .context("the version disappeared")?;
        let consumer = &report["consumer"];
        // The last error stays in the status after the worker got over it
        // (a broker restart mid-rebuild); the rebuild failed only if its
        // worker stopped on it.
        if let Some(error) = consumer["last_error"]["message"].as_str()
            && report["failed"] == true
        {
            progress("");
            bail!("the rebuild failed: {error}");
        }
        for partition in consumer["partitions"].as_array().into_iter().flatten() {
            if let (Some(number), Some(offset)) = (
                partition["partition"].as_i64(),
                partition["start_offset"].as_i64(),
            ) && starts_shown.insert(number)
            {
                progress("");
                println!(
                    "partition {number} starts at offset {offset}, found by {}",
                    partition["start_found_by"].as_str().unwrap_or("?")
                );
            }
        }
        // Records applied by this rebuild: from each partition's start (0,
        // or where a `--from` put it) to its applied offset.
        let applied: i64 = consumer["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|partition| {
                let start = partition["start_offset"].as_i64().unwrap_or(0);
                partition["applied_offset"]
                    .as_i64()
                    .map_or(0, |offset| (offset + 1 - start).max(0))
            })
            .sum();
        let lag = consumer["total_lag"].as_i64().unwrap_or(0);
        let rate = consumer["events_per_second"].as_f64().unwrap_or(0.0);
        let eta = if rate > 0.0 {
            format!("{:.0} s", lag as f64 / rate)
        } else {
            "-".to_owned()
        };
        let caught_up = caught_up(&consumer["partitions"]);
        let done = if report["until"].is_string() {
            report["finished"] == true
        } else {
            caught_up
        };
        progress(&format!(
            "{version}: {applied} records applied, {lag} behind, {rate:.0} events/s, ETA {eta}"
        ));
        if done {
            progress("");
            println!(
                "version {version} {} after {:.1} s ({applied} records)",
                if report["until"].is_string() {
                    "reached its end"
                } else {
                    "caught up"
                },
                started.elapsed().as_secs_f64()
            );
            break;
        }
    }
    if switch {
        switch_live(args, &version, false)?;
    }
    Ok(())
}

/// Whether a version has caught up, from its status's partitions: every
/// partition's end is known and has been applied up to. Where nothing was
/// applied (an empty partition, or a start at a time later than all of it)
/// the end is trusted only once the worker read to it: a broker that lost a
/// topic for a moment reports an end of 0.
fn caught_up(partitions: &serde_json::Value) -> bool {
    let Some(partitions) = partitions.as_array() else {
        return false;
    };
    !partitions.is_empty()
        && partitions.iter().all(|partition| {
            match (
                partition["log_end"].as_i64(),
                partition["applied_offset"].as_i64(),
            ) {
                (Some(end), Some(applied)) => applied == end - 1,
                (Some(end), None) => {
                    partition["reached_end"] == true
                        && partition["start_offset"].as_i64().unwrap_or(0) >= end
                }
                (None, _) => false,
            }
        })
}

fn switch_live(args: &Args, version: &str, follow_other_topic: bool) -> anyhow::Result<()> {
    let query = if follow_other_topic {
        "?follow_other_topic=true"
    } else {
        ""
    };
    let answer = admin(
        &args.query_url,
        "POST",
        &format!("/v1/admin/versions/{version}/switch{query}"),
        None,
    )?;
    println!(
        "version {version} is live, reading {}",
        answer["topic"].as_str().unwrap_or("?")
    );
    Ok(())
}

fn verify(args: &Args, other: &str, patience: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + patience;
    let mut explain_topics = true;
    loop {
        let report = admin(
            &args.query_url,
            "GET",
            &format!("/v1/admin/verify?other={other}"),
            None,
        )?;
        let topics = &report["topics"];
        if topics[0] != topics[1] {
            // Said once: the comparison is by offset, partition by partition.
            if std::mem::take(&mut explain_topics) {
                println!(
                    "{} reads {}, {} reads {}: compared at equal offsets, which holds the same records only if both topics do (a re-identification of an unchanged log)",
                    report["versions"][0], topics[0], report["versions"][1], topics[1]
                );
            }
        }
        if report["same_offsets"] == true {
            println!(
                "{} vs {}: {} vs {} keys, checksums {} vs {}",
                report["versions"][0],
                report["versions"][1],
                report["keys"][0],
                report["keys"][1],
                report["checksums"][0],
                report["checksums"][1]
            );
            if report["identical"] == true {
                println!("identical");
                return Ok(());
            }
            for key in report["first_differences"].as_array().into_iter().flatten() {
                println!("differs at {}", key.as_str().unwrap_or(""));
            }
            bail!("the versions differ");
        }
        if std::time::Instant::now() > deadline {
            if report["topics"][0] != report["topics"][1] {
                bail!(
                    "the versions did not reach the same offsets within {patience:?}: they read different topics, and one has records the other lacks (traffic since the re-identification, or records identity produced twice after a crash)"
                );
            }
            bail!(
                "the versions did not reach the same offsets within {patience:?}; is traffic still flowing?"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What `reidentify` does.
enum Reidentify {
    Start {
        version: Option<String>,
        no_wait: bool,
    },
    Compare(String),
    Drop(String),
}

fn reidentify(args: &Args, action: Reidentify, patience: Duration) -> anyhow::Result<()> {
    let version = match action {
        Reidentify::Drop(version) => {
            let answer = admin(
                &args.identity_url,
                "DELETE",
                &format!("/v1/admin/versions/{version}"),
                None,
            )?;
            println!(
                "graph version {version} dropped{}",
                if answer["topic_deleted"] == true {
                    format!(
                        ", topic {} deleted",
                        answer["topic"].as_str().unwrap_or("?")
                    )
                } else {
                    format!(
                        "; topic {} could not be deleted (see the identity log)",
                        answer["topic"].as_str().unwrap_or("?")
                    )
                }
            );
            return Ok(());
        }
        Reidentify::Compare(version) => version,
        Reidentify::Start { version, no_wait } => {
            let created = admin(
                &args.identity_url,
                "POST",
                "/v1/admin/reidentify",
                Some(serde_json::json!({ "version": version })),
            )?;
            let version = created["version"]
                .as_str()
                .context("identity did not name the version")?
                .to_owned();
            let bounds: Vec<String> = created["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|partition| {
                    format!(
                        "{}:{}",
                        partition["partition"],
                        partition["bound"]
                            .as_i64()
                            .map_or("-".to_owned(), |bound| bound.to_string())
                    )
                })
                .collect();
            println!(
                "re-identifying into version {version}: graph {}, topic {}",
                created["family"].as_str().unwrap_or("?"),
                created["topic"].as_str().unwrap_or("?")
            );
            println!(
                "bounded by the live graph's raw offsets {} ({} raw records)",
                bounds.join(" "),
                created["raw_records_total"]
            );
            if no_wait {
                return Ok(());
            }
            version
        }
    };
    wait_for_version(args, &version, patience)?;
    let report = admin(
        &args.identity_url,
        "GET",
        &format!("/v1/admin/versions/{version}/compare"),
        None,
    )?;
    let side = |name: &str, summary: &serde_json::Value| {
        println!(
            "{name:<12} {:>10} keys  checksum {}  offsets {}",
            summary["keys"],
            summary["checksum"].as_str().unwrap_or("?"),
            summary["offsets"]
        );
    };
    side("live (v1)", &report["live"]);
    side(&version, &report["version"]);
    if report["equal"] == true {
        println!("equal");
        return Ok(());
    }
    println!("different");
    for difference in report["first_differences"].as_array().into_iter().flatten() {
        println!(
            "differs at {} ({})",
            difference["key"].as_str().unwrap_or("?"),
            difference["difference"].as_str().unwrap_or("?")
        );
    }
    bail!("the re-identified graph {version} differs from the live graph")
}

/// Shows progress until the version resolved every raw record up to its bounds.
fn wait_for_version(args: &Args, version: &str, patience: Duration) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let report = admin(
            &args.identity_url,
            "GET",
            &format!("/v1/admin/versions/{version}"),
            None,
        )?;
        let read = report["raw_records_read"].as_i64().unwrap_or(0);
        let total = report["raw_records_total"].as_i64().unwrap_or(0);
        match report["state"].as_str() {
            Some("finished") => {
                progress("");
                println!(
                    "version {version} resolved {total} raw records in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Some("running") => {}
            other => {
                progress("");
                bail!(
                    "version {version} is {}: {}",
                    other.unwrap_or("unknown"),
                    report["consumer"]["last_error"]["message"]
                        .as_str()
                        .unwrap_or("see the identity log")
                );
            }
        }
        if started.elapsed() > patience {
            progress("");
            bail!(
                "version {version} did not finish within {patience:?} ({read} of {total} raw records); it keeps running, compare it later with --compare {version}"
            );
        }
        let rate = report["consumer"]["events_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        let eta = if rate > 0.0 {
            format!("{:.0} s", (total - read) as f64 / rate)
        } else {
            "-".to_owned()
        };
        let done = if total > 0 {
            read as f64 / total as f64
        } else {
            1.0
        };
        let filled = (done * 30.0).round() as usize;
        progress(&format!(
            "{version}: [{}{}] {:>3.0}% {read}/{total} raw records, {rate:.0} events/s, ETA {eta}",
            "#".repeat(filled),
            "-".repeat(30 - filled.min(30)),
            done * 100.0
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The size of a store's column family as a status row shows it: bytes on
/// disk, and the bytes its compactions still have to rewrite.
struct Stored {
    bytes: u64,
    to_compact: u64,
}

impl Stored {
    fn of(report: &serde_json::Value, bytes_field: &str) -> Self {
        Self {
            bytes: report[bytes_field].as_u64().unwrap_or(0),
            to_compact: report["compaction_pending_bytes"].as_u64().unwrap_or(0),
        }
    }
}

fn print_consumer(
    name: &str,
    version: &str,
    live: &str,
    stored: &Stored,
    consumer: &serde_json::Value,
) {
    let rate = consumer["events_per_second"].as_f64().unwrap_or(0.0);
    let text = |value: &serde_json::Value| {
        value
            .as_i64()
            .map_or("-".to_owned(), |number| number.to_string())
    };
    for partition in consumer["partitions"].as_array().into_iter().flatten() {
        println!(
            "{name:<16} {version:<8} {live:<5} {:>9} {:>12} {:>12} {:>8} {rate:>10.0} {:>12} {:>12}",
            text(&partition["partition"]),
            text(&partition["applied_offset"]),
            text(&partition["log_end"]),
            text(&partition["lag"]),
            stored.bytes,
            stored.to_compact
        );
    }
    let last_error = &consumer["last_error"];
    if let Some(error) = last_error["message"].as_str() {
        // Whether the worker got over it matters more than the error itself.
        let since = match last_error["batches_since"].as_u64() {
            Some(0) | None => "no batch committed since".to_owned(),
            Some(batches) => format!("{batches} batches committed since"),
        };
        let ago = last_error["at_ms"]
            .as_i64()
            .map(|at_ms| {
                let seconds = (rapport_common::now_ms() - at_ms).max(0) / 1000;
                format!(" {seconds} s ago")
            })
            .unwrap_or_default();
        println!("{name:<16} last error{ago} ({since}): {error}");
    }
}

fn status(args: &Args, json: bool) -> anyhow::Result<()> {
    let identity = fetch_status(&args.identity_url);
    let projector = fetch_status(&args.query_url);
    if json {
        let answer = |result: &anyhow::Result<serde_json::Value>| match result {
            Ok(value) => value.clone(),
            Err(error) => serde_json::json!({ "error": format!("{error:#}") }),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"identity": answer(&identity), "projector": answer(&projector)})
            )?
        );
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:<5} {:>9} {:>12} {:>12} {:>8} {:>10} {:>12} {:>12}",
        "name",
        "version",
        "live",
        "partition",
        "applied",
        "log end",
        "lag",
        "events/s",
        "bytes",
        "to compact"
    );
    match &identity {
        Ok(report) => print_consumer(
            "identity",
            "v1",
            "yes",
            &Stored::of(report, "graph_bytes"),
            &report["consumer"],
        ),
        Err(error) => println!("identity: unreachable: {error:#}"),
    }
    if let Ok(report) = &identity {
        for version in report["versions"].as_array().into_iter().flatten() {
            print_consumer(
                "identity",
                version["version"].as_str().unwrap_or("?"),
                "no",
                &Stored::of(version, "graph_bytes"),
                &version["consumer"],
            );
        }
    }
    match &projector {
        Ok(report) => {
            for projection in report["projections"].as_array().into_iter().flatten() {
                print_consumer(
                    projection["projection"].as_str().unwrap_or("?"),
                    projection["version"].as_str().unwrap_or("?"),
                    if projection["live"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    &Stored::of(projection, "state_bytes"),
                    &projection["consumer"],
                );
            }
        }
        Err(error) => println!("projector: unreachable: {error:#}"),
    }
    if identity.is_err() || projector.is_err() {
        bail!("some services did not answer");
    }
    Ok(())
}

fn dead_letters(
    config: &rapport_common::config::Config,
    action: DeadLettersAction,
) -> anyhow::Result<()> {
    use prost::Message as _;
    let topic = &config.topics.deadletters;
    let records =
        rapport_common::broker::read_to_end(&config.kafka, topic, Duration::from_secs(60))?;
    let letters: Vec<(i64, rapport_proto::v1::DeadLetter)> = records
        .iter()
        .map(|record| {
            Ok((
                record.offset,
                rapport_proto::v1::DeadLetter::decode(record.payload.as_slice())
                    .with_context(|| format!("{topic}@{} is not a dead letter", record.offset))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    match action {
        DeadLettersAction::List => {
            println!(
                "{:>8}  {:<10}  {:<40}  reason",
                "offset", "service", "refused record"
            );
            for (offset, letter) in &letters {
                let source = format!(
                    "{}/{}@{}",
                    letter.source_topic, letter.source_partition, letter.source_offset
                );
                println!(
                    "{offset:>8}  {:<10}  {source:<40}  {}",
                    letter.service, letter.reason
                );
            }
            println!("{} dead letters", letters.len());
        }
        DeadLettersAction::Show { offset } => {
            let (_, letter) = letters
                .iter()
                .find(|(at, _)| *at == offset)
                .with_context(|| format!("no dead letter at offset {offset} of {topic}"))?;
            println!("service:   {}", letter.service);
            println!("reason:    {}", letter.reason);
            println!(
                "source:    {}/{}@{}",
                letter.source_topic, letter.source_partition, letter.source_offset
            );
            println!("timestamp: {}", letter.source_timestamp_ms);
            println!("key:       {}", String::from_utf8_lossy(&letter.key));
            println!("payload:   {} bytes", letter.payload.len());
            for chunk in letter.payload.chunks(32) {
                let hex: Vec<String> = chunk.iter().map(|byte| format!("{byte:02x}")).collect();
                println!("  {}", hex.join(" "));
            }
        }
        DeadLettersAction::Retry {
            service,
            from,
            dry_run,
        } => {
            let chosen: Vec<&(i64, rapport_proto::v1::DeadLetter)> = letters
                .iter()
                .filter(|(offset, letter)| {
                    *offset >= from
                        && service
                            .as_ref()
                            .is_none_or(|wanted| *wanted == letter.service)
                })
                .collect();
            let outgoing: Vec<rapport_common::kafka::Outgoing> = chosen
                .iter()
                .map(|(offset, letter)| rapport_common::kafka::Outgoing {
                    topic: letter.source_topic.clone(),
                    key: letter.key.clone(),
                    payload: letter.payload.clone(),
                    // A retry is received now; see docs/operating.md on record times.
                    timestamp_ms: Some(rapport_common::now_ms()),
                    headers: vec![(
                        rapport_common::kafka::RETRY_HEADER.to_owned(),
                        format!("0:{offset}").into_bytes(),
                    )],
                })
                .collect();
            for ((offset, letter), record) in chosen.iter().zip(&outgoing) {
                println!(
                    "{} dead letter {offset} ({}) to {}",
                    if dry_run {
                        "would re-submit"
                    } else {
                        "re-submitting"
                    },
                    letter.service,
                    record.topic
                );
            }
            if !dry_run && !outgoing.is_empty() {
                let (producer, _) = rapport_common::kafka::producer(
                    &config.kafka,
                    "rapportctl",
                    Some(Duration::from_secs(30)),
                    100_000,
                )?;
                rapport_common::kafka::produce_all(&producer, &outgoing)?;
            }
            println!(
                "{} dead letters {}",
                outgoing.len(),
                if dry_run {
                    "would be re-submitted"
                } else {
                    "re-submitted"
                }
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rapport_common::init_logging_filtered(args.common.log_json, "warn,librdkafka=off");
    let config = args.common.load()?;
    match args.command {
        Command::Status { json } => tokio::task::block_in_place(|| status(&args, json)),
        Command::Replay {
            ref projection,
            ref version,
            ref from,
            ref until,
            switch,
            ref identity_version,
            no_wait,
        } => tokio::task::block_in_place(|| {
            replay(
                &args,
                ReplayRequest {
                    projection,
                    version: version.clone(),
                    from,
                    until: until.clone(),
                    identity_version: identity_version.as_deref(),
                    switch,
                    no_wait,
                },
            )
        }),
        Command::Switch {
            ref version,
            follow_other_topic,
        } => tokio::task::block_in_place(|| switch_live(&args, version, follow_other_topic)),
        Command::Drop { ref version } => tokio::task::block_in_place(|| {
            admin(
                &args.query_url,
                "DELETE",
                &format!("/v1/admin/versions/{version}"),
                None,
            )?;
            println!("version {version} dropped");
            Ok(())
        }),
        Command::Verify {
            ref other,
            patience_s,
            ..
        } => tokio::task::block_in_place(|| verify(&args, other, Duration::from_secs(patience_s))),
        Command::Reidentify {
            ref version,
            no_wait,
            ref compare,
            ref drop,
            patience_s,
        } => {
            let action = match (compare.clone(), drop.clone()) {
                (Some(version), _) => Reidentify::Compare(version),
                (_, Some(version)) => Reidentify::Drop(version),
                (None, None) => Reidentify::Start {
                    version: version.clone(),
                    no_wait,
                },
            };
            tokio::task::block_in_place(|| {
                reidentify(&args, action, Duration::from_secs(patience_s))
            })
        }
        Command::Deadletters { action } => {
            tokio::task::block_in_place(|| dead_letters(&config, action))
        }
        Command::Topics {
            action:
                TopicsAction::Create {
                    file,
                    replication_factor,
                },
        } => create_topics(&config, file.as_ref(), replication_factor).await,
        Command::Topics {
            action: TopicsAction::Describe { file },
        } => describe_topics(&config, file.as_ref()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_version_is_caught_up_once_every_end_is_applied_or_read_to() {
        let applied = json!({"partition": 0, "applied_offset": 9, "log_end": 10});
        assert!(caught_up(&json!([applied])));
        let behind = json!({"partition": 1, "applied_offset": 3, "log_end": 10});
        assert!(!caught_up(&json!([applied, behind])));
        // An end of 0 with nothing applied: empty, or a broker that lost the
        // topic for a moment. Only reading to the end tells them apart.
        let unread = json!({"partition": 1, "log_end": 0, "reached_end": false});
        assert!(!caught_up(&json!([applied, unread])));
        let read = json!({"partition": 1, "log_end": 0, "reached_end": true});
        assert!(caught_up(&json!([applied, read])));
        // Started at a time later than everything in the partition.
        let sought =
            json!({"partition": 1, "log_end": 40, "start_offset": 40, "reached_end": true});
        assert!(caught_up(&json!([applied, sought])));
        let not_started = json!({"partition": 1, "log_end": 40, "reached_end": true});
        assert!(!caught_up(&json!([applied, not_started])));
        assert!(
            !caught_up(&json!([{"partition": 0, "applied_offset": 9}])),
            "end unknown"
        );
        assert!(!caught_up(&json!([])));
    }
}
