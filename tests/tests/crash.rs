//! Effectively once under SIGKILL: a projector killed at twenty points
//! spread over a large stream while it applies it, and while it rebuilds a
//! version, ends with exactly the state of an undisturbed run. Each kill
//! is placed by the records the projector has committed, and each restart
//! must resume from a state flushed part-way.

use std::time::Duration;

use rapport_e2e::{Pipeline, Random, event};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(300);

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

/// A memtable this small is flushed every few hundred records, so every
/// kill lands on a state flushed part-way: the case crash recovery exists
/// for. With the 64 MiB default the whole run would fit in memory and
/// every restart would refold from offset 0.
const SMALL_MEMTABLE: &str = "262144";

/// `kills` targets spread over `from..total`: the k-th lies at a random
/// point in the middle half of the k-th of `kills + 1` equal slices.
fn spread_targets(random: &mut Random, from: i64, total: i64, kills: usize) -> Vec<i64> {
    let slice = (total - from) / (kills as i64 + 1);
    (1..=kills as i64)
        .map(|kill| from + slice * kill - slice / 4 + random.below((slice / 2) as u64) as i64)
        .collect()
}

/// Prints what the kills found and asserts that the state on disk never
/// went back, that most restarts resumed from a state flushed part-way,
/// and that some kills lost committed work not flushed yet, so that
/// recovery refolded it.
fn report(kills: &[rapport_e2e::Kill]) {
    for (index, kill) in kills.iter().enumerate() {
        println!(
            "kill {index}: SIGKILL at {} committed records, resumed from {} on disk",
            kill.committed, kill.resumed
        );
    }
    for pair in kills.windows(2) {
        assert!(
            pair[1].resumed >= pair[0].resumed,
            "the state on disk went back from {} to {}",
            pair[0].resumed,
            pair[1].resumed
        );
    }
    // An early kill can come before the first flush and resume from
    // nothing; most must resume from a state flushed part-way.
    let part_way = kills.iter().filter(|kill| kill.resumed > 0).count();
    assert!(
        part_way * 4 >= kills.len() * 3,
        "only {part_way} of {} restarts resumed from a state flushed part-way: {kills:?}",
        kills.len()
    );
    let refolded = kills
        .iter()
        .filter(|kill| kill.resumed < kill.committed)
        .count();
    assert!(
        refolded > 0,
        "no kill caught unflushed work, so no restart refolded anything: {kills:?}"
    );
}

#[test]
fn a_projector_killed_at_twenty_points_of_a_live_stream_ends_identical() {
    let seed = rapport_common::now_ms() as u64 | 1;
    println!("random seed {seed}");
    let mut random = Random(seed);
    let pipeline = Pipeline::start("crash20");
    let live = rapport_e2e::FIRST_LIVE_PROJECTION;
    // Small batches, so that the applied count moves in steps the polling
    // sees even when a restart falls behind the stream and catches up.
    let mut crashy = Pipeline::start_projector_only_with(
        &pipeline,
        "projector-rebuild",
        &["--memtable-bytes", SMALL_MEMTABLE, "--max-batch", "1000"],
    );

    let total = 200_000;
    let batches = stream(total);
    let sender = rapport_e2e::send_in_background(&pipeline.ingest_url(), batches, Duration::ZERO);
    // Each event is one customer record; the kills follow the crashy
    // projector through the whole stream while it applies it.
    // Kills stay clear of the end, which a restart that lags the stream
    // could reach in one go.
    let last_target = total as i64 - (total as i64 / 10);
    let kills: Vec<rapport_e2e::Kill> = spread_targets(&mut random, 0, last_target, 20)
        .into_iter()
        .map(|target| {
            rapport_e2e::kill_projector_when_committed(&mut crashy, live, target, total as i64)
        })
        .collect();
    report(&kills);
    sender.join().expect("the sender");
    pipeline.wait_until_caught_up(PATIENCE);
    let ends = rapport_e2e::high_watermarks(&pipeline.topics.customer);
    rapport_e2e::wait_for("the killed projector to catch up", PATIENCE, || {
        rapport_e2e::applied_through(&crashy, live, &ends)
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

#[test]
fn a_rebuild_killed_at_twenty_points_still_equals_the_live_version() {
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
    pipeline
        .projector
        .add_args(&["--max-batch", "1000", "--memtable-bytes", SMALL_MEMTABLE]);
    pipeline.projector.restart();
    pipeline.rapportctl(&["replay", "customer_view", "--version", "r2", "--no-wait"]);
    let rebuild = "customer_view.r2";
    // Kills stay clear of the end by more than a batch and the polling lag,
    // so that each one interrupts the rebuild and none comes after it.
    let last_target = total - (total / 10).max(5_000);
    let kills: Vec<rapport_e2e::Kill> = spread_targets(&mut random, 0, last_target, 20)
        .into_iter()
        .map(|target| {
            rapport_e2e::kill_projector_when_committed(
                &mut pipeline.projector,
                rebuild,
                target,
                total,
            )
        })
        .collect();
    report(&kills);
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
