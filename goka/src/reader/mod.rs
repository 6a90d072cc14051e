//! Typed readers of topics: reading a stream back in a program or a test without running a
//! processor group.
//!
//! A [`StreamReader<T>`] reads every partition of `T` without a consumer group (nothing is
//! committed, nothing is shared with other readers), decodes keys and values with `T`'s
//! codecs and hands out one [`ReadMessage`] at a time, in offset order per partition. A
//! [`GroupReader<T>`] does the same as a member of a consumer group of its own: instances
//! share the partitions, and a restart goes on after the last message done.
//!
//! ```no_run
//! # async fn example(client: std::sync::Arc<dyn goka::kafka::Client>) -> Result<(), goka::reader::ReaderError> {
//! use goka::codec::StringCodec;
//! use goka::reader::{ReadFrom, StreamReader};
//!
//! goka::stream!(Alerts = "alerts": String as StringCodec);
//!
//! // Everything in the topic now, in a test:
//! let mut reader = StreamReader::<Alerts>::open(&*client, ReadFrom::Oldest).await?;
//! for alert in reader.read_to_end().await? {
//!     println!("{}: {:?}", alert.key, alert.value);
//! }
//! // What comes from now on, in a program:
//! let mut reader = StreamReader::<Alerts>::open(&*client, ReadFrom::Newest).await?;
//! while let Some(alert) = reader.next().await {
//!     let alert = alert?;
//!     println!("partition {} offset {}: {:?}", alert.partition, alert.offset, alert.value);
//! }
//! # Ok(()) }
//! ```

mod group;

pub use group::GroupReader;

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::codec::CodecError;
use crate::kafka::{
    Admin, BatchEvent, Client, HeaderUse, Headers, KafkaError, MessageRef, PartitionConsumer,
    StartOffset,
};
use crate::topic::Topic;

/// Where a [`StreamReader`] starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The oldest message still in the partition.
    #[default]
    Oldest,
    /// What is written after the reader opened.
    Newest,
}

/// One message a [`StreamReader`] read, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadMessage<K, V> {
    /// The key.
    pub key: K,
    /// The value; `None` is a tombstone.
    pub value: Option<V>,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its timestamp in milliseconds since the epoch, if it has one.
    pub timestamp: Option<i64>,
    /// Its headers.
    pub headers: Headers,
}

/// A message of topic `T`, as a [`StreamReader<T>`] hands it out.
pub type Message<T> = ReadMessage<<T as Topic>::Key, <T as Topic>::Value>;

/// What can go wrong while reading, naming the topic (and the message, where one is
/// involved).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// The topic does not exist.
    #[error(
        "reader of topic {topic:?}: the topic does not exist; create it first (TopicManager's \
         ensure_stream, Emitter::ensuring, or a processor that writes it)"
    )]
    NoTopic {
        /// The topic.
        topic: &'static str,
    },
    /// The client failed: the reader could not start or lost the topic.
    #[error("reader of topic {topic:?}: {source}")]
    Kafka {
        /// The topic.
        topic: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// The consumer group member of a [`GroupReader`] failed: it could not join, or the
    /// group stopped it (its last commit included, if that failed).
    #[error("reader of topic {topic:?} in group {group:?}: {why}")]
    Group {
        /// The topic.
        topic: &'static str,
        /// The group.
        group: String,
        /// What failed.
        why: String,
    },
    /// A message's key or value did not decode. The reader goes on with the next message.
    #[error(
        "reader of topic {topic:?}: message at partition {partition} offset {offset} (key \
         {key:?}): the {what} does not decode: {source}"
    )]
    Decode {
        /// The topic.
        topic: &'static str,
        /// The message's partition.
        partition: i32,
        /// The message's offset.
        offset: i64,
        /// The message's key, lossy UTF-8.
        key: String,
        /// `"key"` or `"value"`.
        what: &'static str,
        /// The codec's error.
        source: CodecError,
    },
}

/// Reads every partition of topic `T`, decoded, without a consumer group.
pub struct StreamReader<T: Topic> {
    admin: Arc<dyn Admin>,
    consumer: Box<dyn PartitionConsumer>,
    /// Messages of the last batch not handed out yet.
    ready: VecDeque<Result<Message<T>, ReaderError>>,
    /// Per partition: the offset after the last message read (its oldest offset before).
    next: Vec<i64>,
    _topic: PhantomData<fn() -> T>,
}

