//! Views: local, read-only, always-catching-up copies of a table (goka's `View`).
//!
//! A [`View<T>`] keeps every partition of the table `T` in local storage. [`View::run`]
//! recovers each partition from its stored offset + 1 to the end of the changelog in bulk
//! mode, then keeps applying new changelog messages until cancelled. Reads ([`get`],
//! [`has`], [`iter`]) work from any thread at any time, serving the last applied state even
//! while the connection to the broker is lost; the client reconnects by itself and the view
//! catches up.
//!
//! [`get`]: View::get
//! [`has`]: View::has
//! [`iter`]: View::iter

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use crate::codec::DecodeErrorPolicy;
/// The state of a view or of one of its partitions (goka's `ViewState`).
pub use crate::table::TableState as ViewState;
/// Figures of one partition of a view (goka's `PartitionStatus` and table stats).
pub use crate::table::TableStats as PartitionStats;
pub use crate::table::UpdateCallback;

use crate::codec::{Codec, CodecError};
use crate::kafka::{Backoff, Client, ConsumedMessage, KafkaError, Stopped};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::storage::{
    DefaultStorage, KeyRange, Owner, Storage, StorageBuilder, StorageError, StorageIter,
};
use crate::table::{TablePartition, TableProgress, Validate};
use crate::topic::Table;
use crate::topic_manager::{TopicManager, TopicManagerConfig, TopicManagerError};

mod runner;

/// Errors of a view, with the coordinates of what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The table topic could not be read (missing topic, client failure).
    #[error("view of table {topic:?}: {source}")]
    Setup {
        /// The table topic.
        topic: &'static str,
        /// Why.
        source: TopicManagerError,
    },
    /// Local storage failed.
    #[error("view of table {topic:?}: {source}")]
    Storage {
        /// The table topic.
        topic: &'static str,
        /// The storage's error (names the partition).
        source: StorageError,
    },
    /// Consuming the changelog failed for good.
    #[error("view of table {topic:?}: {source}")]
    Kafka {
        /// The table topic.
        topic: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// A changelog value did not decode.
    #[error("view of table {topic:?}: value at partition {partition} offset {offset} (key {key:?}) does not decode: {source}")]
    Decode {
        /// The table topic.
        topic: &'static str,
        /// Partition of the message.
        partition: i32,
        /// Offset of the message.
        offset: i64,
        /// Key, lossy UTF-8.
        key: String,
        /// The codec's error.
        source: CodecError,
    },
    /// A stored row did not decode on read.
    #[error("view of table {topic:?}: stored row (key {key:?}) does not decode: {source}")]
    Read {
        /// The table topic.
        topic: &'static str,
        /// Key, lossy UTF-8.
        key: String,
        /// The codec's error.
        source: CodecError,
    },
    /// A partition lost its connection and the view does not reconnect
    /// ([`ViewBuilder::auto_reconnect`]).
    #[error("view of table {topic:?}: partition {partition} lost its connection, and the view does not reconnect (auto_reconnect(false))")]
    Disconnected {
        /// The table topic.
        topic: &'static str,
        /// The partition that lost its connection.
        partition: i32,
    },
    /// The cluster did not answer while the view opened, for longer than
    /// [`Backoff::give_up_after`] ([`ViewBuilder::backoff`]).
    #[error(
        "{source} (the cluster did not answer for {failing_for:?}, {attempts} attempts: gave up)"
    )]
    Unreachable {
        /// The table topic.
        topic: &'static str,
        /// Attempts made.
        attempts: u32,
        /// How long the attempts failed.
        failing_for: std::time::Duration,
        /// The last attempt's error.
        source: Box<ViewError>,
    },
    /// `run` was called while the view was running already.
    #[error("view of table {topic:?} is running already")]
    AlreadyRunning {
        /// The table topic.
        topic: &'static str,
    },
    /// Stopping took longer than [`ViewBuilder::stop_timeout`]: `run` returned without
    /// waiting for the rest (the partitions' last offsets may not be stored, and the next
    /// run reads a little more of the changelog).
    #[error("view of table {topic:?} did not finish stopping within {after:?} (stop_timeout) and was abandoned")]
    Abandoned {
        /// The table topic.
        topic: &'static str,
        /// The stop timeout.
        after: Duration,
    },
    /// A view that others read (a processor's lookup table) ended before it was told to stop:
    /// its task panicked, or returned without an error.
    #[error("view of table {topic:?} ended while in use: {reason}")]
    Ended {
        /// The table topic.
        topic: &'static str,
        /// What ended it.
        reason: String,
    },
}

