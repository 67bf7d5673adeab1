//! The ingest service: `POST /v1/events` validates a batch of storefront
//! events and answers 202 only once the broker has acknowledged every one.
//! A batch with any bad event is refused whole and nothing of it is produced.

mod schema;
pub mod seal;
pub mod segment;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use prost::Message;
use rapport_common::apikeys::{Gate, RouteTable, Scope, ScopedRoutes};
use rapport_common::http::{ApiError, FieldError};
use rapport_common::kafka::{BrokerHealth, HealthContext};
use rapport_common::metrics::{Counter, Registry};
use rapport_proto::v1 as proto;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::validate::{
    MAX_BODY_BYTES, MAX_EVENT_BYTES, MAX_EVENTS, check_event, event_from_json, partition_key,
};

/// Why a validated batch could not be published.
#[derive(Debug)]
pub enum PublishError {
    /// The broker cannot be reached or the producer queue is full: retry later.
    Unavailable(String),
}

/// Where validated events go. The Kafka implementation is the only one the
/// service uses; tests of the HTTP rules may supply their own.
pub trait EventSink: Send + Sync + 'static {
    fn publish(
        &self,
        events: Vec<proto::Event>,
    ) -> impl std::future::Future<Output = Result<(), PublishError>> + Send;
    /// Whether the sink can take events right now (for `/healthz`).
    fn is_ready(&self) -> bool;
}

/// Produces to the raw topic with the idempotent producer.
pub struct KafkaSink {
    producer: std::sync::RwLock<FutureProducer<HealthContext>>,
    health: Arc<BrokerHealth>,
    topic: String,
    /// Makes a new producer sharing `health`, for when the current one failed for good.
    renew: Box<dyn Fn() -> rapport_common::Result<FutureProducer<HealthContext>> + Send + Sync>,
    /// How long a request waits for the broker's acknowledgements.
    delivery_timeout: Duration,
    /// Set when the broker no longer accepts the producer's id or epoch.
    identity_refused: std::sync::atomic::AtomicBool,
}

