//! `PUT /v1/admin/partitions`: the customer-topic partitions this projector
//! owns from now on, which is how `rapportctl partitions move` hands a
//! partition from one process to another without a read going partial:
//! the new owner takes the partition on and replays it while the old one
//! still answers for it; once the new owner serves it, the old one gives
//! it up, first by no longer announcing it as served (so that reads go to
//! the new owner), then, after [`RELEASE_GRACE`], by no longer applying it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use rapport_common::admin::{PartitionsRequest, PartitionsSet};
use rapport_common::http::ApiError;

use crate::query::QueryState;
use crate::request::invalid_field;

/// How long a process given up partitions goes on applying them after it
/// stopped announcing them as served: the others reroute on reading its
/// announcement, which takes well under a second.
pub(crate) const RELEASE_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn set_partitions(
    State(state): State<Arc<QueryState>>,
    request: Result<Json<PartitionsRequest>, JsonRejection>,
) -> Result<Json<PartitionsSet>, ApiError> {
    let Json(request) = request.map_err(|rejection| ApiError::Invalid {
        message: rejection.body_text(),
        details: vec![],
    })?;
    let Some(cluster) = state.cluster.clone() else {
        return Err(ApiError::Conflict(
            "this projector runs alone (it found no projectors topic): there is nobody to move partitions to or from; create the topic with `rapportctl topics create` and restart it".to_owned(),
        ));
    };
    let routes = cluster.routes();
    let count = routes.partition_count();
    let wanted: BTreeSet<i32> = request.partitions.iter().copied().collect();
    if wanted.is_empty() {
        return Err(invalid_field(
            "partitions",
            "must name at least one partition; to retire a projector, stop it",
        ));
    }
    if wanted.len() != request.partitions.len() {
        return Err(invalid_field("partitions", "names a partition twice"));
    }
    if let Some(beyond) = wanted
        .iter()
        .find(|partition| !(0..count).contains(*partition))
    {
        return Err(invalid_field(
            "partitions",
            format!("{beyond} is not a partition of the customer topic, which has {count}"),
        ));
    }
    let owned: BTreeSet<i32> = cluster.owned().into_iter().collect();
    let taken: Vec<i32> = wanted.difference(&owned).copied().collect();
    let released: Vec<i32> = owned.difference(&wanted).copied().collect();
    let report = &routes.report;
    // A process serves only partitions it owns.
    let alone: Vec<i32> = released
        .iter()
        .copied()
        .filter(|partition| {
            !report.projectors.iter().any(|projector| {
                projector.url != report.me && projector.serving.contains(partition)
            })
        })
        .collect();
    if !alone.is_empty() && !request.force {
        return Err(ApiError::Conflict(format!(
            "no other projector serves partitions {alone:?}: giving them up would make reads of their people answer 503; move them with `rapportctl partitions move PARTITION --to URL`, which gives them to another projector first, or set force"
        )));
    }
    let partitions: Vec<i32> = wanted.into_iter().collect();
    let answer = PartitionsSet {
        partitions: partitions.clone(),
        taken,
        released: released.clone(),
    };
    let versions = state.versions.clone();
    tokio::task::spawn_blocking(move || {
        if !released.is_empty() {
            cluster.release(&released);
            std::thread::sleep(RELEASE_GRACE);
        }
        // Owned before the worker applies them: the people it folds in
        // belong on this process's scoreboard.
        let mut owning: Vec<i32> = owned
            .union(&partitions.iter().copied().collect())
            .copied()
            .collect();
        owning.sort_unstable();
        cluster.set_owned(owning);
        versions.set_partitions(partitions.clone())?;
        cluster.set_owned(partitions);
        Ok::<_, rapport_common::Error>(())
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))??;
    Ok(Json(answer))
}
