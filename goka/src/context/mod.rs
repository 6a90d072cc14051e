//! What a handler can do with the message it handles (goka's `Context`).
//!
//! [`Context<'_, P>`] is typed by its processor group `P`: its methods exist only where `P`
//! declared the edge (the marker traits of [`processor`](mod@crate::processor)), so emitting to
//! an undeclared topic or reading state without a group table does not compile. Writes are
//! collected and produced after the handler returns, in order; the input message counts as
//! done (and its offset may be committed) only when every one of them was acknowledged.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::codec::{Codec, CodecError};
use crate::group::{Emits, Group, GroupTable, Joins, LooksUp, Loops, Stateful};
use crate::kafka::{ConsumedMessage, Headers};
use crate::partitioner::Partitioner;
use crate::storage::{Storage, StorageError};
use crate::topic::{Stream, Table, Topic};

mod outgoing;
mod timer;
mod window;
pub(crate) use self::outgoing::{Outgoing, OutgoingKind};
pub use self::window::WindowRows;

/// Why a handler failed. Handlers return `Result<(), E>` for any error type `E` that
/// converts into this (every `std::error::Error + Send + Sync + 'static` does, and so do
/// `String` and `&str`); the runtime adds group, topic, partition, offset and key.
///
/// Like `anyhow::Error`, it does not implement `std::error::Error` itself, so that `?`
/// converts any error into it.
#[derive(Debug)]
pub struct CallbackError {
    kind: CallbackErrorKind,
}

#[derive(Debug)]
enum CallbackErrorKind {
    /// The handler said so.
    Handler(Box<dyn std::error::Error + Send + Sync>),
    /// The input value did not decode.
    Decode(CodecError),
    /// A row of a table (the group table, a joined or looked-up one) did not decode: written
    /// with another codec, by another service or an older version of this one.
    Row {
        table: &'static str,
        key: String,
        source: CodecError,
    },
    /// A context operation failed.
    Codec(CodecError),
    Storage(StorageError),
    /// The message's topic has no handler.
    NoHandler(String),
}

impl CallbackError {
    /// The input value did not decode (the runtime may skip and count it, by policy).
    pub fn decode(source: CodecError) -> Self {
        Self {
            kind: CallbackErrorKind::Decode(source),
        }
    }

    /// No handler for `topic` (a dispatch bug).
    pub fn no_handler(topic: &str) -> Self {
        Self {
            kind: CallbackErrorKind::NoHandler(topic.to_owned()),
        }
    }

    /// Whether bytes from outside did not decode: the input value, or a row of a table the
    /// handler read. The processor's decode-error policy applies to these.
    pub fn is_decode(&self) -> bool {
        matches!(
            self.kind,
            CallbackErrorKind::Decode(_) | CallbackErrorKind::Row { .. }
        )
    }
}

impl fmt::Display for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CallbackErrorKind::Handler(e) => write!(f, "handler failed: {e}"),
            CallbackErrorKind::Decode(e) => write!(f, "input value does not decode: {e}"),
            CallbackErrorKind::Row { table, key, source } => {
                write!(f, "row {key:?} of table {table} does not decode: {source}")
            }
            CallbackErrorKind::Codec(e) => write!(f, "{e}"),
            CallbackErrorKind::Storage(e) => write!(f, "{e}"),
            CallbackErrorKind::NoHandler(topic) => write!(f, "no handler for topic {topic:?}"),
        }
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for CallbackError {
    fn from(error: E) -> Self {
        Self {
            kind: CallbackErrorKind::Handler(error.into()),
        }
    }
}

/// Lets handlers that return `Result<(), Box<dyn Error>>` use `?` on context calls. (A
/// `CallbackError` is no `Error` itself: it converts from every error, as `anyhow`'s does,
/// and implementing `Error` would make that conversion overlap the identity.)
impl From<CallbackError> for Box<dyn std::error::Error> {
    fn from(error: CallbackError) -> Self {
        Box::new(ContextFailed(error))
    }
}

/// A [`CallbackError`] boxed as an `Error`.
#[derive(Debug)]
struct ContextFailed(CallbackError);

impl fmt::Display for ContextFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// No source: the message already carries the cause's text, and a source would repeat it
/// wherever a chain is printed.
impl std::error::Error for ContextFailed {}

fn codec_error(e: CodecError) -> CallbackError {
    CallbackError {
        kind: CallbackErrorKind::Codec(e),
    }
}

fn storage_error(e: StorageError) -> CallbackError {
    CallbackError {
        kind: CallbackErrorKind::Storage(e),
    }
}

/// A table row that did not decode, named by its table and key.
fn row_error<'k>(
    table: &'static str,
    key: &'k [u8],
) -> impl FnOnce(CodecError) -> CallbackError + 'k {
    move |source| CallbackError {
        kind: CallbackErrorKind::Row {
            table,
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        },
    }
}

