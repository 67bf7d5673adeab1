//! Operating a running pipeline with `rapportctl`: status, dead letters,
//! replays and topics.

use std::time::Duration;

use prost::Message as _;
use rapport_common::broker::BrokerKind;
use rapport_e2e::{Pipeline, event, produce_raw};
use rapport_proto::v1 as proto;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);

/// One page view by each of `customers` customers, c-0 onwards.
fn one_visit_each(customers: usize) -> Vec<Value> {
    (0..customers)
        .map(|index| {
            event(
                "web.page_viewed",
                "2026-11-01T10:00:00Z",
                json!({"customer_id": format!("c-{index}")}),
                json!({"url": "/"}),
            )
        })
        .collect()
}

#[test]
fn status_shows_every_partition_caught_up() {
    let pipeline = Pipeline::start("status");
    let events = one_visit_each(40);
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
    // Compaction runs behind the fold; how much it still has to do is
    // reported beside the state's size.
    assert!(projection["compaction_pending_bytes"].is_u64(), "{status}");
    assert!(
        status["identity"]["compaction_pending_bytes"].is_u64(),
        "{status}"
    );
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
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|header| header.ends_with("to compact")),
        "{table}"
    );
}

/// `/metrics` holds a latency histogram per route, the freshness of what
/// the live projection applies, and its lag per partition.
#[test]
fn metrics_show_route_latency_freshness_and_lag() {
    let pipeline = Pipeline::start("metrics");
    let live = format!("projection=\"{}\"", rapport_e2e::FIRST_LIVE_PROJECTION);
    // Freshness counts only what a worker applies at the end of the log.
    rapport_e2e::wait_for("the live worker to reach the end", PATIENCE, || {
        rapport_e2e::metric_value(
            &pipeline.projector.metrics(),
            "rapport_projector_catching_up",
            &live,
        ) == Some(0)
    });
    let events = one_visit_each(40);
    pipeline.send_ok(&events);
    pipeline.wait_until_caught_up(PATIENCE);
    for _ in 0..3 {
        let (status, _) = pipeline.get("/v1/customers/c-1");
        assert_eq!(status, 200);
    }

    let projector = pipeline.projector.metrics();
    let reads = rapport_e2e::metric_sum(
        &projector,
        "rapport_http_request_duration_seconds_count",
        "service=\"projector\",method=\"GET\",route=\"/v1/customers/{customer_id}\",status=\"200\"",
    );
    assert_eq!(
        reads, 3,
        "one observation per read, under the declared route"
    );
    let fresh = rapport_e2e::metric_sum(
        &projector,
        "rapport_projector_freshness_seconds_count",
        &live,
    );
    assert_eq!(
        fresh, 40,
        "each record applied at the end of the log is timed once"
    );
    let ingest = pipeline.ingest.as_ref().expect("ingest").metrics();
    assert!(
        rapport_e2e::metric_sum(
            &ingest,
            "rapport_http_request_duration_seconds_count",
            "service=\"ingest\",method=\"POST\",route=\"/v1/events\"",
        ) >= 1,
        "{ingest}"
    );
    assert!(
        ingest.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );

    // The fetch statistics that give the ends arrive once a second.
    rapport_e2e::wait_for("the lag to read zero on every partition", PATIENCE, || {
        let text = pipeline.projector.metrics();
        let partitions = text
            .lines()
            .filter(|line| {
                line.starts_with("rapport_projector_lag_records{") && line.contains(&live)
            })
            .count();
        partitions == 4
            && rapport_e2e::metric_value(&text, "rapport_projector_lag_records", &live) == Some(0)
            && rapport_e2e::metric_value(
                &pipeline.identity.metrics(),
                "rapport_identity_lag_records",
                "",
            ) == Some(0)
    });
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

/// Visits of c-0..c-9 twice, then, `quiet` after they were applied, a cut
/// (returned), and 20 ms later visits of c-0..c-19 once.
fn visits_around_a_cut(pipeline: &Pipeline, quiet: Duration) -> i64 {
    pipeline.send_ok(&visits(10, 2, 0));
    pipeline.wait_until_caught_up(PATIENCE);
    std::thread::sleep(quiet);
    let cut_ms = rapport_common::now_ms();
    std::thread::sleep(Duration::from_millis(20));
    pipeline.send_ok(&visits(20, 1, 1));
    pipeline.wait_until_caught_up(PATIENCE);
    cut_ms
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
    let cut = rapport_projections::time::format_rfc3339(visits_around_a_cut(
        &pipeline,
        Duration::from_millis(20),
    ));

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

/// The records of every partition of `topic`: (offset, timestamp).
fn offsets_and_times(topic: &str) -> std::collections::BTreeMap<i32, Vec<(i64, i64)>> {
    let kafka = rapport_e2e::kafka();
    let mut by_partition: std::collections::BTreeMap<i32, Vec<(i64, i64)>> = Default::default();
    for record in rapport_common::read_all::read_to_end(&kafka, topic, PATIENCE).expect("read") {
        by_partition
            .entry(record.partition)
            .or_default()
            .push((record.offset, record.timestamp_ms));
    }
    by_partition
}

#[test]
fn a_replay_from_a_time_seeks_and_holds_exactly_the_records_received_since() {
    let pipeline = Pipeline::start("from-time");
    // The earlier records are older than the cut by more than identity's
    // reorder grace, so the seek's first records are the later ones.
    let cut_ms = visits_around_a_cut(&pipeline, Duration::from_millis(500));
    let cut = rapport_projections::time::format_rfc3339(cut_ms);

    let from = format!("time:{cut}");
    let replayed = pipeline.rapportctl(&[
        "replay",
        "customer_view",
        "--version",
        "late",
        "--from",
        &from,
    ]);
    assert!(replayed.contains("caught up"), "{replayed}");
    assert!(replayed.contains("starts at offset"), "{replayed}");

    // Each partition started at its first record received at or after the
    // cut: sought, not read from the beginning and skipped.
    let records = offsets_and_times(&pipeline.topics.customer);
    let (_, versions) = pipeline.get("/v1/admin/versions");
    let version = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|version| version["version"] == "late")
        .expect("the version")
        .clone();
    for (partition, records) in &records {
        let expected = records
            .iter()
            .find(|(_, timestamp)| *timestamp >= cut_ms)
            .map_or(records.last().unwrap().0 + 1, |(offset, _)| *offset);
        let reported = version["consumer"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|status| status["partition"] == *partition)
            .unwrap_or_else(|| panic!("partition {partition} in {version}"));
        assert_eq!(
            reported["start_offset"],
            json!(expected),
            "partition {partition}: {reported}"
        );
    }
    // Applied: exactly the 20 records received after the cut.
    let metrics = pipeline.projector.metrics();
    let outcome = |outcome: &str| {
        rapport_e2e::metric_sum(
            &metrics,
            "rapport_projector_records_total",
            &format!("projection=\"customer_view.late\",outcome=\"{outcome}\""),
        )
    };
    assert_eq!(
        (outcome("applied"), outcome("duplicate")),
        (20, 0),
        "{metrics}"
    );
    for customer in 0..20 {
        let (status, view) = pipeline.get(&format!("/v1/customers/c-{customer}?version=late"));
        assert_eq!(status, 200, "{view}");
        assert_eq!(
            view["event_counts"]["web.page_viewed"], 1,
            "c-{customer} since {cut}: {view}"
        );
    }

    // A time after every record: each partition starts at its end and the
    // version is caught up at once, empty.
    let later = rapport_projections::time::format_rfc3339(rapport_common::now_ms());
    let replayed = pipeline.rapportctl(&[
        "replay",
        "customer_view",
        "--version",
        "empty",
        "--from",
        &format!("time:{later}"),
    ]);
    assert!(replayed.contains("caught up"), "{replayed}");
    assert_eq!(pipeline.get("/v1/customers/c-0?version=empty").0, 404);
    // It follows the head from there.
    pipeline.send_ok(&visits(1, 1, 2));
    pipeline.wait_for_json("/v1/customers/c-0?version=empty", PATIENCE, |view| {
        view["event_counts"]["web.page_viewed"] == 1
    });
}

/// The seek on the real broker, over a partition of several producer
/// batches with runs of equal timestamps: whatever the broker's lookup
/// answers, and when it is not asked or answers wrong, each start is the
/// first record at or after the time.
#[test]
fn the_seek_finds_the_first_record_at_or_after_a_time_on_the_broker() {
    use rapport_projector::seek::{
        BrokerAnswer, FoundBy, KafkaPartition, Wanted, find_start, find_start_on_broker,
    };
    let topics = rapport_e2e::Topics::unique("seek");
    rapport_e2e::create_topics(&[(&topics.customer, 2, rapport_e2e::Role::Customer)]);
    let kafka = rapport_e2e::kafka();
    let (producer, _) = rapport_common::kafka::producer(
        &kafka,
        "rapport-e2e",
        Some(Duration::from_secs(30)),
        100_000,
    )
    .expect("producer");
    // One key, so one partition; 25 000 records in batches of up to 10 000,
    // seven records per millisecond.
    let base_ms = 1_790_000_000_000;
    let outgoing: Vec<rapport_common::kafka::Outgoing> = (0..25_000)
        .map(|index: i64| rapport_common::kafka::Outgoing {
            topic: topics.customer.clone(),
            key: b"one".to_vec(),
            payload: index.to_be_bytes().to_vec(),
            timestamp_ms: Some(base_ms + index / 7),
            headers: Vec::new(),
        })
        .collect();
    for chunk in outgoing.chunks(8_000) {
        rapport_common::kafka::produce_all(&producer, chunk).expect("produce");
    }
    let records = offsets_and_times(&topics.customer);
    assert_eq!(records.len(), 1, "one partition holds everything");
    let (&partition, records) = records.iter().next().unwrap();
    let empty = 1 - partition;
    let truth = |at_ms: i64| {
        records
            .iter()
            .find(|(_, timestamp)| *timestamp >= at_ms)
            .map_or(25_000, |(offset, _)| *offset)
    };

    let consumer = rapport_projector::seek::seek_consumer(&kafka).expect("consumer");
    let exact = |at_ms| Wanted {
        at_ms,
        disorder_ms: 0,
    };
    for at_ms in [
        base_ms - 5,
        base_ms,
        base_ms + 1,
        base_ms + 1_234,
        base_ms + 1_429, // inside the second producer batch
        base_ms + 3_570,
        base_ms + 25_000 / 7, // the last millisecond
        base_ms + 25_000,
    ] {
        for ask_broker in [true, false] {
            let start = find_start_on_broker(
                &consumer,
                &topics.customer,
                partition,
                exact(at_ms),
                ask_broker,
                BrokerKind::Tansu,
            )
            .expect("seek")
            .expect("records");
            assert_eq!(
                start.offset,
                truth(at_ms),
                "at {at_ms} (+{}), asked {ask_broker}: {start:?}",
                at_ms - base_ms
            );
            if !ask_broker {
                assert!(matches!(start.found_by, FoundBy::Search(_)), "{start:?}");
            }
            // A handful of reads, never a scan.
            assert!(start.reads <= 20, "{start:?}");
        }
        // A wrong answer (tansu's offset 0 for "none that late") is caught.
        let mut log =
            KafkaPartition::new(&consumer, &topics.customer, partition, BrokerKind::Tansu);
        let span = log.span().expect("span").expect("records");
        assert_eq!((span.low, span.end), (0, 25_000));
        let start =
            find_start(&mut log, span, exact(at_ms), BrokerAnswer::Offset(0)).expect("seek");
        assert_eq!(start.offset, truth(at_ms), "at {at_ms}, told 0: {start:?}");
    }
    assert_eq!(
        find_start_on_broker(
            &consumer,
            &topics.customer,
            empty,
            exact(base_ms),
            true,
            BrokerKind::Tansu
        )
        .expect("seek"),
        None,
        "a partition without records has nothing to seek"
    );
}

/// `topics create` makes what is missing from a definition, `describe`
/// compares, and an existing topic whose configuration differs from the
/// definition fails `create` with the difference named.
#[test]
fn topics_create_and_describe_hold_the_cluster_to_the_definition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = format!("test.topics.{}", uuid::Uuid::new_v4().simple());
    let definition = |retention: &str| {
        let path = dir.path().join(format!("topics-{retention}.toml"));
        std::fs::write(
            &path,
            format!("[[topic]]\nname = \"{name}\"\npartitions = 2\nreplication_factor = 3\nconfig = {{ \"retention.ms\" = \"{retention}\" }}\n"),
        )
        .expect("write the definition");
        path
    };
    let rapportctl = |args: &[&str], file: &std::path::Path| {
        let output = std::process::Command::new(rapport_e2e::bin_dir().join("rapportctl"))
            .args(["--brokers", &rapport_e2e::brokers(), "topics"])
            .args(args)
            .arg("--file")
            .arg(file)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run rapportctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };
    let defined = definition("9223372036854775807");

    let (created, text) = rapportctl(&["create", "--replication-factor", "1"], &defined);
    assert!(
        created && text.contains("created with 2 partitions"),
        "{text}"
    );
    let (described, text) = rapportctl(&["describe"], &defined);
    assert!(described && text.contains("as defined"), "{text}");
    let (again, text) = rapportctl(&["create", "--replication-factor", "1"], &defined);
    assert!(again && text.contains("exists with 2 partitions"), "{text}");

    let other = definition("-1");
    let (refused, text) = rapportctl(&["create", "--replication-factor", "1"], &other);
    assert!(
        !refused
            && text.contains(
                "retention.ms is 9223372036854775807 on the broker but -1 in the definition"
            ),
        "{text}"
    );
    let (_, text) = rapportctl(&["describe"], &other);
    assert!(
        text.contains("retention.ms=9223372036854775807 (defined -1)"),
        "{text}"
    );
}
