//! Typed producers of stream topics (goka's `Emitter`).
//!
//! An [`Emitter<T>`] encodes keys and values with `T`'s codecs and sends each message to the
//! partition the configured [`Partitioner`] picks (goka's by default), so Go and Rust
//! services reading the topic find every key where they expect it. Only [`Stream`] topics
//! have emitters: tables are written by their processor alone.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::codec::Codec;
use crate::kafka::{
    Ack, Client, Delivery, Detached, Headers, KafkaError, OutgoingRecord, Producer, SendError,
    Sent, Settle,
};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::topic::Stream;
use crate::topic_manager::{TopicManager, TopicManagerError};

mod error;
mod options;

pub use self::error::EmitError;
pub use self::options::EmitOptions;

/// Counters of an emitter (goka's `EmitterStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmitterStats {
    /// Messages acknowledged by the broker.
    pub messages: u64,
    /// Key and value bytes of acknowledged messages.
    pub bytes: u64,
    /// Messages that failed (encoding or delivery).
    pub errors: u64,
    /// Messages queued but not yet acknowledged or failed.
    pub pending: u64,
}

/// The counters of an emitter and its clones; they also settle the deliveries nobody awaits.
#[derive(Debug)]
struct Counters {
    topic: &'static str,
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    pending: AtomicU64,
    /// Failed deliveries nobody awaited since the last `finish`, and the last of them.
    unawaited_failures: std::sync::Mutex<(u64, Option<String>)>,
    /// `finish` was called: emits fail from then on.
    finished: std::sync::atomic::AtomicBool,
}

impl Counters {
    fn new(topic: &'static str) -> Self {
        Self {
            topic,
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            unawaited_failures: std::sync::Mutex::new((0, None)),
            finished: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Counts the outcome of a message of `bytes` key and value bytes; a failure comes back
    /// as the emitter's error.
    fn count(
        &self,
        result: Result<Delivery, KafkaError>,
        key: &[u8],
        bytes: u64,
    ) -> Result<Delivery, EmitError> {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(delivery) => {
                self.messages.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
                Ok(delivery)
            }
            Err(source) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                Err(EmitError::Delivery {
                    topic: self.topic,
                    key: String::from_utf8_lossy(key).into_owned(),
                    source,
                })
            }
        }
    }

    /// Counts a delivery nobody awaits; a failure is logged, never lost silently.
    fn settle_unawaited(&self, result: Result<Delivery, KafkaError>, key: &[u8], bytes: u64) {
        if let Err(e) = self.count(result, key, bytes) {
            tracing::error!(error = %e, "emitted message was not delivered");
            let mut failures = self
                .unawaited_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            failures.0 += 1;
            failures.1 = Some(e.to_string());
        }
    }
}

impl Settle for Counters {
    fn settle(&self, result: Result<Delivery, KafkaError>, sent: Sent<'_>) {
        self.settle_unawaited(result, sent.key, sent.bytes as u64);
    }
}

/// A typed producer of the stream topic `T`. Cheap to clone; clones share the producer.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use goka::emitter::Emitter;
/// use goka::kafka::{rdkafka_client::RdKafkaClient, KafkaConfig};
///
/// goka::stream!(Greetings = "greetings": String as goka::codec::StringCodec);
///
/// let client = RdKafkaClient::new(KafkaConfig::new("localhost:9092"));
/// let emitter = Emitter::<Greetings>::new(&client).await?;
/// let delivery = emitter.emit(&"alice".to_string(), &"hello".to_string()).await?.await?;
/// println!("stored at partition {} offset {}", delivery.partition, delivery.offset);
/// emitter.finish().await?;
/// # Ok(()) }
/// ```
pub struct Emitter<T: Stream> {
    producer: Arc<dyn Producer>,
    partitions: u32,
    partitioner: Arc<dyn Partitioner>,
    counters: Arc<Counters>,
    _topic: PhantomData<fn() -> T>,
}

impl<T: Stream> Clone for Emitter<T> {
    fn clone(&self) -> Self {
        Self {
            producer: self.producer.clone(),
            partitions: self.partitions,
            partitioner: self.partitioner.clone(),
            counters: self.counters.clone(),
            _topic: PhantomData,
        }
    }
}