impl KafkaSink {
    /// `delivery_timeout` is also the producer's `message.timeout.ms`.
    pub fn new(
        producer: FutureProducer<HealthContext>,
        health: Arc<BrokerHealth>,
        topic: String,
        renew: Box<dyn Fn() -> rapport_common::Result<FutureProducer<HealthContext>> + Send + Sync>,
        delivery_timeout: Duration,
    ) -> Self {
        Self {
            producer: std::sync::RwLock::new(producer),
            health,
            topic,
            renew,
            delivery_timeout,
            identity_refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// An idempotent producer can fail for good (say, a restarted broker
    /// forgot its sequence numbers); then every later send fails too. Swap
    /// in a new one so that the next request can succeed. librdkafka says
    /// so with a fatal error, or, after a delivery timed out and it gave
    /// the producer a new epoch, the broker refuses that epoch on every
    /// record (tansu 0.6 answers "producer fenced" from then on, where
    /// Kafka accepts it).
    fn renew_if_failed_for_good(&self, producer: &FutureProducer<HealthContext>) {
        use rdkafka::producer::Producer as _;
        use std::sync::atomic::Ordering;
        let (code, reason) = match producer.client().fatal_error() {
            Some((code, reason)) => (code.to_string(), reason),
            None if self.identity_refused.swap(false, Ordering::Relaxed) => (
                "refused producer id".to_owned(),
                "the broker no longer accepts the producer's id or epoch".to_owned(),
            ),
            None => return,
        };
        tracing::error!(%code, reason, "the producer failed for good; making a new one");
        match (self.renew)() {
            Ok(fresh) => *self.producer.write().expect("producer lock") = fresh,
            Err(error) => tracing::error!(%error, "could not make a new producer"),
        }
    }

    async fn send_all(
        &self,
        producer: &FutureProducer<HealthContext>,
        events: &[proto::Event],
    ) -> Result<(), PublishError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            let key = partition_key(event);
            let payload = event.encode_to_vec();
            let record = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(&payload)
                .timestamp(event.received_at_ms);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(PublishError::Unavailable(
                        "the producer queue is full".to_owned(),
                    ));
                }
                Err((error, _)) => {
                    return Err(PublishError::Unavailable(format!(
                        "could not enqueue: {error}"
                    )));
                }
            }
        }
        // Every record is in flight; each future resolves on the broker's
        // acknowledgement or after the producer's delivery timeout. That
        // timeout does not cover a record already sent to a broker that
        // then died: librdkafka's idempotent producer keeps it until the
        // connection's fate is known, which took 9 s for a 3 s timeout in
        // the outage test. The request waits no longer than the timeout;
        // a record acknowledged later is a copy the storefront's retry
        // sends again under the same event id, and identity drops it.
        let deadline = tokio::time::Instant::now() + self.delivery_timeout;
        for delivery in deliveries {
            let Ok(delivered) = tokio::time::timeout_at(deadline, delivery).await else {
                return Err(PublishError::Unavailable(format!(
                    "the broker did not acknowledge within {} ms",
                    self.delivery_timeout.as_millis()
                )));
            };
            match delivered {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    if refuses_the_producer(&error) {
                        self.identity_refused
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Err(PublishError::Unavailable(format!(
                        "the broker did not acknowledge: {error}"
                    )));
                }
                Err(_) => {
                    return Err(PublishError::Unavailable(
                        "the producer shut down".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Errors that say the broker will not take another record from this
/// producer's id and epoch, whatever is sent.
fn refuses_the_producer(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::InvalidProducerIdMapping
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
        )
    )
}

impl EventSink for KafkaSink {
    async fn publish(&self, events: Vec<proto::Event>) -> Result<(), PublishError> {
        if !self.health.is_up() {
            return Err(PublishError::Unavailable(
                "the broker is unreachable".to_owned(),
            ));
        }
        let producer = self.producer.read().expect("producer lock").clone();
        let outcome = self.send_all(&producer, &events).await;
        if outcome.is_err() {
            self.renew_if_failed_for_good(&producer);
        }
        outcome
    }

    fn is_ready(&self) -> bool {
        self.health.is_up()
    }
}

struct IngestMetrics {
    accepted_events: Counter,
    rejected_requests: Counter,
    unavailable_requests: Counter,
    accepted_requests: Counter,
}

/// Shared state of the HTTP handlers.
pub struct Ingest<S> {
    sink: S,
    source: String,
    registry: Registry,
    metrics: IngestMetrics,
    retry_after: Duration,
    in_flight: tokio::sync::Semaphore,
    /// How long a request body may take to arrive; a slower one is
    /// answered 408, so it cannot hold an in-flight permit for ever.
    body_read_timeout: Duration,
    /// Seals personal fields before they reach the log; `None` only where
    /// the configuration says `sealing = "off"`.
    keys: Option<Arc<dyn seal::KeySource>>,
    /// Browser tracking: the public address and the origins per write key.
    tracking: segment::TrackingSettings,
    segment: segment::SegmentMetrics,
}

impl<S: EventSink> Ingest<S> {
    /// `max_in_flight` bounds the requests handled at once.
    pub fn new(
        sink: S,
        source: impl Into<String>,
        registry: Registry,
        max_in_flight: usize,
    ) -> Self {
        let metrics = IngestMetrics {
            accepted_events: registry.counter(
                "rapport_ingest_events_accepted_total",
                "Events acknowledged by the broker and answered 202.",
                &[],
            ),
            accepted_requests: registry.counter(
                "rapport_ingest_requests_total",
                "Requests by outcome.",
                &[("outcome", "accepted")],
            ),
            rejected_requests: registry.counter(
                "rapport_ingest_requests_total",
                "Requests by outcome.",
                &[("outcome", "rejected")],
            ),
            unavailable_requests: registry.counter(
                "rapport_ingest_requests_total",
                "Requests by outcome.",
                &[("outcome", "unavailable")],
            ),
        };
        Self {
            sink,
            source: source.into(),
            segment: segment::SegmentMetrics::new(&registry),
            tracking: segment::TrackingSettings::default(),
            registry,
            metrics,
            retry_after: Duration::from_secs(1),
            in_flight: tokio::sync::Semaphore::new(max_in_flight.max(1)),
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            keys: None,
        }
    }

    /// Seals personal fields with keys from `keys` (the vault).
    pub fn with_sealing(mut self, keys: Arc<dyn seal::KeySource>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Sets where browsers reach ingest and which origins each write key
    /// takes events from.
    pub fn with_tracking(mut self, tracking: segment::TrackingSettings) -> Self {
        self.tracking = tracking;
        self
    }

    /// Sets how long a request body may take to arrive (default 10 s).
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }
}

/// The default time a request body may take to arrive.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The ingest HTTP API, each route behind the key scope it needs.
pub fn router<S: EventSink>(ingest: Arc<Ingest<S>>, gate: &Gate) -> Router {
    routes(ingest, gate).0
}

/// [`router`], with the table of its routes and their scopes.
pub fn routes<S: EventSink>(ingest: Arc<Ingest<S>>, gate: &Gate) -> (Router, RouteTable) {
    let registry = ingest.registry.clone();
    let mut scoped = ScopedRoutes::new(gate)
        .post(Scope::Write, "/v1/events", post_events::<S>)
        .get(Scope::Open, "/healthz", healthz::<S>)
        .get(Scope::Read, "/metrics", metrics::<S>);
    for (path, route) in segment::routes::<S>() {
        scoped = scoped.keyed_by_handler("POST", Scope::Write, path, route);
    }
    let scoped = scoped
        .get(
            Scope::Open,
            "/v1/projects/{writeKey}/settings",
            segment::browser::settings::<S>,
        )
        .get(
            Scope::Open,
            "/analytics.js/v1/{writeKey}/{file}",
            segment::browser::bundle,
        )
        .get(
            Scope::Open,
            "/analytics-next/bundles/{file}",
            segment::browser::chunk,
        )
        .get(
            Scope::Open,
            "/v1/snippet.js",
            segment::browser::snippet::<S>,
        );
    let (routes, table) = rapport_common::openapi::finish_described(
        scoped,
        <IngestApi as utoipa::OpenApi>::openapi(),
        "ingest",
        "The ingest service: storefronts post events, which are sealed and produced to the raw topic.",
    );
    let routes = routes
        .fallback(rapport_common::http::no_such_route)
        .layer(axum::Extension(gate.clone()))
        .with_state(ingest);
    (
        rapport_common::http::with_request_metrics(routes, &registry, "ingest"),
        table,
    )
}

enum BodyKind {
    Json,
    Protobuf,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "application/x-protobuf" | "application/protobuf" => Ok(BodyKind::Protobuf),
        "" => Err(ApiError::UnsupportedMediaType(
            "Content-Type is required: application/json or application/x-protobuf".to_owned(),
        )),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {other} is not supported; use application/json or application/x-protobuf"
        ))),
    }
}

