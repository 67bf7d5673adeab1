//! What a browser needs to track with analytics.js against ingest, and no
//! request to any third party: the settings analytics.js asks its CDN for,
//! the bundle itself (vendored from npm by `infra/vendor.sh`, checked
//! against `SHA256SUMS`), the chunks it may load, a snippet to paste, and
//! CORS on every tracking route.
//!
//! The paths are the CDN's own (`/analytics.js/v1/{writeKey}/analytics.min.js`,
//! `/v1/projects/{writeKey}/settings`, `/analytics-next/bundles/…`), so a
//! page whose snippet names ingest as its CDN needs nothing else.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rapport_common::apikeys::{Gate, Scope};
use rapport_common::http::ApiError;

use crate::{EventSink, Ingest};

/// analytics-next's standalone bundle, the CDN's `analytics.min.js`.
const STANDALONE: &str = include_str!("../../assets/vendor/standalone.js");
/// The chunks the bundle may load with the settings ingest gives it.
const BUNDLES: [(&str, &str); 2] = [
    (
        "auto-track.bundle.f131ce01a05e3a33a8c1.js",
        include_str!("../../assets/vendor/auto-track.bundle.f131ce01a05e3a33a8c1.js"),
    ),
    (
        "queryString.bundle.34b193ada8fe288d1bd1.js",
        include_str!("../../assets/vendor/queryString.bundle.34b193ada8fe288d1bd1.js"),
    ),
];
/// The version served, for the documents and the snippet.
pub const ANALYTICS_NEXT_VERSION: &str = "1.84.3";
/// The bundle holds this literal where the CDN writes the write key.
const WRITE_KEY_PLACEHOLDER: &str = "\"__WRITE_KEY__\"";

/// Lets any page origin read a tracking answer. A write key limited to
/// some origins refuses the others when the events are sent.
pub(crate) fn allow_origin(headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
    let Some(origin) = origin else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Answers a CORS preflight: analytics.js sends the write key in an
/// `Authorization` header, which makes its posts need one.
pub(crate) async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let answer = response.headers_mut();
    allow_origin(answer, headers.get(header::ORIGIN));
    answer.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    answer.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, content-encoding, x-retry-count"),
    );
    answer.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// Where browsers reach ingest: `(scheme, host[:port])`.
fn public_address<S>(ingest: &Ingest<S>, headers: &HeaderMap) -> (String, String) {
    if let Some(url) = &ingest.tracking.public_url
        && let Some((scheme, rest)) = url.split_once("://")
    {
        return (scheme.to_owned(), rest.trim_end_matches('/').to_owned());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b".-:[]".contains(&byte))
        })
        .unwrap_or("127.0.0.1:8080");
    ("http".to_owned(), host.to_owned())
}

/// Whether `key` is a live write key (any key, with auth off).
fn is_write_key(gate: &Gate, key: &str) -> Result<(), ApiError> {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| ApiError::NotFound("no such write key".to_owned()))?;
    headers.insert(header::AUTHORIZATION, value);
    gate.admit(
        Scope::Write,
        &headers,
        None,
        Instant::now(),
        rapport_common::now_ms(),
    )
    .map(|_| ())
    .map_err(|refusal| match refusal {
        ApiError::Unauthorized(_) | ApiError::Forbidden(_) => {
            ApiError::NotFound("no such write key".to_owned())
        }
        other => other,
    })
}

/// `GET /v1/projects/{writeKey}/settings`: what analytics.js asks its CDN
/// for. Only the Segment.io destination, pointed here; no metrics, no
/// remote plugins or middleware, so the page makes no other request.
pub(crate) async fn settings<S: EventSink>(
    State(ingest): State<Arc<Ingest<S>>>,
    Extension(gate): Extension<Gate>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut response = match is_write_key(&gate, &key) {
        Ok(()) => {
            let (scheme, host) = public_address(&ingest, &headers);
            Json(serde_json::json!({
                "integrations": {"Segment.io": {
                    "apiKey": key,
                    "apiHost": format!("{host}/v1"),
                    "protocol": scheme,
                }},
                "metrics": {"sampleRate": 0},
                "remotePlugins": [],
                "enabledMiddleware": {},
                "middlewareSettings": {},
                "legacyVideoPluginsEnabled": false,
            }))
            .into_response()
        }
        Err(error) => error.into_response(),
    };
    allow_origin(response.headers_mut(), headers.get(header::ORIGIN));
    response
}

