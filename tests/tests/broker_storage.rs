//! What the local broker's storage does with records a compacted topic
//! supersedes: tansu 0.6 with SQLite compacts when it starts, so readers
//! no longer see them, but their bytes stay in the database file. Anything
//! that must really be destroyed (data keys) therefore never goes to the
//! local broker; docs/broker.md says so. If tansu starts wiping those
//! bytes, this test fails and the note can go.

use std::time::Duration;

use rapport_e2e::{PrivateBroker, Role, create_topics, produce_raw, read_all};

fn occurrences(directory: &std::path::Path, needle: &[u8]) -> usize {
    std::fs::read_dir(directory)
        .expect("the broker's directory")
        .map(|entry| std::fs::read(entry.expect("an entry").path()).unwrap_or_default())
        .map(|bytes| {
            bytes
                .windows(needle.len())
                .filter(|window| *window == needle)
                .count()
        })
        .sum()
}

#[test]
fn tansu_compaction_hides_superseded_records_but_keeps_their_bytes() {
    let mut broker = PrivateBroker::start();
    create_topics(&[("storage.compacted", 1, Role::Keys)]);
    produce_raw("storage.compacted", b"key:a", b"SUPERSEDED-VALUE");
    for round in 0..20 {
        produce_raw(
            "storage.compacted",
            b"key:a",
            format!("later value {round}").as_bytes(),
        );
    }
    assert_eq!(read_all("storage.compacted").len(), 21);
    broker.stop();
    broker.resume();
    rapport_e2e::wait_for(
        "the restarted broker to answer",
        Duration::from_secs(30),
        || !read_all("storage.compacted").is_empty(),
    );
    let remaining = read_all("storage.compacted");
    assert_eq!(
        remaining.len(),
        1,
        "compaction keeps the latest record of the key"
    );
    assert_eq!(remaining[0], b"later value 19");
    broker.stop();
    assert!(
        occurrences(broker.storage_dir(), b"SUPERSEDED-VALUE") > 0,
        "the superseded record's bytes are gone from tansu's files: update docs/broker.md"
    );
}