fn invalid(details: Vec<FieldError>) -> ApiError {
    let events: std::collections::BTreeSet<usize> =
        details.iter().filter_map(|detail| detail.index).collect();
    let message = if events.is_empty() {
        "the request is invalid; nothing was accepted".to_owned()
    } else if events.len() == 1 {
        "1 of the events is invalid; nothing was accepted".to_owned()
    } else {
        format!(
            "{} of the events are invalid; nothing was accepted",
            events.len()
        )
    };
    ApiError::Invalid { message, details }
}

fn batch_error(message: impl Into<String>) -> ApiError {
    let message = message.into();
    invalid(vec![FieldError {
        index: None,
        field: "events".to_owned(),
        message,
    }])
}

fn too_large_event(index: usize, size: usize) -> ApiError {
    ApiError::TooLarge(format!(
        "event {index} is {size} bytes; an event may have at most {MAX_EVENT_BYTES} bytes; nothing was accepted"
    ))
}

/// Parses and checks a body into events ready to publish.
fn decode_batch(kind: BodyKind, body: &[u8]) -> Result<Vec<proto::Event>, ApiError> {
    let mut errors = Vec::new();
    let mut events = match kind {
        BodyKind::Json => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Batch<'a> {
                #[serde(borrow)]
                events: Vec<&'a serde_json::value::RawValue>,
            }
            let batch: Batch<'_> = serde_json::from_slice(body).map_err(|error| {
                batch_error(format!(
                    "the body must be a JSON object {{\"events\": [...]}}: {error}"
                ))
            })?;
            check_count(batch.events.len())?;
            let mut events = Vec::with_capacity(batch.events.len());
            for (index, raw) in batch.events.iter().enumerate() {
                if raw.get().len() > MAX_EVENT_BYTES {
                    return Err(too_large_event(index, raw.get().len()));
                }
                let value: Value = serde_json::from_str(raw.get())
                    .map_err(|error| batch_error(error.to_string()))?;
                events.push(event_from_json(index, &value, &mut errors));
            }
            events
        }
        BodyKind::Protobuf => {
            let batch = proto::EventBatch::decode(body).map_err(|error| {
                batch_error(format!(
                    "the body is not a valid rapport.events.v1.EventBatch: {error}"
                ))
            })?;
            check_count(batch.events.len())?;
            for (index, event) in batch.events.iter().enumerate() {
                let size = event.encoded_len();
                if size > MAX_EVENT_BYTES {
                    return Err(too_large_event(index, size));
                }
            }
            batch.events
        }
    };
    for (index, event) in events.iter_mut().enumerate() {
        check_event(index, event, &mut errors);
    }
    let mut seen = std::collections::HashMap::new();
    for (index, event) in events.iter().enumerate() {
        if let Some(first) = seen.insert(event.event_id.clone(), index)
            && !event.event_id.is_empty()
        {
            errors.push(FieldError {
                index: Some(index),
                field: "event_id".to_owned(),
                message: format!("repeats the event_id of event {first}"),
            });
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(invalid(errors))
    }
}

