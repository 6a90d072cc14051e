//! Storage for stateless groups: keeps nothing, remembers nothing.

use super::{KeyRange, Storage, StorageBuilder, StorageError, StorageIter, WriteBatch};

/// Stores nothing: every read misses, every write succeeds, the offset is always unknown.
/// For processor groups without a group table.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullStorage;

impl Storage for NullStorage {
    fn get(&self, _key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(None)
    }
    fn set(&self, _key: &[u8], _value: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }
    fn delete(&self, _key: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }
    fn apply(&self, _batch: &WriteBatch, _offset: Option<i64>) -> Result<(), StorageError> {
        Ok(())
    }
    fn offset(&self) -> Result<Option<i64>, StorageError> {
        Ok(None)
    }
    fn range(&self, _range: KeyRange) -> Result<Box<dyn StorageIter + '_>, StorageError> {
        Ok(Box::new(EmptyIter))
    }
    fn close(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

struct EmptyIter;

impl Iterator for EmptyIter {
    type Item = Result<(Vec<u8>, Vec<u8>), StorageError>;
    fn next(&mut self) -> Option<Self::Item> {
        None
    }
}

impl StorageIter for EmptyIter {
    fn seek(&mut self, _key: &[u8]) {}
}

/// Builds a [`NullStorage`] for every partition.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullBuilder;

impl StorageBuilder for NullBuilder {
    fn build(&self, _topic: &str, _partition: i32) -> Result<Box<dyn Storage>, StorageError> {
        Ok(Box::new(NullStorage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_storage_keeps_nothing() {
        let s = NullBuilder.build("t", 0).unwrap();
        s.set(b"k", b"v").unwrap();
        let mut batch = WriteBatch::new();
        batch.set(b"a", b"1");
        s.apply(&batch, Some(9)).unwrap();
        assert_eq!(s.get(b"k").unwrap(), None);
        assert!(!s.has(b"a").unwrap());
        assert_eq!(s.offset().unwrap(), None);
        assert_eq!(s.iter().unwrap().count(), 0);
    }
}
