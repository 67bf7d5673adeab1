//! `POST /v1/internal/reads`: what another projector process asks of this
//! one (see `cluster`): point reads and prefix scans of a projection
//! version, on partitions this process owns, and the population figures of
//! the people on them (its share of the population, segment counts and
//! members). Service keys only; values go as stored, and the asking process
//! opens sealed tokens itself.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prost::Message as _;
use rapport_common::http::ApiError;
use rapport_proto::internal::{Entry, MaybeValue, ReadAnswer, ReadRequest, ScanAnswer};

use crate::query::{QueryState, blocking};
use crate::read::{MAX_GETS, MAX_SCAN_LIMIT, MAX_SCANS, held, scan_held};
use crate::request::invalid_field;
use crate::scores::SegmentKind;

pub(crate) async fn reads(
    State(state): State<Arc<QueryState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = ReadRequest::decode(body).map_err(|error| {
        invalid_field(
            "body",
            format!("must be a rapport.internal.v1.ReadRequest in protobuf: {error}"),
        )
    })?;
    if request.gets.len() > MAX_GETS {
        return Err(invalid_field("gets", format!("at most {MAX_GETS}")));
    }
    if request.scans.len() > MAX_SCANS {
        return Err(invalid_field("scans", format!("at most {MAX_SCANS}")));
    }
    if let Some(scan) = request
        .scans
        .iter()
        .find(|scan| scan.limit > MAX_SCAN_LIMIT)
    {
        return Err(invalid_field(
            "scans.limit",
            format!("{} is above {MAX_SCAN_LIMIT}", scan.limit),
        ));
    }
    // A process a partition moved away from holds its past, not its
    // present: refuse, and the asker answers 503 rather than stale data.
    if !state.owns_all(&request.partitions) {
        return Err(ApiError::Conflict(format!(
            "this projector does not own all of partitions {:?}; it may have been moved (see /v1/admin/status)",
            request.partitions
        )));
    }
    let segment_kind = match &request.segments {
        Some(ask) if !ask.kind.is_empty() => Some(
            SegmentKind::parse(&ask.kind)
                .ok_or_else(|| invalid_field("segments.kind", format!("no kind {}", ask.kind)))?,
        ),
        _ => None,
    };
    let version = (!request.version.is_empty()).then(|| request.version.clone());
    let answer = blocking(state, version, move |state, view| {
        let store = view.store;
        let mut answer = ReadAnswer::default();
        // Entries of partitions given up stay in the store; they are not
        // this process's to answer.
        let owns = |id: &str| state.owns_profile(id);
        for key in &request.gets {
            let value = store
                .get(&view.family, key)?
                .filter(|value| held(key, value, owns));
            answer.values.push(MaybeValue {
                found: value.is_some(),
                value: value.unwrap_or_default(),
            });
        }
        for scan in &request.scans {
            let before = (!scan.before.is_empty()).then_some(scan.before.as_slice());
            let entries = scan_held(
                store,
                &view.family,
                &scan.prefix,
                before,
                scan.limit as usize,
                owns,
            )?;
            answer.scans.push(ScanAnswer {
                entries: entries
                    .into_iter()
                    .map(|(key, value)| Entry { key, value })
                    .collect(),
            });
        }
        if request.share.is_some() || request.segments.is_some() || !request.figure.is_empty() {
            let served = state.served(&request.partitions);
            let changes = state.versions.changes_of(&view.version);
            if let Some(ask) = &request.share {
                let share = state.scores.share(
                    view,
                    &view.version,
                    changes.clone(),
                    ask.as_of_day,
                    &served,
                )?;
                answer.share = Some(share.to_wire());
            }
            if let Some(ask) = &request.segments {
                answer.segments = Some(state.scores.segments(
                    view,
                    &view.version,
                    changes,
                    ask,
                    segment_kind,
                    &served,
                )?);
            }
            if !request.figure.is_empty() {
                answer.figure = crate::figures::answer(state, view, &request.figure, &served)?;
            }
        }
        Ok(answer)
    })
    .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        answer.encode_to_vec(),
    )
        .into_response())
}
