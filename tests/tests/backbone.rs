//! The event backbone end to end: HTTP → ingest → raw topic → identity →
//! customer topic → projector → query API, on the real broker.

use std::time::Duration;

use prost::Message as _;
use rapport_e2e::{Pipeline, event, read_all};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);

fn at(minute: u32) -> String {
    format!("2026-11-01T10:{minute:02}:00Z")
}

#[test]
fn events_of_every_type_appear_in_the_customer_view() {
    let pipeline = Pipeline::start("every-type");
    let who = json!({"customer_id": "c-every", "email": "Every@Example.com"});
    let events = vec![
        event(
            "customer.registered",
            &at(0),
            who.clone(),
            json!({"name": "Eve Ry", "city": "Hangzhou", "attributes": {"tier": "gold"}}),
        ),
        event(
            "customer.updated",
            &at(1),
            who.clone(),
            json!({"city": "Shanghai"}),
        ),
        event(
            "identity.linked",
            &at(2),
            json!({"customer_id": "c-every", "anonymous_id": "anon-every"}),
            json!({}),
        ),
        event(
            "web.page_viewed",
            &at(3),
            json!({"anonymous_id": "anon-every"}),
            json!({"url": "/tea", "duration_ms": 1200}),
        ),
        event(
            "email.sent",
            &at(4),
            who.clone(),
            json!({"message_id": "m-1", "campaign_id": "autumn"}),
        ),
        event(
            "email.opened",
            &at(5),
            who.clone(),
            json!({"message_id": "m-1"}),
        ),
        event(
            "email.clicked",
            &at(6),
            who.clone(),
            json!({"message_id": "m-1", "url": "/sale"}),
        ),
        event(
            "email.bounced",
            &at(7),
            who.clone(),
            json!({"message_id": "m-2"}),
        ),
        event(
            "call.completed",
            &at(8),
            who.clone(),
            json!({"direction": "inbound", "duration_s": 300, "outcome": "solved"}),
        ),
        event(
            "order.placed",
            &at(9),
            who.clone(),
            json!({"order_id": "o-1", "total_minor": 12900, "currency": "CNY", "items": [{"sku": "tea-1", "quantity": 2, "unit_price_minor": 6450}]}),
        ),
        event(
            "order.placed",
            &at(10),
            who.clone(),
            json!({"order_id": "o-2", "total_minor": 5000, "currency": "CNY"}),
        ),
        event(
            "order.placed",
            &at(11),
            who.clone(),
            json!({"order_id": "o-3", "total_minor": 999, "currency": "USD"}),
        ),
        event(
            "order.cancelled",
            &at(12),
            who.clone(),
            json!({"order_id": "o-2"}),
        ),
        event(
            "order.refunded",
            &at(13),
            who.clone(),
            json!({"order_id": "o-1", "amount_minor": 900}),
        ),
        event(
            "ticket.opened",
            &at(14),
            who.clone(),
            json!({"ticket_id": "t-1", "category": "complaint", "subject": "late"}),
        ),
        event(
            "ticket.opened",
            &at(15),
            who.clone(),
            json!({"ticket_id": "t-2", "category": "inquiry"}),
        ),
        event(
            "ticket.resolved",
            &at(16),
            who.clone(),
            json!({"ticket_id": "t-2"}),
        ),
        event(
            "survey.answered",
            &at(17),
            who.clone(),
            json!({"survey_id": "s-1", "nps": 9, "csat": 4}),
        ),
        event(
            "survey.answered",
            &at(18),
            who.clone(),
            json!({"survey_id": "s-2", "nps": 6, "csat": 5}),
        ),
        event(
            "consent.changed",
            &at(19),
            who.clone(),
            json!({"channel": "email", "granted": false}),
        ),
        event(
            "points.redeemed",
            &at(20),
            who.clone(),
            json!({"points": 150, "reason": "voucher"}),
        ),
        event(
            "custom.tracked",
            &at(21),
            who.clone(),
            json!({"name": "Wishlist Added", "properties": {"sku": "tea-1", "note": "for Eve"}}),
        ),
    ];
    pipeline.send_ok(&events);

    let view = pipeline.wait_for_json("/v1/customers/c-every", PATIENCE, |view| {
        view["event_counts"].as_object().map(|counts| {
            counts
                .values()
                .map(|count| count.as_u64().unwrap())
                .sum::<u64>()
        }) == Some(events.len() as u64)
    });
    assert_eq!(view["profile"]["name"], "Eve Ry");
    assert_eq!(view["profile"]["city"], "Shanghai", "the later update wins");
    assert_eq!(view["attributes"]["tier"], "gold");
    assert_eq!(view["orders"]["count"], 2);
    assert_eq!(view["orders"]["cancelled"], 1);
    assert_eq!(
        view["orders"]["net_spend_minor"],
        json!({"CNY": 12900 - 900, "USD": 999})
    );
    assert_eq!(view["orders"]["first_order_at"], "2026-11-01T10:09:00.000Z");
    assert_eq!(view["orders"]["last_order_at"], "2026-11-01T10:11:00.000Z");
    assert_eq!(
        view["tickets"],
        json!({"open": 1, "open_complaints": 1, "total": 2, "complaints": 1})
    );
    assert_eq!(view["last_nps"], 6);
    assert_eq!(view["average_csat"], 4.5);
    assert_eq!(view["consent"], json!({"email": false}));
    assert_eq!(view["points_redeemed"], 150);
    assert_eq!(view["channels"]["email"]["count"], 4);
    assert_eq!(view["channels"]["phone"]["count"], 1);
    assert_eq!(view["event_counts"]["order.placed"], 3);
    assert_eq!(view["first_seen"], "2026-11-01T10:00:00.000Z");
    assert_eq!(view["last_seen"], "2026-11-01T10:21:00.000Z");
    assert_eq!(view["identifiers"]["email"], json!(["every@example.com"]));

    let (status, timeline) = pipeline.get("/v1/customers/c-every/timeline?limit=5");
    assert_eq!(status, 200);
    assert_eq!(timeline["items"].as_array().unwrap().len(), 5);
    // Anything else the shop tracks is on the timeline, its properties
    // (sealed on the log) shown in clear.
    assert_eq!(timeline["items"][0]["type"], "custom.tracked");
    assert_eq!(
        timeline["items"][0]["summary"],
        "Wishlist Added (note: for Eve, sku: tea-1)"
    );
    assert_eq!(view["event_counts"]["custom.tracked"], 1);
    assert_eq!(timeline["items"][1]["type"], "points.redeemed");
    // Page after page, five at a time, back to the first event: every
    // event once, newest first.
    let mut types: Vec<Value> = Vec::new();
    let mut page = timeline;
    loop {
        types.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["type"].clone()),
        );
        let Some(cursor) = page["next_before"].as_str() else {
            break;
        };
        let (status, next) = pipeline.get(&format!(
            "/v1/customers/c-every/timeline?limit=5&before={cursor}"
        ));
        assert_eq!(status, 200, "{next}");
        page = next;
    }
    let sent: Vec<Value> = events
        .iter()
        .rev()
        .map(|event| event["type"].clone())
        .collect();
    assert_eq!(types, sent);
}

