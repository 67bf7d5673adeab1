//! Kafka clients as every Rapport service configures them.
//!
//! All services speak the Kafka protocol through rdkafka (bundled librdkafka),
//! against the local broker in development and tests and a Kafka cluster in
//! production: one code path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::{Error, Result};

/// What a client has learned about its connection to the cluster, from
/// librdkafka's statistics and error callbacks.
#[derive(Debug, Default)]
pub struct BrokerHealth {
    brokers_up: AtomicBool,
    statistics_seen: AtomicBool,
    failures: AtomicU64,
    /// The end of each consumed partition as the last fetch reported it
    /// (librdkafka's `hi_offset`). Fetch responses carry the true end even
    /// where a broker's ListOffsets does not.
    /// With each, when the statistics reporting it arrived (Unix ms).
    log_ends: std::sync::Mutex<std::collections::BTreeMap<(String, i32), (i64, i64)>>,
}

/// How often librdkafka reports statistics (and with them the log ends).
pub const STATISTICS_INTERVAL_MS: i64 = 1_000;

impl BrokerHealth {
    /// Whether at least one broker connection is up. Until the first
    /// statistics arrive the answer is optimistic, so start-up is not refused.
    pub fn is_up(&self) -> bool {
        !self.statistics_seen.load(Ordering::Relaxed) || self.brokers_up.load(Ordering::Relaxed)
    }

    /// Records that a request to the cluster just succeeded.
    pub fn mark_up(&self) {
        self.brokers_up.store(true, Ordering::Relaxed);
    }

    /// Global client errors seen since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The last reported end of every partition of `topic` this client fetches.
    pub fn log_ends(&self, topic: &str) -> std::collections::BTreeMap<i32, i64> {
        let ends = self.log_ends.lock().expect("log ends lock");
        ends.iter()
            .filter(|((name, _), _)| name == topic)
            .map(|((_, partition), (end, _))| (*partition, *end))
            .collect()
    }

    /// Takes `end` as the partition's end, reported at `reported_at_ms`.
    pub fn record_log_end(&self, topic: &str, partition: i32, end: i64, reported_at_ms: i64) {
        let mut ends = self.log_ends.lock().expect("log ends lock");
        ends.insert((topic.to_owned(), partition), (end, reported_at_ms));
    }

    /// When `position` (the next offset a reader wants) has reached the end of
    /// `topic`/`partition` as the client's fetch statistics last reported it:
    /// the instant as of which nothing more was in the log, allowing the
    /// statistics interval plus as long again for the fetch behind them.
    ///
    /// Readers take a partition's end from the end-of-partition event or from
    /// this, whichever comes first, on either broker: librdkafka drops the
    /// event when a partition is paused and resumed and does not send it again
    /// at the same offset, and tansu answers a fetch below the end of a log
    /// whose early records are gone with neither a record nor the event.
    pub fn end_reached_as_of(&self, topic: &str, partition: i32, position: i64) -> Option<i64> {
        let (end, reported_at_ms) = self.log_end_reported(topic, partition)?;
        (position >= end).then_some(reported_at_ms - 2 * STATISTICS_INTERVAL_MS)
    }

    /// The last reported end of one partition, and when the report came.
    pub fn log_end_reported(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        let ends = self.log_ends.lock().expect("log ends lock");
        ends.get(&(topic.to_owned(), partition)).copied()
    }
}

/// A client context that feeds [`BrokerHealth`] and routes librdkafka's log
/// lines into `tracing`.
#[derive(Clone, Default)]
pub struct HealthContext {
    pub health: Arc<BrokerHealth>,
    /// Set once this client's statistics no longer say where the log ends
    /// (see [`HealthContext::stop_reporting_ends`]).
    ends_retired: Arc<AtomicBool>,
}

impl HealthContext {
    /// A context for another client that reports to the same health, and
    /// stops reporting the log's ends on its own.
    pub fn for_another_client(&self) -> Self {
        Self {
            health: self.health.clone(),
            ends_retired: Arc::default(),
        }
    }

