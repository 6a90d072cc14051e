//! Local writes that wait for a Kafka transaction: under exactly-once a partition's rows
//! must never run ahead of what its changelog has committed. [`Uncommitted`] holds the
//! writes of the open transaction in memory in front of the partition's storage: reads see
//! them first (a handler reads its own writes), the storage sees them only when
//! [`commit`](Uncommitted::commit) applies them, with the offset they bring the partition to,
//! in one write batch, and [`abort`](Uncommitted::abort) drops them. A transaction covers one
//! commit interval, so what is held stays small.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{BatchOp, KeyRange, Storage, StorageError, StorageIter, WriteBatch};

/// Writes of the open transaction: `None` deletes the row.
type Held = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A storage whose writes wait for a Kafka transaction to commit: reads see them first,
/// [`commit`](Self::commit) applies them below with their offset in one write batch,
/// [`abort`](Self::abort) drops them. Under exactly-once a processor writes its group table
/// through one, so local rows never run ahead of the committed changelog.
pub struct Uncommitted {
    inner: Arc<dyn Storage>,
    held: Mutex<Writes>,
}

#[derive(Default)]
struct Writes {
    rows: Held,
    /// The offset the held writes bring the partition to.
    offset: Option<i64>,
    /// Closed: every call goes to the storage below, which refuses it.
    closed: bool,
}

impl std::fmt::Debug for Uncommitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.lock();
        f.debug_struct("Uncommitted")
            .field("held_rows", &held.rows.len())
            .field("held_offset", &held.offset)
            .finish_non_exhaustive()
    }
}

impl Uncommitted {
    /// Holds the writes to `inner` until a commit.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            held: Mutex::new(Writes::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Writes> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rows written and deleted since the last commit or abort.
    pub fn held(&self) -> usize {
        self.lock().rows.len()
    }

    /// The transaction committed: its writes go to the storage below, with their offset, in
    /// one write batch. On failure they stay held.
    pub fn commit(&self) -> Result<(), StorageError> {
        let mut held = self.lock();
        if held.rows.is_empty() && held.offset.is_none() {
            return Ok(());
        }
        let mut batch = WriteBatch::with_capacity(held.rows.len());
        for (key, value) in &held.rows {
            batch.set_or_delete(key, value.as_ref());
        }
        self.inner.apply(&batch, held.offset)?;
        held.rows.clear();
        held.offset = None;
        Ok(())
    }

    /// The transaction was aborted: its writes are dropped, the storage below is as the last
    /// commit left it.
    pub fn abort(&self) {
        let mut held = self.lock();
        held.rows.clear();
        held.offset = None;
    }

    fn write(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
        let mut held = self.lock();
        if held.closed {
            drop(held);
            return match value {
                Some(value) => self.inner.set(key, value),
                None => self.inner.delete(key),
            };
        }
        held.rows.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        Ok(())
    }
}

impl Storage for Uncommitted {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(held) = self.lock().rows.get(key) {
            return Ok(held.clone());
        }
        self.inner.get(key)
    }

    fn has(&self, key: &[u8]) -> Result<bool, StorageError> {
        if let Some(held) = self.lock().rows.get(key) {
            return Ok(held.is_some());
        }
        self.inner.has(key)
    }

    fn get_with(&self, key: &[u8], read: &mut dyn FnMut(&[u8])) -> Result<bool, StorageError> {
        {
            let held = self.lock();
            if let Some(value) = held.rows.get(key) {
                return Ok(value.as_deref().map(read).is_some());
            }
        }
        self.inner.get_with(key, read)
    }

    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(key, Some(value))
    }

    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.write(key, None)
    }

    fn apply(&self, batch: &WriteBatch, offset: Option<i64>) -> Result<(), StorageError> {
        let mut held = self.lock();
        if held.closed {
            drop(held);
            return self.inner.apply(batch, offset);
        }
        for op in batch.ops() {
            let value = match op {
                BatchOp::Set { value, .. } => Some(value.to_vec()),
                BatchOp::Delete { .. } => None,
            };
            held.rows.insert(op.key().to_vec(), value);
        }
        if offset.is_some() {
            held.offset = offset;
        }
        Ok(())
    }

    fn offset(&self) -> Result<Option<i64>, StorageError> {
        match self.lock().offset {
            Some(offset) => Ok(Some(offset)),
            None => self.inner.offset(),
        }
    }

    fn set_offset(&self, offset: i64) -> Result<(), StorageError> {
        let mut held = self.lock();
        if held.closed {
            drop(held);
            return self.inner.set_offset(offset);
        }
        held.offset = Some(offset);
        Ok(())
    }

    fn range(&self, range: KeyRange) -> Result<Box<dyn StorageIter + '_>, StorageError> {
        // A copy of the held rows of the range: a transaction's writes are few.
        let empty = matches!((&range.start, &range.end), (Some(start), Some(end)) if start > end);
        let held: Vec<(Vec<u8>, Option<Vec<u8>>)> = if empty {
            Vec::new()
        } else {
            self.lock()
                .rows
                .range::<[u8], _>(range.bounds())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Ok(Box::new(Merged {
            below: self.inner.range(range.clone())?,
            next_below: None,
            held,
            next_held: 0,
            range,
        }))
    }

    fn begin_recovery(&self) -> Result<(), StorageError> {
        self.inner.begin_recovery()
    }

    fn mark_recovered(&self) -> Result<(), StorageError> {
        self.inner.mark_recovered()
    }

    /// Drops what is held (a closing partition's open transaction is aborted) and closes the
    /// storage below.
    fn close(&self) -> Result<(), StorageError> {
        *self.lock() = Writes {
            closed: true,
            ..Writes::default()
        };
        self.inner.close()
    }
}

