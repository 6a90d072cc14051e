//! What can go wrong when creating or checking topics.

use std::time::Duration;

use crate::kafka::KafkaError;

/// Who creates a topic that is missing: its writer or the service's setup, never its
/// readers.
pub(super) const MISSING_STREAM: &str =
    "topics are created by their writers or the service's setup, \
     never by their readers: create a stream first (Emitter::ensuring, \
     TopicManager::ensure_stream, or Kafka's kafka-topics.sh), and start the processor that \
     owns a table (a processor creates its table, loop topic, outputs and dead-letter topic)";

/// Errors of the topic manager, naming the topics involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicManagerError {
    /// The topic does not exist and may not be created here.
    #[error("topic {topic:?} does not exist: {create}")]
    Missing {
        /// The topic.
        topic: String,
        /// Who creates such a topic, and with which call.
        create: &'static str,
    },
    /// The topic exists with another partition count than required.
    #[error("topic {topic:?} has {actual} partitions, but {expected} are required")]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// Partitions required.
        expected: u32,
        /// Partitions it has.
        actual: u32,
    },
    /// Topics that must be co-partitioned are not.
    #[error("topics are not co-partitioned (same partition count needed): {}", describe_counts(.topics))]
    NotCopartitioned {
        /// Each topic and its partition count (`None`: missing).
        topics: Vec<(String, Option<u32>)>,
    },
    /// A table topic is not compacted.
    #[error(
        "table topic {topic:?} has cleanup.policy={policy:?}; tables need cleanup.policy=compact"
    )]
    NotCompacted {
        /// The topic.
        topic: String,
        /// Its cleanup policy.
        policy: String,
    },
    /// The topic was created but did not show up in the metadata in time.
    #[error("topic {topic:?} was created but did not appear in the metadata within {timeout:?}")]
    NotVisible {
        /// The topic.
        topic: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The client failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

impl TopicManagerError {
    /// Whether the cluster did not answer ([`KafkaError::is_unreachable`]): the same request
    /// may succeed later.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Kafka(error) if error.is_unreachable())
    }
}

fn describe_counts(topics: &[(String, Option<u32>)]) -> String {
    topics
        .iter()
        .map(|(topic, count)| match count {
            Some(n) => format!("{topic:?} has {n}"),
            None => format!("{topic:?} is missing"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