/// Reads and decodes the row at `key` of `table`, straight from the storage's bytes.
fn read_row<C: Codec<V>, V>(
    table: &'static str,
    storage: &dyn Storage,
    key: &[u8],
) -> Result<Option<V>, CallbackError> {
    let mut decoded = None;
    storage
        .get_with(key, &mut |raw| decoded = Some(C::decode(raw)))
        .map_err(storage_error)?;
    decoded.transpose().map_err(row_error(table, key))
}

/// What every message of one partition shares: storages, partition counts, the partitioner.
pub(crate) struct PartitionResources {
    pub(crate) group: &'static str,
    pub(crate) table: Option<Arc<dyn Storage>>,
    pub(crate) joins: HashMap<&'static str, Arc<dyn Storage>>,
    pub(crate) lookups: HashMap<&'static str, Arc<crate::view::ViewInner>>,
    pub(crate) partition_counts: HashMap<&'static str, u32>,
    pub(crate) partitioner: Arc<dyn Partitioner>,
    pub(crate) cancel: CancellationToken,
    /// The partition's windows and stream time.
    pub(crate) windows: Arc<crate::window::partition::PartitionWindows>,
    /// The partition's timers, if the group declares any.
    pub(crate) timers: Option<crate::timer::PartitionTimers>,
    /// Where late window messages go, when `LatePolicy::DeadLetter` sends them.
    pub(crate) late_letters: Option<&'static str>,
}

/// The handler's view of the message it handles. See the [module docs](self).
///
/// ```
/// use goka::codec::{Int64Codec, StringCodec};
/// use goka::context::{CallbackError, Context};
///
/// goka::stream!(pub Payments = "payments": i64 as Int64Codec);
/// goka::stream!(pub Receipts = "receipts": String as StringCodec);
///
/// #[goka::processor(group = "ledger")]
/// #[input(topic = Payments, handler = Self::on_payment)]
/// #[persist(value = i64, codec = Int64Codec)]
/// #[output(topic = Receipts)]
/// pub struct Ledger;
///
/// impl Ledger {
///     fn on_payment(&self, ctx: &mut Context<'_, Self>, amount: i64) -> Result<(), CallbackError> {
///         let balance = ctx.value()?.unwrap_or(0) + amount;   // the row at this message's key
///         ctx.set_value(&balance)?;                           // local now, changelog after
///         let account = ctx.key().clone();
///         let receipt = format!("offset {}: balance {balance}", ctx.offset());
///         ctx.emit::<Receipts>(&account, &receipt)            // sent after the handler returns
///     }
/// }
/// ```
pub struct Context<'c, P: Group> {
    resources: &'c PartitionResources,
    message: &'c ConsumedMessage,
    key: P::Key,
    outgoing: &'c mut Outgoing,
    _group: PhantomData<fn() -> P>,
}

impl<P: Group> fmt::Debug for Context<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("group", &self.resources.group)
            .field("topic", &self.message.topic)
            .field("partition", &self.message.partition)
            .field("offset", &self.message.offset)
            .finish_non_exhaustive()
    }
}

impl<'c, P: Group> Context<'c, P> {
    pub(crate) fn new(
        resources: &'c PartitionResources,
        message: &'c ConsumedMessage,
        outgoing: &'c mut Outgoing,
    ) -> Result<Self, CodecError> {
        let key = P::KeyCodec::decode(&message.key)?;
        Ok(Self {
            resources,
            message,
            key,
            outgoing,
            _group: PhantomData,
        })
    }

    /// The message's key.
    pub fn key(&self) -> &P::Key {
        &self.key
    }

