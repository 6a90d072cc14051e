//! The errors of the Kafka layer.

use std::time::Duration;

/// Errors of the Kafka layer, with the topic and partition where they apply.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// Work a handler deferred failed ([`DeferredCommit::fail`](crate::context::DeferredCommit::fail)):
    /// not a Kafka error, carried where a deferred message's completion is awaited.
    #[error("{0}")]
    Deferred(String),
    /// The client could not be created (bad configuration).
    #[error("cannot create the Kafka client: {0}")]
    Config(String),
    /// A produce failed.
    #[error("produce to topic {topic:?} partition {partition} failed: {message}")]
    Produce {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The client's explanation.
        message: String,
    },
    /// Consuming failed.
    #[error("consume of topic {topic:?} failed: {message}")]
    Consume {
        /// Topic.
        topic: String,
        /// The client's explanation.
        message: String,
    },
    /// A metadata or admin request failed.
    #[error("{operation} for topic {topic:?} failed: {message}")]
    Admin {
        /// What was asked.
        operation: &'static str,
        /// Topic.
        topic: String,
        /// The client's explanation.
        message: String,
    },
    /// The cluster did not answer a metadata or admin request: no broker could be reached,
    /// or the request timed out. Trying again later may succeed ([`Backoff`](super::Backoff)).
    #[error("{operation} for topic {topic:?} failed: the cluster did not answer: {message}")]
    Unreachable {
        /// What was asked.
        operation: &'static str,
        /// Topic.
        topic: String,
        /// The client's explanation.
        message: String,
    },
    /// The topic exists already.
    #[error("topic {0:?} exists already")]
    TopicExists(String),
    /// The producer was closed before the broker acknowledged a message.
    #[error("the producer was closed before the broker acknowledged the message")]
    Unacknowledged,
    /// Waiting for the broker took too long.
    #[error("{operation} timed out after {timeout:?}")]
    Timeout {
        /// What was waited for.
        operation: String,
        /// How long.
        timeout: Duration,
    },
    /// A transaction could not be opened, committed or aborted.
    #[error("transaction {transactional_id:?}: {operation} failed: {message}{}", transaction_note(.fenced, .abortable))]
    Transaction {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// What was asked: init, begin, send offsets, commit, abort.
        operation: &'static str,
        /// The client's explanation.
        message: String,
        /// The producer was fenced or failed fatally, or the member's generation in its
        /// group is gone (paused past its session): what the transaction holds can never
        /// commit.
        fenced: bool,
        /// The open transaction must be aborted; a new one may follow.
        abortable: bool,
    },
    /// The local state of a table partition holds offsets its changelog does not have.
    #[error("local state of topic {topic:?} partition {partition} holds offset {stored}, beyond the partition's end (high watermark {high}): the topic was made anew or the state belongs to another cluster; delete the local state and start again")]
    LocalStateAhead {
        /// The changelog topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The offset of the last message the local state holds.
        stored: i64,
        /// The partition's high watermark.
        high: i64,
    },
}

/// What a transaction error means for the producer.
fn transaction_note(fenced: &bool, abortable: &bool) -> &'static str {
    if *fenced {
        " (fenced: a newer producer with this transactional id, or a newer generation of the \
         group, took over; this one can commit no more)"
    } else if *abortable {
        " (the transaction must be aborted)"
    } else {
        ""
    }
}

impl KafkaError {
    /// Whether the cluster did not answer, so that the same request may succeed later:
    /// [`KafkaError::Unreachable`] and [`KafkaError::Timeout`].
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. })
    }
}