impl ViewError {
    /// Whether the cluster did not answer, so that trying again later may succeed.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Setup { source, .. } => source.is_unreachable(),
            Self::Kafka { source, .. } => source.is_unreachable(),
            _ => false,
        }
    }
}

/// Figures of a view (goka's `ViewStats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewStats {
    /// The table topic.
    pub topic: &'static str,
    /// The view's state.
    pub state: ViewState,
    /// Each partition.
    pub partitions: Vec<PartitionStats>,
}

/// Configures a [`View`] of the table `T` ([`View::builder`]).
pub struct ViewBuilder<T> {
    client: Arc<dyn Client>,
    storage: Arc<dyn StorageBuilder>,
    partitioner: Arc<dyn Partitioner>,
    update: Option<Arc<UpdateCallback>>,
    decode_errors: DecodeErrorPolicy,
    topics: TopicManagerConfig,
    auto_reconnect: bool,
    backoff: Backoff,
    stop_timeout: Duration,
    _table: PhantomData<fn() -> T>,
}

/// How long a view's stop may take by default ([`ViewBuilder::stop_timeout`]).
pub const DEFAULT_VIEW_STOP_TIMEOUT: Duration = Duration::from_secs(30);

impl<T> std::fmt::Debug for ViewBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewBuilder")
            .field("decode_errors", &self.decode_errors)
            .field("custom_update", &self.update.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> ViewBuilder<T> {
    /// A builder on `client`'s cluster, with [`DefaultStorage`] (on disk, in a directory of
    /// the view's own, removed with it) and goka's partitioner.
    pub fn new(client: Arc<dyn Client>) -> Self {
        Self {
            client,
            storage: Arc::new(DefaultStorage),
            partitioner: Arc::new(DefaultPartitioner::default()),
            update: None,
            decode_errors: DecodeErrorPolicy::Fail,
            topics: TopicManagerConfig::default(),
            auto_reconnect: true,
            backoff: Backoff::default(),
            stop_timeout: DEFAULT_VIEW_STOP_TIMEOUT,
            _table: PhantomData,
        }
    }

    /// Where partitions are stored, e.g. a
    /// [`RocksDbBuilder`](crate::storage::RocksDbBuilder) at
    /// [`default_view_storage_path`](crate::storage::default_view_storage_path), whose rows
    /// a restart finds again, or [`MemoryBuilder`](crate::storage::MemoryBuilder).
    pub fn storage(mut self, builder: impl StorageBuilder) -> Self {
        self.storage = Arc::new(builder);
        self
    }

    /// The partitioner that placed the keys (goka's `WithViewHasher`).
    pub fn partitioner(mut self, partitioner: impl Partitioner) -> Self {
        self.partitioner = Arc::new(partitioner);
        self
    }

    pub(crate) fn shared_partitioner(mut self, partitioner: Arc<dyn Partitioner>) -> Self {
        self.partitioner = partitioner;
        self
    }

    /// How a changelog message is applied to storage (goka's `WithViewCallback`).
    pub fn update_callback(
        mut self,
        callback: impl Fn(&dyn Storage, &ConsumedMessage) -> Result<(), StorageError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.update = Some(Arc::new(callback));
        self
    }

    /// What to do with values that do not decode (default: stop with an error).
    pub fn decode_errors(mut self, policy: DecodeErrorPolicy) -> Self {
        self.decode_errors = policy;
        self
    }

    /// How the table topic is looked up (goka's `WithViewTopicManagerBuilder`): for
    /// instance how long to wait for metadata.
    pub fn topics(mut self, config: TopicManagerConfig) -> Self {
        self.topics = config;
        self
    }

    /// Whether a running view that loses its connection keeps serving and reconnects
    /// (`true`, the default: goka's `WithViewAutoReconnect`, always on here), or stops `run`
    /// with [`ViewError::Disconnected`] naming the partition, for a service that would
    /// rather restart than serve rows that may be getting old.
    pub fn auto_reconnect(mut self, reconnect: bool) -> Self {
        self.auto_reconnect = reconnect;
        self
    }

    /// How opening the view waits for a cluster that does not answer (goka's
    /// `WithViewBackoffBuilder` and `WithViewBackoffResetTimeout`): it reads the table's
    /// partition count again after each wait, and gives up with
    /// [`ViewError::Unreachable`]. Default: [`Backoff::default`]. A running view reconnects
    /// by itself ([`auto_reconnect`](Self::auto_reconnect)).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long stopping may take once `run`'s token fired (default 30 s, as a processor's
    /// `stop_timeout`): writing the partitions' offsets and closing the table's consumer
    /// (which a client waiting on an unreachable cluster may hold up). After it `run`
    /// returns [`ViewError::Abandoned`] and leaves the rest to a thread of its own.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Opens a view of `topic` whose values are checked with `validate`: the untyped core
    /// that [`View<T>`] wraps, and that processors use for lookup tables.
    pub(crate) async fn open(
        self,
        topic: &'static str,
        validate: Validate,
    ) -> Result<ViewInner, ViewError> {
        let setup = |source| ViewError::Setup { topic, source };
        let manager = TopicManager::new(&*self.client, self.topics.clone()).map_err(setup)?;
        let what = format!("view of table {topic:?}");
        // Dropping the future is how a caller stops waiting.
        let never = CancellationToken::new();
        let counted = crate::kafka::retry(
            self.backoff,
            &what,
            &never,
            TopicManagerError::is_unreachable,
            || manager.partitions(topic),
        )
        .await;
        let count = match counted {
            Ok(Some(count)) => count,
            Ok(None) => unreachable!("never cancelled"),
            Err(Stopped::Failed(error)) => return Err(setup(error)),
            Err(Stopped::GaveUp {
                error,
                attempts,
                failing_for,
            }) => {
                return Err(ViewError::Unreachable {
                    topic,
                    attempts,
                    failing_for,
                    source: Box::new(setup(error)),
                })
            }
        };
        let storage = crate::storage::scoped(self.storage, Owner::View(topic));
        let mut partitions = Vec::with_capacity(count as usize);
        for partition in 0..count as i32 {
            let storage_error = |source| ViewError::Storage { topic, source };
            let table: Arc<dyn Storage> = storage
                .build(topic, partition)
                .map_err(storage_error)?
                .into();
            let offset = table.offset().map_err(storage_error)?;
            partitions.push(TablePartition {
                storage: table,
                progress: Arc::new(TableProgress::new(topic, partition, offset)),
            });
        }
        let (state, _) = watch::channel(ViewState::Idle);
        Ok(ViewInner {
            topic,
            client: self.client,
            partitioner: self.partitioner,
            update: self.update,
            decode_errors: self.decode_errors,
            validate,
            partitions,
            state,
            _storage: storage,
            running: AtomicBool::new(false),
            auto_reconnect: self.auto_reconnect,
            stop_timeout: self.stop_timeout,
        })
    }
}

impl<T: Table> ViewBuilder<T> {
    /// Reads the table's partition count and opens the storage of every partition.
    pub async fn build(self) -> Result<View<T>, ViewError> {
        Ok(View {
            inner: Arc::new(self.open(T::NAME, T::ValueCodec::validate).await?),
            _table: PhantomData,
        })
    }
}

/// A local, read-only, always-catching-up copy of the table `T`. Cheap to clone; clones share
/// the copy.
///
/// ```no_run
/// use std::sync::Arc;
/// use goka::codec::{Int64Codec, StringCodec};
/// use goka::kafka::{rdkafka_client::RdKafkaClient, KafkaConfig};
/// use goka::view::View;
///
/// goka::table!(pub Balances = "balances": i64 as Int64Codec);
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Arc::new(RdKafkaClient::new(KafkaConfig::new("localhost:9092")));
/// let view = View::<Balances>::builder(client).build().await?;
/// let cancel = tokio_util::sync::CancellationToken::new();
/// tokio::spawn({
///     let (view, cancel) = (view.clone(), cancel.clone());
///     async move { view.run(cancel).await }
/// });
/// view.recovered().await; // every partition caught up once
/// let balance: Option<i64> = view.get(&"alice".to_string())?;
/// for row in view.iter() {
///     let (account, balance) = row?;
///     println!("{account}: {balance}");
/// }
/// # let _ = balance; Ok(()) }
/// ```
pub struct View<T: Table> {
    inner: Arc<ViewInner>,
    _table: PhantomData<fn() -> T>,
}

impl<T: Table> Clone for View<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _table: PhantomData,
        }
    }
}

