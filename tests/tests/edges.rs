//! Inputs at the edges of what a storefront sends: the same event ids from
//! clients racing each other, times given in other zones near midnight and
//! far in the future, currencies without cents or with mills, and one
//! customer with a hundred thousand events.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rapport_e2e::{Pipeline, event};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(120);

fn page_view(event_id: &str, customer: Value, at: &str) -> Value {
    json!({"event_id": event_id, "type": "web.page_viewed", "occurred_at": at,
           "customer": customer, "data": {"url": "/"}})
}

fn order(customer: &str, at: &str, order_id: &str, total_minor: i64, currency: &str) -> Value {
    event(
        "order.placed",
        at,
        json!({"customer_id": customer}),
        json!({"order_id": order_id, "total_minor": total_minor, "currency": currency}),
    )
}

#[test]
fn the_same_event_ids_from_racing_clients_count_once() {
    let pipeline = Pipeline::start("racing-ids");
    // 1 000 page views, one per customer, with fixed ids; four clients send
    // all of them at once, each in its own order of batches.
    let events: Vec<Value> = (0..1_000)
        .map(|index| {
            page_view(
                &uuid::Uuid::now_v7().to_string(),
                json!({"customer_id": format!("c-race-{index}")}),
                "2026-11-01T10:00:00Z",
            )
        })
        .collect();
    let batches: Vec<Vec<Value>> = events.chunks(100).map(<[Value]>::to_vec).collect();
    let url = format!("{}/v1/events", pipeline.ingest_url());
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (url, mut batches) = (url.clone(), batches.clone());
            batches.rotate_left(client * 3);
            std::thread::spawn(move || {
                for batch in batches {
                    let (status, answer) =
                        rapport_e2e::post_json(&url, &json!({ "events": batch }));
                    assert_eq!(status, 202, "{answer}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client");
    }
    pipeline.wait_until_caught_up(PATIENCE);
    for index in (0..1_000).step_by(37) {
        let (status, view) = pipeline.get(&format!("/v1/customers/c-race-{index}"));
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["event_counts"]["web.page_viewed"], 1, "{view}");
    }
    // Every copy after the first was recognised by its id.
    let metrics = pipeline.identity.metrics();
    assert_eq!(
        rapport_e2e::metric_sum(
            &metrics,
            "rapport_identity_events_total",
            "outcome=\"duplicate\""
        ),
        3_000
    );

    // One id sent again with other identifiers: the first copy read wins
    // whole, and the second links nothing.
    let id = uuid::Uuid::now_v7().to_string();
    let first = page_view(
        &id,
        json!({"customer_id": "c-first", "email": "first@example.com"}),
        "2026-11-01T11:00:00Z",
    );
    let second = page_view(
        &id,
        json!({"customer_id": "c-second", "email": "first@example.com"}),
        "2026-11-01T11:05:00Z",
    );
    pipeline.send_ok(&[first]);
    pipeline.send_ok(&[second]);
    pipeline.wait_until_caught_up(PATIENCE);
    let (status, view) = pipeline.get("/v1/customers/c-first");
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["event_counts"]["web.page_viewed"], 1);
    assert_eq!(view["identifiers"]["customer_id"], json!(["c-first"]));
    let (status, view) = pipeline.get("/v1/customers/c-second");
    assert_eq!(status, 404, "the second copy was dropped: {view}");
}

#[test]
fn times_in_other_zones_fall_on_their_utc_day() {
    let pipeline = Pipeline::start("zones");
    pipeline.send_ok(&[
        // 01:30 on 1 November in UTC, still 31 October where it was placed.
        order(
            "c-zone",
            "2026-10-31T23:30:00-02:00",
            "o-west",
            1_000,
            "USD",
        ),
        // 22:30 on 31 October in UTC, already 1 November where it was placed.
        order(
            "c-zone",
            "2026-11-01T00:30:00+02:00",
            "o-east",
            2_000,
            "USD",
        ),
    ]);
    pipeline.wait_until_caught_up(PATIENCE);
    let (_, view) = pipeline.get("/v1/customers/c-zone");
    assert_eq!(view["first_seen"], "2026-10-31T22:30:00.000Z");
    assert_eq!(view["last_seen"], "2026-11-01T01:30:00.000Z");

    let rfm = |as_of: &str| {
        let (status, scores) = pipeline.get(&format!("/v1/customers/c-zone/scores?as_of={as_of}"));
        assert_eq!(status, 200, "{scores}");
        scores["rfm"].clone()
    };
    // Only the eastern order lies on 31 October in UTC.
    let on_the_31st = rfm("2026-10-31");
    assert_eq!(on_the_31st["frequency"], 1, "{on_the_31st}");
    assert_eq!(on_the_31st["monetary_minor"], 2_000);
    let on_the_1st = rfm("2026-11-01");
    assert_eq!(on_the_1st["monetary_minor"], 3_000, "{on_the_1st}");
    // An as_of instant is cut to its UTC day: 01:00 at +08:00 is 17:00 on
    // the 31st in UTC, and 23:00 at −05:00 on the 31st is the 1st.
    assert_eq!(rfm("2026-11-01T01:00:00%2B08:00")["monetary_minor"], 2_000);
    assert_eq!(rfm("2026-10-31T23:00:00-05:00")["monetary_minor"], 3_000);
}

