//! The local state of a table partition: the cached copy of a changelog topic partition, plus
//! the offset of the last changelog message it covers.
//!
//! Every processor keeps one [`Storage`] per owned partition of its group table (and of each
//! joined table), and every view one per partition of its table. Keys and values are bytes
//! here; typing happens in the layers above.
//!
//! **Object safety.** [`Storage`] is object-safe and used as `Box<dyn Storage>` /
//! `Arc<dyn Storage>`: users plug in their own backend through a [`StorageBuilder`] chosen at
//! run time, and one virtual call is noise next to a RocksDB read. All methods take `&self`
//! and storages are `Send + Sync`, so a view can serve reads from any thread while its
//! partition task applies changelog messages.
//!
//! **The offset.** [`Storage::apply`] writes a batch of rows and the offset they bring the
//! partition to in one atomic write, so after a crash the stored offset never points past a
//! missing row. Like goka, backends keep it under the key `__offset` as the decimal ASCII
//! text of the last applied changelog offset, but in a namespace of its own (a separate
//! column family in RocksDB, a separate field in memory): a table row whose key happens to be
//! `__offset` is stored like any other and never collides with it.

mod default;
mod memory;
mod null;
#[cfg(feature = "rocksdb")]
mod rocksdb;
mod uncommitted;

#[cfg(test)]
mod suite;

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use self::default::DefaultStorage;
pub(crate) use self::default::{scoped, Owner};
pub use self::memory::{MemoryBuilder, MemoryStorage};
pub use self::null::{NullBuilder, NullStorage};
#[cfg(feature = "rocksdb")]
pub use self::rocksdb::{RocksDbBuilder, RocksDbStorage};
pub use self::uncommitted::Uncommitted;

/// The key under which backends keep the last applied changelog offset (decimal ASCII), as
/// goka does. It lives in a namespace separate from table rows.
pub const OFFSET_KEY: &[u8] = b"__offset";

/// The local state of one table partition. See the [module docs](self).
pub trait Storage: Send + Sync + 'static {
    /// The value of `key`, if the row exists.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Calls `read` with the value of `key` if the row exists and returns whether it did;
    /// backends hand over their own bytes where they can, so decoding a row needs no copy.
    /// `read` must not use the storage (a backend may hold a lock while it runs).
    fn get_with(&self, key: &[u8], read: &mut dyn FnMut(&[u8])) -> Result<bool, StorageError> {
        let value = self.get(key)?;
        if let Some(value) = &value {
            read(value);
        }
        Ok(value.is_some())
    }

    /// Whether a row with `key` exists.
    fn has(&self, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.get(key)?.is_some())
    }

    /// Writes one row (without moving the offset).
    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError>;

    /// Deletes one row (without moving the offset). Deleting a missing row is not an error.
    fn delete(&self, key: &[u8]) -> Result<(), StorageError>;

    /// Writes `batch` and, if given, the offset it brings the partition to, atomically: after
    /// a crash either all of it is there or none of it.
    fn apply(&self, batch: &WriteBatch, offset: Option<i64>) -> Result<(), StorageError>;

    /// The last applied changelog offset, or `None` for a partition never written to.
    fn offset(&self) -> Result<Option<i64>, StorageError>;

    /// Stores the last applied changelog offset on its own.
    fn set_offset(&self, offset: i64) -> Result<(), StorageError> {
        self.apply(&WriteBatch::new(), Some(offset))
    }

    /// Rows in `range`, in key order. The iterator can [`seek`](StorageIter::seek).
    fn range(&self, range: KeyRange) -> Result<Box<dyn StorageIter + '_>, StorageError>;

    /// All rows in key order (goka's `Iterator`), with `seek`.
    fn iter(&self) -> Result<Box<dyn StorageIter + '_>, StorageError> {
        self.range(KeyRange::all())
    }

    /// Enters bulk-load mode for recovery: writes may be buffered and unsynchronised until
    /// [`mark_recovered`](Storage::mark_recovered). A crash during recovery may lose the tail
    /// of what was loaded, but never leaves the offset ahead of the rows.
    fn begin_recovery(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Leaves bulk-load mode: everything loaded so far is made durable.
    fn mark_recovered(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Makes written data durable and refuses further use. Backends release their files when
    /// the last handle is dropped.
    fn close(&self) -> Result<(), StorageError>;
}

/// Shared and boxed handles are storages too: views hand out `Arc`s, builders return `Box`es.
macro_rules! forward_storage {
    ($($handle:ident),*) => {$(
        impl<S: Storage + ?Sized> Storage for $handle<S> {
            fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
                (**self).get(key)
            }
            fn get_with(
                &self,
                key: &[u8],
                read: &mut dyn FnMut(&[u8]),
            ) -> Result<bool, StorageError> {
                (**self).get_with(key, read)
            }
            fn has(&self, key: &[u8]) -> Result<bool, StorageError> {
                (**self).has(key)
            }
            fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
                (**self).set(key, value)
            }
            fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
                (**self).delete(key)
            }
            fn apply(&self, batch: &WriteBatch, offset: Option<i64>) -> Result<(), StorageError> {
                (**self).apply(batch, offset)
            }
            fn offset(&self) -> Result<Option<i64>, StorageError> {
                (**self).offset()
            }
            fn set_offset(&self, offset: i64) -> Result<(), StorageError> {
                (**self).set_offset(offset)
            }
            fn range(&self, range: KeyRange) -> Result<Box<dyn StorageIter + '_>, StorageError> {
                (**self).range(range)
            }
            fn begin_recovery(&self) -> Result<(), StorageError> {
                (**self).begin_recovery()
            }
            fn mark_recovered(&self) -> Result<(), StorageError> {
                (**self).mark_recovered()
            }
            fn close(&self) -> Result<(), StorageError> {
                (**self).close()
            }
        }
    )*};
}
forward_storage!(Arc, Box);

