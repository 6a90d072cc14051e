//! How a processor runs (goka's processor options) and what tombstones on its inputs mean.

use std::sync::Arc;
use std::time::Duration;

use super::middleware::Middleware;
use crate::codec::DecodeErrorPolicy;
use crate::group::NilHandling;
use crate::kafka::{Backoff, GroupStart, Headers};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::storage::{DefaultStorage, StorageBuilder};
use crate::table::UpdateCallback;
use crate::topic_manager::TopicManagerConfig;

/// How a processor runs (goka's processor options).
#[derive(Clone)]
pub struct ProcessorConfig {
    /// Where table partitions are stored (goka's `WithStorageBuilder`). Default:
    /// [`DefaultStorage`], RocksDB in a directory of the processor's own that goes with it
    /// (rows updated in place, no write-ahead log: the changelog is the source of truth).
    /// For rows a restart finds again, `RocksDbBuilder::new(path).update_in_place()`; for
    /// tables in memory, [`MemoryBuilder`](crate::storage::MemoryBuilder).
    pub storage: Arc<dyn StorageBuilder>,
    /// How keys map to partitions for emits and loopbacks (goka's `WithHasher`).
    pub partitioner: Arc<dyn Partitioner>,
    /// What tombstones on inputs mean (goka's `WithNilHandling`). `None` (the default) takes
    /// the group's declaration ([`Group::NIL_HANDLING`](super::Group::NIL_HANDLING)). Forcing `Process` on a group whose
    /// handlers take a value (not an `Option`) makes each tombstone a decode error.
    pub nil_handling: Option<NilHandling>,
    /// What to do with inputs that do not decode. `None` (the default) takes the group's
    /// declaration ([`Group::DECODE_ERRORS`](super::Group::DECODE_ERRORS)).
    pub decode_errors: Option<DecodeErrorPolicy>,
    /// How topics are created and checked (goka's `WithTopicManagerBuilder`).
    pub topics: TopicManagerConfig,
    /// Messages the client holds per assigned partition before it stops fetching that
    /// partition (goka's `WithPartitionChannelSize`; default 10,000; librdkafka's
    /// `queued.min.messages`, which applies per partition here since each partition has a
    /// queue of its own). Fetching goes on as the partition's task takes messages out, so a
    /// slow partition holds up nobody else and nothing is fetched twice.
    pub partition_queue: usize,
    /// Key and value bytes the client holds per assigned partition before it stops
    /// fetching it, whatever the message count (default 16 MiB; librdkafka's
    /// `queued.max.messages.kbytes`). One fetch response (`max.partition.fetch.bytes`,
    /// 1 MiB by default) may come on top, so 8 partitions of 1 MB messages hold about
    /// 136 MiB, where 10,000 messages each would be 80 GiB.
    pub partition_queue_bytes: usize,
    /// How often done offsets are committed (under [`Guarantee::ExactlyOnce`], how often
    /// the transaction commits).
    pub commit_interval: Duration,
    /// What the processor promises about its outputs, its tables and its input offsets
    /// (default: [`Guarantee::AtLeastOnce`]).
    pub guarantee: Guarantee,
    /// How long `run` waits, once it stops (cancelled or failed), for the consumer group
    /// member to finish: its partition tasks' in-flight work, the last commit, leaving the
    /// group. Each of these is bounded by itself; this bounds them together, so that a
    /// client that hangs (an unreachable coordinator, a broker that stops answering) cannot
    /// keep `run` from returning. A member that takes longer is abandoned and `run` returns
    /// an error saying so (or the error that stopped it): what was not committed is handled
    /// again by the partitions' next owner. Default: 30 s.
    pub stop_timeout: Duration,
    /// How long a partition that stops (revoked in a rebalance, or the processor stopping)
    /// waits for the deliveries and the deferred work of the messages it handled. A revoke
    /// holds the group's rebalance until its partitions finished, so one slow deferred call
    /// must not hold it for long: what is not done by then is not committed, and the next
    /// owner handles it again. Deferred work learns of the stop from `ctx.cancellation()`.
    /// Default: 10 s.
    pub drain_timeout: Duration,
    /// The timestamp of everything the processor produces: emits, loopbacks, and the
    /// changelogs of its table, windows and timers. Default [`OutputTime::Input`].
    pub output_time: OutputTime,
    /// Keep the tables of the partitions this instance does not own up to date, from the
    /// moment it starts (goka's `WithHotStandby`): a rebalance that hands it a partition
    /// then reads only what was written since, instead of recovering the whole table. Costs
    /// a reader, local storage and the changelog traffic of every table partition on every
    /// instance. Default: off.
    pub hot_standby: bool,
    /// Headers on every message the processor produces: emits, loopbacks and group table
    /// writes (goka's `WithProducerDefaultHeaders`). A header a handler gives with the
    /// message replaces a default of the same name. Default: none.
    pub default_headers: Headers,
    /// Runs around every handler call (goka's `WithContextWrapper`): see [`Middleware`].
    /// Default: none.
    pub middleware: Option<Arc<dyn Middleware>>,
    /// Where a partition the group never committed an offset for starts: at the newest
    /// message by default, as goka and Kafka's own clients do, so a new group handles what
    /// is written from its start on. A group started after the messages it must handle were
    /// written (a backfill, a test, an example that emits first) sets
    /// [`GroupStart::Oldest`]. Committed offsets always win.
    pub new_group_start: GroupStart,
    /// Called with each rebalance of this instance (goka's `WithRebalanceCallback`): the
    /// partitions assigned, once their tasks started, and those revoked, once their work
    /// is finished and before their offsets are committed. Under the classic group protocol
    /// (the default) a rebalance revokes every partition of the instance and assigns its
    /// new set whole; under Kafka 4's consumer protocol (`group.protocol=consumer`) each call
    /// names only the partitions added or taken away, and an assignment may be empty.
    /// Called on the group member's thread: keep it short. Default: none.
    pub rebalance: Option<Arc<RebalanceCallback>>,
    /// Applies each changelog message while a group table partition recovers (goka's
    /// `WithUpdateCallback`), instead of setting or deleting the row: for a storage that
    /// keeps rows in a shape of its own. Default: none.
    pub update: Option<Arc<UpdateCallback>>,
    /// The client id of everything this processor opens (goka's `WithClientID`), in place
    /// of the client's own. Default: the client's.
    pub client_id: Option<String>,
    /// How starting waits for a cluster that does not answer (goka's `WithBackoffBuilder`
    /// and `WithBackoffResetTimeout`): reading and creating the group's topics and opening
    /// its lookup tables are tried again after each wait, while the processor shows
    /// `Starting` and warns about each failure; once failures have gone on for
    /// [`Backoff::give_up_after`], `run` stops with [`ProcessorError::Unreachable`](super::ProcessorError::Unreachable).
    /// A running processor's client reconnects by itself (librdkafka's
    /// `reconnect.backoff.ms` and `reconnect.backoff.max.ms`, set on the client's
    /// configuration); an outage longer than a message's delivery timeout stops `run`.
    /// Default: [`Backoff::default`].
    pub backoff: Backoff,
    /// What a handler's error does: stop `run` (the default), or send the message to the
    /// dead-letter topic and go on.
    pub handler_errors: HandlerErrorPolicy,
    /// What a message that came after its window closed does (`ctx.window::<W>()`'s
    /// `update`): skipped and counted (the default), or also sent to the dead-letter topic.
    pub late_messages: LatePolicy,
    /// Moves the stream time of a partition that has had no message for this long on by
    /// the wall clock: to the wall clock minus this duration, never back. So the windows of
    /// a stream that went quiet close, and its stream-time timers fire, though no message
    /// comes to bring their time: the last minute of a backfill of historical events, the
    /// last session of a user who left. A message that comes afterwards with an event time
    /// before the stream time it moved to is late for the windows that closed meanwhile
    /// ([`late_messages`](Self::late_messages)). Kafka Streams has no such option: its
    /// stream time moves only with records. Looked at every second. Default: none (stream
    /// time moves only with messages).
    pub idle_advance: Option<Duration>,
    /// Where dead letters go (`DecodeErrorPolicy::DeadLetter`,
    /// `HandlerErrorPolicy::DeadLetter`, `LatePolicy::DeadLetter`). Default: the group's `<group>-dead-letters`,
    /// created as a stream with the inputs' partition count if it is missing.
    pub dead_letter_topic: Option<&'static str>,
}

