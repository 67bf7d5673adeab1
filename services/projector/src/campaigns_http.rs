//! `GET /v1/campaigns` and `GET /v1/campaigns/{id}`: campaign results
//! (see `rapport_projections::analytics::campaigns` for the rules), from
//! everyone's facts as they stand, and for one campaign broken down by the
//! RFM segment and lifecycle stage each recipient had when the day of
//! their send began.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use rapport_common::http::{ApiError, PathParams};
use rapport_projections::analytics::campaigns::CampaignTotals;
use rapport_projections::time::{format_day, parse_day, utc_day};
use serde::{Deserialize, Serialize};

use crate::figures;
use crate::query::QueryState;
use crate::query::blocking;
use crate::read::View;
use crate::request::{bad_query, invalid_field};

/// One campaign over everyone it was sent to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct CampaignRow {
    pub campaign_id: String,
    /// Day (UTC) of its first and last send.
    pub first_sent: String,
    pub last_sent: String,
    #[serde(flatten)]
    pub totals: CampaignTotals,
}

/// `GET /v1/campaigns`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct CampaignList {
    pub from: Option<String>,
    pub to: Option<String>,
    /// Reporting currency of `revenue_minor`.
    pub currency: String,
    /// Newest first send first.
    pub campaigns: Vec<CampaignRow>,
}

/// `GET /v1/campaigns/{campaign_id}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct CampaignReport {
    #[serde(flatten)]
    pub campaign: CampaignRow,
    pub currency: String,
    /// The same figures per RFM segment each recipient had at the end of
    /// the day before their send (`none`: no purchase in the RFM window).
    pub by_rfm_segment: BTreeMap<String, CampaignTotals>,
    /// Likewise per lifecycle stage (`none`: not known yet).
    pub by_lifecycle_stage: BTreeMap<String, CampaignTotals>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CampaignListParams {
    /// Only campaigns first sent on or after this day (`YYYY-MM-DD` or RFC
    /// 3339).
    from: Option<String>,
    /// Only campaigns first sent on or before this day.
    to: Option<String>,
    /// A projection version; default the live one.
    version: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CampaignParams {
    /// A projection version; default the live one.
    version: Option<String>,
}

/// The days of `from` and `to`, checked.
pub(crate) fn campaign_days(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let day = |field: &str, text: Option<&str>| {
        text.map(|text| parse_day(text).map_err(|error| invalid_field(field, error.to_string())))
            .transpose()
    };
    let (from, to) = (day("from", from)?, day("to", to)?);
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(invalid_field("to", "must not be before from"));
    }
    Ok((from, to))
}

/// Every campaign first sent between `from` and `to`, newest first.
pub(crate) fn campaign_list(
    state: &QueryState,
    view: &View<'_>,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<CampaignList, ApiError> {
    let summaries = figures::campaigns(state, view)?;
    let mut campaigns: Vec<CampaignRow> = summaries
        .into_iter()
        .filter(|(_, summary)| {
            let day = utc_day(summary.first_sent_ms);
            from.is_none_or(|from| day >= from) && to.is_none_or(|to| day <= to)
        })
        .map(|(campaign_id, summary)| CampaignRow {
            campaign_id,
            first_sent: format_day(utc_day(summary.first_sent_ms)),
            last_sent: format_day(utc_day(summary.last_sent_ms)),
            totals: summary.totals,
        })
        .collect();
    campaigns.sort_by(|left, right| {
        (&right.first_sent, &left.campaign_id).cmp(&(&left.first_sent, &right.campaign_id))
    });
    Ok(CampaignList {
        from: from.map(format_day),
        to: to.map(format_day),
        currency: state.scores.config.reporting_currency.clone(),
        campaigns,
    })
}

/// One campaign with its breakdowns; `None` if it was never sent.
pub(crate) fn campaign_report(
    state: &QueryState,
    view: &View<'_>,
    campaign_id: &str,
) -> Result<Option<CampaignReport>, ApiError> {
    let whole = figures::campaign(state, view, campaign_id)?;
    let (Some(first), Some(last)) = (whole.first_day, whole.last_day) else {
        return Ok(None);
    };
    Ok(Some(CampaignReport {
        campaign: CampaignRow {
            campaign_id: campaign_id.to_owned(),
            first_sent: format_day(first),
            last_sent: format_day(last),
            totals: whole.totals,
        },
        currency: state.scores.config.reporting_currency.clone(),
        by_rfm_segment: whole.by_rfm_segment,
        by_lifecycle_stage: whole.by_lifecycle_stage,
    }))
}

pub(crate) async fn list(
    State(state): State<Arc<QueryState>>,
    params: Result<Query<CampaignListParams>, QueryRejection>,
) -> Result<Json<CampaignList>, ApiError> {
    let Query(params) =
        params.map_err(|rejection| bad_query(rejection, "use from= and to= (dates), version="))?;
    let (from, to) = campaign_days(params.from.as_deref(), params.to.as_deref())?;
    let list = blocking(state, params.version, move |state, view| {
        campaign_list(state, view, from, to)
    })
    .await?;
    Ok(Json(list))
}

pub(crate) async fn one(
    State(state): State<Arc<QueryState>>,
    PathParams(campaign_id): PathParams<String>,
    params: Result<Query<CampaignParams>, QueryRejection>,
) -> Result<Json<CampaignReport>, ApiError> {
    let Query(params) = params.map_err(|rejection| bad_query(rejection, "use version="))?;
    let report = blocking(state, params.version, move |state, view| {
        campaign_report(state, view, &campaign_id)?
            .ok_or_else(|| ApiError::NotFound(format!("no campaign {campaign_id} was sent")))
    })
    .await?;
    Ok(Json(report))
}
