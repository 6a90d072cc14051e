//! The seam between the runtime and the Kafka client.
//!
//! Emitters, views and the topic manager talk to Kafka only through the traits here
//! ([`Producer`], [`PartitionConsumer`], [`Admin`]), so the tester can replace the client
//! with an in-memory one. [`rdkafka_client`] implements them on librdkafka (through the
//! `rdkafka` crate and tokio); [`KafkaConfig`] carries the brokers and any librdkafka
//! property the user sets.

// Only the rdkafka producer answers through the ring; the tester answers at once.
#[cfg_attr(not(feature = "rdkafka"), allow(dead_code))]
mod ack_ring;
mod backoff;
mod batch;
mod config;
mod error;
mod message;
#[cfg(feature = "rdkafka")]
pub mod rdkafka_client;
#[cfg(feature = "rdkafka")]
mod rdkafka_consumer;
#[cfg(feature = "rdkafka")]
mod rdkafka_epoch;
#[cfg(feature = "rdkafka")]
mod rdkafka_group;
#[cfg(feature = "rdkafka")]
mod rdkafka_headers;
#[cfg(feature = "rdkafka")]
mod rdkafka_producer;
#[cfg(feature = "rdkafka")]
mod rdkafka_transaction;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;

pub use self::backoff::Backoff;
pub(crate) use self::backoff::{retry, Stopped};
pub use self::batch::{BatchEvent, ConsumedBatch, MessageRef};
pub use self::config::KafkaConfig;
pub use self::error::KafkaError;
pub use self::message::{ConsumedMessage, Headers, OutgoingRecord};

/// Where a produced message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Partition of the message.
    pub partition: i32,
    /// Offset of the message.
    pub offset: i64,
}

/// The broker's acknowledgement of one produced message: resolves to where the message was
/// stored, or why it was not. Clients that deliver through a callback hand out the sending
/// half from [`Ack::channel`]; clients that store at once answer with [`Ack::ready`].
#[must_use = "a produce can fail; await its acknowledgement"]
#[derive(Debug)]
pub struct Ack(AckState);

#[derive(Debug)]
#[cfg_attr(not(feature = "rdkafka"), allow(dead_code))]
enum AckState {
    Waiting(std::sync::Arc<AckCell>),
    /// A slot of a producer's [`AckRing`](ack_ring::AckRing), by sequence number.
    Slot(std::sync::Arc<ack_ring::AckRing>, u64),
    Ready(Option<Outcome>),
}

/// A delivery or why it failed, in 24 bytes: every message in flight keeps one or two, and
/// the rare error is boxed rather than making all of them its size.
type Outcome = Result<Delivery, Box<KafkaError>>;

/// What an [`Ack`] and its [`AckSender`] share (clients that answer through a callback of
/// their own; the librdkafka producer uses its ring of slots instead). Written once and read
/// with an atomic load.
#[derive(Debug, Default)]
struct AckCell {
    result: std::sync::OnceLock<Outcome>,
    waker: futures::task::AtomicWaker,
}

impl AckCell {
    fn complete(&self, result: Result<Delivery, KafkaError>) {
        // The first answer counts: a late "unacknowledged" never replaces a delivery.
        if self.result.set(result.map_err(Box::new)).is_ok() {
            self.waker.wake();
        }
    }

    /// The answer, once there is one (a copy: a delivery is two numbers).
    fn get(&self) -> Option<Result<Delivery, KafkaError>> {
        self.result
            .get()
            .map(|outcome| outcome.clone().map_err(|e| *e))
    }
}

/// The sending half of an [`Ack`], completed by the client's delivery callback. Dropped
/// unused, the acknowledgement fails with [`KafkaError::Unacknowledged`].
#[derive(Debug)]
pub struct AckSender(std::sync::Arc<AckCell>);

impl AckSender {
    /// Completes the acknowledgement (nobody may be waiting any more: that is fine).
    pub fn send(self, result: Result<Delivery, KafkaError>) {
        self.0.complete(result);
    }
}

impl Drop for AckSender {
    fn drop(&mut self) {
        self.0.complete(Err(KafkaError::Unacknowledged));
    }
}

