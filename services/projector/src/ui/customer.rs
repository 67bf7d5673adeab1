//! Customer 360: one person on one page (identifiers, profile, channels,
//! orders, tickets, consent, loyalty, scores, merged profiles), the whole
//! timeline in pages with a jump to a date, and the search that finds them.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use rapport_common::http::{ApiError, PathParams};
use rapport_projections::analytics::scoring::{CustomerFacts, CustomerScores, OrderHistory};
use rapport_projections::identity::IdentifierKind;
use rapport_projections::time::{format_day, parse_day};
use serde::Deserialize;
use serde_json::{Value, json};

use super::layout::{Frame, html_response, money, page, sortable};
use super::pages::{encode, parsed};
use super::{PageResult, UiError, blocking, frame};
use crate::query::{MAX_TIMELINE_LIMIT, QueryState, document, lookup, parse_cursor, timeline_page};
use crate::request::{invalid_field, not_found};
use crate::unseal;

/// Timeline events per page.
const TIMELINE_PAGE: usize = 50;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    q: Option<String>,
    as_of: Option<String>,
}

/// What kind of identifier a search box text looks like.
fn guess_kinds(text: &str) -> &'static [IdentifierKind] {
    if text.contains('@') {
        &[IdentifierKind::Email]
    } else if text.starts_with('+')
        || (text.chars().any(|c| c.is_ascii_digit())
            && text
                .chars()
                .all(|c| c.is_ascii_digit() || " -()./".contains(c)))
    {
        &[IdentifierKind::Phone, IdentifierKind::CustomerId]
    } else {
        &[IdentifierKind::CustomerId, IdentifierKind::AnonymousId]
    }
}

