//! Running a processor group (goka's `Processor`).
//!
//! [`Processor::run`] validates the [`GroupGraph`](crate::graph::GroupGraph), checks and
//! creates topics, joins the consumer group and, for every assigned partition, starts a
//! partition task that recovers the group table and joined tables and then handles the
//! partition's messages in order (see `partition.rs`). The consumer group member is polled
//! on a thread of its own (`consumer.rs`); it routes messages to the partition tasks through
//! bounded queues, pausing partitions whose queue is full, and commits the offsets the tasks
//! report done: at-least-once, never ahead of the work.

mod consumer;
pub mod group;
pub(crate) mod handle;
mod latency;
mod partition;
mod pending;
mod standby;
mod stats;
mod watermarks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::group::{Consumes, Emits, Group, GroupTable, Joins, LooksUp, Loops, Stateful};
pub use self::latency::{LatencyHistogram, LATENCY_BOUNDS_MICROS};
use self::stats::{Counters, Tables};
pub use self::stats::{ProcessorPartitionStats, ProcessorStats};
use crate::codec::DecodeErrorPolicy;
use crate::graph::GraphError;
use crate::kafka::{Client, KafkaError, Producer, TopicPartitionOffset};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::storage::{self, DefaultStorage, Owner, Storage, StorageBuilder, StorageError};
use crate::topic_manager::{TopicManager, TopicManagerConfig, TopicManagerError};

/// What a message with a null value (a tombstone) on an input means (goka's `NilHandling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NilHandling {
    /// Drop the message without calling the handler (goka's default).
    #[default]
    Ignore,
    /// Call the handler with no value.
    Process,
    /// Delete the group table's row at the key.
    Restore,
}

/// The state of a processor or of one of its partitions (goka's `ProcessorState` and
/// `PartitionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionState {
    /// Not started.
    Idle,
    /// Checking topics and joining the group.
    Starting,
    /// Loading tables from their changelogs.
    Recovering,
    /// Handling messages.
    Running,
    /// Finishing in-flight work.
    Stopping,
    /// Done.
    Stopped,
    /// Not owned by this instance: its tables are kept up to date for a fast takeover
    /// ([`ProcessorConfig::hot_standby`]).
    Standby,
}

type LookupViews = HashMap<&'static str, Arc<crate::view::ViewInner>>;

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
    /// `run` was called while running.
    #[error("processor {group:?} is running already")]
    AlreadyRunning {
        /// The group.
        group: &'static str,
    },
}

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
    /// the group's declaration ([`Group::NIL_HANDLING`]). Forcing `Process` on a group whose
    /// handlers take a value (not an `Option`) makes each tombstone a decode error.
    pub nil_handling: Option<NilHandling>,
    /// What to do with inputs that do not decode. `None` (the default) takes the group's
    /// declaration ([`Group::DECODE_ERRORS`]).
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
    /// How often done offsets are committed.
    pub commit_interval: Duration,
    /// Keep the tables of the partitions this instance does not own up to date, from the
    /// moment it starts (goka's `WithHotStandby`): a rebalance that hands it a partition
    /// then reads only what was written since, instead of recovering the whole table. Costs
    /// a reader, local storage and the changelog traffic of every table partition on every
    /// instance. Default: off.
    pub hot_standby: bool,
}

impl std::fmt::Debug for ProcessorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorConfig")
            .field("nil_handling", &self.nil_handling)
            .field("decode_errors", &self.decode_errors)
            .field("topics", &self.topics)
            .field("partition_queue", &self.partition_queue)
            .field("partition_queue_bytes", &self.partition_queue_bytes)
            .field("commit_interval", &self.commit_interval)
            .field("hot_standby", &self.hot_standby)
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
            hot_standby: false,
        }
    }
}