impl Ack {
    /// An acknowledgement completed later through its [`AckSender`].
    pub fn channel() -> (AckSender, Ack) {
        let cell = std::sync::Arc::new(AckCell::default());
        (AckSender(cell.clone()), Ack(AckState::Waiting(cell)))
    }

    /// An acknowledgement answered through slot `seq` of `ring`.
    #[cfg_attr(not(feature = "rdkafka"), allow(dead_code))]
    pub(crate) fn slot(ring: std::sync::Arc<ack_ring::AckRing>, seq: u64) -> Self {
        Ack(AckState::Slot(ring, seq))
    }

    /// An acknowledgement known already.
    pub fn ready(result: Result<Delivery, KafkaError>) -> Self {
        Ack(AckState::Ready(Some(result.map_err(Box::new))))
    }
}

impl std::future::Future for Ack {
    type Output = Result<Delivery, KafkaError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        match &mut self.0 {
            AckState::Waiting(cell) => {
                if let Some(result) = cell.get() {
                    return Poll::Ready(result);
                }
                cell.waker.register(cx.waker());
                // Completed between the check and the registration: do not miss it.
                match cell.get() {
                    Some(result) => Poll::Ready(result),
                    None => Poll::Pending,
                }
            }
            AckState::Slot(ring, seq) => {
                let polled = ring.poll(*seq, cx);
                if polled.is_ready() {
                    // Read: nothing to give back when dropped.
                    self.0 = AckState::Ready(None);
                }
                polled
            }
            AckState::Ready(result) => Poll::Ready(match result.take() {
                Some(outcome) => outcome.map_err(|e| *e),
                None => Err(KafkaError::Unacknowledged),
            }),
        }
    }
}

/// What the client still knows of a message when its answer comes.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "rdkafka"), allow(dead_code))]
pub(crate) struct Sent<'a> {
    /// The message's key.
    pub(crate) key: &'a [u8],
    /// Its key and value bytes.
    pub(crate) bytes: usize,
}

/// Told how a message ended whose acknowledgement nobody awaits ([`Ack::detach`]), on the
/// thread that serves the producer's answers: it must be quick.
#[cfg_attr(not(feature = "rdkafka"), allow(dead_code))]
pub(crate) trait Settle: Send + Sync + std::fmt::Debug + 'static {
    /// The message's outcome.
    fn settle(&self, result: Result<Delivery, KafkaError>, sent: Sent<'_>);
}

/// What became of an acknowledgement given up by [`Ack::detach`].
#[derive(Debug)]
pub(crate) enum Detached {
    /// The answer was there already: the caller settles it.
    Answered(Result<Delivery, KafkaError>),
    /// The settlement will be told when the answer comes.
    Later,
    /// This kind of acknowledgement cannot hand its answer over: await it.
    Kept(Ack),
}

impl Ack {
    /// Gives up awaiting: the answer goes to `settle` when it comes, without a task per
    /// message.
    pub(crate) fn detach(mut self, settle: std::sync::Arc<dyn Settle>) -> Detached {
        match std::mem::replace(&mut self.0, AckState::Ready(None)) {
            AckState::Slot(ring, seq) => match ring.settle_later(seq, settle) {
                Some(result) => Detached::Answered(result),
                None => Detached::Later,
            },
            AckState::Ready(Some(outcome)) => Detached::Answered(outcome.map_err(|e| *e)),
            AckState::Ready(None) => Detached::Answered(Err(KafkaError::Unacknowledged)),
            state @ AckState::Waiting(_) => Detached::Kept(Ack(state)),
        }
    }
}

/// An acknowledgement dropped unawaited gives its slot back once the answer comes.
impl Drop for Ack {
    fn drop(&mut self) {
        if let AckState::Slot(ring, seq) = &self.0 {
            ring.abandon(*seq);
        }
    }
}

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The oldest message still in the partition.
    Beginning,
    /// The given offset.
    At(i64),
}

/// Whether a partition consumer hands over message headers.
///
/// Table readers (views, recoveries) skip them unless a callback may look: librdkafka parses
/// a consumed message's headers on first access, allocating even when there are none, and
/// that cost a fifth of a view's recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderUse {
    /// Hand over each message's headers.
    Read,
    /// Hand over messages without their headers.
    Skip,
}

