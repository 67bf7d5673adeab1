//! Effectively once under SIGKILL: a projector killed at random instants
//! while it applies a large stream, and while it rebuilds a version, ends
//! with exactly the state of an undisturbed run.

use std::time::Duration;

use rapport_e2e::{Pipeline, event};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(300);

/// A small deterministic generator, seeded from the clock and printed so a
/// failing run can be repeated.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn stream(total: usize) -> Vec<Vec<Value>> {
    let events: Vec<Value> = (0..total)
        .map(|index| {
            let person = index % 5_000;
            let when = format!("2026-10-{:02}T09:{:02}:00Z", 1 + (index / 60) % 28, index % 60);
            let who = json!({"customer_id": format!("c-{person}")});
            if index % 3 == 0 {
                event("order.placed", &when, who, json!({"order_id": format!("o-{index}"), "total_minor": 100 + index % 900, "currency": "USD"}))
            } else {
                event("web.page_viewed", &when, who, json!({"url": format!("/p/{}", index % 50)}))
            }
        })
        .collect();
    events.chunks(500).map(<[Value]>::to_vec).collect()
}

#[test]
fn a_projector_killed_at_twenty_random_instants_ends_identical() {
    let seed = rapport_common::now_ms() as u64 | 1;
    println!("random seed {seed}");
    let mut random = Random(seed);
    let pipeline = Pipeline::start("crash20");
    let mut crashy = Pipeline::start_projector_only(&pipeline, "projector-rebuild");

    let total = 200_000;
    let batches = stream(total);
    let sender = {
        let url = pipeline.ingest_url();
        std::thread::spawn(move || {
            for batch in batches {
                let (status, answer) = rapport_e2e::post_json(
                    &format!("{url}/v1/events"),
                    &json!({ "events": batch }),
                );
                assert_eq!(status, 202, "{answer}");
            }
        })
    };
    for kill in 0..20 {
        std::thread::sleep(Duration::from_millis(150 + random.below(600)));
        let applied = rapport_e2e::metric_sum(
            &crashy.metrics(),
            "rapport_projector_records_total",
            "outcome=",
        );
        println!("kill {kill}: SIGKILL after {applied} records in this run");
        crashy.restart();
    }
    sender.join().expect("the sender");
    pipeline.wait_until_caught_up(PATIENCE);
    let ends = rapport_e2e::high_watermarks(&pipeline.topics.customer);
    rapport_e2e::wait_for("the killed projector to catch up", PATIENCE, || {
        rapport_e2e::applied_through(&crashy, &ends)
    });
    let (_, sample) = pipeline.get("/v1/customers/c-42");
    assert_eq!(
        sample["event_counts"]["order.placed"].as_u64().unwrap()
            + sample["event_counts"]["web.page_viewed"].as_u64().unwrap(),
        (total / 5_000) as u64
    );

    crashy.stop();
    let mut steady = pipeline;
    steady.projector.stop();
    rapport_e2e::assert_same_projection(
        &steady.dir.path().join("projector"),
        &steady.dir.path().join("projector-rebuild"),
        100_000,
    );
}

/// Records a version has committed, from the stored offsets the projector
/// reports (they survive restarts, unlike the record counters).
fn committed_records(projector: &rapport_e2e::Service, family: &str) -> i64 {
    let metrics = projector.metrics();
    let label = format!("projection=\"{family}\"");
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("rapport_projector_applied_offset{") && line.contains(&label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<i64>().ok())
        .map(|offset| offset + 1)
        .sum()
}

#[test]
fn a_rebuild_killed_at_twenty_random_instants_still_equals_the_live_version() {
    let seed = rapport_common::now_ms() as u64 | 1;
    println!("random seed {seed}");
    let mut random = Random(seed);
    let mut pipeline = Pipeline::start("crash-replay");
    for batch in stream(80_000) {
        pipeline.send_ok(&batch);
    }
    pipeline.wait_until_caught_up(PATIENCE);
    let total: i64 = rapport_e2e::high_watermarks(&pipeline.topics.customer)
        .values()
        .sum();
    // Small batches: more commits for the kills to fall between, and a
    // rebuild slow enough that all twenty land before it catches up.
    pipeline.projector.add_args(&["--max-batch", "1000"]);
    pipeline.projector.restart();
    pipeline.rapportctl(&["replay", "customer_view", "--version", "r2", "--no-wait"]);
    let kills = 20;
    // Kills stay clear of the end by more than a batch and the polling lag,
    // so that each one interrupts the rebuild and none comes after it.
    let last_target = total - (total / 10).max(5_000);
    let mut floor = 0;
    for kill in 0..kills {
        // A random point in what is left, spread so that all twenty fall
        // inside the rebuild; the projector dies wherever it is then
        // (polling, folding, or committing a batch).
        let reached = committed_records(&pipeline.projector, "customer_view.r2").max(floor);
        let left = (last_target - reached).max(1) as u64;
        let spread = (2 * left / (kills - kill + 1) as u64).max(1);
        let target = reached + 1 + random.below(spread).min(left - 1) as i64;
        // Polled tightly: a batch is a few milliseconds of work.
        let deadline = std::time::Instant::now() + PATIENCE;
        let at = loop {
            let at = committed_records(&pipeline.projector, "customer_view.r2");
            if at >= target {
                break at;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the rebuild stopped at {at}"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        println!("kill {kill}: SIGKILL with {at} of {total} records committed");
        floor = at;
        assert!(
            at < total,
            "kill {kill} came after the rebuild had finished"
        );
        pipeline.projector.restart();
    }
    let verified = pipeline.rapportctl(&[
        "verify",
        "customer_view",
        "--other",
        "r2",
        "--patience-s",
        "240",
    ]);
    assert!(verified.contains("identical"), "{verified}");
}