/// An iterator over rows in key order, as goka's `storage.Iterator`.
pub trait StorageIter: Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> {
    /// Moves to the first row whose key is `>= key` (and inside the iterator's range): the
    /// next call to `next` returns it.
    fn seek(&mut self, key: &[u8]);
}

/// Creates the storage of one topic partition (goka's `storage.Builder`).
///
/// Closures `Fn(&str, i32) -> Result<Box<dyn Storage>, StorageError>` are builders too.
pub trait StorageBuilder: Send + Sync + 'static {
    /// Opens (or creates) the storage of `partition` of `topic`.
    fn build(&self, topic: &str, partition: i32) -> Result<Box<dyn Storage>, StorageError>;

    /// Whether this is [`DefaultStorage`], which processors and views replace by a
    /// directory of their own.
    #[doc(hidden)]
    fn scoped_default(&self) -> bool {
        false
    }
}

impl<F> StorageBuilder for F
where
    F: Fn(&str, i32) -> Result<Box<dyn Storage>, StorageError> + Send + Sync + 'static,
{
    fn build(&self, topic: &str, partition: i32) -> Result<Box<dyn Storage>, StorageError> {
        self(topic, partition)
    }
}

impl StorageBuilder for Arc<dyn StorageBuilder> {
    fn build(&self, topic: &str, partition: i32) -> Result<Box<dyn Storage>, StorageError> {
        (**self).build(topic, partition)
    }

    fn scoped_default(&self) -> bool {
        (**self).scoped_default()
    }
}

/// A set of row writes and deletes, applied atomically by [`Storage::apply`]. Reusable:
/// [`clear`](WriteBatch::clear) keeps the allocation.
///
/// Keys and values are copied into one buffer rather than held one allocation each: a
/// recovery fills batches of thousands of rows, and two allocations per row cost more than
/// writing the row.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Keys and values, back to back.
    data: Vec<u8>,
    ops: Vec<Op>,
}

/// Where an operation's key and value are in the batch's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Op {
    start: usize,
    key_len: usize,
    /// `None` deletes the row.
    value_len: Option<usize>,
}

/// One operation of a [`WriteBatch`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    /// Write `value` at `key`.
    Set {
        /// The row key.
        key: &'a [u8],
        /// The row value.
        value: &'a [u8],
    },
    /// Remove the row at `key`.
    Delete {
        /// The row key.
        key: &'a [u8],
    },
}

