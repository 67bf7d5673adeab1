//! Kafka over TLS for real: the services reach a broker only through a
//! TLS-terminating proxy whose certificate comes from an authority made
//! for the test, and an event goes from ingest to the customer view. A
//! client that does not trust the authority, or speaks plain text, gets
//! nothing from the broker.

use std::time::Duration;

use rapport_common::config::KafkaConfig;
use rapport_e2e::{Pipeline, TlsBroker, event};
use serde_json::json;

#[test]
fn the_services_speak_tls_to_the_broker() {
    let _tls = TlsBroker::start();
    let pipeline = Pipeline::start("tls");
    pipeline.send_ok(&[event(
        "web.page_viewed",
        "2026-11-01T10:00:00Z",
        json!({"customer_id": "c-tls", "email": "tls@example.com"}),
        json!({"url": "/secure"}),
    )]);
    pipeline.wait_until_caught_up(Duration::from_secs(120));
    let (status, view) = pipeline.get("/v1/customers/c-tls");
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["event_counts"]["web.page_viewed"], 1, "{view}");
}

/// Whether a client with `properties` learns anything about the cluster
/// behind the proxy within a few seconds.
fn reaches(tls: &TlsBroker, properties: &[(&str, String)]) -> bool {
    let kafka = KafkaConfig {
        brokers: tls.address.clone(),
        properties: properties
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect(),
        ..KafkaConfig::default()
    };
    let (consumer, _) = rapport_common::kafka::assigning_consumer(&kafka, "tls-probe", false)
        .expect("a consumer is made without connecting");
    use rdkafka::consumer::Consumer as _;
    consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .is_ok()
}

#[test]
fn only_a_client_that_trusts_the_authority_reaches_the_broker() {
    let tls = TlsBroker::start();
    let ca = tls.ca.display().to_string();
    assert!(reaches(
        &tls,
        &[
            ("security.protocol", "SSL".to_owned()),
            ("ssl.ca.location", ca.clone()),
        ]
    ));
    // The system's authorities do not know the test's.
    assert!(!reaches(&tls, &[("security.protocol", "SSL".to_owned())]));
    // Another authority's certificate does not vouch for the broker.
    let other = rapport_e2e::certificate_authority(tls.certificates(), "other", "someone else");
    assert!(!reaches(
        &tls,
        &[
            ("security.protocol", "SSL".to_owned()),
            ("ssl.ca.location", other.display().to_string()),
        ]
    ));
    // Plain text is not answered.
    assert!(!reaches(&tls, &[]));
}
