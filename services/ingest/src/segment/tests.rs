//! The tracking API over HTTP, in-process, with real key checks and a sink
//! that records what would be produced.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use rapport_common::apikeys::{Gate, KeyBook, Kind, RateLimits, Registry as Keys, create};
use rapport_common::metrics::Registry;
use rapport_proto::v1 as proto;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::TrackingSettings;
use crate::{EventSink, Ingest, PublishError, router};

#[derive(Default)]
struct Recorder {
    published: Mutex<Vec<proto::Event>>,
}

impl EventSink for Arc<Recorder> {
    async fn publish(&self, events: Vec<proto::Event>) -> Result<(), PublishError> {
        self.published.lock().unwrap().extend(events);
        Ok(())
    }
    fn is_ready(&self) -> bool {
        true
    }
}

struct Shop {
    app: Router,
    sink: Arc<Recorder>,
    write: String,
    write_id: String,
    read: String,
}

fn shop(allowed: &[&str]) -> Shop {
    let mut book = KeyBook::default();
    let write = create(Kind::Write, "shop", 0, None).unwrap();
    let read = create(Kind::Read, "analyst", 0, None).unwrap();
    book.insert(write.info.clone());
    book.insert(read.info.clone());
    let gate = Gate::new(
        rapport_common::apikeys::AuthMode::Keys,
        Keys::fixed(book),
        RateLimits {
            write_per_second: 1_000_000,
            failed_auth_per_minute: 1_000_000,
            ..RateLimits::default()
        },
        &rapport_common::metrics::Registry::default(),
        "test",
    );
    let mut tracking = TrackingSettings::default();
    if !allowed.is_empty() {
        tracking.allowed_origins.insert(
            write.info.id.clone(),
            allowed.iter().map(|origin| (*origin).to_owned()).collect(),
        );
    }
    let sink = Arc::new(Recorder::default());
    let ingest = Ingest::new(sink.clone(), "test", Registry::default(), 8).with_tracking(tracking);
    Shop {
        app: router(Arc::new(ingest), &gate),
        sink,
        write: write.secret,
        write_id: write.info.id,
        read: read.secret,
    }
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

fn post(path: &str, auth: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    request.body(body.into()).unwrap()
}

fn order_batch() -> Value {
    json!({"batch": [
        {"type": "identify", "messageId": "m-1", "userId": "c-1", "anonymousId": "a-1",
         "timestamp": "2026-11-01T10:00:00.000Z", "traits": {"email": "ada@example.com", "plan": "gold"}},
        {"type": "track", "messageId": "m-2", "userId": "c-1", "event": "Order Completed",
         "timestamp": "2026-11-01T10:01:00.000Z",
         "properties": {"order_id": "o-1", "total": 12.5, "currency": "EUR", "coupon": "AUTUMN"}},
        {"type": "page", "messageId": "m-3", "anonymousId": "a-1", "properties": {"url": "https://shop.example/"}}
    ], "sentAt": "2026-11-01T10:01:00.000Z", "context": {"library": {"name": "analytics-python"}}})
}

#[tokio::test]
async fn a_batch_with_the_key_as_basic_user_is_taken_whole() {
    let shop = shop(&[]);
    let (status, _, body) = send(
        &shop.app,
        post(
            "/v1/batch",
            Some(&basic(&shop.write)),
            order_batch().to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"success": true}));
    let published = shop.sink.published.lock().unwrap();
    let types: Vec<&str> = published
        .iter()
        .map(|event| event.r#type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "customer.registered",
            "customer.updated",
            "order.placed",
            "web.page_viewed"
        ]
    );
    assert!(
        published
            .iter()
            .all(|event| event.source == "segment/analytics-python")
    );
    let Some(proto::event::Payload::OrderPlaced(order)) = &published[2].payload else {
        panic!("{:?}", published[2]);
    };
    assert_eq!((order.total_minor, order.currency.as_str()), (1250, "EUR"));
    // The identify carries the anonymous id and the email: one person
    let customer = published[0].customer.as_ref().unwrap();
    assert_eq!(customer.anonymous_id, "a-1");
    assert_eq!(customer.email, "ada@example.com");
}