    /// The processor's group (goka's `Context.Group()`).
    pub fn group(&self) -> &'static str {
        P::GRAPH.group
    }

    /// The message's topic.
    pub fn topic(&self) -> &str {
        &self.message.topic
    }

    /// The message's partition.
    pub fn partition(&self) -> i32 {
        self.message.partition
    }

    /// The message's offset.
    pub fn offset(&self) -> i64 {
        self.message.offset
    }

    /// The message's timestamp in milliseconds since the epoch, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.message.timestamp
    }

    /// The message's headers.
    pub fn headers(&self) -> &Headers {
        &self.message.headers
    }

    /// Lets later messages of the partition go on while this one's work finishes elsewhere
    /// (goka's `DeferCommit`): the message counts as done, and its offset may be committed,
    /// only once the returned handle's [`done`](DeferredCommit::done) is called, and never
    /// before an earlier message of the partition is done. [`fail`](DeferredCommit::fail),
    /// or dropping the handle unfinished, stops the processor with an error naming this
    /// message. What the handler produced is sent as usual, at once. The tester does not
    /// wait for deferred work.
    pub fn defer_commit(&mut self) -> DeferredCommit {
        let (sender, done) = crate::kafka::Ack::channel();
        self.outgoing.defer(done);
        DeferredCommit {
            sender,
            partition: self.message.partition,
            offset: self.message.offset,
        }
    }

    /// Fires when this message's partition stops here: taken away in a rebalance, or the
    /// processor shutting down (goka's `Context.Context()`). Long async work in a handler,
    /// and work it deferred, can stop early on it: the partition's next owner handles the
    /// message again (see `ProcessorConfig::drain_timeout`).
    pub fn cancellation(&self) -> &CancellationToken {
        &self.resources.cancel
    }

    /// Emits `value` at `key` to the output stream `T`.
    pub fn emit<T>(&mut self, key: &T::Key, value: &T::Value) -> Result<(), CallbackError>
    where
        T: Stream,
        P: Emits<T>,
    {
        self.emit_with_headers::<T>(key, value, None)
    }

    /// Emits with headers.
    pub fn emit_with_headers<T>(
        &mut self,
        key: &T::Key,
        value: &T::Value,
        headers: Option<Headers>,
    ) -> Result<(), CallbackError>
    where
        T: Stream,
        P: Emits<T>,
    {
        let (key_bytes, value_bytes) = self.outgoing.scratch();
        T::KeyCodec::encode(key, key_bytes).map_err(codec_error)?;
        T::ValueCodec::encode(value, value_bytes).map_err(codec_error)?;
        self.send(OutgoingKind::Emit, T::NAME, true, headers);
        Ok(())
    }

    /// Emits a tombstone (a message without a value) at `key` to the output stream `T`:
    /// goka's `Emit(topic, key, nil)`, for consumers that read a deletion.
    pub fn emit_tombstone<T>(&mut self, key: &T::Key) -> Result<(), CallbackError>
    where
        T: Stream,
        P: Emits<T>,
    {
        self.emit_tombstone_with_headers::<T>(key, None)
    }

    /// [`emit_tombstone`](Self::emit_tombstone) with headers.
    pub fn emit_tombstone_with_headers<T>(
        &mut self,
        key: &T::Key,
        headers: Option<Headers>,
    ) -> Result<(), CallbackError>
    where
        T: Stream,
        P: Emits<T>,
    {
        let (key_bytes, _) = self.outgoing.scratch();
        T::KeyCodec::encode(key, key_bytes).map_err(codec_error)?;
        self.send(OutgoingKind::Emit, T::NAME, false, headers);
        Ok(())
    }

    /// Reads the joined table `T` at this message's key, from the local copy of the same
    /// partition.
    pub fn join<T>(&self) -> Result<Option<T::Value>, CallbackError>
    where
        T: Table<Key = P::Key>,
        P: Joins<T>,
    {
        let storage =
            self.resources.joins.get(T::NAME).ok_or_else(|| {
                CallbackError::from(format!("joined table {} is not open", T::NAME))
            })?;
        read_row::<T::ValueCodec, T::Value>(T::NAME, &**storage, &self.message.key)
    }

    /// Reads `key` of the lookup table `T` from the processor's view of it (any partition).
    pub fn lookup<T>(&self, key: &T::Key) -> Result<Option<T::Value>, CallbackError>
    where
        T: Table,
        P: LooksUp<T>,
    {
        let view =
            self.resources.lookups.get(T::NAME).ok_or_else(|| {
                CallbackError::from(format!("lookup table {} is not open", T::NAME))
            })?;
        let key = T::encode_key(key).map_err(codec_error)?;
        let raw = view.get_raw(&key).map_err(storage_error)?;
        raw.map(|raw| T::decode_value(&raw).map_err(row_error(T::NAME, &key)))
            .transpose()
    }

    /// Queues the message encoded into the outgoing scratch buffers.
    fn send(
        &mut self,
        kind: OutgoingKind,
        topic: &'static str,
        has_value: bool,
        headers: Option<Headers>,
    ) {
        let partition = match kind {
            OutgoingKind::Table | OutgoingKind::Window | OutgoingKind::Timer => {
                self.message.partition
            }
            _ => {
                let count = self
                    .resources
                    .partition_counts
                    .get(topic)
                    .copied()
                    .unwrap_or(1);
                let (key, _) = self.outgoing.scratch_filled();
                self.resources.partitioner.partition(key, count)
            }
        };
        self.outgoing
            .push_scratch(kind, topic, partition, has_value, headers);
    }

    fn table(&self) -> Result<&'c Arc<dyn Storage>, CallbackError> {
        self.resources
            .table
            .as_ref()
            .ok_or_else(|| CallbackError::from("the group table is not open"))
    }
}

