//! The storage processors and views use unless told otherwise: on disk, in RocksDB, under a
//! directory of their own in the system's temporary directory, removed when they are dropped.
//!
//! On disk because a table can be far larger than memory (goka's default is on disk too). A
//! directory per instance because two instances of one group, or two test runs against
//! brokers that were started anew, must never open each other's rows: a table found on disk
//! is trusted up to its stored offset. State that should survive a restart needs a path the
//! next run finds again: `RocksDbBuilder::new(path)`.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Storage, StorageBuilder, StorageError};

/// The default [`StorageBuilder`] of [`ProcessorConfig`](crate::processor::ProcessorConfig)
/// and [`View`](crate::view::View)s. See the [storage module](crate::storage).
///
/// Each processor group or view it is given to gets a directory of its own,
/// `<tmp>/goka/<processor|view>/<group or table>/<pid>-<n>`, removed when the processor or
/// view is dropped. Tables are written without RocksDB's write-ahead log (the changelog is
/// the source of truth); a processor's tables update their rows in place and share 64 MiB of
/// memtables. Without the `rocksdb` feature, tables are kept in memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultStorage;

/// The memtables of all table partitions of one processor, together.
#[cfg(feature = "rocksdb")]
const PROCESSOR_MEMTABLES: usize = 64 << 20;

/// Who a [`DefaultStorage`] is scoped to.
#[derive(Debug, Clone, Copy)]
// Without RocksDB the default is memory, which is scoped by nature: the names go unread.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
pub(crate) enum Owner<'a> {
    /// The group table and joined tables of a processor group.
    Processor(&'a str),
    /// The table of a view.
    View(&'a str),
}

impl StorageBuilder for DefaultStorage {
    /// Opens the storage in a directory of this process's own, for builders used on their
    /// own (processors and views scope it first).
    fn build(&self, topic: &str, partition: i32) -> Result<Box<dyn Storage>, StorageError> {
        shared_unscoped().build(topic, partition)
    }

    fn scoped_default(&self) -> bool {
        true
    }
}

/// The builder `owner` uses: `builder` itself, or, where that is [`DefaultStorage`], a
/// directory of the owner's own, removed with the returned builder.
pub(crate) fn scoped(
    builder: Arc<dyn StorageBuilder>,
    owner: Owner<'_>,
) -> Arc<dyn StorageBuilder> {
    if builder.scoped_default() {
        default_for(owner)
    } else {
        builder
    }
}

#[cfg(feature = "rocksdb")]
fn default_for(owner: Owner<'_>) -> Arc<dyn StorageBuilder> {
    let (kind, name, in_place) = match owner {
        // A group table's rows are rewritten message after message.
        Owner::Processor(group) => ("processor", group, true),
        // A view loads rows in bulk, which in-place updates slow down.
        Owner::View(table) => ("view", table, false),
    };
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = std::env::temp_dir()
        .join("goka")
        .join(kind)
        .join(name)
        .join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
    let mut rocksdb = super::RocksDbBuilder::new(&root);
    if in_place {
        // Memory stays flat however many partitions the instance owns.
        rocksdb = rocksdb
            .update_in_place()
            .memtable_budget(PROCESSOR_MEMTABLES);
    }
    Arc::new(Scoped {
        rocksdb,
        _root: RemovedOnDrop(root),
    })
}

#[cfg(not(feature = "rocksdb"))]
fn default_for(_owner: Owner<'_>) -> Arc<dyn StorageBuilder> {
    Arc::new(super::MemoryBuilder)
}

/// A [`DefaultStorage`] used outside a processor or view: one directory per process.
fn shared_unscoped() -> &'static Arc<dyn StorageBuilder> {
    static SHARED: std::sync::OnceLock<Arc<dyn StorageBuilder>> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| default_for(Owner::Processor("unscoped")))
}

/// The default storage of one processor group or view.
#[cfg(feature = "rocksdb")]
struct Scoped {
    rocksdb: super::RocksDbBuilder,
    /// Removed after every storage the builder opened is gone (the owner drops it last).
    _root: RemovedOnDrop,
}

#[cfg(feature = "rocksdb")]
impl StorageBuilder for Scoped {
    fn build(&self, topic: &str, partition: i32) -> Result<Box<dyn Storage>, StorageError> {
        self.rocksdb.build(topic, partition)
    }
}

/// A directory removed (with everything in it) when this is dropped.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), %error, "cannot remove a table directory");
            }
        }
    }
}