/// Validates the graph of `P`, checks that its inputs and joined tables are co-partitioned,
/// and creates the table, loop and missing output topics. Returns the partition count of
/// every topic the group writes to.
pub(crate) async fn prepare_topics<P: Group>(
    client: &dyn Client,
    topics: &TopicManagerConfig,
) -> Result<HashMap<&'static str, u32>, ProcessorError> {
    let group = P::GRAPH.group;
    P::GRAPH
        .validate()
        .map_err(|source| ProcessorError::Graph { group, source })?;
    let topics_error = |source| ProcessorError::Topics { group, source };
    let manager = TopicManager::new(client, topics.clone()).map_err(topics_error)?;
    let copartitioned: Vec<&str> = P::GRAPH
        .inputs
        .iter()
        .chain(P::GRAPH.joins)
        .map(|e| e.topic)
        .collect();
    let partitions = manager
        .check_copartitioned(&copartitioned)
        .await
        .map_err(topics_error)?;
    let mut partition_counts = HashMap::new();
    if let Some(table) = P::GRAPH.table {
        manager
            .ensure_table(table.topic, partitions)
            .await
            .map_err(topics_error)?;
        partition_counts.insert(table.topic, partitions);
    }
    if let Some(edge) = P::GRAPH.loopback {
        manager
            .ensure_stream(edge.topic, partitions)
            .await
            .map_err(topics_error)?;
        partition_counts.insert(edge.topic, partitions);
    }
    for edge in P::GRAPH.outputs {
        let count = match manager
            .partitions_if_exists(edge.topic)
            .await
            .map_err(topics_error)?
        {
            Some(count) => count,
            None => manager
                .ensure_stream(edge.topic, partitions)
                .await
                .map_err(topics_error)?,
        };
        partition_counts.insert(edge.topic, count);
    }
    Ok(partition_counts)
}

/// Offsets the partition tasks report done, waiting to be committed.
#[derive(Debug, Default)]
struct OffsetTable {
    /// Per topic partition: the next offset to commit, and whether it changed since the
    /// last commit.
    next: Mutex<HashMap<TopicPartition, (i64, bool)>>,
}

type TopicPartition = (Arc<str>, i32);

impl OffsetTable {
    /// Input message `offset` of `topic`/`partition` and everything before it are done.
    fn done(&self, topic: &Arc<str>, partition: i32, offset: i64) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        next.insert((topic.clone(), partition), (offset + 1, true));
    }

    /// Offsets changed since the last call.
    fn take_changed(&self) -> Vec<TopicPartitionOffset> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        next.iter_mut()
            .filter(|(_, (_, changed))| *changed)
            .map(|((topic, partition), (offset, changed))| {
                *changed = false;
                TopicPartitionOffset {
                    topic: topic.to_string(),
                    partition: *partition,
                    offset: *offset,
                }
            })
            .collect()
    }

    /// A commit of `offsets` failed: the next commit sends them again (or newer ones).
    fn retry(&self, offsets: &[TopicPartitionOffset]) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        for o in offsets {
            let key = (Arc::<str>::from(o.topic.as_str()), o.partition);
            if let Some((offset, changed)) = next.get_mut(&key) {
                if *offset >= o.offset {
                    *changed = true;
                }
            }
        }
    }

    /// Removes and returns the offsets of `partitions` (when they are revoked).
    fn remove(&self, partitions: &[(String, i32)]) -> Vec<TopicPartitionOffset> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        partitions
            .iter()
            .filter_map(|(topic, partition)| {
                let key = (Arc::<str>::from(topic.as_str()), *partition);
                next.remove(&key).map(|(offset, _)| TopicPartitionOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset,
                })
            })
            .collect()
    }
}

/// What the processor's threads and tasks share.
struct Shared {
    group: &'static str,
    client: Arc<dyn Client>,
    config: ProcessorConfig,
    producer: Arc<dyn Producer>,
    partition_counts: HashMap<&'static str, u32>,
    /// Views of the lookup tables, shared by every partition of this instance.
    lookups: HashMap<&'static str, Arc<crate::view::ViewInner>>,
    offsets: OffsetTable,
    stats: Counters,
    /// Figures of the table partitions of each running partition.
    table_figures: Tables,
    /// Partitions followed in hot standby, and the figures of their tables.
    standbys: standby::Standbys,
    standby_figures: Tables,
    /// Group table storage of each running partition, for `Processor::get`.
    tables: Mutex<HashMap<i32, Arc<dyn Storage>>>,
    states: Mutex<HashMap<i32, PartitionState>>,
    /// Last read high watermark per input topic and partition.
    high_watermarks: Mutex<HashMap<(&'static str, i32), i64>>,
    state: watch::Sender<PartitionState>,
    /// Fires on shutdown and on the first error.
    cancel: CancellationToken,
    failure: Mutex<Option<ProcessorError>>,
}

impl Shared {
    fn set_partition_state(&self, partition: i32, state: PartitionState) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if state == PartitionState::Stopped {
            states.remove(&partition);
            self.table_figures.forget(partition);
        } else {
            states.insert(partition, state);
        }
        let overall = if states.values().any(|s| *s == PartitionState::Recovering) {
            PartitionState::Recovering
        } else {
            PartitionState::Running
        };
        drop(states);
        self.state.send_if_modified(|s| {
            let update = matches!(
                *s,
                PartitionState::Starting | PartitionState::Recovering | PartitionState::Running
            ) && *s != overall;
            if update {
                *s = overall;
            }
            update
        });
    }