#[test]
fn a_snapshot_until_a_time_in_another_zone_ends_at_the_same_instant() {
    let pipeline = Pipeline::start("until-zone");
    pipeline.send_ok(&[order(
        "c-until",
        "2026-11-01T10:00:00Z",
        "o-1",
        1_000,
        "USD",
    )]);
    pipeline.wait_until_caught_up(PATIENCE);
    std::thread::sleep(Duration::from_millis(1_500));
    // The same instant as the UTC clock reads it, written at +08:00.
    let now_ms = rapport_common::now_ms();
    let utc = rapport_projections::time::format_rfc3339(now_ms + 8 * 3_600_000);
    let until = format!("{}+08:00", utc.trim_end_matches('Z'));
    std::thread::sleep(Duration::from_millis(1_500));
    pipeline.send_ok(&[order(
        "c-until",
        "2026-11-01T11:00:00Z",
        "o-2",
        2_000,
        "USD",
    )]);
    pipeline.wait_until_caught_up(PATIENCE);

    let built = pipeline.rapportctl(&[
        "replay",
        "customer_view",
        "--version",
        "snap",
        "--until",
        &format!("time:{until}"),
    ]);
    assert!(built.contains("version snap reached its end"), "{built}");
    let (status, snapshot) = pipeline.get("/v1/customers/c-until?version=snap");
    assert_eq!(status, 200, "{snapshot}");
    assert_eq!(
        snapshot["orders"]["count"], 1,
        "only the order received before {until}"
    );
    let (_, live) = pipeline.get("/v1/customers/c-until");
    assert_eq!(live["orders"]["count"], 2);
}

#[test]
fn a_far_future_update_wins_until_its_time_has_come() {
    let pipeline = Pipeline::start("future");
    let update = |at: &str, city: &str| {
        event(
            "customer.updated",
            at,
            json!({"customer_id": "c-future"}),
            json!({"city": city}),
        )
    };
    // A clock set wrong by decades is still a valid instant; the later
    // occurred_at wins last-writer-wins, whatever arrived last.
    pipeline.send_ok(&[update("2099-12-31T00:00:00Z", "Far Future")]);
    pipeline.send_ok(&[update("2026-11-01T10:00:00Z", "Shanghai")]);
    pipeline.wait_until_caught_up(PATIENCE);
    let (_, view) = pipeline.get("/v1/customers/c-future");
    assert_eq!(view["profile"]["city"], "Far Future", "{view}");
    assert_eq!(view["last_seen"], "2099-12-31T00:00:00.000Z");
    // The first instant ingest refuses.
    let (status, answer) = pipeline.send(&[update("2100-01-01T00:00:00Z", "Too Far")]);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["details"][0]["field"], "occurred_at", "{answer}");
}

#[test]
fn amounts_keep_their_currencys_minor_unit_everywhere() {
    // A shop that reports in yen: thresholds and points in yen too.
    let pipeline =
        Pipeline::start_configured("currencies", "[analytics]\nreporting_currency = \"JPY\"\n");
    pipeline.send_ok(&[
        order("c-yen", "2026-09-01T10:00:00Z", "o-yen-1", 12_900, "JPY"),
        order("c-yen", "2026-10-01T10:00:00Z", "o-yen-2", 60_000, "JPY"),
        order("c-dinar", "2026-10-01T10:00:00Z", "o-bhd", 12_345, "BHD"),
    ]);
    pipeline.wait_until_caught_up(PATIENCE);

    let (_, view) = pipeline.get("/v1/customers/c-yen");
    assert_eq!(view["orders"]["net_spend_minor"], json!({"JPY": 72_900}));
    let (_, timeline) = pipeline.get("/v1/customers/c-yen/timeline");
    let summaries: BTreeSet<&str> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["summary"].as_str().unwrap())
        .collect();
    assert_eq!(
        summaries,
        BTreeSet::from([
            "order o-yen-1 placed, 12900 JPY",
            "order o-yen-2 placed, 60000 JPY"
        ])
    );
    let (_, timeline) = pipeline.get("/v1/customers/c-dinar/timeline");
    assert_eq!(
        timeline["items"][0]["summary"],
        "order o-bhd placed, 12.345 BHD"
    );

    let (status, scores) = pipeline.get("/v1/customers/c-yen/scores?as_of=2026-11-01");
    assert_eq!(status, 200, "{scores}");
    assert_eq!(scores["rfm"]["monetary_minor"], 72_900, "{scores}");
    assert_eq!(scores["rfm"]["currency"], "JPY");
    assert_eq!(scores["clv"]["currency"], "JPY");
    // Loyalty counts yen as its minor units: 72 900 reaches Silver (50 000)
    // and earns one point per 100.
    assert_eq!(scores["loyalty"]["rolling_net_spend_minor"], 72_900);
    assert_eq!(scores["loyalty"]["tier"], "Silver");
    assert_eq!(scores["loyalty"]["points"], 129 + 600);
    // Dinars are not the reporting currency: kept apart, never converted.
    let (_, scores) = pipeline.get("/v1/customers/c-dinar/scores?as_of=2026-11-01");
    assert!(scores["rfm"].is_null(), "{scores}");
}

