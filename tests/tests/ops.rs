//! Operating a running pipeline with `rapportctl`: status and dead letters.

use std::time::Duration;

use prost::Message as _;
use rapport_e2e::{Pipeline, event, produce_raw};
use rapport_proto::v1 as proto;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);

#[test]
fn status_shows_every_partition_caught_up() {
    let pipeline = Pipeline::start("status");
    let events: Vec<Value> = (0..40)
        .map(|index| {
            event(
                "web.page_viewed",
                "2026-11-01T10:00:00Z",
                json!({"customer_id": format!("c-{index}")}),
                json!({"url": "/"}),
            )
        })
        .collect();
    pipeline.send_ok(&events);
    pipeline.wait_until_caught_up(PATIENCE);

    // The consumers' view of the log end comes from fetch statistics,
    // refreshed every second.
    let mut status = Value::Null;
    rapport_e2e::wait_for("status to report no lag", PATIENCE, || {
        status = serde_json::from_str(&pipeline.rapportctl(&["status", "--json"]))
            .expect("status --json is JSON");
        let projector = &status["projector"]["projections"][0]["consumer"];
        let identity = &status["identity"]["consumer"];
        projector["total_lag"] == 0
            && identity["total_lag"] == 0
            && projector["partitions"]
                .as_array()
                .is_some_and(|partitions| {
                    partitions
                        .iter()
                        .all(|partition| partition["log_end"].is_i64())
                })
    });
    let projection = &status["projector"]["projections"][0];
    assert_eq!(projection["projection"], "customer_view");
    assert_eq!(projection["version"], "v1");
    assert_eq!(projection["live"], true);
    let applied: i64 = projection["consumer"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|partition| {
            partition["applied_offset"]
                .as_i64()
                .map_or(0, |offset| offset + 1)
        })
        .sum();
    assert_eq!(applied, 40, "every customer record applied: {status}");
    assert_eq!(status["identity"]["consumer"]["topic"], pipeline.topics.raw);

    let table = pipeline.rapportctl(&["status"]);
    assert!(
        table.contains("customer_view") && table.contains("identity"),
        "{table}"
    );
}