    /// Records the first error and stops everything.
    fn fail(&self, error: ProcessorError) {
        tracing::error!(group = self.group, %error, "processor stops");
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            *failure = Some(error);
        }
        self.cancel.cancel();
    }
}

/// A processor of the group `P`: the user's handlers plus the runtime that feeds them.
///
/// ```no_run
/// use std::sync::Arc;
/// use goka::codec::{Int64Codec, StringCodec};
/// use goka::context::{CallbackError, Context};
/// use goka::kafka::{rdkafka_client::RdKafkaClient, KafkaConfig};
/// use goka::processor::{Processor, ProcessorConfig};
/// use goka::storage::{default_processor_storage_path, RocksDbBuilder};
///
/// goka::stream!(pub Clicks = "clicks": String as StringCodec);
///
/// #[goka::processor(group = "click-counter")]
/// #[input(topic = Clicks, handler = Self::on_click)]
/// #[persist(value = i64, codec = Int64Codec)]
/// pub struct ClickCounter;
///
/// impl ClickCounter {
///     fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
///         let count = ctx.value()?.unwrap_or(0);
///         ctx.set_value(&(count + 1))
///     }
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Arc::new(RdKafkaClient::new(KafkaConfig::new("localhost:9092")));
/// let config = ProcessorConfig {
///     // State on a path the next run finds: a restart resumes from the stored offset
///     // instead of the changelog's start. (The default is on disk too, but its own.)
///     storage: Arc::new(
///         RocksDbBuilder::new(default_processor_storage_path("click-counter")).update_in_place(),
///     ),
///     ..ProcessorConfig::default()
/// };
/// let processor = Arc::new(Processor::new(ClickCounter, client, config));
/// let cancel = tokio_util::sync::CancellationToken::new();
/// let running = tokio::spawn({
///     let (processor, cancel) = (processor.clone(), cancel.clone());
///     async move { processor.run(cancel).await }
/// });
/// processor.recovered().await;
/// println!("alice clicked {:?} times", processor.get(&"alice".to_string())?);
/// cancel.cancel(); // finishes in-flight work, commits, leaves the group
/// running.await??;
/// # Ok(()) }
/// ```
pub struct Processor<P: Group> {
    group: Arc<P>,
    client: Arc<dyn Client>,
    config: ProcessorConfig,
    state: watch::Sender<PartitionState>,
    shared: Mutex<Option<Arc<Shared>>>,
}

impl<P: Group> std::fmt::Debug for Processor<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("group", &P::GRAPH.group)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl<P: Group> Processor<P> {
    /// A processor running `group`'s handlers on `client`'s cluster.
    pub fn new(group: P, client: Arc<dyn Client>, mut config: ProcessorConfig) -> Self {
        config.storage = storage::scoped(config.storage, Owner::Processor(P::GRAPH.group));
        let (state, _) = watch::channel(PartitionState::Idle);
        Self {
            group: Arc::new(group),
            client,
            config,
            state,
            shared: Mutex::new(None),
        }
    }