/// How a topic should be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Replication factor; `None` lets the broker choose (`default.replication.factor`).
    pub replication: Option<u16>,
    /// Topic configs (`cleanup.policy`, `retention.ms`, ...).
    pub config: BTreeMap<String, String>,
}

/// Produces messages (the client side of an emitter, of changelog writes, of loopbacks).
///
/// Queuing is synchronous: a produce costs no future of its own, and [`send`] adds the
/// waiting while the client's queue is full.
pub trait Producer: Send + Sync + 'static {
    /// Queues `record` if the client has room. The returned [`Ack`] resolves when the broker
    /// stored the message, or with why it did not.
    fn try_send(&self, record: &OutgoingRecord<'_>) -> Result<Ack, SendError>;

    /// Waits until every queued message was acknowledged or failed, at most `timeout`.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), KafkaError>>;
}

/// Why [`Producer::try_send`] did not queue a record.
#[derive(Debug)]
pub enum SendError {
    /// The client's queue is full: try again once acknowledgements made room.
    Full,
    /// The record cannot be produced.
    Failed(KafkaError),
}

/// How long [`send`] waits before trying a full queue again.
const FULL_QUEUE_RETRY: Duration = Duration::from_millis(1);

/// Queues `record`, waiting while the client's queue is full (backpressure).
pub async fn send(producer: &dyn Producer, record: &OutgoingRecord<'_>) -> Result<Ack, KafkaError> {
    loop {
        match producer.try_send(record) {
            Ok(ack) => return Ok(ack),
            Err(SendError::Full) => tokio::time::sleep(FULL_QUEUE_RETRY).await,
            Err(SendError::Failed(error)) => return Err(error),
        }
    }
}

/// Reads given partitions of one topic from given offsets, without a consumer group.
/// Events come in batches, each holding whatever the client had ready (at least one event):
/// one hand-over per batch instead of one per message.
pub trait PartitionConsumer: Send + 'static {
    /// The next events; `None` once the consumer was closed. An error ends the consumer.
    fn next_batch(&mut self) -> BoxFuture<'_, Option<Result<ConsumedBatch, KafkaError>>>;
}

/// Milliseconds since the epoch: the time a message gets, or is measured against.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A topic partition and the offset of the next message to read from it (what a consumer
/// group commits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPartitionOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset of the next message to process.
    pub offset: i64,
    /// Text stored with the offset (Kafka's commit metadata); empty for none. A processor
    /// keeps its partition's stream time there.
    pub metadata: String,
}

/// Told by a [`GroupConsumer`] about rebalances, synchronously, from inside
/// [`GroupConsumer::poll`].
///
/// Under the classic group protocol a rebalance revokes every partition of the member and
/// then assigns its new set whole. Under Kafka 4's consumer protocol (KIP-848) both are
/// incremental: a revoke names only the partitions taken away, an assignment only those
/// added, and either may come alone; a revoke is followed by an assignment, empty if nothing
/// is added (after a lost assignment, once the member joined again).
pub trait RebalanceListener: Send + Sync + 'static {
    /// Partitions were assigned to this member, each with the reader of its messages.
    fn assigned(&self, partitions: Vec<AssignedPartition>);

    /// Partitions are being taken away. Returns once the work on them is finished, with the
    /// offsets to commit for them; the consumer commits them before giving the partitions up.
    fn revoking(&self, partitions: &[(String, i32)]) -> Vec<TopicPartitionOffset>;

    /// An asynchronous commit of `offsets` failed (reported from inside
    /// [`GroupConsumer::poll`]): the listener should commit them again.
    fn commit_failed(&self, offsets: &[TopicPartitionOffset], error: &KafkaError) {
        let _ = (offsets, error);
    }
}

