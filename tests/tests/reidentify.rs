//! `rapportctl reidentify`: identity resolution re-run from the raw topic
//! into a new graph version and customer topic, compared with the live ones.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message as _;
use rapport_e2e::{Pipeline, event, get_json, post_json};
use rapport_proto::v1::{self as proto, customer_record::Body};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);

fn at(minute: u32) -> String {
    format!("2026-11-01T10:{minute:02}:00Z")
}

fn phone(index: usize) -> String {
    format!("+86 138 0000 {index:04}")
}

/// One round of traffic touching every raw partition: visitors and callers
/// become prospects, guests tie an email to a device, registrations merge
/// prospects into customers, links merge a younger prospect into an older
/// one, and customers claiming each other's identifiers record conflicts.
fn round(number: usize) -> Vec<Value> {
    let visit = |who: Value, url: String| {
        event(
            "web.page_viewed",
            &at(number as u32),
            who,
            json!({"url": url}),
        )
    };
    let mut events = Vec::new();
    match number {
        0 => {
            for index in 0..24 {
                events.push(visit(
                    json!({"anonymous_id": format!("anon-{index}")}),
                    format!("/r0/{index}"),
                ));
            }
            for index in 0..8 {
                events.push(event(
                    "call.completed",
                    &at(0),
                    json!({"phone": phone(index)}),
                    json!({"direction": "inbound", "duration_s": 60}),
                ));
            }
        }
        1 => {
            for index in 0..16 {
                events.push(event(
                    "order.placed",
                    &at(1),
                    json!({"email": format!("g{index}@example.com"), "anonymous_id": format!("anon-{index}")}),
                    json!({"order_id": format!("o-{index}"), "total_minor": 1000 + index, "currency": "EUR"}),
                ));
            }
            events.push(event(
                "customer.registered",
                &at(1),
                json!({"customer_id": "c-home-1", "email": "home@example.com"}),
                json!({"name": "First"}),
            ));
        }
        2 => {
            for index in 0..8 {
                events.push(event(
                    "customer.registered",
                    &at(2),
                    json!({"customer_id": format!("c-{index}"), "email": format!("g{index}@example.com")}),
                    json!({"name": format!("Customer {index}")}),
                ));
                events.push(event(
                    "identity.linked",
                    &at(2),
                    json!({"anonymous_id": format!("anon-{}", 16 + index), "phone": phone(index)}),
                    json!({}),
                ));
            }
        }
        _ => {
            // A household sharing an email, and customers claiming others' emails.
            events.push(event(
                "customer.registered",
                &at(3),
                json!({"customer_id": "c-home-2", "email": "home@example.com"}),
                json!({"name": "Second"}),
            ));
            for index in 0..4 {
                events.push(event(
                    "customer.updated",
                    &at(3),
                    json!({"customer_id": format!("c-{index}"), "email": format!("g{}@example.com", index + 4)}),
                    json!({}),
                ));
            }
            for index in 0..24 {
                events.push(visit(
                    json!({"anonymous_id": format!("anon-{index}"), "customer_id": format!("c-{}", index % 8)}),
                    format!("/r{number}/{index}"),
                ));
            }
        }
    }
    events
}

/// A record as the comparison sees it: key, payload, timestamp.
type Record = (Vec<u8>, Vec<u8>, i64);

/// Every record of a customer topic per partition, in offset order.
fn customer_records(topic: &str) -> BTreeMap<i32, Vec<Record>> {
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for record in rapport_common::read_all::read_to_end(&rapport_e2e::kafka(), topic, PATIENCE)
        .expect("read the topic")
    {
        by_partition.entry(record.partition).or_default().push((
            record.key,
            record.payload,
            record.timestamp_ms,
        ));
    }
    by_partition
}

