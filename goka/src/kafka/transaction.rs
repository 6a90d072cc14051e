//! Kafka transactions (KIP-98, and KIP-447's fencing by consumer group generation): the
//! messages a producer sends between [`TransactionalProducer::begin`] and
//! [`commit`](TransactionalProducer::commit), with the consumed offsets
//! [`send_offsets`](TransactionalProducer::send_offsets) adds, become visible to
//! `read_committed` readers together, or not at all.

use futures::future::BoxFuture;

use super::{KafkaError, Producer, TopicPartitionOffset};

/// A group member's identity at its current generation, taken from its group consumer. The
/// offsets of a transaction carry it, so that a member the group has moved past (fenced by a
/// newer generation, KIP-447) cannot commit them. Opaque: only the client that made it reads
/// it.
pub struct GroupMetadata(pub(crate) Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for GroupMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupMetadata")
    }
}

/// A producer whose messages belong to transactions. One transaction is open at a time;
/// sending outside one fails.
pub trait TransactionalProducer: Producer {
    /// Opens a transaction: what is sent from now on belongs to it.
    fn begin(&self) -> Result<(), KafkaError>;

    /// Adds consumed offsets (the next offset to read of each partition) to the open
    /// transaction: the group commits them if and only if the transaction commits.
    fn send_offsets<'a>(
        &'a self,
        offsets: &'a [TopicPartitionOffset],
        group: &'a GroupMetadata,
    ) -> BoxFuture<'a, Result<(), KafkaError>>;

    /// Commits the open transaction, once every message sent in it was acknowledged.
    fn commit(&self) -> BoxFuture<'_, Result<(), KafkaError>>;

    /// Aborts the open transaction: `read_committed` readers never see its messages, and its
    /// offsets are not committed.
    fn abort(&self) -> BoxFuture<'_, Result<(), KafkaError>>;
}
