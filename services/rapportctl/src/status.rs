//! Where every service stands: one row per consumer partition, from the
//! services' `/v1/admin/status`.

use anyhow::{Context as _, bail};
use rapport_common::admin::{IdentityStatus, ProjectorStatus};
use rapport_common::status::ConsumerReport;
use serde::de::DeserializeOwned;

use crate::client::Services;

/// The size of a store's column family as a status row shows it: bytes on
/// disk, and the bytes its compactions still have to rewrite.
struct Stored {
    bytes: u64,
    to_compact: u64,
}

fn print_consumer(
    name: &str,
    version: &str,
    live: &str,
    stored: &Stored,
    consumer: &ConsumerReport,
) {
    let rate = consumer.events_per_second;
    let text = |value: Option<i64>| value.map_or("-".to_owned(), |number| number.to_string());
    let row = |partition: &str, applied: &str, log_end: &str, lag: &str| {
        println!(
            "{name:<16} {version:<8} {live:<5} {partition:>9} {applied:>12} {log_end:>12} {lag:>8} {rate:>10.0} {:>12} {:>12}",
            stored.bytes, stored.to_compact
        );
    };
    // A worker reports no partition until it has read or applied
    // something (one just restarted, say); its version still gets a row.
    if consumer.partitions.is_empty() {
        row("-", "-", "-", "-");
    }
    for partition in &consumer.partitions {
        row(
            &partition.partition.to_string(),
            &text(partition.applied_offset),
            &text(partition.log_end),
            &text(partition.lag),
        );
    }
    if let Some(error) = &consumer.last_error {
        // Whether the worker got over it matters more than the error itself.
        let since = match error.batches_since {
            0 => "no batch committed since".to_owned(),
            batches => format!("{batches} batches committed since"),
        };
        let seconds = (rapport_common::now_ms() - error.at_ms).max(0) / 1000;
        println!(
            "{name:<16} last error {seconds} s ago ({since}): {}",
            error.message
        );
    }
}

/// Prints the status table, or with `json` the services' answers as they
/// are: scripts get every field, also those this rapportctl does not know.
pub(crate) fn show(services: &Services, json: bool) -> anyhow::Result<()> {
    let identity = services
        .identity
        .get::<serde_json::Value>("/v1/admin/status");
    let projector = services
        .projector
        .get::<serde_json::Value>("/v1/admin/status");
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
    let identity = typed::<IdentityStatus>(identity, "identity");
    match &identity {
        Ok(report) => {
            let live = Stored {
                bytes: report.graph_bytes,
                to_compact: report.compaction_pending_bytes,
            };
            print_consumer("identity", "v1", "yes", &live, &report.consumer);
            for version in &report.versions {
                let stored = Stored {
                    bytes: version.graph_bytes,
                    to_compact: version.compaction_pending_bytes,
                };
                print_consumer(
                    "identity",
                    &version.version,
                    "no",
                    &stored,
                    &version.consumer,
                );
            }
        }
        Err(error) => println!("identity: {error:#}"),
    }
    let projector = typed::<ProjectorStatus>(projector, "the projector");
    match &projector {
        Ok(report) => {
            for projection in &report.projections {
                let stored = Stored {
                    bytes: projection.state_bytes,
                    to_compact: projection.compaction_pending_bytes,
                };
                print_consumer(
                    &projection.projection,
                    &projection.version,
                    if projection.live { "yes" } else { "no" },
                    &stored,
                    &projection.consumer,
                );
            }
        }
        Err(error) => println!("projector: {error:#}"),
    }
    if identity.is_err() || projector.is_err() {
        bail!("some services did not answer");
    }
    Ok(())
}

/// A status answer read into its type; says which service it was from and
/// whether it did not answer or answered something unexpected.
fn typed<Answer: DeserializeOwned>(
    answer: anyhow::Result<serde_json::Value>,
    service: &str,
) -> anyhow::Result<Answer> {
    let answer = answer.context("no status")?;
    serde_json::from_value(answer)
        .with_context(|| format!("the status of {service} is not as this rapportctl reads it"))
}
