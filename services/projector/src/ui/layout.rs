//! The frame every page shares (navigation, search, the `as_of` picker) and
//! the small pieces pages are built from: numbers that link to the people
//! behind them, money, sortable tables, heat-map shades.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rapport_projections::money::format_minor;
use rapport_projections::time::format_day;

/// Where the dashboard lives.
pub(crate) const ROOT: &str = "/ui/";

/// The pages in the navigation, in order: path under `/ui/`, title.
const NAVIGATION: [(&str, &str); 8] = [
    ("", "Overview"),
    ("churn", "Churn"),
    ("segments", "Segments"),
    ("models", "Models"),
    ("cohorts", "Cohorts"),
    ("campaigns", "Campaigns"),
    ("people", "People"),
    ("ops", "Ops"),
];

/// No script or style from anywhere but the projector itself; charts and
/// heat maps use classes and the CSS object model, never inline markup.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
     form-action 'self'; base-uri 'none'";

/// What a page knows of the request around it.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) title: String,
    /// The navigation entry to mark, a path under `/ui/`.
    pub(crate) section: &'static str,
    /// The day the figures are for.
    pub(crate) as_of: i64,
    /// Whether the request named its `as_of` (links then keep it).
    pub(crate) as_of_given: bool,
    /// The page reloads itself after this many seconds (part of it is
    /// still being gathered).
    pub(crate) reload_after_s: Option<u32>,
}

impl Frame {
    /// `?as_of=…` when the page was asked for a date, for links to keep it.
    pub(crate) fn keep(&self) -> String {
        if self.as_of_given {
            format!("as_of={}", format_day(self.as_of))
        } else {
            String::new()
        }
    }

    /// `path` (under `/ui/`) with `query` and the kept `as_of`.
    pub(crate) fn link(&self, path: &str, query: &str) -> String {
        let kept = self.keep();
        let joined = match (query.is_empty(), kept.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!("?{query}"),
            (true, false) => format!("?{kept}"),
            (false, false) => format!("?{query}&{kept}"),
        };
        format!("{ROOT}{path}{joined}")
    }

    /// A link to the people behind a number.
    pub(crate) fn people(&self, filter: &str) -> String {
        self.link("people", filter)
    }
}

/// A whole page: the frame around `body`.
pub(crate) fn page(frame: &Frame, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = frame.reload_after_s {
                    meta http-equiv="refresh" content=(seconds);
                }
                // htmx's own indicator styles would be an inline style.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
                title { (frame.title) " · Rapport" }
                // No icon: without this the browser asks for /favicon.ico.
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/ui/assets/rapport.css";
                link rel="stylesheet" href="/ui/assets/uPlot.min.css";
                script src="/ui/assets/htmx.min.js" defer {}
                script src="/ui/assets/uPlot.iife.min.js" defer {}
                script src="/ui/assets/rapport.js" defer {}
            }
            body {
                header {
                    a.brand href=(ROOT) { "Rapport" }
                    nav {
                        @for (path, name) in NAVIGATION {
                            a href=(frame.link(path, "")) class=[(path == frame.section).then_some("current")] { (name) }
                        }
                    }
                    form.search action="/ui/customers" method="get" role="search" {
                        input type="search" name="q" placeholder="Customer id, email or phone" aria-label="Find a customer" required;
                        button type="submit" { "Find" }
                    }
                    form.as-of method="get" {
                        label { "as of " input type="date" name="as_of" value=(format_day(frame.as_of)); }
                        button type="submit" { "Show" }
                    }
                    form.logout action="/ui/logout" method="post" { button type="submit" { "Log out" } }
                }
                main { h1 { (frame.title) } (body) }
            }
        }
    };
    html_response(StatusCode::OK, markup)
}

/// `markup` as an HTML answer with the dashboard's security headers.
pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A count that links to the people behind it.
pub(crate) fn count_link(count: u64, href: &str) -> Markup {
    html! { a.count href=(href) data-value=(count) { (thousands(count)) } }
}

/// `1234567` as `1 234 567`.
pub(crate) fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(digit);
    }
    out
}

pub(crate) fn money(minor: i64, currency: &str) -> String {
    format_minor(minor, currency)
}

pub(crate) fn money_f(minor: f64, currency: &str) -> String {
    format_minor(minor.round() as i64, currency)
}

pub(crate) fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "–".to_owned(), |share| format!("{:.1} %", share * 100.0))
}

/// The shade class (`heat-0` … `heat-9`) of `value` on a scale to `max`.
pub(crate) fn heat(value: f64, max: f64) -> String {
    let level = if max > 0.0 {
        ((value / max) * 9.0).round().clamp(0.0, 9.0) as u8
    } else {
        0
    };
    format!("heat-{level}")
}

/// A table whose columns sort on a click on their heading (`rapport.js`);
/// a cell's `data-value` is what it sorts by, else its text.
pub(crate) fn sortable(id: &str, headings: &[&str], rows: Markup) -> Markup {
    html! {
        div.table-wrap {
            table.sortable id=(id) {
                thead { tr { @for heading in headings { th scope="col" { button type="button" { (heading) } } } } }
                tbody { (rows) }
            }
        }
    }
}

/// Data for a chart, read by `rapport.js`: JSON in a non-executed script.
pub(crate) fn chart_data(id: &str, kind: &str, json: &serde_json::Value) -> Markup {
    // `</` cannot end the element early once escaped.
    let text = json.to_string().replace("</", "<\\/");
    html! {
        div.chart data-chart=(id) data-kind=(kind) {}
        script type="application/json" id=(id) { (PreEscaped(text)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_group_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1\u{202f}000");
        assert_eq!(thousands(1_234_567), "1\u{202f}234\u{202f}567");
    }

    #[test]
    fn links_keep_the_as_of_asked_for() {
        let mut frame = Frame {
            title: "t".into(),
            section: "",
            as_of: 19_000,
            as_of_given: false,
            reload_after_s: None,
        };
        assert_eq!(frame.people("rfm=5-5"), "/ui/people?rfm=5-5");
        frame.as_of_given = true;
        assert_eq!(
            frame.people("rfm=5-5"),
            "/ui/people?rfm=5-5&as_of=2022-01-08"
        );
        assert_eq!(frame.link("churn", ""), "/ui/churn?as_of=2022-01-08");
    }

    #[test]
    fn heat_levels_span_the_scale() {
        assert_eq!(heat(0.0, 10.0), "heat-0");
        assert_eq!(heat(10.0, 10.0), "heat-9");
        assert_eq!(heat(5.0, 0.0), "heat-0");
    }

    #[test]
    fn chart_data_cannot_close_its_script() {
        let markup = chart_data("c", "bars", &serde_json::json!({"label": "</script><b>"}));
        assert!(!markup.into_string().contains("</script><b>"));
    }
}
