//! The fold and commit of a worker, on real RocksDB in a temporary directory.

use super::fold::{Incoming, ListChanges, Projection, Rules, WholeWrites};
use super::pipeline::Pipeline;
use super::*;
use crate::changes::Changes;
use std::collections::BTreeMap;

use prost::Message as _;
use rapport_common::config::TopicNames;
use rapport_common::kafka::Outgoing;
use rapport_common::metrics::Registry;

use rapport_common::store::Store;
use rapport_common::{Result, keys};
use rapport_projections::customer_view::ProfileState;
use rapport_proto::v1 as proto;

use crate::position::{Positions, TimeWindow};

use rapport_proto::v1::customer_record::Body;

fn record(customer_id: &str, raw_offset: i64, url: &str) -> Vec<u8> {
    let event = proto::Event {
        event_id: format!("e-{raw_offset}"),
        r#type: "web.page_viewed".into(),
        occurred_at_ms: raw_offset,
        channel: "web".into(),
        payload: Some(proto::event::Payload::WebPageViewed(proto::PageViewed {
            url: url.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    proto::CustomerRecord {
        customer_id: customer_id.into(),
        source: Some(proto::SourcePosition {
            raw_partition: 0,
            raw_offset,
            index: 0,
        }),
        received_at_ms: raw_offset,
        body: Some(Body::Event(proto::EventResolved {
            event: Some(event),
            linked: vec![],
        })),
    }
    .encode_to_vec()
}

fn views(store: &Store) -> u64 {
    let state = ProfileState::decode(
        &store
            .get(CUSTOMER_VIEW, &keys::profile("c-1"))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    state.event_counts["web.page_viewed"]
}

fn everything(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.scan_prefix(CUSTOMER_VIEW, &[], usize::MAX).unwrap()
}

#[test]
fn folding_on_top_of_a_batch_still_committing_equals_folding_in_one_go() {
    // Three customers that recur in every batch, so that each batch
    // appends to (and now and then rewrites whole) profiles the previous
    // one has not committed yet; a re-produced record and a retried dead
    // letter (applied once) on top.
    let mut records: Vec<Consumed> = (0..60)
        .map(|index| Consumed {
            partition: 0,
            offset: index,
            timestamp_ms: 0,
            key: Vec::new(),
            retry_of: None,
            payload: record(
                &format!("c-{}", index % 3),
                100 + index,
                &format!("/{index}"),
            ),
        })
        .collect();
    records.push(Consumed {
        offset: 60,
        ..records[10].clone()
    });
    for offset in [61, 62] {
        records.push(Consumed {
            offset,
            retry_of: Some("0:7".into()),
            payload: record("c-1", 5, "/retried"),
            ..records[0].clone()
        });
    }
    let metrics = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
    let topics = TopicNames::default();
    let mut no_letters = |_: &[Outgoing]| -> Result<()> { panic!("no dead letters expected") };

    let at_once = tempfile::tempdir().unwrap();
    let expected = Store::open(at_once.path(), &[CUSTOMER_VIEW]).unwrap();
    let mut positions = Positions::default();
    let dead_letters = DeadLetters {
        topics: &topics,
        publish: &mut no_letters,
    };
    apply_batch(
        &expected,
        CUSTOMER_VIEW,
        &records,
        &mut positions,
        &metrics,
        TimeWindow::default(),
        dead_letters,
    )
    .unwrap();

    let pipelined = tempfile::tempdir().unwrap();
    let store = Store::open(pipelined.path(), &[CUSTOMER_VIEW]).unwrap();
    let changes = Changes::default();
    let mut listed = Vec::new();
    std::thread::scope(|scope| {
        let mut pipeline = Pipeline::new(
            scope,
            Projection {
                store: &store,
                family: CUSTOMER_VIEW,
            },
            &Positions::default(),
            Rules {
                window: TimeWindow::default(),
                topics: &topics,
                list_changes: ListChanges::IfSubscribed(&changes),
            },
            &metrics,
        );
        // Often, so that profiles are also written whole on top of
        // batches still committing.
        pipeline.whole_writes = WholeWrites::every(4);
        for (index, batch) in records.chunks(2).enumerate() {
            if index == 3 {
                changes.subscribe();
            }
            let incoming: Vec<Incoming<'_>> = batch.iter().map(Incoming::from).collect();
            let landed = pipeline.push(&incoming, &mut no_letters).unwrap();
            listed.extend(landed.map(|committed| (index, committed.changed)));
        }
        listed.extend(
            pipeline
                .settle()
                .unwrap()
                .map(|last| (usize::MAX, last.changed)),
        );
    });
    // Batches list what they changed only once someone subscribed. A
    // batch lands when the next is pushed: those landing by push 2 were
    // written before the subscription, those from push 4 after it (the
    // one landing at push 3 may be either), and up to push 30 each
    // applied views (the last two hold the duplicate and the retries).
    assert_eq!(listed.len(), 32);
    for (landed_at, changed) in &listed {
        match landed_at {
            0..=2 => assert!(
                changed.is_empty(),
                "landed at push {landed_at}: {changed:?}"
            ),
            4..=30 => assert!(!changed.is_empty(), "landed at push {landed_at}"),
            _ => {}
        }
    }
    assert_eq!(
        views(&store),
        20 + 1,
        "c-1: twenty views and one retry, the duplicate skipped"
    );
    assert_eq!(everything(&store), everything(&expected));
}

#[test]
fn applying_from_memory_continues_from_the_stored_positions() {
    // Given forty records over two partitions, the first half applied
    let records: Vec<Consumed> = (0..40)
        .map(|index| Consumed {
            partition: index as i32 % 2,
            offset: index / 2,
            timestamp_ms: 0,
            key: Vec::new(),
            retry_of: None,
            payload: record(&format!("c-{}", index % 3), 100 + index, "/p"),
        })
        .collect();
    let first = &records[..20];
    let topics = TopicNames::default();
    let mut no_letters = |_: &[Outgoing]| -> Result<()> { panic!("no dead letters expected") };
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
    let first_run = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
    apply_from_memory(
        &store,
        CUSTOMER_VIEW,
        &[first.to_vec()],
        &first_run,
        DeadLetters {
            topics: &topics,
            publish: &mut no_letters,
        },
    )
    .unwrap();
    // When a second run gets the first half again, as identity
    // re-produces it after a crash (at later offsets), then the rest
    let later: Vec<Consumed> = records
        .iter()
        .map(|consumed| Consumed {
            offset: consumed.offset + 20,
            ..consumed.clone()
        })
        .collect();
    let second_run = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
    let batches: Vec<Vec<Consumed>> = later.chunks(3).map(<[_]>::to_vec).collect();
    let positions = apply_from_memory(
        &store,
        CUSTOMER_VIEW,
        &batches,
        &second_run,
        DeadLetters {
            topics: &topics,
            publish: &mut no_letters,
        },
    )
    .unwrap();
    // Then the repeated half is skipped, the positions are the last
    // offsets, and the state equals one batch of it all
    assert_eq!(second_run.duplicates.get(), 20);
    assert_eq!(positions.offsets, BTreeMap::from([(0, 39), (1, 39)]));
    let at_once = tempfile::tempdir().unwrap();
    let expected = Store::open(at_once.path(), &[CUSTOMER_VIEW]).unwrap();
    let everything_in_order: Vec<Consumed> = first.iter().cloned().chain(later).collect();
    apply_batch(
        &expected,
        CUSTOMER_VIEW,
        &everything_in_order,
        &mut Positions::default(),
        &ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW),
        TimeWindow::default(),
        DeadLetters {
            topics: &topics,
            publish: &mut no_letters,
        },
    )
    .unwrap();
    assert_eq!(everything(&store), everything(&expected));
}

#[test]
fn records_received_outside_the_window_only_advance_the_offsets() {
    // Given a bounded version's window ending at 100 ms and records whose
    // receive times go back a little within the partition
    let directory = tempfile::tempdir().unwrap();
    let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
    let metrics = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
    let mut positions = Positions::default();
    let records: Vec<Consumed> = [(90, "/a"), (105, "/late"), (99, "/b"), (100, "/c")]
        .into_iter()
        .enumerate()
        .map(|(offset, (timestamp_ms, url))| Consumed {
            partition: 0,
            offset: offset as i64,
            timestamp_ms,
            key: Vec::new(),
            retry_of: None,
            payload: record("c-1", 20 + offset as i64, url),
        })
        .collect();
    // When they are applied
    apply_batch(
        &store,
        CUSTOMER_VIEW,
        &records,
        &mut positions,
        &metrics,
        TimeWindow {
            not_before_ms: Some(95),
            not_after_ms: Some(100),
        },
        DeadLetters {
            topics: &TopicNames::default(),
            publish: &mut |_: &[Outgoing]| Ok(()),
        },
    )
    .unwrap();
    // Then only those received in [95, 100] are folded, the one after a
    // later record included, and the offsets pass every record
    assert_eq!(views(&store), 2);
    assert_eq!(positions.offsets.get(&0), Some(&3));
}

#[test]
fn a_profile_is_due_to_be_written_whole_every_so_many_records() {
    let mut whole_writes = WholeWrites::every(3);
    let due: Vec<bool> = (0..7).map(|_| whole_writes.due(b"Pc-1", 1)).collect();
    assert_eq!(due, [false, false, true, false, false, true, false]);
    // A batch with many records of the profile makes it due at once.
    assert!(whole_writes.due(b"Pc-1", 5));
}

#[test]
fn re_produced_records_are_skipped_and_positions_survive_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let metrics = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
    let topics = TopicNames::default();
    let mut letters: Vec<Outgoing> = Vec::new();
    let mut publish = |batch: &[Outgoing]| {
        letters.extend_from_slice(batch);
        Ok(())
    };
    {
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        let mut positions = Positions::load(&store, CUSTOMER_VIEW).unwrap();
        let first = vec![
            Consumed {
                partition: 0,
                offset: 0,
                timestamp_ms: 0,
                key: Vec::new(),
                retry_of: None,
                payload: record("c-1", 10, "/a"),
            },
            Consumed {
                partition: 0,
                offset: 1,
                timestamp_ms: 0,
                key: Vec::new(),
                retry_of: None,
                payload: record("c-1", 11, "/b"),
            },
        ];
        apply_batch(
            &store,
            CUSTOMER_VIEW,
            &first,
            &mut positions,
            &metrics,
            TimeWindow::default(),
            DeadLetters {
                topics: &topics,
                publish: &mut publish,
            },
        )
        .unwrap();
        assert_eq!(views(&store), 2);
    }
    // A new process: positions come back from RocksDB, and identity's
    // re-production of raw offset 11 (at a new customer offset) is skipped.
    let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
    let mut positions = Positions::load(&store, CUSTOMER_VIEW).unwrap();
    assert_eq!(positions.offsets.get(&0), Some(&1));
    let again = vec![
        Consumed {
            partition: 0,
            offset: 2,
            timestamp_ms: 0,
            key: Vec::new(),
            retry_of: None,
            payload: record("c-1", 11, "/b"),
        },
        Consumed {
            partition: 0,
            offset: 3,
            timestamp_ms: 0,
            key: Vec::new(),
            retry_of: None,
            payload: record("c-1", 12, "/c"),
        },
        Consumed {
            partition: 0,
            offset: 4,
            timestamp_ms: 0,
            key: Vec::new(),
            retry_of: None,
            payload: vec![0xff, 0xff],
        },
    ];
    apply_batch(
        &store,
        CUSTOMER_VIEW,
        &again,
        &mut positions,
        &metrics,
        TimeWindow::default(),
        DeadLetters {
            topics: &topics,
            publish: &mut publish,
        },
    )
    .unwrap();
    assert_eq!(views(&store), 3);
    assert_eq!(metrics.duplicates.get(), 1);
    assert_eq!(metrics.undecodable.get(), 1);
    // The poison record went to dead letters, whole, before the commit.
    assert_eq!(letters.len(), 1);
    let letter = proto::DeadLetter::decode(letters[0].payload.as_slice()).unwrap();
    assert_eq!(
        (
            letter.service.as_str(),
            letter.source_offset,
            letter.payload.as_slice()
        ),
        ("projector", 4, &[0xff, 0xff][..])
    );
    assert_eq!(letters[0].topic, topics.deadletters);
    assert_eq!(
        Positions::load(&store, CUSTOMER_VIEW)
            .unwrap()
            .offsets
            .get(&0),
        Some(&4)
    );
}