impl<T: Topic> std::fmt::Debug for StreamReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("topic", &T::NAME)
            .field("next", &self.next)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl<T: Topic> StreamReader<T> {
    /// Opens a reader of every partition of `T`, starting at `from`. Fails with
    /// [`ReaderError::NoTopic`] if the topic does not exist.
    pub async fn open(client: &dyn Client, from: ReadFrom) -> Result<Self, ReaderError> {
        let kafka = |source| ReaderError::Kafka {
            topic: T::NAME,
            source,
        };
        let admin = client.admin().map_err(kafka)?;
        let partitions = admin
            .partitions(T::NAME)
            .await
            .map_err(kafka)?
            .ok_or(ReaderError::NoTopic { topic: T::NAME })?;
        let mut starts = Vec::with_capacity(partitions as usize);
        let mut next = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions as i32 {
            let (low, high) = admin.watermarks(T::NAME, partition).await.map_err(kafka)?;
            let (start, first) = match from {
                ReadFrom::Oldest => (StartOffset::Beginning, low),
                ReadFrom::Newest => (StartOffset::At(high), high),
            };
            starts.push((partition, start));
            next.push(first);
        }
        let consumer = client
            .consume(T::NAME, &starts, HeaderUse::Read)
            .map_err(kafka)?;
        Ok(Self {
            admin,
            consumer,
            ready: VecDeque::new(),
            next,
            _topic: PhantomData,
        })
    }

    /// The next message, waiting for one; `None` once the client closed the reader. A
    /// message that does not decode is an [`ReaderError::Decode`] naming it, and the next
    /// call goes on after it; a client failure ends the reader.
    pub async fn next(&mut self) -> Option<Result<Message<T>, ReaderError>> {
        loop {
            if let Some(next) = self.ready.pop_front() {
                return Some(next);
            }
            if let Err(error) = self.read_batch().await? {
                return Some(Err(error));
            }
        }
    }

    /// Every message up to the end each partition has when the call starts (and whatever
    /// arrives while it reads), in offset order per partition. The end is the partition's
    /// high watermark: on a topic written in transactions, whose last offset may be a
    /// transaction marker rather than a message, read with [`next`](Self::next) and a
    /// timeout instead. Fails on the first message
    /// that does not decode, naming it: nothing is lost, the next call hands out what was
    /// read before it and goes on after it.
    pub async fn read_to_end(&mut self) -> Result<Vec<Message<T>>, ReaderError> {
        let mut ends = Vec::with_capacity(self.next.len());
        for partition in 0..self.next.len() as i32 {
            let (_, high) = self
                .admin
                .watermarks(T::NAME, partition)
                .await
                .map_err(|source| ReaderError::Kafka {
                    topic: T::NAME,
                    source,
                })?;
            ends.push(high);
        }
        let reached = |next: &[i64]| next.iter().zip(&ends).all(|(next, end)| next >= end);
        let mut read = Vec::new();
        loop {
            while let Some(next) = self.ready.pop_front() {
                match next {
                    Ok(message) => read.push(message),
                    Err(error) => return Err(self.keep(read, error)),
                }
            }
            if reached(&self.next) {
                return Ok(read);
            }
            match self.read_batch().await {
                Some(Ok(())) => {}
                Some(Err(error)) => return Err(self.keep(read, error)),
                None => return Ok(read),
            }
        }
    }

    /// Puts what a failing [`read_to_end`](Self::read_to_end) read back in front, for the
    /// next call, and returns the failure.
    fn keep(&mut self, read: Vec<Message<T>>, error: ReaderError) -> ReaderError {
        for message in read.into_iter().rev() {
            self.ready.push_front(Ok(message));
        }
        error
    }

    /// Reads the next batch into `ready`; `None` once the consumer closed.
    async fn read_batch(&mut self) -> Option<Result<(), ReaderError>> {
        let batch = match self.consumer.next_batch().await? {
            Ok(batch) => batch,
            Err(source) => {
                return Some(Err(ReaderError::Kafka {
                    topic: T::NAME,
                    source,
                }))
            }
        };
        for event in batch.events() {
            match event {
                BatchEvent::Message(message) => {
                    if let Some(next) = self.next.get_mut(message.partition() as usize) {
                        *next = (*next).max(message.offset() + 1);
                    }
                    self.ready.push_back(decode::<T>(&message));
                }
                // The ends `read_to_end` waits for are offsets: an end event may be one the
                // client reached before the messages written since.
                BatchEvent::EndOfPartition { .. } => {}
                BatchEvent::Transient(error) => {
                    tracing::warn!(topic = T::NAME, %error, "stream reader lost its connection; retrying");
                }
            }
        }
        Some(Ok(()))
    }
}

fn decode<T: Topic>(message: &MessageRef<'_>) -> Result<Message<T>, ReaderError> {
    let failed = |what, source| ReaderError::Decode {
        topic: T::NAME,
        partition: message.partition(),
        offset: message.offset(),
        key: String::from_utf8_lossy(message.key()).into_owned(),
        what,
        source,
    };
    let key = T::decode_key(message.key()).map_err(|e| failed("key", e))?;
    let value = message
        .value()
        .map(T::decode_value)
        .transpose()
        .map_err(|e| failed("value", e))?;
    Ok(ReadMessage {
        key,
        value,
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp(),
        headers: message.headers().collect(),
    })
}