/// What a handler's error does ([`ProcessorConfig::handler_errors`]). Panics always stop
/// the processor: they are bugs, not bad messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandlerErrorPolicy {
    /// Stop `run` with the error, naming the message; nothing after it is committed.
    #[default]
    Fail,
    /// Send the message as it came to the dead-letter topic, with its coordinates and the
    /// error in headers (`dead-letter-*`); what the handler produced is not sent; count it
    /// in `ProcessorStats::dead_letters` and go on. The message's offset is committed once
    /// the dead letter is acknowledged.
    DeadLetter,
}

/// What a message that came after its window closed does ([`ProcessorConfig::late_messages`]).
/// Either way it is counted in `partition_stats()[..].windows` (`late`), and the handler's
/// other writes go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatePolicy {
    /// The window update is skipped.
    #[default]
    Skip,
    /// The message also goes to the dead-letter topic as it came, with its coordinates and
    /// `dead-letter-reason: late` in headers.
    DeadLetter,
}

/// The timestamp of what a processor produces ([`ProcessorConfig::output_time`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputTime {
    /// The timestamp of the message whose handling produced it, as Kafka Streams does: a
    /// loopback or an output keeps the event time of its cause, so a group that reads it
    /// (its own loop topic included) sees stream time move as the input's did, also while
    /// a backlog is worked through. What a visit or a wall-clock timer produces carries the
    /// time of the visit or the tick.
    #[default]
    Input,
    /// The producer's clock at the time of producing (processing time).
    Now,
}