fn javascript(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /analytics.js/v1/{writeKey}/analytics.min.js`: the bundle with the
/// write key written in, as the CDN serves it.
pub(crate) async fn bundle(
    Extension(gate): Extension<Gate>,
    Path((key, file)): Path<(String, String)>,
) -> Response {
    if file != "analytics.min.js" && file != "analytics.js" {
        return ApiError::NotFound(format!("no {file} here; ask for analytics.min.js"))
            .into_response();
    }
    if let Err(error) = is_write_key(&gate, &key) {
        return error.into_response();
    }
    let quoted = serde_json::Value::String(key).to_string();
    javascript(STANDALONE.replacen(WRITE_KEY_PLACEHOLDER, &quoted, 1))
}

/// `GET /analytics-next/bundles/{file}`: a chunk the bundle loads.
pub(crate) async fn chunk(Path(file): Path<String>) -> Response {
    match BUNDLES.iter().find(|(name, _)| *name == file) {
        Some((_, text)) => javascript((*text).to_owned()),
        None => ApiError::NotFound(format!("no bundle {file}")).into_response(),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct SnippetQuery {
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
    /// `false` leaves the first page view to the page.
    page: Option<bool>,
}

/// `GET /v1/snippet.js?writeKey=…`: the loader a shop pastes (as a
/// `<script src>` or inline). It queues calls made before analytics.js
/// arrives, then loads it from this host.
pub(crate) async fn snippet<S: EventSink>(
    State(ingest): State<Arc<Ingest<S>>>,
    Extension(gate): Extension<Gate>,
    query: Result<Query<SnippetQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Query(query)) = query else {
        return ApiError::Invalid {
            message: "the query must be ?writeKey=KEY[&page=false]".to_owned(),
            details: vec![rapport_common::http::FieldError {
                index: None,
                field: "page".to_owned(),
                message: "must be true or false".to_owned(),
            }],
        }
        .into_response();
    };
    let Some(key) = query.write_key.filter(|key| !key.is_empty()) else {
        return ApiError::Invalid {
            message: "writeKey is required: /v1/snippet.js?writeKey=KEY".to_owned(),
            details: vec![rapport_common::http::FieldError {
                index: None,
                field: "writeKey".to_owned(),
                message: "is required".to_owned(),
            }],
        }
        .into_response();
    };
    if let Err(error) = is_write_key(&gate, &key) {
        return error.into_response();
    }
    let (scheme, host) = public_address(&ingest, &headers);
    let origin = serde_json::Value::String(format!("{scheme}://{host}")).to_string();
    let key = serde_json::Value::String(key).to_string();
    let page = if query.page == Some(false) {
        ""
    } else {
        "\n  analytics.page();"
    };
    javascript(format!(
        r#"/* Rapport: analytics.js {ANALYTICS_NEXT_VERSION} from {origin}. Calls made before it loads are queued. */
(function () {{
  var analytics = (window.analytics = window.analytics || []);
  if (analytics.initialize || analytics.invoked) return;
  analytics.invoked = true;
  var methods = ["trackSubmit", "trackClick", "trackLink", "trackForm", "pageview",
    "identify", "reset", "group", "track", "ready", "alias", "debug", "page",
    "screen", "once", "off", "on", "addSourceMiddleware", "addIntegrationMiddleware",
    "setAnonymousId", "addDestinationMiddleware", "register"];
  analytics.factory = function (method) {{
    return function () {{
      var args = Array.prototype.slice.call(arguments);
      args.unshift(method);
      analytics.push(args);
      return analytics;
    }};
  }};
  for (var i = 0; i < methods.length; i++) {{
    analytics[methods[i]] = analytics.factory(methods[i]);
  }}
  analytics._writeKey = {key};
  analytics._cdn = {origin};
  analytics.load = function (key, options) {{
    var script = document.createElement("script");
    script.async = true;
    script.src = {origin} + "/analytics.js/v1/" + encodeURIComponent(key) + "/analytics.min.js";
    document.head.appendChild(script);
    analytics._loadOptions = options;
  }};
  analytics.SNIPPET_VERSION = "rapport-1";
  analytics.load({key});{page}
}})();
"#
    ))
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    #[test]
    fn the_vendored_files_are_the_pinned_ones() {
        let sums = include_str!("../../assets/vendor/SHA256SUMS");
        let embedded = [
            ("standalone.js", super::STANDALONE),
            (super::BUNDLES[0].0, super::BUNDLES[0].1),
            (super::BUNDLES[1].0, super::BUNDLES[1].1),
        ];
        for (name, text) in embedded {
            let line = sums
                .lines()
                .find(|line| line.ends_with(&format!("  {name}")))
                .unwrap_or_else(|| panic!("{name} is not in SHA256SUMS"));
            let actual: String = sha2::Sha256::digest(text.as_bytes())
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            assert_eq!(&line[..64], actual, "{name} differs from SHA256SUMS");
        }
        assert_eq!(
            super::STANDALONE
                .matches(super::WRITE_KEY_PLACEHOLDER)
                .count(),
            1,
            "the bundle has one place for the write key"
        );
    }
}