/// The rows of a range: the storage's, with the held writes over them.
struct Merged<'a> {
    below: Box<dyn StorageIter + 'a>,
    /// The storage's next row, read ahead.
    next_below: Option<(Vec<u8>, Vec<u8>)>,
    held: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    next_held: usize,
    range: KeyRange,
}

impl Iterator for Merged<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.next_below.is_none() {
                match self.below.next() {
                    Some(Ok(row)) => self.next_below = Some(row),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
            let held = self.held.get(self.next_held).map(|(key, _)| key.as_slice());
            let below = self.next_below.as_ref().map(|(key, _)| key.as_slice());
            let (take_held, replaces) = match (below, held) {
                (None, None) => return None,
                (Some(_), None) => (false, false),
                (None, Some(_)) => (true, false),
                (Some(below), Some(key)) => (key <= below, key == below),
            };
            if replaces {
                // The held write replaces the stored row.
                self.next_below = None;
            }
            if !take_held {
                return self.next_below.take().map(Ok);
            }
            let (key, value) = self.held[self.next_held].clone();
            self.next_held += 1;
            if let Some(value) = value {
                return Some(Ok((key, value)));
            }
            // A held delete hides the row: go on.
        }
    }
}

impl StorageIter for Merged<'_> {
    fn seek(&mut self, key: &[u8]) {
        let key = self.range.clamp_seek(key).to_vec();
        self.below.seek(&key);
        self.next_below = None;
        self.next_held = self
            .held
            .partition_point(|(k, _)| k.as_slice() < key.as_slice());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn over_memory() -> (Arc<dyn Storage>, Uncommitted) {
        let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new("t", 0));
        (inner.clone(), Uncommitted::new(inner))
    }

    fn rows(s: &dyn Storage, range: KeyRange) -> Vec<(String, String)> {
        s.range(range)
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_see_held_writes_and_the_storage_sees_them_only_after_commit() {
        let (inner, held) = over_memory();
        inner.set(b"a", b"old").unwrap();
        inner.set(b"b", b"kept").unwrap();
        inner.set_offset(3).unwrap();
        held.set(b"a", b"new").unwrap();
        held.delete(b"b").unwrap();
        held.set(b"c", b"added").unwrap();
        held.set_offset(9).unwrap();

        assert_eq!(held.get(b"a").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(held.get(b"b").unwrap(), None);
        assert!(!held.has(b"b").unwrap());
        assert_eq!(held.offset().unwrap(), Some(9));
        assert_eq!(
            rows(&held, KeyRange::all()),
            pairs(&[("a", "new"), ("c", "added")])
        );
        // Below, nothing changed yet.
        assert_eq!(inner.get(b"a").unwrap().as_deref(), Some(&b"old"[..]));
        assert_eq!(inner.offset().unwrap(), Some(3));

        held.commit().unwrap();
        assert_eq!(held.held(), 0);
        assert_eq!(
            rows(&*inner, KeyRange::all()),
            pairs(&[("a", "new"), ("c", "added")])
        );
        assert_eq!(inner.offset().unwrap(), Some(9));
    }

    #[test]
    fn an_abort_leaves_the_storage_as_the_last_commit_left_it() {
        let (inner, held) = over_memory();
        held.set(b"a", b"1").unwrap();
        held.set_offset(1).unwrap();
        held.commit().unwrap();
        held.set(b"a", b"2").unwrap();
        held.delete(b"a").unwrap();
        let mut batch = WriteBatch::new();
        batch.set(b"z", b"26");
        held.apply(&batch, Some(5)).unwrap();
        assert_eq!(held.get(b"z").unwrap().as_deref(), Some(&b"26"[..]));
        held.abort();
        assert_eq!(held.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(held.get(b"z").unwrap(), None);
        assert_eq!(held.offset().unwrap(), Some(1));
        assert_eq!(rows(&*inner, KeyRange::all()), pairs(&[("a", "1")]));
    }

    #[test]
    fn ranges_merge_held_writes_in_key_order_and_seek_into_both() {
        let (inner, held) = over_memory();
        for key in ["b", "d", "f", "h"] {
            inner.set(key.as_bytes(), b"stored").unwrap();
        }
        held.set(b"a", b"held").unwrap();
        held.set(b"d", b"held").unwrap();
        held.delete(b"f").unwrap();
        held.set(b"g", b"held").unwrap();
        held.delete(b"x").unwrap();
        assert_eq!(
            rows(&held, KeyRange::all()),
            pairs(&[
                ("a", "held"),
                ("b", "stored"),
                ("d", "held"),
                ("g", "held"),
                ("h", "stored")
            ])
        );
        assert_eq!(
            rows(&held, KeyRange::between("c", "h")),
            pairs(&[("d", "held"), ("g", "held")])
        );
        let mut it = held.range(KeyRange::between("b", "z")).unwrap();
        it.seek(b"e");
        let (key, _) = it.next().unwrap().unwrap();
        assert_eq!(key, b"g");
        it.seek(b"a");
        let (key, value) = it.next().unwrap().unwrap();
        assert_eq!(
            (key.as_slice(), value.as_slice()),
            (&b"b"[..], &b"stored"[..])
        );
    }

    crate::storage_suite!(|_dir| Box::new(Uncommitted::new(Arc::new(
        crate::storage::MemoryStorage::new("suite", 0)
    ))));
}
