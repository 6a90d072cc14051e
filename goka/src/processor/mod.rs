//! Running a processor group (goka's `Processor`).
//!
//! [`Processor::run`] validates the [`GroupGraph`](crate::graph::GroupGraph), checks and
//! creates topics, joins the consumer group and, for every assigned partition, starts a
//! partition task that recovers the partition's stores and then handles its messages in
//! order. The consumer group member is polled on a thread of its own; it routes messages to
//! the partition tasks through bounded queues, pausing partitions whose queue is full, and
//! commits the offsets the tasks report done: at-least-once, never ahead of the work.
//!
//! The files, from the member down to one message:
//!
//! | file | holds |
//! |---|---|
//! | `consumer.rs` | the group member: assignments, revokes, commits, partition tasks started and stopped |
//! | `partition.rs` | one partition's task: recovery, then its messages, visits and timer ticks in order |
//! | `state.rs` | the partition's stores (`Stores`): open, recover, follow joins, save offsets, close |
//! | `collector.rs` | what the partition produces and waits for: send, local writes, acks, done offsets |
//! | `pending/` | the queue of handled inputs waiting for their acks, with held writes |
//! | `handle/` | one message: nil handling, decoding, the handler call, the decode-error policy |
//! | `closing.rs`, `firing.rs` | windows closed and timers fired after a message or a tick |
//! | `standby.rs` | hot standby: following the tables of partitions owned elsewhere |
//! | `shared.rs` | what the member, partition tasks and standby tasks share |
//! | `handlers.rs` | the [`Handlers`] trait the macro implements: the dispatch to user code |
//! | `config.rs`, `policies.rs`, `middleware.rs` | options, the policies they select, handler middleware |
//! | `stats.rs`, `latency.rs`, `watermarks.rs` | what a running processor reports about itself |
//! | `topics.rs` | the topics checked and created before the group is joined |
//! | `transaction.rs` | exactly-once: the member's transaction, the partitions paused for its commit |
//! | `error.rs`, `visit.rs`, `lookups.rs`, `stream_time.rs` | errors, visitors, lookup views, stream time in commits |
//! | `fixture.rs` | for unit tests only: groups, stores in memory, a producer the test acknowledges |

mod closing;
mod collector;
mod config;
mod consumer;
mod error;
mod firing;
#[cfg(test)]
mod fixture;
pub(crate) mod handle;
mod handlers;
mod latency;
mod lookups;
mod middleware;
mod partition;
mod pending;
pub(crate) mod policies;
mod shared;
mod standby;
pub(crate) mod state;
mod stats;
mod stream_time;
mod topics;
mod transaction;
mod visit;
mod watermarks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::config::{
    Guarantee, HandlerErrorPolicy, LatePolicy, OutputTime, ProcessorConfig, Rebalance,
    RebalanceCallback,
};
pub use self::error::ProcessorError;
pub use self::handlers::Handlers;
pub use self::latency::{LatencyHistogram, LATENCY_BOUNDS_MICROS};
pub use self::middleware::{MessageInfo, Middleware, Next};
pub use self::policies::{
    DEAD_LETTER_ERROR, DEAD_LETTER_GROUP, DEAD_LETTER_OFFSET, DEAD_LETTER_PARTITION,
    DEAD_LETTER_REASON, DEAD_LETTER_TIMESTAMP, DEAD_LETTER_TOPIC,
};
use self::shared::{LookupViews, Shared};
pub use self::stats::{
    InputStats, OutputStats, PartitionState, ProcessorPartitionStats, ProcessorState,
    ProcessorStats,
};
use self::topics::gave_up;
pub(crate) use self::topics::prepare_topics;
pub use self::visit::{VisitProgress, Visitor, Visits};
pub use crate::group::{
    Consumes, Emits, Group, GroupTable, Joins, LooksUp, Loops, NilHandling, Stateful, Timed,
    Windowed,
};
pub use crate::kafka::GroupStart;
use crate::kafka::{Client, TopicPartitionOffset};
use crate::storage::{self, Owner, Storage};

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
pub struct Processor<P: Handlers> {
    group: Arc<P>,
    client: Arc<dyn Client>,
    config: ProcessorConfig,
    state: watch::Sender<ProcessorState>,
    shared: Mutex<Option<Arc<Shared>>>,
}