/// A topic partition assigned to a group member, with a reader of its messages of its own.
///
/// Each partition's messages come through its own bounded queue of the client, read by
/// whoever handles the partition: a partition whose handler falls behind stops being fetched
/// when its queue is full, without pausing it (a pause makes the client drop what it
/// prefetched and fetch it again) and without holding up the other partitions.
pub struct AssignedPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The partition's messages from the committed offset on, in order.
    pub messages: Box<dyn PartitionConsumer>,
    /// The metadata committed with the partition's offset: empty if there is none, or if
    /// it could not be read (the client logs why).
    pub committed_metadata: String,
}

impl std::fmt::Debug for AssignedPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssignedPartition")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// How much of each assigned partition a group member's client may hold before it stops
/// fetching that partition: up to this many messages or bytes (whichever comes first, plus
/// one fetch response) wait per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionQueueBounds {
    /// Messages.
    pub messages: usize,
    /// Key and value bytes.
    pub bytes: usize,
}

/// Where a group member reads a partition its group never committed an offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStart {
    /// At the end: only messages written from then on (goka's default, librdkafka's
    /// `auto.offset.reset=latest`).
    #[default]
    Newest,
    /// At the oldest message kept (`auto.offset.reset=earliest`): for a group started after
    /// the messages it must handle were written.
    Oldest,
}

/// How a group member consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberOptions {
    /// What each assigned partition's reader may hold.
    pub bounds: PartitionQueueBounds,
    /// Where partitions without a committed offset start.
    pub new_group_start: GroupStart,
}

/// A member of a consumer group (the client side of a processor). Used from one thread;
/// [`poll`](GroupConsumer::poll) blocks for at most its timeout. Messages do not come
/// through it: each assigned partition has a reader of its own ([`AssignedPartition`]).
pub trait GroupConsumer: Send + 'static {
    /// Serves the group's events (rebalances are reported to the listener from inside this
    /// call) for at most `timeout`. Returns a problem the client retries by itself (lost
    /// connection, broker down) if one was reported; an error the member cannot go on
    /// after is an `Err`.
    fn poll(&mut self, timeout: Duration) -> Result<Option<KafkaError>, KafkaError>;

    /// Commits offsets; `sync` waits for the broker's answer.
    fn commit(&mut self, offsets: &[TopicPartitionOffset], sync: bool) -> Result<(), KafkaError>;

    /// The member's identity at its current generation, for the offsets of a transaction
    /// ([`TransactionalProducer::send_offsets`]); `None` for clients without transactions
    /// and before the member joined.
    fn group_metadata(&self) -> Option<GroupMetadata> {
        None
    }

    /// Leaves the group (bounded in time).
    fn close(self: Box<Self>);
}

/// Cluster metadata and topic administration.
pub trait Admin: Send + Sync + 'static {
    /// Number of partitions of `topic`, or `None` if it does not exist.
    fn partitions(&self, topic: &str) -> BoxFuture<'_, Result<Option<u32>, KafkaError>>;

    /// Creates a topic. An existing topic is an error ([`KafkaError::TopicExists`]).
    fn create_topic(&self, spec: &TopicSpec) -> BoxFuture<'_, Result<(), KafkaError>>;

    /// The configs of `topic` as the broker reports them.
    fn topic_config(
        &self,
        topic: &str,
    ) -> BoxFuture<'_, Result<BTreeMap<String, String>, KafkaError>>;

    /// Low and high watermarks of a partition.
    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> BoxFuture<'_, Result<(i64, i64), KafkaError>>;
}

// ---- transactions (KIP-98, and KIP-447's fencing by consumer group generation): the
// messages a producer sends between `begin` and `commit`, with the consumed offsets
// `send_offsets` adds, become visible to read_committed readers together, or not at all.

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
    /// The producer's `transactional.id`.
    fn transactional_id(&self) -> &str;

    /// How long the broker lets a transaction stay open before it aborts it
    /// (`transaction.timeout.ms`).
    fn transaction_timeout(&self) -> Duration;

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