fn check_count(count: usize) -> Result<(), ApiError> {
    if count == 0 || count > MAX_EVENTS {
        return Err(batch_error(format!(
            "must hold between 1 and {MAX_EVENTS} events, got {count}"
        )));
    }
    Ok(())
}

/// Every operation [`routes`] serves, described from the handlers.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    post_events_doc,
    healthz_doc,
    metrics_doc,
    segment::doc::segment_batch,
    segment::doc::segment_import,
    segment::doc::segment_b,
    segment::doc::segment_track,
    segment::doc::segment_t,
    segment::doc::segment_identify,
    segment::doc::segment_i,
    segment::doc::segment_page,
    segment::doc::segment_p,
    segment::doc::segment_screen,
    segment::doc::segment_s,
    segment::doc::segment_alias,
    segment::doc::segment_a,
    segment::doc::segment_group,
    segment::doc::segment_g,
    segment::doc::segment_settings,
    segment::doc::segment_bundle,
    segment::doc::segment_chunk,
    segment::doc::segment_snippet
))]
struct IngestApi;

// The handlers are generic over their sink; the attributes describe them
// through these stand-ins, which the document test holds to the router.

/// Posts a batch of events. Every event is checked first: one broken rule
/// refuses the whole batch, naming each bad field, and nothing is produced.
/// The batch is answered once the broker acknowledged all of it.
#[utoipa::path(post, path = "/v1/events", tag = "events", operation_id = "post_events",
    request_body(description = "The batch, as JSON or as a protobuf `rapport.events.v1.EventBatch`.", content(
        (schema::EventBatch = "application/json"),
        ("application/x-protobuf"),
    )),
    responses(
        (status = 202, description = "Every event is on the log.", body = schema::Accepted),
        (status = 400, description = "An event breaks a rule; `details` names every bad field, and nothing was produced.", body = rapport_common::admin::ErrorAnswer),
        (status = 408, description = "The body did not arrive within `body_read_timeout_ms`; nothing was produced.", body = rapport_common::admin::ErrorAnswer),
        (status = 413, description = "The body is over 1 MiB or an event over 32 KiB.", body = rapport_common::admin::ErrorAnswer),
        (status = 415, description = "A content type other than JSON or protobuf.", body = rapport_common::admin::ErrorAnswer),
        (status = 503, description = "The broker, the producer queue or the vault cannot take the batch now; nothing was produced. `Retry-After` says when to send it again.", body = rapport_common::admin::ErrorAnswer),
    ))]