impl<P: Handlers> std::fmt::Debug for Processor<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("group", &P::GRAPH.group)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl<P: Handlers> Processor<P> {
    /// A processor running `group`'s handlers on `client`'s cluster.
    pub fn new(group: P, client: Arc<dyn Client>, mut config: ProcessorConfig) -> Self {
        config.storage = storage::scoped(config.storage, Owner::Processor(P::GRAPH.group));
        let client = match &config.client_id {
            Some(id) => client.with_client_id(id),
            None => client,
        };
        let (state, _) = watch::channel(ProcessorState::Idle);
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
            ProcessorState::Starting
                | ProcessorState::Recovering
                | ProcessorState::Running
                | ProcessorState::Stopping
        ) {
            return Err(ProcessorError::AlreadyRunning { group });
        }
        self.state.send_replace(ProcessorState::Starting);
        let mut restarts = Restarts::default();
        let result = loop {
            let began = std::time::Instant::now();
            let result = self.run_inner(cancel.clone()).await;
            let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(shared) = shared {
                shared
                    .ended
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            match result {
                Err(error)
                    if self.config.guarantee == Guarantee::ExactlyOnce
                        && error.aborted_transaction()
                        && !cancel.is_cancelled()
                        && restarts.another(began.elapsed()) =>
                {
                    tracing::warn!(group, %error, "the cluster aborted the member's transaction: starting again from the last commit, as after a crash");
                    self.state.send_replace(ProcessorState::Starting);
                }
                result => break result,
            }
        };
        self.state.send_replace(ProcessorState::Stopped);
        result
    }

    async fn run_inner(&self, cancel: CancellationToken) -> Result<(), ProcessorError> {
        let group = P::GRAPH.group;
        let what = format!("processor {group:?}");
        let prepared = crate::kafka::retry(
            self.config.backoff,
            &what,
            &cancel,
            ProcessorError::is_unreachable,
            || prepare_topics::<P>(&*self.client, &self.config),
        )
        .await;
        let partition_counts = match prepared {
            Ok(Some(counts)) => counts,
            // Cancelled before the cluster answered: nothing was started.
            Ok(None) => return Ok(()),
            Err(stopped) => return Err(gave_up(group, stopped)),
        };
        let (producer, transaction) = match self.config.guarantee {
            Guarantee::AtLeastOnce => (
                self.client
                    .ordered_producer()
                    .map_err(|source| ProcessorError::Produce { group, source })?,
                None,
            ),
            Guarantee::ExactlyOnce => {
                let (producer, transaction) = self.transactional().await?;
                (producer, Some(transaction))
            }
        };
        let internal = cancel.child_token();
        let (lookups, lookup_tasks) = tokio::select! {
            started = self.start_lookups(&internal) => started?,
            // The views' tasks stop with `internal`, a child of `cancel`.
            _ = cancel.cancelled() => return Ok(()),
        };
        let shared = Arc::new(
            Shared::new::<P>(
                self.client.clone(),
                self.config.clone(),
                producer,
                partition_counts,
                lookups,
                self.state.clone(),
                internal,
            )
            .with_transaction(transaction),
        );
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared.clone());
        let watermarks = tokio::spawn(watermarks::follow::<P>(shared.clone()));
        let lookups_watched = tokio::spawn(lookups::watch(shared.clone(), lookup_tasks));
        consumer::run::<P>(self.group.clone(), shared.clone()).await;
        shared.cancel.cancel();
        shared.standbys.stop_all().await;
        let _ = watermarks.await;
        let _ = lookups_watched.await;
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

