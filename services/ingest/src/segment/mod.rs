//! The Segment-compatible tracking API: what analytics.js, analytics-node,
//! analytics-python and RudderStack's SDKs send, taken unchanged. A shop
//! points its SDK's host at ingest and keeps its write key.
//!
//! Same guarantees as `POST /v1/events`: a request is taken whole or not
//! at all, answered `200 {"success": true}` only once the broker holds
//! every event, and idempotent by message id. Answers follow what the
//! clients expect: 400 (never 413, as Segment's API answers oversized
//! input) with `{"code", "message"}` for bad input, which the SDKs do not
//! retry; 401 for a bad write key; 429 and 503 with `Retry-After`, which
//! they do. The mapping onto Rapport's events is in
//! [`map`]; the browser side (settings, analytics.js, the snippet) in
//! [`browser`].

pub mod browser;
pub(crate) mod doc;
pub mod map;

use std::collections::{BTreeMap, HashSet};
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Extension, Json};
use rapport_common::apikeys::{Caller, Gate, Scope};
use rapport_common::http::{ApiError, FieldError};
use rapport_common::metrics::{Counter, Registry};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{BodyError, EventSink, Ingest, read_body};
use map::{Call, Envelope, map_message};

/// The largest message, as Segment's API takes them.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// The largest request body, after decompression.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// The routes and the call each implies (`None`: each message's `type`).
pub const ROUTES: [(&str, Option<Call>); 15] = [
    ("/v1/batch", None),
    ("/v1/import", None),
    ("/v1/b", None),
    ("/v1/track", Some(Call::Track)),
    ("/v1/t", Some(Call::Track)),
    ("/v1/identify", Some(Call::Identify)),
    ("/v1/i", Some(Call::Identify)),
    ("/v1/page", Some(Call::Page)),
    ("/v1/p", Some(Call::Page)),
    ("/v1/screen", Some(Call::Screen)),
    ("/v1/s", Some(Call::Screen)),
    ("/v1/alias", Some(Call::Alias)),
    ("/v1/a", Some(Call::Alias)),
    ("/v1/group", Some(Call::Group)),
    ("/v1/g", Some(Call::Group)),
];

/// What the configuration says about tracking from browsers.
#[derive(Debug, Clone, Default)]
pub struct TrackingSettings {
    /// Where browsers reach ingest; the request's `Host` without it.
    pub public_url: Option<String>,
    /// Per write key id, the origins allowed to send with it.
    pub allowed_origins: BTreeMap<String, Vec<String>>,
}

pub(crate) struct SegmentMetrics {
    messages: Vec<(Call, Counter)>,
    kept_as_custom: Counter,
}

impl SegmentMetrics {
    pub(crate) fn new(registry: &Registry) -> Self {
        Self {
            messages: Call::ALL
                .into_iter()
                .map(|call| {
                    (
                        call,
                        registry.counter(
                            "rapport_segment_messages_total",
                            "Tracking-API messages accepted, by call.",
                            &[("call", call.as_str())],
                        ),
                    )
                })
                .collect(),
            kept_as_custom: registry.counter(
                "rapport_segment_kept_as_custom_total",
                "E-commerce or email events that lacked what their Rapport event needs and were kept as custom.tracked.",
                &[],
            ),
        }
    }

    fn count(&self, call: Call) {
        if let Some((_, counter)) = self.messages.iter().find(|(known, _)| *known == call) {
            counter.increment(1);
        }
    }
}

/// Every tracking route with its handler and CORS preflight.
pub(crate) fn routes<S: EventSink>() -> Vec<(&'static str, MethodRouter<Arc<Ingest<S>>>)> {
    ROUTES
        .iter()
        .map(|&(path, call)| {
            let route = axum::routing::post(
                move |State(ingest): State<Arc<Ingest<S>>>,
                      Extension(gate): Extension<Gate>,
                      request: Request| async move {
                    receive(ingest, gate, call, request).await
                },
            )
            .options(browser::preflight);
            (path, route)
        })
        .collect()
}

