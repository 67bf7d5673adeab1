//! Records the services refused, read from the dead-letter topic: listed,
//! shown one by one, and re-submitted to the topic they came from.

use std::time::Duration;

use anyhow::Context as _;
use prost::Message as _;
use rapport_common::config::Config;
use rapport_proto::v1::DeadLetter;

use crate::progress::Progress;

/// What `retry` re-submits.
pub(crate) struct RetryFilter {
    /// Only letters refused by this service.
    pub(crate) service: Option<String>,
    /// Only letters at or after this offset.
    pub(crate) from: i64,
    /// Show what would be re-submitted without sending anything.
    pub(crate) dry_run: bool,
}

/// Every dead letter on the topic, with its offset.
// Kafka reading stays apart from what is done with the letters.
fn read_letters(config: &Config) -> anyhow::Result<Vec<(i64, DeadLetter)>> {
    let topic = &config.topics.deadletters;
    let records =
        rapport_common::read_all::read_to_end(&config.kafka, topic, Duration::from_secs(60))?;
    records
        .iter()
        .map(|record| {
            Ok((
                record.offset,
                DeadLetter::decode(record.payload.as_slice())
                    .with_context(|| format!("{topic}@{} is not a dead letter", record.offset))?,
            ))
        })
        .collect()
}

/// Every dead letter, with a spinner while the topic is read (up to a minute
/// on a slow broker).
fn read_showing_progress(config: &Config) -> anyhow::Result<Vec<(i64, DeadLetter)>> {
    let progress = Progress::spinner("dead letters");
    progress.message(format!("reading {}", config.topics.deadletters));
    read_letters(config)
}

/// One line per dead letter.
pub(crate) fn list(config: &Config) -> anyhow::Result<()> {
    let letters = read_showing_progress(config)?;
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
    Ok(())
}

/// Everything about the dead letter at `offset`, its bytes in hex.
pub(crate) fn show(config: &Config, offset: i64) -> anyhow::Result<()> {
    let letters = read_showing_progress(config)?;
    let (_, letter) = letters
        .iter()
        .find(|(at, _)| *at == offset)
        .with_context(|| {
            format!(
                "no dead letter at offset {offset} of {}",
                config.topics.deadletters
            )
        })?;
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
    Ok(())
}

/// Re-submits the chosen letters to their source topics, in offset order.
pub(crate) fn retry(config: &Config, filter: RetryFilter) -> anyhow::Result<()> {
    let RetryFilter {
        service,
        from,
        dry_run,
    } = filter;
    let letters = read_showing_progress(config)?;
    let chosen: Vec<&(i64, DeadLetter)> = letters
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
    Ok(())
}