/// State and loopback: methods whose bounds name the attribute that enables them, so a
/// missing edge is reported with that attribute's name.
impl<P: Group> Context<'_, P> {
    /// The group table's row at this message's key: what this handler wrote, or else the
    /// stored row. (`V` is always `P`'s table value type; the parameter only lets the
    /// compiler name the missing `#[persist]` when there is none.)
    pub fn value<V>(&self) -> Result<Option<V>, CallbackError>
    where
        P: Stateful<Value = V>,
    {
        let table = self.table()?;
        match self.outgoing.last_row() {
            Some(written) => written
                .map(<P as Stateful>::ValueCodec::decode)
                .transpose()
                .map_err(codec_error),
            None => {
                let name = P::GRAPH.table.map_or("the group table", |edge| edge.topic);
                read_row::<<P as Stateful>::ValueCodec, V>(name, &**table, &self.message.key)
            }
        }
    }

    /// Writes the group table's row at this message's key. The write goes to the table's
    /// changelog once the handler returned, and to local storage when the changelog message
    /// is queued: a handler that fails leaves the row as it was.
    pub fn set_value(&mut self, value: &<P as Stateful>::Value) -> Result<(), CallbackError>
    where
        P: Stateful,
    {
        self.set_value_with_headers(value, None)
    }

    /// [`set_value`](Self::set_value) with headers on the changelog message (goka's
    /// `WithCtxEmitHeaders`). Local storage keeps the value only; views and recovery do not
    /// see the headers.
    pub fn set_value_with_headers(
        &mut self,
        value: &<P as Stateful>::Value,
        headers: Option<Headers>,
    ) -> Result<(), CallbackError>
    where
        P: Stateful,
    {
        let (_, bytes) = self.outgoing.scratch();
        <P as Stateful>::ValueCodec::encode(value, bytes).map_err(codec_error)?;
        self.write_row(true, headers)
    }

    /// Deletes the group table's row at this message's key (a tombstone in the changelog).
    pub fn delete(&mut self) -> Result<(), CallbackError>
    where
        P: Stateful,
    {
        self.delete_with_headers(None)
    }

    /// [`delete`](Self::delete) with headers on the changelog's tombstone.
    pub fn delete_with_headers(&mut self, headers: Option<Headers>) -> Result<(), CallbackError>
    where
        P: Stateful,
    {
        self.outgoing.scratch();
        self.write_row(false, headers)
    }

    /// Queues the row write encoded in the scratch value (a delete unless `has_value`) for
    /// the changelog.
    fn write_row(&mut self, has_value: bool, headers: Option<Headers>) -> Result<(), CallbackError>
    where
        P: Stateful,
    {
        self.table()?;
        let (key_bytes, _) = self.outgoing.scratch_filled();
        key_bytes.extend_from_slice(&self.message.key);
        let topic = <GroupTable<P> as Topic>::NAME;
        self.send(OutgoingKind::Table, topic, has_value, headers);
        Ok(())
    }

    /// Sends `value` to `key` of this group through the loop topic; the loop handler gets it.
    pub fn loopback(
        &mut self,
        key: &P::Key,
        value: &<P as Loops>::Value,
    ) -> Result<(), CallbackError>
    where
        P: Loops,
    {
        self.loopback_with_headers(key, value, None)
    }

    /// [`loopback`](Self::loopback) with headers, which the loop handler finds in
    /// [`headers`](Self::headers).
    pub fn loopback_with_headers(
        &mut self,
        key: &P::Key,
        value: &<P as Loops>::Value,
        headers: Option<Headers>,
    ) -> Result<(), CallbackError>
    where
        P: Loops,
    {
        let topic = match P::GRAPH.loopback {
            Some(edge) => edge.topic,
            None => return Err(CallbackError::from("the group has no loop edge")),
        };
        let (key_bytes, value_bytes) = self.outgoing.scratch();
        P::KeyCodec::encode(key, key_bytes).map_err(codec_error)?;
        <P as Loops>::ValueCodec::encode(value, value_bytes).map_err(codec_error)?;
        self.send(OutgoingKind::Loop, topic, true, headers);
        Ok(())
    }
}

/// The completion of a message's deferred work ([`Context::defer_commit`]). `Send` and
/// `'static`: hand it to the task doing the work.
#[derive(Debug)]
#[must_use = "the message is not done until `done()` is called"]
pub struct DeferredCommit {
    sender: crate::kafka::AckSender,
    partition: i32,
    offset: i64,
}

impl DeferredCommit {
    /// The work finished: the message is done.
    pub fn done(self) {
        self.sender.send(Ok(crate::kafka::Delivery {
            partition: self.partition,
            offset: self.offset,
        }));
    }

    /// The work failed: the processor stops with `error`, naming the message, and its
    /// offset is never committed.
    pub fn fail(self, error: impl fmt::Display) {
        self.sender
            .send(Err(crate::kafka::KafkaError::Deferred(error.to_string())));
    }
}
