//! One partition of a tester topic: every message ever written, keys and values back to back
//! in one buffer.
//!
//! A tester keeps all messages (trackers and late consumers read from any offset). Owning
//! each key and value in an allocation of its own made two or three long-lived allocations
//! per message, and the allocator's bookkeeping of millions of them cost more than handling
//! the message.

use crate::kafka::{ConsumedMessage, Headers};

/// The messages of one partition; a message's offset is its index.
#[derive(Debug, Default)]
pub(crate) struct Log {
    data: Vec<u8>,
    entries: Vec<Entry>,
}

/// 32 bytes: a long run streams millions of these through the cache, which evicts the
/// table rows the handlers read.
#[derive(Debug)]
struct Entry {
    start: usize,
    key_len: u32,
    /// [`TOMBSTONE`] for a tombstone.
    value_len: u32,
    timestamp: i64,
    /// `None` for most messages.
    headers: Option<Box<Headers>>,
}

const TOMBSTONE: u32 = u32::MAX;

/// Headers of messages without any.
static NO_HEADERS: Headers = Headers::new();

/// A message of a [`Log`], borrowed from it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logged<'a> {
    pub(crate) offset: i64,
    pub(crate) key: &'a [u8],
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) timestamp: i64,
    pub(crate) headers: &'a Headers,
}

impl Log {
    /// Appends a message and returns its offset; `None` if the key or the value is 4 GiB
    /// or more (far beyond what Kafka accepts).
    pub(crate) fn push(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        headers: Headers,
        timestamp: i64,
    ) -> Option<i64> {
        let key_len = u32::try_from(key.len()).ok()?;
        let value_len = match value {
            Some(value) => u32::try_from(value.len())
                .ok()
                .filter(|&l| l != TOMBSTONE)?,
            None => TOMBSTONE,
        };
        let start = self.data.len();
        self.data.extend_from_slice(key);
        if let Some(value) = value {
            self.data.extend_from_slice(value);
        }
        self.entries.push(Entry {
            start,
            key_len,
            value_len,
            timestamp,
            headers: (!headers.is_empty()).then(|| Box::new(headers)),
        });
        Some(self.entries.len() as i64 - 1)
    }

    /// The next offset (the high watermark).
    pub(crate) fn end(&self) -> i64 {
        self.entries.len() as i64
    }

    /// The message at `offset`.
    pub(crate) fn get(&self, offset: i64) -> Option<Logged<'_>> {
        let entry = self.entries.get(usize::try_from(offset).ok()?)?;
        let value_start = entry.start + entry.key_len as usize;
        Some(Logged {
            offset,
            key: &self.data[entry.start..value_start],
            value: (entry.value_len != TOMBSTONE)
                .then(|| &self.data[value_start..value_start + entry.value_len as usize]),
            timestamp: entry.timestamp,
            headers: entry.headers.as_deref().unwrap_or(&NO_HEADERS),
        })
    }

    /// Every message, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Logged<'_>> + '_ {
        (0..self.end()).filter_map(|offset| self.get(offset))
    }
}

impl Logged<'_> {
    /// Copies the message into `message`, reusing its buffers.
    pub(crate) fn copy_into(&self, message: &mut ConsumedMessage) {
        message.offset = self.offset;
        message.key.clear();
        message.key.extend_from_slice(self.key);
        match (self.value, &mut message.value) {
            (Some(value), Some(buffer)) => {
                buffer.clear();
                buffer.extend_from_slice(value);
            }
            (value, buffer) => *buffer = value.map(<[u8]>::to_vec),
        }
        message.timestamp = Some(self.timestamp);
        if message.headers != *self.headers {
            message.headers.clone_from(self.headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_by_offset_and_copy_into_a_reused_message() {
        let mut log = Log::default();
        let mut traced = Headers::new();
        traced.insert("trace", b"t1".to_vec());
        assert_eq!(log.push(b"alice", Some(b"1"), Headers::new(), 10), Some(0));
        assert_eq!(log.push(b"bob", None, traced.clone(), 11), Some(1));
        assert_eq!(log.push(b"", Some(b""), Headers::new(), 12), Some(2));
        assert_eq!(log.end(), 3);
        assert!(log.get(3).is_none() && log.get(-1).is_none());

        let mut message = ConsumedMessage::empty();
        let expected = [
            (0, &b"alice"[..], Some(&b"1"[..]), 10, Headers::new()),
            (1, &b"bob"[..], None, 11, traced),
            (2, &b""[..], Some(&b""[..]), 12, Headers::new()),
        ];
        for (logged, (offset, key, value, timestamp, headers)) in log.iter().zip(expected) {
            logged.copy_into(&mut message);
            assert_eq!(message.offset, offset);
            assert_eq!(message.key, key);
            assert_eq!(message.value.as_deref(), value);
            assert_eq!(message.timestamp, Some(timestamp));
            assert_eq!(message.headers, headers);
        }
        assert_eq!(log.iter().count(), 3);
    }
}