    /// Stops taking the log's ends from this client's statistics, for a
    /// consumer that handed its partitions to another sharing its health:
    /// statistics it reports later, or queued before and handed out later,
    /// would otherwise put back the ends it saw then.
    pub fn stop_reporting_ends(&self) {
        self.ends_retired.store(true, Ordering::Relaxed);
    }
}

impl ClientContext for HealthContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|broker| broker.state == "UP" && broker.nodeid >= 0);
        self.health.brokers_up.store(up, Ordering::Relaxed);
        self.health.statistics_seen.store(true, Ordering::Relaxed);
        if self.ends_retired.load(Ordering::Relaxed) {
            return;
        }
        let reported_at_ms = crate::now_ms();
        for (name, topic) in &statistics.topics {
            for (partition, stats) in &topic.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue.
                if *partition >= 0 && stats.hi_offset >= 0 {
                    self.health
                        .record_log_end(name, *partition, stats.hi_offset, reported_at_ms);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End-of-partition arrives here too; it is an event, not a failure.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!(target: "librdkafka", reason, "end of partition");
            return;
        }
        self.health.failures.fetch_add(1, Ordering::Relaxed);
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.brokers_up.store(false, Ordering::Relaxed);
            self.health.statistics_seen.store(true, Ordering::Relaxed);
        }
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
    }
}

impl ConsumerContext for HealthContext {}

