//! Projection versions: rebuild one beside the live version and follow it
//! until it caught up, switch the live pointer, drop a version, and verify
//! two versions against each other.

use std::time::Duration;

use anyhow::{Context as _, bail};

use rapport_common::admin::{
    self, GraphVersion, GraphVersionState, ProjectionDropped, ProjectionVersions, ReplayStarted,
    VerifyReport, VersionSwitched,
};
use rapport_common::status::{ConsumerReport, PartitionStatus};

use crate::client::Services;
use crate::progress::Progress;

/// What `replay` builds.
pub(crate) struct ReplayOptions<'a> {
    pub(crate) projection: &'a str,
    pub(crate) version: Option<String>,
    pub(crate) from: &'a str,
    pub(crate) until: Option<String>,
    pub(crate) identity_version: Option<&'a str>,
    pub(crate) switch: bool,
    pub(crate) no_wait: bool,
}

/// The customer topic identity wrote for a graph version.
fn identity_version_topic(services: &Services, name: &str) -> anyhow::Result<String> {
    let report: GraphVersion = services
        .identity
        .get(&format!("/v1/admin/versions/{name}"))
        .with_context(|| {
            format!("asking identity for the graph version {name} (rapportctl status lists them)")
        })?;
    if report.state == GraphVersionState::Failed {
        bail!(
            "graph version {name} failed: {}; drop it with `rapportctl reidentify --drop {name}`",
            last_error_message(&report.consumer).unwrap_or("see the identity log")
        );
    }
    Ok(report.topic)
}

fn last_error_message(consumer: &ConsumerReport) -> Option<&str> {
    consumer
        .last_error
        .as_ref()
        .map(|error| error.message.as_str())
}

pub(crate) fn replay(services: &Services, options: ReplayOptions<'_>) -> anyhow::Result<()> {
    let ReplayOptions {
        projection,
        version,
        from,
        until,
        identity_version,
        switch,
        no_wait,
    } = options;
    let source_topic = match identity_version {
        Some(name) => Some(identity_version_topic(services, name)?),
        None => None,
    };
    let body = admin::ReplayRequest {
        projection: projection.to_owned(),
        version,
        from: Some(from.to_owned()),
        until,
        source_topic,
    };
    let created: ReplayStarted = services.projector.post("/v1/admin/replays", Some(&body))?;
    let version = created.version;
    println!(
        "rebuilding {projection} into version {version} from {}",
        created.topic.as_deref().unwrap_or("the customer topic")
    );
    if no_wait {
        return Ok(());
    }
    // A bounded snapshot ends before the log does: how far it has to go
    // is unknown until it gets there.
    let bounded = body.until.is_some();
    let progress = if bounded {
        Progress::spinner(&version)
    } else {
        Progress::bar(&version)
    };
    let started = std::time::Instant::now();
    let mut starts_shown = std::collections::BTreeSet::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let listing: ProjectionVersions = services.projector.get("/v1/admin/versions")?;
        let report = listing
            .versions
            .into_iter()
            .find(|report| report.version == version)
            .context("the version disappeared")?;
        let consumer = &report.consumer;
        // The last error stays in the status after the worker got over it
        // (a broker restart mid-rebuild); the rebuild failed only if its
        // worker stopped on it.
        if let Some(error) = last_error_message(consumer)
            && report.failed
        {
            bail!("the rebuild failed: {error}");
        }
        for partition in &consumer.partitions {
            if let Some(offset) = partition.start_offset
                && starts_shown.insert(partition.partition)
            {
                progress.println(format_args!(
                    "partition {} starts at offset {offset}, found by {}",
                    partition.partition,
                    partition.start_found_by.as_deref().unwrap_or("?")
                ));
            }
        }
        let Applied { applied, to_apply } = Applied::of(consumer);
        let lag = consumer.total_lag;
        let rate = consumer.events_per_second;
        let eta = if rate > 0.0 {
            format!("{:.0} s", lag as f64 / rate)
        } else {
            "-".to_owned()
        };
        if bounded {
            progress.message(format!("{applied} records applied, {rate:.0} events/s"));
        } else {
            progress.show(
                applied,
                to_apply,
                format!("applied, ETA {eta}, {lag} behind, {rate:.0} events/s"),
            );
        }
        let done = if bounded {
            report.finished
        } else {
            caught_up(&consumer.partitions)
        };
        if done {
            progress.println(format_args!(
                "version {version} {} after {:.1} s ({applied} records)",
                if bounded {
                    "reached its end"
                } else {
                    "caught up"
                },
                started.elapsed().as_secs_f64()
            ));
            break;
        }
    }
    drop(progress);
    if switch {
        switch_live(services, &version, false)?;
    }
    Ok(())
}

/// What a version has applied of the records it is to apply.
struct Applied {
    /// Records applied: from each partition's start (0, or where a `--from`
    /// put it) to its applied offset.
    applied: u64,
    /// Records from each partition's start to its end, where the end is known.
    to_apply: u64,
}

impl Applied {
    fn of(consumer: &ConsumerReport) -> Self {
        let mut counts = Self {
            applied: 0,
            to_apply: 0,
        };
        for partition in &consumer.partitions {
            let start = partition.start_offset.unwrap_or(0);
            if let Some(offset) = partition.applied_offset {
                counts.applied += (offset + 1 - start).max(0) as u64;
            }
            if let Some(end) = partition.log_end {
                counts.to_apply += (end - start).max(0) as u64;
            }
        }
        counts
    }
}

