//! Erasing a person end to end: a guest who bought by email and later
//! registered (two profiles, merged), with page views, a ticket and a
//! survey comment. After `rapportctl erase`, nothing personal of theirs is
//! readable through the API, in any service's or the broker's files, or on
//! the topics, and their data keys are gone from every file; a rebuild of
//! the customer view
//! and a re-identification bring nothing back; their orders still count,
//! and another customer is untouched. When the same email and customer id
//! come back, they make a new, separate person, and re-identifying gives
//! the same graph.

use std::path::Path;
use std::time::Duration;

use rapport_e2e::{Pipeline, PrivateBroker, event, get_json_with_key, test_keys};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// What was sent of the person, none of which may be readable afterwards.
const PERSONAL: &[&str] = &[
    "ada.erase@example.com",
    "c-erase-ada",
    "Lovelace",
    "Marylebone",
    "erase-shop.example",
    "my parcel is lost",
    "analytical engines rule",
    "anon-erase-1",
];

fn files_under(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

/// A customer registering (at, name, city) and then ordering (at, order
/// id, total in cents).
fn registered_and_ordered(
    customer: &Value,
    (registered_at, name, city): (&str, &str, &str),
    (ordered_at, order_id, total_minor): (&str, &str, i64),
) -> [Value; 2] {
    [
        event(
            "customer.registered",
            registered_at,
            customer.clone(),
            json!({"name": name, "city": city}),
        ),
        event(
            "order.placed",
            ordered_at,
            customer.clone(),
            json!({"order_id": order_id, "total_minor": total_minor, "currency": "USD"}),
        ),
    ]
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| window.eq_ignore_ascii_case(needle))
        .count()
}