impl<T: Stream> std::fmt::Debug for Emitter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("topic", &T::NAME)
            .field("partitions", &self.partitions)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<T: Stream> Emitter<T> {
    /// An emitter of `T` on `client`'s cluster, with goka's partitioner. The topic must exist.
    pub async fn new(client: &dyn Client) -> Result<Self, EmitError> {
        let manager = TopicManager::new(client, Default::default()).map_err(Self::setup_error)?;
        let partitions = manager
            .partitions(T::NAME)
            .await
            .map_err(Self::setup_error)?;
        Self::with_parts(client, partitions, Arc::new(DefaultPartitioner::default()))
    }

    /// An emitter that creates the topic with `partitions` partitions if it is missing (and
    /// the manager's config allows it), or checks the count if it exists.
    pub async fn ensuring(
        client: &dyn Client,
        manager: &TopicManager,
        partitions: u32,
    ) -> Result<Self, EmitError> {
        let partitions = manager
            .ensure_stream(T::NAME, partitions)
            .await
            .map_err(Self::setup_error)?;
        Self::with_parts(client, partitions, Arc::new(DefaultPartitioner::default()))
    }

    /// Replaces the partitioner (goka's `WithHasher`), e.g. with
    /// [`Murmur2Partitioner`](crate::partitioner::Murmur2Partitioner) for topics that Java
    /// producers write too.
    pub fn with_partitioner(mut self, partitioner: impl Partitioner) -> Self {
        self.partitioner = Arc::new(partitioner);
        self
    }

    pub(crate) fn with_shared_partitioner(mut self, partitioner: Arc<dyn Partitioner>) -> Self {
        self.partitioner = partitioner;
        self
    }

    fn with_parts(
        client: &dyn Client,
        partitions: u32,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<Self, EmitError> {
        let producer = client
            .producer()
            .map_err(|e| Self::setup_error(TopicManagerError::Kafka(e)))?;
        Ok(Self {
            producer,
            partitions,
            partitioner,
            counters: Arc::new(Counters::new(T::NAME)),
            _topic: PhantomData,
        })
    }

    fn setup_error(source: TopicManagerError) -> EmitError {
        EmitError::Setup {
            topic: T::NAME,
            source,
        }
    }

    /// Number of partitions of the topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Queues a message; waits only while the client's queue is full. The returned
    /// [`PendingDelivery`] resolves when the broker acknowledged it.
    pub async fn emit(&self, key: &T::Key, value: &T::Value) -> Result<PendingDelivery, EmitError> {
        self.send(key, Some(value), None, None).await
    }

    /// Like [`emit`](Self::emit), with headers.
    pub async fn emit_with_headers(
        &self,
        key: &T::Key,
        value: &T::Value,
        headers: &Headers,
    ) -> Result<PendingDelivery, EmitError> {
        self.send(key, Some(value), Some(headers), None).await
    }

    /// Like [`emit`](Self::emit), with the message's timestamp: its event time, which the
    /// windows and stream-time timers of the processors consuming it go by (a backfill of
    /// historical events, a replay). Fails with [`EmitError::Timestamp`] for a time before
    /// 1970.
    pub async fn emit_at(
        &self,
        key: &T::Key,
        value: &T::Value,
        at: std::time::SystemTime,
    ) -> Result<PendingDelivery, EmitError> {
        self.emit_with(key, Some(value), &EmitOptions::new().at(at))
            .await
    }

    /// Emits `value` (`None`: a tombstone) with the headers and timestamp of `options`.
    pub async fn emit_with(
        &self,
        key: &T::Key,
        value: Option<&T::Value>,
        options: &EmitOptions,
    ) -> Result<PendingDelivery, EmitError> {
        self.send(key, value, options.header_list(), options.timestamp())
            .await
    }

    /// Sends a tombstone (null value) for `key`.
    pub async fn emit_tombstone(&self, key: &T::Key) -> Result<PendingDelivery, EmitError> {
        self.send(key, None, None, None).await
    }

    /// Emits and waits for the broker's acknowledgement.
    pub async fn emit_sync(&self, key: &T::Key, value: &T::Value) -> Result<Delivery, EmitError> {
        self.emit(key, value).await?.await
    }

    /// Waits until every queued message was acknowledged or failed, at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), EmitError> {
        self.producer
            .flush(timeout)
            .await
            .map_err(|source| EmitError::Flush {
                topic: T::NAME,
                source,
            })
    }

    /// Closes the emitter and its clones (goka's `Finish`): emits fail with
    /// [`EmitError::Finished`] from now on, and everything pending is flushed, waiting as
    /// long as it takes the client to deliver or fail each message. Fails with
    /// [`EmitError::Undelivered`] if messages emitted without awaiting their delivery
    /// failed since the last `finish` (an awaited failure was returned to its awaiter
    /// already). Calling it again flushes again. To wait for pending messages and go on
    /// emitting, [`flush`](Self::flush).
    pub async fn finish(&self) -> Result<(), EmitError> {
        self.counters.finished.store(true, Ordering::SeqCst);
        self.flush(Duration::from_secs(300)).await?;
        let (failed, last) = std::mem::take(
            &mut *self
                .counters
                .unawaited_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        match failed {
            0 => Ok(()),
            failed => Err(EmitError::Undelivered {
                topic: T::NAME,
                failed,
                last: last.unwrap_or_default(),
            }),
        }
    }

    /// Counters of this emitter and its clones.
    pub fn stats(&self) -> EmitterStats {
        EmitterStats {
            messages: self.counters.messages.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
            pending: self.counters.pending.load(Ordering::Relaxed),
        }
    }

    async fn send(
        &self,
        key: &T::Key,
        value: Option<&T::Value>,
        headers: Option<&Headers>,
        timestamp: Option<i64>,
    ) -> Result<PendingDelivery, EmitError> {
        if self.counters.finished.load(Ordering::SeqCst) {
            return Err(EmitError::Finished { topic: T::NAME });
        }
        if let Some(millis) = timestamp.filter(|t| *t < 0) {
            self.count_error();
            let mut key_bytes = Vec::new();
            self.encode(key, None, &mut key_bytes)?;
            return Err(EmitError::Timestamp {
                topic: T::NAME,
                key: String::from_utf8_lossy(&key_bytes).into_owned(),
                millis,
            });
        }
        // Encode into this thread's buffer and queue at once: the client copies the bytes, so
        // a message costs no allocation of ours unless the client's queue is full.
        let queued = ENCODE_BUFFER.with(|shared| {
            let mut own = Vec::new();
            let mut borrowed = shared.try_borrow_mut();
            let buffer = match &mut borrowed {
                Ok(buffer) => &mut **buffer,
                // Only if the client called back into an emitter on this thread.
                Err(_) => &mut own,
            };
            buffer.clear();
            let value_start = self.encode(key, value, buffer)?;
            let (key_bytes, value_bytes) = buffer.split_at(value_start);
            let record = self.record(key_bytes, value.map(|_| value_bytes), headers, timestamp);
            let queued = match self.producer.try_send(&record) {
                Ok(ack) => Ok(self.pending(ack, &record)),
                Err(error) => Err((
                    error,
                    key_bytes.to_vec(),
                    value.map(|_| value_bytes.to_vec()),
                )),
            };
            // One huge message should not pin its size on the thread.
            if buffer.capacity() > MAX_KEPT_BUFFER {
                *buffer = Vec::new();
            }
            Ok::<_, EmitError>(queued)
        });
        let (error, key_bytes, value_bytes) = match queued.inspect_err(|_| self.count_error())? {
            Ok(pending) => return Ok(pending),
            Err(failed) => failed,
        };
        let record = self.record(&key_bytes, value_bytes.as_deref(), headers, timestamp);
        let sent = match error {
            // The queue is full: wait for room, owning the bytes across the wait.
            SendError::Full => crate::kafka::send(&*self.producer, &record).await,
            SendError::Failed(error) => Err(error),
        };
        match sent {
            Ok(ack) => Ok(self.pending(ack, &record)),
            Err(source) => {
                self.count_error();
                Err(EmitError::Delivery {
                    topic: T::NAME,
                    key: String::from_utf8_lossy(&key_bytes).into_owned(),
                    source,
                })
            }
        }
    }

    fn record<'a>(
        &self,
        key: &'a [u8],
        value: Option<&'a [u8]>,
        headers: Option<&'a Headers>,
        timestamp: Option<i64>,
    ) -> OutgoingRecord<'a> {
        OutgoingRecord {
            topic: T::NAME,
            partition: self.partitioner.partition(key, self.partitions),
            key,
            value,
            headers,
            timestamp,
        }
    }

    fn pending(&self, ack: Ack, record: &OutgoingRecord<'_>) -> PendingDelivery {
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        PendingDelivery {
            ack: Some(ack),
            key: Key::new(record.key),
            // Kafka messages stay far below 4 GiB.
            size: u32::try_from(record.key.len() + record.value.map_or(0, <[u8]>::len))
                .unwrap_or(u32::MAX),
            counters: self.counters.clone(),
        }
    }

    /// Encodes key and value into `buffer`, one after the other; returns where the value
    /// starts.
    fn encode(
        &self,
        key: &T::Key,
        value: Option<&T::Value>,
        buffer: &mut Vec<u8>,
    ) -> Result<usize, EmitError> {
        let encode_error = |what, source| EmitError::Encode {
            topic: T::NAME,
            what,
            source,
        };
        T::KeyCodec::encode(key, buffer).map_err(|e| encode_error("key", e))?;
        let value_start = buffer.len();
        if let Some(value) = value {
            T::ValueCodec::encode(value, buffer).map_err(|e| encode_error("value", e))?;
        }
        Ok(value_start)
    }

    fn count_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// Where emitters on this thread encode a message before the client copies it.
    static ENCODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Bigger encode buffers are freed after use.