impl<T: Table> std::fmt::Debug for View<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("topic", &T::NAME)
            .field("state", &self.state())
            .finish()
    }
}

pub(crate) struct ViewInner {
    topic: &'static str,
    validate: Validate,
    client: Arc<dyn Client>,
    partitioner: Arc<dyn Partitioner>,
    update: Option<Arc<UpdateCallback>>,
    decode_errors: DecodeErrorPolicy,
    auto_reconnect: bool,
    stop_timeout: Duration,
    partitions: Vec<TablePartition>,
    state: watch::Sender<ViewState>,
    running: AtomicBool,
    /// Where the partitions are stored, kept while they are; last, so the partitions are
    /// dropped before a default storage removes its directory.
    _storage: Arc<dyn StorageBuilder>,
}

impl ViewInner {
    /// Figures of the view and each partition.
    pub(crate) fn stats(&self) -> ViewStats {
        ViewStats {
            topic: self.topic,
            state: *self.state.borrow(),
            partitions: self.partitions.iter().map(|p| p.progress.stats()).collect(),
        }
    }
}

impl Drop for ViewInner {
    /// Closes the partitions' storage: a view without the write-ahead log makes its rows
    /// durable here, with a warning if it cannot, instead of depending on the order in which
    /// the storage's handles are dropped.
    fn drop(&mut self) {
        for p in &self.partitions {
            if let Err(error) = p.storage.close() {
                tracing::warn!(topic = self.topic, partition = p.progress.partition(), %error, "closing a view partition's storage failed");
            }
        }
    }
}

