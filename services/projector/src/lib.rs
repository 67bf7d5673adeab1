//! The projector: folds the customer topic into RocksDB projections
//! ([`apply`]) and answers queries over them ([`query`]).

pub mod apply;
mod campaigns_http;
pub mod changes;
pub mod cluster;
mod error;
mod figures;
mod internal_http;
mod openapi;
mod partitions_http;
pub mod position;
pub mod query;
mod read;
mod request;
pub mod router;
pub mod scores;
mod scores_http;
pub mod seek;
mod ui;
pub mod unseal;
pub mod versions;

pub use error::{Error, Result};

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

    use crate::apply::{ApplyMetrics, CUSTOMER_VIEW, Consumed, DeadLetters, apply_batch};
    use crate::position::Positions;
    use crate::query::QueryState;
    use crate::router::router;
    use crate::unseal::{DataKeys, Vault};
    use rapport_common::config::TopicNames;
    use rapport_common::kafka::Outgoing;
    use rapport_common::privacy::{self, DataKey, KeyRef, SecretKey};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

    /// Folds `records` (partition, record) into a fresh RocksDB store with
    /// the real fold and serves the query API over it. Keep the directory.
    fn serve(records: &[(i32, proto::CustomerRecord)]) -> (tempfile::TempDir, axum::Router) {
        serve_with(records, None)
    }

    /// Folds `records` (partition, record) into `store` with the real fold,
    /// at offsets from `first_offset` on.
    fn fold(store: &Store, records: &[(i32, proto::CustomerRecord)], first_offset: i64) {
        let metrics = ApplyMetrics::new(&Registry::default(), CUSTOMER_VIEW);
        let consumed: Vec<Consumed> = records
            .iter()
            .enumerate()
            .map(|(offset, (partition, record))| Consumed {
                partition: *partition,
                offset: first_offset + offset as i64,
                timestamp_ms: 0,
                key: Vec::new(),
                retry_of: None,
                payload: record.encode_to_vec(),
            })
            .collect();
        apply_batch(
            store,
            CUSTOMER_VIEW,
            &consumed,
            &mut Positions::load(store, CUSTOMER_VIEW).unwrap(),
            &metrics,
            crate::position::TimeWindow::default(),
            DeadLetters {
                topics: &TopicNames::default(),
                publish: &mut |_: &[Outgoing]| panic!("no dead letters expected"),
            },
        )
        .unwrap();
    }

    /// [`serve`], opening sealed values with keys from `vault`.
    fn serve_with(
        records: &[(i32, proto::CustomerRecord)],
        vault: Option<Arc<dyn crate::unseal::Vault>>,
    ) -> (tempfile::TempDir, axum::Router) {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        fold(&store, records, 0);
        let mut state = QueryState::new(
            crate::versions::Versions::serving(store, "v1"),
            Registry::default(),
            Default::default(),
        );
        if let Some(vault) = vault {
            state = state.with_vault(vault);
        }
        let app = router(
            Arc::new(state),
            &rapport_common::apikeys::Gate::open_for_tests(),
        );
        (directory, app)
    }

    /// A prospect on partition 1 is absorbed by c-1 on partition 0; reads of
    /// either id, and lookups by the prospect's identifier, answer one person.
    #[tokio::test]
    async fn a_merged_person_is_read_across_partitions() {
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
        let (_directory, app) = serve(&records);

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
    async fn every_route_checks_its_key_scope() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        let versions = crate::versions::Versions::serving(store, "v1");
        rapport_fuzzing::every_route_checks_its_scope(|gate| {
            crate::router::routes(
                Arc::new(QueryState::new(
                    versions.clone(),
                    Registry::default(),
                    Default::default(),
                )),
                gate,
            )
        })
        .await;
    }

    #[tokio::test]
    async fn unknown_customers_and_bad_lookups_are_explained() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        let app = router(
            Arc::new(QueryState::new(
                crate::versions::Versions::serving(store, "v1"),
                Registry::default(),
                Default::default(),
            )),
            &rapport_common::apikeys::Gate::open_for_tests(),
        );
        let (status, body) = get(&app, "/v1/customers/nobody").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("nobody"));
        let (status, _) = get(&app, "/v1/customers?email=a@b.com&phone=123").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get(&app, "/v1/customers?email=nobody@example.com").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get(&app, "/v1/customers/x/timeline?limit=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let response = app
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let text = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(text.to_vec()).unwrap();
        assert!(
            text.contains("rapport_http_request_duration_seconds_count{service=\"projector\",method=\"GET\",route=\"/v1/customers/{customer_id}\",status=\"404\"} 1"),
            "{text}"
        );

        // A path that is no text, or no route, is refused in JSON too.
        let (status, body) = get(&app, "/v1/customers/%FF%FE").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].as_str().is_some(), "{body}");
        let (status, body) = get(&app, "/v1/nothing/here").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body["error"].as_str().unwrap().contains("/v1/nothing/here"));

        // Versions: a missing one is 404, dropping the live one a clash.
        let (status, body) = get(&app, "/v1/customers/x?version=v9").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let answer = |request: Request<Body>| {
            let app = app.clone();
            async move { app.oneshot(request).await.unwrap().status() }
        };
        let switch = Request::post("/v1/admin/versions/v9/switch").body(Body::empty());
        assert_eq!(answer(switch.unwrap()).await, StatusCode::NOT_FOUND);
        let drop_live = Request::delete("/v1/admin/versions/v1").body(Body::empty());
        assert_eq!(answer(drop_live.unwrap()).await, StatusCode::CONFLICT);
        let drop_missing = Request::delete("/v1/admin/versions/v9").body(Body::empty());
        assert_eq!(answer(drop_missing.unwrap()).await, StatusCode::NOT_FOUND);
    }

    /// Thirty customers with purchase histories, applied through the real
    async fn get_page(
        app: &axum::Router,
        uri: &str,
    ) -> (StatusCode, String, axum::http::HeaderMap) {
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap(), headers)
    }

    /// [`get_page`], asked again while it answers 202 (figures being gathered).
    async fn get_ready(
        app: &axum::Router,
        uri: &str,
    ) -> (StatusCode, String, axum::http::HeaderMap) {
        for _ in 0..1_500 {
            let answer = get_page(app, uri).await;
            if answer.0 != StatusCode::ACCEPTED {
                return answer;
            }
            assert!(answer.1.contains("reloads itself"), "{}", answer.1);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{uri} was still being gathered after 30 s");
    }

    /// The `data-value`s of the links in the cells of the R × FM grid.
    fn grid_counts(html: &str) -> Vec<(String, u64)> {
        html.split("data-r=\"")
            .skip(1)
            .map(|cell| {
                let r = &cell[..1];
                let fm = cell.split("data-fm=\"").nth(1).unwrap();
                let value = cell.split("data-value=\"").nth(1).unwrap();
                let count = value[..value.find('"').unwrap()].parse().unwrap();
                (format!("{r}-{}", &fm[..1]), count)
            })
            .collect()
    }

    /// The dashboard's pages over the same thirty buyers: the grid adds up
    /// to the people with an RFM score, a cell lists exactly its people,
    /// search finds a person by email, bad input is a 400 page.
    #[tokio::test]
    async fn dashboard_pages_show_the_population_and_its_people() {
        let (_directory, app) = serve(&thirty_buyers());
        let as_of = "1970-10-01";
        let (status, overview, headers) = get_ready(&app, &format!("/ui/?as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK, "{overview}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(headers.contains_key("content-security-policy"));
        let cells = grid_counts(&overview);
        assert_eq!(cells.len(), 25);
        let (_, segments) = get(&app, &format!("/v1/segments?as_of={as_of}")).await;
        let scored: u64 = segments["rfm"]
            .as_object()
            .unwrap()
            .values()
            .map(|count| count.as_u64().unwrap())
            .sum();
        assert_eq!(cells.iter().map(|(_, count)| count).sum::<u64>(), scored);
        assert!(scored > 0);
        for (cell, count) in cells.iter().filter(|(_, count)| *count > 0) {
            let (status, list, _) =
                get_page(&app, &format!("/ui/people?rfm={cell}&as_of={as_of}")).await;
            assert_eq!(status, StatusCode::OK, "{list}");
            assert_eq!(
                list.matches("href=\"/ui/customers/c-").count() as u64,
                *count,
                "cell {cell}"
            );
        }
        // The models page's counts of buyers, and the cohorts' retention
        // cells, link to exactly those buyers.
        let (status, models, _) = get_ready(&app, &format!("/ui/models?as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK, "{models}");
        let (status, cohorts, _) = get_ready(&app, &format!("/ui/cohorts?as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK, "{cohorts}");
        // The models page loads its validation as a fragment: by default
        // the 26 weeks up to `as_of`, else the dates of its form
        assert!(
            models.contains(
                "hx-get=\"/ui/models/validation?calibration_end=1970-04-02&amp;holdout_end=1970-10-01\""
            ),
            "{models}"
        );
        let (status, fragment, _) = get_page(
            &app,
            "/ui/models/validation?calibration_end=1970-06-01&holdout_end=1970-10-01",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{fragment}");
        assert!(fragment.contains("18 buyers by 1970-06-01"), "{fragment}");
        assert!(fragment.contains("validation-weekly-data"), "{fragment}");
        let (status, refusal, _) = get_page(
            &app,
            "/ui/models?calibration_end=1970-10-01&holdout_end=1970-06-01",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(refusal.contains("holdout_end"), "{refusal}");
        let pages = format!("{models}{cohorts}");
        let links: Vec<(String, u64)> = pages
            .split("<a class=\"count\" href=\"")
            .skip(1)
            .map(|link| {
                let href = link[..link.find('"').unwrap()].replace("&amp;", "&");
                let value = link.split("data-value=\"").nth(1).unwrap();
                (href, value[..value.find('"').unwrap()].parse().unwrap())
            })
            .collect();
        assert!(
            links.iter().any(|(href, _)| href.contains("repeats=")),
            "{models}"
        );
        assert!(
            links.iter().any(|(href, _)| href.contains("clv=")),
            "{models}"
        );
        for (href, count) in links.iter().filter(|(_, count)| *count <= 50) {
            let (status, list, _) = get_page(&app, href).await;
            assert_eq!(status, StatusCode::OK, "{href}: {list}");
            assert_eq!(
                list.matches("href=\"/ui/customers/c-").count() as u64,
                *count,
                "{href}"
            );
        }
        let (status, _, headers) = get_page(&app, "/ui/customers?q=C-27%40Example.com").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers["location"], "/ui/customers/c-27");
        let (status, person, _) =
            get_page(&app, &format!("/ui/customers/c-27?as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK, "{person}");
        assert!(person.contains("o-27-3") && person.contains("order.placed"));
        for page in [
            "churn",
            "segments",
            "models",
            "cohorts",
            "ops",
            "people?filter=buyers",
        ] {
            let (status, body, _) = get_ready(&app, &format!("/ui/{page}")).await;
            assert_eq!(status, StatusCode::OK, "{page}: {body}");
            if page == "cohorts" {
                // Retention cells are shaded: one class attribute, both classes.
                assert!(body.contains("class=\"number heat-"), "{body}");
            }
        }
        let (status, csv, headers) =
            get_page(&app, &format!("/ui/people.csv?filter=buyers&as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        assert!(csv.starts_with("customer_id,email,phone,name,email_consent\n"));
        assert_eq!(csv.lines().count(), 31, "a header and thirty buyers");
        let (status, refusal, _) = get_page(&app, "/ui/people?rfm=9-9").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(refusal.contains("rfm"), "{refusal}");
        let (status, _, _) = get_page(&app, "/ui/customers/nobody").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    /// Thirty customers with one to four orders each in 1970.
    fn thirty_buyers() -> Vec<(i32, proto::CustomerRecord)> {
        const DAY_MS: i64 = 86_400_000;
        let mut records = Vec::new();
        for customer in 0..30_i64 {
            let id = format!("c-{customer:02}");
            // Spend varies within each customer, as Gamma-Gamma expects.
            let spread = [0, 1_500 * (customer % 3), -700, 900 * (customer % 5)];
            for purchase in 0..(1 + customer % 4) {
                let day = 100 + customer * 3 + purchase * (20 + customer % 7);
                let offset = records.len() as i64;
                let mut record = event_record(
                    &id,
                    offset,
                    proto::event::Payload::OrderPlaced(proto::OrderPlaced {
                        order_id: format!("o-{customer}-{purchase}"),
                        total_minor: 2_000 + 1_000 * customer + spread[purchase as usize],
                        currency: "USD".into(),
                        items: vec![],
                    }),
                    "order.placed",
                    &[
                        ("customer_id", id.as_str()),
                        ("email", &format!("{id}@example.com")),
                    ],
                );
                if let Some(RecordBody::Event(resolved)) = record.body.as_mut() {
                    resolved.event.as_mut().unwrap().occurred_at_ms = day * DAY_MS;
                }
                records.push((0, record));
            }
        }
        records
    }

    /// Campaign email for some of [`thirty_buyers`]: (customer, day, kind,
    /// campaign). Spring goes to c-00 … c-03 on day 95: c-00 opens it five
    /// days before their order, c-01 clicks it exactly seven days before
    /// theirs, c-02 withdraws email consent two days after, and c-03's
    /// bounces. Autumn goes to c-01 on day 120, who opens it the day
    /// before their second order: the last touch, so that order is
    /// autumn's.
    fn campaign_mail(records: &mut Vec<(i32, proto::CustomerRecord)>) {
        const DAY_MS: i64 = 86_400_000;
        let message = |campaign: &str| proto::EmailMessage {
            message_id: format!("m-{campaign}"),
            campaign_id: campaign.into(),
            url: String::new(),
        };
        let events: [(i64, i64, &str, &str); 10] = [
            (0, 95, "email.sent", "spring"),
            (1, 95, "email.sent", "spring"),
            (2, 95, "email.sent", "spring"),
            (3, 95, "email.sent", "spring"),
            (0, 95, "email.opened", "spring"),
            (1, 96, "email.clicked", "spring"),
            (3, 95, "email.bounced", "spring"),
            (2, 97, "consent.changed", ""),
            (1, 120, "email.sent", "autumn"),
            (1, 123, "email.opened", "autumn"),
        ];
        for (customer, day, kind, campaign) in events {
            let id = format!("c-{customer:02}");
            let payload = match kind {
                "email.sent" => proto::event::Payload::EmailSent(message(campaign)),
                "email.opened" => proto::event::Payload::EmailOpened(message(campaign)),
                "email.clicked" => proto::event::Payload::EmailClicked(message(campaign)),
                "email.bounced" => proto::event::Payload::EmailBounced(message(campaign)),
                _ => proto::event::Payload::ConsentChanged(proto::ConsentChanged {
                    channel: "email".into(),
                    granted: false,
                }),
            };
            let offset = records.len() as i64;
            let mut record =
                event_record(&id, offset, payload, kind, &[("customer_id", id.as_str())]);
            if let Some(RecordBody::Event(resolved)) = record.body.as_mut() {
                resolved.event.as_mut().unwrap().occurred_at_ms = day * DAY_MS;
            }
            records.push((0, record));
        }
    }

    /// What the scoreboard answers at two days: segment counts and members
    /// of every segment, everyone's scores, both models, cohorts, campaigns.
    async fn scoreboard_answers(app: &axum::Router) -> Vec<(String, Value)> {
        let mut uris = vec![
            "/v1/campaigns".to_owned(),
            "/v1/campaigns/spring".to_owned(),
        ];
        for as_of in ["1970-10-01", "1970-08-15"] {
            let (_, counts) = get(app, &format!("/v1/segments?as_of={as_of}")).await;
            for kind in ["rfm", "lifecycle", "value_tier", "loyalty"] {
                for name in counts[kind].as_object().unwrap().keys() {
                    uris.push(format!(
                        "/v1/segments/{kind}/{name}/customers?as_of={as_of}&limit=100"
                    ));
                }
            }
            uris.push(format!("/v1/segments?as_of={as_of}"));
            uris.push(format!("/v1/models/bgnbd?as_of={as_of}"));
            uris.push(format!("/v1/models/gamma-gamma?as_of={as_of}"));
            uris.push(format!("/v1/cohorts?as_of={as_of}"));
            for customer in 0..30 {
                uris.push(format!(
                    "/v1/customers/c-{customer:02}/scores?as_of={as_of}"
                ));
            }
        }
        let mut answers = Vec::new();
        for uri in uris {
            let (status, body) = get(app, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            answers.push((uri, body));
        }
        answers
    }

    fn image_pieces(store: &Store) -> usize {
        store
            .scan_prefix(
                CUSTOMER_VIEW,
                &[rapport_common::keys::SCOREBOARD_IMAGE],
                usize::MAX,
            )
            .unwrap()
            .len()
    }

    #[tokio::test]
    async fn a_restarted_scoreboard_answers_from_its_image_as_a_fresh_scan_does() {
        // Given a projector that scored everyone at two days and stopped
        let mut records = thirty_buyers();
        campaign_mail(&mut records);
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        fold(&store, &records, 0);
        let versions = crate::versions::Versions::serving(store.clone(), "v1");
        let gate = rapport_common::apikeys::Gate::open_for_tests();
        let start = || {
            Arc::new(QueryState::new(
                versions.clone(),
                Registry::default(),
                Default::default(),
            ))
        };
        let before = start();
        let answered = scoreboard_answers(&router(before.clone(), &gate)).await;
        before.save_scoreboards().unwrap();
        drop(before);
        assert!(image_pieces(&store) >= 3, "meta, facts and snapshot rows");

        // When it starts again, it reads the board back instead of scanning
        let restarted = start();
        let view = restarted.view(None).unwrap();
        assert!(restarted.scores.restore(&view, "v1", None).unwrap());
        assert_eq!(image_pieces(&store), 0, "an image is read once");
        let restored = scoreboard_answers(&router(restarted.clone(), &gate)).await;

        // Then every answer equals the one before the restart and a fresh
        // scan's
        let scanned = scoreboard_answers(&router(start(), &gate)).await;
        for ((uri, before), ((_, after), (_, fresh))) in
            answered.iter().zip(restored.iter().zip(&scanned))
        {
            assert_eq!(before, after, "{uri} after the restart");
            assert_eq!(fresh, after, "{uri} from a scan");
        }
        assert_eq!(answered.len(), restored.len());

        // And an image of a store that moved on since is not used
        restarted.save_scoreboards().unwrap();
        assert!(image_pieces(&store) >= 3);
        let mut later = event_record(
            "c-05",
            records.len() as i64,
            proto::event::Payload::OrderPlaced(proto::OrderPlaced {
                order_id: "o-late".into(),
                total_minor: 99_00,
                currency: "USD".into(),
                items: vec![],
            }),
            "order.placed",
            &[("customer_id", "c-05")],
        );
        if let Some(RecordBody::Event(resolved)) = later.body.as_mut() {
            resolved.event.as_mut().unwrap().occurred_at_ms = 200 * 86_400_000;
        }
        fold(&store, &[(0, later)], records.len() as i64);
        let moved_on = start();
        assert!(!moved_on.scores.restore(&view, "v1", None).unwrap());
        assert_eq!(image_pieces(&store), 0, "a stale image is deleted");
        let app = router(moved_on, &gate);
        let (_, scores) = get(&app, "/v1/customers/c-05/scores?as_of=1970-10-01").await;
        let (_, fresh) = get(
            &router(start(), &gate),
            "/v1/customers/c-05/scores?as_of=1970-10-01",
        )
        .await;
        assert_eq!(scores, fresh);
        assert_eq!(scores["rfm"]["frequency"], fresh["rfm"]["frequency"]);
    }

    #[tokio::test]
    async fn campaign_results_are_served_with_their_breakdowns() {
        // Given the thirty buyers and their campaign email
        let mut records = thirty_buyers();
        campaign_mail(&mut records);
        let (_directory, app) = serve(&records);
        let (_, document) = get(&app, "/openapi.json").await;
        let described = |template: &str, status: StatusCode, body: &Value| {
            if let Err(error) =
                rapport_fuzzing::answer_matches(&document, "GET", template, status.as_u16(), body)
            {
                panic!("{error}\n{body}");
            }
        };
        // When the campaigns are listed
        let (status, list) = get(&app, "/v1/campaigns").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        described("/v1/campaigns", status, &list);
        // Then autumn, sent last, comes first, and each has its figures
        let ids: Vec<&str> = list["campaigns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["campaign_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["autumn", "spring"]);
        let spring = &list["campaigns"][1];
        let counts: Vec<u64> = [
            "sent",
            "delivered",
            "bounced",
            "opened",
            "clicked",
            "unsubscribed",
            "converted",
            "orders",
        ]
        .iter()
        .map(|field| spring[field].as_u64().unwrap())
        .collect();
        assert_eq!(counts, [4, 3, 1, 2, 1, 1, 2, 2], "{spring}");
        // c-00's 2 000 and c-01's first order of 3 000
        assert_eq!(spring["revenue_minor"], 5_000);
        assert_eq!(spring["first_sent"], "1970-04-06");
        let autumn = &list["campaigns"][0];
        assert_eq!(
            (
                autumn["converted"].as_u64(),
                autumn["revenue_minor"].as_i64()
            ),
            (Some(1), Some(4_500))
        );
        // And the dates filter by first send
        let (_, later) = get(&app, "/v1/campaigns?from=1970-04-10").await;
        assert_eq!(later["campaigns"].as_array().unwrap().len(), 1);
        let (status, refusal) = get(&app, "/v1/campaigns?from=1970-05-01&to=1970-04-01").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(refusal.to_string().contains("\"to\""), "{refusal}");

        // When one campaign is asked for
        let (status, report) = get(&app, "/v1/campaigns/autumn").await;
        assert_eq!(status, StatusCode::OK, "{report}");
        described("/v1/campaigns/{campaign_id}", status, &report);
        // Then its recipient is counted under the stage they had the day
        // before the send: one purchase by then
        assert_eq!(
            report["by_lifecycle_stage"]["first_time"]["converted"], 1,
            "{report}"
        );
        let segments = report["by_rfm_segment"].as_object().unwrap();
        assert_eq!(segments.len(), 1, "{report}");
        assert!(!segments.contains_key("none"), "{report}");
        // And spring's recipients had not bought yet
        let (_, spring) = get(&app, "/v1/campaigns/spring").await;
        assert_eq!(spring["by_rfm_segment"]["none"]["sent"], 4, "{spring}");
        assert_eq!(spring["sent"], 4);
        let (status, _) = get(&app, "/v1/campaigns/winter").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // And the dashboard shows both, and the breakdown
        let (status, page, _) = get_page(&app, "/ui/campaigns").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("href=\"/ui/campaigns/spring\""), "{page}");
        let (status, page, _) = get_page(&app, "/ui/campaigns/autumn").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("first_time"), "{page}");
        let (status, _, _) = get_page(&app, "/ui/campaigns/winter").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    /// fold into RocksDB, then analysed over the router.
    #[tokio::test]
    async fn scores_models_and_segments_are_served_for_an_as_of() {
        let records = thirty_buyers();
        let (_directory, app) = serve(&records);
        let as_of = "1970-10-01";
        // Every answer below has the types the API document gives it
        let (_, document) = get(&app, "/openapi.json").await;
        let described = |template: &str, status: StatusCode, body: &Value| {
            if let Err(error) =
                rapport_fuzzing::answer_matches(&document, "GET", template, status.as_u16(), body)
            {
                panic!("{error}\n{body}");
            }
        };

        // Cohorts: everyone's first purchase fell in April to July 1970;
        // those with two or more (c % 4 != 0) came back 20 + c % 7 days later
        let (status, cohorts) = get(&app, &format!("/v1/cohorts?as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK, "{cohorts}");
        described("/v1/cohorts", status, &cohorts);
        let repeaters: Vec<i64> = (0..30).filter(|customer| customer % 4 != 0).collect();
        assert_eq!(cohorts["buyers"], 30);
        assert_eq!(cohorts["repeat_buyers"], repeaters.len());
        let gaps: i64 = repeaters.iter().map(|customer| 20 + customer % 7).sum();
        let second = &cohorts["second_purchase"];
        assert_eq!(second["buyers"], repeaters.len());
        assert!(
            (second["mean_days"].as_f64().unwrap() - gaps as f64 / repeaters.len() as f64).abs()
                < 1e-9
        );
        assert_eq!(
            second["buckets"][1]["buyers"],
            repeaters.len(),
            "all 8-30 days"
        );
        let months: Vec<&str> = cohorts["cohorts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["month"].as_str().unwrap())
            .collect();
        assert_eq!(months, ["1970-04", "1970-05", "1970-06", "1970-07"]);
        let sizes: u64 = cohorts["cohorts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["size"].as_u64().unwrap())
            .sum();
        assert_eq!(sizes, 30);

        // The biggest repeat buyer (c-27: 4 occasions) at as_of
        let (status, scores) = get(&app, &format!("/v1/customers/c-27/scores?as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK, "{scores}");
        assert_eq!(scores["customer_id"], "c-27");
        assert_eq!(scores["as_of"], as_of);
        assert_eq!(scores["rfm"]["frequency"], 4);
        // 29 000 each, with c-27's spread of 0, 0, −700 and +1 800
        assert_eq!(scores["rfm"]["monetary_minor"], 4 * 29_000 - 700 + 1_800);
        assert_eq!(scores["rfm"]["m"], 5);
        assert!(scores["churn"]["p_alive"].as_f64().is_some());
        assert!(scores["clv"]["expected_value_minor"].as_f64().is_some());
        described("/v1/customers/{customer_id}/scores", status, &scores);
        for (template, uri) in [
            ("/v1/customers/{customer_id}", "/v1/customers/c-27"),
            ("/v1/customers", "/v1/customers?email=c-27@example.com"),
            (
                "/v1/customers/{customer_id}/timeline",
                "/v1/customers/c-27/timeline?limit=2",
            ),
            ("/v1/identity/conflicts", "/v1/identity/conflicts"),
            ("/v1/admin/status", "/v1/admin/status"),
            ("/v1/admin/versions", "/v1/admin/versions"),
            ("/healthz", "/healthz"),
        ] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            described(template, status, &body);
        }
        assert_eq!(scores["loyalty"]["tier"], "Silver");
        assert_eq!(scores["loyalty"]["points"], 290 + 290 + 283 + 308);
        // …and before their first order they had no scores at all
        let (_, before) = get(&app, "/v1/customers/c-27/scores?as_of=1970-01-05").await;
        assert!(before["rfm"].is_null() && before["lifecycle"].is_null());

        let (status, model) = get(&app, &format!("/v1/models/bgnbd?as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK, "{model}");
        assert_eq!(model["customers"], 30);
        assert_eq!(model["time_unit"], "weeks");
        described("/v1/models/bgnbd", status, &model);
        // Customer c first buys on day 100 + 3c: by 8 May 1970 (day 127)
        // the first ten have, and the fit sees no one else.
        let (status, early) = get(&app, "/v1/models/bgnbd?as_of=1970-05-08").await;
        assert_eq!(status, StatusCode::OK, "{early}");
        assert_eq!(early["customers"], 10, "{early}");
        assert_ne!(
            early["r"], model["r"],
            "a different population, a different fit"
        );
        // Validated on what was known by 1 June 1970 against the four
        // months after: every buyer of the calibration period is predicted,
        // and the holdout's purchases are those made after it
        let (status, validation) = get(
            &app,
            "/v1/models/bgnbd/validation?calibration_end=1970-06-01&holdout_end=1970-10-01",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{validation}");
        described("/v1/models/bgnbd/validation", status, &validation);
        let june_first = 151;
        let (calibration_buyers, holdout_purchases) = (0..30_i64)
            .filter(|customer| 100 + customer * 3 <= june_first)
            .fold((0, 0), |(buyers, purchases), customer| {
                let later = (0..(1 + customer % 4))
                    .map(|purchase| 100 + customer * 3 + purchase * (20 + customer % 7))
                    .filter(|day| *day > june_first && *day <= 273)
                    .count();
                (buyers + 1, purchases + later)
            });
        let purchases = &validation["purchases"];
        assert_eq!(purchases["customers"], calibration_buyers);
        assert_eq!(purchases["actual_total"], holdout_purchases);
        assert_eq!(validation["holdout_days"], 273 - june_first);
        assert_eq!(purchases["weekly"].as_array().unwrap().len(), 18);
        for (query, field) in [
            (
                "calibration_end=1970-06-01&holdout_end=1970-06-01",
                "holdout_end",
            ),
            (
                "calibration_end=1970-06-01&holdout_end=1975-06-01",
                "holdout_end",
            ),
            ("calibration_end=June", "calibration_end"),
            ("horizon=3", "horizon"),
        ] {
            let (status, refusal) =
                get(&app, &format!("/v1/models/bgnbd/validation?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {refusal}");
            assert!(refusal.to_string().contains(field), "{query}: {refusal}");
        }
        let (status, model) = get(
            &app,
            &format!(
                "/v1/models/gamma-gamma?as_of={as_of}&cohort_from=1970-04-11&cohort_to=1970-06-01"
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{model}");
        assert!(model["customers"].as_u64().unwrap() < 30);
        assert_eq!(model["cohort_from"], "1970-04-11");
        described("/v1/models/gamma-gamma", status, &model);

        let (status, segments) = get(&app, &format!("/v1/segments?as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK, "{segments}");
        assert_eq!(segments["customers"], 30);
        described("/v1/segments", status, &segments);
        let total = |kind: &str| -> u64 {
            segments[kind]
                .as_object()
                .unwrap()
                .values()
                .map(|count| count.as_u64().unwrap())
                .sum()
        };
        assert_eq!(total("lifecycle"), 30);
        assert_eq!(total("loyalty"), 30);
        assert_eq!(total("rfm"), 30);
        assert_eq!(segments["rfm"].as_object().unwrap().len(), 11);

        // The members of the largest loyalty tier, as JSON pages and as CSV
        let (tier, count) = segments["loyalty"]
            .as_object()
            .unwrap()
            .iter()
            .max_by_key(|(_, count)| count.as_u64().unwrap())
            .map(|(tier, count)| (tier.clone(), count.as_u64().unwrap()))
            .unwrap();
        let path = format!("/v1/segments/loyalty/{tier}/customers?as_of={as_of}");
        let (status, page) = get(&app, &format!("{path}&limit=2")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            page["customers"].as_array().unwrap().len(),
            2.min(count as usize)
        );
        described("/v1/segments/{kind}/{name}/customers", status, &page);
        let response = app
            .clone()
            .oneshot(
                Request::get(format!("{path}&format=csv"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        let csv = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let csv = String::from_utf8(csv.to_vec()).unwrap();
        assert_eq!(csv.lines().count() as u64, count + 1, "{csv}");
        assert!(csv.lines().nth(1).unwrap().contains("@example.com"));

        for (bad, expected) in [
            (
                "/v1/customers/c-01/scores?as_of=1970-02-30",
                StatusCode::BAD_REQUEST,
            ),
            ("/v1/customers/nobody/scores", StatusCode::NOT_FOUND),
            (
                "/v1/models/bgnbd?cohort_from=1970-01-01",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/v1/models/bgnbd?as_of=1970-01-01",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            ("/v1/segments/colour/red/customers", StatusCode::NOT_FOUND),
            ("/v1/segments/rfm/nope/customers", StatusCode::NOT_FOUND),
            (
                "/v1/segments/rfm/champions/customers?format=xml",
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let (status, body) = get(&app, bad).await;
            assert_eq!(status, expected, "{bad}: {body}");
            let template = match bad.split('?').next().unwrap() {
                path if path.ends_with("/scores") => "/v1/customers/{customer_id}/scores",
                path if path.starts_with("/v1/segments/") => "/v1/segments/{kind}/{name}/customers",
                path => path,
            };
            described(template, status, &body);
        }
    }

    #[tokio::test]
    async fn the_openapi_document_describes_every_route() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path(), &[CUSTOMER_VIEW]).unwrap();
        let (router, table) = crate::router::routes(
            Arc::new(QueryState::new(
                crate::versions::Versions::serving(store, "v1"),
                Registry::default(),
                Default::default(),
            )),
            &rapport_common::apikeys::Gate::open_for_tests(),
        );
        let document = rapport_fuzzing::describes_every_route(router, &table).await;
        assert_eq!(document["info"]["title"], "Rapport projector");
        // Query parameters come from the handlers' own parameter types
        let names = |path: &str| -> Vec<String> {
            document["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|parameter| parameter["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names("/v1/customers"),
            ["version", "customer_id", "email", "phone", "anonymous_id"]
        );
        assert_eq!(
            names("/v1/models/bgnbd"),
            ["as_of", "cohort_from", "cohort_to", "version"]
        );
        let members = &document["paths"]["/v1/segments/{kind}/{name}/customers"]["get"];
        assert!(
            members["responses"]["200"]["content"]["text/csv"].is_object(),
            "{members}"
        );
    }

    /// The vault as the projector sees it, in memory: a pseudonym key, the
    /// data keys ingest sealed with (erasing one sets it to `None`), and a
    /// switch that makes it stop answering.
    struct MemoryVault {
        pseudonym_key: SecretKey,
        keys: Mutex<DataKeys>,
        answers: AtomicBool,
        lookups: AtomicUsize,
    }

    impl Vault for MemoryVault {
        fn pseudonym_key(&self) -> &SecretKey {
            &self.pseudonym_key
        }

        fn lookup(&self, wanted: &[KeyRef]) -> rapport_common::Result<DataKeys> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            if !self.answers.load(Ordering::Relaxed) {
                return Err(rapport_common::Error::Config(
                    "the vault did not answer".into(),
                ));
            }
            let keys = self.keys.lock().unwrap();
            Ok(wanted
                .iter()
                .map(|key| {
                    let id = (key.subject.clone(), key.key_id.clone());
                    let found = keys.get(&id).cloned().flatten();
                    (id, found)
                })
                .collect())
        }
    }

    async fn get_text(
        app: &axum::Router,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Ada's events as ingest writes them with sealing on: identifiers as
    /// pseudonyms with sealed tokens for display, personal fields sealed.
    /// Every answer shows her in clear, lookups by clear values find her,
    /// and once her key is destroyed every sealed value reads `[erased]`.
    #[tokio::test]
    async fn sealed_people_are_shown_in_clear_until_erased() {
        let vault = Arc::new(MemoryVault {
            pseudonym_key: SecretKey::random().unwrap(),
            keys: Mutex::default(),
            answers: AtomicBool::new(true),
            lookups: AtomicUsize::new(0),
        });
        let pseudonym =
            |kind: &str, value: &str| privacy::pseudonym(&vault.pseudonym_key, kind, value);
        let ada = pseudonym("customer_id", "c-1");
        let ada_email = pseudonym("email", "ada@example.com");
        let data_key = DataKey {
            subject: ada.clone(),
            key_id: "00000000000000a1".into(),
            key: SecretKey::random().unwrap(),
        };
        vault.keys.lock().unwrap().insert(
            (ada.clone(), "00000000000000a1".into()),
            Some(data_key.key.clone()),
        );
        let seal = |text: &str| privacy::seal_text(&data_key, text).unwrap();
        let sealed_event = |offset: i64, payload: proto::event::Payload, kind: &str| {
            let mut record = event_record(
                &ada,
                offset,
                payload,
                kind,
                &[("customer_id", &ada), ("email", &ada_email)],
            );
            if let Some(RecordBody::Event(resolved)) = record.body.as_mut() {
                resolved.event.as_mut().unwrap().customer = Some(proto::CustomerIdentifiers {
                    customer_id: ada.clone(),
                    customer_id_sealed: seal("c-1"),
                    email: ada_email.clone(),
                    email_sealed: seal("ada@example.com"),
                    ..Default::default()
                });
            }
            record
        };
        let records = [
            (
                0,
                sealed_event(
                    1,
                    proto::event::Payload::CustomerRegistered(proto::CustomerProfile {
                        name: seal("Ada Lovelace"),
                        email: seal("ada@example.com"),
                        city: seal("London"),
                        ..Default::default()
                    }),
                    "customer.registered",
                ),
            ),
            (
                0,
                sealed_event(
                    2,
                    view(&seal("https://shop.example/secret")),
                    "web.page_viewed",
                ),
            ),
            (
                0,
                sealed_event(
                    3,
                    proto::event::Payload::OrderPlaced(proto::OrderPlaced {
                        order_id: "o-1".into(),
                        total_minor: 2_000,
                        currency: "USD".into(),
                        items: vec![],
                    }),
                    "order.placed",
                ),
            ),
        ];
        let (_directory, app) = serve_with(&records, Some(vault.clone()));

        // By her clear customer id, her pseudonym, or her email in any case.
        let (status, customer) = get(&app, "/v1/customers/c-1").await;
        assert_eq!(status, StatusCode::OK, "{customer}");
        assert_eq!(customer["customer_id"], "c-1");
        assert_eq!(customer["profile"]["name"], "Ada Lovelace");
        assert_eq!(customer["profile"]["city"], "London");
        assert_eq!(
            customer["identifiers"]["email"],
            serde_json::json!(["ada@example.com"])
        );
        assert_eq!(
            customer["identifiers"]["customer_id"],
            serde_json::json!(["c-1"])
        );
        let (_, by_pseudonym) = get(&app, &format!("/v1/customers/{ada}")).await;
        assert_eq!(by_pseudonym, customer);
        for lookup in [
            "email=Ada@Example.COM",
            "customer_id=c-1",
            &format!("customer_id={ada}"),
        ] {
            let (status, found) = get(&app, &format!("/v1/customers?{lookup}")).await;
            assert_eq!(status, StatusCode::OK, "{lookup}: {found}");
            assert_eq!(found, customer, "{lookup}");
        }
        let (status, missing) = get(&app, "/v1/customers?email=grace@example.com").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!missing.to_string().contains("grace"), "{missing}");

        let (status, page) = get(&app, "/v1/customers/c-1/timeline").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["customer_id"], "c-1");
        assert_eq!(
            page["items"][1]["summary"],
            "viewed https://shop.example/secret"
        );
        assert_eq!(page["items"][2]["summary"], "registered Ada Lovelace");
        assert_eq!(page["items"][2]["profile_id"], "c-1");

        let as_of = "1970-01-02";
        let (status, scores) = get(&app, &format!("/v1/customers/c-1/scores?as_of={as_of}")).await;
        assert_eq!(status, StatusCode::OK, "{scores}");
        assert_eq!(scores["customer_id"], "c-1");
        let (_, segments) = get(&app, &format!("/v1/segments?as_of={as_of}")).await;
        let tier = segments["loyalty"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        let members = format!("/v1/segments/loyalty/{tier}/customers?as_of={as_of}");
        let (status, page) = get(&app, &members).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["customers"][0]["customer_id"], "c-1");
        assert_eq!(page["customers"][0]["email"], "ada@example.com");
        assert_eq!(page["customers"][0]["name"], "Ada Lovelace");
        let (status, _, csv) = get_text(&app, &format!("{members}&format=csv")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            csv.lines().nth(1),
            Some("c-1,ada@example.com,,Ada Lovelace,"),
            "{csv}"
        );

        // Answers without tokens cost no lookup.
        let lookups = vault.lookups.load(Ordering::Relaxed);
        let (status, _) = get(&app, "/v1/identity/conflicts").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(vault.lookups.load(Ordering::Relaxed), lookups);

        // A vault that does not answer: 503 with Retry-After, no tokens.
        vault.answers.store(false, Ordering::Relaxed);
        for uri in [
            "/v1/customers/c-1",
            "/v1/customers?email=ada@example.com",
            "/v1/customers/c-1/timeline",
            &members,
            &format!("{members}&format=csv"),
        ] {
            let (status, headers, body) = get_text(&app, uri).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
            assert!(headers.contains_key("retry-after"), "{uri}");
            assert!(!body.contains(privacy::TOKEN_PREFIX), "{uri}: {body}");
        }
        vault.answers.store(true, Ordering::Relaxed);

        // Erased: the key is gone, and so is everything it sealed. The
        // pseudonyms stay, so lookups still find the (empty) person.
        vault
            .keys
            .lock()
            .unwrap()
            .insert((ada.clone(), "00000000000000a1".into()), None);
        let (status, customer) = get(&app, "/v1/customers?email=ada@example.com").await;
        assert_eq!(status, StatusCode::OK, "{customer}");
        assert_eq!(customer["customer_id"], privacy::ERASED);
        assert_eq!(customer["profile"]["name"], privacy::ERASED);
        assert_eq!(
            customer["identifiers"]["email"],
            serde_json::json!([privacy::ERASED])
        );
        let (_, page) = get(&app, &format!("/v1/customers/{ada}/timeline")).await;
        assert_eq!(page["items"][1]["summary"], "viewed [erased]");
        for uri in [
            format!("/v1/customers/{ada}"),
            format!("/v1/customers/{ada}/timeline"),
            members.clone(),
            format!("{members}&format=csv"),
        ] {
            let (status, _, body) = get_text(&app, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            assert!(!body.contains(privacy::TOKEN_PREFIX), "{uri}: {body}");
            assert!(
                !body.contains("Ada") && !body.contains("ada@"),
                "{uri}: {body}"
            );
        }
    }

    /// Text a fuzzed path id or query value takes: anything, and values
    /// near the valid ones (`customer`, `day`, numbers, escapes).
    fn fuzz_text(
        customer: &'static str,
        day: &'static str,
    ) -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>(),
            "[0-9T:._Z+ -]{0,30}",
            Just(customer.to_owned()),
            Just(day.to_owned()),
            "-?[0-9]{1,20}",
            "(%[0-9A-F]{2}){1,4}",
        ]
    }

    /// Fuzz-style: any query value and cookie on every dashboard page, and
    /// any login form, gets a page or a 4xx, never a 5xx or a panic; a 400
    /// names the parameter.
    #[test]
    fn fuzz_no_dashboard_page_query_cookie_or_login_gets_a_5xx() {
        use proptest::prelude::*;
        use proptest::test_runner::TestRunner;

        let (_directory, app) = serve(&thirty_buyers());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let text = || {
            prop_oneof![
                fuzz_text("c-01", "1970-10-01"),
                "[0-9]{1,2}-[0-9]{1,2}",
                "(rfm|lifecycle|value_tier|loyalty|x):[a-z_]{0,12}",
            ]
        };
        // Each page, and the names a 400 of it must mention.
        const PAGES: [(&str, &[&str]); 17] = [
            (
                "/ui/models?calibration_end={a}&holdout_end={b}",
                &["calibration_end", "holdout_end"],
            ),
            (
                "/ui/models/validation?calibration_end={a}&holdout_end={b}",
                &["calibration_end", "holdout_end"],
            ),
            ("/ui/campaigns?from={a}&to={b}", &["from", "to"]),
            ("/ui/campaigns/{a}?as_of={b}", &["as_of", "path"]),
            ("/ui/?as_of={a}", &["as_of"]),
            ("/ui/churn?as_of={a}&page={b}", &["as_of", "page"]),
            ("/ui/churn.csv?as_of={a}", &["as_of"]),
            ("/ui/segments?as_of={a}", &["as_of"]),
            ("/ui/people?segment={a}&as_of={b}", &["segment", "as_of"]),
            ("/ui/people?rfm={a}&cursor={b}", &["rfm", "cursor"]),
            (
                "/ui/people?cohort={a}&bought_within={b}",
                &["cohort", "bought_within", "filter"],
            ),
            (
                "/ui/people.csv?filter={a}&{b}={c}",
                &[
                    "filter",
                    "segment",
                    "rfm",
                    "cohort",
                    "bought_within",
                    "query",
                ],
            ),
            ("/ui/customers?q={a}&as_of={b}", &["q", "as_of"]),
            (
                "/ui/customers/{a}?before={b}&date={c}",
                &["before", "date", "path"],
            ),
            (
                "/ui/customers/c-01/timeline?before={a}&date={b}",
                &["before", "date"],
            ),
            ("/ui/login?next={a}", &["next"]),
            ("/ui/people?cohort={a}&after={b}", &["cohort", "after"]),
        ];
        let strategy = (
            prop::sample::select(&PAGES[..]),
            text(),
            text(),
            text(),
            any::<Vec<u8>>(),
        );
        TestRunner::new(rapport_fuzzing::config())
            .run(&strategy, |((page, names), a, b, c, cookie)| {
                let uri = page
                    .replace("{a}", &rapport_fuzzing::uri_text(&a))
                    .replace("{b}", &rapport_fuzzing::uri_text(&b))
                    .replace("{c}", &rapport_fuzzing::uri_text(&c));
                let mut request = Request::get(&uri);
                if let Ok(value) = axum::http::HeaderValue::from_bytes(&cookie) {
                    request = request.header("cookie", value);
                }
                let response = runtime
                    .block_on(app.clone().oneshot(request.body(Body::empty()).unwrap()))
                    .unwrap();
                let status = response.status();
                let body = runtime
                    .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                    .unwrap();
                let said = String::from_utf8_lossy(&body);
                prop_assert!(!status.is_server_error(), "{uri}: {status} {said}");
                if status == StatusCode::BAD_REQUEST {
                    prop_assert!(
                        names.iter().any(|name| said.contains(name)),
                        "{uri}: a 400 that names none of {names:?}: {said}"
                    );
                }
                // Any login form body: an answer, never a server error.
                let login = Request::post("/ui/login")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(format!(
                        "key={}&next={}",
                        rapport_fuzzing::uri_text(&a),
                        rapport_fuzzing::uri_text(&b)
                    )))
                    .unwrap();
                let status = runtime
                    .block_on(app.clone().oneshot(login))
                    .unwrap()
                    .status();
                prop_assert!(!status.is_server_error(), "login: {status}");
                Ok(())
            })
            .unwrap();
    }

    /// Fuzz-style: any path id and query value on every read route gets
    /// an answer or a 4xx JSON error, never a 5xx or a panic; a 400 names
    /// the field. Cases: 20 000 in `make test`, `RAPPORT_FUZZ_CASES` in
    /// `make fuzz`.
    #[test]
    fn fuzz_no_path_or_query_gets_a_5xx() {
        use proptest::prelude::*;
        use proptest::test_runner::TestRunner;

        let (_directory, app) = serve(&[
            (
                0,
                event_record(
                    "c-1",
                    1,
                    view("/a"),
                    "web.page_viewed",
                    &[("email", "a@example.com")],
                ),
            ),
            (
                0,
                event_record("c-1", 2, view("/b"), "web.page_viewed", &[]),
            ),
        ]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let text = || fuzz_text("c-1", "2026-03-01");
        // Each route, and the names a refusal of it must mention: its
        // parameters, or what its path names.
        const ROUTES: [(&str, &[&str]); 18] = [
            (
                "/v1/models/bgnbd/validation?calibration_end={a}&holdout_end={b}",
                &["calibration_end", "holdout_end"],
            ),
            ("/v1/campaigns?from={a}&to={b}", &["from", "to"]),
            (
                "/v1/campaigns/{a}?version={b}",
                &["campaign", "version", "path"],
            ),
            ("/v1/customers/{a}", &["customer"]),
            (
                "/v1/customers/{a}/timeline?limit={b}&before={c}",
                &["customer", "limit", "before"],
            ),
            (
                "/v1/customers/{a}/timeline?before={b}&version={c}",
                &["customer", "before", "version"],
            ),
            ("/v1/customers?email={a}", &["email"]),
            ("/v1/customers?phone={a}&email={b}", &["phone", "email"]),
            (
                "/v1/customers?{a}={b}",
                &["customer_id", "email", "phone", "anonymous_id"],
            ),
            ("/v1/customers/{a}/scores?as_of={b}", &["customer", "as_of"]),
            (
                "/v1/models/bgnbd?as_of={a}&cohort_from={b}&cohort_to={c}",
                &["as_of", "cohort_from", "cohort_to"],
            ),
            ("/v1/models/gamma-gamma?as_of={a}", &["as_of"]),
            ("/v1/segments?as_of={a}", &["as_of"]),
            (
                "/v1/segments/{a}/{b}/customers?as_of={c}",
                &["segment", "kind", "as_of"],
            ),
            (
                "/v1/segments/rfm/{a}/customers?limit={b}&format={c}",
                &["segment", "limit", "format"],
            ),
            (
                "/v1/identity/conflicts?limit={a}&before={b}",
                &["limit", "before"],
            ),
            (
                "/v1/admin/verify?other={a}&live={b}",
                &["other", "live", "version"],
            ),
            ("/v1/admin/versions/{a}", &["version"]),
        ];
        let strategy = (prop::sample::select(&ROUTES[..]), text(), text(), text());
        TestRunner::new(rapport_fuzzing::config())
            .run(&strategy, |((route, names), a, b, c)| {
                let uri = route
                    .replace("{a}", &rapport_fuzzing::uri_text(&a))
                    .replace("{b}", &rapport_fuzzing::uri_text(&b))
                    .replace("{c}", &rapport_fuzzing::uri_text(&c));
                let (status, answer) = runtime.block_on(get(&app, &uri));
                prop_assert!(!status.is_server_error(), "{uri}: {status} {answer}");
                if status.is_client_error() && status != StatusCode::METHOD_NOT_ALLOWED {
                    prop_assert!(
                        answer["error"]
                            .as_str()
                            .is_some_and(|error| !error.is_empty()),
                        "{uri}: {status} {answer}"
                    );
                }
                if status == StatusCode::BAD_REQUEST {
                    let said = answer.to_string();
                    prop_assert!(
                        names.iter().any(|name| said.contains(name))
                            || said.contains("\"field\":\"path\""),
                        "{uri}: a 400 that names none of {names:?}: {answer}"
                    );
                }
                Ok(())
            })
            .unwrap();
    }
}