#[allow(dead_code)]
fn post_events_doc() {}

#[utoipa::path(get, path = "/healthz", tag = "meta", operation_id = "healthz",
    responses(
        (status = 200, description = "The service is up and its broker reachable.", body = rapport_common::http::Health),
        (status = 503, description = "The broker is unreachable: `{\"status\": \"broker unreachable\"}`."),
    ))]
#[allow(dead_code)]
fn healthz_doc() {}

#[utoipa::path(get, path = "/metrics", tag = "meta", operation_id = "metrics",
    responses((status = 200, description = "Counters and gauges, OpenMetrics text.", content_type = "application/openmetrics-text", body = String)))]
#[allow(dead_code)]
fn metrics_doc() {}

async fn post_events<S: EventSink>(
    State(ingest): State<Arc<Ingest<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match ingest.handle(accept(&ingest, headers, body)).await {
        Ok(count) => (
            StatusCode::ACCEPTED,
            Json(schema::Accepted { accepted: count }),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

/// Why a body could not be read.
enum BodyError {
    /// It is (or says it is) longer than allowed.
    TooLarge,
    /// It did not arrive in time: the 408 to answer.
    Late(ApiError),
}

/// The whole body, at most `limit` bytes, arriving within `timeout`.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Late(ApiError::RequestTimeout(format!(
            "the body did not arrive within {} ms; nothing was accepted",
            timeout.as_millis()
        )))),
    }
}

async fn accept<S: EventSink>(
    ingest: &Ingest<S>,
    headers: HeaderMap,
    body: Body,
) -> Result<usize, ApiError> {
    let kind = body_kind(&headers)?;
    let too_large =
        || ApiError::TooLarge(format!("the body may have at most {MAX_BODY_BYTES} bytes"));
    let bytes = match read_body(&headers, body, MAX_BODY_BYTES, ingest.body_read_timeout).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => return Err(too_large()),
        Err(BodyError::Late(error)) => return Err(error),
    };
    let events = decode_batch(kind, &bytes)?;
    ingest
        .publish_checked(events, rapport_common::now_ms())
        .await
}

impl<S: EventSink> Ingest<S> {
    /// Runs a request's `work` in one of the in-flight slots (503 when none
    /// is free) and counts its outcome.
    async fn handle(
        &self,
        work: impl std::future::Future<Output = Result<usize, ApiError>>,
    ) -> Result<usize, ApiError> {
        let outcome = match self.in_flight.try_acquire() {
            Ok(_permit) => work.await,
            Err(_) => Err(ApiError::Unavailable {
                message: "too many requests in flight; retry later".to_owned(),
                retry_after_s: self.retry_after.as_secs(),
            }),
        };
        match &outcome {
            Ok(_) => self.metrics.accepted_requests.increment(1),
            Err(ApiError::Unavailable { .. }) => self.metrics.unavailable_requests.increment(1),
            Err(_) => self.metrics.rejected_requests.increment(1),
        }
        outcome
    }

    /// Stamps, seals and publishes events that passed every rule; answers
    /// how many the broker acknowledged, or 503 when it or the vault could
    /// not take them (then nothing is acknowledged as accepted).
    async fn publish_checked(
        &self,
        mut events: Vec<proto::Event>,
        received_at_ms: i64,
    ) -> Result<usize, ApiError> {
        for event in &mut events {
            event.received_at_ms = received_at_ms;
            if event.source.is_empty() {
                event.source = self.source.clone();
            }
            // Sealed copies are ingest's to make, never a sender's.
            if let Some(customer) = event.customer.as_mut() {
                for shown in [
                    &mut customer.customer_id_sealed,
                    &mut customer.email_sealed,
                    &mut customer.phone_sealed,
                    &mut customer.anonymous_id_sealed,
                ] {
                    shown.clear();
                }
            }
        }
        if let Some(keys) = self.keys.clone() {
            events = tokio::task::spawn_blocking(move || {
                seal::seal_batch(&mut events, keys.as_ref()).map(|()| events)
            })
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?
            .map_err(|reason| {
                tracing::warn!(%reason, "the vault did not answer; answering 503");
                ApiError::Unavailable {
                    message: "personal fields cannot be sealed right now (the vault did not answer); nothing was accepted, retry later".to_owned(),
                    retry_after_s: self.retry_after.as_secs(),
                }
            })?;
        }
        let count = events.len();
        self.sink
            .publish(events)
            .await
            .map_err(|PublishError::Unavailable(reason)| {
                tracing::warn!(%reason, events = count, "answering 503");
                ApiError::Unavailable {
                    message: format!("{reason}; nothing is lost by retrying the same batch later"),
                    retry_after_s: self.retry_after.as_secs(),
                }
            })?;
        self.metrics.accepted_events.increment(count as u64);
        Ok(count)
    }
}

