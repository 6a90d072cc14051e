//! Deterministic, in-memory testing of processors, views and emitters (goka's `tester`).
//!
//! A [`Tester`] replaces the Kafka cluster and local storage with in-memory ones and runs
//! registered processors through the same code as production: key and value decoding, the
//! handlers, nil handling and decode-error policies, state writes, emits, loopback, joins
//! and lookups. [`Tester::consume`] writes a typed message to a topic and handles it and
//! everything it causes (emits consumed by other registered processors, loopbacks) before
//! it returns. Nothing runs in the background, so tests are deterministic.
//!
//! The API is async (handlers may be async): use it from `#[tokio::test]`.
//!
//! ```
//! use goka::codec::{Int64Codec, StringCodec};
//! use goka::context::{CallbackError, Context};
//! use goka::processor::GroupTable;
//! use goka::tester::Tester;
//!
//! goka::stream!(pub Clicks = "clicks": String as StringCodec);
//!
//! #[goka::processor(group = "click-counter")]
//! #[input(topic = Clicks, handler = Self::on_click)]
//! #[persist(value = i64, codec = Int64Codec)]
//! pub struct ClickCounter;
//!
//! impl ClickCounter {
//!     fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
//!         let count = ctx.value()?.unwrap_or(0);
//!         ctx.set_value(&(count + 1))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut tester = Tester::new();
//! tester.register(ClickCounter).await?;
//! let alice = "alice".to_string();
//! tester.consume::<Clicks>(&alice, &"/home".to_string()).await?;
//! tester.consume::<Clicks>(&alice, &"/cart".to_string()).await?;
//! assert_eq!(tester.table::<GroupTable<ClickCounter>>().get(&alice)?, Some(2));
//! # Ok(()) }
//! ```

pub(crate) mod broker;
mod error;
mod log;
mod processor;
mod tracker;

use std::marker::PhantomData;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use self::broker::{Broker, BrokerClient, Record};
pub use self::error::TesterError;
use self::processor::{table_storages, Driven, Tested};
pub use self::tracker::{QueueTracker, RawMessage, TrackedMessage};
use crate::codec::Codec;
use crate::context::Outgoing;
use crate::emitter::{EmitError, Emitter};
use crate::kafka::{Client, ConsumedMessage, Headers};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::processor::{Handlers, ProcessorConfig, ProcessorError};
use crate::storage::{MemoryStorage, Storage};
use crate::topic::{Stream, Table, Topic};
use crate::view::{View, ViewError};

/// An in-memory cluster with processors on it. See the [module docs](self).
pub struct Tester {
    broker: Arc<Broker>,
    partitioner: Arc<dyn Partitioner>,
    processors: Vec<Registered>,
    /// Topics some registered processor consumes: only writes to those need another pass.
    consumed: Vec<&'static str>,
    cancel: CancellationToken,
    /// Buffers reused for every message: the one being handled, what its handler produced,
    /// and the encoded key and value of one being written.
    reading: ConsumedMessage,
    outgoing: Outgoing,
    encoded: (Vec<u8>, Vec<u8>),
}

struct Registered {
    driven: Box<dyn Driven>,
    /// Next offset to handle, per consumed topic (in graph order) and partition.
    cursors: Vec<Vec<i64>>,
}

