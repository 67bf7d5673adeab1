//! The population pages: overview, churn, segments, models, cohorts, the
//! people behind a number (with its CSV) and ops.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use rapport_common::http::ApiError;
use rapport_projections::analytics::dashboard::{
    CLV_EDGES_MAJOR, Overview, format_month, minor_per_major, month_of,
};
use rapport_projections::analytics::validation::Validation;
use rapport_projections::money::minor_unit_digits;
use rapport_projections::time::{days_from_civil, format_day};
use serde::Deserialize;
use serde_json::{Value, json};

use super::layout::{
    Frame, chart_data, count_link, heat, html_response, money, money_f, page, percent, sortable,
    thousands,
};
use super::{PageResult, UiError, blocking, frame};
use crate::figures;
use crate::query::QueryState;
use crate::read::View;
use crate::request::{bad_query, invalid_field};
use crate::scores::{FitKey, PeopleFilter, SegmentKind};
use crate::scores_http::{
    CONTACT_CSV_HEADER, contact, contact_csv_row, csv_field, validation_days, validation_now,
};
use crate::unseal;

/// People per list page.
const PAGE_SIZE: usize = 50;

pub(crate) fn parsed<T>(
    query: Result<Query<T>, QueryRejection>,
    usage: &str,
) -> Result<T, UiError> {
    query
        .map(|Query(params)| params)
        .map_err(|rejection| UiError::from(bad_query(rejection, usage)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AsOfParams {
    as_of: Option<String>,
}

/// The figures at `as_of`, or [`UiError::Gathering`] while they are
/// gathered in the background.
fn overview_at(state: &QueryState, view: &View<'_>, as_of: i64) -> Result<Arc<Overview>, UiError> {
    overview_if_ready(state, view, as_of)?.ok_or(UiError::Gathering(as_of))
}

/// The figures at `as_of` if they are ready, else `None` while they are
/// gathered in the background. Figures spread over several processes are
/// gathered from them now.
fn overview_if_ready(
    state: &QueryState,
    view: &View<'_>,
    as_of: i64,
) -> Result<Option<Arc<Overview>>, ApiError> {
    if view.shared() {
        return Ok(Some(figures::overview(state, view, as_of)?));
    }
    let changes = state.versions.changes_of(&view.version);
    Ok(state
        .scores
        .overview_ready(view, &view.version, changes, as_of)?)
}

fn card(label: &str, value: Markup) -> Markup {
    html! { div.card { div.label { (label) } div.value { (value) } } }
}

fn segment_table(frame: &Frame, id: &str, kind: SegmentKind, counts: &[(String, u64)]) -> Markup {
    sortable(
        id,
        &["Name", "People"],
        html! {
            @for (name, count) in counts {
                tr {
                    td { (name) }
                    td.number { (count_link(*count, &frame.people(&format!("segment={}:{}", kind.as_str(), encode(name))))) }
                }
            }
        },
    )
}

pub(crate) async fn overview(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<AsOfParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use as_of=YYYY-MM-DD")?;
    let frame = frame("Overview", "", params.as_of.as_deref())?;
    let as_of = frame.as_of;
    let currency = state.scores.config.reporting_currency.clone();
    let currency = currency.as_str();
    let (figures, names) = blocking(state, move |state, view| {
        let config = &state.scores.config;
        let names: Vec<Vec<String>> = [
            SegmentKind::Lifecycle,
            SegmentKind::ValueTier,
            SegmentKind::Loyalty,
        ]
        .iter()
        .map(|kind| kind.names(config))
        .collect();
        Ok((overview_at(state, view, as_of)?, names))
    })
    .await?;
    let with_names = |counts: &std::collections::BTreeMap<String, u64>, names: &[String]| {
        names
            .iter()
            .map(|name| (name.clone(), counts.get(name).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
    };
    let max_cell = figures
        .rfm_grid
        .iter()
        .flatten()
        .map(|cell| cell.people)
        .max()
        .unwrap_or(0) as f64;
    let active = figures.buyers - figures.at_risk;
    let body = html! {
        section.cards {
            (card("Customers", count_link(figures.customers, &frame.people("filter=everyone"))))
            (card("Buyers", count_link(figures.buyers, &frame.people("filter=buyers"))))
            @for window in &figures.revenue {
                (card(&format!("Revenue, last {} days", window.days), html! {
                    a.count href=(frame.people(&format!("bought_within={}", window.days))) data-value=(window.net_minor) { (money(window.net_minor, currency)) }
                    div.label { (thousands(window.buyers)) " buyers" }
                }))
            }
            (card("Repurchase rate", html! {
                a.count href=(frame.people("filter=repeat_buyers")) data-value=(figures.repeat_buyers) { (percent(figures.repurchase_rate())) }
                div.label { (thousands(figures.repeat_buyers)) " of " (thousands(figures.buyers)) " buyers" }
            }))
            (card("Active buyers", count_link(active, &frame.people("filter=active_buyers"))))
            (card("At risk of churning", count_link(figures.at_risk, &frame.link("churn", ""))))
        }
        h2 { "RFM grid: recency × frequency-and-monetary" }
        p.muted { "Each cell: people with that recency score (rows) and combined frequency-monetary score (columns), and their average spend in the RFM window. "
            (thousands(figures.rfm_scored())) " people have an RFM score." }
        div.table-wrap {
            table.rfm-grid #rfm-grid {
                thead { tr { th { "R \\ FM" } @for fm in 1..=5u8 { th { (fm) } } } }
                tbody {
                    @for r in (1..=5u8).rev() {
                        tr {
                            th scope="row" { (r) }
                            @for fm in 1..=5u8 {
                                @let cell = figures.rfm_grid[usize::from(r - 1)][usize::from(fm - 1)];
                                td class=(heat(cell.people as f64, max_cell)) data-r=(r) data-fm=(fm) {
                                    a.count href=(frame.people(&format!("rfm={r}-{fm}"))) data-value=(cell.people) {
                                        (thousands(cell.people))
                                        div.spend { @if let Some(average) = cell.average_spend_minor() { "avg " (money(average, currency)) } @else { "–" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        div.columns {
            div { h2 { "Lifecycle stages" } (segment_table(&frame, "lifecycle", SegmentKind::Lifecycle, &with_names(&figures.lifecycle, &names[0]))) }
            div { h2 { "Value tiers" } (segment_table(&frame, "value-tiers", SegmentKind::ValueTier, &with_names(&figures.value_tier, &names[1]))) }
            div { h2 { "Loyalty tiers" } (segment_table(&frame, "loyalty", SegmentKind::Loyalty, &with_names(&figures.loyalty, &names[2]))) }
        }
    };
    Ok(page(&frame, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    as_of: Option<String>,
    /// 1-based.
    page: Option<usize>,
}

/// Opened contact details of `ids`, in order.
fn contacts(state: &QueryState, view: &View<'_>, ids: &[String]) -> Result<Vec<Value>, ApiError> {
    let listed = ids
        .iter()
        .map(|id| contact(view, id))
        .collect::<Result<Value, _>>()?;
    Ok(unseal::open_value(state.vault(), listed)?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn person_link(id: &str, shown: &Value) -> Markup {
    let label = shown.as_str().unwrap_or(id);
    html! { a href=(format!("/ui/customers/{}", encode(id))) { (label) } }
}

/// A path segment or query value, percent-encoded.
pub(crate) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, UNRESERVED_KEPT).to_string()
}

/// Everything but RFC 3986's unreserved characters is escaped.
const UNRESERVED_KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) async fn churn(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use as_of=YYYY-MM-DD and page=")?;
    let frame = frame("Churn: customers at risk", "churn", params.as_of.as_deref())?;
    let as_of = frame.as_of;
    let page_number = params.page.unwrap_or(1).max(1);
    let currency = state.scores.config.reporting_currency.clone();
    let currency = currency.as_str();
    let (figures, rows) = blocking(state, move |state, view| {
        let figures = overview_at(state, view, as_of)?;
        let start = (page_number - 1).saturating_mul(PAGE_SIZE);
        let slice: Vec<_> = figures
            .at_risk_ranked
            .iter()
            .skip(start)
            .take(PAGE_SIZE)
            .cloned()
            .collect();
        let ids: Vec<String> = slice.iter().map(|row| row.customer_id.clone()).collect();
        let shown = contacts(state, view, &ids)?;
        Ok((figures, slice.into_iter().zip(shown).collect::<Vec<_>>()))
    })
    .await?;
    let pages = figures.at_risk_ranked.len().div_ceil(PAGE_SIZE).max(1);
    let body = html! {
        p { (thousands(figures.at_risk)) " of " (thousands(figures.buyers)) " buyers are at risk. They are ranked by what their loss would cost: expected lifetime value × (1 − P(alive))." }
        p { a href=(frame.link("churn.csv", "")) download { "Download all as CSV" } }
        (sortable("churn", &["Customer", "Email", "At stake", "CLV", "P(alive)", "Why"], html! {
            @for (row, contact) in &rows {
                tr {
                    td { (person_link(&row.customer_id, &contact["customer_id"])) }
                    td { (contact["email"].as_str().unwrap_or("")) }
                    td.number data-value=(row.priority_minor) { (money_f(row.priority_minor, currency)) }
                    td.number data-value=(row.clv_minor) { (money_f(row.clv_minor, currency)) }
                    td.number data-value=(row.p_alive) { (format!("{:.2}", row.p_alive)) }
                    td { (row.reason) }
                }
            }
        }))
        (pager(&frame, "churn", page_number, pages, ""))
    };
    Ok(page(&frame, body))
}

fn pager(frame: &Frame, path: &str, current: usize, pages: usize, query: &str) -> Markup {
    let at = |number: usize| {
        let joined = if query.is_empty() {
            format!("page={number}")
        } else {
            format!("{query}&page={number}")
        };
        frame.link(path, &joined)
    };
    html! {
        nav.pager {
            @if current > 1 { a rel="prev" href=(at(current - 1)) { "← Previous" } }
            span.muted { "Page " (current) " of " (pages) }
            @if current < pages { a rel="next" href=(at(current + 1)) { "Next →" } }
        }
    }
}

fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn churn_csv(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<AsOfParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use as_of=YYYY-MM-DD")?;
    let as_of = frame("", "churn", params.as_of.as_deref())?.as_of;
    let body = blocking(state, move |state, view| {
        let figures = crate::scores_http::overview_now(state, view, as_of)?;
        let ids: Vec<String> = figures
            .at_risk_ranked
            .iter()
            .map(|row| row.customer_id.clone())
            .collect();
        let shown = contacts(state, view, &ids)?;
        let mut body = format!("{CONTACT_CSV_HEADER},at_stake_minor,clv_minor,p_alive,reason\n");
        for (row, contact) in figures.at_risk_ranked.iter().zip(&shown) {
            body.push_str(&format!(
                "{},{:.0},{:.0},{:.4},{}\n",
                contact_csv_row(contact),
                row.priority_minor,
                row.clv_minor,
                row.p_alive,
                csv_field(&row.reason)
            ));
        }
        Ok(body)
    })
    .await?;
    Ok(csv_response(
        &format!("at-risk-{}.csv", format_day(as_of)),
        body,
    ))
}

/// How many days back the segments page compares sizes with.
const TREND_DAYS: i64 = 30;

pub(crate) async fn segments(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<AsOfParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use as_of=YYYY-MM-DD")?;
    let mut frame = frame("Segments", "segments", params.as_of.as_deref())?;
    let as_of = frame.as_of;
    let tables = blocking(state, move |state, view| {
        let now = overview_at(state, view, as_of)?;
        // The trend waits for nobody: it shows once the earlier figures
        // are gathered.
        let before = overview_if_ready(state, view, as_of - TREND_DAYS)?;
        let config = &state.scores.config;
        Ok(SegmentKind::ALL
            .into_iter()
            .map(|kind| {
                let rows: Vec<(String, u64, Option<u64>)> = kind
                    .names(config)
                    .into_iter()
                    .map(|name| {
                        let count = |figures: &Overview| {
                            segment_counts(figures, kind)
                                .get(&name)
                                .copied()
                                .unwrap_or(0)
                        };
                        let (now, before) = (count(&now), before.as_deref().map(count));
                        (name, now, before)
                    })
                    .collect();
                (kind, rows)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let trend_pending = tables
        .iter()
        .any(|(_, rows)| rows.iter().any(|(_, _, earlier)| earlier.is_none()));
    if trend_pending {
        frame.reload_after_s = Some(super::GATHERING_RELOAD_S);
    }
    let body = html! {
        p.muted { "Sizes at " (format_day(as_of)) ", beside " (TREND_DAYS) " days earlier. A CSV holds each member's contact details and email consent." }
        @if trend_pending {
            p.gathering-trend { "The sizes of " (format_day(as_of - TREND_DAYS)) " are being gathered; this page reloads itself in " (super::GATHERING_RELOAD_S) " seconds." }
        }
        @for (kind, rows) in &tables {
            h2 { (kind_title(*kind)) }
            (sortable(&format!("segments-{}", kind.as_str()), &["Segment", "People", "Trend", "Members"], html! {
                @for (name, count, earlier) in rows {
                    @let filter = format!("segment={}:{}", kind.as_str(), encode(name));
                    tr {
                        td { (name) }
                        td.number { (count_link(*count, &frame.people(&filter))) }
                        @match earlier {
                            Some(earlier) => {
                                @let change = *count as i64 - *earlier as i64;
                                td.number data-value=(change) { (if change > 0 { format!("+{change}") } else { change.to_string() }) " since " (format_day(as_of - TREND_DAYS)) }
                            }
                            None => td.muted data-value="0" title="being gathered" { "…" },
                        }
                        td { a href=(frame.link("people.csv", &filter)) download { "CSV" } }
                    }
                }
            }))
        }
    };
    Ok(page(&frame, body))
}

/// The overview's people per name of `kind`.
fn segment_counts(
    figures: &Overview,
    kind: SegmentKind,
) -> &std::collections::BTreeMap<String, u64> {
    match kind {
        SegmentKind::Rfm => &figures.rfm_segment,
        SegmentKind::Lifecycle => &figures.lifecycle,
        SegmentKind::ValueTier => &figures.value_tier,
        SegmentKind::Loyalty => &figures.loyalty,
    }
}

fn kind_title(kind: SegmentKind) -> &'static str {
    match kind {
        SegmentKind::Rfm => "RFM segments",
        SegmentKind::Lifecycle => "Lifecycle stages",
        SegmentKind::ValueTier => "Value tiers",
        SegmentKind::Loyalty => "Loyalty tiers",
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelsParams {
    as_of: Option<String>,
    calibration_end: Option<String>,
    holdout_end: Option<String>,
}

/// Empty form fields count as not given.
pub(crate) fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|text| !text.is_empty())
}

pub(crate) async fn models(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<ModelsParams>, QueryRejection>,
) -> PageResult {
    let usage = "use as_of=, calibration_end= and holdout_end= (YYYY-MM-DD)";
    let params = parsed(query, usage)?;
    let frame = frame("Models", "models", params.as_of.as_deref())?;
    let as_of = frame.as_of;
    // Checked here, so a bad date is refused with the page, not later in
    // its fragment.
    let (calibration_end, holdout_end) = validation_days(
        given(&params.calibration_end),
        given(&params.holdout_end),
        as_of,
    )?;
    let currency = state.scores.config.reporting_currency.clone();
    let (figures, fits) = blocking(state, move |state, view| {
        let figures = overview_at(state, view, as_of)?;
        let changes = state.versions.changes_of(&view.version);
        let fits = state.scores.fits(
            view,
            &view.version,
            changes,
            FitKey {
                as_of,
                cohort: None,
            },
        )?;
        Ok((figures, fits))
    })
    .await?;
    let calibration = json!({
        "x": "repeat purchases",
        "y": "people",
        "labels": figures.calibration.iter().map(|row| if row.repeats == rapport_projections::analytics::dashboard::CALIBRATION_TOP { format!("{}+", row.repeats) } else { row.repeats.to_string() }).collect::<Vec<_>>(),
        "series": [
            {"label": "actual", "values": figures.calibration.iter().map(|row| row.actual).collect::<Vec<_>>()},
            {"label": "BG/NBD", "values": figures.calibration.iter().map(|row| (row.expected * 10.0).round() / 10.0).collect::<Vec<_>>(), "kind": "line"},
        ],
    });
    let clv_label = |from: i64, to: Option<i64>| match to {
        Some(to) => format!("{from}–{to}"),
        None => format!("{from}+"),
    };
    let clv = json!({
        "x": format!("expected lifetime value ({currency})"),
        "y": "people",
        "labels": figures.clv.iter().map(|bin| clv_label(bin.from_major, bin.to_major)).collect::<Vec<_>>(),
        "series": [{"label": "buyers", "values": figures.clv.iter().map(|bin| bin.people).collect::<Vec<_>>()}],
    });
    let body = html! {
        p.muted { "Fitted at " (format_day(as_of)) " on " (thousands(fits.buyers as u64)) " buyers, every one of them in both fits." }
        div.columns {
            div {
                h2 { "BG/NBD: purchases and drop-out" }
                @match &fits.bg_nbd {
                    Ok(fit) => (sortable("bgnbd", &["Parameter", "Value"], html! {
                        tr { td { "r" } td.number { (format!("{:.4}", fit.parameters.r)) } }
                        tr { td { "α (weeks)" } td.number { (format!("{:.4}", fit.parameters.alpha)) } }
                        tr { td { "a" } td.number { (format!("{:.4}", fit.parameters.a)) } }
                        tr { td { "b" } td.number { (format!("{:.4}", fit.parameters.b)) } }
                        tr { td { "log-likelihood" } td.number { (format!("{:.1}", fit.log_likelihood)) } }
                        tr { td { "customers fitted" } td.number { (fit.customers) } }
                    })),
                    Err(reason) => p.error { "Not fitted: " (reason) },
                }
            }
            div {
                h2 { "Gamma-Gamma: spend per purchase" }
                @match &fits.gamma_gamma {
                    Ok(fit) => (sortable("gammagamma", &["Parameter", "Value"], html! {
                        tr { td { "p" } td.number { (format!("{:.4}", fit.parameters.p)) } }
                        tr { td { "q" } td.number { (format!("{:.4}", fit.parameters.q)) } }
                        tr { td { "γ" } td.number { (format!("{:.4}", fit.parameters.gamma)) } }
                        tr { td { "log-likelihood" } td.number { (format!("{:.1}", fit.log_likelihood)) } }
                        tr { td { "customers fitted" } td.number { (fit.customers) } }
                    })),
                    Err(reason) => p.error { "Not fitted: " (reason) },
                }
            }
        }
        h2 { "Calibration: buyers by repeat purchases, actual and as the model expects" }
        @if figures.calibration.is_empty() {
            p.muted { "No BG/NBD fit at this date." }
        } @else {
            (chart_data("calibration-data", "bars", &calibration))
            (sortable("calibration", &["Repeat purchases", "Actual", "BG/NBD"], html! {
                @for row in &figures.calibration {
                    tr {
                        td data-value=(row.repeats) { (row.repeats) @if row.repeats == rapport_projections::analytics::dashboard::CALIBRATION_TOP { "+" } }
                        td.number { (count_link(row.actual, &frame.people(&format!("repeats={}{}", row.repeats, if row.repeats == rapport_projections::analytics::dashboard::CALIBRATION_TOP { "%2B" } else { "" })))) }
                        td.number data-value=(row.expected) { (format!("{:.1}", row.expected)) }
                    }
                }
            }))
        }
        h2 { "Distribution of expected lifetime value" }
        (chart_data("clv-data", "bars", &clv))
        (sortable("clv", &[&format!("CLV ({currency})"), "Buyers"], html! {
            @for bin in &figures.clv {
                tr { td data-value=(bin.from_major) { (clv_label(bin.from_major, bin.to_major)) } td.number { (count_link(bin.people, &frame.people(&format!("clv={}", bin.from_major)))) } }
            }
        }))
        h2 id="validation" { "Validation: fitted on a calibration period, checked on the holdout after it" }
        form.validation method="get" action="/ui/models#validation" {
            input type="hidden" name="as_of" value=(format_day(as_of));
            label { "calibration to " input type="date" name="calibration_end" value=(format_day(calibration_end)); }
            label { " holdout to " input type="date" name="holdout_end" value=(format_day(holdout_end)); }
            button type="submit" { "Validate" }
        }
        div #validation-results
            hx-get=(format!("/ui/models/validation?calibration_end={}&holdout_end={}", format_day(calibration_end), format_day(holdout_end)))
            hx-trigger="load" hx-swap="innerHTML" {
            p.muted { "Fitting both models on what was known at " (format_day(calibration_end)) "…" }
        }
    };
    Ok(page(&frame, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidationFragmentParams {
    calibration_end: Option<String>,
    holdout_end: Option<String>,
}

/// `/ui/models/validation`: the validation's tables and charts, an HTML
/// fragment the models page loads once it is shown (the fits take seconds
/// at a million customers).
pub(crate) async fn models_validation(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<ValidationFragmentParams>, QueryRejection>,
) -> Result<Response, UiError> {
    let params = parsed(query, "use calibration_end= and holdout_end= (YYYY-MM-DD)")?;
    let today = frame("", "models", None)?.as_of;
    let (calibration_end, holdout_end) = validation_days(
        given(&params.calibration_end),
        given(&params.holdout_end),
        today,
    )?;
    let currency = state.scores.config.reporting_currency.clone();
    let validation = blocking(state, move |state, view| {
        Ok(validation_now(state, view, calibration_end, holdout_end)?)
    })
    .await?;
    Ok(html_response(
        StatusCode::OK,
        validation_fragment(&validation, &currency),
    ))
}

fn validation_fragment(validation: &Validation, currency: &str) -> Markup {
    let purchases = match &validation.purchases {
        Ok(purchases) => purchases,
        Err(reason) => return html! { p.error { "Not validated: " (reason) } },
    };
    let by_repeats = json!({
        "x": "repeat purchases in the calibration period",
        "y": "mean holdout purchases",
        "labels": purchases.by_repeats.iter().map(|group| group.repeats.clone()).collect::<Vec<_>>(),
        "series": [
            {"label": "actual", "values": purchases.by_repeats.iter().map(|group| group.actual_mean).collect::<Vec<_>>()},
            {"label": "BG/NBD", "values": purchases.by_repeats.iter().map(|group| group.predicted_mean).collect::<Vec<_>>(), "kind": "line"},
        ],
    });
    let weekly = json!({
        "x": "holdout week",
        "y": "repeat purchases so far",
        "labels": purchases.weekly.iter().map(|week| week.week.to_string()).collect::<Vec<_>>(),
        "series": [
            {"label": "actual", "values": purchases.weekly.iter().map(|week| week.actual_cumulative).collect::<Vec<_>>(), "kind": "line"},
            {"label": "BG/NBD", "values": purchases.weekly.iter().map(|week| week.predicted_cumulative).collect::<Vec<_>>(), "kind": "line"},
        ],
    });
    html! {
        p {
            (thousands(purchases.customers)) " buyers by " (format_day(validation.calibration_end))
            " made " (thousands(purchases.actual_total)) " repeat purchases in the "
            (validation.holdout_end - validation.calibration_end) " days after; BG/NBD, fitted on what was known then, expected "
            (format!("{:.0}", purchases.predicted_total)) ". Mean absolute error per buyer: "
            (format!("{:.3}", purchases.mean_absolute_error)) " purchases."
        }
        h3 { "Holdout purchases by calibration repeat purchases" }
        (chart_data("validation-repeats-data", "bars", &by_repeats))
        (sortable("validation-repeats", &["Calibration repeats", "Buyers", "Actual mean", "BG/NBD mean"], html! {
            @for (index, group) in purchases.by_repeats.iter().enumerate() {
                tr {
                    td data-value=(index) { (group.repeats) }
                    td.number data-value=(group.customers) { (thousands(group.customers)) }
                    td.number data-value=(group.actual_mean) { (format!("{:.3}", group.actual_mean)) }
                    td.number data-value=(group.predicted_mean) { (format!("{:.3}", group.predicted_mean)) }
                }
            }
        }))
        h3 { "Repeat purchases week by week, cumulative" }
        (chart_data("validation-weekly-data", "lines", &weekly))
        h3 { "Gamma-Gamma: value of a holdout purchase" }
        @match &validation.spend {
            Ok(spend) => {
                p {
                    "Over the " (thousands(spend.customers)) " buyers who bought in the holdout: expected "
                    (money_f(spend.predicted_mean_minor, currency)) " a purchase, actual "
                    (money_f(spend.actual_mean_minor, currency)) "; mean absolute error "
                    (money_f(spend.mean_absolute_error_minor, currency)) "."
                }
                (sortable("validation-spend", &["Calibration repeats", "Buyers", "Actual mean", "Expected mean"], html! {
                    @for (index, group) in spend.by_repeats.iter().enumerate() {
                        tr {
                            td data-value=(index) { (group.repeats) }
                            td.number data-value=(group.customers) { (thousands(group.customers)) }
                            td.number data-value=(group.actual_mean) { (money_f(group.actual_mean, currency)) }
                            td.number data-value=(group.predicted_mean) { (money_f(group.predicted_mean, currency)) }
                        }
                    }
                }))
            },
            Err(reason) => p.error { "Not validated: " (reason) },
        }
    }
}

pub(crate) async fn cohorts(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<AsOfParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use as_of=YYYY-MM-DD")?;
    let frame = frame(
        "Cohorts: retention by month of first purchase",
        "cohorts",
        params.as_of.as_deref(),
    )?;
    let as_of = frame.as_of;
    let figures = blocking(state, move |state, view| overview_at(state, view, as_of)).await?;
    let longest = figures
        .cohorts
        .iter()
        .map(|row| row.active.len())
        .max()
        .unwrap_or(0);
    let second = &figures.second_purchase;
    let body = html! {
        section #second-purchase {
            h2 { "Time to a second purchase" }
            p {
                "Of " (figures.buyers) " buyers, "
                a.count href=(frame.people("filter=repeat_buyers")) data-value=(second.buyers) { (second.buyers) }
                " (" (percent(figures.repurchase_rate())) ") bought again on a later day"
                @if let (Some(median), Some(p25), Some(p75), Some(mean)) = (second.median_days, second.p25_days, second.p75_days, second.mean_days) {
                    ": the second purchase came a median " (median) " days after the first (a quarter within " (p25) ", three quarters within " (p75) "; mean " (format!("{mean:.0}")) ")."
                } @else {
                    "."
                }
            }
        }
        h2 { "Retention" }
        p.muted { "Each row: the buyers whose first purchase fell in that month, and the share of them who bought in each month after it (month 0 is the first purchase)." }
        div.table-wrap {
            table.sortable #cohorts {
                thead { tr {
                    th scope="col" { button type="button" { "First purchase" } }
                    th scope="col" { button type="button" { "Buyers" } }
                    @for offset in 1..longest { th scope="col" { button type="button" { "+" (offset) } } }
                } }
                tbody {
                    @for row in &figures.cohorts {
                        tr {
                            td data-value=(row.month) { (format_month(row.month)) }
                            td.number { (count_link(row.size, &frame.people(&format!("cohort={}", format_month(row.month))))) }
                            @for offset in 1..longest {
                                @match row.active.get(offset) {
                                    Some(active) => {
                                        @let share = *active as f64 / row.size.max(1) as f64;
                                        td class=(format!("number {}", heat(share, 1.0))) data-value=(share) title=(format!("{active} of {}", row.size)) {
                                            a.count href=(frame.people(&format!("cohort={}&after={offset}", format_month(row.month)))) data-value=(active) { (percent(Some(share))) }
                                        }
                                    }
                                    None => td {},
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&frame, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeopleParams {
    as_of: Option<String>,
    /// `kind:name`.
    segment: Option<String>,
    /// `R-FM`.
    rfm: Option<String>,
    bought_within: Option<i64>,
    /// `YYYY-MM`.
    cohort: Option<String>,
    /// With `cohort`: only those who bought this many months after it.
    after: Option<u32>,
    /// `everyone`, `buyers`, `active_buyers` or `repeat_buyers`.
    filter: Option<String>,
    /// Repeat purchases: `N`, or `N+` for N or more.
    repeats: Option<String>,
    /// The lower edge of a bin of the CLV distribution, in major units.
    clv: Option<i64>,
    cursor: Option<String>,
}

/// The list a people page shows, and how to say it.
fn people_filter(
    params: &PeopleParams,
    state: &QueryState,
) -> Result<(PeopleFilter, String, String), UiError> {
    let given = [
        params.segment.is_some(),
        params.rfm.is_some(),
        params.bought_within.is_some(),
        params.cohort.is_some(),
        params.filter.is_some(),
        params.repeats.is_some(),
        params.clv.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    if given > 1 {
        return Err(invalid_field(
            "filter",
            "give one of segment=, rfm=, bought_within=, cohort=, repeats=, clv=, filter=",
        )
        .into());
    }
    if params.after.is_some() && params.cohort.is_none() {
        return Err(invalid_field("after", "goes with cohort=YYYY-MM").into());
    }
    if let Some(segment) = &params.segment {
        let (kind, name) = segment.split_once(':').unwrap_or((segment, ""));
        let kind = SegmentKind::parse(kind).ok_or_else(|| {
            invalid_field(
                "segment",
                "must be rfm:, lifecycle:, value_tier: or loyalty: and a name",
            )
        })?;
        if !kind
            .names(&state.scores.config)
            .iter()
            .any(|known| known == name)
        {
            return Err(
                invalid_field("segment", format!("no {} segment {name:?}", kind.as_str())).into(),
            );
        }
        return Ok((
            PeopleFilter::Segment(kind, name.to_owned()),
            format!("segment={}", encode(segment)),
            format!("{}: {name}", kind_title(kind)),
        ));
    }
    if let Some(cell) = &params.rfm {
        let parsed = cell
            .split_once('-')
            .and_then(|(r, fm)| Some((r.parse::<u8>().ok()?, fm.parse::<u8>().ok()?)))
            .filter(|(r, fm)| (1..=5).contains(r) && (1..=5).contains(fm))
            .ok_or_else(|| invalid_field("rfm", "must be R-FM, each 1 to 5, such as 5-4"))?;
        return Ok((
            PeopleFilter::RfmCell(parsed.0, parsed.1),
            format!("rfm={}-{}", parsed.0, parsed.1),
            format!("RFM cell R {} × FM {}", parsed.0, parsed.1),
        ));
    }
    if let Some(days) = params.bought_within {
        if !(1..=36_500).contains(&days) {
            return Err(invalid_field("bought_within", "must be 1 to 36500 days").into());
        }
        return Ok((
            PeopleFilter::BoughtWithin(days),
            format!("bought_within={days}"),
            format!("Bought in the last {days} days"),
        ));
    }
    if let Some(cohort) = &params.cohort {
        let month = cohort
            .split_once('-')
            .and_then(|(year, month)| Some((year.parse::<i64>().ok()?, month.parse::<u32>().ok()?)))
            .filter(|(year, month)| (1970..=9999).contains(year) && (1..=12).contains(month))
            .map(|(year, month)| month_of(days_from_civil(year, month, 1)))
            .ok_or_else(|| invalid_field("cohort", "must be YYYY-MM"))?;
        if let Some(after) = params.after {
            if after as usize >= rapport_projections::analytics::dashboard::COHORT_MONTHS {
                return Err(invalid_field("after", "must be 0 to 23 months").into());
            }
            return Ok((
                PeopleFilter::CohortActive { month, after },
                format!("cohort={}&after={after}", format_month(month)),
                format!(
                    "First purchase in {}, and a purchase {after} months later",
                    format_month(month)
                ),
            ));
        }
        return Ok((
            PeopleFilter::Cohort(month),
            format!("cohort={}", format_month(month)),
            format!("First purchase in {}", format_month(month)),
        ));
    }
    if let Some(repeats) = &params.repeats {
        let (number, or_more) = match repeats.strip_suffix('+') {
            Some(number) => (number, true),
            None => (repeats.as_str(), false),
        };
        let repeats = number.parse::<u32>().map_err(|_| {
            invalid_field(
                "repeats",
                "must be a number of repeat purchases, or N+ for N or more",
            )
        })?;
        return Ok((
            PeopleFilter::Repeats { repeats, or_more },
            format!("repeats={repeats}{}", if or_more { "%2B" } else { "" }),
            format!(
                "Buyers with {repeats}{} repeat purchases",
                if or_more { " or more" } else { "" }
            ),
        ));
    }
    if let Some(from) = params.clv {
        let bin = CLV_EDGES_MAJOR
            .iter()
            .position(|edge| *edge == from)
            .ok_or_else(|| {
                invalid_field(
                    "clv",
                    format!("must be the lower edge of a bin: one of {CLV_EDGES_MAJOR:?}"),
                )
            })?;
        let digits = minor_unit_digits(&state.scores.config.reporting_currency);
        let label = match CLV_EDGES_MAJOR.get(bin + 1) {
            Some(to) => format!("{from} to {to}"),
            None => format!("{from} or more"),
        };
        return Ok((
            PeopleFilter::ClvBin {
                bin,
                minor_per_major: minor_per_major(digits),
            },
            format!("clv={from}"),
            format!(
                "Buyers with an expected lifetime value of {label} {}",
                state.scores.config.reporting_currency
            ),
        ));
    }
    match params.filter.as_deref() {
        None | Some("everyone") => Ok((
            PeopleFilter::Everyone,
            "filter=everyone".into(),
            "Everyone".into(),
        )),
        Some("buyers") => Ok((
            PeopleFilter::Buyers,
            "filter=buyers".into(),
            "Buyers".into(),
        )),
        Some("active_buyers") => Ok((
            PeopleFilter::ActiveBuyers,
            "filter=active_buyers".into(),
            "Buyers not at risk".into(),
        )),
        Some("repeat_buyers") => Ok((
            PeopleFilter::RepeatBuyers,
            "filter=repeat_buyers".into(),
            "Repeat buyers".into(),
        )),
        Some(other) => Err(invalid_field(
            "filter",
            format!("{other:?} is not everyone, buyers, active_buyers or repeat_buyers"),
        )
        .into()),
    }
}

pub(crate) async fn people(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<PeopleParams>, QueryRejection>,
) -> PageResult {
    let usage = "use one of segment=, rfm=, bought_within=, cohort=, filter=; as_of= and cursor=";
    let params = parsed(query, usage)?;
    let (filter, filter_query, title) = people_filter(&params, &state)?;
    let frame = frame(title, "people", params.as_of.as_deref())?;
    let as_of = frame.as_of;
    let cursor = params.cursor.clone();
    let (rows, next) = blocking(state, move |state, view| {
        let (ids, more) = figures::people(state, view, as_of, filter, cursor, PAGE_SIZE)?;
        let shown = contacts(state, view, &ids)?;
        let next = more.then(|| ids.last().cloned()).flatten();
        Ok((ids.into_iter().zip(shown).collect::<Vec<_>>(), next))
    })
    .await?;
    let body = html! {
        p { a href=(frame.link("people.csv", &filter_query)) download { "Download the whole list as CSV" } " (with email consent)" }
        (sortable("people", &["Customer", "Name", "Email", "Phone", "Email consent"], html! {
            @for (id, contact) in &rows {
                tr {
                    td { (person_link(id, &contact["customer_id"])) }
                    td { (contact["name"].as_str().unwrap_or("")) }
                    td { (contact["email"].as_str().unwrap_or("")) }
                    td { (contact["phone"].as_str().unwrap_or("")) }
                    td { (match contact["email_consent"].as_bool() { Some(true) => "yes", Some(false) => "no", None => "–" }) }
                }
            }
        }))
        nav.pager {
            @if params.cursor.is_some() { a href=(frame.link("people", &filter_query)) { "← First page" } }
            span.muted { (rows.len()) " on this page" }
            @if let Some(next) = next { a rel="next" href=(frame.link("people", &format!("{filter_query}&cursor={}", encode(&next)))) { "Next →" } }
        }
    };
    Ok(page(&frame, body))
}

pub(crate) async fn people_csv(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<PeopleParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(
        query,
        "use one of segment=, rfm=, bought_within=, cohort=, filter=; and as_of=",
    )?;
    let (filter, filter_query, _) = people_filter(&params, &state)?;
    let as_of = frame("", "people", params.as_of.as_deref())?.as_of;
    let body = blocking(state, move |state, view| {
        let (ids, _) = figures::people(state, view, as_of, filter, None, usize::MAX)?;
        let mut body = format!("{CONTACT_CSV_HEADER}\n");
        for chunk in ids.chunks(1000) {
            for contact in contacts(state, view, chunk)? {
                body.push_str(&contact_csv_row(&contact));
                body.push('\n');
            }
        }
        Ok(body)
    })
    .await?;
    let name: String = filter_query
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    Ok(csv_response(
        &format!("{name}-{}.csv", format_day(as_of)),
        body,
    ))
}

pub(crate) async fn ops(State(state): State<Arc<QueryState>>) -> PageResult {
    let frame = frame("Ops", "ops", None)?;
    let live = state.versions.live();
    let reports = state.versions.reports();
    let dead_letters: Vec<u64> = reports
        .iter()
        .map(|report| {
            state
                .versions
                .family_for(Some(&report.version))
                .map_or(0, |family| {
                    crate::apply::dead_letters(&state.registry, &family)
                })
        })
        .collect();
    let body = html! {
        h2 { "Versions of the customer view" }
        (sortable("versions", &["Version", "Live", "From", "Until", "State", "Lag", "Events/s", "Dead letters", "Stored"], html! {
            @for (report, dead) in reports.iter().zip(&dead_letters) {
                tr {
                    td { (report.version) }
                    td { (if report.version == live { "live" } else { "" }) }
                    td { (format!("{:?}", report.from)) }
                    td { (report.until.as_deref().unwrap_or("follows the head")) }
                    td { (if report.failed { "failed" } else if report.finished { "finished" } else { "running" }) }
                    td.number data-value=(report.consumer.total_lag) { (thousands(report.consumer.total_lag.max(0) as u64)) }
                    td.number data-value=(report.consumer.events_per_second) { (format!("{:.0}", report.consumer.events_per_second)) }
                    td.number data-value=(dead) { (thousands(*dead)) }
                    td.number data-value=(report.state_bytes) { (thousands(report.state_bytes / 1024)) " KiB" }
                }
            }
        }))
        @for report in &reports {
            h2 { "Partitions of " (report.version) }
            @if let Some(error) = &report.consumer.last_error { p.error { "Last error: " (format!("{error:?}")) } }
            (sortable(&format!("partitions-{}", report.version), &["Partition", "Applied offset", "Log end", "Lag", "Progress"], html! {
                @for partition in &report.consumer.partitions {
                    @let start = partition.start_offset.unwrap_or(0);
                    @let progress = match (partition.applied_offset, partition.log_end) {
                        (Some(applied), Some(end)) if end > start => Some(((applied + 1 - start) as f64 / (end - start) as f64).clamp(0.0, 1.0)),
                        (_, Some(end)) if end <= start => Some(1.0),
                        _ => None,
                    };
                    tr {
                        td { (partition.partition) }
                        td.number { (partition.applied_offset.map_or("–".to_owned(), |offset| offset.to_string())) }
                        td.number { (partition.log_end.map_or("–".to_owned(), |offset| offset.to_string())) }
                        td.number data-value=(partition.lag.unwrap_or(0)) { (partition.lag.map_or("–".to_owned(), |lag| lag.to_string())) }
                        td.number data-value=(progress.unwrap_or(0.0)) { (percent(progress)) }
                    }
                }
            }))
        }
        p.muted { "Dead letters are records this projector could not decode; " code { "rapportctl deadletters list" } " shows them." }
    };
    Ok(page(&frame, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded_for_links() {
        assert_eq!(encode("c-1"), "c-1");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