#[test]
fn a_guest_a_visitor_and_a_registration_become_one_customer() {
    let pipeline = Pipeline::start("guest-merge");
    // A guest checkout by email, then browsing on a device, each a prospect.
    pipeline.send_ok(&[event(
        "order.placed",
        &at(0),
        json!({"email": "guest@example.com"}),
        json!({"order_id": "g-1", "total_minor": 2500, "currency": "EUR"}),
    )]);
    pipeline.send_ok(&[
        event(
            "web.page_viewed",
            &at(1),
            json!({"anonymous_id": "device-42"}),
            json!({"url": "/a"}),
        ),
        event(
            "web.page_viewed",
            &at(2),
            json!({"anonymous_id": "device-42"}),
            json!({"url": "/b"}),
        ),
    ]);
    pipeline.wait_for_json("/v1/customers?anonymous_id=device-42", PATIENCE, |view| {
        view["event_counts"]["web.page_viewed"] == 2
    });
    let guest = pipeline.wait_for_json("/v1/customers?email=guest@example.com", PATIENCE, |_| true);
    assert!(
        guest["customer_id"]
            .as_str()
            .unwrap()
            .starts_with("prospect-")
    );

    // Registration ties both to a known customer.
    pipeline.send_ok(&[event(
        "customer.registered",
        &at(3),
        json!({"customer_id": "c-guest", "email": " Guest@Example.com", "anonymous_id": "device-42"}),
        json!({"name": "Gus"}),
    )]);
    let customer = pipeline.wait_for_json("/v1/customers/c-guest", PATIENCE, |view| {
        view["merged_ids"]
            .as_array()
            .is_some_and(|ids| ids.len() == 2)
    });
    assert_eq!(customer["orders"]["count"], 1);
    assert_eq!(customer["orders"]["net_spend_minor"]["EUR"], 2500);
    assert_eq!(customer["event_counts"]["web.page_viewed"], 2);
    assert_eq!(customer["event_counts"]["customer.registered"], 1);
    assert_eq!(customer["known"], true);
    // The survivor's partition may apply the merge before the absorbed
    // profiles' partitions do (services/ARCHITECTURE.md): lookups through
    // the old identifiers converge on the customer once those catch up.
    for lookup in [
        "/v1/customers?email=GUEST@example.com",
        "/v1/customers?anonymous_id=device-42",
        "/v1/customers?customer_id=c-guest",
        &format!("/v1/customers/{}", guest["customer_id"].as_str().unwrap()),
    ] {
        let found =
            pipeline.wait_for_json(lookup, PATIENCE, |found| found["customer_id"] == "c-guest");
        assert_eq!(
            found["merged_ids"].as_array().map(Vec::len),
            Some(2),
            "{lookup}"
        );
    }
    let (_, timeline) = pipeline.get("/v1/customers/c-guest/timeline");
    assert_eq!(
        timeline["items"].as_array().unwrap().len(),
        4,
        "all history, from both prospects"
    );

    // Later events by the old identifiers land on the customer directly.
    pipeline.send_ok(&[event(
        "web.page_viewed",
        &at(4),
        json!({"anonymous_id": "device-42"}),
        json!({"url": "/c"}),
    )]);
    pipeline.wait_for_json("/v1/customers/c-guest", PATIENCE, |view| {
        view["event_counts"]["web.page_viewed"] == 3
    });
}