/// Sends `count` page views of `customer` (identifiers), one a second
/// from `start_ms`.
fn history(pipeline: &Pipeline, customer: Value, start_ms: i64, count: usize) {
    let url = format!("{}/v1/events", pipeline.ingest_url());
    let agent = rapport_e2e::http_agent();
    for chunk_start in (0..count).step_by(1_000) {
        let events: Vec<Value> = (chunk_start..(chunk_start + 1_000).min(count))
            .map(|index| {
                let at = rapport_projections::time::format_rfc3339(start_ms + index as i64 * 1_000);
                page_view(&uuid::Uuid::now_v7().to_string(), customer.clone(), &at)
            })
            .collect();
        let mut response = agent
            .post(&url)
            .header(
                "authorization",
                rapport_e2e::bearer(&rapport_e2e::test_keys().write),
            )
            .send_json(json!({ "events": events }))
            .expect("ingest answers");
        let status = response.status().as_u16();
        let answer = response.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 202, "{}", &answer[..answer.len().min(500)]);
    }
}

/// Pages through a customer's whole timeline, newest first, 500 at a time;
/// returns the number of items and the oldest.
fn whole_timeline(pipeline: &Pipeline, customer: &str) -> (usize, Value) {
    let (mut count, mut oldest, mut before) = (0, Value::Null, None::<String>);
    loop {
        let path = match &before {
            Some(cursor) => format!("/v1/customers/{customer}/timeline?limit=500&before={cursor}"),
            None => format!("/v1/customers/{customer}/timeline?limit=500"),
        };
        let (status, page) = pipeline.get(&path);
        assert_eq!(status, 200, "{path}: {page}");
        let items = page["items"].as_array().unwrap();
        count += items.len();
        if let Some(last) = items.last() {
            oldest = last.clone();
        }
        match page["next_before"].as_str() {
            Some(cursor) => before = Some(cursor.to_owned()),
            None => return (count, oldest),
        }
    }
}

#[test]
fn a_customer_with_a_hundred_thousand_events_pages_to_the_first_and_merges_with_a_device() {
    let pipeline = Pipeline::start("big-customer");
    // 2026-01-01T00:00:00Z, then one view a second.
    let start_ms = 1_767_225_600_000;
    history(
        &pipeline,
        json!({"customer_id": "c-big"}),
        start_ms,
        100_000,
    );
    // A device as busy, not known to be theirs yet.
    history(
        &pipeline,
        json!({"anonymous_id": "dev-big"}),
        start_ms + 500,
        100_000,
    );
    pipeline.wait_until_caught_up(Duration::from_secs(300));

    let started = Instant::now();
    let (status, view) = pipeline.get("/v1/customers/c-big");
    println!(
        "GET /v1/customers/c-big with 100 000 events: {:?}",
        started.elapsed()
    );
    assert_eq!(status, 200);
    assert_eq!(view["event_counts"]["web.page_viewed"], 100_000);
    let (count, oldest) = whole_timeline(&pipeline, "c-big");
    assert_eq!(count, 100_000);
    assert_eq!(oldest["occurred_at"], "2026-01-01T00:00:00.000Z");

    // The device turns out to be theirs: both histories become one.
    pipeline.send_ok(&[event(
        "identity.linked",
        "2026-12-01T00:00:00Z",
        json!({"customer_id": "c-big", "anonymous_id": "dev-big"}),
        json!({}),
    )]);
    pipeline.wait_until_caught_up(PATIENCE);
    let started = Instant::now();
    let (status, merged) = pipeline.get("/v1/customers/c-big");
    println!(
        "GET /v1/customers/c-big after the merge: {:?}",
        started.elapsed()
    );
    assert_eq!(status, 200, "{merged}");
    assert_eq!(
        merged["event_counts"]["web.page_viewed"], 200_000,
        "{merged}"
    );
    let started = Instant::now();
    let (count, oldest) = whole_timeline(&pipeline, "c-big");
    println!("the merged timeline, 500 a page: {:?}", started.elapsed());
    assert_eq!(count, 200_000 + 1, "both histories and the link");
    assert_eq!(oldest["occurred_at"], "2026-01-01T00:00:00.000Z");
}
