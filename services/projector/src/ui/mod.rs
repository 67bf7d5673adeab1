//! The dashboard under `/ui/`: server-rendered pages for analysts over the
//! same projections and scores as the query API, with no build step.
//! Pages are maud templates; the browser gets htmx (the timeline's pages),
//! uPlot (charts) and a small script of ours, all embedded in the binary.
//!
//! A page takes its key from `Authorization` like any route, or from the
//! session cookie the login form sets, and shows a refusal as a page (the
//! login form for a 401) with the refusal's status.

mod campaigns;
mod customer;
mod layout;
mod pages;

use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use rapport_common::apikeys::{Gate, SESSION_COOKIE, Scope, ScopedRoutes};
use rapport_common::http::ApiError;
use rapport_projections::time::{parse_day, utc_day};
use serde::Deserialize;

use crate::query::QueryState;
use crate::read::View;
pub(crate) use layout::ROOT;
use layout::{Frame, html_response};

/// The dashboard's routes, each behind the scope it needs.
pub(crate) fn routes(
    routes: ScopedRoutes<Arc<QueryState>>,
    gate: &Gate,
) -> ScopedRoutes<Arc<QueryState>> {
    use Scope::{Admin, Open, Read};
    let login_gate = gate.clone();
    routes
        .pages_refused_by(refused)
        .get(Open, "/ui", || async { Redirect::permanent(ROOT) })
        .get(Open, "/ui/login", login_form)
        .post(
            Open,
            "/ui/login",
            move |form: Result<Form<Login>, FormRejection>| {
                let gate = login_gate.clone();
                async move {
                    match form {
                        Ok(Form(form)) => login(&gate, form),
                        Err(_) => login_page(
                            StatusCode::BAD_REQUEST,
                            Some("the form needs a key field (form-encoded)"),
                            ROOT,
                        ),
                    }
                }
            },
        )
        .post(Open, "/ui/logout", logout)
        .get(Open, "/ui/assets/{file}", asset)
        .page(Read, "/ui/", pages::overview)
        .page(Read, "/ui/churn", pages::churn)
        .page(Read, "/ui/churn.csv", pages::churn_csv)
        .page(Read, "/ui/segments", pages::segments)
        .page(Read, "/ui/models", pages::models)
        .page(Read, "/ui/models/validation", pages::models_validation)
        .page(Read, "/ui/cohorts", pages::cohorts)
        .page(Read, "/ui/campaigns", campaigns::campaigns)
        .page(Read, "/ui/campaigns/{campaign_id}", campaigns::campaign)
        .page(Read, "/ui/people", pages::people)
        .page(Read, "/ui/people.csv", pages::people_csv)
        .page(Read, "/ui/customers", customer::search)
        .page(Read, "/ui/customers/{customer_id}", customer::customer)
        .page(
            Read,
            "/ui/customers/{customer_id}/timeline",
            customer::timeline,
        )
        .page(Admin, "/ui/ops", pages::ops)
}

/// Why a page is not shown: a failure, shown as a page with its status, or
/// figures still being gathered, shown as a page that reloads itself.
pub(crate) enum UiError {
    Api(ApiError),
    /// The population figures at this day are being gathered.
    Gathering(i64),
}

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        UiError::Api(error)
    }
}

impl From<crate::Error> for UiError {
    fn from(error: crate::Error) -> Self {
        UiError::Api(error.into())
    }
}

impl From<rapport_common::Error> for UiError {
    fn from(error: rapport_common::Error) -> Self {
        UiError::Api(error.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::Api(error) => error_page(error, None),
            UiError::Gathering(as_of) => gathering_page(as_of),
        }
    }
}

/// Seconds between reloads of a page waiting for its figures.
pub(crate) const GATHERING_RELOAD_S: u32 = 2;

