//! Personal data on the log is sealed: after ingest, neither the raw nor
//! the customer topic holds an identifier or a personal text in clear,
//! record keys included, while the query API shows the person as sent and
//! finds them by their clear email.

use std::time::Duration;

use rapport_e2e::{Pipeline, event};
use serde_json::json;

/// The clear values sent below; none may reach the log.
const CLEAR: &[&str] = &[
    "c-sealed-ada",
    "ada.sealed@example.com",
    "Lovelace",
    "Marylebone",
    "sealed-shop.example",
    "parcel never came",
    "loved the engines",
    "anon-sealed-7",
    "4420794600",
];

fn holds(bytes: &[u8], clear: &str) -> bool {
    bytes
        .windows(clear.len())
        .any(|window| window.eq_ignore_ascii_case(clear.as_bytes()))
}

#[test]
fn nothing_personal_reaches_the_log_in_clear_and_the_api_shows_it_whole() {
    let pipeline = Pipeline::start("sealed");
    let ada = json!({"customer_id": "c-sealed-ada", "email": "Ada.Sealed@Example.com", "phone": "+44 20 7946 00"});
    pipeline.send_ok(&[
        event(
            "web.page_viewed",
            "2026-11-01T10:00:00Z",
            json!({"anonymous_id": "anon-sealed-7"}),
            json!({"url": "https://sealed-shop.example/engines"}),
        ),
        event(
            "customer.registered",
            "2026-11-01T10:05:00Z",
            json!({"customer_id": "c-sealed-ada", "email": "ada.sealed@example.com", "anonymous_id": "anon-sealed-7"}),
            json!({"name": "Ada Lovelace", "city": "Marylebone", "phone": "+44 20 7946 00"}),
        ),
        event(
            "ticket.opened",
            "2026-11-02T09:00:00Z",
            ada.clone(),
            json!({"ticket_id": "t-1", "category": "complaint", "subject": "parcel never came"}),
        ),
        event(
            "survey.answered",
            "2026-11-03T09:00:00Z",
            ada.clone(),
            json!({"survey_id": "s-1", "nps": 9, "comment": "loved the engines"}),
        ),
        event(
            "order.placed",
            "2026-11-03T10:00:00Z",
            ada,
            json!({"order_id": "o-1", "total_minor": 4200, "currency": "USD"}),
        ),
    ]);
    pipeline.wait_until_caught_up(Duration::from_secs(60));

    for topic in [&pipeline.topics.raw, &pipeline.topics.customer] {
        let payloads = rapport_e2e::read_all(topic);
        assert!(
            payloads.len() >= 5,
            "{topic} holds {} records",
            payloads.len()
        );
        let keys: Vec<String> = rapport_e2e::keys_by_partition(topic)
            .into_values()
            .flatten()
            .collect();
        for clear in CLEAR {
            assert!(
                !payloads.iter().any(|payload| holds(payload, clear)),
                "{clear} is in clear in a record of {topic}"
            );
            assert!(
                !keys.iter().any(|key| holds(key.as_bytes(), clear)),
                "{clear} is in clear in a record key of {topic}: {keys:?}"
            );
        }
    }

    // The API opens what it shows, and finds the person by clear values.
    let view = pipeline.wait_for_json(
        "/v1/customers/c-sealed-ada",
        Duration::from_secs(30),
        |view| view["profile"]["name"] == "Ada Lovelace",
    );
    assert_eq!(view["customer_id"], "c-sealed-ada", "{view}");
    assert_eq!(view["profile"]["city"], "Marylebone", "{view}");
    assert_eq!(
        view["identifiers"]["email"][0], "ada.sealed@example.com",
        "{view}"
    );
    assert_eq!(
        view["identifiers"]["anonymous_id"][0], "anon-sealed-7",
        "{view}"
    );
    let text = view.to_string();
    assert!(
        !text.contains("sealed:"),
        "a token leaked to the API: {text}"
    );
    let (status, found) = pipeline.get("/v1/customers?email=ADA.SEALED@example.com");
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["customer_id"], "c-sealed-ada", "{found}");
    let (status, timeline) = pipeline.get("/v1/customers/c-sealed-ada/timeline?limit=10");
    assert_eq!(status, 200, "{timeline}");
    let timeline = timeline.to_string();
    for shown in ["sealed-shop.example/engines", "parcel never came"] {
        assert!(
            timeline.contains(shown),
            "{shown} is not in the timeline: {timeline}"
        );
    }
    assert!(!timeline.contains("sealed:"), "a token leaked: {timeline}");
}
