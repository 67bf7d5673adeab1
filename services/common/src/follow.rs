//! Following a compacted topic whose records every process folds whole (the
//! key registry, the projectors' announcements): read from the beginning
//! to the end before the service answers anything, then take each new
//! record as it comes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;

use crate::broker::{Admission, OffsetGate};
use crate::config::KafkaConfig;
use crate::kafka::{HealthContext, assign, assigning_consumer, wait_for_partitions};
use crate::{Error, Result};

/// A consumer of every partition of one topic from its beginning, handing
/// each record's key and payload to a fold.
pub struct Follower<F> {
    consumer: BaseConsumer<HealthContext>,
    topic: String,
    partitions: i32,
    gate: OffsetGate,
    /// Partitions whose end was reached since their last record.
    at_end: BTreeSet<i32>,
    fold: F,
}

impl<F: FnMut(&[u8], &[u8]) -> std::result::Result<(), String>> Follower<F> {
    /// Assigns every partition of `topic` (waiting up to `patience` for
    /// it) from its beginning. The topic is not read yet.
    pub fn new(
        kafka: &KafkaConfig,
        client_id: &str,
        topic: &str,
        patience: Duration,
        fold: F,
    ) -> Result<Self> {
        let (consumer, _) = assigning_consumer(kafka, client_id, true)?;
        let partitions = wait_for_partitions(&consumer, topic, patience)?;
        let starts: Vec<(i32, rdkafka::Offset)> = (0..partitions)
            .map(|partition| (partition, rdkafka::Offset::Beginning))
            .collect();
        assign(&consumer, topic, &starts)?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            partitions,
            gate: OffsetGate::default(),
            at_end: BTreeSet::new(),
            fold,
        })
    }

    /// Folds everything up to the end of every partition, within
    /// `patience`.
    pub fn load(&mut self, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        while (self.at_end.len() as i32) < self.partitions {
            if Instant::now() > deadline {
                return Err(Error::Config(format!(
                    "could not read {} to its end within {patience:?}",
                    self.topic
                )));
            }
            self.poll(Duration::from_millis(200))?;
        }
        Ok(())
    }

    /// Folds every record after the load, on a thread named `name`, for as
    /// long as the process runs; `after_wait` runs after each wait for
    /// records (folded or not).
    pub fn follow_on_thread(
        mut self,
        name: &str,
        mut after_wait: impl FnMut() + Send + 'static,
    ) -> Result<()>
    where
        F: Send + 'static,
    {
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                loop {
                    if let Err(error) = self.poll(Duration::from_millis(500)) {
                        // A broker outage: librdkafka reconnects by itself.
                        tracing::warn!(topic = %self.topic, %error, "following a compacted topic");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    after_wait();
                }
            })
            .map(|_| ())
            .map_err(|source| Error::Io {
                context: format!("starting the {name} thread"),
                source,
            })
    }

    /// Waits up to `wait` for a record and folds it; a record the fold
    /// refuses is logged and skipped.
    fn poll(&mut self, wait: Duration) -> Result<()> {
        match self.consumer.poll(wait) {
            Some(Ok(message)) => {
                self.at_end.remove(&message.partition());
                if self.gate.admit(message.partition(), message.offset()) == Admission::Take {
                    let outcome = (self.fold)(
                        message.key().unwrap_or_default(),
                        message.payload().unwrap_or_default(),
                    );
                    if let Err(error) = outcome {
                        tracing::warn!(topic = %self.topic, partition = message.partition(), offset = message.offset(), %error, "skipping a record");
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