    /// The member's transactional producer, with its first transaction open. Its id is the
    /// instance's own: under KIP-447 the group's generation fences a member that was
    /// replaced, whatever its id.
    async fn transactional(
        &self,
    ) -> Result<
        (
            Arc<dyn crate::kafka::Producer>,
            Arc<transaction::Transaction>,
        ),
        ProcessorError,
    > {
        let group = P::GRAPH.group;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let id = format!("{group}-{}-{nanos}", std::process::id());
        let producer = self
            .client
            .transactional_producer(&id)
            .await
            .map_err(|source| ProcessorError::Produce { group, source })?;
        let transaction = transaction::Transaction::begin(group, producer.clone())?;
        let producer: Arc<dyn crate::kafka::Producer> = producer;
        Ok((producer, Arc::new(transaction)))
    }

    /// Starts a view of every lookup table and waits until each recovered (goka waits too:
    /// a lookup must not miss rows that are already in the table).
    async fn start_lookups(
        &self,
        cancel: &CancellationToken,
    ) -> Result<(LookupViews, Vec<lookups::LookupTask>), ProcessorError> {
        let group = P::GRAPH.group;
        let mut views = HashMap::new();
        let mut tasks = Vec::new();
        for edge in P::GRAPH.lookups {
            let view = crate::view::ViewBuilder::<()>::new(self.client.clone())
                .backoff(self.config.backoff)
                .storage(self.config.storage.clone())
                .shared_partitioner(self.config.partitioner.clone())
                .open(edge.topic, |_| Ok(()))
                .await
                .map_err(|source| ProcessorError::Lookup { group, source })?;
            let view = Arc::new(view);
            tasks.push((
                edge.topic,
                tokio::spawn({
                    let (view, cancel) = (view.clone(), cancel.clone());
                    async move { view.run(cancel).await }
                }),
            ));
            views.insert(edge.topic, view);
        }
        for (topic, task) in tasks.iter_mut() {
            let Some(view) = views.get(topic) else {
                continue;
            };
            // A view that stops while it recovers (its local state ahead of the changelog, a
            // changelog value that does not decode) never recovers: its task says why.
            let state = tokio::select! {
                state = view.recovered() => state,
                ended = &mut *task => return Err(lookups::ended(group, topic, ended)),
            };
            if state == crate::table::TableState::Stopped && !cancel.is_cancelled() {
                return Err(lookups::ended(group, topic, task.await));
            }
            tracing::info!(group, table = *topic, "lookup table recovered");
        }
        Ok((views, tasks))
    }

    /// The processor's state: `Running` once every assigned partition recovered.
    pub fn state(&self) -> ProcessorState {
        *self.state.borrow()
    }