/// Keeps a producer's view of the cluster fresh while it is down: a client
/// that refuses work while the brokers are unreachable would otherwise
/// never reconnect (librdkafka connects on demand), so once a second this
/// asks for metadata, which reconnects, and marks the brokers up when it
/// succeeds. Runs on its own thread for the life of the process.
pub fn watch_reconnection(producer: &FutureProducer<HealthContext>, health: Arc<BrokerHealth>) {
    use rdkafka::producer::Producer as _;
    let client = producer.clone();
    let spawned = std::thread::Builder::new()
        .name("broker-probe".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if !health.is_up()
                    && client
                        .client()
                        .fetch_metadata(None, Duration::from_secs(1))
                        .is_ok()
                {
                    tracing::info!("the brokers are reachable again");
                    health.mark_up();
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the broker probe");
    }
}

/// The base configuration: brokers, then the operator's extra properties.
pub fn client_config(kafka: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", client_id)
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string());
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

pub use crate::broker::MAX_RECORDS_PER_BATCH;

/// An idempotent, `acks=all` producer. `delivery_timeout` bounds how long a
/// record may wait for the broker; `None` retries until it is delivered,
/// which is what the identity service wants (it never drops a record).
pub fn producer(
    kafka: &KafkaConfig,
    client_id: &str,
    delivery_timeout: Option<Duration>,
    max_queued: u32,
) -> Result<(FutureProducer<HealthContext>, Arc<BrokerHealth>)> {
    let health = Arc::new(BrokerHealth::default());
    let producer = producer_reporting_to(
        kafka,
        client_id,
        delivery_timeout,
        max_queued,
        health.clone(),
    )?;
    Ok((producer, health))
}

/// Like [`producer`], reporting to an existing [`BrokerHealth`] (to replace
/// a producer without losing what is known about the cluster).
pub fn producer_reporting_to(
    kafka: &KafkaConfig,
    client_id: &str,
    delivery_timeout: Option<Duration>,
    max_queued: u32,
    health: Arc<BrokerHealth>,
) -> Result<FutureProducer<HealthContext>> {
    build_producer(kafka, client_id, delivery_timeout, max_queued, health, true)
}

/// An `acks=all` producer without idempotence, for records that each state
/// the whole truth of their key (announcements on a compacted topic), where
/// a record written twice is harmless. A long-lived idempotent producer
/// that writes every few seconds across a broker restart makes tansu 0.6's
/// SQLite storage panic in its idempotence check and stop answering
/// (`outage.rs` restarts it); these records do not need the check.
pub fn state_producer(
    kafka: &KafkaConfig,
    client_id: &str,
    delivery_timeout: Duration,
) -> Result<FutureProducer<HealthContext>> {
    build_producer(
        kafka,
        client_id,
        Some(delivery_timeout),
        100,
        Arc::new(BrokerHealth::default()),
        false,
    )
}

fn build_producer(
    kafka: &KafkaConfig,
    client_id: &str,
    delivery_timeout: Option<Duration>,
    max_queued: u32,
    health: Arc<BrokerHealth>,
    idempotent: bool,
) -> Result<FutureProducer<HealthContext>> {
    let context = HealthContext {
        health,
        ..HealthContext::default()
    };
    let mut config = client_config(kafka, client_id);
    config
        // Java clients partition with murmur2; so do we, so that keys land on
        // the same partitions whichever client produced them.
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", idempotent.to_string())
        .set("batch.num.messages", MAX_RECORDS_PER_BATCH.to_string())
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", max_queued.to_string())
        .set(
            "message.timeout.ms",
            delivery_timeout
                .map_or(0, |timeout| timeout.as_millis() as u64)
                .to_string(),
        );
    // Operator properties win over ours, so apply them once more.
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
        .create_with_context(context)
        .map_err(|source| Error::Kafka {
            context: "creating a producer".into(),
            source,
        })
}

/// How long a fetch may wait at the broker for records (librdkafka's
/// `fetch.wait.max.ms`) once a consumer has caught up with the log, the
/// consumers' default; `[kafka] properties` can set another.
///
/// Kafka answers a fetch as soon as it has records, so there this only
/// bounds how often an idle consumer asks. The local broker, tansu 0.6,
/// holds every answer until the whole wait has passed, records or not, and
/// puts at most 5 MiB in it: a consumer there reads at most 5 MiB per wait,
/// about 450 000 customer records a second at 50 ms. A shorter wait reads
/// faster but costs the broker CPU while idle: three consumers of 8
/// partitions each kept tansu (sqlite storage) 32 % of a core busy at
/// 50 ms, 88 % at 10 ms. So a projector's worker far behind the log
/// waits [`CATCH_UP_FETCH_WAIT_MS`] instead, and this once it reaches the
/// end; the identity service's reader always waits this.
pub const FETCH_WAIT_MS: u32 = 50;

/// The fetch wait of a consumer catching up with the log (see
/// [`Fetching::CatchingUp`]): it always finds records, so the broker is
/// never asked while idle, and against tansu it reads up to ten times
/// as much per second as at [`FETCH_WAIT_MS`] (`make bench`: about 2
/// million customer records a second for a plain consumer).
pub const CATCH_UP_FETCH_WAIT_MS: u32 = 5;

/// How long librdkafka waits before fetching again once the records it
/// holds for the application reach their bound (`fetch.queue.backoff.ms`;
/// its default is 1 s).
///
/// A consumer that fetches faster than its application takes records
/// fills that bound and would then stop for a whole second while the
/// application emptied it in a fraction of one: a projector catching up
/// at [`CATCH_UP_FETCH_WAIT_MS`] waited for records a quarter of the time,
/// and read a 5M-record rebuild at 438 000 records/s; with 10 ms, at
/// 522 000, both cores busy (one `make bench` run). While the bound
/// holds, librdkafka only checks the queue, without asking the broker.
pub const FETCH_QUEUE_BACKOFF_MS: u32 = 10;

/// How many fetched records librdkafka may hold for the application
/// (`queued.min.messages`; its default is 100 000), so high that the byte
/// bound, `queued.max.messages.kbytes` (64 MiB; [`CATCH_UP_PREFETCH_KIB`]
/// while catching up), is the one that applies.
///
/// When the held records reach the bound, librdkafka stops fetching for
/// [`FETCH_QUEUE_BACKOFF_MS`]. A projector rebuilding holds batches of up
/// to 20 000 records in three stages, so 100 000 was reached whenever the
/// fold fell a little behind, and (with librdkafka's 1 s backoff then)
/// each new fetch also waited out tansu's hold (see [`FETCH_WAIT_MS`]).
/// The byte bound pauses fetching the same way, but only about 330 000
/// customer records behind. With it alone, a 5M-record replay read at
/// 0.87–0.89 of the plain consumer's rate instead of 0.79–0.84 (A/B runs of
/// `make bench`), for no more peak memory than the bench could tell apart.
/// It applies to every consumer; identity's reader keeps its own buffer
/// bounded by pausing partitions (`reader::Buffering`).
pub const PREFETCH_RECORDS: u32 = 10_000_000;

/// How many KiB of fetched records a consumer catching up may hold for
/// the application (`queued.max.messages.kbytes`), a quarter of
/// librdkafka's 64 MiB, which steady consumers keep.
///
/// At [`CATCH_UP_FETCH_WAIT_MS`] the bound is always reached, and a fetch
/// refills it within milliseconds, so a smaller one keeps the fold as
/// busy. Held records cost more than their bytes (librdkafka keeps each
/// 5 MiB fetch answer until its last record is freed): with 64 MiB, a
/// fresh 5M-record rebuild peaked at 688 MiB of resident memory, with
/// 16 MiB at 356–575 MiB, against 318–332 MiB at the steady wait alone
/// (`make bench`).
pub const CATCH_UP_PREFETCH_KIB: u32 = 16 * 1024;

/// Where a consumer reads relative to the end of the log, which sets how
/// long its fetches wait at the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetching {
    /// At or near the end: new records trickle in, and fetches wait
    /// [`FETCH_WAIT_MS`] for them.
    Steady,
    /// Far behind (a rebuild, a restart after downtime): every fetch finds
    /// records, and waits [`CATCH_UP_FETCH_WAIT_MS`].
    CatchingUp,
}