impl std::fmt::Debug for Tester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tester")
            .field(
                "processors",
                &self
                    .processors
                    .iter()
                    .map(|p| p.driven.graph().group)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for Tester {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Tester {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Tester {
    /// A tester whose topics have one partition unless told otherwise (as goka's).
    pub fn new() -> Self {
        Self::with_partitions(1)
    }

    /// A tester whose topics have `partitions` partitions unless told otherwise.
    pub fn with_partitions(partitions: u32) -> Self {
        Self {
            broker: Arc::new(Broker::new(partitions.max(1))),
            partitioner: Arc::new(DefaultPartitioner::default()),
            processors: Vec::new(),
            consumed: Vec::new(),
            cancel: CancellationToken::new(),
            reading: crate::kafka::ConsumedMessage::empty(),
            outgoing: Outgoing::default(),
            encoded: Default::default(),
        }
    }

    /// Uses `partitioner` for consumed messages, emits and loopbacks (default: goka's).
    pub fn partitioner(mut self, partitioner: impl Partitioner) -> Self {
        self.partitioner = Arc::new(partitioner);
        self
    }

    /// Fixes the tester's clock at `at` (goka's `WithClock`): messages written from now on
    /// carry it as their timestamp (what handlers write carries its input's), so runs are
    /// repeatable. Until it is called, messages carry the wall clock's time.
    pub fn set_time(&self, at: std::time::SystemTime) {
        let millis = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.broker.set_time(millis);
    }

    /// Moves the tester's clock on by `by` (fixing it first at the wall clock's time if
    /// [`set_time`](Self::set_time) was not called).
    pub fn advance_time(&self, by: std::time::Duration) {
        self.broker
            .set_time(self.broker.now() + by.as_millis() as i64);
    }

    /// The time messages written now get.
    pub fn time(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.broker.now().max(0) as u64)
    }

    /// Removes every row of every table (goka's `ClearValues`), between test cases that share
    /// a tester. The topics' messages stay; handled messages are not handled again.
    pub fn clear_values(&self) -> Result<(), TesterError> {
        Ok(self.broker.clear_tables()?)
    }

    /// Gives `T` `partitions` partitions; call it before `T` is first used.
    pub fn set_partitions<T: Topic>(&self, partitions: u32) {
        self.broker.set_partitions(T::NAME, partitions);
    }

    /// A Kafka client of the tester's topics, for emitters, views and the topic manager.
    pub fn client(&self) -> Arc<dyn Client> {
        Arc::new(BrokerClient(self.broker.clone()))
    }

    /// An emitter of `T` writing to the tester. What it emits is handled by the next
    /// [`consume`](Self::consume) or [`run_until_idle`](Self::run_until_idle).
    pub async fn emitter<T: Stream>(&self) -> Result<Emitter<T>, EmitError> {
        Ok(Emitter::<T>::new(&*self.client())
            .await?
            .with_shared_partitioner(self.partitioner.clone()))
    }

    /// A view of `T` over the tester's tables: it sees every write as soon as it is made,
    /// without being run.
    pub async fn view<T: Table>(&self) -> Result<View<T>, ViewError> {
        View::<T>::builder(self.client())
            .storage(table_storages(self.broker.clone()))
            .shared_partitioner(self.partitioner.clone())
            .build()
            .await
    }

    /// Registers a processor group: checks its graph and topics as `Processor::run` does,
    /// and opens its partitions over the tester's tables. Messages already in its input
    /// topics are handled by the next `consume` or `run_until_idle` (a new group starts at
    /// the beginning).
    pub async fn register<P: Handlers>(&mut self, group: P) -> Result<(), ProcessorError> {
        self.register_with(group, ProcessorConfig::default()).await
    }

    /// [`register`](Self::register) with the parts of `config` that decide what a handler
    /// call does: nil handling, decode errors, middleware and default headers (storage,
    /// topics and the client's settings are the tester's own).
    pub async fn register_with<P: Handlers>(
        &mut self,
        group: P,
        config: ProcessorConfig,
    ) -> Result<(), ProcessorError> {
        let tested = Tested::new(
            group,
            &self.broker,
            self.partitioner.clone(),
            self.cancel.clone(),
            config,
        )
        .await?;
        self.consumed.extend(P::GRAPH.consumed_topics());
        self.processors.push(Registered {
            driven: Box::new(tested),
            cursors: Vec::new(),
        });
        Ok(())
    }

    /// Visits every key of `P`'s group table with `V` (goka's `VisitAll`), as a running
    /// processor does, then handles everything the visit caused. Returns the keys visited.
    pub async fn visit_all<P, V>(&mut self, value: V::Value) -> Result<u64, ProcessorError>
    where
        P: crate::processor::Visits<V>,
        V: crate::processor::Visitor,
    {
        let Some(registered) = self
            .processors
            .iter()
            .find(|r| r.driven.graph().group == P::GRAPH.group)
        else {
            return Err(ProcessorError::Visit {
                group: P::GRAPH.group,
                visitor: V::NAME,
                message: "the group is not registered with the tester".into(),
            });
        };
        let keys = registered.driven.table_keys()?;
        let mut message = crate::kafka::ConsumedMessage::empty();
        message.topic = std::sync::Arc::from(V::NAME);
        message.offset = -1;
        message.timestamp = Some(self.broker.now());
        let visited = keys.len() as u64;
        for (partition, key) in keys {
            message.partition = partition;
            message.key = key;
            registered
                .driven
                .visit(&message, V::NAME, &value, &mut self.outgoing)
                .await?;
            append(
                &self.broker,
                P::GRAPH.group,
                &self.consumed,
                &message,
                &self.outgoing,
            )?;
        }
        self.run_until_idle().await?;
        Ok(visited)
    }

    /// Fires the wall-clock timers of every registered processor that are due at the
    /// tester's time ([`set_time`](Self::set_time), [`advance_time`](Self::advance_time)),
    /// as a running processor does every second, then handles everything they caused.
    /// Returns how many fired. (Stream-time timers fire with the messages that reach their
    /// time.) A processor registered with [`ProcessorConfig::idle_advance`](crate::processor::ProcessorConfig::idle_advance)
    /// treats its partitions as idle here: their stream time moves on to the tester's time
    /// minus that duration (never back), closing windows and firing stream-time timers.
    pub async fn fire_timers(&mut self) -> Result<usize, ProcessorError> {
        let now = self.broker.now();
        let mut fired = 0;
        for registered in &self.processors {
            let group = registered.driven.graph().group;
            for partition in 0..registered.driven.partitions() as i32 {
                let count = registered
                    .driven
                    .tick(partition, now, &mut self.outgoing)
                    .await?;
                if self.outgoing.iter().next().is_none() {
                    continue;
                }
                fired += count;
                let mut message = crate::kafka::ConsumedMessage::empty();
                message.partition = partition;
                message.offset = -1;
                message.timestamp = Some(now);
                append(
                    &self.broker,
                    group,
                    &self.consumed,
                    &message,
                    &self.outgoing,
                )?;
            }
        }
        self.run_until_idle().await?;
        Ok(fired)
    }

    /// Writes `value` at `key` to `T`, then handles it and everything it causes.
    /// A failing handler's error is returned with its coordinates, as in production.
    pub async fn consume<T: Topic>(
        &mut self,
        key: &T::Key,
        value: &T::Value,
    ) -> Result<(), ProcessorError> {
        self.consume_with_headers::<T>(key, Some(value), Headers::new())
            .await
    }

    /// Writes a tombstone at `key` to `T`, then handles it (by the group's nil handling).
    pub async fn consume_tombstone<T: Topic>(
        &mut self,
        key: &T::Key,
    ) -> Result<(), ProcessorError> {
        self.consume_with_headers::<T>(key, None, Headers::new())
            .await
    }

    /// [`consume`](Self::consume) with headers, and `None` for a tombstone.
    pub async fn consume_with_headers<T: Topic>(
        &mut self,
        key: &T::Key,
        value: Option<&T::Value>,
        headers: Headers,
    ) -> Result<(), ProcessorError> {
        let input_error = |message: String| ProcessorError::Callback {
            group: "tester",
            topic: T::NAME.to_owned(),
            partition: -1,
            offset: -1,
            key: String::new(),
            message,
        };
        let mut encoded = std::mem::take(&mut self.encoded);
        let written = self.write::<T>(key, value, headers, &mut encoded);
        self.encoded = encoded;
        written.map_err(|e| input_error(e.to_string()))?;
        self.run_until_idle().await
    }

    /// Handles every message that is not handled yet, in every registered processor, until
    /// none is left (emits and loopbacks are handled too).
    pub async fn run_until_idle(&mut self) -> Result<(), ProcessorError> {
        let consumed = &self.consumed;
        let message = &mut self.reading;
        let outgoing = &mut self.outgoing;
        loop {
            let mut fed = false;
            for registered in &mut self.processors {
                let graph = registered.driven.graph();
                for (t, topic) in graph.consumed_topics().enumerate() {
                    if registered.cursors.len() <= t {
                        let partitions = self.broker.ensure(topic, false);
                        registered.cursors.push(vec![0; partitions as usize]);
                    }
                    for (partition, cursor) in registered.cursors[t].iter_mut().enumerate() {
                        let partition = partition as i32;
                        while self.broker.read_into(topic, partition, *cursor, message) {
                            *cursor += 1;
                            registered.driven.handle(message, outgoing).await?;
                            fed |= append(&self.broker, graph.group, consumed, message, outgoing)?;
                        }
                    }
                }
            }
            if !fed {
                return Ok(());
            }
        }
    }

    /// Seeds the table `T` (a joined or looked-up table, or a group table) with a row, as if
    /// its changelog had it.
    pub fn set_table_value<T: Table>(
        &self,
        key: &T::Key,
        value: &T::Value,
    ) -> Result<(), TesterError> {
        self.broker.ensure(T::NAME, true);
        self.write::<T>(key, Some(value), Headers::new(), &mut Default::default())
    }

    /// Deletes a row of the table `T` (a tombstone in its changelog).
    pub fn delete_table_value<T: Table>(&self, key: &T::Key) -> Result<(), TesterError> {
        self.broker.ensure(T::NAME, true);
        self.write::<T>(key, None, Headers::new(), &mut Default::default())
    }

    /// The current rows of the table `T`.
    pub fn table<T: Table>(&self) -> TableReader<T> {
        TableReader {
            tables: self.broker.table(T::NAME).unwrap_or_default(),
            partitioner: self.partitioner.clone(),
            _table: PhantomData,
        }
    }

    /// Tracks what is written to `T` from now on (goka's `QueueTracker`), e.g. a
    /// processor's emits.
    pub fn track<T: Topic>(&self) -> QueueTracker<T> {
        QueueTracker::new(self.broker.clone())
    }

    fn write<T: Topic>(
        &self,
        key: &T::Key,
        value: Option<&T::Value>,
        headers: Headers,
        (key_buffer, value_buffer): &mut (Vec<u8>, Vec<u8>),
    ) -> Result<(), TesterError> {
        let codec = |source| TesterError::Codec {
            topic: T::NAME,
            source,
        };
        key_buffer.clear();
        T::KeyCodec::encode(key, key_buffer).map_err(codec)?;
        let key = &key_buffer[..];
        let value = match value {
            Some(value) => {
                value_buffer.clear();
                T::ValueCodec::encode(value, value_buffer).map_err(codec)?;
                Some(&value_buffer[..])
            }
            None => None,
        };
        let partitions = self
            .broker
            .ensure(T::NAME, T::KIND == crate::topic::TopicKind::Table);
        let partition = self.partitioner.partition(key, partitions);
        let record = Record {
            key,
            value,
            headers,
            timestamp: self.broker.now(),
        };
        self.broker.append(T::NAME, partition, record)?;
        Ok(())
    }
}

/// A decoded row of the table `T`.
pub type Row<T> = (<T as Topic>::Key, <T as Topic>::Value);

/// The current rows of a table in a tester.
pub struct TableReader<T: Table> {
    tables: Vec<Arc<MemoryStorage>>,
    partitioner: Arc<dyn Partitioner>,
    _table: PhantomData<fn() -> T>,
}

impl<T: Table> std::fmt::Debug for TableReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableReader")
            .field("topic", &T::NAME)
            .finish_non_exhaustive()
    }
}