/// A refusal as the tracking clients read it: `{"code", "message"}`, with
/// the field at fault where there is one.
fn answer_refusal(error: ApiError) -> Response {
    let (status, message, details) = error.parts();
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    };
    let mut body = serde_json::json!({"success": false, "code": code, "message": message});
    if let Some(detail) = details.first() {
        body["field"] = Value::String(detail.field.clone());
    }
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = error.retry_after_s() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"rapport\""),
        );
    }
    if let ApiError::Internal(message) = &error {
        tracing::error!(error = %message, "internal error answering a tracking request");
    }
    response
}

fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
    let field = field.into();
    ApiError::Invalid {
        message: format!("{field}: {message}; nothing was accepted"),
        details: vec![FieldError {
            index: None,
            field,
            message: message.to_string(),
        }],
    }
}

async fn receive<S: EventSink>(
    ingest: Arc<Ingest<S>>,
    gate: Gate,
    call: Option<Call>,
    request: Request,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let outcome = ingest.handle(take(&ingest, &gate, call, request)).await;
    let mut response = match outcome {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"success": true}))).into_response(),
        Err(error) => answer_refusal(error),
    };
    browser::allow_origin(response.headers_mut(), origin.as_ref());
    response
}

/// The body of a batch request: the messages, and what applies to all.
#[derive(serde::Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default, rename = "sentAt")]
    sent_at: Option<Value>,
}

async fn take<S: EventSink>(
    ingest: &Ingest<S>,
    gate: &Gate,
    call: Option<Call>,
    request: Request,
) -> Result<usize, ApiError> {
    let (parts, body) = request.into_parts();
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| *address);
    let admit = |headers: &HeaderMap| {
        gate.admit(
            Scope::Write,
            headers,
            client,
            Instant::now(),
            rapport_common::now_ms(),
        )
    };
    // A key in the Authorization header is checked before the body is read.
    let mut caller = None;
    let keyed_by_header = parts.headers.contains_key(header::AUTHORIZATION);
    if keyed_by_header {
        caller = admit(&parts.headers)?;
    }
    let raw = match read_body(
        &parts.headers,
        body,
        MAX_BATCH_BYTES,
        ingest.body_read_timeout,
    )
    .await
    {
        Ok(raw) => raw,
        Err(BodyError::TooLarge) => {
            return Err(invalid(
                "body",
                format!("a request may have at most {MAX_BATCH_BYTES} bytes"),
            ));
        }
        Err(BodyError::Late(error)) => return Err(error),
    };
    let text = decompressed(&parts.headers, raw)?;
    let body: Value = match serde_json::from_slice::<&RawValue>(&text) {
        // Parsed once as a whole for the write key and the single calls;
        // batches are parsed again message by message, to measure each.
        Ok(_) => serde_json::from_slice(&text).map_err(|error| invalid("body", error))?,
        Err(error) => {
            if !keyed_by_header {
                return Err(ApiError::Unauthorized(
                    "send the write key as the Basic user name or as `writeKey` in a JSON body"
                        .to_owned(),
                ));
            }
            return Err(invalid("body", format!("is not JSON: {error}")));
        }
    };
    if !keyed_by_header {
        let Some(key) = body.get("writeKey").and_then(Value::as_str) else {
            return Err(ApiError::Unauthorized(
                "send the write key as the Basic user name or as `writeKey` in the body".to_owned(),
            ));
        };
        let mut headers = HeaderMap::new();
        match HeaderValue::from_str(&format!("Bearer {key}")) {
            Ok(value) => {
                headers.insert(header::AUTHORIZATION, value);
            }
            // Not a key any registry holds; the gate says so (or lets it
            // through with auth off).
            Err(_) => {
                headers.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_static("Bearer not-a-key"),
                );
            }
        }
        caller = admit(&headers)?;
    }
    check_origin(ingest, caller.as_ref(), parts.headers.get(header::ORIGIN))?;
    let received_at_ms = rapport_common::now_ms();
    let mut events = Vec::new();
    let mut calls = Vec::new();
    let mut kept_as_custom = 0;
    let mut take_message =
        |index: Option<usize>, message: &Value, envelope: &Envelope<'_>| -> Result<(), ApiError> {
            let at = |field: &str| match index {
                Some(index) => format!("batch[{index}].{field}"),
                None => field.to_owned(),
            };
            let Value::Object(message) = message else {
                return Err(invalid(
                    index.map_or("body".to_owned(), |index| format!("batch[{index}]")),
                    "must be a JSON object",
                ));
            };
            let mapped = map_message(call, message, envelope)
                .map_err(|refusal| invalid(at(&refusal.field), refusal.message))?;
            if let Some(why) = &mapped.kept_as_custom {
                kept_as_custom += 1;
                tracing::warn!(
                    message = index.unwrap_or(0),
                    why,
                    "an e-commerce or email event was kept as custom.tracked"
                );
            }
            let event_call = call.or_else(|| message.get("type")?.as_str().and_then(Call::parse));
            calls.extend(event_call);
            for mut event in mapped.events {
                let mut errors = Vec::new();
                crate::validate::check_event(0, &mut event, &mut errors);
                if let Some(error) = errors.first() {
                    return Err(invalid(
                        at(&format!("({} {})", event.r#type, error.field)),
                        &error.message,
                    ));
                }
                events.push(event);
            }
            Ok(())
        };
    match call {
        Some(_) => {
            let envelope = Envelope {
                received_at_ms,
                sent_at: None,
                context: None,
            };
            take_message(None, &body, &envelope)?;
        }
        None => {
            let batch: BatchBody<'_> = serde_json::from_slice(&text).map_err(|error| {
                invalid(
                    "batch",
                    format!("the body must be {{\"batch\": [messages...]}}: {error}"),
                )
            })?;
            let context = match &batch.context {
                None | Some(Value::Null) => None,
                Some(Value::Object(context)) => Some(context),
                Some(_) => return Err(invalid("context", "must be an object")),
            };
            let envelope = Envelope {
                received_at_ms,
                sent_at: batch.sent_at.as_ref(),
                context,
            };
            for (index, raw) in batch.batch.iter().enumerate() {
                let size = raw.get().len();
                if size > MAX_MESSAGE_BYTES {
                    return Err(invalid(
                        format!("batch[{index}]"),
                        format!("is {size} bytes; a message may have at most {MAX_MESSAGE_BYTES}"),
                    ));
                }
                let message: Value = serde_json::from_str(raw.get())
                    .map_err(|error| invalid(format!("batch[{index}]"), error))?;
                take_message(Some(index), &message, &envelope)?;
            }
        }
    }
    if call.is_some() && text.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(
            "body",
            format!(
                "is {} bytes; a message may have at most {MAX_MESSAGE_BYTES}",
                text.len()
            ),
        ));
    }
    // A message sent twice in one batch, or two identifies of one user,
    // make the same event: it is produced once.
    let mut seen = HashSet::new();
    events.retain(|event| seen.insert(event.event_id.clone()));
    let count = if events.is_empty() {
        0
    } else {
        ingest.publish_checked(events, received_at_ms).await?
    };
    for call in calls {
        ingest.segment.count(call);
    }
    ingest.segment.kept_as_custom.increment(kept_as_custom);
    Ok(count)
}

