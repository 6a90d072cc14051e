//! What a [`PartitionConsumer`](super::PartitionConsumer) hands over at once: the events of
//! one poll, with every key, value and header of its messages copied into one buffer.
//!
//! A table recovery reads hundreds of thousands of rows a second; owning each key and value
//! in an allocation of its own, made on the reading thread and freed on the writing one, cost
//! more than storing the row.

use std::sync::Arc;

use super::error::KafkaError;
use super::message::{ConsumedMessage, Headers};

/// Events read from partitions of one topic, in order.
#[derive(Debug)]
pub struct ConsumedBatch {
    topic: Arc<str>,
    /// Keys, values, header names and header values, back to back.
    data: Vec<u8>,
    entries: Vec<Entry>,
    /// Header spans of all messages; each message owns a contiguous run.
    headers: Vec<HeaderSpan>,
}

#[derive(Debug)]
enum Entry {
    Message(Meta),
    EndOfPartition(i32),
    Transient(KafkaError),
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    start: usize,
    key_len: usize,
    /// `None` is a tombstone.
    value_len: Option<usize>,
    headers_start: usize,
    headers_len: usize,
}

#[derive(Debug, Clone, Copy)]
struct HeaderSpan {
    start: usize,
    name_len: usize,
    value_len: usize,
}

/// One event of a [`ConsumedBatch`], borrowed from it.
#[derive(Debug)]
pub enum BatchEvent<'a> {
    /// A message.
    Message(MessageRef<'a>),
    /// The consumer reached the end of a partition: everything written so far was read.
    EndOfPartition {
        /// The partition.
        partition: i32,
    },
    /// A problem the client retries by itself; consuming goes on when it clears.
    Transient(&'a KafkaError),
}

/// A message of a [`ConsumedBatch`]: its bytes stay in the batch.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    batch: &'a ConsumedBatch,
    meta: Meta,
}

impl<'a> MessageRef<'a> {
    /// Topic name.
    pub fn topic(&self) -> &'a Arc<str> {
        &self.batch.topic
    }

    /// Partition.
    pub fn partition(&self) -> i32 {
        self.meta.partition
    }

    /// Offset in the partition.
    pub fn offset(&self) -> i64 {
        self.meta.offset
    }

    /// Timestamp in milliseconds since the epoch, if the message has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.meta.timestamp
    }

    /// Key bytes (empty when the message had none).
    pub fn key(&self) -> &'a [u8] {
        &self.batch.data[self.meta.start..self.meta.start + self.meta.key_len]
    }

    /// Value bytes; `None` is a tombstone.
    pub fn value(&self) -> Option<&'a [u8]> {
        let start = self.meta.start + self.meta.key_len;
        self.meta
            .value_len
            .map(|len| &self.batch.data[start..start + len])
    }

    /// Headers, in order, names as bytes (see [`Headers`]).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let batch = self.batch;
        let spans = &batch.headers
            [self.meta.headers_start..self.meta.headers_start + self.meta.headers_len];
        spans.iter().map(move |span| {
            let name_end = span.start + span.name_len;
            (
                &batch.data[span.start..name_end],
                &batch.data[name_end..name_end + span.value_len],
            )
        })
    }

    /// Copies the message into `message`, reusing its buffers (a partition task reads
    /// every message of a batch into one).
    pub fn copy_into(&self, message: &mut ConsumedMessage) {
        if !Arc::ptr_eq(&message.topic, self.topic()) {
            message.topic = self.topic().clone();
        }
        message.partition = self.partition();
        message.offset = self.offset();
        message.timestamp = self.timestamp();
        message.key.clear();
        message.key.extend_from_slice(self.key());
        match (self.value(), &mut message.value) {
            (Some(value), Some(buffer)) => {
                buffer.clear();
                buffer.extend_from_slice(value);
            }
            (value, buffer) => *buffer = value.map(<[u8]>::to_vec),
        }
        if !message.headers.iter().eq(self.headers()) {
            message.headers = self.headers().collect();
        }
    }

    /// An owned copy.
    pub fn to_owned(&self) -> ConsumedMessage {
        ConsumedMessage {
            topic: self.topic().clone(),
            partition: self.partition(),
            offset: self.offset(),
            key: self.key().to_vec(),
            value: self.value().map(<[u8]>::to_vec),
            timestamp: self.timestamp(),
            headers: self.headers().collect::<Headers>(),
        }
    }
}