impl<T: Table> TableReader<T> {
    /// The row at `key`.
    pub fn get(&self, key: &T::Key) -> Result<Option<T::Value>, TesterError> {
        let codec = |source| TesterError::Codec {
            topic: T::NAME,
            source,
        };
        if self.tables.is_empty() {
            return Ok(None);
        }
        let key = T::encode_key(key).map_err(codec)?;
        let partition =
            self.partitioner
                .partition(T::partition_key(&key), self.tables.len() as u32) as usize;
        let raw = self.tables[partition % self.tables.len()].get(&key)?;
        raw.map(|raw| T::decode_value(&raw).map_err(codec))
            .transpose()
    }

    /// Every row, partition by partition, each in key order.
    pub fn rows(&self) -> Result<Vec<Row<T>>, TesterError> {
        let codec = |source| TesterError::Codec {
            topic: T::NAME,
            source,
        };
        let mut rows = Vec::new();
        for table in &self.tables {
            for row in table.iter()? {
                let (key, value) = row?;
                rows.push((
                    T::decode_key(&key).map_err(codec)?,
                    T::decode_value(&value).map_err(codec)?,
                ));
            }
        }
        Ok(rows)
    }
}

/// Appends what the handler of `message` produced to the tester's topics; whether a
/// registered processor consumes any of it.
fn append(
    broker: &Broker,
    group: &'static str,
    consumed: &[&'static str],
    message: &ConsumedMessage,
    outgoing: &Outgoing,
) -> Result<bool, ProcessorError> {
    let mut fed = false;
    for out in outgoing.iter() {
        // What a handler writes carries its input's timestamp, so runs are repeatable.
        let record = Record {
            key: out.key,
            value: out.value,
            headers: out.headers.cloned().unwrap_or_default(),
            timestamp: message.timestamp.unwrap_or_default(),
        };
        fed |= consumed.contains(&out.topic);
        broker
            .append(out.topic, out.partition, record)
            .map_err(|source| ProcessorError::HandlerProduce {
                group,
                topic: message.topic.to_string(),
                partition: message.partition,
                offset: message.offset,
                key: String::from_utf8_lossy(&message.key).into_owned(),
                source: Box::new(source),
            })?;
    }
    Ok(fed)
}