/// Opens the clients of one cluster. The runtime asks it for a producer, an admin and
/// partition consumers; the tester implements it in memory.
pub trait Client: Send + Sync + 'static {
    /// A producer.
    fn producer(&self) -> Result<std::sync::Arc<dyn Producer>, KafkaError>;

    /// A producer that keeps the order of each partition's messages also when the client
    /// retries a failed request, for changelogs and loop topics (a processor's writes): the
    /// last value of a key must be the last one written. Clients whose producer keeps the
    /// order anyway return [`producer`](Self::producer).
    fn ordered_producer(&self) -> Result<std::sync::Arc<dyn Producer>, KafkaError> {
        self.producer()
    }

    /// A producer whose messages belong to transactions, as `transactional_id` (Kafka's
    /// `transactional.id`): opening it fences any earlier producer of the same id and
    /// finishes what that one left open. Clients without transactions refuse.
    fn transactional_producer<'a>(
        &'a self,
        transactional_id: &'a str,
    ) -> BoxFuture<'a, Result<std::sync::Arc<dyn TransactionalProducer>, KafkaError>> {
        Box::pin(futures::future::ready(Err(KafkaError::Transaction {
            transactional_id: transactional_id.to_owned(),
            operation: "init",
            message: "this client has no transactions".into(),
            fenced: false,
            abortable: false,
        })))
    }

    /// An admin client.
    fn admin(&self) -> Result<std::sync::Arc<dyn Admin>, KafkaError>;

    /// Whether the cluster's reported end of a partition can lag what it acknowledged (see
    /// [`KafkaConfig::reported_end_may_lag`](crate::kafka::KafkaConfig::reported_end_may_lag)).
    /// Kafka's cannot.
    fn reported_end_may_lag(&self) -> bool {
        false
    }

    /// A client of the same cluster whose connections identify as `id` (Kafka's
    /// `client.id`), for a processor's `client_id`. Clients without client ids return
    /// themselves.
    fn with_client_id(self: std::sync::Arc<Self>, id: &str) -> std::sync::Arc<dyn Client>;

    /// A consumer of `partitions` of `topic`, each from its start offset, handing over the
    /// messages' headers or not.
    fn consume(
        &self,
        topic: &str,
        partitions: &[(i32, StartOffset)],
        headers: HeaderUse,
    ) -> Result<Box<dyn PartitionConsumer>, KafkaError>;

    /// Joins the consumer group `group` as a new member subscribed to `topics`, with an
    /// assignment that keeps co-partitioned topics together (range); each assigned
    /// partition's reader holds at most `options.bounds` before its partition stops being
    /// fetched, and a partition never committed starts at `options.new_group_start`.
    fn join_group(
        &self,
        group: &str,
        topics: &[&str],
        options: MemberOptions,
        listener: std::sync::Arc<dyn RebalanceListener>,
    ) -> Result<Box<dyn GroupConsumer>, KafkaError>;
}

#[cfg(test)]
mod ack_tests {
    use super::*;
    use futures::FutureExt;

    fn delivered(offset: i64) -> Result<Delivery, KafkaError> {
        Ok(Delivery {
            partition: 2,
            offset,
        })
    }

    #[test]
    fn the_first_answer_counts_whenever_it_is_awaited() {
        let (sender, ack) = Ack::channel();
        sender.0.complete(delivered(7));
        // The sender's drop answers "unacknowledged": too late to count.
        drop(sender);
        assert_eq!(
            ack.now_or_never()
                .expect("answered")
                .expect("delivered")
                .offset,
            7
        );

        let (sender, ack) = Ack::channel();
        drop(sender);
        assert!(matches!(
            ack.now_or_never(),
            Some(Err(KafkaError::Unacknowledged))
        ));
    }

    #[tokio::test]
    async fn a_waiting_task_is_woken_by_the_answer_and_failures_keep_their_error() {
        let (sender, ack) = Ack::channel();
        let waiting = tokio::spawn(ack);
        tokio::task::yield_now().await;
        sender.send(delivered(9));
        assert_eq!(waiting.await.expect("task").expect("delivered").offset, 9);

        let (sender, ack) = Ack::channel();
        let waiting = tokio::spawn(ack);
        tokio::task::yield_now().await;
        sender.send(Err(KafkaError::Produce {
            topic: "t".into(),
            partition: 1,
            message: "too large".into(),
        }));
        let error = waiting.await.expect("task").expect_err("failed");
        assert!(error.to_string().contains("too large"), "{error}");
    }
}