    /// Runs until `cancel` fires or something fails; then finishes in-flight work, commits
    /// what is done, closes storage and leaves the group. Returns the first error, with its
    /// coordinates.
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), ProcessorError> {
        let group = P::GRAPH.group;
        if matches!(
            *self.state.borrow(),
            PartitionState::Starting
                | PartitionState::Recovering
                | PartitionState::Running
                | PartitionState::Stopping
        ) {
            return Err(ProcessorError::AlreadyRunning { group });
        }
        self.state.send_replace(PartitionState::Starting);
        let result = self.run_inner(cancel).await;
        self.state.send_replace(PartitionState::Stopped);
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = None;
        result
    }

    async fn run_inner(&self, cancel: CancellationToken) -> Result<(), ProcessorError> {
        let group = P::GRAPH.group;
        let partition_counts = prepare_topics::<P>(&*self.client, &self.config.topics).await?;
        let producer = self
            .client
            .ordered_producer()
            .map_err(|source| ProcessorError::Produce { group, source })?;
        let internal = cancel.child_token();
        let (lookups, lookup_tasks) = self.start_lookups(&internal).await?;
        let shared = Arc::new(Shared {
            group,
            client: self.client.clone(),
            config: self.config.clone(),
            producer,
            partition_counts,
            lookups,
            offsets: OffsetTable::default(),
            stats: Counters::default(),
            table_figures: Tables::default(),
            standbys: standby::Standbys::default(),
            standby_figures: Tables::default(),
            tables: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            high_watermarks: Mutex::new(HashMap::new()),
            state: self.state.clone(),
            cancel: internal,
            failure: Mutex::new(None),
        });
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared.clone());
        let watermarks = tokio::spawn(watermarks::follow::<P>(shared.clone()));
        consumer::run::<P>(self.group.clone(), shared.clone()).await;
        shared.cancel.cancel();
        shared.standbys.stop_all().await;
        let _ = watermarks.await;
        for task in lookup_tasks {
            if let Ok(Err(source)) = task.await {
                shared.fail(ProcessorError::Lookup { group, source });
            }
        }
        // Everything the partitions produced is acknowledged by now; a failure wins.
        let failure = shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Starts a view of every lookup table and waits until each recovered (goka waits too:
    /// a lookup must not miss rows that are already in the table).
    async fn start_lookups(
        &self,
        cancel: &CancellationToken,
    ) -> Result<
        (
            LookupViews,
            Vec<tokio::task::JoinHandle<Result<(), crate::view::ViewError>>>,
        ),
        ProcessorError,
    > {
        let group = P::GRAPH.group;
        let mut views = HashMap::new();
        let mut tasks = Vec::new();
        for edge in P::GRAPH.lookups {
            let view = crate::view::ViewBuilder::new(self.client.clone())
                .storage(self.config.storage.clone())
                .shared_partitioner(self.config.partitioner.clone())
                .open(edge.topic, |_| Ok(()))
                .await
                .map_err(|source| ProcessorError::Lookup { group, source })?;
            let view = Arc::new(view);
            tasks.push(tokio::spawn({
                let (view, cancel) = (view.clone(), cancel.clone());
                async move { view.run(cancel).await }
            }));
            views.insert(edge.topic, view);
        }
        for view in views.values() {
            view.recovered().await;
            tracing::info!(group, table = view.topic(), "lookup table recovered");
        }
        Ok((views, tasks))
    }

    /// The processor's state: `Running` once every assigned partition recovered.
    pub fn state(&self) -> PartitionState {
        *self.state.borrow()
    }

    /// Waits until every assigned partition recovered (or the processor stopped).
    pub async fn recovered(&self) -> PartitionState {
        let mut states = self.state.subscribe();
        states
            .wait_for(|s| matches!(s, PartitionState::Running | PartitionState::Stopped))
            .await
            .map(|s| *s)
            .unwrap_or(PartitionState::Stopped)
    }

    /// What the current run shares with its tasks, while `run` runs.
    fn running(&self) -> Option<Arc<Shared>> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Partitions this instance owns, with their states.
    pub fn partitions(&self) -> HashMap<i32, PartitionState> {
        self.running()
            .map(|shared| {
                shared
                    .states
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
            .unwrap_or_default()
    }

    /// Per consumed topic and partition of this instance: the offset of the next message
    /// whose handling is not done yet (what the next commit stores). Partitions without a
    /// finished message yet are absent.
    pub fn done_offsets(&self) -> Vec<TopicPartitionOffset> {
        let Some(shared) = self.running() else {
            return Vec::new();
        };
        let next = shared
            .offsets
            .next
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut offsets: Vec<TopicPartitionOffset> = next
            .iter()
            .map(|((topic, partition), (offset, _))| TopicPartitionOffset {
                topic: topic.to_string(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        offsets
    }

    /// Each partition this instance runs, with its first input's next offset to commit,
    /// high watermark (read every 2 s) and the lag between them, where known, and its
    /// tables' figures; then the partitions it follows in hot standby
    /// ([`PartitionState::Standby`], with their tables' figures only).
    pub fn partition_stats(&self) -> Vec<ProcessorPartitionStats> {
        let Some(shared) = self.running() else {
            return Vec::new();
        };
        let Some(input) = P::GRAPH.inputs.first().map(|e| e.topic) else {
            return Vec::new();
        };
        let done = self.done_offsets();
        let highs = shared
            .high_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut stats: Vec<ProcessorPartitionStats> = self
            .partitions()
            .into_iter()
            .map(|(partition, state)| {
                let offset = done
                    .iter()
                    .find(|o| o.topic == input && o.partition == partition)
                    .map(|o| o.offset);
                let high_watermark = highs.get(&(input, partition)).copied();
                let lag = high_watermark.map(|high| (high - offset.unwrap_or(0)).max(0));
                ProcessorPartitionStats {
                    partition,
                    state,
                    topic: input,
                    offset,
                    high_watermark,
                    lag,
                    tables: shared.table_figures.of(partition),
                }
            })
            .collect();
        // Partitions followed in hot standby, with their tables' figures.
        for partition in shared.standbys.partitions() {
            stats.push(ProcessorPartitionStats {
                partition,
                state: PartitionState::Standby,
                topic: input,
                offset: None,
                high_watermark: None,
                lag: None,
                tables: shared.standby_figures.of(partition),
            });
        }
        stats.sort_by_key(|s| (s.partition, s.state == PartitionState::Standby));
        stats
    }

    /// Counters since `run` started.
    pub fn stats(&self) -> ProcessorStats {
        let shared = self.running();
        shared.map_or_else(ProcessorStats::default, |s| s.stats.snapshot())
    }
}

impl<P: Stateful> Processor<P> {
    /// Reads the group table at `key` from a partition this instance owns (goka's
    /// `Processor.Get`). `Ok(None)` when the row is missing or the partition is not local.
    pub fn get(&self, key: &P::Key) -> Result<Option<<P as Stateful>::Value>, ProcessorError> {
        use crate::codec::Codec;
        let group = P::GRAPH.group;
        let Some(shared) = self.running() else {
            return Ok(None);
        };
        let table = P::GRAPH.table.map_or("", |e| e.topic);
        let bytes = P::KeyCodec::encode_to_vec(key).map_err(|e| ProcessorError::Get {
            group,
            key: "<key does not encode>".into(),
            message: e.to_string(),
        })?;
        // `run` records the table's partition count before any partition starts.
        let Some(&count) = shared.partition_counts.get(table) else {
            return Ok(None);
        };
        let partition = shared.config.partitioner.partition(&bytes, count);
        let storage = shared
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .cloned();
        let Some(storage) = storage else {
            return Ok(None);
        };
        let raw = storage
            .get(&bytes)
            .map_err(|source| ProcessorError::Storage { group, source })?;
        raw.map(|raw| {
            <P as Stateful>::ValueCodec::decode(&raw).map_err(|e| ProcessorError::Get {
                group,
                key: String::from_utf8_lossy(&bytes).into_owned(),
                message: format!("the row in {table} partition {partition} does not decode: {e}"),
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(topic: &str, partition: i32, offset: i64) -> TopicPartitionOffset {
        TopicPartitionOffset {
            topic: topic.to_owned(),
            partition,
            offset,
        }
    }

    #[test]
    fn a_failed_commit_is_committed_again() {
        let table = OffsetTable::default();
        let clicks: Arc<str> = Arc::from("clicks");
        table.done(&clicks, 0, 9);
        table.done(&clicks, 1, 4);
        let sent = table.take_changed();
        assert_eq!(sent.len(), 2);
        assert!(table.take_changed().is_empty(), "nothing new");

        // The commit failed and nothing moved on since: the next commit sends it again.
        table.retry(&sent);
        let mut again = table.take_changed();
        again.sort_by_key(|o| o.partition);
        assert_eq!(again, [offset("clicks", 0, 10), offset("clicks", 1, 5)]);

        // Progress after the failed commit wins; a revoked partition is not committed again.
        table.done(&clicks, 0, 19);
        table.remove(&[("clicks".to_owned(), 1)]);
        table.retry(&again);
        assert_eq!(table.take_changed(), [offset("clicks", 0, 20)]);
    }
}