/// The lines of a comparison that carry the two checksums.
fn checksum_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|line| line.contains("checksum"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_reidentified_graph_and_customer_topic_equal_the_live_ones_while_traffic_goes_on() {
    let mut pipeline = Pipeline::start("reidentify");
    for number in 0..4 {
        pipeline.send_ok(&round(number));
    }
    pipeline.wait_until_caught_up(PATIENCE);

    // Live traffic keeps arriving while the version is built: more visits,
    // merges and conflicts after the bounds it takes.
    let ingest = format!("{}/v1/events", pipeline.ingest_url());
    let traffic = std::thread::spawn(move || {
        for number in 4..10 {
            let mut events = round(number);
            events.push(event(
                "customer.registered",
                &at(number as u32),
                json!({"customer_id": format!("c-late-{number}"), "email": format!("g{}@example.com", 8 + number)}),
                json!({}),
            ));
            let (status, answer) = post_json(&ingest, &json!({ "events": events }));
            assert_eq!(status, 202, "{answer}");
            std::thread::sleep(Duration::from_millis(150));
        }
    });

    let (succeeded, output) = pipeline.try_rapportctl(&["reidentify", "--version", "r2"]);
    traffic.join().expect("the traffic thread");
    assert!(
        succeeded && output.lines().any(|line| line == "equal"),
        "{output}\nidentity log:\n{}",
        pipeline.log("identity.log")
    );
    let first_checksums = checksum_lines(&output);
    assert_eq!(first_checksums.len(), 2, "{output}");

    // The version's customer topic holds exactly the live records of the raw
    // records within its bounds, partition by partition, in the same order.
    let (status, version) = get_json(&format!("{}/v1/admin/versions/r2", pipeline.identity_url()));
    assert_eq!(status, 200, "{version}");
    assert_eq!(version["state"], "finished");
    let bounds: BTreeMap<i32, i64> = version["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|partition| {
            Some((
                partition["partition"].as_i64()? as i32,
                partition["bound"].as_i64()?,
            ))
        })
        .collect();
    // Everything sent before the run is within the bounds (the live graph
    // had resolved it), over several raw partitions.
    let total: i64 = bounds.values().map(|bound| bound + 1).sum();
    let sent_before: usize = (0..4).map(|number| round(number).len()).sum();
    assert!(
        bounds.len() > 1 && total >= sent_before as i64,
        "{total} raw records within the bounds, {sent_before} sent before: {version}"
    );
    pipeline.wait_until_caught_up(PATIENCE);
    let live = customer_records(&pipeline.topics.customer);
    let reidentified = customer_records(version["topic"].as_str().unwrap());
    let mut bodies: BTreeMap<&str, usize> = BTreeMap::new();
    let mut beyond_bounds = 0;
    for (partition, records) in &live {
        let within: Vec<&Record> = records
            .iter()
            .filter(|(_, payload, _)| {
                let record =
                    proto::CustomerRecord::decode(payload.as_slice()).expect("a customer record");
                let source = record.source.expect("a source position");
                let inside = bounds
                    .get(&source.raw_partition)
                    .is_some_and(|bound| source.raw_offset <= *bound);
                if inside {
                    *bodies
                        .entry(match record.body {
                            Some(Body::Event(_)) => "event",
                            Some(Body::Merged(_)) => "merged",
                            Some(Body::MergedAway(_)) => "merged_away",
                            Some(Body::Conflict(_)) => "conflict",
                            None => "none",
                        })
                        .or_default() += 1;
                } else {
                    beyond_bounds += 1;
                }
                inside
            })
            .collect();
        let version_records: Vec<&Record> =
            reidentified.get(partition).into_iter().flatten().collect();
        assert_eq!(
            within.len(),
            version_records.len(),
            "customer partition {partition}: records of the live topic within the bounds vs the version"
        );
        assert!(
            within == version_records,
            "customer partition {partition} differs between the live topic and the version"
        );
    }
    assert_eq!(
        reidentified
            .keys()
            .filter(|partition| !live.contains_key(partition))
            .count(),
        0,
        "the version has no partition the live topic lacks"
    );
    assert!(
        bodies.get("merged").copied().unwrap_or(0) >= 8
            && bodies.get("conflict").copied().unwrap_or(0) >= 2,
        "the traffic exercised merges and conflicts: {bodies:?}"
    );
    assert!(
        beyond_bounds > 0,
        "live traffic went on past the bounds during the run"
    );

    // The version, its baseline and its state survive a crash of identity,
    // and comparing again gives the same checksums.
    pipeline.identity.restart();
    // The version's worker reports its partitions once it has read its
    // stored offsets, a moment after the service answers.
    rapport_e2e::wait_for("status to list the version again", PATIENCE, || {
        pipeline
            .rapportctl(&["status"])
            .lines()
            .any(|line| line.contains("identity") && line.contains("r2"))
    });
    let again = pipeline.rapportctl(&["reidentify", "--compare", "r2"]);
    assert_eq!(checksum_lines(&again), first_checksums, "{again}");

    // Refusals create nothing.
    let (succeeded, message) = pipeline.try_rapportctl(&["reidentify", "--version", "r2"]);
    assert!(
        !succeeded && message.contains("already exists"),
        "{message}"
    );
    let (succeeded, message) = pipeline.try_rapportctl(&["reidentify", "--version", "no good"]);
    assert!(
        !succeeded && message.contains("letters, digits"),
        "{message}"
    );
    let (_, listing) = get_json(&format!("{}/v1/admin/versions", pipeline.identity_url()));
    assert_eq!(
        listing["versions"].as_array().map(Vec::len),
        Some(1),
        "{listing}"
    );

    // Dropping removes the graph, baseline and topic, so the name can be
    // used again: a second version, bounded by the live offsets now (after
    // the extra traffic), compares equal too.
    let dropped = pipeline.rapportctl(&["reidentify", "--drop", "r2"]);
    assert!(
        dropped.contains("dropped") && dropped.contains("deleted"),
        "{dropped}"
    );
    let (_, listing) = get_json(&format!("{}/v1/admin/versions", pipeline.identity_url()));
    assert_eq!(listing["versions"], json!([]), "{listing}");
    let started = pipeline.rapportctl(&["reidentify", "--version", "r2", "--no-wait"]);
    assert!(
        started.contains("re-identifying into version r2"),
        "{started}"
    );
    let compared = pipeline.rapportctl(&["reidentify", "--compare", "r2"]);
    assert!(compared.lines().any(|line| line == "equal"), "{compared}");
    assert_ne!(
        checksum_lines(&compared),
        first_checksums,
        "the second version saw more of the log"
    );
}