/// A rebalance of a processor instance, as [`ProcessorConfig::rebalance`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// These partitions were assigned, and their tasks started.
    Assigned(Vec<i32>),
    /// These partitions were taken away; their work is finished.
    Revoked(Vec<i32>),
}

/// What a processor promises (Kafka Streams' `processing.guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Every input message is handled, and what it causes written, at least once: after a
    /// crash or a rebalance the messages handled since the last commit are handled again,
    /// and their outputs and table writes may appear twice.
    #[default]
    AtLeastOnce,
    /// What handling a message causes (table writes, emits, loopbacks, dead letters) and
    /// the commit of its offset happen together, in a Kafka transaction per commit interval,
    /// or not at all: `read_committed` readers (librdkafka's default) see each input's
    /// effects once, and a partition's local table never runs ahead of its committed
    /// changelog. Needs a cluster with transactions (Kafka; not the stand-in broker); groups
    /// with windows or timers are refused for now.
    ExactlyOnce,
}

/// The rebalance callback of [`ProcessorConfig::rebalance`].
pub type RebalanceCallback = dyn Fn(&Rebalance) + Send + Sync + 'static;

impl std::fmt::Debug for ProcessorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorConfig")
            .field("nil_handling", &self.nil_handling)
            .field("decode_errors", &self.decode_errors)
            .field("topics", &self.topics)
            .field("partition_queue", &self.partition_queue)
            .field("partition_queue_bytes", &self.partition_queue_bytes)
            .field("commit_interval", &self.commit_interval)
            .field("guarantee", &self.guarantee)
            .field("stop_timeout", &self.stop_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("output_time", &self.output_time)
            .field("hot_standby", &self.hot_standby)
            .field("default_headers", &self.default_headers)
            .field("middleware", &self.middleware.is_some())
            .field("new_group_start", &self.new_group_start)
            .field("rebalance", &self.rebalance.is_some())
            .field("update", &self.update.is_some())
            .field("client_id", &self.client_id)
            .field("backoff", &self.backoff)
            .field("handler_errors", &self.handler_errors)
            .field("late_messages", &self.late_messages)
            .field("idle_advance", &self.idle_advance)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            storage: Arc::new(DefaultStorage),
            partitioner: Arc::new(DefaultPartitioner::default()),
            nil_handling: None,
            decode_errors: None,
            topics: TopicManagerConfig::default(),
            partition_queue: 10_000,
            partition_queue_bytes: 16 << 20,
            commit_interval: Duration::from_millis(500),
            guarantee: Guarantee::AtLeastOnce,
            stop_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            output_time: OutputTime::default(),
            hot_standby: false,
            default_headers: Headers::new(),
            middleware: None,
            new_group_start: GroupStart::default(),
            rebalance: None,
            update: None,
            client_id: None,
            backoff: Backoff::default(),
            handler_errors: HandlerErrorPolicy::Fail,
            late_messages: LatePolicy::Skip,
            idle_advance: None,
            dead_letter_topic: None,
        }
    }
}
