//! HTTP handlers of the analytics: `/v1/customers/{id}/scores`,
//! `/v1/models/{bgnbd,gamma-gamma}`, `/v1/segments…` and `/v1/cohorts`. Scoring scans and
//! model fits are CPU work, so each request runs on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use rapport_common::http::ApiError;
use rapport_common::http::PathParams;
use rapport_common::privacy;
use rapport_projections::analytics::dashboard::{Overview, format_month};
use rapport_projections::analytics::scoring::CustomerScores;
use rapport_projections::analytics::validation::{Validation, validate};
use rapport_projections::customer_view::ProfileState;
use rapport_projections::identity::IdentifierKind;
use rapport_projections::time::{format_day, parse_day, utc_day};
use rapport_proto::internal::SegmentAsk;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::query::{QueryState, blocking};
use crate::read::{View, person_of};
use crate::request::{bad_query, invalid_field, not_found};
use crate::scores::{FitKey, SegmentKind};
use crate::unseal;

/// Today (UTC), the default `as_of`. Reading the clock is fine here: this
/// is a request, not a fold.
fn today() -> i64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    utc_day(now_ms)
}

fn as_of_day(text: Option<&str>) -> Result<i64, ApiError> {
    match text {
        None => Ok(today()),
        Some(text) => parse_day(text).map_err(|error| invalid_field("as_of", error.to_string())),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScoreParams {
    /// `YYYY-MM-DD` or RFC 3339; default today (UTC).
    as_of: Option<String>,
    /// A projection version; default the live one.
    version: Option<String>,
}

/// The `as_of` day and version of a [`ScoreParams`] query, checked.
fn score_query(
    params: Result<Query<ScoreParams>, QueryRejection>,
) -> Result<(i64, Option<String>), ApiError> {
    let Query(params) = params.map_err(|rejection| {
        bad_query(rejection, "use as_of=YYYY-MM-DD (or RFC 3339) and version=")
    })?;
    Ok((as_of_day(params.as_of.as_deref())?, params.version))
}

pub(crate) async fn customer_scores(
    State(state): State<Arc<QueryState>>,
    PathParams(customer_id): PathParams<String>,
    params: Result<Query<ScoreParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (as_of, version) = score_query(params)?;
    let body = blocking(state, version, move |state, view| {
        let person = state
            .person(view, &customer_id)?
            .ok_or_else(|| not_found(&customer_id))?;
        let changes = state.versions.changes_of(&view.version);
        let scores: CustomerScores =
            state
                .scores
                .score_person(view, &view.version, changes, &person.members, as_of)?;
        let mut body =
            serde_json::to_value(&scores).map_err(|error| ApiError::Internal(error.to_string()))?;
        body["customer_id"] = json!(person.shown(&person.root));
        unseal::open_value(state.vault(), body)
    })
    .await?;
    Ok(Json(body))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelParams {
    /// `YYYY-MM-DD` or RFC 3339; default today (UTC).
    as_of: Option<String>,
    /// With `cohort_to`: only buyers whose first purchase is between the
    /// two days.
    cohort_from: Option<String>,
    /// See `cohort_from`.
    cohort_to: Option<String>,
    /// A projection version; default the live one.
    version: Option<String>,
}

fn fit_key(params: &ModelParams) -> Result<FitKey, ApiError> {
    let as_of = as_of_day(params.as_of.as_deref())?;
    let cohort = match (&params.cohort_from, &params.cohort_to) {
        (None, None) => None,
        (Some(from), Some(to)) => {
            let from =
                parse_day(from).map_err(|error| invalid_field("cohort_from", error.to_string()))?;
            let to =
                parse_day(to).map_err(|error| invalid_field("cohort_to", error.to_string()))?;
            if to < from {
                return Err(invalid_field("cohort_to", "must not be before cohort_from"));
            }
            Some((from, to))
        }
        _ => {
            return Err(invalid_field(
                "cohort_from",
                "give both cohort_from and cohort_to, or neither",
            ));
        }
    };
    Ok(FitKey { as_of, cohort })
}

fn describe(key: &FitKey) -> Value {
    json!({
        "as_of": format_day(key.as_of),
        "cohort_from": key.cohort.map(|(from, _)| format_day(from)),
        "cohort_to": key.cohort.map(|(_, to)| format_day(to)),
    })
}

async fn model(
    state: Arc<QueryState>,
    params: Result<Query<ModelParams>, QueryRejection>,
    render: fn(&crate::scores::Fits) -> Result<Value, String>,
) -> Result<Json<Value>, ApiError> {
    let usage = "use as_of=, cohort_from= and cohort_to= (dates), version=";
    let Query(params) = params.map_err(|rejection| bad_query(rejection, usage))?;
    let key = fit_key(&params)?;
    let fits = blocking(state, params.version, move |state, view| {
        let changes = state.versions.changes_of(&view.version);
        Ok(state.scores.fits(view, &view.version, changes, key)?)
    })
    .await?;
    let mut body = render(&fits).map_err(ApiError::Unprocessable)?;
    for (field, value) in describe(&key).as_object().into_iter().flatten() {
        body[field] = value.clone();
    }
    Ok(Json(body))
}

pub(crate) async fn bg_nbd_model(
    State(state): State<Arc<QueryState>>,
    params: Result<Query<ModelParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    model(state, params, |fits| {
        let fit = fits.bg_nbd.as_ref().map_err(Clone::clone)?;
        Ok(json!({
            "r": fit.parameters.r,
            "alpha": fit.parameters.alpha,
            "a": fit.parameters.a,
            "b": fit.parameters.b,
            "log_likelihood": fit.log_likelihood,
            "customers": fit.customers,
            "buyers": fits.buyers,
            "time_unit": "weeks",
        }))
    })
    .await
}

pub(crate) async fn gamma_gamma_model(
    State(state): State<Arc<QueryState>>,
    params: Result<Query<ModelParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    model(state, params, |fits| {
        let fit = fits.gamma_gamma.as_ref().map_err(Clone::clone)?;
        Ok(json!({
            "p": fit.parameters.p,
            "q": fit.parameters.q,
            "gamma": fit.parameters.gamma,
            "log_likelihood": fit.log_likelihood,
            "customers": fit.customers,
            "buyers": fits.buyers,
        }))
    })
    .await
}

/// Longest holdout a validation compares, in days (about three years).
pub(crate) const MAX_HOLDOUT_DAYS: i64 = 1_096;
/// The holdout when only its end is given: 26 weeks.
pub(crate) const DEFAULT_HOLDOUT_DAYS: i64 = 182;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidationParams {
    /// The calibration period's last day (`YYYY-MM-DD` or RFC 3339): the
    /// models are fitted on what was known then. Default 26 weeks before
    /// `holdout_end`.
    calibration_end: Option<String>,
    /// The holdout's last day: predictions for the days after
    /// `calibration_end` up to this one are compared with what the buyers
    /// did. Default today (UTC); at most 1 096 days after `calibration_end`.
    holdout_end: Option<String>,
    /// A projection version; default the live one.
    version: Option<String>,
}

/// A validation's calibration and holdout ends from their parameters;
/// `holdout_end` defaults to `default_end`, `calibration_end` to 26 weeks
/// before the holdout's end.
pub(crate) fn validation_days(
    calibration_end: Option<&str>,
    holdout_end: Option<&str>,
    default_end: i64,
) -> Result<(i64, i64), ApiError> {
    let holdout_end = match holdout_end {
        None => default_end,
        Some(text) => {
            parse_day(text).map_err(|error| invalid_field("holdout_end", error.to_string()))?
        }
    };
    let calibration_end = match calibration_end {
        None => holdout_end - DEFAULT_HOLDOUT_DAYS,
        Some(text) => {
            parse_day(text).map_err(|error| invalid_field("calibration_end", error.to_string()))?
        }
    };
    if holdout_end <= calibration_end {
        return Err(invalid_field(
            "holdout_end",
            "must be after calibration_end: the holdout is the days after the calibration period",
        ));
    }
    if holdout_end - calibration_end > MAX_HOLDOUT_DAYS {
        return Err(invalid_field(
            "holdout_end",
            format!("must be at most {MAX_HOLDOUT_DAYS} days after calibration_end"),
        ));
    }
    Ok((calibration_end, holdout_end))
}

/// The validation as the API shows it; `Err` when BG/NBD cannot be fitted
/// on the calibration period (a Gamma-Gamma that cannot is shown as
/// `not_fitted` beside it).
pub(crate) fn validation_body(validation: &Validation) -> Result<Value, String> {
    let purchases = validation.purchases.as_ref().map_err(Clone::clone)?;
    let spend = match &validation.spend {
        Ok(spend) => serde_json::to_value(spend).map_err(|error| error.to_string())?,
        Err(reason) => json!({ "not_fitted": reason }),
    };
    Ok(json!({
        "calibration_end": format_day(validation.calibration_end),
        "holdout_end": format_day(validation.holdout_end),
        "holdout_days": validation.holdout_end - validation.calibration_end,
        "purchases": purchases,
        "spend": spend,
    }))
}

/// Both models validated on the view's version (see
/// [`crate::scores::Scoreboard::validation`]), for the API and the
/// dashboard alike.
pub(crate) fn validation_now(
    state: &QueryState,
    view: &View<'_>,
    calibration_end: i64,
    holdout_end: i64,
) -> Result<Arc<Validation>, ApiError> {
    if view.shared() {
        let buyers = crate::figures::holdouts(state, view, calibration_end, holdout_end)?;
        return Ok(Arc::new(validate(&buyers, calibration_end, holdout_end)));
    }
    let changes = state.versions.changes_of(&view.version);
    Ok(state
        .scores
        .validation(view, &view.version, changes, calibration_end, holdout_end)?)
}

/// `GET /v1/models/bgnbd/validation`: both models fitted on a calibration
/// period and checked against the holdout that follows it.
pub(crate) async fn bg_nbd_validation(
    State(state): State<Arc<QueryState>>,
    params: Result<Query<ValidationParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|rejection| {
        bad_query(
            rejection,
            "use calibration_end= and holdout_end= (dates), version=",
        )
    })?;
    let (calibration_end, holdout_end) = validation_days(
        params.calibration_end.as_deref(),
        params.holdout_end.as_deref(),
        today(),
    )?;
    let validation = blocking(state, params.version, move |state, view| {
        validation_now(state, view, calibration_end, holdout_end)
    })
    .await?;
    Ok(Json(
        validation_body(&validation).map_err(ApiError::Unprocessable)?,
    ))
}

pub(crate) async fn segment_counts(
    State(state): State<Arc<QueryState>>,
    params: Result<Query<ScoreParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (as_of, version) = score_query(params)?;
    let body = blocking(state, version, move |state, view| {
        let changes = state.versions.changes_of(&view.version);
        let (customers, counts) = population_counts(state, view, changes.clone(), as_of)?;
        Ok(state
            .scores
            .with_snapshot(view, &view.version, changes, as_of, |snapshot, _| {
                let mut body = json!({
                    "as_of": format_day(as_of),
                    "customers": customers,
                    "models": {
                        "bg_nbd": snapshot.models.bg_nbd.as_ref().map(|fit| json!({"customers": fit.customers})).unwrap_or_else(|reason| json!({"not_fitted": reason})),
                        "gamma_gamma": snapshot.models.gamma_gamma.as_ref().map(|fit| json!({"customers": fit.customers})).unwrap_or_else(|reason| json!({"not_fitted": reason})),
                    },
                });
                for kind in SegmentKind::ALL {
                    body[kind.as_str()] = json!(counts[kind.as_str()]);
                }
                body
            })?)
    })
    .await?;
    Ok(Json(body))
}

/// People per segment name, by segment kind.
type CountsByKind = BTreeMap<String, BTreeMap<String, u64>>;

/// People known by `as_of` and everyone per segment name, by kind: this
/// process's people and those of every other process serving partitions,
/// all labelled against the whole population.
fn population_counts(
    state: &QueryState,
    view: &View<'_>,
    changes: Option<crate::changes::Changes>,
    as_of: i64,
) -> Result<(u64, CountsByKind), ApiError> {
    let ask = SegmentAsk {
        as_of_day: as_of,
        ..SegmentAsk::default()
    };
    let mut answers = vec![state.scores.segments(
        view,
        &view.version,
        changes,
        &ask,
        None,
        &view.served_here(),
    )?];
    answers.extend(view.others_segments(&ask)?);
    let mut customers = 0;
    let mut counts = CountsByKind::new();
    for answer in answers {
        customers += answer.customers;
        for count in answer.counts {
            *counts
                .entry(count.kind)
                .or_default()
                .entry(count.name)
                .or_default() += count.count;
        }
    }
    Ok((customers, counts))
}

/// The page of members `ask` names (of segment `kind`), by id, among this
/// process's people and every other process's; and whether more follow.
fn population_members(
    state: &QueryState,
    view: &View<'_>,
    changes: Option<crate::changes::Changes>,
    kind: SegmentKind,
    ask: &SegmentAsk,
) -> Result<(Vec<String>, bool), ApiError> {
    let served = view.served_here();
    let limit = ask.limit as usize;
    let cursor = (!ask.after.is_empty()).then_some(ask.after.as_str());
    let (mut ids, mut more) = state.scores.with_snapshot(
        view,
        &view.version,
        changes,
        ask.as_of_day,
        |snapshot, _| snapshot.members(kind, &ask.name, cursor, limit, &served),
    )?;
    if view.shared() {
        for answer in view.others_segments(ask)? {
            more |= answer.more;
            ids.extend(answer.members);
        }
        ids.sort_unstable();
        if ids.len() > limit {
            more = true;
            ids.truncate(limit);
        }
    }
    Ok((ids, more))
}

/// The dashboard's figures at `as_of`, gathered now if need be (for
/// answers that can wait: the cohorts endpoint, downloads).
pub(crate) fn overview_now(
    state: &QueryState,
    view: &View<'_>,
    as_of: i64,
) -> Result<Arc<Overview>, ApiError> {
    if view.shared() {
        return crate::figures::overview(state, view, as_of);
    }
    let changes = state.versions.changes_of(&view.version);
    Ok(state.scores.with_everyone(
        view,
        &view.version,
        changes,
        as_of,
        |snapshot, persons, config| snapshot.overview(persons, config),
    )?)
}

/// `GET /v1/cohorts`: retention by month of first purchase, the repeat
/// purchase rate and the time to a second purchase, from the figures the
/// dashboard shows (gathered once per date and kept).
pub(crate) async fn cohorts(
    State(state): State<Arc<QueryState>>,
    params: Result<Query<ScoreParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (as_of, version) = score_query(params)?;
    let figures = blocking(state, version, move |state, view| {
        overview_now(state, view, as_of)
    })
    .await?;
    let cohorts: Vec<Value> = figures
        .cohorts
        .iter()
        .map(|row| {
            let retention: Vec<Value> = row
                .active
                .iter()
                .enumerate()
                .skip(1)
                .map(|(months_after, &buyers)| {
                    json!({
                        "months_after": months_after,
                        "buyers": buyers,
                        "share": buyers as f64 / row.size.max(1) as f64,
                    })
                })
                .collect();
            json!({
                "month": format_month(row.month),
                "size": row.size,
                "retention": retention,
            })
        })
        .collect();
    Ok(Json(json!({
        "as_of": format_day(as_of),
        "buyers": figures.buyers,
        "repeat_buyers": figures.repeat_buyers,
        "repeat_purchase_rate": figures.repurchase_rate(),
        "second_purchase": figures.second_purchase,
        "cohorts": cohorts,
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberParams {
    /// `YYYY-MM-DD` or RFC 3339; default today (UTC).
    as_of: Option<String>,
    /// JSON: 1-10 000, default 100. CSV: default the whole segment.
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page (CSV: the `X-Next-Cursor`
    /// header).
    cursor: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
    /// A projection version; default the live one.
    version: Option<String>,
}

const DEFAULT_MEMBER_LIMIT: usize = 100;
const MAX_MEMBER_LIMIT: usize = 10_000;

/// What a mailing list needs of one member, as shown: sealed values are
/// still tokens here, opened for the whole page at once.
pub(crate) fn contact(view: &View<'_>, id: &str) -> Result<Value, ApiError> {
    let person = person_of(view, id)?.ok_or_else(|| not_found(id))?;
    let mut merged = ProfileState::default();
    for (_, profile) in &person.members {
        merged.merge(profile);
    }
    let fields = &merged.fields;
    // The profile's own field when the storefront sent one, else the
    // identifier the person was seen with, as ingest sealed it for display.
    // A bare pseudonym would be no address at all, so none is listed.
    let identified = |kind: IdentifierKind| {
        merged
            .identifiers
            .iter()
            .filter(|identifier| identifier.kind == kind)
            .map(|identifier| person.shown(&identifier.value))
            .find(|shown| !privacy::is_pseudonym(shown))
    };
    Ok(json!({
        "customer_id": person.shown(&person.root),
        "email": (fields.email.as_ref().map(|stamped| stamped.value.clone()))
            .or_else(|| identified(IdentifierKind::Email)),
        "phone": (fields.phone.as_ref().map(|stamped| stamped.value.clone()))
            .or_else(|| identified(IdentifierKind::Phone)),
        "name": fields.name.as_ref().map(|stamped| stamped.value.clone()),
        // The latest email consent, if one was ever given or withdrawn.
        "email_consent": merged.consent.get("email").map(|stamped| stamped.value),
    }))
}

/// One CSV field, quoted when it has to be (RFC 4180). Every field holds
/// text customers wrote, so one a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a
/// leading `'`, as OWASP advises: a spreadsheet shows it as text, and a
/// program strips the quote. Phone numbers in E.164 (`+49…`) are among
/// them.
pub(crate) fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The columns of a mailing list, as [`contact_csv_row`] writes them.
pub(crate) const CONTACT_CSV_HEADER: &str = "customer_id,email,phone,name,email_consent";

/// One [`contact`] (opened) as a CSV row, without the line end.
pub(crate) fn contact_csv_row(member: &Value) -> String {
    let text = |field: &str| csv_field(member[field].as_str().unwrap_or(""));
    let consent = member["email_consent"]
        .as_bool()
        .map_or("", |granted| if granted { "true" } else { "false" });
    format!(
        "{},{},{},{},{consent}",
        text("customer_id"),
        text("email"),
        text("phone"),
        text("name"),
    )
}

pub(crate) async fn segment_members(
    State(state): State<Arc<QueryState>>,
    PathParams((kind, name)): PathParams<(String, String)>,
    params: Result<Query<MemberParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|rejection| {
        bad_query(
            rejection,
            "use as_of=, limit=, cursor=, format=json|csv and version=",
        )
    })?;
    let as_of = as_of_day(params.as_of.as_deref())?;
    let Some(kind) = SegmentKind::parse(&kind) else {
        return Err(ApiError::NotFound(format!(
            "no segmentation {kind}; there are rfm, lifecycle, value_tier and loyalty"
        )));
    };
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(invalid_field(
                "format",
                format!("{other} is not json or csv"),
            ));
        }
    };
    let limit = match params.limit {
        Some(0) => return Err(invalid_field("limit", "must be at least 1")),
        Some(limit) if !csv && limit > MAX_MEMBER_LIMIT => {
            return Err(invalid_field(
                "limit",
                format!("must be at most {MAX_MEMBER_LIMIT}; use format=csv for a whole segment"),
            ));
        }
        Some(limit) => limit,
        None if csv => usize::MAX,
        None => DEFAULT_MEMBER_LIMIT,
    };
    let cursor = params.cursor.clone();
    let (customers, next_cursor) = blocking(state, params.version, move |state, view| {
        let changes = state.versions.changes_of(&view.version);
        let config = &state.scores.config;
        if !kind.names(config).contains(&name) {
            return Err(ApiError::NotFound(format!(
                "no {} segment {name}; there are {}",
                kind.as_str(),
                kind.names(config).join(", ")
            )));
        }
        let ask = SegmentAsk {
            as_of_day: as_of,
            kind: kind.as_str().to_owned(),
            name: name.clone(),
            after: cursor.clone().unwrap_or_default(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        let (ids, more) = population_members(state, view, changes, kind, &ask)?;
        let customers = ids
            .iter()
            .map(|id| contact(view, id))
            .collect::<Result<Value, _>>()?;
        // One vault lookup for the page; CSV escaping comes after, on the
        // opened text.
        let customers = unseal::open_value(state.vault(), customers)?;
        // The next page starts after the last id as the snapshot has it,
        // never after a shown (opened) one.
        let next_cursor = more.then(|| ids.last().cloned()).flatten();
        Ok((customers, next_cursor))
    })
    .await?;
    if csv {
        let mut body = format!("{CONTACT_CSV_HEADER}\n");
        for member in customers.as_array().into_iter().flatten() {
            body.push_str(&contact_csv_row(member));
            body.push('\n');
        }
        let mut response =
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
        if let Some(cursor) = next_cursor
            && let Ok(value) = cursor.parse()
        {
            response.headers_mut().insert("x-next-cursor", value);
        }
        return Ok(response);
    }
    let mut body = json!({
        "as_of": format_day(as_of),
        "kind": kind.as_str(),
        "customers": customers,
    });
    if let Some(cursor) = next_cursor {
        body["next_cursor"] = json!(cursor);
    }
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("Doe, Jane"), "\"Doe, Jane\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn csv_fields_a_spreadsheet_would_run_are_defused() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_field("+49 170 1234567"), "'+49 170 1234567");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\t=1"), "'\t=1");
        assert_eq!(csv_field("a=b"), "a=b", "only a leading sign is a formula");
        assert_eq!(csv_field(""), "");
    }
}