impl ViewInner {
    pub(crate) async fn run(self: &Arc<Self>, cancel: CancellationToken) -> Result<(), ViewError> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(ViewError::AlreadyRunning { topic: self.topic });
        }
        let result = runner::run(self, cancel).await;
        for p in &self.partitions {
            p.progress.set_state(ViewState::Stopped);
        }
        self.state.send_replace(ViewState::Stopped);
        self.running.store(false, Ordering::Release);
        result
    }

    /// Waits until every partition caught up once (or the view stopped).
    pub(crate) async fn recovered(&self) -> ViewState {
        let mut states = self.state.subscribe();
        states
            .wait_for(|s| matches!(s, ViewState::Running | ViewState::Stopped))
            .await
            .map(|s| *s)
            .unwrap_or(ViewState::Stopped)
    }

    /// The raw value at an encoded key, from the partition the partitioner picks.
    pub(crate) fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let p = self
            .partitioner
            .partition(key, self.partitions.len() as u32);
        self.partitions[p as usize % self.partitions.len()]
            .storage
            .get(key)
    }
}

impl<T: Table> View<T> {
    /// A builder on `client`'s cluster.
    pub fn builder(client: Arc<dyn Client>) -> ViewBuilder<T> {
        ViewBuilder::new(client)
    }