impl ConsumedBatch {
    /// Whether the batch holds a message (not only ends of partitions or transient errors).
    pub fn has_messages(&self) -> bool {
        self.entries.iter().any(|e| matches!(e, Entry::Message(_)))
    }

    /// An empty batch of `topic` with room for `events` events and `bytes` of keys, values
    /// and headers.
    pub fn new(topic: Arc<str>, events: usize, bytes: usize) -> Self {
        Self {
            topic,
            data: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(events),
            headers: Vec::new(),
        }
    }

    /// The topic the events are from.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// Adds a message, copying its bytes.
    pub fn push_message<'h>(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: &[u8],
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    ) {
        let start = self.data.len();
        self.data.extend_from_slice(key);
        if let Some(value) = value {
            self.data.extend_from_slice(value);
        }
        let headers_start = self.headers.len();
        for (name, value) in headers {
            self.headers.push(HeaderSpan {
                start: self.data.len(),
                name_len: name.len(),
                value_len: value.len(),
            });
            self.data.extend_from_slice(name);
            self.data.extend_from_slice(value);
        }
        self.entries.push(Entry::Message(Meta {
            partition,
            offset,
            timestamp,
            start,
            key_len: key.len(),
            value_len: value.map(<[u8]>::len),
            headers_start,
            headers_len: self.headers.len() - headers_start,
        }));
    }

    /// Adds an owned message (clients that hold messages already, as the tester).
    pub fn push_owned(&mut self, message: &ConsumedMessage) {
        self.push_message(
            message.partition,
            message.offset,
            message.timestamp,
            &message.key,
            message.value.as_deref(),
            message.headers.iter(),
        );
    }

    /// Adds an end-of-partition event.
    pub fn push_end(&mut self, partition: i32) {
        self.entries.push(Entry::EndOfPartition(partition));
    }

    /// Adds a problem the client retries by itself.
    pub fn push_transient(&mut self, error: KafkaError) {
        self.entries.push(Entry::Transient(error));
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys, values and headers held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The events, in the order they were read.
    pub fn events(&self) -> impl ExactSizeIterator<Item = BatchEvent<'_>> + '_ {
        self.entries.iter().map(move |entry| match entry {
            Entry::Message(meta) => BatchEvent::Message(MessageRef {
                batch: self,
                meta: *meta,
            }),
            Entry::EndOfPartition(partition) => BatchEvent::EndOfPartition {
                partition: *partition,
            },
            Entry::Transient(error) => BatchEvent::Transient(error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_back_in_order_with_their_bytes() {
        let mut batch = ConsumedBatch::new(Arc::from("t"), 0, 0);
        batch.push_message(
            2,
            7,
            Some(1_000),
            b"alice",
            Some(b"v1"),
            [(&b"trace"[..], &b"abc"[..]), (&b"\xff\xfe"[..], &b""[..])],
        );
        batch.push_message(2, 8, None, b"", None, []);
        batch.push_end(2);
        batch.push_transient(KafkaError::Unacknowledged);
        let events: Vec<BatchEvent<'_>> = batch.events().collect();
        assert_eq!(events.len(), 4);
        let BatchEvent::Message(first) = &events[0] else {
            panic!("a message first")
        };
        assert_eq!(
            (first.partition(), first.offset(), first.timestamp()),
            (2, 7, Some(1_000))
        );
        assert_eq!(
            (first.key(), first.value()),
            (&b"alice"[..], Some(&b"v1"[..]))
        );
        assert_eq!(
            first.headers().collect::<Vec<_>>(),
            [(&b"trace"[..], &b"abc"[..]), (&b"\xff\xfe"[..], &b""[..])]
        );
        let owned = first.to_owned();
        assert_eq!(&*owned.topic, "t");
        assert_eq!(owned.headers.get("trace"), Some(&b"abc"[..]));
        let BatchEvent::Message(tombstone) = &events[1] else {
            panic!("a tombstone second")
        };
        assert_eq!((tombstone.key(), tombstone.value()), (&b""[..], None));
        assert_eq!(tombstone.headers().count(), 0);
        assert!(matches!(
            events[2],
            BatchEvent::EndOfPartition { partition: 2 }
        ));
        assert!(matches!(
            events[3],
            BatchEvent::Transient(KafkaError::Unacknowledged)
        ));
    }
}