impl Fetching {
    fn wait_ms(self) -> u32 {
        match self {
            Fetching::Steady => FETCH_WAIT_MS,
            Fetching::CatchingUp => CATCH_UP_FETCH_WAIT_MS,
        }
    }
}

/// A consumer for manual partition assignment. Offsets are never committed to
/// the broker: the services keep them in RocksDB with the state they produced.
pub fn assigning_consumer(
    kafka: &KafkaConfig,
    client_id: &str,
    report_partition_end: bool,
) -> Result<(BaseConsumer<HealthContext>, Arc<BrokerHealth>)> {
    let context = HealthContext::default();
    let health = context.health.clone();
    let consumer = assigning_consumer_with(
        kafka,
        client_id,
        report_partition_end,
        Fetching::Steady,
        context,
    )?;
    Ok((consumer, health))
}

/// [`assigning_consumer`], fetching as `fetching` says and reporting to
/// `context` (several consumers may share one [`BrokerHealth`]).
pub fn assigning_consumer_with(
    kafka: &KafkaConfig,
    client_id: &str,
    report_partition_end: bool,
    fetching: Fetching,
    context: HealthContext,
) -> Result<BaseConsumer<HealthContext>> {
    let mut config = client_config(kafka, client_id);
    // librdkafka wants a group id even for manual assignment; nothing is
    // ever committed to it and the consumer never joins the group.
    config
        .set("group.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "enable.partition.eof",
            if report_partition_end {
                "true"
            } else {
                "false"
            },
        )
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", fetching.wait_ms().to_string())
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string())
        .set("queued.min.messages", PREFETCH_RECORDS.to_string());
    if fetching == Fetching::CatchingUp {
        config.set(
            "queued.max.messages.kbytes",
            CATCH_UP_PREFETCH_KIB.to_string(),
        );
    }
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
        .create_with_context(context)
        .map_err(|source| Error::Kafka {
            context: "creating a consumer".into(),
            source,
        })
}

/// The number of partitions of `topic`, waiting for the broker up to `timeout`.
pub fn partition_count<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| Error::Kafka {
            context: format!("reading metadata of {topic}"),
            source,
        })?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|entry| entry.name() == topic)
        .map_or(0, |entry| entry.partitions().len());
    if partitions == 0 {
        return Err(Error::MissingTopic(topic.to_owned()));
    }
    Ok(partitions as i32)
}

