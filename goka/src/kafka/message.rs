//! The messages of the Kafka layer: their headers, a message to produce, a message read.

/// Message headers, in order; names may repeat, as in Kafka.
///
/// Names and values are bytes, as on the wire: Kafka does not require names to be UTF-8, and
/// a message from a Go or Java producer may carry any bytes. [`get`](Self::get) takes a
/// `&str` or bytes; [`iter`](Self::iter) hands out names as bytes
/// (`std::str::from_utf8(name)` where text is expected).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Vec<u8>, Vec<u8>)>);

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Adds a header (`&str`, `String` or bytes as its name).
    pub fn insert(&mut self, name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.0.push((name.into(), value.into()));
        self
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        let name = name.as_ref();
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// All headers in order, names as bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `defaults` with these headers on top: a header of these replaces every default of
    /// the same name.
    pub fn over(&self, defaults: &Headers) -> Headers {
        let mut merged: Vec<(Vec<u8>, Vec<u8>)> = defaults
            .0
            .iter()
            .filter(|(name, _)| self.get(name).is_none())
            .cloned()
            .collect();
        merged.extend(self.0.iter().cloned());
        Headers(merged)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Vec<u8>>, V: Into<Vec<u8>>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// A message to produce, to an explicit partition (the runtime partitions, not the client).
#[derive(Debug, Clone, Copy)]
pub struct OutgoingRecord<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Target partition.
    pub partition: i32,
    /// Encoded key.
    pub key: &'a [u8],
    /// Encoded value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers.
    pub headers: Option<&'a Headers>,
    /// The record's timestamp, in milliseconds since the epoch; `None` takes the producer's
    /// clock.
    pub timestamp: Option<i64>,
}

/// A message read from a partition. Owned: it outlives the client's buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    /// Topic name (shared by all messages of a consumer).
    pub topic: std::sync::Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key bytes (empty when the message had none).
    pub key: Vec<u8>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Timestamp in milliseconds since the epoch, if the message has one.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Headers,
}

impl ConsumedMessage {
    /// A message without key, value or headers, to read others into.
    pub(crate) fn empty() -> Self {
        Self {
            topic: std::sync::Arc::from(""),
            partition: 0,
            offset: 0,
            key: Vec::new(),
            value: None,
            timestamp: None,
            headers: Headers::new(),
        }
    }
}