async fn healthz<S: EventSink>(State(ingest): State<Arc<Ingest<S>>>) -> Response {
    if ingest.sink.is_ready() {
        (StatusCode::OK, Json(rapport_common::http::Health::OK)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "broker unreachable"})),
        )
            .into_response()
    }
}

async fn metrics<S: EventSink>(State(ingest): State<Arc<Ingest<S>>>) -> Response {
    ingest.registry.response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use futures_util::StreamExt as _;
    use std::sync::Mutex;
    use tower::ServiceExt;

    /// Records what would be produced; can pretend the broker is down.
    #[derive(Default)]
    struct RecordingSink {
        published: Mutex<Vec<proto::Event>>,
        down: bool,
    }

    impl EventSink for Arc<RecordingSink> {
        async fn publish(&self, events: Vec<proto::Event>) -> Result<(), PublishError> {
            if self.down {
                return Err(PublishError::Unavailable(
                    "the broker is unreachable".into(),
                ));
            }
            self.published.lock().unwrap().extend(events);
            Ok(())
        }
        fn is_ready(&self) -> bool {
            !self.down
        }
    }

    fn app(sink: Arc<RecordingSink>) -> Router {
        router(
            Arc::new(Ingest::new(sink, "test", Registry::default(), 8)),
            &Gate::open_for_tests(),
        )
    }

    #[tokio::test]
    async fn every_route_checks_its_key_scope() {
        rapport_fuzzing::every_route_checks_its_scope(|gate| {
            routes(
                Arc::new(Ingest::new(
                    Arc::new(RecordingSink::default()),
                    "test",
                    Registry::default(),
                    8,
                )),
                gate,
            )
        })
        .await;
    }

    #[tokio::test]
    async fn the_openapi_document_describes_every_route_and_its_example_is_accepted() {
        let sink = Arc::new(RecordingSink::default());
        let (router, table) = routes(
            Arc::new(Ingest::new(sink.clone(), "test", Registry::default(), 8)),
            &Gate::open_for_tests(),
        );
        let document = rapport_fuzzing::describes_every_route(router.clone(), &table).await;
        let post = &document["paths"]["/v1/events"]["post"];
        assert_eq!(post["operationId"], "post_events");
        assert_eq!(
            post["security"][1]["write_key_basic"],
            serde_json::json!(["events:write"])
        );
        // One event of every type, as the document shows them: the rules
        // take them all
        let example = &document["components"]["schemas"]["EventBatch"]["example"];
        let types: std::collections::BTreeSet<&str> = example["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|event| event["type"].as_str())
            .collect();
        let documented: std::collections::BTreeSet<&str> =
            document["components"]["schemas"]["EventType"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
        assert_eq!(types, documented, "the example has an event of every type");
        let (status, _, body) = super::tests::post(
            router.clone(),
            "application/json",
            serde_json::to_vec(example).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["accepted"], types.len());
        assert_eq!(sink.published.lock().unwrap().len(), types.len());
        // The tracking API's example is taken too
        let example = &document["components"]["schemas"]["SegmentBatch"]["example"];
        let request = Request::post("/v1/batch")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(example).unwrap()))
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(sink.published.lock().unwrap().len(), types.len() + 3);
    }

    #[tokio::test]
    async fn a_body_that_trickles_in_is_answered_408_and_frees_its_permit() {
        let sink = Arc::new(RecordingSink::default());
        let ingest = Arc::new(
            Ingest::new(sink.clone(), "test", Registry::default(), 1)
                .with_body_read_timeout(std::time::Duration::from_millis(200)),
        );
        let app = router(ingest.clone(), &Gate::open_for_tests());
        // The first bytes of a batch, then nothing more
        let stalled =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"[{"))])
                .chain(futures_util::stream::pending());
        let request = Request::post("/v1/events")
            .header("content-type", "application/json")
            .body(Body::from_stream(stalled))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(body["error"].as_str().unwrap().contains("200 ms"), "{body}");
        // The only permit is free again: a whole batch is accepted
        let (status, _, body) = post(
            app,
            "application/json",
            serde_json::to_vec(&serde_json::json!({"events": [event(1)]})).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert!(sink.published.lock().unwrap().len() == 1);
    }

    fn event(id: u32) -> Value {
        serde_json::json!({"event_id": format!("0193a5b0-7c1e-7d4e-9f00-{id:012}"), "type":"web.page_viewed",
            "occurred_at":"2026-11-01T10:00:00Z","customer":{"anonymous_id":"anon-1"},"data":{"url":"/"}})
    }

    async fn post(
        app: Router,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Value) {
        let request = Request::post("/v1/events")
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn a_valid_batch_is_accepted_and_stamped() {
        let sink = Arc::new(RecordingSink::default());
        let body =
            serde_json::to_vec(&serde_json::json!({"events": [event(1), event(2)]})).unwrap();
        let (status, _, answer) = post(app(sink.clone()), "application/json", body).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(answer, serde_json::json!({"accepted": 2}));
        let published = sink.published.lock().unwrap();
        assert_eq!(published.len(), 2);
        assert!(published.iter().all(|event| event.received_at_ms > 0
            && event.source == "test"
            && event.channel == "web"));
    }

    #[tokio::test]
    async fn one_bad_event_rejects_the_batch_and_is_named() {
        let sink = Arc::new(RecordingSink::default());
        let mut bad = event(2);
        bad["data"]["url"] = Value::Null;
        let body =
            serde_json::to_vec(&serde_json::json!({"events": [event(1), bad, event(3)]})).unwrap();
        let (status, _, answer) = post(app(sink.clone()), "application/json", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            answer["details"],
            serde_json::json!([{"index": 1, "field": "data.url", "message": "is required"}])
        );
        assert!(sink.published.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn protobuf_batches_follow_the_same_rules() {
        let sink = Arc::new(RecordingSink::default());
        let mut errors = Vec::new();
        let good = event_from_json(0, &event(1), &mut errors);
        let batch = proto::EventBatch {
            events: vec![good.clone()],
        };
        let (status, _, _) = post(
            app(sink.clone()),
            "application/x-protobuf",
            batch.encode_to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let broken = proto::EventBatch {
            events: vec![proto::Event {
                event_id: String::new(),
                ..good
            }],
        };
        let (status, _, answer) = post(
            app(sink.clone()),
            "application/x-protobuf",
            broken.encode_to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["details"][0]["field"], "event_id");
        assert_eq!(sink.published.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn size_count_and_content_type_limits() {
        let sink = Arc::new(RecordingSink::default());
        let (status, _, _) = post(app(sink.clone()), "text/plain", b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        let (status, _, _) = post(app(sink.clone()), "application/json", huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let mut fat = event(1);
        fat["data"]["url"] = Value::String("x".repeat(MAX_EVENT_BYTES));
        let (status, _, _) = post(
            app(sink.clone()),
            "application/json",
            serde_json::to_vec(&serde_json::json!({"events": [fat]})).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let (status, _, answer) = post(
            app(sink.clone()),
            "application/json",
            br#"{"events": []}"#.to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["details"][0]["field"], "events");
        let many: Vec<Value> = (0..=MAX_EVENTS as u32).map(event).collect();
        let (status, _, _) = post(
            app(sink.clone()),
            "application/json",
            serde_json::to_vec(&serde_json::json!({"events": many})).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(sink.published.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_broker_means_503_with_retry_after() {
        let sink = Arc::new(RecordingSink {
            down: true,
            ..Default::default()
        });
        let body = serde_json::to_vec(&serde_json::json!({"events": [event(1)]})).unwrap();
        let (status, headers, _) = post(app(sink), "application/json", body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers.get("retry-after").unwrap(), "1");
    }

    #[tokio::test]
    async fn duplicate_event_ids_within_a_batch_are_refused() {
        let sink = Arc::new(RecordingSink::default());
        let body =
            serde_json::to_vec(&serde_json::json!({"events": [event(1), event(1)]})).unwrap();
        let (status, _, answer) = post(app(sink), "application/json", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["details"][0]["index"], 1);
    }

    /// Fuzz-style: whatever a client sends, ingest answers 202 or a 4xx
    /// JSON error, never a 5xx or a dropped connection; a batch that is
    /// JSON but breaks a rule names the field.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// A valid batch with one place replaced by any JSON value, or
        /// removed.
        fn mutated_batch() -> impl Strategy<Value = Value> {
            const PLACES: [&str; 13] = [
                "/events",
                "/events/0",
                "/events/0/event_id",
                "/events/0/type",
                "/events/0/occurred_at",
                "/events/0/customer",
                "/events/0/customer/anonymous_id",
                "/events/0/customer/email",
                "/events/0/customer/phone",
                "/events/0/data",
                "/events/0/data/url",
                "/events/0/channel",
                "/events/0/unknown",
            ];
            (
                prop::sample::select(&PLACES[..]),
                rapport_fuzzing::json_value(),
                any::<bool>(),
            )
                .prop_map(|(place, value, remove)| {
                    let mut batch = serde_json::json!({"events": [event(1)]});
                    let (parent, field) = place.rsplit_once('/').expect("a path");
                    let holder = if parent.is_empty() {
                        Some(&mut batch)
                    } else {
                        batch.pointer_mut(parent)
                    };
                    match holder {
                        Some(Value::Object(fields)) if remove => {
                            fields.remove(field);
                        }
                        Some(Value::Object(fields)) => {
                            fields.insert(field.to_owned(), value);
                        }
                        Some(Value::Array(items)) => items[0] = value,
                        _ => {}
                    }
                    batch
                })
        }

        fn answer_to(body: Vec<u8>, content_type: &str) -> (StatusCode, Value) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime");
            let sink = Arc::new(RecordingSink::default());
            let (status, _, answer) = runtime.block_on(post(app(sink), content_type, body));
            (status, answer)
        }

        fn is_a_json_error(answer: &Value) -> bool {
            answer["error"]
                .as_str()
                .is_some_and(|error| !error.is_empty())
                && answer["details"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|detail| {
                        detail["field"]
                            .as_str()
                            .is_some_and(|field| !field.is_empty())
                    })
        }

        proptest! {
            #![proptest_config(rapport_fuzzing::config())]

            #[test]
            fn no_bytes_get_a_5xx(
                body in any::<Vec<u8>>(),
                content_type in prop::sample::select(&["application/json", "application/x-protobuf", "text/plain"][..]),
            ) {
                let (status, answer) = answer_to(body, content_type);
                prop_assert!(status == StatusCode::ACCEPTED || status.is_client_error(), "{status}");
                if status.is_client_error() {
                    prop_assert!(is_a_json_error(&answer), "{answer}");
                }
            }

            #[test]
            fn a_batch_breaking_a_rule_is_refused_naming_the_field(batch in mutated_batch()) {
                let body = serde_json::to_vec(&batch).expect("JSON");
                let (status, answer) = answer_to(body, "application/json");
                prop_assert!(status == StatusCode::ACCEPTED || status.is_client_error(), "{status}: {batch}");
                if status.is_client_error() {
                    prop_assert!(is_a_json_error(&answer), "{answer}");
                    prop_assert!(
                        answer["details"].as_array().is_some_and(|details| !details.is_empty()),
                        "{batch} was refused without naming a field: {answer}"
                    );
                }
            }
        }
    }
}
