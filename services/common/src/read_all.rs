//! Reading a small topic whole, for operator tools and tests (dead
//! letters, comparisons): every record once, from the beginning to each
//! partition's end. Not for the data path, which reads as it folds.

use std::time::Duration;

use rdkafka::error::KafkaError;

use crate::broker::{Admission, OffsetGate};
use crate::config::KafkaConfig;
use crate::kafka::{assign, assigning_consumer, partition_count};
use crate::{Error, Result};

/// A consumed record, owned.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Reads every record of `topic` from the beginning until each partition
/// reports its end, in partition then offset order. For operator tools on
/// small topics (dead letters), not for the data path.
pub fn read_to_end(kafka: &KafkaConfig, topic: &str, patience: Duration) -> Result<Vec<Record>> {
    use rdkafka::message::Message as _;
    let (consumer, _) = assigning_consumer(kafka, "rapport-read", true)?;
    let partitions = partition_count(&consumer, topic, Duration::from_secs(10))?;
    let starts: Vec<(i32, rdkafka::Offset)> = (0..partitions)
        .map(|partition| (partition, rdkafka::Offset::Beginning))
        .collect();
    assign(&consumer, topic, &starts)?;
    let mut at_end = std::collections::BTreeSet::new();
    let mut gate = OffsetGate::default();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + patience;
    while (at_end.len() as i32) < partitions {
        if std::time::Instant::now() > deadline {
            return Err(Error::Config(format!(
                "could not read {topic} to its end within {patience:?}"
            )));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                if gate.admit(message.partition(), message.offset()) != Admission::Take {
                    continue;
                }
                records.push(Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                    key: message.key().unwrap_or_default().to_vec(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(source)) => {
                return Err(Error::Kafka {
                    context: format!("reading {topic}"),
                    source,
                });
            }
            None => {}
        }
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    Ok(records)
}