/// `202`: the figures at `as_of` are on their way; the page reloads itself.
fn gathering_page(as_of: i64) -> Response {
    let day = rapport_projections::time::format_day(as_of);
    let markup = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(GATHERING_RELOAD_S);
                title { "Gathering the figures · Rapport" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/ui/assets/rapport.css";
            }
            body { main.gathering {
                h1 { "Gathering the figures for " (day) }
                p { "Everyone is being scored at this date: a few seconds for a million customers. This page reloads itself every " (GATHERING_RELOAD_S) " seconds." }
                p { a href=(ROOT) { "Back to the overview" } }
            } }
        }
    };
    let mut response = html_response(StatusCode::ACCEPTED, markup);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(GATHERING_RELOAD_S));
    response
}

/// A refusal or failure as a page with its status; `back`, for a key that
/// may not see the page, offers to log in with another.
fn error_page(error: ApiError, back: Option<&str>) -> Response {
    if let ApiError::Internal(message) = &error {
        tracing::error!(error = %message, "internal error building a page");
    }
    let (status, message, details) = error.parts();
    let markup = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (status.as_u16()) " · Rapport" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/ui/assets/rapport.css";
            }
            body { main {
                h1 { (status.canonical_reason().unwrap_or("Error")) }
                p.error { (message) }
                @for detail in details { p.error { code { (detail.field) } ": " (detail.message) } }
                @if let Some(back) = back {
                    form.logout action="/ui/logout" method="post" {
                        button type="submit" { "Log out" }
                    }
                    p { a href=(format!("/ui/login?next={}", pages::encode(back))) { "Log in with another key" } }
                }
                p { a href=(ROOT) { "Back to the overview" } }
            } }
        }
    };
    let mut response = html_response(status, markup);
    if let Some(seconds) = error.retry_after_s() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

pub(crate) type PageResult = Result<Response, UiError>;

/// Runs `work` with a view of the live version on the blocking pool:
/// scores and scans are CPU work.
pub(crate) async fn blocking<T: Send + 'static>(
    state: Arc<QueryState>,
    work: impl FnOnce(&QueryState, &View<'_>) -> Result<T, UiError> + Send + 'static,
) -> Result<T, UiError> {
    tokio::task::spawn_blocking(move || {
        let view = state.view(None)?;
        work(&state, &view)
    })
    .await
    .map_err(|error| ApiError::Internal(error.to_string()))?
}

/// The `as_of` a page was asked for, default today (UTC).
pub(crate) fn frame(
    title: impl Into<String>,
    section: &'static str,
    as_of: Option<&str>,
) -> Result<Frame, UiError> {
    let (as_of, as_of_given) = match as_of.filter(|text| !text.is_empty()) {
        Some(text) => (
            parse_day(text).map_err(|error| {
                crate::request::invalid_field("as_of", format!("{error}; use YYYY-MM-DD"))
            })?,
            true,
        ),
        None => {
            // Reading the clock is fine here: a request, not a fold.
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as i64);
            (utc_day(now_ms), false)
        }
    };
    Ok(Frame {
        title: title.into(),
        section,
        as_of,
        as_of_given,
        reload_after_s: None,
    })
}

/// How a page shows a refusal: the login form for a 401 (with where to
/// go back to), a page naming the scope for a 403.
fn refused(refusal: ApiError, uri: &Uri) -> Response {
    let back = uri
        .path_and_query()
        .map_or(ROOT, |path| path.as_str())
        .to_owned();
    match refusal {
        ApiError::Unauthorized(message) => {
            login_page(StatusCode::UNAUTHORIZED, Some(&message), &back)
        }
        other => error_page(other, Some(&back)),
    }
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_form(Query(query): Query<LoginQuery>) -> Response {
    login_page(StatusCode::OK, None, query.next.as_deref().unwrap_or(ROOT))
}

fn login_page(status: StatusCode, message: Option<&str>, next: &str) -> Response {
    let markup = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · Rapport" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/ui/assets/rapport.css";
            }
            body { main {
                form.login method="post" action="/ui/login" {
                    h1 { "Rapport" }
                    p { "Paste a read key (or an admin key, for the ops page). It is kept in this browser tab's session only." }
                    @if let Some(message) = message { p.error role="alert" { (message) } }
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="off" required autofocus;
                    input type="hidden" name="next" value=(safe_next(next));
                    button type="submit" { "Log in" }
                }
            } }
        }
    };
    html_response(status, markup)
}