/// The body as JSON text: gunzipped under `Content-Encoding: gzip`, and
/// held to [`MAX_BATCH_BYTES`] after decompression.
fn decompressed(headers: &HeaderMap, raw: Bytes) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut text = Vec::new();
            let read = flate2::read::GzDecoder::new(raw.as_ref())
                .take(MAX_BATCH_BYTES as u64 + 1)
                .read_to_end(&mut text);
            match read {
                Err(error) => Err(invalid(
                    "Content-Encoding",
                    format!("the body is not valid gzip: {error}"),
                )),
                Ok(_) if text.len() > MAX_BATCH_BYTES => Err(invalid(
                    "body",
                    format!("a request may have at most {MAX_BATCH_BYTES} bytes once decompressed"),
                )),
                Ok(_) => Ok(Bytes::from(text)),
            }
        }
        other => Err(invalid(
            "Content-Encoding",
            format!("{other} is not supported; send gzip or no encoding"),
        )),
    }
}

/// A key limited to some origins refuses a browser on any other.
fn check_origin<S>(
    ingest: &Ingest<S>,
    caller: Option<&Caller>,
    origin: Option<&HeaderValue>,
) -> Result<(), ApiError> {
    let (Some(caller), Some(origin)) = (caller, origin) else {
        return Ok(());
    };
    let Some(allowed) = ingest.tracking.allowed_origins.get(&caller.key_id) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if allowed.iter().any(|allowed| allowed == origin) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "write key {} does not take events from pages on {origin}; allowed: {}",
            caller.key_id,
            allowed.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests;
