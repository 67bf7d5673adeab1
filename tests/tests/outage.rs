//! The broker goes away while a storefront keeps sending: every request in
//! the outage is answered 503 promptly, and every event answered 202 is in
//! the projection exactly once after the broker is back. A restarted broker
//! still holds the whole log, so a replay after it equals the live version.
//! A projector applies each record once even when the broker delivers it
//! again. And a projector restarted on a restarted broker still finds the
//! end of an idle log.

use std::time::{Duration, Instant};

use rapport_e2e::{Pipeline, PrivateBroker, Topics, event, post_json};
use serde_json::{Value, json};

/// One page view of `customer`, the only kind of event these tests send.
fn page_view(customer: &str, url: &str) -> Value {
    event(
        "web.page_viewed",
        "2026-11-01T10:00:00Z",
        json!({"customer_id": customer}),
        json!({"url": url}),
    )
}

#[test]
fn a_broker_outage_loses_nothing_acknowledged_and_hangs_nobody() {
    let mut broker = PrivateBroker::start();
    let topics = Topics::unique("outage");
    topics.create(2, 2);
    let pipeline = Pipeline::start_on(topics, true);
    let url = format!("{}/v1/events", pipeline.ingest_url());

    // One event per customer, so "exactly once" is a count of one.
    let mut next = 0u32;
    let mut send = |accepted: &mut Vec<u32>, refused: &mut Vec<u32>, slowest: &mut Duration| {
        let ids: Vec<u32> = (next..next + 5).collect();
        next += 5;
        let events: Vec<_> = ids
            .iter()
            .map(|id| page_view(&format!("c-{id}"), "/"))
            .collect();
        let started = Instant::now();
        let (status, answer) = post_json(&url, &json!({ "events": events }));
        *slowest = (*slowest).max(started.elapsed());
        match status {
            202 => accepted.extend(ids),
            503 => refused.extend(ids),
            other => panic!("ingest answered {other}: {answer}"),
        }
        status
    };
    let (mut accepted, mut refused, mut slowest) = (Vec::new(), Vec::new(), Duration::ZERO);

    for _ in 0..20 {
        assert_eq!(
            send(&mut accepted, &mut refused, &mut slowest),
            202,
            "before the outage"
        );
    }
    broker.stop();
    let outage_started = Instant::now();
    let mut during = Vec::new();
    while outage_started.elapsed() < Duration::from_secs(8) {
        during.push(send(&mut accepted, &mut refused, &mut slowest));
    }
    // The first requests may still be acknowledged from before the stop was
    // noticed; once the outage is known, every answer is a prompt 503.
    let tail = &during[during.len() / 2..];
    assert!(
        tail.iter().all(|status| *status == 503),
        "requests in the outage: {during:?}"
    );
    assert!(
        slowest < Duration::from_secs(10),
        "a request took {slowest:?}: none may hang"
    );

    broker.resume();
    let back = Instant::now();
    let mut recovered = false;
    while back.elapsed() < Duration::from_secs(60) && !recovered {
        recovered = send(&mut accepted, &mut refused, &mut slowest) == 202;
        if !recovered {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    assert!(
        recovered,
        "ingest accepts again once the broker is back; its log:\n{}",
        pipeline.log("ingest.log")
    );
    for _ in 0..10 {
        assert_eq!(
            send(&mut accepted, &mut refused, &mut slowest),
            202,
            "after the outage"
        );
    }

    pipeline.wait_until_caught_up(Duration::from_secs(120));
    for id in &accepted {
        let (status, view) = pipeline.get(&format!("/v1/customers/c-{id}"));
        assert_eq!(status, 200, "acknowledged event of c-{id} is missing");
        assert_eq!(
            view["event_counts"]["web.page_viewed"], 1,
            "c-{id} counted more than once"
        );
    }
    // A refused request may have been produced in part before the broker
    // went away; the client retries those, and nothing is ever doubled.
    for id in &refused {
        let (status, view) = pipeline.get(&format!("/v1/customers/c-{id}"));
        assert!(
            status == 404 || view["event_counts"]["web.page_viewed"] == 1,
            "c-{id}: {view}"
        );
    }
    assert!(
        !refused.is_empty() && accepted.len() >= 150,
        "{} accepted, {} refused",
        accepted.len(),
        refused.len()
    );
}

#[test]
fn a_projector_restarted_at_the_end_of_an_idle_log_switches_to_the_steady_wait() {
    let mut broker = PrivateBroker::start();
    let topics = Topics::unique("idle-restart");
    // With retention.ms = -1 the restarted broker deletes the log, as
    // `make run`'s did (see the next test): a fetch below the end then
    // brings neither records nor an end of partition.
    topics.create_overriding(2, 2, &[("retention.ms", "-1")]);
    let mut pipeline = Pipeline::start_on(topics, true);
    // More than a producer batch per partition (see `kafka::fetch_start`).
    for chunk in 0..50 {
        let events: Vec<_> = (0..500)
            .map(|id| page_view(&format!("c-{}", chunk * 500 + id), "/"))
            .collect();
        pipeline.send_ok(&events);
    }
    pipeline.wait_until_caught_up(Duration::from_secs(60));
    let log_path = pipeline.dir.path().join("projector.log");
    let handovers = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("caught up with the customer topic")
            .count()
    };
    let before = handovers();
    // Nothing new arrives after the broker restarts, and the records
    // before the end are gone, so only the end the fetches report can tell
    // the worker it has caught up.
    pipeline.projector.stop();
    broker.stop();
    broker.resume();
    pipeline.projector.restart();
    rapport_e2e::wait_for(
        "the restarted projector to switch to the steady wait",
        Duration::from_secs(60),
        || handovers() == before + 1,
    );
    assert_eq!(
        rapport_e2e::metric_sum(
            &pipeline.projector.metrics(),
            "rapport_projector_catching_up",
            "customer_view.v1",
        ),
        0
    );
}

/// The topics are created with the configuration of the topic definition
/// (`Topics::create`). With retention.ms = -1 there, tansu's SQLite storage
/// deleted every record when the broker started again: the projections kept
/// their state, but the log could no longer be read or replayed.
#[test]
fn a_restarted_broker_still_holds_the_whole_log_and_a_replay_equals_live() {
    let mut broker = PrivateBroker::start();
    let topics = Topics::unique("log-survives");
    topics.create(2, 2);
    let pipeline = Pipeline::start_on(topics.clone(), true);
    for chunk in 0..10 {
        let events: Vec<_> = (0..100)
            .map(|id| {
                page_view(
                    &format!("c-{}", (chunk * 100 + id) % 300),
                    &format!("/{chunk}"),
                )
            })
            .collect();
        pipeline.send_ok(&events);
    }
    pipeline.wait_until_caught_up(Duration::from_secs(60));
    let raw_before = rapport_e2e::read_all(&topics.raw);
    let customer_before = rapport_e2e::read_all(&topics.customer);
    assert_eq!(raw_before.len(), 1000);

    broker.stop();
    broker.resume();
    assert_eq!(
        rapport_e2e::read_all(&topics.raw),
        raw_before,
        "the raw topic after the restart"
    );
    assert_eq!(
        rapport_e2e::read_all(&topics.customer),
        customer_before,
        "the customer topic after the restart"
    );
    let replayed = pipeline.rapportctl(&["replay", "customer_view", "--version", "r2"]);
    assert!(replayed.contains("caught up"), "{replayed}");
    let verified = pipeline.rapportctl(&["verify", "customer_view", "--other", "r2"]);
    assert!(verified.contains("identical"), "{verified}");
}

/// tansu 0.6 delivers records again where a partition's log has a gap: its
/// fetch steps forward by the number of records found, so a fetch that
/// starts before a gap is answered with the records after it once per
/// missing offset, all labelled with offsets already delivered. Gaps are
/// made here the way they were made in `make run`: SQLite storage with
/// retention.ms = -1 deletes every record when the broker starts. A
/// restarted projector starts fetching up to a batch before its position
/// (see `kafka::fetch_start`), so the first record after the restart comes
/// back thousands of times; it must be folded once, and none of its
/// copies may even reach the fold.
#[test]
fn a_record_the_broker_delivers_again_is_taken_once() {
    let mut broker = PrivateBroker::start();
    let topics = Topics::unique("repeats");
    topics.create_overriding(1, 1, &[("retention.ms", "-1")]);
    let mut pipeline = Pipeline::start_on(topics, true);
    let visits = |customer: &str, count: usize| -> Vec<Value> {
        (0..count)
            .map(|visit| page_view(customer, &format!("/{visit}")))
            .collect()
    };
    for chunk in 0..5 {
        pipeline.send_ok(&visits(&format!("c-{chunk}"), 100));
    }
    pipeline.wait_until_caught_up(Duration::from_secs(60));

    pipeline.projector.stop();
    broker.stop();
    broker.resume();
    // The deletion runs right after the broker starts; a record sent
    // before it ends would be deleted too.
    std::thread::sleep(Duration::from_secs(3));
    pipeline.send_ok(&visits("c-after", 1));
    pipeline.projector.restart();
    pipeline.wait_for_json("/v1/customers/c-after", Duration::from_secs(60), |view| {
        view["event_counts"]["web.page_viewed"] == 1
    });
    // The counters follow the commit that made the view visible.
    let applied = |metrics: &str| {
        rapport_e2e::metric_sum(
            metrics,
            "rapport_projector_records_total",
            "outcome=\"applied\"",
        )
    };
    rapport_e2e::wait_for(
        "the applied record to be counted",
        Duration::from_secs(10),
        || applied(&pipeline.projector.metrics()) > 0,
    );
    let metrics = pipeline.projector.metrics();
    assert_eq!(applied(&metrics), 1, "{metrics}");
    assert_eq!(
        rapport_e2e::metric_sum(
            &metrics,
            "rapport_projector_records_total",
            "outcome=\"duplicate\""
        ),
        0,
        "copies reached the fold"
    );
    assert!(
        pipeline.log("projector.log").contains("already delivered"),
        "the projector says it dropped copies"
    );
}