#[test]
fn two_known_customers_sharing_an_email_are_not_merged() {
    let pipeline = Pipeline::start("conflict");
    pipeline.send_ok(&[event(
        "customer.registered",
        &at(0),
        json!({"customer_id": "c-first", "email": "family@example.com"}),
        json!({"name": "First"}),
    )]);
    pipeline.wait_for_json("/v1/customers/c-first", PATIENCE, |_| true);
    pipeline.send_ok(&[event(
        "customer.registered",
        &at(1),
        json!({"customer_id": "c-second", "email": "family@example.com"}),
        json!({"name": "Second"}),
    )]);
    let conflicts = pipeline.wait_for_json("/v1/identity/conflicts", PATIENCE, |body| {
        !body["conflicts"].as_array().unwrap().is_empty()
    });
    assert_eq!(
        conflicts["conflicts"][0]["identifier"],
        "email:family@example.com"
    );
    assert_eq!(conflicts["conflicts"][0]["owner"], "c-first");
    assert_eq!(conflicts["conflicts"][0]["claimant"], "c-second");

    let second = pipeline.wait_for_json("/v1/customers/c-second", PATIENCE, |_| true);
    assert_eq!(second["merged_ids"], json!([]));
    assert_eq!(second["profile"]["name"], "Second");
    let (_, first) = pipeline.get("/v1/customers/c-first");
    assert_eq!(first["merged_ids"], json!([]));
    assert_eq!(first["profile"]["name"], "First");
    let (_, by_email) = pipeline.get("/v1/customers?email=family@example.com");
    assert_eq!(
        by_email["customer_id"], "c-first",
        "the email stays with its first owner"
    );
}