#[test]
fn a_retried_dead_letter_is_applied_once_in_order() {
    let pipeline = Pipeline::start("retry");
    // As if an older projector had refused a valid record: a dead letter
    // whose payload the current code can apply.
    let record = proto::CustomerRecord {
        customer_id: "c-retried".into(),
        source: Some(proto::SourcePosition {
            raw_partition: 0,
            raw_offset: 0,
            index: 0,
        }),
        received_at_ms: 1,
        body: Some(proto::customer_record::Body::Event(proto::EventResolved {
            event: Some(proto::Event {
                event_id: "0193a5b0-7c1e-7d4e-9f00-000000000001".into(),
                r#type: "web.page_viewed".into(),
                occurred_at_ms: 1_793_527_200_000,
                channel: "web".into(),
                payload: Some(proto::event::Payload::WebPageViewed(proto::PageViewed {
                    url: "/again".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            linked: vec![],
        })),
    };
    let letter = proto::DeadLetter {
        service: "projector".into(),
        reason: "refused by an older version".into(),
        source_topic: pipeline.topics.customer.clone(),
        source_partition: 0,
        source_offset: 0,
        key: b"c-retried".to_vec(),
        payload: record.encode_to_vec(),
        source_timestamp_ms: 1,
    };
    produce_raw(
        &pipeline.topics.deadletters,
        b"projector",
        &letter.encode_to_vec(),
    );
    // And a real poison record refused by identity now.
    produce_raw(&pipeline.topics.raw, b"x", b"\xff\xff");

    rapport_e2e::wait_for("both dead letters", PATIENCE, || {
        pipeline
            .rapportctl(&["deadletters", "list"])
            .contains("2 dead letters")
    });
    let listing = pipeline.rapportctl(&["deadletters", "list"]);
    assert!(
        listing.contains("refused by an older version") && listing.contains("does not decode"),
        "{listing}"
    );
    let shown = pipeline.rapportctl(&["deadletters", "show", "0"]);
    assert!(shown.contains("service:   projector"), "{shown}");

    let dry = pipeline.rapportctl(&[
        "deadletters",
        "retry",
        "--service",
        "projector",
        "--dry-run",
    ]);
    assert!(
        dry.contains("1 dead letters would be re-submitted"),
        "{dry}"
    );
    assert_eq!(
        pipeline.get("/v1/customers/c-retried").0,
        404,
        "a dry run sends nothing"
    );
    pipeline.rapportctl(&["deadletters", "retry", "--service", "projector"]);
    pipeline.rapportctl(&["deadletters", "retry", "--service", "projector"]);
    pipeline.send_ok(&[event(
        "web.page_viewed",
        "2026-11-01T10:00:00Z",
        json!({"customer_id": "c-marker"}),
        json!({"url": "/"}),
    )]);
    pipeline.wait_for_json("/v1/customers/c-marker", PATIENCE, |_| true);
    pipeline.wait_until_caught_up(PATIENCE);
    let (status, view) = pipeline.get("/v1/customers/c-retried");
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["event_counts"]["web.page_viewed"], 1,
        "retried twice, applied once: {view}"
    );
}

fn visits(customers: usize, per_customer: usize, minute: u32) -> Vec<Value> {
    (0..customers * per_customer)
        .map(|index| {
            let who = json!({"customer_id": format!("c-{}", index % customers), "email": format!("p{}@example.com", index % customers)});
            event("web.page_viewed", &format!("2026-11-01T10:{minute:02}:00Z"), who, json!({"url": format!("/p/{index}")}))
        })
        .collect()
}

#[test]
fn a_rebuild_beside_the_live_version_is_identical_and_can_go_live() {
    let pipeline = Pipeline::start("replay");
    for batch in 0..5 {
        pipeline.send_ok(&visits(50, 4, batch));
    }
    pipeline.wait_until_caught_up(PATIENCE);

    let replayed = pipeline.rapportctl(&["replay", "customer_view", "--version", "r2"]);
    assert!(replayed.contains("caught up"), "{replayed}");
    let verified = pipeline.rapportctl(&["verify", "customer_view", "--other", "r2"]);
    assert!(verified.contains("identical"), "{verified}");
    assert_eq!(
        pipeline.get("/v1/customers/c-7?version=r2"),
        pipeline.get("/v1/customers/c-7")
    );
    assert_eq!(pipeline.get("/v1/customers/c-7?version=nope").0, 404);

    // The rebuild keeps following the head beside the live version.
    pipeline.send_ok(&visits(50, 1, 30));
    pipeline.wait_for_json("/v1/customers/c-7?version=r2", PATIENCE, |view| {
        view["event_counts"]["web.page_viewed"] == 21
    });

    let (refused, message) = pipeline.try_rapportctl(&["drop", "v1"]);
    assert!(
        !refused && message.contains("live"),
        "the live version cannot be dropped: {message}"
    );
    pipeline.rapportctl(&["switch", "r2"]);
    let (_, versions) = pipeline.get("/v1/admin/versions");
    assert_eq!(versions["live"], "r2");
    pipeline.rapportctl(&["drop", "v1"]);
    let (_, versions) = pipeline.get("/v1/admin/versions");
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );
    let (status, view) = pipeline.get("/v1/customers/c-7");
    assert_eq!(
        (status, view["event_counts"]["web.page_viewed"].clone()),
        (200, json!(21))
    );
}

#[test]
fn a_bounded_replay_holds_exactly_what_was_received_by_then() {
    let pipeline = Pipeline::start("bounded");
    // c-0..c-9 twice before the cut, c-0..c-19 once after it.
    pipeline.send_ok(&visits(10, 2, 0));
    pipeline.wait_until_caught_up(PATIENCE);
    std::thread::sleep(Duration::from_millis(20));
    let cut = rapport_projections::time::format_rfc3339(rapport_common::now_ms());
    std::thread::sleep(Duration::from_millis(20));
    pipeline.send_ok(&visits(20, 1, 1));
    pipeline.wait_until_caught_up(PATIENCE);

    let until = format!("time:{cut}");
    let snapshot = pipeline.rapportctl(&[
        "replay",
        "customer_view",
        "--version",
        "snap",
        "--until",
        &until,
    ]);
    assert!(snapshot.contains("reached its end"), "{snapshot}");
    for customer in 0..10 {
        let (_, then) = pipeline.get(&format!("/v1/customers/c-{customer}?version=snap"));
        assert_eq!(
            then["event_counts"]["web.page_viewed"], 2,
            "c-{customer} as of {cut}: {then}"
        );
        let (_, now) = pipeline.get(&format!("/v1/customers/c-{customer}"));
        assert_eq!(now["event_counts"]["web.page_viewed"], 3);
    }
    for customer in 10..20 {
        assert_eq!(
            pipeline
                .get(&format!("/v1/customers/c-{customer}?version=snap"))
                .0,
            404,
            "c-{customer} arrived after {cut}"
        );
    }
    let (refused, message) = pipeline.try_rapportctl(&["switch", "snap"]);
    assert!(!refused && message.contains("bounded"), "{message}");
}