#[test]
fn a_projection_rebuilt_from_a_reidentified_topic_equals_the_live_one_and_can_go_live() {
    let pipeline = Pipeline::start("reidentify-view");
    for number in 0..4 {
        pipeline.send_ok(&round(number));
    }
    pipeline.wait_until_caught_up(PATIENCE);
    let (succeeded, output) = pipeline.try_rapportctl(&["reidentify", "--version", "r2"]);
    assert!(
        succeeded && output.lines().any(|line| line == "equal"),
        "{output}"
    );
    let topic = format!("{}.r2", pipeline.topics.customer);

    // Refusals, each before anything is created.
    let refusals: [(&[&str], &str); 2] = [
        (
            &[
                "replay",
                "customer_view",
                "--version",
                "g2",
                "--identity-version",
                "nope",
            ],
            "graph version nope",
        ),
        (
            &[
                "replay",
                "customer_view",
                "--version",
                "g2",
                "--identity-version",
                "r2",
                "--switch",
            ],
            "cannot be used with",
        ),
    ];
    for (args, expected) in refusals {
        let (succeeded, message) = pipeline.try_rapportctl(args);
        assert!(
            !succeeded && message.contains(expected),
            "{args:?}: {message}"
        );
    }
    let (status, answer) = post_json(
        &format!("{}/v1/admin/replays", pipeline.query_url()),
        &json!({"projection": "customer_view", "version": "g2", "source_topic": "test.no.such.topic"}),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("does not exist"), "{answer}");
    let (_, versions) = pipeline.get("/v1/admin/versions");
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(1),
        "{versions}"
    );

    // Built from the re-identified topic beside the live version, equal to it.
    let replayed = pipeline.rapportctl(&[
        "replay",
        "customer_view",
        "--version",
        "g2",
        "--identity-version",
        "r2",
    ]);
    assert!(
        replayed.contains(&format!("from {topic}")) && replayed.contains("caught up"),
        "{replayed}"
    );
    let verified = pipeline.rapportctl(&["verify", "customer_view", "--other", "g2"]);
    assert!(
        verified.contains("identical") && verified.contains(&topic),
        "{verified}"
    );
    for customer in ["c-0", "c-3", "c-home-1"] {
        assert_eq!(
            pipeline.get(&format!("/v1/customers/{customer}?version=g2")),
            pipeline.get(&format!("/v1/customers/{customer}")),
        );
    }

    // Going live takes saying that it keeps reading its own topic.
    let (succeeded, message) = pipeline.try_rapportctl(&["switch", "g2"]);
    assert!(
        !succeeded && message.contains("--follow-other-topic") && message.contains(&topic),
        "{message}"
    );
    let switched = pipeline.rapportctl(&["switch", "g2", "--follow-other-topic"]);
    assert!(switched.contains(&format!("reading {topic}")), "{switched}");
    // New traffic reaches the live customer topic, which g2 does not read.
    pipeline.send_ok(&[event(
        "customer.registered",
        &at(5),
        json!({"customer_id": "c-after"}),
        json!({}),
    )]);
    pipeline.wait_for_json("/v1/customers/c-after?version=v1", PATIENCE, |_| true);
    assert_eq!(pipeline.get("/v1/customers/c-after").0, 404);
    let switched = pipeline.rapportctl(&["switch", "v1"]);
    assert!(
        switched.contains(&format!("reading {}", pipeline.topics.customer)),
        "{switched}"
    );
    assert_eq!(pipeline.get("/v1/customers/c-after").0, 200);
}
