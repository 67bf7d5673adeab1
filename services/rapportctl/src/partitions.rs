//! `rapportctl partitions move P --to URL`: hands a partition of the
//! customer topic to another projector process while every read stays
//! whole. The new owner takes the partition on and replays it while the
//! old owners go on answering for it; once the new owner has read it to
//! its end and serves it, each old owner gives it up (it stops announcing
//! the partition at once and stops applying it two seconds later, see the
//! projector's `PUT /v1/admin/partitions`).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rapport_common::admin::{
    Ownership, PartitionsRequest, PartitionsSet, ProjectorReport, ProjectorStatus,
};

use crate::client::{AdminApi, Services};
use crate::progress::Progress;

/// How often the move looks at the projectors' status.
const POLL: Duration = Duration::from_millis(250);

/// The ownership `api`'s projector reports; an error when it runs alone.
fn ownership(api: &AdminApi) -> anyhow::Result<(ProjectorStatus, Ownership)> {
    let status: ProjectorStatus = api.get("/v1/admin/status")?;
    let ownership = status.ownership.clone().with_context(|| {
        format!(
            "the projector at {} runs alone (it found no projectors topic), so it has no partitions to move; create the topic with `rapportctl topics create` and restart it",
            api.base()
        )
    })?;
    Ok((status, ownership))
}

fn projector<'a>(ownership: &'a Ownership, url: &str) -> Option<&'a ProjectorReport> {
    ownership
        .projectors
        .iter()
        .find(|projector| projector.url == url)
}

/// The owned partitions of the projector at `url` with `partition` added
/// (`take`) or taken out.
fn with(owned: &[i32], partition: i32, take: bool) -> Vec<i32> {
    let mut partitions: Vec<i32> = owned
        .iter()
        .copied()
        .filter(|owned| *owned != partition)
        .collect();
    if take {
        partitions.push(partition);
    }
    partitions.sort_unstable();
    partitions
}

/// Where the target stands on `partition`: applied offset and end.
fn replay_progress(status: &ProjectorStatus, partition: i32) -> Option<(i64, i64)> {
    let live = status.projections.iter().find(|version| version.live)?;
    let report = live
        .consumer
        .partitions
        .iter()
        .find(|report| report.partition == partition)?;
    let end = report.log_end?;
    Some((report.applied_offset.map_or(0, |offset| offset + 1), end))
}

pub(crate) fn move_partition(
    services: &Services,
    partition: i32,
    to: &str,
    patience: Duration,
) -> anyhow::Result<()> {
    let target = services.at(to);
    let (_, seen) = ownership(&target)?;
    if !(0..seen.partition_count).contains(&partition) {
        bail!(
            "the customer topic has partitions 0 to {}; there is no partition {partition}",
            seen.partition_count - 1
        );
    }
    let me = seen.me.clone();
    let mine = projector(&seen, &me)
        .with_context(|| format!("the projector at {to} does not list itself; is it starting?"))?;
    let sources: Vec<String> = seen.partitions[partition as usize]
        .owners
        .iter()
        .filter(|owner| **owner != me)
        .cloned()
        .collect();
    let progress = Progress::bar(&format!("partition {partition}"));
    if !mine.owned.contains(&partition) {
        let set: PartitionsSet = target.put(
            "/v1/admin/partitions",
            &PartitionsRequest {
                partitions: with(&mine.owned, partition, true),
                force: false,
            },
        )?;
        progress.println(format!(
            "{me} takes partition {partition} on (it owns {:?} now) and replays it; {} answer for it meanwhile",
            set.partitions,
            if sources.is_empty() {
                "nobody".to_owned()
            } else {
                sources.join(", ")
            }
        ));
    }
    // Once it serves the partition, it answers for it as well as the old
    // owners do.
    let started = Instant::now();
    loop {
        let (status, now) = ownership(&target)?;
        if projector(&now, &me).is_some_and(|mine| mine.serving.contains(&partition)) {
            break;
        }
        match replay_progress(&status, partition) {
            Some((applied, end)) => progress.show(
                applied as u64,
                end as u64,
                format!("records replayed by {me}"),
            ),
            None => progress.message(format!("{me} starts reading the partition")),
        }
        if started.elapsed() > patience {
            bail!(
                "{me} has not read partition {partition} to its end within {patience:?}; it keeps replaying, and the old owners keep answering for it: run the move again to wait on"
            );
        }
        std::thread::sleep(POLL);
    }
    progress.println(format!(
        "{me} has read partition {partition} to its end and serves it"
    ));
    for source in &sources {
        let api = services.at(source);
        // It gives the partition up only once it sees the new owner serve
        // it (it reads the announcement a moment after the new owner says
        // so itself).
        let started = Instant::now();
        let theirs = loop {
            let (_, theirs) = ownership(&api)?;
            if projector(&theirs, &me).is_some_and(|target| target.serving.contains(&partition)) {
                break theirs;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{source} does not see {me} serve partition {partition} after 30 s; do they read the same projectors topic? (rapportctl status)"
                );
            }
            std::thread::sleep(POLL);
        };
        let owned = projector(&theirs, source)
            .map(|report| report.owned.clone())
            .unwrap_or_default();
        if !owned.contains(&partition) {
            continue;
        }
        let set: PartitionsSet = api.put(
            "/v1/admin/partitions",
            &PartitionsRequest {
                partitions: with(&owned, partition, false),
                force: false,
            },
        )?;
        progress.println(format!(
            "{source} gave partition {partition} up (it owns {:?} now)",
            set.partitions
        ));
    }
    // Everyone sees the new owner alone.
    let started = Instant::now();
    loop {
        let (_, now) = ownership(&target)?;
        let owners = &now.partitions[partition as usize];
        if owners.owners == [me.clone()] && owners.served_by.as_deref() == Some(me.as_str()) {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "partition {partition} is owned by {:?} and served by {:?}; see `rapportctl status`",
                owners.owners,
                owners.served_by
            );
        }
        std::thread::sleep(POLL);
    }
    drop(progress);
    println!("partition {partition} moved to {me}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_added_or_taken_out_of_an_owned_list() {
        assert_eq!(with(&[3, 0], 1, true), [0, 1, 3]);
        assert_eq!(with(&[0, 1, 3], 1, false), [0, 3]);
        assert_eq!(with(&[0, 1], 1, true), [0, 1]);
        assert_eq!(with(&[0], 2, false), [0]);
    }
}
