//! The live key registry of a service: loaded from the registry topic
//! before the service answers anything, then followed on a thread of its
//! own, so that a key created or revoked anywhere takes effect here within
//! a fetch wait. Uses seen by the gate are written back to the topic.

use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::KeyBook;
use crate::config::KafkaConfig;
use crate::follow::Follower;
use crate::kafka::{Outgoing, produce_all};
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
    let book = Arc::new(RwLock::new(KeyBook::default()));
    let folded = book.clone();
    let mut follower = Follower::new(
        kafka,
        &client_id,
        topic,
        LOAD_PATIENCE,
        move |key, payload| {
            folded
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .apply(key, payload)
                .map_err(|error| error.to_string())
        },
    )?;
    follower.load(LOAD_PATIENCE).map_err(|_| {
        Error::Config(format!(
            "could not read the key registry {topic} to its end within {LOAD_PATIENCE:?}"
        ))
    })?;
    let keys = book.read().map_or(0, |book| book.all().len());
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(topic, keys, elapsed_ms, "key registry loaded");
    follower.follow_on_thread("keys", || {})?;
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
