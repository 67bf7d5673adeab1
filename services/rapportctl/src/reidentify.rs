//! Re-identification: identity resolution re-run from the raw topic into a
//! graph version beside the live graph, followed until done and compared.

use std::time::Duration;

use anyhow::bail;
use rapport_common::admin::{
    GraphComparison, GraphDropped, GraphSummary, GraphVersion, GraphVersionState, ReidentifyRequest,
};

use crate::client::Services;
use crate::progress::Progress;

/// What `reidentify` does.
pub(crate) enum Reidentify {
    Start {
        version: Option<String>,
        no_wait: bool,
    },
    Compare(String),
    Drop(String),
}

pub(crate) fn reidentify(
    services: &Services,
    action: Reidentify,
    patience: Duration,
) -> anyhow::Result<()> {
    let version = match action {
        Reidentify::Drop(version) => {
            let answer: GraphDropped = services
                .identity
                .delete(&format!("/v1/admin/versions/{version}"))?;
            let topic = &answer.topic;
            if answer.topic_deleted {
                println!("graph version {version} dropped, topic {topic} deleted");
            } else {
                println!(
                    "graph version {version} dropped; topic {topic} could not be deleted (see the identity log)"
                );
            }
            return Ok(());
        }
        Reidentify::Compare(version) => version,
        Reidentify::Start { version, no_wait } => {
            let created: GraphVersion = services
                .identity
                .post("/v1/admin/reidentify", Some(&ReidentifyRequest { version }))?;
            let bounds: Vec<String> = created
                .partitions
                .iter()
                .map(|partition| {
                    format!(
                        "{}:{}",
                        partition.partition,
                        partition
                            .bound
                            .map_or("-".to_owned(), |bound| bound.to_string())
                    )
                })
                .collect();
            println!(
                "re-identifying into version {}: graph {}, topic {}",
                created.version, created.family, created.topic
            );
            println!(
                "bounded by the live graph's raw offsets {} ({} raw records)",
                bounds.join(" "),
                created.raw_records_total
            );
            if no_wait {
                return Ok(());
            }
            created.version
        }
    };
    wait_for_version(services, &version, patience)?;
    let report: GraphComparison = services
        .identity
        .get(&format!("/v1/admin/versions/{version}/compare"))?;
    let side = |name: &str, summary: &GraphSummary| {
        let offsets: Vec<String> = summary
            .offsets
            .iter()
            .map(|(partition, offset)| format!("{partition}:{offset}"))
            .collect();
        println!(
            "{name:<12} {:>10} keys  checksum {}  offsets {}",
            summary.keys,
            summary.checksum,
            offsets.join(" ")
        );
    };
    side("live (v1)", &report.live);
    side(&version, &report.version);
    if report.equal {
        println!("equal");
        return Ok(());
    }
    println!("different");
    for difference in &report.first_differences {
        println!("differs at {} ({})", difference.key, difference.difference);
    }
    bail!("the re-identified graph {version} differs from the live graph")
}

/// Shows progress until the version resolved every raw record up to its bounds.
fn wait_for_version(services: &Services, version: &str, patience: Duration) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let progress = Progress::bar(version);
    loop {
        let report: GraphVersion = services
            .identity
            .get(&format!("/v1/admin/versions/{version}"))?;
        let read = report.raw_records_read;
        let total = report.raw_records_total;
        match report.state {
            GraphVersionState::Finished => {
                progress.println(format_args!(
                    "version {version} resolved {total} raw records in {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            GraphVersionState::Running => {}
            state @ (GraphVersionState::Stopped | GraphVersionState::Failed) => {
                bail!(
                    "version {version} is {}: {}",
                    state.as_str(),
                    report
                        .consumer
                        .last_error
                        .as_ref()
                        .map_or("see the identity log", |error| error.message.as_str())
                );
            }
        }
        if started.elapsed() > patience {
            bail!(
                "version {version} did not finish within {patience:?} ({read} of {total} raw records); it keeps running, compare it later with --compare {version}"
            );
        }
        let rate = report.consumer.events_per_second;
        let eta = if rate > 0.0 {
            format!("{:.0} s", (total - read) as f64 / rate)
        } else {
            "-".to_owned()
        };
        progress.show(
            read.max(0) as u64,
            total.max(0) as u64,
            format!("raw records, ETA {eta}, {rate:.0} events/s"),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
