//! What stops a processor: errors that name the group and, where they apply, the topic,
//! partition, offset and key of what failed.

use crate::graph::GraphError;
use crate::kafka::KafkaError;
use crate::storage::StorageError;
use crate::topic_manager::TopicManagerError;

/// Errors of a processor, with the coordinates of what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// The group graph breaks a rule.
    #[error("processor {group:?}: invalid group graph: {source}")]
    Graph {
        /// The group.
        group: &'static str,
        /// The broken rule.
        source: GraphError,
    },
    /// Topics are missing, not co-partitioned or could not be created.
    #[error("processor {group:?}: {source}")]
    Topics {
        /// The group.
        group: &'static str,
        /// What is wrong.
        source: TopicManagerError,
    },
    /// A handler failed, panicked, or its message did not decode.
    #[error(
        "processor {group:?}: message at topic {topic:?} partition {partition} offset {offset} \
         (key {key:?}): {message}"
    )]
    Callback {
        /// The group.
        group: &'static str,
        /// Topic of the message.
        topic: String,
        /// Partition of the message.
        partition: i32,
        /// Offset of the message.
        offset: i64,
        /// Key of the message, lossy UTF-8.
        key: String,
        /// What went wrong.
        message: String,
    },
    /// A produce a handler caused (emit, loopback, changelog write) failed.
    #[error(
        "processor {group:?}: message at topic {topic:?} partition {partition} offset {offset} \
         (key {key:?}): {source}"
    )]
    HandlerProduce {
        /// The group.
        group: &'static str,
        /// Topic of the input message.
        topic: String,
        /// Partition of the input message.
        partition: i32,
        /// Offset of the input message.
        offset: i64,
        /// Key of the input message, lossy UTF-8.
        key: String,
        /// The client's error, naming the topic and partition written to.
        source: Box<KafkaError>,
    },
    /// A partition's task panicked outside a handler (storage, recovery).
    #[error("processor {group:?}: partition {partition} panicked: {message}")]
    PartitionPanicked {
        /// The group.
        group: &'static str,
        /// The partition.
        partition: i32,
        /// The panic's message.
        message: String,
    },
    /// The producer could not be created.
    #[error("processor {group:?}: {source}")]
    Produce {
        /// The group.
        group: &'static str,
        /// The client's error, naming topic and partition.
        source: KafkaError,
    },
    /// Consuming failed for good.
    #[error("processor {group:?}: topic {topic:?}: {source}")]
    Kafka {
        /// The group.
        group: &'static str,
        /// The topic.
        topic: String,
        /// The client's error.
        source: KafkaError,
    },
    /// Local storage failed.
    #[error("processor {group:?}: {source}")]
    Storage {
        /// The group.
        group: &'static str,
        /// The storage's error, naming topic, partition and path.
        source: StorageError,
    },
    /// A lookup table's view failed.
    #[error("processor {group:?}: lookup {source}")]
    Lookup {
        /// The group.
        group: &'static str,
        /// The view's error, naming the table.
        source: crate::view::ViewError,
    },
    /// `Processor::get` failed: the key does not encode or the stored row does not decode.
    #[error("processor {group:?}: get of key {key:?}: {message}")]
    Get {
        /// The group.
        group: &'static str,
        /// The key, lossy UTF-8.
        key: String,
        /// What went wrong.
        message: String,
    },
    /// A visit could not be done.
    #[error("processor {group:?}: visit with {visitor}: {message}")]
    Visit {
        /// The group.
        group: &'static str,
        /// The visitor.
        visitor: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The cluster did not answer while the processor started, for longer than
    /// [`Backoff::give_up_after`](crate::kafka::Backoff::give_up_after) of
    /// [`ProcessorConfig::backoff`](super::ProcessorConfig::backoff).
    #[error(
        "{source} (the cluster did not answer for {failing_for:?}, {attempts} attempts: gave up)"
    )]
    Unreachable {
        /// The group.
        group: &'static str,
        /// Attempts made.
        attempts: u32,
        /// How long the attempts failed.
        failing_for: std::time::Duration,
        /// The last attempt's error.
        source: Box<ProcessorError>,
    },
    /// `run` was called while running.
    #[error("processor {group:?} is running already")]
    AlreadyRunning {
        /// The group.
        group: &'static str,
    },
}

impl ProcessorError {
    /// Whether the cluster did not answer, so that trying again later may succeed.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Topics { source, .. } => source.is_unreachable(),
            Self::Produce { source, .. } | Self::Kafka { source, .. } => source.is_unreachable(),
            Self::Lookup { source, .. } => source.is_unreachable(),
            _ => false,
        }
    }

    /// Under exactly-once: whether the error is the cluster's fault that aborted the open
    /// transaction (a leader that died took its in-flight writes past the transaction
    /// timeout, the coordinator aborted or refused the transaction), not the handlers' or
    /// this member's (a failing handler, a fenced member). Starting again from the last
    /// commit heals it, as it does after a crash.
    pub(super) fn aborted_transaction(&self) -> bool {
        match self {
            Self::Produce { source, .. } => match source {
                KafkaError::Transaction {
                    fenced, abortable, ..
                } => *abortable && !*fenced,
                other => other.is_unreachable(),
            },
            Self::HandlerProduce { source, .. } => {
                matches!(**source, KafkaError::Produce { .. }) || source.is_unreachable()
            }
            _ => false,
        }
    }
}

/// The message of a caught panic.
pub(super) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