impl<'a> BatchOp<'a> {
    /// The row key the operation writes or removes.
    pub fn key(&self) -> &'a [u8] {
        match self {
            BatchOp::Set { key, .. } | BatchOp::Delete { key } => key,
        }
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `n` operations.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            data: Vec::new(),
            ops: Vec::with_capacity(n),
        }
    }

    /// Adds a row write.
    pub fn set(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.ops.push(Op {
            start: self.data.len(),
            key_len: key.len(),
            value_len: Some(value.len()),
        });
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
    }

    /// Adds a row delete.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        self.ops.push(Op {
            start: self.data.len(),
            key_len: key.len(),
            value_len: None,
        });
        self.data.extend_from_slice(key);
    }

    /// Adds a row write, or a delete for `None` (a changelog tombstone).
    pub fn set_or_delete(&mut self, key: impl AsRef<[u8]>, value: Option<impl AsRef<[u8]>>) {
        match value {
            Some(value) => self.set(key, value),
            None => self.delete(key),
        }
    }

    /// The operations, in the order they were added (later ones win).
    pub fn ops(&self) -> impl ExactSizeIterator<Item = BatchOp<'_>> + '_ {
        self.ops.iter().map(|op| {
            let key_end = op.start + op.key_len;
            let key = &self.data[op.start..key_end];
            match op.value_len {
                Some(len) => BatchOp::Set {
                    key,
                    value: &self.data[key_end..key_end + len],
                },
                None => BatchOp::Delete { key },
            }
        })
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Removes all operations, keeping the allocation.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ops.clear();
    }
}

impl fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ops()).finish()
    }
}

/// A range of keys: a start (inclusive) and an end (exclusive), each optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRange {
    /// First key of the range, inclusive; `None` starts at the first row.
    pub start: Option<Vec<u8>>,
    /// Key after the range, exclusive; `None` runs to the last row.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every row.
    pub fn all() -> Self {
        Self::default()
    }

    /// Rows whose key starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        let end = prefix_successor(&start);
        Self {
            start: Some(start),
            end,
        }
    }

    /// Rows with `start <= key < end`.
    pub fn between(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            start: Some(start.into()),
            end: Some(end.into()),
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.start.as_deref().is_none_or(|s| key >= s)
            && self.end.as_deref().is_none_or(|e| key < e)
    }

    /// The range as standard bounds, for `BTreeMap::range`.
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let start = self
            .start
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Included);
        let end = self
            .end
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        (start, end)
    }

    /// Where a seek to `key` lands: `key`, or the range's start if `key` is before it.
    pub fn clamp_seek<'a>(&'a self, key: &'a [u8]) -> &'a [u8] {
        match self.start.as_deref() {
            Some(start) if key < start => start,
            _ => key,
        }
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there is none
/// (empty prefix, or a prefix of only 0xff bytes).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// goka's `DefaultProcessorStoragePath`: `<tmp>/goka/processor/<group>`.
pub fn default_processor_storage_path(group: &str) -> PathBuf {
    std::env::temp_dir()
        .join("goka")
        .join("processor")
        .join(group)
}

/// goka's `DefaultViewStoragePath`: `<tmp>/goka/views`.
pub fn default_view_storage_path() -> PathBuf {
    std::env::temp_dir().join("goka").join("views")
}

/// The directory of one topic partition under a storage root: `<root>/<topic>.<partition>`,
/// as goka's default builder lays it out.
pub fn partition_path(root: &Path, topic: &str, partition: i32) -> PathBuf {
    root.join(format!("{topic}.{partition}"))
}

/// Errors of the storage layer. Each names the topic and partition, and the path where
/// there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The backend could not open its files.
    #[error("cannot open storage of topic {topic:?} partition {partition} at {}: {message}", path.display())]
    Open {
        /// Topic of the partition.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Directory of the storage.
        path: PathBuf,
        /// The backend's explanation.
        message: String,
    },
    /// Another process (or another handle in this one) holds the database.
    #[error(
        "storage of topic {topic:?} partition {partition} at {} is locked by another instance; \
         stop it or give this one another storage path",
        path.display()
    )]
    Locked {
        /// Topic of the partition.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Directory of the storage.
        path: PathBuf,
    },
    /// The stored offset is not a decimal integer.
    #[error(
        "storage of topic {topic:?} partition {partition} at {} has a corrupt offset {value:?}; \
         delete the directory to recover the partition from its changelog",
        path.display()
    )]
    CorruptOffset {
        /// Topic of the partition.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Directory of the storage (empty for memory).
        path: PathBuf,
        /// The stored bytes, lossy UTF-8.
        value: String,
    },
    /// A read or write failed in the backend.
    #[error("storage of topic {topic:?} partition {partition}: {operation} failed: {message}")]
    Backend {
        /// Topic of the partition.
        topic: String,
        /// Partition number.
        partition: i32,
        /// What was attempted (`get`, `apply`, `iterate`, ...).
        operation: &'static str,
        /// The backend's explanation.
        message: String,
    },
    /// The storage was closed.
    #[error("storage of topic {topic:?} partition {partition} is closed")]
    Closed {
        /// Topic of the partition.
        topic: String,
        /// Partition number.
        partition: i32,
    },
}

