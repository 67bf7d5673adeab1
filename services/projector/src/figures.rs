//! Population figures each projector process holds a part of: the
//! dashboard's overview, pages of people, campaign figures and the buyers
//! of a model validation. Each process computes its part over the people
//! whose root profile lies on the partitions it serves, labelled against
//! the whole population (see `scores`); the asking process merges the
//! parts. With one process, its part is the whole figure.
//!
//! Parts travel postcard-encoded in `rapport.internal.v1.ReadRequest.figure`
//! and `ReadAnswer.figure`: they are this crate's own types, and every
//! process of a deployment runs the same release, as for the stored state.

use std::collections::BTreeMap;
use std::sync::Arc;

use rapport_common::Error;
use rapport_common::http::ApiError;
use rapport_projections::analytics::campaigns::{
    CampaignSummary, CampaignTotals, campaign_summaries, recipients,
};
use rapport_projections::analytics::dashboard::{Overview, OverviewBuilder};
use rapport_projections::analytics::validation::Holdout;
use rapport_projections::time::utc_day;
use serde::{Deserialize, Serialize};

use crate::query::QueryState;
use crate::read::{Served, View};
use crate::scores::{PeopleFilter, SegmentKind};

/// A figure one process asks of another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Ask {
    /// The dashboard's figures at a day, before they are finished.
    Overview { as_of: i64 },
    /// A page of a dashboard list: people after `after`, by id.
    People {
        as_of: i64,
        filter: PeopleFilter,
        after: Option<String>,
        limit: u64,
    },
    /// Every campaign's figures.
    Campaigns,
    /// One campaign's figures, broken down by segment.
    Campaign { campaign_id: String },
    /// The buyers of a model validation, by id.
    Holdouts {
        calibration_end: i64,
        holdout_end: i64,
    },
}

/// One process's part of an [`Ask`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Part {
    Overview(Box<OverviewBuilder>),
    People { ids: Vec<String>, more: bool },
    Campaigns(BTreeMap<String, CampaignSummary>),
    Campaign(Box<CampaignPart>),
    Holdouts(Vec<(String, Holdout)>),
}

/// One campaign over some of its recipients: when they were sent it, and
/// its figures by the segments they were in the day before.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CampaignPart {
    pub(crate) first_day: Option<i64>,
    pub(crate) last_day: Option<i64>,
    pub(crate) totals: CampaignTotals,
    pub(crate) by_rfm_segment: BTreeMap<String, CampaignTotals>,
    pub(crate) by_lifecycle_stage: BTreeMap<String, CampaignTotals>,
}

impl CampaignPart {
    fn merge(&mut self, other: CampaignPart) {
        self.first_day = self.first_day.into_iter().chain(other.first_day).min();
        self.last_day = self.last_day.into_iter().chain(other.last_day).max();
        self.totals.merge(&other.totals);
        for (into, from) in [
            (&mut self.by_rfm_segment, other.by_rfm_segment),
            (&mut self.by_lifecycle_stage, other.by_lifecycle_stage),
        ] {
            for (name, totals) in from {
                into.entry(name).or_default().merge(&totals);
            }
        }
    }
}

/// This process's part of `ask`, over the people `served` names.
pub(crate) fn part(
    state: &QueryState,
    view: &View<'_>,
    ask: &Ask,
    served: &Served,
) -> Result<Part, ApiError> {
    let changes = state.versions.changes_of(&view.version);
    let scores = &state.scores;
    let version = &view.version;
    Ok(match ask {
        Ask::Overview { as_of } => Part::Overview(Box::new(
            scores.overview_part(view, version, changes, *as_of, served)?,
        )),
        Ask::People {
            as_of,
            filter,
            after,
            limit,
        } => {
            let limit = usize::try_from(*limit).unwrap_or(usize::MAX);
            let (ids, more) =
                scores.with_snapshot(view, version, changes, *as_of, |scored, _| {
                    scored.people(filter, after.as_deref(), limit, served)
                })?;
            Part::People { ids, more }
        }
        Ask::Campaigns => {
            Part::Campaigns(
                scores.with_persons(view, version, changes, |persons, config| {
                    campaign_summaries(
                        persons
                            .iter()
                            .filter(|(id, _)| served.holds(id))
                            .map(|(_, facts)| facts),
                        &config.campaigns,
                        &config.reporting_currency,
                    )
                })?,
            )
        }
        Ask::Campaign { campaign_id } => {
            Part::Campaign(Box::new(campaign_part(state, view, campaign_id, served)?))
        }
        Ask::Holdouts {
            calibration_end,
            holdout_end,
        } => Part::Holdouts(scores.holdouts(
            view,
            version,
            changes,
            *calibration_end,
            *holdout_end,
            served,
        )?),
    })
}