#[tokio::test]
async fn the_write_key_may_come_in_a_text_plain_body_and_gzipped() {
    let shop = shop(&[]);
    let mut message = json!({"userId": "c-1", "event": "Wishlist Added", "messageId": "ajs-1", "properties": {"sku": "tea"}});
    message["writeKey"] = json!(shop.write);
    let request = Request::post("/v1/t")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(message.to_string()))
        .unwrap();
    let (status, _, body) = send(&shop.app, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut batch = order_batch();
    batch["writeKey"] = json!(shop.write);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(batch.to_string().as_bytes()).unwrap();
    let request = Request::post("/v1/import")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip.finish().unwrap()))
        .unwrap();
    let (status, _, body) = send(&shop.app, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(shop.sink.published.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn refusals_are_400_401_403_with_a_code_and_nothing_is_produced() {
    let shop = shop(&[]);
    let key = basic(&shop.write);
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (post("/v1/batch", Some(&basic("rk_write_nope")), order_batch().to_string()), StatusCode::UNAUTHORIZED, "unauthorized"),
        (post("/v1/batch", None, order_batch().to_string()), StatusCode::UNAUTHORIZED, "unauthorized"),
        (post("/v1/batch", Some(&basic(&shop.read)), order_batch().to_string()), StatusCode::FORBIDDEN, "forbidden"),
        (post("/v1/batch", Some(&key), "{\"batch\": [".to_owned()), StatusCode::BAD_REQUEST, "invalid_request"),
        (post("/v1/batch", Some(&key), json!({"batch": [{"type": "track", "event": "E"}]}).to_string()), StatusCode::BAD_REQUEST, "invalid_request"),
        (post("/v1/batch", Some(&key), json!({"batch": [{"type": "track", "event": "E", "userId": "u", "properties": {"x": "y".repeat(33 * 1024)}}]}).to_string()), StatusCode::BAD_REQUEST, "invalid_request"),
        (post("/v1/batch", Some(&key), json!({"batch": (0..4000).map(|i| json!({"type": "track", "event": "E", "userId": format!("u-{i}"), "properties": {"pad": "p".repeat(100)}})).collect::<Vec<_>>()}).to_string()), StatusCode::BAD_REQUEST, "invalid_request"),
        (post("/v1/track", Some(&key), json!({"userId": "u", "event": "E", "properties": {"x": "y".repeat(33 * 1024)}}).to_string()), StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (index, (request, expected, code)) in cases.into_iter().enumerate() {
        let (status, headers, body) = send(&shop.app, request).await;
        assert_eq!(status, expected, "case {index}: {body}");
        assert_eq!(body["code"], code, "case {index}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        if status == StatusCode::BAD_REQUEST {
            assert!(body["field"].is_string(), "case {index}: {body}");
        }
        if status == StatusCode::UNAUTHORIZED {
            assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        }
    }
    assert!(shop.sink.published.lock().unwrap().is_empty());
    // The message at fault is named
    let (_, _, body) = send(
        &shop.app,
        post("/v1/batch", Some(&key), json!({"batch": [{"type": "track", "event": "E", "userId": "u"}, {"type": "track", "event": "E"}]}).to_string()),
    )
    .await;
    assert_eq!(body["field"], "batch[1].userId", "{body}");
}

#[tokio::test]
async fn a_retried_batch_without_message_ids_makes_the_same_events() {
    let shop = shop(&[]);
    let batch = |sent_at: &str| {
        json!({"batch": [
            {"type": "track", "event": "Viewed", "userId": "u", "timestamp": "2026-11-01T10:00:00Z"},
            {"type": "identify", "userId": "u", "traits": {"plan": "gold"}, "timestamp": "2026-11-01T10:00:00Z"}
        ], "sentAt": sent_at})
        .to_string()
    };
    let key = basic(&shop.write);
    for sent_at in ["2026-11-01T10:00:01Z", "2026-11-01T10:05:00Z"] {
        let (status, _, body) =
            send(&shop.app, post("/v1/batch", Some(&key), batch(sent_at))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let published = shop.sink.published.lock().unwrap();
    let ids: Vec<&str> = published
        .iter()
        .map(|event| event.event_id.as_str())
        .collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(ids[..3], ids[3..], "the retry makes the same event ids");
}

#[tokio::test]
async fn browsers_get_cors_and_a_key_can_be_held_to_its_origins() {
    let shop = shop(&["https://shop.example"]);
    let preflight = Request::options("/v1/t")
        .header(header::ORIGIN, "https://shop.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&shop.app, preflight).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://shop.example"
    );
    assert!(
        headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let message = json!({"anonymousId": "a", "name": "Home"}).to_string();
    for (origin, expected) in [
        ("https://shop.example", StatusCode::OK),
        ("https://evil.example", StatusCode::FORBIDDEN),
    ] {
        let request = Request::post("/v1/p")
            .header(header::CONTENT_TYPE, "text/plain")
            .header(header::ORIGIN, origin)
            .header(header::AUTHORIZATION, basic(&shop.write))
            .body(Body::from(message.clone()))
            .unwrap();
        let (status, headers, body) = send(&shop.app, request).await;
        assert_eq!(status, expected, "{origin}: {body}");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], origin);
    }
    assert_eq!(shop.sink.published.lock().unwrap().len(), 1);
    assert!(!shop.write_id.is_empty());
}

#[tokio::test]
async fn analytics_js_is_served_with_settings_that_keep_it_here() {
    let shop = shop(&[]);
    let get = |path: String| {
        Request::get(path)
            .header(header::HOST, "track.shop.example:8080")
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, settings) = send(
        &shop.app,
        get(format!("/v1/projects/{}/settings", shop.write)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let destination = &settings["integrations"]["Segment.io"];
    assert_eq!(destination["apiHost"], "track.shop.example:8080/v1");
    assert_eq!(destination["protocol"], "http");
    assert_eq!(destination["apiKey"], shop.write.as_str());
    assert_eq!(
        settings["integrations"].as_object().unwrap().len(),
        1,
        "no other destination"
    );
    assert_eq!(
        settings["metrics"]["sampleRate"], 0,
        "no metrics to segment.io"
    );
    for refused in [
        format!("/v1/projects/{}/settings", shop.read),
        "/v1/projects/nope/settings".to_owned(),
    ] {
        let (status, _, _) = send(&shop.app, get(refused)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _, bundle) = send(
        &shop.app,
        get(format!("/analytics.js/v1/{}/analytics.min.js", shop.write)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let bundle = bundle.as_str().unwrap();
    assert!(bundle.contains(&format!("\"{}\"", shop.write)) && !bundle.contains("__WRITE_KEY__"));
    let (status, _, snippet) = send(
        &shop.app,
        get(format!("/v1/snippet.js?writeKey={}", shop.write)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let snippet = snippet.as_str().unwrap();
    assert!(
        snippet.contains("analytics._cdn = \"http://track.shop.example:8080\""),
        "{snippet}"
    );
    assert!(snippet.contains("analytics.page();"));
    let (status, _, body) = send(&shop.app, get("/v1/snippet.js".to_owned())).await;
    assert_eq!(
        (status, body["details"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("writeKey"))
    );
    let (status, _, _) = send(
        &shop.app,
        get("/analytics-next/bundles/queryString.bundle.34b193ada8fe288d1bd1.js".to_owned()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(
        &shop.app,
        get("/analytics-next/bundles/other.js".to_owned()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Fuzz-style: whatever a client sends to a tracking route, the answer is
/// 200 or a 4xx `{"code", "message"}`, never a 5xx; a 400 names a field.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A valid batch with one place replaced by any JSON value.
    fn mutated_batch() -> impl Strategy<Value = Value> {
        const PLACES: [&str; 16] = [
            "/batch",
            "/batch/0",
            "/context",
            "/sentAt",
            "/batch/0/type",
            "/batch/0/userId",
            "/batch/0/anonymousId",
            "/batch/0/timestamp",
            "/batch/0/properties",
            "/batch/0/properties/total",
            "/batch/0/properties/currency",
            "/batch/0/properties/products",
            "/batch/1/traits",
            "/batch/1/traits/email",
            "/batch/0/messageId",
            "/batch/0/event",
        ];
        (
            prop::sample::select(&PLACES[..]),
            rapport_fuzzing::json_value(),
        )
            .prop_map(|(place, value)| {
                let mut batch = order_batch();
                if let Some(slot) = batch.pointer_mut(place) {
                    *slot = value;
                }
                batch
            })
    }

    fn answer(path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let shop = shop(&[]);
        let (status, _, body) =
            runtime.block_on(send(&shop.app, post(path, Some(&basic(&shop.write)), body)));
        (status, body)
    }

    fn is_an_answer(status: StatusCode, body: &Value) -> bool {
        match status {
            StatusCode::OK => body == &json!({"success": true}),
            StatusCode::BAD_REQUEST => {
                body["code"] == "invalid_request" && body["field"].is_string()
            }
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(rapport_fuzzing::config())]

        #[test]
        fn no_bytes_get_a_5xx(body in any::<Vec<u8>>(), path in prop::sample::select(&["/v1/batch", "/v1/t", "/v1/identify"][..])) {
            let (status, answer) = answer(path, body);
            prop_assert!(is_an_answer(status, &answer), "{status}: {answer}");
        }

        #[test]
        fn a_mutated_batch_is_taken_or_refused_naming_a_field(batch in mutated_batch()) {
            let (status, answer) = answer("/v1/batch", batch.to_string().into_bytes());
            prop_assert!(is_an_answer(status, &answer), "{status}: {answer} for {batch}");
        }

        #[test]
        fn any_single_message_is_taken_or_refused_naming_a_field(message in rapport_fuzzing::json_value(), path in prop::sample::select(&["/v1/t", "/v1/i", "/v1/p", "/v1/s", "/v1/a", "/v1/g"][..])) {
            let (status, answer) = answer(path, message.to_string().into_bytes());
            prop_assert!(is_an_answer(status, &answer), "{status}: {answer} for {message}");
        }
    }
}
