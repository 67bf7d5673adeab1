//! The campaign pages: every campaign with its results, and one campaign
//! broken down by the RFM segment and lifecycle stage of its recipients.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use maud::{Markup, html};
use rapport_common::http::{ApiError, PathParams};
use rapport_projections::analytics::campaigns::CampaignTotals;
use serde::Deserialize;

use super::layout::{money, page, percent, sortable, thousands};
use super::pages::{encode, given, parsed};
use super::{PageResult, blocking, frame};
use crate::campaigns_http::{campaign_days, campaign_list, campaign_report};
use crate::query::QueryState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CampaignsParams {
    /// The header's date picker; campaign figures are as they stand now.
    as_of: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

const HEADINGS: [&str; 12] = [
    "Sent",
    "Delivered",
    "Opened",
    "Open rate",
    "Clicked",
    "Click rate",
    "Unsubscribed",
    "Converted",
    "Conversion rate",
    "Orders",
    "Revenue",
    "Per delivered",
];

/// The figures of `totals` as table cells, in the order of [`HEADINGS`].
fn cells(totals: &CampaignTotals, currency: &str) -> Markup {
    let per_delivered =
        (totals.delivered > 0).then(|| totals.revenue_minor / totals.delivered as i64);
    html! {
        td.number data-value=(totals.sent) { (thousands(totals.sent)) }
        td.number data-value=(totals.delivered) { (thousands(totals.delivered)) }
        td.number data-value=(totals.opened) { (thousands(totals.opened)) }
        td.number data-value=(totals.open_rate.unwrap_or(0.0)) { (percent(totals.open_rate)) }
        td.number data-value=(totals.clicked) { (thousands(totals.clicked)) }
        td.number data-value=(totals.click_rate.unwrap_or(0.0)) { (percent(totals.click_rate)) }
        td.number data-value=(totals.unsubscribed) { (thousands(totals.unsubscribed)) }
        td.number data-value=(totals.converted) { (thousands(totals.converted)) }
        td.number data-value=(totals.conversion_rate.unwrap_or(0.0)) { (percent(totals.conversion_rate)) }
        td.number data-value=(totals.orders) { (thousands(totals.orders)) }
        td.number data-value=(totals.revenue_minor) { (money(totals.revenue_minor, currency)) }
        td.number data-value=(per_delivered.unwrap_or(0)) { (per_delivered.map_or_else(|| "–".to_owned(), |minor| money(minor, currency))) }
    }
}

pub(crate) async fn campaigns(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<CampaignsParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use from= and to= (YYYY-MM-DD)")?;
    let frame = frame("Campaigns", "campaigns", params.as_of.as_deref())?;
    let (from, to) = campaign_days(given(&params.from), given(&params.to))?;
    let list = blocking(state, move |state, view| {
        Ok(campaign_list(state, view, from, to)?)
    })
    .await?;
    let currency = list.currency.clone();
    let headings: Vec<&str> = ["Campaign", "First sent", "Last sent"]
        .into_iter()
        .chain(HEADINGS)
        .collect();
    let body = html! {
        p.muted {
            "Results as they stand now, over the people each campaign was sent to. An order counts for the campaign whose email the buyer last opened or clicked within the conversion window before it; revenue is net of refunds, in " (currency) "."
        }
        form.campaign-dates method="get" {
            label { "first sent from " input type="date" name="from" value=[list.from.as_deref()]; }
            label { " to " input type="date" name="to" value=[list.to.as_deref()]; }
            button type="submit" { "Show" }
        }
        @if list.campaigns.is_empty() {
            p { "No campaign email was sent in these dates. Email events count for a campaign when they carry its campaign_id." }
        } @else {
            (sortable("campaigns", &headings, html! {
                @for row in &list.campaigns {
                    tr {
                        td { a href=(frame.link(&format!("campaigns/{}", encode(&row.campaign_id)), "")) { (row.campaign_id) } }
                        td { (row.first_sent) }
                        td { (row.last_sent) }
                        (cells(&row.totals, &currency))
                    }
                }
            }))
        }
    };
    Ok(page(&frame, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CampaignParams {
    as_of: Option<String>,
}

fn breakdown(
    id: &str,
    title: &str,
    rows: &BTreeMap<String, CampaignTotals>,
    currency: &str,
) -> Markup {
    let headings: Vec<&str> = [title].into_iter().chain(HEADINGS).collect();
    html! {
        (sortable(id, &headings, html! {
            @for (name, totals) in rows {
                tr { td { (name) } (cells(totals, currency)) }
            }
        }))
    }
}

pub(crate) async fn campaign(
    State(state): State<Arc<QueryState>>,
    PathParams(campaign_id): PathParams<String>,
    query: Result<Query<CampaignParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use as_of=YYYY-MM-DD")?;
    let frame = frame(
        format!("Campaign {campaign_id}"),
        "campaigns",
        params.as_of.as_deref(),
    )?;
    let report = blocking(state, move |state, view| {
        Ok(campaign_report(state, view, &campaign_id)?
            .ok_or_else(|| ApiError::NotFound(format!("no campaign {campaign_id} was sent")))?)
    })
    .await?;
    let currency = report.currency.clone();
    let row = &report.campaign;
    let body = html! {
        p.muted {
            "Sent from " (row.first_sent) " to " (row.last_sent) ". "
            "Each recipient is counted under the RFM segment and lifecycle stage they had at the end of the day before their send (none: no purchase in the RFM window, or not known yet)."
        }
        (sortable("campaign", &HEADINGS, html! { tr { (cells(&row.totals, &currency)) } }))
        h2 { "By RFM segment" }
        (breakdown("by-rfm", "RFM segment", &report.by_rfm_segment, &currency))
        h2 { "By lifecycle stage" }
        (breakdown("by-lifecycle", "Lifecycle stage", &report.by_lifecycle_stage, &currency))
        p { a href=(frame.link("campaigns", "")) { "All campaigns" } }
    };
    Ok(page(&frame, body))
}