    /// Waits until every assigned partition recovered (or the processor stopped).
    pub async fn recovered(&self) -> ProcessorState {
        let mut states = self.state.subscribe();
        states
            .wait_for(|s| matches!(s, ProcessorState::Running | ProcessorState::Stopped))
            .await
            .map(|s| *s)
            .unwrap_or(ProcessorState::Stopped)
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
            .map(|((topic, partition), next)| next.commit(topic, *partition))
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
        let visits = shared
            .visit_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let highs = shared
            .high_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let windows = shared
            .windows
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
                let inputs = shared.input_figures.of(
                    partition,
                    |topic| {
                        done.iter()
                            .find(|o| o.topic == topic && o.partition == partition)
                            .map(|o| o.offset)
                    },
                    |topic| highs.get(&(topic, partition)).copied(),
                );
                ProcessorPartitionStats {
                    partition,
                    state,
                    topic: input,
                    offset,
                    high_watermark,
                    lag,
                    tables: shared.table_figures.of(partition),
                    inputs,
                    visit: visits.get(&partition).cloned(),
                    windows: windows
                        .get(&partition)
                        .map(|w| w.stats())
                        .unwrap_or_default(),
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
                inputs: Vec::new(),
                visit: None,
                windows: Vec::new(),
            });
        }
        stats.sort_by_key(|s| (s.partition, s.state == PartitionState::Standby));
        stats
    }

    /// Calls the `#[visit]` handler of `V` for every key of the group table of every
    /// partition this instance owns (goka's `VisitAll`), as if a message for the key
    /// arrived: the handler reads and writes the key's row, emits and loops back as any
    /// handler. Each partition visits in its own task, between its messages, with the keys
    /// its table held when the visit began. Returns the number of keys visited, once every
    /// partition is done; `partition_stats()` shows the progress meanwhile. A partition
    /// revoked mid-visit answers with an error (its new owner is not asked); a failing visit
    /// handler stops the processor as a failing handler does.
    pub async fn visit_all<V: Visitor>(&self, value: V::Value) -> Result<u64, ProcessorError>
    where
        P: Visits<V>,
    {
        let visit_error = |message: String| ProcessorError::Visit {
            group: P::GRAPH.group,
            visitor: V::NAME,
            message,
        };
        let Some(shared) = self.running() else {
            return Err(visit_error("the processor is not running".into()));
        };
        let value: Arc<dyn std::any::Any + Send + Sync> = Arc::new(value);
        let senders: Vec<_> = shared
            .visitors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(partition, sender)| (*partition, sender.clone()))
            .collect();
        let mut answers = Vec::with_capacity(senders.len());
        for (partition, sender) in senders {
            let (done, answer) = tokio::sync::oneshot::channel();
            let request = visit::VisitRequest {
                visitor: V::NAME,
                value: value.clone(),
                done,
            };
            if sender.send(request).is_ok() {
                answers.push((partition, answer));
            }
        }
        let mut visited = 0;
        for (partition, answer) in answers {
            match answer.await {
                Ok(Ok(count)) => visited += count,
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    return Err(visit_error(format!(
                        "partition {partition} stopped before it visited its keys"
                    )))
                }
            }
        }
        Ok(visited)
    }

    /// Messages and bytes produced to each topic the processor writes, since `run` started
    /// (goka's `OutputStats`).
    pub fn output_stats(&self) -> Vec<OutputStats> {
        self.running()
            .map_or_else(Vec::new, |shared| shared.outputs.stats())
    }

    /// The figures of the views of the lookup tables (goka's `ProcessorStats.Lookup`).
    pub fn lookup_stats(&self) -> Vec<crate::view::ViewStats> {
        let Some(shared) = self.running() else {
            return Vec::new();
        };
        let mut stats: Vec<crate::view::ViewStats> =
            shared.lookups.values().map(|view| view.stats()).collect();
        stats.sort_by_key(|s| s.topic);
        stats
    }

    /// Counters since `run` started.
    pub fn stats(&self) -> ProcessorStats {
        let shared = self.running();
        shared.map_or_else(ProcessorStats::default, |s| s.stats.snapshot())
    }
}

impl<P: Stateful + Handlers> Processor<P> {
    /// The storages of the group table partitions this instance owns, for the monitor's
    /// table browser.
    pub(crate) fn table_storages(&self) -> Vec<Arc<dyn crate::storage::Storage>> {
        let Some(shared) = self.running() else {
            return Vec::new();
        };
        let tables = shared.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.values().cloned().collect()
    }

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

/// How often exactly-once starts a processor again after the cluster aborted its
/// transaction: a fault that lasts (every restart fails within a minute, five times in a
/// row) stops `run` with its error instead.
#[derive(Default)]
struct Restarts(u32);

impl Restarts {
    const IN_A_ROW: u32 = 5;
    const LASTING: std::time::Duration = std::time::Duration::from_secs(60);

    /// Whether to start again after a run that lasted `ran`.
    fn another(&mut self, ran: std::time::Duration) -> bool {
        if ran >= Self::LASTING {
            self.0 = 0;
        }
        self.0 += 1;
        self.0 <= Self::IN_A_ROW
    }
}
