//! What can go wrong when emitting.

use crate::codec::CodecError;
use crate::kafka::KafkaError;
use crate::topic_manager::TopicManagerError;

/// Errors of an emitter, naming the topic (and key, where one is involved).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The key or value could not be encoded.
    #[error("emit to topic {topic:?}: cannot encode the {what}: {source}")]
    Encode {
        /// The topic.
        topic: &'static str,
        /// `"key"` or `"value"`.
        what: &'static str,
        /// The codec's error.
        source: CodecError,
    },
    /// [`Emitter::finish`](super::Emitter::finish) closed the emitter: nothing more is sent.
    #[error("emitter of topic {topic:?} is finished: nothing is emitted after finish()")]
    Finished {
        /// The topic.
        topic: &'static str,
    },
    /// The record's timestamp is before 1970: Kafka keeps milliseconds since the epoch,
    /// and a negative one means "none".
    #[error("emit to topic {topic:?} (key {key:?}): timestamp {millis} ms is before 1970; Kafka keeps milliseconds since the epoch")]
    Timestamp {
        /// The topic.
        topic: &'static str,
        /// The key, lossy UTF-8.
        key: String,
        /// The timestamp given.
        millis: i64,
    },
    /// The broker did not take the message.
    #[error("emit to topic {topic:?} (key {key:?}): {source}")]
    Delivery {
        /// The topic.
        topic: &'static str,
        /// The key, lossy UTF-8.
        key: String,
        /// The client's error.
        source: KafkaError,
    },
    /// Flushing pending messages failed or timed out.
    #[error("emitter of topic {topic:?}: {source}")]
    Flush {
        /// The topic.
        topic: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// Messages whose delivery nobody awaited failed since the last
    /// [`finish`](super::Emitter::finish): they are not in the topic.
    #[error("emitter of topic {topic:?}: {failed} message(s) emitted without awaiting were not delivered; the last: {last}")]
    Undelivered {
        /// The topic.
        topic: &'static str,
        /// How many failed.
        failed: u64,
        /// The last failure, with its key.
        last: String,
    },
    /// The emitter could not start (topic missing, client not created).
    #[error("emitter of topic {topic:?} cannot start: {source}")]
    Setup {
        /// The topic.
        topic: &'static str,
        /// Why.
        source: TopicManagerError,
    },
}