#[test]
fn the_same_batch_sent_twice_counts_once() {
    let pipeline = Pipeline::start("idempotent");
    let batch: Vec<Value> = (0..50)
        .map(|index| {
            event(
                "order.placed",
                &at(index % 60),
                json!({"customer_id": format!("c-twice-{}", index % 5)}),
                json!({"order_id": format!("o-{index}"), "total_minor": 100, "currency": "USD"}),
            )
        })
        .collect();
    pipeline.send_ok(&batch);
    pipeline.send_ok(&batch);
    // A marker sent after both copies: once it is visible, both copies were processed.
    pipeline.send_ok(&[event(
        "web.page_viewed",
        &at(59),
        json!({"customer_id": "c-twice-0"}),
        json!({"url": "/marker"}),
    )]);
    pipeline.wait_for_json("/v1/customers/c-twice-0", PATIENCE, |view| {
        view["event_counts"]["web.page_viewed"] == 1
    });
    pipeline.wait_until_caught_up(PATIENCE);
    for customer in 0..5 {
        let (_, view) = pipeline.get(&format!("/v1/customers/c-twice-{customer}"));
        assert_eq!(view["orders"]["count"], 10, "c-twice-{customer}");
        assert_eq!(view["event_counts"]["order.placed"], 10);
        assert_eq!(view["orders"]["net_spend_minor"]["USD"], 1000);
    }
    assert_eq!(
        rapport_e2e::metric_sum(
            &pipeline.identity.metrics(),
            "rapport_identity_events_total",
            "outcome=\"duplicate\""
        ),
        50
    );
}