/// The part another process asked for in `encoded`, encoded.
pub(crate) fn answer(
    state: &QueryState,
    view: &View<'_>,
    encoded: &[u8],
    served: &Served,
) -> Result<Vec<u8>, ApiError> {
    let ask: Ask = postcard::from_bytes(encoded).map_err(|error| {
        crate::request::invalid_field(
            "figure",
            format!("is no figure this release knows: {error}"),
        )
    })?;
    let part = part(state, view, &ask, served)?;
    postcard::to_allocvec(&part).map_err(|error| ApiError::Internal(error.to_string()))
}

/// Every process's part of `ask`: this one's first, then those of every
/// other process serving partitions.
fn gather(state: &QueryState, view: &View<'_>, ask: &Ask) -> Result<Vec<Part>, ApiError> {
    let mut parts = vec![part(state, view, ask, &view.served_here())?];
    if !view.shared() {
        return Ok(parts);
    }
    let encoded =
        postcard::to_allocvec(ask).map_err(|error| ApiError::Internal(error.to_string()))?;
    for (url, bytes) in view.others_figures(&encoded)? {
        let part = postcard::from_bytes(&bytes).map_err(|error| {
            Error::Unavailable(format!(
                "{url} sent a figure this release does not read ({error}); are all projectors on one release?"
            ))
        })?;
        parts.push(part);
    }
    Ok(parts)
}

fn mismatch() -> ApiError {
    Error::Unavailable("another projector answered a different figure than asked".to_owned()).into()
}

/// The dashboard's figures at `as_of` over everyone: gathered from every
/// process, and kept for [`crate::scores::OVERVIEW_MAX_AGE`] as one
/// process keeps its own (a gathering is a pass over everyone).
pub(crate) fn overview(
    state: &QueryState,
    view: &View<'_>,
    as_of: i64,
) -> Result<Arc<Overview>, ApiError> {
    if let Some(kept) = state.scores.gathered_overview(&view.version, as_of) {
        return Ok(kept);
    }
    let mut whole: Option<OverviewBuilder> = None;
    for part in gather(state, view, &Ask::Overview { as_of })? {
        let Part::Overview(builder) = part else {
            return Err(mismatch());
        };
        match &mut whole {
            Some(whole) => whole.merge(*builder),
            None => whole = Some(*builder),
        }
    }
    let whole = whole.ok_or_else(mismatch)?;
    let changes = state.versions.changes_of(&view.version);
    let bg_nbd = state
        .scores
        .with_snapshot(view, &view.version, changes, as_of, |scored, _| {
            scored.bg_nbd().copied()
        })?;
    let figures = Arc::new(whole.finish(bg_nbd.as_ref()));
    state
        .scores
        .keep_gathered_overview(&view.version, as_of, figures.clone());
    Ok(figures)
}

/// The people of `filter` at `as_of` after `after`, by id, up to `limit`;
/// and whether more follow.
pub(crate) fn people(
    state: &QueryState,
    view: &View<'_>,
    as_of: i64,
    filter: PeopleFilter,
    after: Option<String>,
    limit: usize,
) -> Result<(Vec<String>, bool), ApiError> {
    let ask = Ask::People {
        as_of,
        filter,
        after,
        limit: limit as u64,
    };
    let (mut all, mut more) = (Vec::new(), false);
    for part in gather(state, view, &ask)? {
        let Part::People { ids, more: theirs } = part else {
            return Err(mismatch());
        };
        all.extend(ids);
        more |= theirs;
    }
    all.sort_unstable();
    if all.len() > limit {
        all.truncate(limit);
        more = true;
    }
    Ok((all, more))
}

