//! The live key registry of a service: loaded from the registry topic
//! before the service answers anything, then followed on a thread of its
//! own, so that a key created or revoked anywhere takes effect here within
//! a fetch wait. Uses seen by the gate are written back to the topic.

use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;

use super::KeyBook;
use crate::broker::{Admission, OffsetGate};
use crate::config::KafkaConfig;
use crate::kafka::{Outgoing, assign, assigning_consumer, produce_all, wait_for_partitions};
use crate::{Error, Result};

/// How long a service waits for the registry topic and its first full read.
const LOAD_PATIENCE: Duration = Duration::from_secs(60);

/// The keys a service knows, shared by its gate and the thread that
/// follows the topic.
#[derive(Clone, Default)]
pub struct Registry {
    book: Arc<RwLock<KeyBook>>,
    usage: Option<mpsc::Sender<(String, i64)>>,
}

impl Registry {
    /// A registry holding `book` and following nothing (tests, in-process
    /// routers).
    pub fn fixed(book: KeyBook) -> Self {
        Self {
            book: Arc::new(RwLock::new(book)),
            usage: None,
        }
    }

    /// Reads the book.
    pub fn read<T>(&self, read: impl FnOnce(&KeyBook) -> T) -> T {
        read(
            &self
                .book
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Reports that key `id` was used at `at_ms`; the registry thread writes
    /// it to the topic. Never blocks.
    pub(super) fn report_use(&self, id: &str, at_ms: i64) {
        if let Some(usage) = &self.usage {
            let _ = usage.send((id.to_owned(), at_ms));
        }
    }
}

/// Loads `topic` whole into a registry, then follows it (and writes the
/// uses the gate reports) on threads of its own. Blocking: call it before
/// serving, from `spawn_blocking` in async code.
pub fn follow(kafka: &KafkaConfig, topic: &str, service: &str) -> Result<Registry> {
    let started = Instant::now();
    let client_id = format!("rapport-{service}-keys");
    let (consumer, _) = assigning_consumer(kafka, &client_id, true)?;
    let partitions = wait_for_partitions(&consumer, topic, LOAD_PATIENCE)?;
    let starts: Vec<(i32, rdkafka::Offset)> = (0..partitions)
        .map(|partition| (partition, rdkafka::Offset::Beginning))
        .collect();
    assign(&consumer, topic, &starts)?;
    let book = Arc::new(RwLock::new(KeyBook::default()));
    let mut follower = Follower {
        book: book.clone(),
        gate: OffsetGate::default(),
        topic: topic.to_owned(),
        at_end: std::collections::BTreeSet::new(),
    };
    let deadline = Instant::now() + LOAD_PATIENCE;
    while (follower.at_end.len() as i32) < partitions {
        if Instant::now() > deadline {
            return Err(Error::Config(format!(
                "could not read the key registry {topic} to its end within {LOAD_PATIENCE:?}"
            )));
        }
        follower.take(consumer.poll(Duration::from_millis(200)))?;
    }
    let keys = follower.book.read().map_or(0, |book| book.all().len());
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(topic, keys, elapsed_ms, "key registry loaded");
    std::thread::Builder::new()
        .name("keys".to_owned())
        .spawn(move || {
            loop {
                if let Err(error) = follower.take(consumer.poll(Duration::from_millis(500))) {
                    // A broker outage: librdkafka reconnects by itself.
                    tracing::warn!(topic = %follower.topic, %error, "following the key registry");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        })
        .map_err(|source| Error::Io {
            context: "starting the key registry thread".to_owned(),
            source,
        })?;
    let (usage, uses) = mpsc::channel::<(String, i64)>();
    let (producer, _) =
        crate::kafka::producer(kafka, &client_id, Some(Duration::from_secs(30)), 10_000)?;
    let usage_topic = topic.to_owned();
    std::thread::Builder::new()
        .name("key-uses".to_owned())
        .spawn(move || {
            for (id, at_ms) in uses {
                let (key, payload) = super::usage_record(&id, at_ms);
                if let Err(error) = write_record(&producer, &usage_topic, key, payload) {
                    tracing::warn!(topic = %usage_topic, key_id = %id, %error, "could not record a key's last use");
                }
            }
        })
        .map_err(|source| Error::Io {
            context: "starting the key usage thread".to_owned(),
            source,
        })?;
    Ok(Registry {
        book,
        usage: Some(usage),
    })
}

/// Folds what the registry consumer hands over.
struct Follower {
    book: Arc<RwLock<KeyBook>>,
    gate: OffsetGate,
    topic: String,
    /// Partitions whose end was reached since their last record.
    at_end: std::collections::BTreeSet<i32>,
}

impl Follower {
    fn take(
        &mut self,
        polled: Option<std::result::Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>>,
    ) -> Result<()> {
        match polled {
            Some(Ok(message)) => {
                self.at_end.remove(&message.partition());
                if self.gate.admit(message.partition(), message.offset()) == Admission::Take {
                    let outcome = self
                        .book
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .apply(
                            message.key().unwrap_or_default(),
                            message.payload().unwrap_or_default(),
                        );
                    if let Err(error) = outcome {
                        tracing::warn!(topic = %self.topic, partition = message.partition(), offset = message.offset(), %error, "skipping a key registry record");
                    }
                }
                Ok(())
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                self.at_end.insert(partition);
                Ok(())
            }
            Some(Err(source)) => Err(Error::Kafka {
                context: format!("reading {}", self.topic),
                source,
            }),
            None => Ok(()),
        }
    }
}

/// Writes one registry record and waits for the broker's acknowledgement.
pub fn write_record(
    producer: &rdkafka::producer::FutureProducer<crate::kafka::HealthContext>,
    topic: &str,
    key: Vec<u8>,
    payload: Vec<u8>,
) -> Result<()> {
    produce_all(
        producer,
        &[Outgoing {
            topic: topic.to_owned(),
            key,
            payload,
            timestamp_ms: None,
            headers: Vec::new(),
        }],
    )
}