#[test]
fn a_batch_with_one_bad_event_is_refused_whole() {
    let pipeline = Pipeline::start("bad-batch");
    let good = event(
        "web.page_viewed",
        &at(0),
        json!({"customer_id": "c-never-1"}),
        json!({"url": "/"}),
    );
    let bad = event(
        "order.placed",
        &at(1),
        json!({"customer_id": "c-never-2"}),
        json!({"order_id": "o-1", "total_minor": -5, "currency": "usd"}),
    );
    let also_good = event(
        "email.sent",
        &at(2),
        json!({"email": "never@example.com"}),
        json!({"message_id": "m-1"}),
    );
    let (status, answer) = pipeline.send(&[good.clone(), bad, also_good.clone()]);
    assert_eq!(status, 400, "{answer}");
    let details = answer["details"].as_array().unwrap();
    assert!(
        details.iter().all(|detail| detail["index"] == 1),
        "{answer}"
    );
    let fields: Vec<&str> = details
        .iter()
        .map(|detail| detail["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"data.total_minor") && fields.contains(&"data.currency"),
        "{answer}"
    );

    // A later good event is processed; the refused batch left nothing behind.
    pipeline.send_ok(&[event(
        "web.page_viewed",
        &at(3),
        json!({"customer_id": "c-after"}),
        json!({"url": "/"}),
    )]);
    pipeline.wait_for_json("/v1/customers/c-after", PATIENCE, |_| true);
    pipeline.wait_until_caught_up(PATIENCE);
    for id in ["c-never-1", "c-never-2"] {
        assert_eq!(pipeline.get(&format!("/v1/customers/{id}")).0, 404, "{id}");
    }
    assert_eq!(pipeline.get("/v1/customers?email=never@example.com").0, 404);
    let refused: Vec<&str> = [&good, &also_good]
        .iter()
        .map(|event| event["event_id"].as_str().unwrap())
        .collect();
    let raw = read_all(&pipeline.topics.raw);
    assert_eq!(
        raw.len(),
        1,
        "only the later good event is on the raw topic"
    );
    for payload in raw {
        let event = rapport_proto::v1::Event::decode(payload.as_slice()).unwrap();
        assert!(!refused.contains(&event.event_id.as_str()));
    }
}

/// A deterministic stream of storefront traffic touching merges, conflicts
/// and every kind of fact, in batches.
fn traffic(batches: usize, per_batch: usize) -> Vec<Vec<Value>> {
    let mut all = Vec::new();
    let mut counter = 0u64;
    for _ in 0..batches {
        let mut events = Vec::new();
        for _ in 0..per_batch {
            counter += 1;
            let person = counter % 97;
            let minute = (counter % 60) as u32;
            let when = format!("2026-10-{:02}T09:{minute:02}:00Z", 1 + (counter / 60) % 28);
            let event = match counter % 7 {
                0 => event(
                    "customer.registered",
                    &when,
                    json!({"customer_id": format!("c-{person}"), "email": format!("p{person}@example.com"), "anonymous_id": format!("dev-{person}")}),
                    json!({"name": format!("Person {person}")}),
                ),
                1 | 2 => event(
                    "web.page_viewed",
                    &when,
                    json!({"anonymous_id": format!("dev-{person}")}),
                    json!({"url": format!("/p/{counter}")}),
                ),
                3 => event(
                    "order.placed",
                    &when,
                    json!({"email": format!("p{person}@example.com")}),
                    json!({"order_id": format!("o-{counter}"), "total_minor": 100 + counter % 900, "currency": "USD"}),
                ),
                4 => event(
                    "email.opened",
                    &when,
                    json!({"email": format!("p{person}@example.com")}),
                    json!({"message_id": format!("m-{counter}")}),
                ),
                5 => event(
                    "survey.answered",
                    &when,
                    json!({"customer_id": format!("c-{person}")}),
                    json!({"survey_id": format!("s-{counter}"), "nps": counter % 11, "csat": 1 + counter % 5}),
                ),
                _ => event(
                    "ticket.opened",
                    &when,
                    json!({"phone": format!("+1 555 {:04}", person)}),
                    json!({"ticket_id": format!("t-{counter}"), "category": "complaint"}),
                ),
            };
            events.push(event);
        }
        all.push(events);
    }
    all
}

#[test]
fn a_projector_far_behind_catches_up_then_hands_over_losing_nothing() {
    let pipeline = Pipeline::start("catch-up");
    // A backlog for a fresh projector to catch up with…
    for batch in traffic(20, 100) {
        pipeline.send_ok(&batch);
    }
    pipeline.wait_until_caught_up(PATIENCE);
    let backlog = rapport_e2e::high_watermarks(&pipeline.topics.customer);
    let late = Pipeline::start_projector_only(&pipeline, "projector-late");
    let catching_up = |late: &rapport_e2e::Service| {
        rapport_e2e::metric_sum(
            &late.metrics(),
            "rapport_projector_catching_up",
            "customer_view.v1",
        )
    };
    // …more arriving while it reads with short fetch waits…
    let url = pipeline.ingest_url();
    let sender = std::thread::spawn(move || {
        for batch in traffic(10, 100) {
            let (status, answer) =
                rapport_e2e::post_json(&format!("{url}/v1/events"), &json!({ "events": batch }));
            assert_eq!(status, 202, "{answer}");
        }
    });
    // …and after it reached the end and handed its partitions to the
    // consumer that waits longer, which must go on where the other stopped.
    rapport_e2e::wait_for("the late projector to reach the end", PATIENCE, || {
        rapport_e2e::applied_through(&late, rapport_e2e::FIRST_LIVE_PROJECTION, &backlog)
            && catching_up(&late) == 0
    });
    sender.join().expect("the sender");
    for batch in traffic(10, 100) {
        pipeline.send_ok(&batch);
    }
    pipeline.wait_until_caught_up(PATIENCE);
    let ends = rapport_e2e::high_watermarks(&pipeline.topics.customer);
    rapport_e2e::wait_for("the late projector to apply the rest", PATIENCE, || {
        rapport_e2e::applied_through(&late, rapport_e2e::FIRST_LIVE_PROJECTION, &ends)
    });
    assert_eq!(catching_up(&late), 0, "the steady consumer kept reading");
    // The status takes the log's end from the consumer that reads now,
    // not from the one that handed over (it would report the ends it saw
    // then), including after both sent their statistics again.
    let log_ends = || -> std::collections::BTreeMap<i32, i64> {
        let (code, status) =
            rapport_e2e::get_json(&format!("http://127.0.0.1:{}/v1/admin/status", late.port));
        assert_eq!(code, 200, "{status}");
        status["projections"][0]["consumer"]["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .filter_map(|partition| {
                Some((
                    partition["partition"].as_i64()? as i32,
                    partition["log_end"].as_i64()?,
                ))
            })
            .collect()
    };
    rapport_e2e::wait_for("the status to see the log's end", PATIENCE, || {
        log_ends() == ends
    });
    std::thread::sleep(
        2 * Duration::from_millis(rapport_common::kafka::STATISTICS_INTERVAL_MS as u64),
    );
    assert_eq!(log_ends(), ends, "the log's end as the status reports it");
    let log = std::fs::read_to_string(pipeline.dir.path().join("projector-late.log"))
        .expect("the late projector's log");
    assert_eq!(
        log.matches("caught up with the customer topic").count(),
        1,
        "one handover:\n{log}"
    );

    // Every record applied once, none lost at the handover: the same state
    // as the projector that read along from the start.
    let mut late = late;
    late.stop();
    let mut pipeline = pipeline;
    pipeline.projector.stop();
    rapport_e2e::assert_same_projection(
        &pipeline.dir.path().join("projector"),
        &pipeline.dir.path().join("projector-late"),
        1000,
    );
}