/// Topic and partition of a storage, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionId {
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

impl PartitionId {
    pub(crate) fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
        }
    }

    pub(crate) fn closed(&self) -> StorageError {
        StorageError::Closed {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn backend(&self, operation: &'static str, message: impl ToString) -> StorageError {
        StorageError::Backend {
            topic: self.topic.clone(),
            partition: self.partition,
            operation,
            message: message.to_string(),
        }
    }

    /// Parses a stored offset (decimal ASCII).
    pub(crate) fn parse_offset(&self, path: &Path, raw: &[u8]) -> Result<i64, StorageError> {
        std::str::from_utf8(raw)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| StorageError::CorruptOffset {
                topic: self.topic.clone(),
                partition: self.partition,
                path: path.to_owned(),
                value: String::from_utf8_lossy(raw).into_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_its_operations_in_order() {
        let mut batch = WriteBatch::with_capacity(2);
        batch.set(b"k1", b"v1");
        batch.delete(b"gone");
        batch.set(b"", b"");
        batch.set(b"k1", b"second");
        let ops: Vec<BatchOp<'_>> = batch.ops().collect();
        assert_eq!(
            ops,
            [
                BatchOp::Set {
                    key: b"k1",
                    value: b"v1"
                },
                BatchOp::Delete { key: b"gone" },
                BatchOp::Set {
                    key: b"",
                    value: b""
                },
                BatchOp::Set {
                    key: b"k1",
                    value: b"second"
                },
            ]
        );
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.ops().count(), 0);
    }

    #[test]
    fn prefix_ranges_stop_after_the_prefix() {
        assert_eq!(
            KeyRange::prefix(b"ab".to_vec()).end.as_deref(),
            Some(&b"ac"[..])
        );
        assert_eq!(
            KeyRange::prefix(vec![b'a', 0xff, 0xff]).end.as_deref(),
            Some(&b"b"[..])
        );
        assert_eq!(KeyRange::prefix(vec![0xff]).end, None);
        assert_eq!(KeyRange::prefix(Vec::new()).end, None);
        let r = KeyRange::prefix(b"ab".to_vec());
        assert!(
            r.contains(b"ab")
                && r.contains(b"ab\xff\xff")
                && !r.contains(b"ac")
                && !r.contains(b"aa")
        );
    }

    #[test]
    fn paths_follow_goka_layout() {
        let p = default_processor_storage_path("clicks");
        assert!(p.ends_with("goka/processor/clicks"), "{}", p.display());
        assert!(default_view_storage_path().ends_with("goka/views"));
        assert_eq!(
            partition_path(Path::new("/s"), "t", 3),
            PathBuf::from("/s/t.3")
        );
    }

    #[test]
    fn corrupt_offsets_name_topic_partition_and_path() {
        let id = PartitionId::new("clicks-table", 4);
        assert_eq!(id.parse_offset(Path::new("/x"), b"42").unwrap(), 42);
        let err = id
            .parse_offset(Path::new("/data/clicks-table.4"), b"4x2")
            .unwrap_err();
        let text = err.to_string();
        for part in ["clicks-table", "partition 4", "/data/clicks-table.4", "4x2"] {
            assert!(text.contains(part), "{text}");
        }
    }
}
