//! The errors of the tester's own operations.

use crate::codec::CodecError;
use crate::kafka::KafkaError;
use crate::storage::StorageError;

/// Errors of the tester's own operations (seeding tables, reading them, tracking topics).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TesterError {
    /// A key or value did not encode or decode.
    #[error("topic {topic:?}: {source}")]
    Codec {
        /// The topic.
        topic: &'static str,
        /// The codec's error.
        source: CodecError,
    },
    /// Writing to a topic failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Reading a table failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