/// Waits until `topic` exists, retrying while the broker starts up.
pub fn wait_for_partitions<C>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    patience: Duration,
) -> Result<i32>
where
    C: ConsumerContext,
{
    let deadline = std::time::Instant::now() + patience;
    loop {
        match partition_count(consumer, topic, Duration::from_secs(5)) {
            Ok(count) => return Ok(count),
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::warn!(topic, %error, "waiting for the topic");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => return Err(error),
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The header that marks a record re-submitted from the dead letters, with
/// the dead letter's `partition:offset` as its value.
pub const RETRY_HEADER: &str = "rapport-retry-of";

/// Produces every record and waits until the broker acknowledged all of
/// them. A full queue is waited out, never dropped. Blocking: call it from a
/// worker thread, not from async code.
pub fn produce_all(producer: &FutureProducer<HealthContext>, records: &[Outgoing]) -> Result<()> {
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        let mut attempt = rdkafka::producer::FutureRecord::to(&record.topic)
            .key(&record.key)
            .payload(&record.payload);
        if let Some(timestamp) = record.timestamp_ms {
            attempt = attempt.timestamp(timestamp);
        }
        if !record.headers.is_empty() {
            let mut headers = rdkafka::message::OwnedHeaders::new();
            for (key, value) in &record.headers {
                headers = headers.insert(rdkafka::message::Header {
                    key,
                    value: Some(value),
                });
            }
            attempt = attempt.headers(headers);
        }
        loop {
            match producer.send_result(attempt) {
                Ok(delivery) => {
                    deliveries.push((record.topic.as_str(), delivery));
                    break;
                }
                Err((error, returned)) => {
                    tracing::debug!(%error, "producer queue full, waiting");
                    attempt = returned;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    for (topic, delivery) in deliveries {
        match block_on(delivery) {
            Ok(Ok(_)) => {}
            Ok(Err((source, _))) => {
                return Err(Error::Kafka {
                    context: format!("producing to {topic}"),
                    source,
                });
            }
            Err(_) => return Err(Error::Config("the producer shut down".to_owned())),
        }
    }
    Ok(())
}

/// Waits for a future on the current thread. rdkafka's delivery futures are
/// completed by librdkafka's own threads, so no async runtime is needed.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

/// A refused input record, wrapped for the dead-letter topic.
pub struct Refused<'a> {
    pub service: &'a str,
    pub reason: String,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: &'a [u8],
    pub payload: &'a [u8],
    pub timestamp_ms: i64,
}

impl Refused<'_> {
    /// The dead letter to produce, keyed by the refusing service.
    pub fn into_outgoing(self, dead_letter_topic: &str) -> Outgoing {
        use prost::Message as _;
        let letter = rapport_proto::v1::DeadLetter {
            service: self.service.to_owned(),
            reason: self.reason,
            source_topic: self.topic.to_owned(),
            source_partition: self.partition,
            source_offset: self.offset,
            key: self.key.to_vec(),
            payload: self.payload.to_vec(),
            source_timestamp_ms: self.timestamp_ms,
        };
        Outgoing {
            topic: dead_letter_topic.to_owned(),
            key: self.service.as_bytes().to_vec(),
            payload: letter.encode_to_vec(),
            timestamp_ms: None,
            headers: Vec::new(),
        }
    }
}

/// Assigns `topic`'s partitions to `consumer`, each at its start offset.
pub fn assign<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    starts: &[(i32, rdkafka::Offset)],
) -> Result<()> {
    let mut assignment = rdkafka::TopicPartitionList::new();
    for (partition, start) in starts {
        assignment
            .add_partition_offset(topic, *partition, *start)
            .map_err(|source| Error::Kafka {
                context: format!("assigning {topic}/{partition}"),
                source,
            })?;
    }
    consumer.assign(&assignment).map_err(|source| Error::Kafka {
        context: format!("assigning {topic}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_end_counts_once_the_position_reaches_it() {
        let health = BrokerHealth::default();
        health.record_log_end("t", 0, 10, 50_000);
        assert_eq!(
            health.end_reached_as_of("t", 0, 10),
            Some(50_000 - 2 * STATISTICS_INTERVAL_MS)
        );
        assert_eq!(health.end_reached_as_of("t", 0, 9), None);
        assert_eq!(health.end_reached_as_of("t", 1, 10), None);
    }
}