const MAX_KEPT_BUFFER: usize = 1 << 20;

/// A message's key kept for the error of a failed delivery: inline when short, as most
/// keys are, so a pending delivery holds no allocation of its own.
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

/// 22 bytes and their length fill 24 with the variant's tag.
const INLINE_KEY: usize = 22;

impl Key {
    fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(key.into())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }
}

/// A queued message: resolves to where the broker stored it, or why it did not. Dropped
/// unawaited, the message is still counted in the emitter's stats, and a failure is logged.
#[must_use = "a delivery can fail; await it (or flush the emitter) to know"]
pub struct PendingDelivery {
    /// `None` once resolved.
    ack: Option<Ack>,
    key: Key,
    size: u32,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for PendingDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDelivery")
            .field("topic", &self.counters.topic)
            .finish_non_exhaustive()
    }
}

impl Future for PendingDelivery {
    type Output = Result<Delivery, EmitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(ack) = self.ack.as_mut() else {
            panic!("PendingDelivery polled after it resolved");
        };
        let result = std::task::ready!(Pin::new(ack).poll(cx));
        self.ack = None;
        Poll::Ready(
            self.counters
                .count(result, self.key.bytes(), u64::from(self.size)),
        )
    }
}

/// A delivery nobody awaits hands its acknowledgement to the emitter's counters, which
/// settle it when the answer comes (no task per message: emitting without awaiting, then
/// [`Emitter::finish`], is goka's way and should cost no more than a bare producer).
impl Drop for PendingDelivery {
    fn drop(&mut self) {
        let Some(ack) = self.ack.take() else { return };
        let (key, bytes) = (self.key.bytes(), u64::from(self.size));
        match ack.detach(self.counters.clone()) {
            Detached::Later => {}
            Detached::Answered(result) => self.counters.settle_unawaited(result, key, bytes),
            Detached::Kept(ack) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    self.counters.pending.fetch_sub(1, Ordering::Relaxed);
                    return;
                };
                let (counters, key) = (self.counters.clone(), key.to_vec());
                runtime.spawn(async move {
                    counters.settle_unawaited(ack.await, &key, bytes);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_keys_read_back_whatever_their_length() {
        let short = b"alice".to_vec();
        let edge = vec![b'k'; INLINE_KEY];
        let long = vec![b'x'; INLINE_KEY + 1];
        assert!(matches!(Key::new(&short), Key::Inline { len: 5, .. }));
        assert!(matches!(Key::new(&edge), Key::Inline { .. }));
        assert!(matches!(Key::new(&long), Key::Heap(_)));
        for key in [&b""[..], &short, &edge, &long] {
            assert_eq!(Key::new(key).bytes(), key);
        }
    }
    #[test]
    fn a_pending_delivery_stays_small() {
        // Hundreds of thousands may be in flight; each is read again when it resolves.
        assert!(std::mem::size_of::<PendingDelivery>() <= 64);
        assert!(std::mem::size_of::<Ack>() <= 24);
    }
}
