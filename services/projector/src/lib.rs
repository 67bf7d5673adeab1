//! The projector: folds the customer topic into RocksDB projections
//! ([`apply`]) and answers queries over them ([`query`]).

pub mod apply;
pub mod query;
pub mod versions;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use prost::Message as _;
    use rapport_common::metrics::Registry;
    use rapport_common::store::Store;
    use rapport_proto::v1::{self as proto, customer_record::Body as RecordBody};
    use serde_json::Value;
    use tower::ServiceExt;

    use crate::apply::{
        ApplyMetrics, CUSTOMER_VIEW, Consumed, DeadLetters, Positions, apply_batch,
    };
    use crate::query::{QueryState, router};
    use rapport_common::config::TopicNames;
    use rapport_common::kafka::Outgoing;

    fn event_record(
        customer_id: &str,
        offset: i64,
        payload: proto::event::Payload,
        kind: &str,
        linked: &[(&str, &str)],
    ) -> proto::CustomerRecord {
        proto::CustomerRecord {
            customer_id: customer_id.into(),
            source: Some(proto::SourcePosition {
                raw_partition: 0,
                raw_offset: offset,
                index: 0,
            }),
            received_at_ms: offset,
            body: Some(RecordBody::Event(proto::EventResolved {
                event: Some(proto::Event {
                    event_id: format!("e-{offset:03}"),
                    r#type: kind.into(),
                    occurred_at_ms: 1_000 * offset,
                    channel: "web".into(),
                    payload: Some(payload),
                    ..Default::default()
                }),
                linked: linked
                    .iter()
                    .map(|(kind, value)| proto::Identifier {
                        kind: (*kind).into(),
                        value: (*value).into(),
                    })
                    .collect(),
            })),
        }
    }

    fn view(url: &str) -> proto::event::Payload {
        proto::event::Payload::WebPageViewed(proto::PageViewed {
            url: url.into(),
            ..Default::default()
        })
    }

    async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A prospect on partition 1 is absorbed by c-1 on partition 0; reads of
    /// either id, and lookups by the prospect's identifier, answer one person.
    #[tokio::test]
    async fn a_merged_person_is_read_across_partitions() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        let metrics = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
        let merged_away = proto::CustomerRecord {
            customer_id: "prospect-1".into(),
            source: Some(proto::SourcePosition {
                raw_partition: 0,
                raw_offset: 3,
                index: 0,
            }),
            received_at_ms: 3,
            body: Some(RecordBody::MergedAway(proto::ProfileMergedAway {
                into: "c-1".into(),
                cause_event_id: "e-003".into(),
            })),
        };
        let merged = proto::CustomerRecord {
            customer_id: "c-1".into(),
            source: Some(proto::SourcePosition {
                raw_partition: 0,
                raw_offset: 3,
                index: 1,
            }),
            received_at_ms: 3,
            body: Some(RecordBody::Merged(proto::CustomersMerged {
                absorbed: vec!["prospect-1".into()],
                cause_event_id: "e-003".into(),
            })),
        };
        let records = [
            (
                1,
                event_record(
                    "prospect-1",
                    1,
                    view("/a"),
                    "web.page_viewed",
                    &[("anonymous_id", "anon-1")],
                ),
            ),
            (
                1,
                event_record("prospect-1", 2, view("/b"), "web.page_viewed", &[]),
            ),
            (1, merged_away),
            (0, merged),
            (
                0,
                event_record(
                    "c-1",
                    4,
                    view("/c"),
                    "web.page_viewed",
                    &[("customer_id", "c-1")],
                ),
            ),
        ];
        let consumed: Vec<Consumed> = records
            .iter()
            .enumerate()
            .map(|(offset, (partition, record))| Consumed {
                partition: *partition,
                offset: offset as i64,
                timestamp_ms: 0,
                key: Vec::new(),
                retry_of: None,
                payload: record.encode_to_vec(),
            })
            .collect();
        let mut positions = Positions::default();
        apply_batch(
            &store,
            CUSTOMER_VIEW,
            &consumed,
            &mut positions,
            &metrics,
            None,
            DeadLetters {
                topics: &TopicNames::default(),
                publish: &mut |_: &[Outgoing]| panic!("no dead letters expected"),
            },
        )
        .unwrap();

        let app = router(Arc::new(QueryState {
            versions: crate::versions::Versions::serving(store, "v1"),
            registry: Registry::default(),
        }));
        let (status, customer) = get(&app, "/v1/customers/c-1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(customer["event_counts"]["web.page_viewed"], 3);
        assert_eq!(customer["merged_ids"], serde_json::json!(["prospect-1"]));
        let (_, via_prospect) = get(&app, "/v1/customers/prospect-1").await;
        assert_eq!(via_prospect["customer_id"], "c-1");
        let (_, via_identifier) = get(&app, "/v1/customers?anonymous_id=anon-1").await;
        assert_eq!(via_identifier["customer_id"], "c-1");

        let (_, page) = get(&app, "/v1/customers/c-1/timeline?limit=2").await;
        let ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["e-004", "e-002"]);
        let cursor = page["next_before"].as_str().unwrap().to_owned();
        let (_, older) = get(
            &app,
            &format!("/v1/customers/c-1/timeline?limit=2&before={cursor}"),
        )
        .await;
        assert_eq!(older["items"].as_array().unwrap().len(), 1);
        assert_eq!(older["items"][0]["event_id"], "e-001");
        assert!(older.get("next_before").is_none());
    }

    #[tokio::test]
    async fn unknown_customers_and_bad_lookups_are_explained() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        let app = router(Arc::new(QueryState {
            versions: crate::versions::Versions::serving(store, "v1"),
            registry: Registry::default(),
        }));
        let (status, body) = get(&app, "/v1/customers/nobody").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("nobody"));
        let (status, _) = get(&app, "/v1/customers?email=a@b.com&phone=123").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get(&app, "/v1/customers?email=nobody@example.com").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get(&app, "/v1/customers/x/timeline?limit=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