/// Every campaign's figures over everyone it was sent to.
pub(crate) fn campaigns(
    state: &QueryState,
    view: &View<'_>,
) -> Result<BTreeMap<String, CampaignSummary>, ApiError> {
    let mut whole: BTreeMap<String, CampaignSummary> = BTreeMap::new();
    for part in gather(state, view, &Ask::Campaigns)? {
        let Part::Campaigns(summaries) = part else {
            return Err(mismatch());
        };
        for (campaign, summary) in summaries {
            match whole.get_mut(&campaign) {
                Some(kept) => kept.merge(&summary),
                None => {
                    whole.insert(campaign, summary);
                }
            }
        }
    }
    Ok(whole)
}

/// One campaign's figures over everyone it was sent to.
pub(crate) fn campaign(
    state: &QueryState,
    view: &View<'_>,
    campaign_id: &str,
) -> Result<CampaignPart, ApiError> {
    let ask = Ask::Campaign {
        campaign_id: campaign_id.to_owned(),
    };
    let mut whole = CampaignPart::default();
    for part in gather(state, view, &ask)? {
        let Part::Campaign(part) = part else {
            return Err(mismatch());
        };
        whole.merge(*part);
    }
    Ok(whole)
}

/// Every buyer of a validation's calibration period, in id order.
pub(crate) fn holdouts(
    state: &QueryState,
    view: &View<'_>,
    calibration_end: i64,
    holdout_end: i64,
) -> Result<Vec<Holdout>, ApiError> {
    let ask = Ask::Holdouts {
        calibration_end,
        holdout_end,
    };
    let mut all = Vec::new();
    for part in gather(state, view, &ask)? {
        let Part::Holdouts(buyers) = part else {
            return Err(mismatch());
        };
        all.extend(buyers);
    }
    all.sort_unstable_by(|left, right| left.0.cmp(&right.0));
    Ok(all.into_iter().map(|(_, holdout)| holdout).collect())
}

/// One campaign over its recipients among the people `served` names.
/// Scores everyone at the day before each of its send days the board does
/// not hold yet, on a copy of their facts.
fn campaign_part(
    state: &QueryState,
    view: &View<'_>,
    campaign_id: &str,
    served: &Served,
) -> Result<CampaignPart, ApiError> {
    let changes = state.versions.changes_of(&view.version);
    let sent: Vec<(String, rapport_projections::analytics::campaigns::Recipient)> = state
        .scores
        .with_persons(view, &view.version, changes.clone(), |persons, config| {
            persons
                .iter()
                .filter(|(id, _)| served.holds(id))
                .filter_map(|(id, facts)| {
                    let mut campaigns =
                        recipients(facts, &config.campaigns, &config.reporting_currency);
                    let recipient = campaigns.remove(campaign_id)?;
                    Some((id.to_owned(), recipient))
                })
                .collect()
        })?;
    let mut by_day: BTreeMap<i64, Vec<&(String, _)>> = BTreeMap::new();
    for entry in &sent {
        by_day
            .entry(utc_day(entry.1.sent_at_ms))
            .or_default()
            .push(entry);
    }
    let mut part = CampaignPart {
        first_day: by_day.keys().next().copied(),
        last_day: by_day.keys().next_back().copied(),
        ..CampaignPart::default()
    };
    for (day, entries) in &by_day {
        // Scored on a copy first, so the board is not held meanwhile.
        state
            .scores
            .ensure_snapshot(view, &view.version, changes.clone(), day - 1)?;
        state.scores.with_snapshot(
            view,
            &view.version,
            changes.clone(),
            day - 1,
            |snapshot, config| {
                for (id, recipient) in entries {
                    let labels = snapshot.labels_of(id);
                    let label = |kind: SegmentKind| {
                        labels
                            .and_then(|labels| labels.get(kind, config))
                            .unwrap_or("none")
                            .to_owned()
                    };
                    part.totals.add(recipient);
                    part.by_rfm_segment
                        .entry(label(SegmentKind::Rfm))
                        .or_default()
                        .add(recipient);
                    part.by_lifecycle_stage
                        .entry(label(SegmentKind::Lifecycle))
                        .or_default()
                        .add(recipient);
                }
            },
        )?;
    }
    Ok(part)
}
