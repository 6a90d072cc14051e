//! Typed expectations on what is written to a topic (goka's `QueueTracker`).

use std::marker::PhantomData;
use std::sync::Arc;

use super::broker::Broker;
use super::error::TesterError;
use crate::kafka::Headers;
use crate::topic::Topic;

/// A message written to the tracked topic `T`.
pub struct TrackedMessage<T: Topic> {
    /// The key.
    pub key: T::Key,
    /// The value; `None` for a tombstone.
    pub value: Option<T::Value>,
    /// The partition it went to.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its headers.
    pub headers: Headers,
    /// Its timestamp in milliseconds since the epoch: the tester's clock when it was
    /// written, or its input's when a handler wrote it.
    pub timestamp: i64,
}

impl<T: Topic> std::fmt::Debug for TrackedMessage<T>
where
    T::Key: std::fmt::Debug,
    T::Value: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedMessage")
            .field("topic", &T::NAME)
            .field("key", &self.key)
            .field("value", &self.value)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .finish()
    }
}

/// A message of a tracked topic as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The encoded key.
    pub key: Vec<u8>,
    /// The encoded value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The partition it went to.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its headers.
    pub headers: Headers,
    /// Its timestamp in milliseconds since the epoch.
    pub timestamp: i64,
}

/// Reads what was written to `T` since the tracker was made, in order per partition
/// (partitions in ascending order).
pub struct QueueTracker<T: Topic> {
    broker: Arc<Broker>,
    /// Next offset per partition.
    next: Vec<i64>,
    _topic: PhantomData<fn() -> T>,
}

impl<T: Topic> std::fmt::Debug for QueueTracker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueTracker")
            .field("topic", &T::NAME)
            .field("next", &self.next)
            .finish()
    }
}

impl<T: Topic> QueueTracker<T> {
    pub(super) fn new(broker: Arc<Broker>) -> Self {
        let partitions = broker.ensure(T::NAME, false);
        let next = (0..partitions as i32)
            .map(|p| broker.end(T::NAME, p))
            .collect();
        Self {
            broker,
            next,
            _topic: PhantomData,
        }
    }

    /// The next message not read yet, or `None` when there is none (goka's `Next`; not an
    /// `Iterator` because reading can fail to decode).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<TrackedMessage<T>>, TesterError> {
        for (partition, next) in self.next.iter_mut().enumerate() {
            let Some(message) = self.broker.read(T::NAME, partition as i32, *next) else {
                continue;
            };
            *next += 1;
            let codec = |source| TesterError::Codec {
                topic: T::NAME,
                source,
            };
            return Ok(Some(TrackedMessage {
                key: T::decode_key(&message.key).map_err(codec)?,
                value: message
                    .value
                    .as_deref()
                    .map(T::decode_value)
                    .transpose()
                    .map_err(codec)?,
                partition: message.partition,
                offset: message.offset,
                headers: message.headers.clone(),
                timestamp: message.timestamp.unwrap_or_default(),
            }));
        }
        Ok(None)
    }

    /// The next message not read yet, undecoded (goka's `NextRaw`): for messages the
    /// topic's codecs cannot read, or checks of the bytes themselves.
    pub fn next_raw(&mut self) -> Option<RawMessage> {
        for (partition, next) in self.next.iter_mut().enumerate() {
            let Some(message) = self.broker.read(T::NAME, partition as i32, *next) else {
                continue;
            };
            *next += 1;
            return Some(RawMessage {
                key: message.key.clone(),
                value: message.value.clone(),
                partition: message.partition,
                offset: message.offset,
                headers: message.headers.clone(),
                timestamp: message.timestamp.unwrap_or_default(),
            });
        }
        None
    }

    /// Reads `partition` from `offset` on (goka's `Seek`): back to read messages again, or
    /// ahead to skip some.
    pub fn seek(&mut self, partition: i32, offset: i64) {
        if let Some(next) = self.next.get_mut(partition as usize) {
            *next = offset.clamp(0, self.broker.end(T::NAME, partition));
        }
    }

    /// The offset the next message of `partition` will be written at (goka's `Hwm`).
    pub fn high_watermark(&self, partition: i32) -> i64 {
        self.broker.end(T::NAME, partition)
    }

    /// The offset of the next message of `partition` this tracker reads (goka's
    /// `NextOffset`).
    pub fn next_offset(&self, partition: i32) -> i64 {
        self.next.get(partition as usize).copied().unwrap_or(0)
    }

    /// Every message not read yet.
    pub fn drain(&mut self) -> Result<Vec<TrackedMessage<T>>, TesterError> {
        let mut messages = Vec::new();
        while let Some(message) = self.next()? {
            messages.push(message);
        }
        Ok(messages)
    }

    /// How many messages were not read yet.
    pub fn len(&self) -> usize {
        self.next
            .iter()
            .enumerate()
            .map(|(p, next)| (self.broker.end(T::NAME, p as i32) - next).max(0) as usize)
            .sum()
    }

    /// Whether every message was read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Panics (failing the test) if a message was not read, naming how many.
    #[track_caller]
    pub fn expect_empty(&self) {
        let left = self.len();
        assert!(
            left == 0,
            "expected no more messages in topic {:?}, found {left}",
            T::NAME
        );
    }
}