/// Whether a version has caught up, from its status's partitions: every
/// partition's end is known and has been applied up to. Where nothing was
/// applied (an empty partition, or a start at a time later than all of it)
/// the end is trusted only once the worker read to it: a broker that lost a
/// topic for a moment reports an end of 0.
fn caught_up(partitions: &[PartitionStatus]) -> bool {
    !partitions.is_empty()
        && partitions.iter().all(
            |partition| match (partition.log_end, partition.applied_offset) {
                (Some(end), Some(applied)) => applied == end - 1,
                (Some(end), None) => {
                    partition.reached_end && partition.start_offset.unwrap_or(0) >= end
                }
                (None, _) => false,
            },
        )
}

pub(crate) fn switch_live(
    services: &Services,
    version: &str,
    follow_other_topic: bool,
) -> anyhow::Result<()> {
    let query = if follow_other_topic {
        "?follow_other_topic=true"
    } else {
        ""
    };
    let answer: VersionSwitched = services.projector.post(
        &format!("/v1/admin/versions/{version}/switch{query}"),
        None::<&()>,
    )?;
    println!(
        "version {version} is live, reading {}",
        answer.topic.as_deref().unwrap_or("?")
    );
    Ok(())
}

/// Stops a version's worker and deletes its state.
pub(crate) fn drop_version(services: &Services, version: &str) -> anyhow::Result<()> {
    let _: ProjectionDropped = services
        .projector
        .delete(&format!("/v1/admin/versions/{version}"))?;
    println!("version {version} dropped");
    Ok(())
}

pub(crate) fn verify(services: &Services, other: &str, patience: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + patience;
    let mut explain_topics = true;
    let progress = Progress::bar(other);
    loop {
        let report: VerifyReport = services
            .projector
            .get(&format!("/v1/admin/verify?other={other}"))?;
        let [live_family, other_family] = &report.versions;
        let [live_topic, other_topic] = report.topics.each_ref().map(|topic| topic.as_deref());
        // Said once: the comparison is by offset, partition by partition.
        if live_topic != other_topic && std::mem::take(&mut explain_topics) {
            progress.println(format_args!(
                "{live_family} reads {}, {other_family} reads {}: compared at equal offsets, which holds the same records only if both topics do (a re-identification of an unchanged log)",
                live_topic.unwrap_or("?"),
                other_topic.unwrap_or("?")
            ));
        }
        if report.same_offsets {
            drop(progress);
            println!(
                "{live_family} vs {other_family}: {} vs {} keys, checksums {} vs {}",
                report.keys[0], report.keys[1], report.checksums[0], report.checksums[1]
            );
            if report.identical {
                println!("identical");
                return Ok(());
            }
            for key in &report.first_differences {
                println!("differs at {key}");
            }
            bail!("the versions differ");
        }
        if std::time::Instant::now() > deadline {
            if live_topic != other_topic {
                bail!(
                    "the versions did not reach the same offsets within {patience:?}: they read different topics, and one has records the other lacks (traffic since the re-identification, or records identity produced twice after a crash)"
                );
            }
            bail!(
                "the versions did not reach the same offsets within {patience:?}; is traffic still flowing?"
            );
        }
        // Only for the bar: a listing that fails here leaves it as it was,
        // and the comparison above reports what is wrong with the service.
        if let Ok(listing) = services
            .projector
            .get::<ProjectionVersions>("/v1/admin/versions")
            && let Some(version) = listing
                .versions
                .iter()
                .find(|version| version.version == other)
        {
            let Applied { applied, to_apply } = Applied::of(&version.consumer);
            progress.show(
                applied,
                to_apply,
                format!("applied, waiting to reach the offsets of {live_family}"),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Partitions as a status answer lists them.
    fn partitions(sample: serde_json::Value) -> Vec<PartitionStatus> {
        serde_json::from_value(sample).unwrap()
    }

    #[test]
    fn a_version_is_caught_up_once_every_end_is_applied_or_read_to() {
        let applied = json!({"partition": 0, "applied_offset": 9, "log_end": 10});
        assert!(caught_up(&partitions(json!([applied]))));
        let behind = json!({"partition": 1, "applied_offset": 3, "log_end": 10});
        assert!(!caught_up(&partitions(json!([applied, behind]))));
        // An end of 0 with nothing applied: empty, or a broker that lost the
        // topic for a moment. Only reading to the end tells them apart.
        let unread = json!({"partition": 1, "log_end": 0, "reached_end": false});
        assert!(!caught_up(&partitions(json!([applied, unread]))));
        let read = json!({"partition": 1, "log_end": 0, "reached_end": true});
        assert!(caught_up(&partitions(json!([applied, read]))));
        // Started at a time later than everything in the partition.
        let sought =
            json!({"partition": 1, "log_end": 40, "start_offset": 40, "reached_end": true});
        assert!(caught_up(&partitions(json!([applied, sought]))));
        let not_started = json!({"partition": 1, "log_end": 40, "reached_end": true});
        assert!(!caught_up(&partitions(json!([applied, not_started]))));
        assert!(
            !caught_up(&partitions(json!([{"partition": 0, "applied_offset": 9}]))),
            "end unknown"
        );
        assert!(!caught_up(&partitions(json!([]))));
    }
}