/// Only a path of the dashboard itself is a place to go back to.
fn safe_next(next: &str) -> &str {
    if next.starts_with(ROOT) && !next.starts_with("//") && !next.contains(['\\', '\r', '\n']) {
        next
    } else {
        ROOT
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    key: String,
    next: Option<String>,
}

/// Checks the key as the gate would for a read page and, if it passes,
/// keeps it in a session cookie.
fn login(gate: &Gate, form: Login) -> Response {
    let next = safe_next(form.next.as_deref().unwrap_or(ROOT)).to_owned();
    let key = form.key.trim();
    let bearer = HeaderValue::from_str(&format!("Bearer {key}")).ok();
    let cookie = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={key}; Path=/ui; HttpOnly; SameSite=Strict"
    ))
    .ok();
    let (Some(bearer), Some(cookie)) = (bearer, cookie) else {
        return login_page(StatusCode::UNAUTHORIZED, Some("unknown API key"), &next);
    };
    if key.is_empty() || key.contains([';', ',', ' ']) {
        return login_page(StatusCode::UNAUTHORIZED, Some("unknown API key"), &next);
    }
    let mut presented = HeaderMap::new();
    presented.insert(header::AUTHORIZATION, bearer);
    // Failed logins are limited together, as from one unknown address.
    match gate.admit(
        Scope::Read,
        &presented,
        None,
        std::time::Instant::now(),
        rapport_common::now_ms(),
    ) {
        Ok(_) => {
            let mut response = Redirect::to(&next).into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Err(ApiError::Forbidden(_)) => login_page(
            StatusCode::FORBIDDEN,
            Some("this key cannot read the dashboard: use a read or admin key"),
            &next,
        ),
        Err(refusal) => {
            let (status, message, _) = refusal.parts();
            login_page(status, Some(message), &next)
        }
    }
}

async fn logout() -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("rapport_key=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// The files the pages load, embedded so the dashboard needs nothing from
/// the internet. The vendored ones are checked against `SHA256SUMS`.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.min.css"),
    ),
    (
        "rapport.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/rapport.js"),
    ),
    (
        "rapport.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/rapport.css"),
    ),
];

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *bytes,
        )
            .into_response(),
        None => UiError::Api(ApiError::NotFound(format!("no asset {file}"))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn vendored_assets_match_their_pinned_checksums() {
        let sums = include_str!("../../assets/vendor/SHA256SUMS");
        let mut checked = 0;
        for line in sums.lines() {
            let (sum, name) = line.split_once("  ").expect("sha256sum lines");
            if let Some((_, _, bytes)) = ASSETS.iter().find(|(file, _, _)| *file == name) {
                let actual: String = Sha256::digest(bytes)
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect();
                assert_eq!(actual, sum, "{name} differs from SHA256SUMS");
                checked += 1;
            }
        }
        assert_eq!(checked, 3, "htmx, uPlot's script and its styles");
    }

    #[test]
    fn only_dashboard_paths_are_places_to_go_back_to() {
        assert_eq!(
            safe_next("/ui/churn?as_of=2024-01-01"),
            "/ui/churn?as_of=2024-01-01"
        );
        assert_eq!(safe_next("https://evil.example/"), ROOT);
        assert_eq!(safe_next("//evil.example/ui/"), ROOT);
        assert_eq!(safe_next("/v1/customers"), ROOT);
        assert_eq!(safe_next("/ui/\r\nSet-Cookie: x"), ROOT);
    }
}