#[test]
fn an_erased_person_is_unreadable_everywhere_and_their_orders_still_count() {
    // A broker of its own that keeps the log in SQLite, so that its files
    // are scanned too
    let broker = PrivateBroker::start();
    let pipeline = Pipeline::start("erase");
    let guest = json!({"email": "Ada.Erase@Example.com", "anonymous_id": "anon-erase-1"});
    let known = json!({"customer_id": "c-erase-ada", "email": "ada.erase@example.com"});
    let bob = json!({"customer_id": "c-erase-bob", "email": "bob.keeps@example.com"});
    pipeline.send_ok(&[
        event(
            "web.page_viewed",
            "2026-10-01T10:00:00Z",
            guest.clone(),
            json!({"url": "https://erase-shop.example/engines"}),
        ),
        event(
            "order.placed",
            "2026-10-01T10:05:00Z",
            guest,
            json!({"order_id": "o-ada-1", "total_minor": 5000, "currency": "USD"}),
        ),
    ]);
    // The guest is a profile of their own before they register
    pipeline.wait_for_json(
        "/v1/customers?email=ada.erase@example.com",
        PATIENCE,
        |view| view["orders"]["count"] == 1,
    );
    pipeline.send_ok(&[
        event(
            "customer.registered",
            "2026-10-02T09:00:00Z",
            known.clone(),
            json!({"name": "Ada Lovelace", "city": "Marylebone"}),
        ),
        event(
            "order.placed",
            "2026-10-03T10:00:00Z",
            known.clone(),
            json!({"order_id": "o-ada-2", "total_minor": 7000, "currency": "USD"}),
        ),
        event(
            "ticket.opened",
            "2026-10-04T10:00:00Z",
            known.clone(),
            json!({"ticket_id": "t-ada", "category": "complaint", "subject": "my parcel is lost"}),
        ),
        event(
            "survey.answered",
            "2026-10-05T10:00:00Z",
            known,
            json!({"survey_id": "s-1", "nps": 10, "comment": "analytical engines rule"}),
        ),
    ]);
    pipeline.send_ok(&registered_and_ordered(
        &bob,
        ("2026-10-02T09:00:00Z", "Bob Keeps", "Leeds"),
        ("2026-10-03T11:00:00Z", "o-bob", 3000),
    ));
    pipeline.wait_until_caught_up(PATIENCE);
    let before = pipeline.wait_for_json("/v1/customers/c-erase-ada", PATIENCE, |view| {
        view["profile"]["name"] == "Ada Lovelace" && view["orders"]["count"] == 2
    });
    assert!(
        !before["merged_ids"].as_array().unwrap().is_empty(),
        "the guest was merged: {before}"
    );
    let (_, segments_before) = pipeline.get("/v1/segments?as_of=2026-11-01");

    // Her data keys, as the vault holds them now
    let subjects: Vec<String> = [
        ("customer_id", "c-erase-ada"),
        ("email", "ada.erase@example.com"),
        ("anonymous_id", "anon-erase-1"),
    ]
    .iter()
    .map(|(kind, value)| pipeline.pseudonym(kind, value))
    .collect();
    let issued = rapport_e2e::post_json_with_key(
        &format!("{}/v1/vault/keys", pipeline.identity_url()),
        &json!({ "subjects": subjects }),
        Some(&test_keys().service),
    );
    assert_eq!(issued.0, 200, "{}", issued.1);
    let data_keys: Vec<Vec<u8>> = issued.1["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            rapport_common::privacy::SecretKey::from_hex(key["key"].as_str().unwrap())
                .unwrap()
                .as_bytes()
                .to_vec()
        })
        .collect();

    // When she is erased by her email
    let answer = pipeline.rapportctl(&["erase", "ada.erase@example.com"]);
    let erasure_id = answer
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("erasure "))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no erasure id in {answer}"))
        .to_owned();
    assert!(answer.contains(": done"), "{answer}");
    assert!(
        !answer.contains("ada.erase"),
        "the answer repeats what was erased: {answer}"
    );

    // Then within 10 s nothing of hers reads in clear through the API
    let readable = |text: &str| {
        PERSONAL
            .iter()
            .find(|clear| occurrences(text.as_bytes(), clear.as_bytes()) > 0)
            .copied()
    };
    let after = pipeline.wait_for_json(
        "/v1/customers/c-erase-ada",
        Duration::from_secs(10),
        |view| readable(&view.to_string()).is_none(),
    );
    assert_eq!(after["profile"]["name"], "[erased]", "{after}");
    assert_eq!(after["orders"]["count"], 2, "her orders stay: {after}");
    assert_eq!(
        after["orders"]["net_spend_minor"],
        before["orders"]["net_spend_minor"]
    );
    let (_, timeline) = pipeline.get("/v1/customers/c-erase-ada/timeline?limit=50");
    assert_eq!(readable(&timeline.to_string()), None, "{timeline}");
    let (_, found) = pipeline.get("/v1/customers?email=bob.keeps@example.com");
    assert_eq!(
        found["profile"]["name"], "Bob Keeps",
        "another customer is untouched: {found}"
    );
    let (_, segments_after) = pipeline.get("/v1/segments?as_of=2026-11-01");
    assert_eq!(
        segments_after, segments_before,
        "segment sizes do not change"
    );
    for kind in ["rfm", "lifecycle", "value_tier", "loyalty"] {
        for (name, _) in segments_after[kind].as_object().into_iter().flatten() {
            let (_, members) = pipeline.get(&format!(
                "/v1/segments/{kind}/{name}/customers?as_of=2026-11-01&format=csv"
            ));
            assert_eq!(
                readable(&members.to_string()),
                None,
                "{kind}/{name}: {members}"
            );
        }
    }
    // The erasure is on record, without what was erased
    let (status, record) = get_json_with_key(
        &format!("{}/v1/admin/erasures/{erasure_id}", pipeline.identity_url()),
        Some(&test_keys().admin),
    );
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["state"], "done", "{record}");
    assert_eq!(
        record["requested_by"].as_str().map(str::len),
        Some(16),
        "{record}"
    );
    assert!(record["keys_destroyed"].as_u64().unwrap() >= 1, "{record}");
    assert_eq!(readable(&record.to_string()), None);

    // A rebuild of the customer view from the log brings nothing back
    pipeline.rapportctl(&["replay", "customer_view", "--version", "after", "--switch"]);
    let rebuilt = pipeline.wait_for_json("/v1/customers/c-erase-ada", PATIENCE, |view| {
        view["orders"]["count"] == 2
    });
    assert_eq!(readable(&rebuilt.to_string()), None, "{rebuilt}");
    assert_eq!(rebuilt["profile"]["name"], "[erased]");
    // And so does re-identifying the whole raw topic
    let reidentified = pipeline.rapportctl(&["reidentify", "--version", "r-erased"]);
    assert!(
        reidentified.lines().any(|line| line == "equal"),
        "{reidentified}"
    );

    // No file of any service, nor any record on the topics, holds her
    // personal values or her data keys
    let mut files = Vec::new();
    files_under(pipeline.dir.path(), &mut files);
    let before_broker = files.len();
    files_under(broker.storage_dir(), &mut files);
    assert!(
        files.len() > before_broker,
        "the broker's files are scanned: {files:?}"
    );
    // They hold the log: an order id, which is not personal, reads there
    let broker_bytes: Vec<u8> = files[before_broker..]
        .iter()
        .flat_map(|file| std::fs::read(file).unwrap_or_default())
        .collect();
    assert!(
        occurrences(&broker_bytes, b"o-bob") > 0,
        "the broker's files hold no record of the log"
    );
    assert!(files.len() > 10, "{files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        for clear in PERSONAL {
            assert_eq!(
                occurrences(&bytes, clear.as_bytes()),
                0,
                "{clear} in {}",
                file.display()
            );
        }
        for key in &data_keys {
            assert_eq!(
                occurrences(&bytes, key),
                0,
                "a data key of hers in {}",
                file.display()
            );
        }
    }
    let reidentified_topic = format!("{}.r-erased", pipeline.topics.customer);
    for topic in [
        &pipeline.topics.raw,
        &pipeline.topics.customer,
        &reidentified_topic,
    ] {
        for record in rapport_e2e::read_all(topic) {
            for clear in PERSONAL {
                assert_eq!(
                    occurrences(&record, clear.as_bytes()),
                    0,
                    "{clear} on {topic}"
                );
            }
            for key in &data_keys {
                assert_eq!(
                    occurrences(&record, key),
                    0,
                    "a data key of hers on {topic}"
                );
            }
        }
    }

    // She comes back with the same email and customer id: a new person,
    // who owns nothing of the erased one's
    // The erased person goes by the pseudonym of her customer id
    let erased_id = pipeline.pseudonym("customer_id", "c-erase-ada");
    let returning = json!({"customer_id": "c-erase-ada", "email": "ada.erase@example.com"});
    pipeline.send_ok(&registered_and_ordered(
        &returning,
        ("2026-11-10T09:00:00Z", "Ada Returns", "Bath"),
        ("2026-11-11T10:00:00Z", "o-ada-3", 1000),
    ));
    let back = pipeline.wait_for_json(
        "/v1/customers?email=ada.erase@example.com",
        PATIENCE,
        |view| view["profile"]["name"] == "Ada Returns" && view["orders"]["count"] == 1,
    );
    assert_ne!(back["customer_id"], erased_id, "{back}");
    assert_eq!(back["merged_ids"], json!([]), "{back}");
    assert_eq!(
        back["orders"]["net_spend_minor"],
        json!({"USD": 1000}),
        "{back}"
    );
    assert_eq!(
        back["identifiers"]["email"],
        json!(["ada.erase@example.com"]),
        "her new email reads: {back}"
    );
    let (_, by_id) = pipeline.get("/v1/customers/c-erase-ada");
    assert_eq!(by_id["customer_id"], back["customer_id"], "{by_id}");
    let (_, old) = pipeline.get(&format!("/v1/customers/{erased_id}"));
    assert_eq!(old["profile"]["name"], "[erased]", "{old}");
    assert_eq!(old["orders"]["count"], 2, "{old}");
    assert_eq!(readable(&old.to_string()), None, "{old}");
    // Re-identifying gives every event the person it had live
    pipeline.wait_until_caught_up(PATIENCE);
    let again = pipeline.rapportctl(&["reidentify", "--version", "r-back"]);
    assert!(again.lines().any(|line| line == "equal"), "{again}");
}

