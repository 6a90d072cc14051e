//! In-memory storage: a hash map of rows with a sorted key set beside it, behind a lock.
//! Used by the tester and by tests; data is gone when the process ends.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{
    BatchOp, KeyRange, PartitionId, Storage, StorageBuilder, StorageError, StorageIter, WriteBatch,
};

/// Storage of one partition in memory. Cheap to create; thread-safe.
#[derive(Debug)]
pub struct MemoryStorage {
    id: PartitionId,
    state: RwLock<State>,
}

/// Bytes kept inline up to 24 of them (most keys and counters), on the heap beyond.
type Bytes = smallvec::SmallVec<[u8; 24]>;

#[derive(Debug, Default)]
struct State {
    /// Rows by key: handlers read and write one key at a time, and a hash lookup costs a
    /// fraction of a search through a sorted map of similar keys. Short keys and values
    /// live in the map's own slots, so a lookup reads one place in memory, not three.
    rows: rustc_hash::FxHashMap<Bytes, Bytes>,
    /// The same keys in order, for ranges; changed only when a key comes or goes.
    order: BTreeSet<Vec<u8>>,
    /// The stored offset as goka keeps it: decimal ASCII.
    offset: Option<Vec<u8>>,
    closed: bool,
}

impl State {
    fn insert(&mut self, key: &[u8], value: &[u8]) {
        match self.rows.get_mut(key) {
            Some(row) => {
                row.clear();
                row.extend_from_slice(value);
            }
            None => {
                self.rows
                    .insert(Bytes::from_slice(key), Bytes::from_slice(value));
                self.order.insert(key.to_vec());
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if self.rows.remove(key).is_some() {
            self.order.remove(key);
        }
    }
}

impl MemoryStorage {
    /// An empty storage for `partition` of `topic` (named in errors).
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            id: PartitionId::new(topic, partition),
            state: RwLock::new(State::default()),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.read().map_or(0, |s| s.rows.len())
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores raw offset bytes; lets tests check how a corrupt offset is reported.
    #[cfg(test)]
    pub(crate) fn set_raw_offset(&self, raw: &[u8]) {
        if let Ok(mut state) = self.write() {
            state.offset = Some(raw.to_vec());
        }
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, State>, StorageError> {
        // A writer that panicked leaves the map as it was before or after one whole call.
        let guard = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.closed {
            return Err(self.id.closed());
        }
        Ok(guard)
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, State>, StorageError> {
        let guard = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.closed {
            return Err(self.id.closed());
        }
        Ok(guard)
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new("memory", 0)
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.read()?.rows.get(key).map(|value| value.to_vec()))
    }

    fn get_with(&self, key: &[u8], read: &mut dyn FnMut(&[u8])) -> Result<bool, StorageError> {
        let state = self.read()?;
        let value = state.rows.get(key);
        if let Some(value) = value {
            read(value);
        }
        Ok(value.is_some())
    }

    fn has(&self, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.read()?.rows.contains_key(key))
    }

    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        // An existing row keeps its key and reuses its buffer: no allocation per update.
        self.write()?.insert(key, value);
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.write()?.remove(key);
        Ok(())
    }

    fn apply(&self, batch: &WriteBatch, offset: Option<i64>) -> Result<(), StorageError> {
        let mut state = self.write()?;
        for op in batch.ops() {
            match op {
                BatchOp::Set { key, value } => state.insert(key, value),
                BatchOp::Delete { key } => state.remove(key),
            }
        }
        if let Some(offset) = offset {
            state.offset = Some(offset.to_string().into_bytes());
        }
        Ok(())
    }

    fn offset(&self) -> Result<Option<i64>, StorageError> {
        let state = self.read()?;
        state
            .offset
            .as_deref()
            .map(|raw| self.id.parse_offset(Path::new(""), raw))
            .transpose()
    }

    fn range(&self, range: KeyRange) -> Result<Box<dyn StorageIter + '_>, StorageError> {
        // Fail now, not on the first `next`, when the storage is closed.
        drop(self.read()?);
        let next = range
            .start
            .clone()
            .map_or(Bound::Unbounded, Bound::Included);
        Ok(Box::new(MemoryIter {
            storage: self,
            range,
            next,
            buffer: Vec::new(),
        }))
    }

    fn close(&self) -> Result<(), StorageError> {
        self.write()?.closed = true;
        Ok(())
    }
}

/// Walks the map in chunks, taking the read lock once per chunk, so an iterator never holds
/// the lock while the caller works and never borrows a guard.
struct MemoryIter<'a> {
    storage: &'a MemoryStorage,
    range: KeyRange,
    /// Where the next chunk starts.
    next: Bound<Vec<u8>>,
    /// The current chunk, reversed so `pop` yields rows in key order.
    buffer: Vec<(Vec<u8>, Vec<u8>)>,
}

const CHUNK: usize = 256;

impl MemoryIter<'_> {
    fn fill(&mut self) -> Result<(), StorageError> {
        let state = self.storage.read()?;
        let start = match &self.next {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = self.range.bounds().1;
        // An empty or inverted range has nothing; BTreeSet::range would panic on it.
        let empty = match (start, end) {
            (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        };
        if empty {
            return Ok(());
        }
        self.buffer = state
            .order
            .range::<[u8], _>((start, end))
            .take(CHUNK)
            .filter_map(|k| Some((k.clone(), state.rows.get(&k[..])?.to_vec())))
            .collect();
        if let Some((last, _)) = self.buffer.last() {
            self.next = Bound::Excluded(last.clone());
        }
        self.buffer.reverse();
        Ok(())
    }
}

impl Iterator for MemoryIter<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() {
            if let Err(err) = self.fill() {
                return Some(Err(err));
            }
        }
        self.buffer.pop().map(Ok)
    }
}

impl StorageIter for MemoryIter<'_> {
    fn seek(&mut self, key: &[u8]) {
        self.next = Bound::Included(self.range.clamp_seek(key).to_vec());
        self.buffer.clear();
    }
}

/// Builds a fresh [`MemoryStorage`] per partition (the tester's default).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryBuilder;

impl StorageBuilder for MemoryBuilder {
    fn build(&self, topic: &str, partition: i32) -> Result<Box<dyn Storage>, StorageError> {
        Ok(Box::new(MemoryStorage::new(topic, partition)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::storage_suite!(|_dir| Box::new(MemoryStorage::new("suite", 0)));

    #[test]
    fn corrupt_offset_is_reported_with_topic_and_partition() {
        let storage = MemoryStorage::new("clicks-table", 2);
        storage.set_raw_offset(b"12a");
        let err = storage.offset().unwrap_err();
        assert!(matches!(err, StorageError::CorruptOffset { .. }), "{err}");
        assert!(
            err.to_string().contains("clicks-table") && err.to_string().contains("partition 2")
        );
    }
}