    /// Recovers every partition, then keeps applying new changelog messages until `cancel`
    /// fires. Returns an error if storage fails, a value does not decode (under
    /// [`DecodeErrorPolicy::Fail`]) or the topic becomes unreadable; a lost connection is
    /// retried by the client and shows as [`ViewState::Reconnecting`].
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), ViewError> {
        self.inner.run(cancel).await
    }

    /// The value of `key`, from the local copy.
    pub fn get(&self, key: &T::Key) -> Result<Option<T::Value>, ViewError> {
        let (bytes, storage) = self.locate(key)?;
        let mut row = None;
        storage
            .get_with(&bytes, &mut |raw| row = Some(self.decode_row(&bytes, raw)))
            .map_err(|source| self.storage_error(source))?;
        row.transpose()
    }

    /// Whether the local copy has a row for `key`.
    pub fn has(&self, key: &T::Key) -> Result<bool, ViewError> {
        let (bytes, storage) = self.locate(key)?;
        storage
            .has(&bytes)
            .map_err(|source| self.storage_error(source))
    }

    /// Removes `key` from the local copy only (goka's `Evict`); the changelog keeps it and a
    /// new changelog message for the key brings it back.
    pub fn evict(&self, key: &T::Key) -> Result<(), ViewError> {
        let (bytes, storage) = self.locate(key)?;
        storage
            .delete(&bytes)
            .map_err(|source| self.storage_error(source))
    }

    /// Every row, partition by partition (key order within a partition).
    pub fn iter(&self) -> ViewIter<'_, T> {
        self.range(KeyRange::all())
    }

    /// Rows whose encoded key lies in `range`, partition by partition.
    pub fn range(&self, range: KeyRange) -> ViewIter<'_, T> {
        ViewIter {
            view: self,
            range,
            next_partition: 0,
            current: None,
        }
    }

    /// The view's state.
    pub fn state(&self) -> ViewState {
        *self.inner.state.borrow()
    }

    /// A receiver of state changes.
    pub fn watch_state(&self) -> watch::Receiver<ViewState> {
        self.inner.state.subscribe()
    }

    /// Waits until every partition caught up with its changelog once (or the view stopped).
    pub async fn recovered(&self) -> ViewState {
        self.inner.recovered().await
    }

    /// Figures of the view and each partition.
    pub fn stats(&self) -> ViewStats {
        self.inner.stats()
    }

    /// The storage of every partition, for the monitor's table browser.
    pub(crate) fn storages(&self) -> Vec<Arc<dyn Storage>> {
        self.inner
            .partitions
            .iter()
            .map(|p| p.storage.clone())
            .collect()
    }

    /// The table topic (goka's `View.Topic`).
    pub fn topic(&self) -> &'static str {
        self.inner.topic
    }

    /// Number of partitions of the table.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    fn locate(&self, key: &T::Key) -> Result<(Vec<u8>, &dyn Storage), ViewError> {
        let bytes = T::encode_key(key).map_err(|source| ViewError::Read {
            topic: self.inner.topic,
            key: "<key does not encode>".into(),
            source,
        })?;
        let p = self
            .inner
            .partitioner
            .partition(T::partition_key(&bytes), self.partitions());
        let table = &self.inner.partitions[p as usize % self.inner.partitions.len()];
        Ok((bytes, &*table.storage))
    }

    fn decode_row(&self, key: &[u8], raw: &[u8]) -> Result<T::Value, ViewError> {
        T::decode_value(raw).map_err(|source| ViewError::Read {
            topic: self.inner.topic,
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        })
    }

    fn storage_error(&self, source: StorageError) -> ViewError {
        ViewError::Storage {
            topic: self.inner.topic,
            source,
        }
    }
}

/// Iterates the rows of a view, decoding them.
pub struct ViewIter<'a, T: Table> {
    view: &'a View<T>,
    range: KeyRange,
    next_partition: usize,
    current: Option<Box<dyn StorageIter + 'a>>,
}

impl<T: Table> std::fmt::Debug for ViewIter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewIter")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl<T: Table> ViewIter<'_, T> {
    /// Goes back to the first partition and, in each, to the first row whose encoded key is
    /// at least `key` (goka's `Iterator.Seek`); rows before it in key order are skipped,
    /// and so is the rest of the range before `key`.
    pub fn seek(&mut self, key: &T::Key) -> Result<(), ViewError> {
        let bytes = T::encode_key(key).map_err(|source| ViewError::Read {
            topic: self.view.inner.topic,
            key: "<key does not encode>".into(),
            source,
        })?;
        self.range.start = self.range.start.take().max(Some(bytes));
        self.next_partition = 0;
        self.current = None;
        Ok(())
    }
}

impl<T: Table> Iterator for ViewIter<'_, T> {
    type Item = Result<(T::Key, T::Value), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(rows) = self.current.as_mut() {
                match rows.next() {
                    Some(Ok((key, value))) => {
                        let decoded = T::decode_key(&key)
                            .map_err(|source| ViewError::Read {
                                topic: self.view.inner.topic,
                                key: String::from_utf8_lossy(&key).into_owned(),
                                source,
                            })
                            .and_then(|k| Ok((k, self.view.decode_row(&key, &value)?)));
                        return Some(decoded);
                    }
                    Some(Err(source)) => return Some(Err(self.view.storage_error(source))),
                    None => self.current = None,
                }
            }
            let table = self.view.inner.partitions.get(self.next_partition)?;
            self.next_partition += 1;
            match table.storage.range(self.range.clone()) {
                Ok(rows) => self.current = Some(rows),
                Err(source) => return Some(Err(self.view.storage_error(source))),
            }
        }
    }
}