/// Finds a person by id, email or phone and goes to their page.
pub(crate) async fn search(
    State(state): State<Arc<QueryState>>,
    query: Result<Query<SearchParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use q= (a customer id, email or phone)")?;
    let text = params.q.unwrap_or_default().trim().to_owned();
    if text.is_empty() {
        return Err(invalid_field("q", "type a customer id, email or phone").into());
    }
    let as_of = params.as_of.filter(|day| !day.is_empty());
    let found = blocking(state, move |state, view| {
        if let Some(person) = state.person(view, &text)? {
            return Ok(Some(person.root));
        }
        for kind in guess_kinds(&text) {
            match lookup(state, view, *kind, &text) {
                Ok(person) => return Ok(Some(person.root)),
                Err(ApiError::NotFound(_) | ApiError::Invalid { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(None)
    })
    .await?;
    match found {
        Some(root) => {
            let keep = as_of.map_or_else(String::new, |day| format!("?as_of={}", encode(&day)));
            Ok(Redirect::to(&format!("/ui/customers/{}{keep}", encode(&root))).into_response())
        }
        None => {
            Err(ApiError::NotFound("no customer with this id, email or phone".to_owned()).into())
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomerParams {
    as_of: Option<String>,
    /// A timeline cursor (`next_before` of an earlier page).
    before: Option<String>,
    /// Jump: the timeline from the end of this day back.
    date: Option<String>,
}

/// The timeline bound a page was asked for.
fn timeline_cursor(params: &CustomerParams) -> Result<Option<(i64, String)>, UiError> {
    if let Some(day) = params.date.as_deref().filter(|day| !day.is_empty()) {
        let day = parse_day(day)
            .map_err(|error| invalid_field("date", format!("{error}; use YYYY-MM-DD")))?;
        // Everything before the next day's first millisecond.
        return Ok(Some(((day + 1) * DAY_MS, String::new())));
    }
    match params.before.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => parse_cursor(text)
            .map(Some)
            .ok_or_else(|| invalid_field("before", "must be a cursor from an earlier page").into()),
    }
}

/// The most orders a customer page lists; the timeline has every one.
const SHOWN_ORDERS: usize = 100;

/// The newest [`SHOWN_ORDERS`] orders, each with the profile it was placed
/// on, and how many there are in all.
fn order_rows(
    members: &[(String, rapport_projections::customer_view::ProfileState)],
    root: &str,
    shown: impl Fn(&str) -> String,
) -> Value {
    let mut orders: Vec<(&str, OrderHistory)> = members
        .iter()
        .flat_map(|(member, profile)| {
            CustomerFacts::from_profile(profile)
                .orders
                .into_iter()
                .map(move |order| (member.as_str(), order))
        })
        .collect();
    let total = orders.len();
    // Newest first; only the page's share is ever sorted in full.
    let newest_first = |left: &(&str, OrderHistory), right: &(&str, OrderHistory)| {
        (right.1.placed_day, &right.1.order_id).cmp(&(left.1.placed_day, &left.1.order_id))
    };
    if orders.len() > SHOWN_ORDERS {
        orders.select_nth_unstable_by(SHOWN_ORDERS, newest_first);
        orders.truncate(SHOWN_ORDERS);
    }
    orders.sort_unstable_by(newest_first);
    let rows: Vec<Value> = orders
        .into_iter()
        .map(|(member, order)| {
            json!({
                "order_id": order.order_id,
                "placed": format_day(order.placed_day),
                "currency": order.currency,
                "total_minor": order.total_minor,
                "refunded_minor": order.refunds.iter().map(|(_, amount)| amount).sum::<i64>(),
                "cancelled": order.cancelled_day.map(format_day),
                "profile": shown(member),
                "merged": member != root,
            })
        })
        .collect();
    json!({"total": total, "rows": rows})
}

pub(crate) async fn customer(
    State(state): State<Arc<QueryState>>,
    PathParams(customer_id): PathParams<String>,
    query: Result<Query<CustomerParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use as_of=, before= or date=")?;
    let mut frame = frame("Customer", "people", params.as_of.as_deref())?;
    let cursor = timeline_cursor(&params)?;
    let as_of = frame.as_of;
    let id = customer_id.clone();
    let (opened, scores, root) = blocking(state, move |state, view| {
        let person = state.person(view, &id)?.ok_or_else(|| not_found(&id))?;
        let changes = state.versions.changes_of(&view.version);
        let scores =
            state
                .scores
                .score_person(view, &view.version, changes, &person.members, as_of)?;
        let timeline = timeline_page(state, view, &person.root, TIMELINE_PAGE, cursor)?;
        let gathered = json!({
            "document": document(&person),
            "orders": order_rows(&person.members, &person.root, |member| person.shown(member)),
            "timeline": timeline,
        });
        let opened = unseal::open_value(state.vault(), gathered)?;
        Ok((opened, scores, person.root))
    })
    .await?;
    let doc = &opened["document"];
    frame.title = format!("Customer {}", doc["customer_id"].as_str().unwrap_or(&root));
    Ok(page(
        &frame,
        customer_body(
            &frame,
            &root,
            doc,
            &opened["orders"],
            &opened["timeline"],
            &scores,
        ),
    ))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "–".to_owned(),
        other => other.to_string(),
    }
}

fn facts_list(entries: &[(&str, String)]) -> Markup {
    html! { dl.facts { @for (name, value) in entries { dt { (name) } dd { (value) } } } }
}

fn customer_body(
    frame: &Frame,
    root: &str,
    doc: &Value,
    orders: &Value,
    timeline: &Value,
    scores: &CustomerScores,
) -> Markup {
    let empty = serde_json::Map::new();
    let object = |value: &Value| value.as_object().cloned().unwrap_or_else(|| empty.clone());
    let churn = scores.churn.as_ref();
    html! {
        div.columns {
            section {
                h2 { "Identifiers" }
                (sortable("identifiers", &["Kind", "Value"], html! {
                    @for (kind, values) in object(&doc["identifiers"]) {
                        @for value in values.as_array().into_iter().flatten() { tr { td { (kind) } td { (text(value)) } } }
                    }
                }))
                @if let Some(conflicts) = doc["conflicts"].as_array().filter(|list| !list.is_empty()) {
                    h2 { "Conflicts" }
                    (sortable("conflicts", &["Identifier", "Owner"], html! {
                        @for conflict in conflicts { tr { td { (text(&conflict["identifier"])) } td { (text(&conflict["owner"])) } } }
                    }))
                }
            }
            section {
                h2 { "Profile" }
                (facts_list(&object(&doc["profile"]).iter().map(|(name, value)| (name.as_str(), text(value))).collect::<Vec<_>>()))
                (facts_list(&[("first seen", text(&doc["first_seen"])), ("last seen", text(&doc["last_seen"]))]))
                @let attributes = object(&doc["attributes"]);
                @if !attributes.is_empty() {
                    h2 { "Attributes" }
                    (facts_list(&attributes.iter().map(|(name, value)| (name.as_str(), text(value))).collect::<Vec<_>>()))
                }
            }
            section {
                h2 { "Scores at " (scores.as_of) }
                (facts_list(&[
                    ("RFM segment", scores.rfm.as_ref().map_or("–".to_owned(), |rfm| format!("{} (R {} F {} M {})", rfm.segment_name, rfm.r, rfm.f, rfm.m))),
                    ("lifecycle", scores.lifecycle.map_or("–".to_owned(), |stage| stage.as_str().to_owned())),
                    ("value tier", scores.value_tier.map_or("–".to_owned(), |tier| tier.as_str().to_owned())),
                    ("P(alive)", churn.and_then(|churn| churn.p_alive).map_or("–".to_owned(), |p| format!("{p:.2}"))),
                    ("expected purchases", churn.and_then(|churn| churn.expected_purchases).map_or("–".to_owned(), |n| format!("{n:.2} in {} days", churn.map_or(0, |churn| churn.horizon_days)))),
                    ("CLV", scores.clv.as_ref().and_then(|clv| clv.expected_value_minor.map(|value| money(value.round() as i64, &clv.currency))).unwrap_or_else(|| "–".to_owned())),
                    ("churn", churn.map_or("–".to_owned(), |churn| format!("{}: {}", if churn.at_risk { "at risk" } else { "not at risk" }, churn.reason))),
                    ("loyalty", format!("{}, {} points ({} expire within 30 days)", scores.loyalty.tier, scores.loyalty.points, scores.loyalty.points_expiring_30d)),
                ]))
            }
        }
        div.columns {
            section {
                h2 { "Channels" }
                (sortable("channels", &["Channel", "Interactions", "Last contact"], html! {
                    @for (channel, facts) in object(&doc["channels"]) {
                        tr { td { (channel) } td.number { (text(&facts["count"])) } td { (text(&facts["last_at"])) } }
                    }
                }))
            }
            section {
                h2 { "Tickets and feedback" }
                (facts_list(&[
                    ("tickets", format!("{} ({} open)", text(&doc["tickets"]["total"]), text(&doc["tickets"]["open"]))),
                    ("complaints", format!("{} ({} open)", text(&doc["tickets"]["complaints"]), text(&doc["tickets"]["open_complaints"]))),
                    ("last NPS", text(&doc["last_nps"])),
                    ("average CSAT", doc["average_csat"].as_f64().map_or("–".to_owned(), |csat| format!("{csat:.2} ({} answers)", text(&doc["csat_answers"])))),
                ]))
            }
            section {
                h2 { "Consent" }
                (facts_list(&object(&doc["consent"]).iter().map(|(channel, granted)| (channel.as_str(), (if granted.as_bool() == Some(true) { "granted" } else { "withdrawn" }).to_owned())).collect::<Vec<_>>()))
                h2 { "Merged profiles" }
                @let merged = doc["merged_ids"].as_array().cloned().unwrap_or_default();
                @if merged.is_empty() { p.muted { "None." } } @else {
                    ul #merged { @for id in &merged { li { (text(id)) } } }
                }
            }
        }
        h2 { "Orders" }
        @if orders["total"].as_u64().unwrap_or(0) > SHOWN_ORDERS as u64 {
            p.muted { "The " (SHOWN_ORDERS) " newest of " (text(&orders["total"])) " orders; the timeline holds every one." }
        }
        (sortable("orders", &["Order", "Placed", "Total", "Refunded", "Cancelled", "Profile"], html! {
            @for order in orders["rows"].as_array().into_iter().flatten() {
                @let currency = order["currency"].as_str().unwrap_or("");
                tr {
                    td { (text(&order["order_id"])) }
                    td { (text(&order["placed"])) }
                    td.number data-value=(text(&order["total_minor"])) { (money(order["total_minor"].as_i64().unwrap_or(0), currency)) }
                    td.number data-value=(text(&order["refunded_minor"])) { (money(order["refunded_minor"].as_i64().unwrap_or(0), currency)) }
                    td { (order["cancelled"].as_str().unwrap_or("")) }
                    td { (text(&order["profile"])) @if order["merged"].as_bool() == Some(true) { " " span.muted { "(merged)" } } }
                }
            }
        }))
        h2 #timeline { "Timeline" }
        form.jump method="get" action=(format!("/ui/customers/{}", encode(root)))
            hx-get=(format!("/ui/customers/{}/timeline", encode(root))) hx-target="#timeline-body" hx-swap="innerHTML" {
            label { "From date back " input type="date" name="date"; }
            @if frame.as_of_given { input type="hidden" name="as_of" value=(format_day(frame.as_of)); }
            button type="submit" { "Jump" }
        }
        div.table-wrap {
            table.sortable #timeline-table {
                thead { tr { @for heading in ["When", "Type", "Channel", "What", "Profile"] { th scope="col" { button type="button" { (heading) } } } } }
                tbody #timeline-body { (timeline_rows(root, timeline)) }
            }
        }
    }
}

/// Rows of one timeline page, and a last row that fetches the older page.
fn timeline_rows(root: &str, timeline: &Value) -> Markup {
    html! {
        @for item in timeline["items"].as_array().into_iter().flatten() {
            tr.event data-event=(text(&item["event_id"])) {
                td data-value=(text(&item["occurred_at"])) { (text(&item["occurred_at"])) }
                td { (text(&item["type"])) }
                td { (text(&item["channel"])) }
                td { (text(&item["summary"])) }
                td { (text(&item["profile_id"])) }
            }
        }
        @if let Some(next) = timeline["next_before"].as_str() {
            tr.more {
                td colspan="5" {
                    a.older href=(format!("/ui/customers/{}?before={}#timeline", encode(root), encode(next)))
                        hx-get=(format!("/ui/customers/{}/timeline?before={}", encode(root), encode(next)))
                        hx-target="closest tr" hx-swap="outerHTML" { "Older events" }
                }
            }
        } @else {
            tr.end { td colspan="5" { span.muted { "The first recorded event." } } }
        }
    }
}

/// A page of the timeline as table rows, for htmx.
pub(crate) async fn timeline(
    State(state): State<Arc<QueryState>>,
    PathParams(customer_id): PathParams<String>,
    query: Result<Query<CustomerParams>, QueryRejection>,
) -> PageResult {
    let params = parsed(query, "use before= or date=")?;
    let cursor = timeline_cursor(&params)?;
    let (root, timeline) = blocking(state, move |state, view| {
        let person = state
            .person(view, &customer_id)?
            .ok_or_else(|| not_found(&customer_id))?;
        let page = timeline_page(
            state,
            view,
            &person.root,
            TIMELINE_PAGE.min(MAX_TIMELINE_LIMIT),
            cursor,
        )?;
        let page =
            serde_json::to_value(&page).map_err(|error| ApiError::Internal(error.to_string()))?;
        Ok((person.root, unseal::open_value(state.vault(), page)?))
    })
    .await?;
    Ok(html_response(
        StatusCode::OK,
        timeline_rows(&root, &timeline),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_read_as_the_identifier_it_looks_like() {
        assert_eq!(guess_kinds("Ann@Example.com"), &[IdentifierKind::Email]);
        assert_eq!(guess_kinds("+49 170 1234567")[0], IdentifierKind::Phone);
        assert_eq!(guess_kinds("0170-1234567")[0], IdentifierKind::Phone);
        assert_eq!(guess_kinds("c-42")[0], IdentifierKind::CustomerId);
    }
}