#[test]
fn kill_dash_nine_mid_stream_changes_nothing() {
    // Pipeline A runs undisturbed; pipeline B reads the same raw topic into
    // its own customer topic while its identity and projector are killed
    // with SIGKILL in turn, each at a point of the stream it is applying.
    let mut steady = Pipeline::start("kill9");
    let crash_topics = steady.topics.with_customer_topic("crashy");
    rapport_e2e::create_topics(&[(&crash_topics.customer, 4, rapport_e2e::Role::Customer)]);
    let mut crashy = Pipeline::start_beside(&steady, crash_topics);
    // Small memtables: both stores flush many times over the stream, so
    // the projector restarts from a state flushed part-way.
    for service in [&mut crashy.identity, &mut crashy.projector] {
        service.add_args(&["--memtable-bytes", "65536"]);
        service.restart();
    }

    let batches = traffic(200, 100);
    let total: i64 = batches.iter().map(|batch| batch.len() as i64).sum();
    // Sent at a steady pace, so that the kills below fall while both
    // services are applying the stream, not after it.
    let sender =
        rapport_e2e::send_in_background(&steady.ingest_url(), batches, Duration::from_millis(100));
    // Sixteen kills at even points of the stream, identity and projector in
    // turn; each customer record comes from one raw event.
    let live = rapport_e2e::FIRST_LIVE_PROJECTION;
    let (mut identity_kills, mut projector_kills) = (Vec::new(), Vec::new());
    for kill in 1..=16 {
        let target = total * kill / 17;
        let outcome = if kill % 2 == 0 {
            rapport_e2e::kill_identity_when_committed(&mut crashy.identity, target, total)
        } else {
            rapport_e2e::kill_projector_when_committed(&mut crashy.projector, live, target, total)
        };
        let who = if kill % 2 == 0 {
            "identity"
        } else {
            "projector"
        };
        println!("kill {kill} ({who}): {outcome:?}");
        if kill % 2 == 0 {
            identity_kills.push(outcome);
        } else {
            projector_kills.push(outcome);
        }
    }
    // A state on disk never goes back, and restarts after the first few
    // resume from one flushed part-way rather than from nothing.
    for (who, kills) in [
        ("identity", &identity_kills),
        ("projector", &projector_kills),
    ] {
        for pair in kills.windows(2) {
            assert!(
                pair[1].resumed >= pair[0].resumed,
                "{who}'s state on disk went back: {kills:?}"
            );
        }
        assert!(
            kills.last().is_some_and(|kill| kill.resumed > 0),
            "{who} never resumed from a state flushed part-way: {kills:?}"
        );
    }
    sender.join().expect("the sender");
    steady.wait_until_caught_up(Duration::from_secs(180));
    crashy.wait_until_caught_up(Duration::from_secs(180));

    // Same answers over HTTP…
    for person in [0, 1, 13, 42, 96] {
        let path = format!("/v1/customers/c-{person}");
        assert_eq!(steady.get(&path), crashy.get(&path), "{path}");
    }
    let (_, sample) = steady.get("/v1/customers/c-13");
    assert!(
        sample["orders"]["count"].as_u64().unwrap() > 0,
        "the stream reached the view: {sample}"
    );
    // …and byte-identical state.
    steady.projector.stop();
    crashy.projector.stop();
    steady.identity.stop();
    crashy.identity.stop();
    rapport_e2e::assert_same_projection(
        &steady.dir.path().join("projector"),
        &crashy.dir.path().join("projector"),
        1000,
    );
}