/// identity killed with SIGKILL while it erases: after the restart, every
/// erasure on record is done, and the person reads [erased]. (Whether the
/// kill lands before the request is recorded, while it is pending or after
/// it is done depends on timing; the identity unit tests complete a pending
/// one deterministically.)
#[test]
fn an_erasure_interrupted_by_kill_nine_is_done_after_the_restart() {
    let mut pipeline = Pipeline::start("erase-kill");
    pipeline.send_ok(&[event(
        "customer.registered",
        "2026-10-02T09:00:00Z",
        json!({"customer_id": "c-kill-ada", "email": "kill.ada@example.com"}),
        json!({"name": "Ada Killed"}),
    )]);
    pipeline.wait_for_json("/v1/customers/c-kill-ada", PATIENCE, |view| {
        view["profile"]["name"] == "Ada Killed"
    });
    let url = format!("{}/v1/admin/erasures", pipeline.identity_url());
    let request = std::thread::spawn(move || {
        let agent = rapport_e2e::http_agent();
        agent
            .post(&url)
            .header("authorization", rapport_e2e::bearer(&test_keys().admin))
            .send_json(json!({"email": "kill.ada@example.com"}))
            .map(|response| response.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(5));
    pipeline.identity.restart();
    let answered = request.join().expect("the request thread");
    let list = || {
        get_json_with_key(
            &format!("{}/v1/admin/erasures", pipeline.identity_url()),
            Some(&test_keys().admin),
        )
    };
    let (status, recorded) = list();
    assert_eq!(status, 200, "{recorded}");
    let erasures = recorded["erasures"].as_array().unwrap().clone();
    println!("answered before the kill: {answered:?}; on record after: {erasures:?}");
    if erasures.is_empty() {
        // Killed before anything was recorded: the client saw no answer,
        // and asking again erases.
        assert!(answered.is_err(), "an answered erasure must be on record");
        pipeline.rapportctl(&["erase", "kill.ada@example.com"]);
    }
    let (_, recorded) = list();
    for erasure in recorded["erasures"].as_array().unwrap() {
        assert_eq!(erasure["state"], "done", "{erasure}");
    }
    pipeline.wait_for_json(
        "/v1/customers/c-kill-ada",
        Duration::from_secs(10),
        |view| view["profile"]["name"] == "[erased]",
    );
}