#[test]
fn a_poison_record_goes_to_dead_letters_and_the_stream_goes_on() {
    let pipeline = Pipeline::start("poison");
    pipeline.send_ok(&[event(
        "web.page_viewed",
        &at(0),
        json!({"customer_id": "c-before"}),
        json!({"url": "/"}),
    )]);
    // Bytes that are no protobuf Event, straight onto the raw topic.
    let poison = b"\xff\xff not an event".to_vec();
    rapport_e2e::produce_raw(&pipeline.topics.raw, b"customer_id:c-poison", &poison);
    pipeline.send_ok(&[event(
        "web.page_viewed",
        &at(1),
        json!({"customer_id": "c-after"}),
        json!({"url": "/"}),
    )]);

    pipeline.wait_for_json("/v1/customers/c-after", PATIENCE, |_| true);
    pipeline.wait_for_json("/v1/customers/c-before", PATIENCE, |_| true);
    pipeline.wait_until_caught_up(PATIENCE);
    let letters = read_all(&pipeline.topics.deadletters);
    assert_eq!(
        letters.len(),
        1,
        "exactly the poison record is a dead letter"
    );
    let letter = rapport_proto::v1::DeadLetter::decode(letters[0].as_slice()).unwrap();
    assert_eq!(letter.service, "identity");
    assert_eq!(letter.source_topic, pipeline.topics.raw);
    assert_eq!(letter.payload, poison);
    assert!(
        letter.reason.contains("does not decode"),
        "{}",
        letter.reason
    );
    let metrics = pipeline.identity.metrics();
    assert_eq!(
        rapport_e2e::metric_sum(
            &metrics,
            "rapport_identity_events_total",
            "outcome=\"dead_letter\""
        ),
        1
    );
}

/// Identity's ordered reader stops fetching a partition that runs far ahead
/// of the others and fetches it again later. Resumed inside a producer's
/// record batch, tansu would answer without the rest of that batch; the
/// reader must still deliver every record once, in order. Small limits
/// make it pause and resume dozens of times over three batches.
#[test]
fn the_ordered_reader_loses_nothing_when_it_pauses_a_partition() {
    use rapport_identity::reader::{Buffering, OrderedReader};
    use rdkafka::producer::FutureRecord;

    let topic = format!("test.reader.{}", uuid::Uuid::now_v7().simple());
    rapport_e2e::create_topics(&[(&topic, 2, rapport_e2e::Role::Raw)]);
    let kafka = rapport_e2e::kafka();
    let (producer, _) =
        rapport_common::kafka::producer(&kafka, "rapport-e2e", Some(PATIENCE), 10_000)
            .expect("producer");
    let base_ms = rapport_common::now_ms() - 60_000;
    let send = |partition: i32, offsets: std::ops::Range<i64>, timestamp: &dyn Fn(i64) -> i64| {
        // Sent together and awaited together: one or a few record batches.
        let deliveries: Vec<_> = offsets
            .map(|index| {
                let payload = index.to_string();
                let record = FutureRecord::<(), _>::to(&topic)
                    .partition(partition)
                    .timestamp(timestamp(index))
                    .payload(&payload);
                producer
                    .send_result(record)
                    .map_err(|(error, _)| error)
                    .expect("enqueue")
            })
            .collect();
        for delivery in deliveries {
            rapport_e2e::block_on(delivery)
                .expect("delivered")
                .expect("acknowledged");
        }
    };
    const RECORDS: i64 = 150;
    for batch in 0..3 {
        send(0, batch * 50..(batch + 1) * 50, &|index| base_ms + index);
    }
    // Later than all of partition 0: it waits in its buffer until the end.
    send(1, 0..1, &|_| base_ms + 10_000);

    let (consumer, _) =
        rapport_common::kafka::assigning_consumer(&kafka, "rapport-e2e-reader", true)
            .expect("consumer");
    let mut reader = OrderedReader::new(
        consumer,
        &topic,
        2,
        &[None, None],
        Duration::ZERO,
        None,
        rapport_common::broker::BrokerKind::Tansu,
    )
    .expect("reader")
    .with_buffering(Buffering {
        pause_above: 10,
        resume_below: 5,
        polls_per_fill: 7,
    });
    let mut delivered = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while delivered.len() < RECORDS as usize + 1 && std::time::Instant::now() < deadline {
        // One record per call, fewer than a fill takes: the buffer grows
        // past the pause limit and drains below the resume one, again and
        // again.
        for record in reader.next_batch(1, Duration::from_millis(20)) {
            delivered.push((record.partition, record.offset));
        }
    }
    let expected: Vec<(i32, i64)> = (0..RECORDS)
        .map(|offset| (0, offset))
        .chain([(1, 0)])
        .collect();
    assert_eq!(delivered, expected);
}
